//! `just bench`: Warden's speed against DESIGN.md's targets, printed as a table.
//!
//! Everything runs in process on the real actor system (`Warden`), except the HTTP number, which
//! drives the release `warden` binary over loopback. Results are copied into BENCHMARKS.md.

use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{json, Value};
use warden_actors::manager::ManagerConfig;
use warden_actors::plugin_actor::SupervisionPolicy;
use warden_actors::system::Warden;
use warden_runtime::events::{EventPattern, ListenerReach};
use warden_runtime::manifest::PluginManifest;
use warden_runtime::{
    CallTarget, Error, Event, Plugin, PluginContext, PluginDescription, PluginFactory,
    PluginFuture, PluginLimits,
};

// Not `benches/cluster.rs`: cargo would take that for a bench target of its own.
#[path = "warden/cluster.rs"]
mod cluster;

fn main() {
    let system = actix_rt::System::new();
    system.block_on(async {
        println!("| measurement | result | target |");
        println!("| --- | --- | --- |");
        // `WARDEN_BENCH_ONLY=guard,gateways` runs only those groups (a quick look at one
        // change); the recorded runs in BENCHMARKS.md run everything.
        let only = std::env::var("WARDEN_BENCH_ONLY").unwrap_or_default();
        let runs = |group: &str| only.is_empty() || only.split(',').any(|name| name == group);
        if runs("core") {
            engine_creation(1_000);
            load_and_unload(1_000).await;
            execute_in_process(200_000, 64).await;
            for listeners in [1, 10, 100] {
                js_event_deliveries(listeners, 1_000_000, false).await;
            }
        }
        if runs("core") || runs("events") {
            js_event_deliveries(100, 10_000_000, true).await;
        }
        if runs("core") {
            native_event_deliveries(100, 5_000_000).await;
            restart_to_serving(10).await;
            execute_over_http(100_000, 32).await;
        }
        if runs("guard") {
            sql_guard_timing();
        }
        if runs("cluster") {
            cluster::load_convergence(200).await;
            for listeners in [1, 10] {
                cluster::event_crossing(400, 100_000, listeners).await;
            }
        }
        if !runs("gateways") {
            return;
        }
        match gateways::stack() {
            Some(backends) => {
                for concurrency in [1, 32] {
                    gateways::postgres_point_query(&backends, concurrency).await;
                    gateways::kafka_produce(&backends, concurrency).await;
                    gateways::s3_put_get(&backends, concurrency).await;
                }
                gateways::postgres_transaction(&backends, 32).await;
            }
            None => report(
                "gateways vs bare clients",
                "skipped: run `just infra-up` first".into(),
                "≥ 0.90",
            ),
        }
    });
}

fn sql_guard_timing() {
    use warden_runtime::resources::ResourceGrants;
    use warden_runtime::sql_guard::guard_statement;
    let tables = ["users".to_string(), "orders".to_string()];
    let grants = ResourceGrants::resolve("shop", &tables, &[], &[], None).expect("grants");
    let statements = [
        ("point select", "SELECT id, name, email FROM users WHERE id = $1"),
        ("insert returning", "INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id"),
        (
            "join + CTE",
            "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
             SELECT u.name, count(*) AS n FROM recent r JOIN users u ON u.id = r.user_id GROUP BY u.name ORDER BY n DESC LIMIT 10",
        ),
    ];
    for (name, sql) in statements {
        let iterations = 20_000;
        let started = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(
                guard_statement("shop", std::hint::black_box(sql), &grants).expect("allowed"),
            );
        }
        report(
            &format!("SQL guard parse + check + rewrite, {name}"),
            format!(
                "{:.1} µs",
                started.elapsed().as_secs_f64() * 1e6 / iterations as f64
            ),
            "< 20 µs",
        );
    }
}

/// Gateway actors against the bare shared clients, on the real local stack (`just infra-up`).
mod gateways {
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
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local.env"))
                .ok()?;
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
        let share = DatabaseSettings::with_pool_size(backend.pool().status().max_size)
            .connections_per_plugin;
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
        let share = DatabaseSettings::with_pool_size(backend.pool().status().max_size)
            .connections_per_plugin;
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
}

fn start(plugins_dir: &std::path::Path, event_queue_capacity: usize) -> Warden {
    Warden::start(ManagerConfig {
        plugins_dir: plugins_dir.to_path_buf(),
        limits: PluginLimits::default(),
        policy: SupervisionPolicy::default(),
        plugin_threads: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        event_queue_capacity,
        backends: Default::default(),
        store: None,
        cluster: None,
        node_states: None,
        cluster_events: None,
    })
}

