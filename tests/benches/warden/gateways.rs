//! Gateway actors against the bare shared clients, on the real local stack (`just infra-up`).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use warden_actors::gateways::database::{BeginTransaction, EndTransaction, ExecuteSql, Expect};
use warden_actors::gateways::kafka::{EnsureTopics, SendKafkaMessages};
use warden_actors::gateways::storage::{EnsureBuckets, StorageOperation, StorageRequest};
use warden_actors::gateways::{
    Backends, DatabaseBackend, DatabaseGateway, DatabaseSettings, KafkaBackend, KafkaGateway,
    StorageBackend, StorageConfig, StorageGateway,
};
use warden_runtime::resources::{physical_name, ResourceGrants, ResourceKind};
use warden_runtime::transactions::TransactionOptions;
use warden_runtime::KafkaOutgoing;

use super::report;

const ROUND: Duration = Duration::from_secs(3);

/// One setting of the running local stack, from `infra/local.env`.
fn stack_value(key: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local.env")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

/// The backends of the running local stack, from `infra/local.env`.
pub fn stack() -> Option<Backends> {
    let value = stack_value;
    Some(Backends {
        database: Some(DatabaseBackend::connect(&value("WARDEN_DATABASE_URL")?, 32).ok()?),
        kafka: Some(KafkaBackend::connect(&value("WARDEN_KAFKA_BROKERS")?, None).ok()?),
        storage: Some(
            StorageBackend::connect(StorageConfig {
                endpoint: value("WARDEN_S3_ENDPOINT")?,
                region: value("WARDEN_S3_REGION")?,
                access_key: value("WARDEN_S3_ACCESS_KEY")?,
                secret_key: value("WARDEN_S3_SECRET_KEY")?,
            })
            .ok()?,
        ),
    })
}

/// Runs `operation` with `concurrency` in flight for one round; returns operations per second.
async fn throughput<F, Fut>(concurrency: usize, operation: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let mut done = 0usize;
    let mut next = 0usize;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    while started.elapsed() < ROUND {
        while in_flight.len() < concurrency {
            in_flight.push(operation(next));
            next += 1;
        }
        if let Some(ok) = in_flight.next().await {
            assert!(ok, "every benchmark operation succeeds");
            done += 1;
        }
    }
    while let Some(ok) = in_flight.next().await {
        assert!(ok, "every benchmark operation succeeds");
        done += 1;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn compare(what: &str, concurrency: usize, bare: f64, gateway: f64) {
    report(
        &format!("{what}, concurrency {concurrency}: gateway / bare"),
        format!("{:.2} ({gateway:.0}/s vs {bare:.0}/s)", gateway / bare),
        if concurrency == 32 { "≥ 0.90" } else { "—" },
    );
}

fn grants(plugin: &str, tables: &[&str], topics: &[&str], buckets: &[&str]) -> ResourceGrants {
    let owned = |names: &[&str]| {
        names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>()
    };
    ResourceGrants::resolve(
        plugin,
        &owned(tables),
        &owned(topics),
        &owned(buckets),
        None,
    )
    .expect("grants")
}

pub async fn postgres_point_query(backends: &Backends, concurrency: usize) {
    let backend = backends.database.clone().expect("database");
    let url = stack_value("WARDEN_DATABASE_URL").expect("the stack's database URL");
    let plugin = "benchpg";
    let table = physical_name(ResourceKind::Table, plugin, "points").expect("name");
    {
        let client = backend.pool().get().await.expect("connection");
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS \"{table}\"; CREATE TABLE \"{table}\" (id int PRIMARY KEY, value text NOT NULL); \
                 INSERT INTO \"{table}\" SELECT n, 'value ' || n FROM generate_series(1, 1000) n"
            ))
            .await
            .expect("setup");
    }
    let bare_sql = format!("SELECT id, value FROM \"{table}\" WHERE id = $1");
    let bare_on = |pool: deadpool_postgres::Pool| {
        let sql = bare_sql.clone();
        throughput(concurrency, move |n| {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                let Ok(client) = pool.get().await else {
                    return false;
                };
                let Ok(statement) = client.prepare_cached(&sql).await else {
                    return false;
                };
                client
                    .query(&statement, &[&((n % 1000) as i32 + 1)])
                    .await
                    .is_ok_and(|rows| rows.len() == 1)
            }
        })
    };
    // The plugin runs on its own share of connections; the fair bare client is a pool of
    // that size (the whole pool is reported beside it).
    let share =
        DatabaseSettings::with_pool_size(backend.pool().status().max_size).connections_per_plugin;
    let share_pool = DatabaseBackend::connect(&url, share).expect("pool");
    let bare_whole_pool = bare_on(backend.pool().clone()).await;
    let bare = bare_on(share_pool.pool().clone()).await;
    let gateway = actix::Actor::start(DatabaseGateway::new(
        plugin.into(),
        grants(plugin, &["points"], &[], &[]),
        backend.clone(),
    ));
    let through_gateway = throughput(concurrency, |n| {
        let request = gateway.send(ExecuteSql {
            sql: "SELECT id, value FROM points WHERE id = $1".into(),
            parameters: vec![json!((n % 1000) + 1)],
            expect: Expect::Rows,
            transaction: None,
        });
        async move {
            match request.await {
                Ok(Ok(_)) => true,
                other => {
                    eprintln!("gateway point query failed: {other:?}");
                    false
                }
            }
        }
    })
    .await;
    compare(
        &format!("PostgreSQL point query ({share} connections each)"),
        concurrency,
        bare,
        through_gateway,
    );
    compare(
        &format!(
            "PostgreSQL point query, the plugin's {share} connections against a bare pool of {}",
            backend.pool().status().max_size
        ),
        concurrency,
        bare_whole_pool,
        through_gateway,
    );
    if let Ok(client) = backend.pool().get().await {
        let _ = client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
            .await;
    }
}

/// Two updates and a select in one transaction, through the gateway (`BEGIN`, three
/// statements and `COMMIT` as four messages, as `context.database.transaction` sends them)
/// against the same on a bare pool of the plugin's share of connections.
pub async fn postgres_transaction(backends: &Backends, concurrency: usize) {
    let backend = backends.database.clone().expect("database");
    let url = stack_value("WARDEN_DATABASE_URL").expect("the stack's database URL");
    let plugin = "benchtx";
    let table = physical_name(ResourceKind::Table, plugin, "accounts").expect("name");
    {
        let client = backend.pool().get().await.expect("connection");
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS \"{table}\"; CREATE TABLE \"{table}\" (id int PRIMARY KEY, balance int NOT NULL); \
                 INSERT INTO \"{table}\" SELECT n, 1000 FROM generate_series(1, 1000) n"
            ))
            .await
            .expect("setup");
    }
    // Rows 500 apart: transactions in flight together never wait on each other's locks.
    let rows = |n: usize| ((n % 1000) as i32 + 1, ((n + 500) % 1000) as i32 + 1);
    let share =
        DatabaseSettings::with_pool_size(backend.pool().status().max_size).connections_per_plugin;
    let share_pool = DatabaseBackend::connect(&url, share).expect("pool");
    let update = format!("UPDATE \"{table}\" SET balance = balance - 1 WHERE id = $1");
    let credit = format!("UPDATE \"{table}\" SET balance = balance + 1 WHERE id = $1");
    let select = format!("SELECT balance FROM \"{table}\" WHERE id = $1");
    let bare_round = || {
        throughput(concurrency, |n| {
            let pool = share_pool.pool().clone();
            let (update, credit, select) = (update.clone(), credit.clone(), select.clone());
            async move {
                let (from, to) = rows(n);
                let Ok(mut client) = pool.get().await else {
                    return false;
                };
                let Ok(transaction) = client.transaction().await else {
                    return false;
                };
                let (Ok(update), Ok(credit), Ok(select)) = (
                    transaction.prepare_cached(&update).await,
                    transaction.prepare_cached(&credit).await,
                    transaction.prepare_cached(&select).await,
                ) else {
                    return false;
                };
                transaction.execute(&update, &[&from]).await.is_ok()
                    && transaction.execute(&credit, &[&to]).await.is_ok()
                    && transaction.query(&select, &[&from]).await.is_ok()
                    && transaction.commit().await.is_ok()
            }
        })
    };
    let gateway = actix::Actor::start(DatabaseGateway::new(
        plugin.into(),
        grants(plugin, &["accounts"], &[], &[]),
        backend.clone(),
    ));
    let gateway_round = || {
        throughput(concurrency, |n| {
            let gateway = gateway.clone();
            async move {
                let (from, to) = rows(n);
                let options =
                    TransactionOptions::from_json(&serde_json::Value::Null).expect("defaults");
                let Ok(Ok(id)) = gateway.send(BeginTransaction { options }).await else {
                    return false;
                };
                for (sql, row, expect) in [
                    (
                        "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
                        from,
                        Expect::Affected,
                    ),
                    (
                        "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
                        to,
                        Expect::Affected,
                    ),
                    (
                        "SELECT balance FROM accounts WHERE id = $1",
                        from,
                        Expect::Rows,
                    ),
                ] {
                    let statement = ExecuteSql {
                        sql: sql.into(),
                        parameters: vec![json!(row)],
                        expect,
                        transaction: Some(id),
                    };
                    if !matches!(gateway.send(statement).await, Ok(Ok(_))) {
                        return false;
                    }
                }
                matches!(
                    gateway
                        .send(EndTransaction {
                            transaction: id,
                            commit: true
                        })
                        .await,
                    Ok(Ok(()))
                )
            }
        })
    };
    // Rounds alternate, and the medians are compared: the rows' table grows dead tuples
    // round after round, which would otherwise favour whichever side ran first.
    let (mut bare, mut through_gateway) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        bare.push(bare_round().await);
        through_gateway.push(gateway_round().await);
    }
    let median = |mut rounds: Vec<f64>| {
        rounds.sort_by(f64::total_cmp);
        rounds[rounds.len() / 2]
    };
    let (bare, through_gateway) = (median(bare), median(through_gateway));
    report(
        &format!("PostgreSQL 3-statement transaction ({share} connections each), concurrency {concurrency}: gateway / bare"),
        format!("{:.2} ({through_gateway:.0}/s vs {bare:.0}/s)", through_gateway / bare),
        "≥ 0.85",
    );
    if let Ok(client) = backend.pool().get().await {
        let _ = client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{table}\""))
            .await;
    }
}