fn report(what: &str, result: String, target: &str) {
    println!("| {what} | {result} | {target} |");
    let _ = std::io::stdout().flush();
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The engine's share of a load: a QuickJS runtime and context, the prelude, the module.
fn engine_creation(count: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("small.js");
    std::fs::write(
        &path,
        "export default { metadata: { name: 'small', version: '1.0.0' }, async execute(input) { return input; } };",
    )
    .expect("write plugin");
    let module = warden_runtime::js::JsModule::read(&path).expect("read");
    let started = Instant::now();
    let mut heap = 0;
    for _ in 0..count {
        let plugin = warden_runtime::js::JsPlugin::load(
            module.files.clone(),
            &module.entry,
            module.code.clone(),
            PluginLimits::default(),
        )
        .expect("load");
        heap += plugin.memory_used();
    }
    report(
        "of which engine: QuickJS runtime + context + prelude + module evaluation, no actors",
        format!(
            "{:.3} ms, heap {:.0} KiB",
            started.elapsed().as_secs_f64() * 1e3 / count as f64,
            heap as f64 / 1024.0 / count as f64
        ),
        "—",
    );
}

async fn load_and_unload(count: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    for index in 0..count {
        std::fs::write(
            directory.path().join(format!("p{index:04}.js")),
            format!(
                "export default {{ metadata: {{ name: \"p{index:04}\", version: \"1.0.0\" }},\n\
                 async initialize(context) {{ this.context = context; this.calls = 0; }},\n\
                 async execute(input) {{ this.calls++; return input; }}{} }};\n",
                // The second half has a cleanup(), which an unload must wait for.
                if index >= count / 2 {
                    ",\n async cleanup() { this.calls = 0; }"
                } else {
                    ""
                }
            ),
        )
        .expect("write plugin");
    }
    let warden = start(directory.path(), 10_000);
    let before = resident_bytes();
    let mut loads = Vec::with_capacity(count);
    for index in 0..count {
        let started = Instant::now();
        warden
            .load(format!("p{index:04}.js"), None)
            .await
            .expect("load");
        loads.push(started.elapsed());
    }
    let after = resident_bytes();
    let total: Duration = loads.iter().sum();
    loads.sort();
    report(
        &format!("load + initialize, {count} small JS plugins, mean per plugin"),
        format!(
            "{:.3} ms (p50 {:.3} ms, p99 {:.3} ms)",
            total.as_secs_f64() * 1e3 / count as f64,
            percentile(&loads, 0.5).as_secs_f64() * 1e3,
            percentile(&loads, 0.99).as_secs_f64() * 1e3
        ),
        "≤ 0.20 ms mean, p99 ≤ 1 ms",
    );
    report(
        "memory per idle JS plugin (process RSS growth / plugins)",
        format!(
            "{:.0} KiB",
            after.saturating_sub(before) as f64 / 1024.0 / count as f64
        ),
        "≤ 256 KiB",
    );
    let mut unloads = Vec::with_capacity(count);
    for index in 0..count {
        let started = Instant::now();
        warden
            .unload(format!("p{index:04}"), false)
            .await
            .expect("unload");
        unloads.push(started.elapsed());
    }
    let (without_cleanup, with_cleanup) = unloads.split_at(count / 2);
    for (what, unloads) in [("without", without_cleanup), ("with", with_cleanup)] {
        let total: Duration = unloads.iter().sum();
        report(
            &format!("unload, mean per plugin, {what} a cleanup()"),
            format!("{:.1} µs", total.as_secs_f64() * 1e6 / unloads.len() as f64),
            "≤ 50 µs",
        );
    }
    warden.shutdown().await;
}

async fn execute_in_process(calls: usize, concurrency: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        directory.path().join("echo.js"),
        "export default { metadata: { name: 'echo', version: '1.0.0' }, async execute(input) { return { ok: true, n: input.n }; } };",
    )
    .expect("write plugin");
    let warden = start(directory.path(), 10_000);
    warden.load("echo.js".into(), None).await.expect("load");
    let started = Instant::now();
    let failures = futures::stream::iter(0..calls)
        .map(|n| {
            let warden = warden.clone();
            async move { warden.execute("echo", json!({ "n": n })).await.is_err() }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(failures, 0, "every call succeeds");
    report(
        &format!("`execute` round trip in process, JS plugin, small JSON, {concurrency} in flight"),
        format!("{:.0} calls/s", calls as f64 / elapsed.as_secs_f64()),
        "≥ 150,000/s",
    );
    warden.shutdown().await;
}

/// `burst`: one emitter publishes everything without yielding, against the default window of
/// 10,000 events in flight per listener (the rest waits in the broker's log); otherwise the
/// window holds every event and the emitter yields now and then (the steady state).
async fn js_event_deliveries(listeners: usize, deliveries: usize, burst: bool) {
    let events = deliveries / listeners;
    let directory = tempfile::tempdir().expect("tempdir");
    for index in 0..listeners {
        std::fs::write(
            directory.path().join(format!("l{index:03}.js")),
            format!(
                "let seen = 0;\nexport default {{ metadata: {{ name: 'l{index:03}', version: '1.0.0' }},\n\
                 async initialize(context) {{ context.eventBus.on('bench:tick', () => {{ seen++; if (seen === {events}) context.eventBus.emit('bench:done', {{}}); }}); }} }};\n"
            ),
        )
        .expect("write plugin");
    }
    let window = if burst {
        warden_actors::broker::DEFAULT_QUEUE_CAPACITY
    } else {
        events + 1
    };
    let warden = start(directory.path(), window);
    let report_loaded = warden.scan().await.expect("scan");
    assert_eq!(report_loaded.loaded.len(), listeners);
    let mut done = warden.stream("bench:done", listeners + 1).expect("stream");
    let started = Instant::now();
    for n in 0..events {
        warden
            .publish("bench:tick", "bench", json!(n))
            .expect("publish");
        // Yield now and then so the broker drains while we publish, as a real emitter would.
        if !burst && n % 4_096 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for _ in 0..listeners {
        tokio::time::timeout(Duration::from_secs(120), done.recv())
            .await
            .expect("every listener sees every event")
            .expect("stream open");
    }
    let elapsed = started.elapsed();
    report(
        &format!(
            "event deliveries into JS listeners, 1 emitter → {listeners}{}",
            if burst {
                format!(", one burst of {events} events, none dropped")
            } else {
                String::new()
            }
        ),
        format!(
            "{:.0} deliveries/s",
            (events * listeners) as f64 / elapsed.as_secs_f64()
        ),
        if listeners == 100 {
            "≥ 1,000,000/s"
        } else {
            "—"
        },
    );
    warden.shutdown().await;
}

/// A native listener that counts what it receives.
struct CountingListener {
    description: PluginDescription,
    seen: Arc<AtomicUsize>,
}

impl Plugin for CountingListener {
    fn describe(&self) -> PluginDescription {
        self.description.clone()
    }

    fn initialize(&self, context: PluginContext) -> PluginFuture<()> {
        let subscribed = EventPattern::parse("bench:tick").and_then(|pattern| {
            context
                .events
                .subscribe(&pattern, ListenerReach::OncePerPlugin)
        });
        Box::pin(async move { subscribed })
    }

    fn call(&self, _: CallTarget, _: Vec<Value>) -> PluginFuture<Value> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn deliver_events(&self, events: &[Arc<Event>]) {
        self.seen.fetch_add(events.len(), Ordering::Relaxed);
    }

    fn cleanup(&self) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn dispose(&self) {}
}

struct CountingFactory {
    name: String,
    seen: Arc<AtomicUsize>,
    crash_on_call: bool,
}

impl PluginFactory for CountingFactory {
    fn create(&self) -> warden_runtime::Result<Box<dyn Plugin>> {
        let manifest =
            PluginManifest::from_json(&json!({ "name": self.name, "version": "1.0.0" }))?;
        let description = PluginDescription {
            manifest,
            exports: Vec::new(),
            executable: true,
            has_cleanup: false,
            routes: Default::default(),
            migrations: Default::default(),
        };
        if self.crash_on_call {
            return Ok(Box::new(CrashingPlugin {
                description,
                crashed: Rc::new(std::cell::Cell::new(false)),
            }));
        }
        Ok(Box::new(CountingListener {
            description,
            seen: self.seen.clone(),
        }))
    }

    fn kind(&self) -> &'static str {
        "native"
    }
}

async fn native_event_deliveries(listeners: usize, deliveries: usize) {
    let events = deliveries / listeners;
    let directory = tempfile::tempdir().expect("tempdir");
    let warden = start(directory.path(), events + 1);
    let seen = Arc::new(AtomicUsize::new(0));
    for index in 0..listeners {
        let factory = CountingFactory {
            name: format!("n{index:03}"),
            seen: seen.clone(),
            crash_on_call: false,
        };
        warden
            .load_native(Arc::new(factory))
            .await
            .expect("load native");
    }
    let started = Instant::now();
    for n in 0..events {
        warden
            .publish("bench:tick", "bench", json!(n))
            .expect("publish");
        if n % 4_096 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let total = events * listeners;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(
        seen.load(Ordering::Relaxed),
        total,
        "every native listener sees every event"
    );
    report(
        &format!("event deliveries into native listeners, 1 emitter → {listeners}"),
        format!("{:.0} deliveries/s", total as f64 / elapsed.as_secs_f64()),
        "≥ 5,000,000/s",
    );
    warden.shutdown().await;
}

/// A native plugin whose first call panics; its restarted instance serves normally.
struct CrashingPlugin {
    description: PluginDescription,
    crashed: Rc<std::cell::Cell<bool>>,
}

impl Plugin for CrashingPlugin {
    fn describe(&self) -> PluginDescription {
        self.description.clone()
    }

    fn initialize(&self, _: PluginContext) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn call(&self, _: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value> {
        if arguments.first() == Some(&json!("crash")) {
            self.crashed.set(true);
            panic!("crash requested by the benchmark");
        }
        Box::pin(async { Ok(json!("ok")) })
    }

    fn deliver_events(&self, _: &[Arc<Event>]) {}

    fn cleanup(&self) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn dispose(&self) {}
}

async fn restart_to_serving(samples: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    let warden = start(directory.path(), 10_000);
    let backoff = SupervisionPolicy::default().initial_backoff;
    let mut times = Vec::with_capacity(samples);
    // Panics are expected here; keep their messages out of the table.
    std::panic::set_hook(Box::new(|_| {}));
    for index in 0..samples {
        let name = format!("crash{index:02}");
        let factory = CountingFactory {
            name: name.clone(),
            seen: Arc::new(AtomicUsize::new(0)),
            crash_on_call: true,
        };
        warden.load_native(Arc::new(factory)).await.expect("load");
        let started = Instant::now();
        let crashed = warden.execute(&name, json!("crash")).await;
        assert!(
            matches!(
                crashed,
                Err(warden_actors::Error::Plugin(Error::Crashed { .. }))
            ),
            "{crashed:?}"
        );
        loop {
            if warden.execute(&name, json!("ping")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(started.elapsed().saturating_sub(backoff));
    }
    let _ = std::panic::take_hook();
    times.sort();
    report(
        "restart after a crash to serving again, minus the 50 ms backoff (median of 10)",
        format!("{:.2} ms", percentile(&times, 0.5).as_secs_f64() * 1e3),
        "< 50 ms",
    );
    warden.shutdown().await;
}

async fn execute_over_http(calls: usize, concurrency: usize) {
    let binary = std::env::var("WARDEN_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/warden").to_string()
    });
    if !std::path::Path::new(&binary).exists() {
        report(
            "`execute` over HTTP",
            format!("skipped: build {binary} first (`just bench` does)"),
            "≥ 20,000/s",
        );
        return;
    }
    // The harness starts the binary `WARDEN_BIN` names: the release build here.
    std::env::set_var("WARDEN_BIN", &binary);
    let mut server = warden_tests::WardenProcess::start(
        &[(
            "echo.js",
            "export default { metadata: { name: 'echo', version: '1.0.0' }, async execute(input) { return { ok: true, n: input.n }; } };",
        )],
        &[],
        &[],
    );
    let url = server.url("/plugins/echo/execute");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let started = Instant::now();
    let failures = futures::stream::iter(0..calls)
        .map(|n| {
            let request = client
                .post(&url)
                .insert_header((
                    "Authorization",
                    format!("Bearer {}", warden_tests::ADMIN_TOKEN),
                ))
                .send_json(&json!({ "n": n }));
            async move {
                match request.await {
                    Ok(mut response) => {
                        !response.status().is_success() || response.body().await.is_err()
                    }
                    Err(_) => true,
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let elapsed = started.elapsed();
    server.terminate();
    assert_eq!(failures, 0, "every HTTP call succeeds");
    report(
        &format!("`execute` over HTTP (loopback, keep-alive, {concurrency} in flight, client in the same 2 cores)"),
        format!("{:.0} calls/s", calls as f64 / elapsed.as_secs_f64()),
        "≥ 20,000/s",
    );
}