pub async fn kafka_produce(backends: &Backends, concurrency: usize) {
    let backend = backends.kafka.clone().expect("kafka");
    let plugin = "benchkafka";
    let gateway = actix::Actor::start(KafkaGateway::new(
        plugin.into(),
        grants(plugin, &[], &["load"], &[]),
        backend.clone(),
    ));
    assert!(
        matches!(gateway.send(EnsureTopics).await, Ok(Ok(()))),
        "topic created"
    );
    let topic = physical_name(ResourceKind::Topic, plugin, "load").expect("name");
    let payload = "x".repeat(1024);
    let bare = throughput(concurrency, |n| {
        let key = n.to_string();
        // A full queue hands the record back; it borrows the key, so drop it here.
        let delivery = backend
            .producer()
            .send_result(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload),
            )
            .map_err(|_| ());
        async move {
            match delivery {
                Ok(future) => matches!(future.await, Ok(Ok(_))),
                Err(()) => false,
            }
        }
    })
    .await;
    let through_gateway = throughput(concurrency, |n| {
        let request = gateway.send(SendKafkaMessages {
            topic: "load".into(),
            messages: vec![KafkaOutgoing {
                key: Some(n.to_string()),
                value: payload.clone(),
                headers: Vec::new(),
            }],
            producer_id: None,
        });
        async move { matches!(request.await, Ok(Ok(()))) }
    })
    .await;
    compare("Kafka produce, 1 KiB", concurrency, bare, through_gateway);
}

pub async fn s3_put_get(backends: &Backends, concurrency: usize) {
    let backend = backends.storage.clone().expect("s3");
    let plugin = "benchs3";
    let gateway = actix::Actor::start(StorageGateway::new(
        plugin.into(),
        grants(plugin, &[], &[], &["load"]),
        backend.clone(),
    ));
    assert!(
        matches!(gateway.send(EnsureBuckets).await, Ok(Ok(()))),
        "bucket created"
    );
    let bucket =
        backend.bucket(&physical_name(ResourceKind::Bucket, plugin, "load").expect("name"));
    let body = vec![7u8; 4096];
    let bare = throughput(concurrency, |n| {
        let (bucket, body) = (bucket.clone(), body.clone());
        async move {
            let key = format!("bare/{}", n % 256);
            bucket.put_object(&key, &body).await.is_ok()
                && bucket
                    .get_object(&key)
                    .await
                    .is_ok_and(|object| object.bytes().len() == 4096)
        }
    })
    .await;
    let through_gateway = throughput(concurrency, |n| {
        let key = format!("gateway/{}", n % 256);
        let put = gateway.send(StorageRequest {
            bucket: "load".into(),
            operation: StorageOperation::Upload {
                key: key.clone(),
                body: body.clone(),
                content_type: "application/octet-stream".into(),
            },
        });
        let gateway = gateway.clone();
        async move {
            if !matches!(put.await, Ok(Ok(_))) {
                return false;
            }
            let get = gateway.send(StorageRequest {
                bucket: "load".into(),
                operation: StorageOperation::Download { key },
            });
            matches!(get.await, Ok(Ok(_)))
        }
    })
    .await;
    compare("S3 put + get, 4 KiB", concurrency, bare, through_gateway);
}
