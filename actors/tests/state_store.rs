//! The state store and the cluster's tables against the real PostgreSQL: each test in a
//! database of its own, so that what one node id sees is exactly what the test wrote.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use warden_actors::gateways::DatabaseBackend;
use warden_actors::state_store::StateStore;
use warden_runtime::resources::ResourceOverrides;

/// A fresh database on the test server, dropped when the value is.
struct ScratchDatabase {
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create() -> Self {
        let name = support::unique_name("warden_store");
        admin(&format!("CREATE DATABASE {name}")).await;
        let url = support::url_of_database(&support::database_url(), &name);
        ScratchDatabase { name, url }
    }

    fn backend(&self) -> DatabaseBackend {
        DatabaseBackend::connect(&self.url, 4).expect("the test database URL is valid")
    }

    async fn execute(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the scratch database");
        actix_rt::spawn(connection);
        client.batch_execute(sql).await.expect(sql);
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // A fresh runtime: the test's own may be gone or busy when this runs.
        let _ = std::thread::spawn(move || {
            actix_rt::System::new().block_on(admin(&sql));
        })
        .join();
    }
}

async fn admin(sql: &str) {
    let (client, connection) =
        tokio_postgres::connect(&support::database_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
    actix_rt::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
}

fn sample_overrides() -> ResourceOverrides {
    ResourceOverrides {
        allowed_tables: Some(vec!["users".to_owned(), "orders".to_owned()]),
        allowed_topics: Some(Vec::new()),
        table_name_map: BTreeMap::from([("users".to_owned(), "shared:users".to_owned())]),
        ..ResourceOverrides::default()
    }
}

#[actix_rt::test]
async fn open_is_idempotent_even_when_raced() {
    let database = ScratchDatabase::create().await;
    let (first, second) = tokio::join!(
        StateStore::open(database.backend(), "node-a"),
        StateStore::open(database.backend(), "node-b")
    );
    first.expect("first open");
    second.expect("second open");
    StateStore::open(database.backend(), "node-a")
        .await
        .expect("opening again changes nothing");
}

#[actix_rt::test]
async fn overrides_are_saved_loaded_replaced_and_deleted() {
    let database = ScratchDatabase::create().await;
    let store = StateStore::open(database.backend(), "node-a")
        .await
        .expect("open");
    store
        .save_overrides("crm", Some(&sample_overrides()))
        .await
        .expect("save");
    store
        .save_overrides("billing", Some(&ResourceOverrides::default()))
        .await
        .expect("save empty");
    let state = store.load().await.expect("load");
    assert_eq!(state.overrides.get("crm"), Some(&sample_overrides()));
    assert_eq!(
        state.overrides.get("billing"),
        Some(&ResourceOverrides::default())
    );

    let replacement = ResourceOverrides {
        allowed_buckets: Some(vec!["data".to_owned()]),
        ..ResourceOverrides::default()
    };
    store
        .save_overrides("crm", Some(&replacement))
        .await
        .expect("replace");
    store.save_overrides("billing", None).await.expect("delete");
    store
        .save_overrides("billing", None)
        .await
        .expect("deleting what is not there is fine");
    let state = store.load().await.expect("load again");
    assert_eq!(
        state.overrides,
        BTreeMap::from([("crm".to_owned(), replacement)])
    );
}

#[actix_rt::test]
async fn loaded_plugins_keep_their_load_order() {
    let database = ScratchDatabase::create().await;
    let store = StateStore::open(database.backend(), "node-a")
        .await
        .expect("open");
    for plugin in ["users", "orders", "billing"] {
        store
            .save_loaded(plugin, Some(&format!("{plugin}.js")))
            .await
            .expect("record loaded");
    }
    let sources =
        |store: StateStore| async move { store.load().await.expect("load").loaded_sources };
    assert_eq!(
        sources(store.clone()).await,
        ["users.js", "orders.js", "billing.js"]
    );

    // Recorded again (a reload, here from another file): it keeps its place.
    store
        .save_loaded("users", Some("users.ts"))
        .await
        .expect("again");
    store.save_loaded("orders", None).await.expect("unloaded");
    assert_eq!(sources(store.clone()).await, ["users.ts", "billing.js"]);

    // Unloaded and loaded again: it goes last.
    store
        .save_loaded("orders", Some("orders.js"))
        .await
        .expect("loaded again");
    assert_eq!(
        sources(store.clone()).await,
        ["users.ts", "billing.js", "orders.js"]
    );
}

#[actix_rt::test]
async fn nodes_on_one_database_keep_their_own_plugins_and_overrides_but_share_prefix_claims() {
    let database = ScratchDatabase::create().await;
    let first = StateStore::open(database.backend(), "web-1")
        .await
        .expect("open");
    let second = StateStore::open(database.backend(), "web-2")
        .await
        .expect("open");
    first
        .save_loaded("crm", Some("crm.js"))
        .await
        .expect("record");
    first
        .save_overrides("crm", Some(&sample_overrides()))
        .await
        .expect("save");
    first.claim_prefix("crm").await.expect("claim");

    let seen_by_second = second.load().await.expect("load");
    assert!(
        seen_by_second.loaded_sources.is_empty(),
        "{seen_by_second:?}"
    );
    assert!(seen_by_second.overrides.is_empty(), "{seen_by_second:?}");
    assert_eq!(
        seen_by_second.claimed_prefixes,
        ["crm"],
        "physical names are shared by every node on the database"
    );

    // The same deployment restarted (same id) restores its own.
    let restarted = StateStore::open(database.backend(), "web-1")
        .await
        .expect("reopen");
    let state = restarted.load().await.expect("load");
    assert_eq!(state.loaded_sources, ["crm.js"]);
    assert_eq!(state.overrides.get("crm"), Some(&sample_overrides()));
}

#[actix_rt::test]
async fn state_written_before_node_ids_is_adopted_by_the_first_node_to_open() {
    let database = ScratchDatabase::create().await;
    database
        .execute(
            "CREATE SCHEMA warden;
             CREATE TABLE warden.loaded_plugins (name text PRIMARY KEY, source text NOT NULL,
                 loaded_at timestamptz NOT NULL DEFAULT clock_timestamp(), position bigserial);
             CREATE TABLE warden.overrides (name text PRIMARY KEY, overrides jsonb NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO warden.loaded_plugins (name, source) VALUES ('users', 'users.js');
             INSERT INTO warden.loaded_plugins (name, source) VALUES ('orders', 'orders.js');
             INSERT INTO warden.overrides (name, overrides)
                 VALUES ('orders', '{\"allowedTopics\": []}');",
        )
        .await;
    let upgraded = StateStore::open(database.backend(), "web-1")
        .await
        .expect("open");
    let state = upgraded.load().await.expect("load");
    assert_eq!(
        state.loaded_sources,
        ["users.js", "orders.js"],
        "in load order"
    );
    assert_eq!(
        state.overrides.get("orders"),
        Some(&ResourceOverrides {
            allowed_topics: Some(Vec::new()),
            ..ResourceOverrides::default()
        })
    );
    let other = StateStore::open(database.backend(), "web-2")
        .await
        .expect("open");
    assert!(
        other.load().await.expect("load").loaded_sources.is_empty(),
        "adopted once, by one node"
    );
}

#[actix_rt::test]
async fn a_stored_row_that_is_not_an_overrides_document_is_a_typed_error() {
    let database = ScratchDatabase::create().await;
    let store = StateStore::open(database.backend(), "web-1")
        .await
        .expect("open");
    database
        .execute(
            "INSERT INTO warden.node_overrides (node, name, overrides)
             VALUES ('web-1', 'crm', '{\"allowedTables\": \"users\"}')",
        )
        .await;
    match store.load().await {
        Err(warden_actors::state_store::StoreError::InvalidRow { name, .. }) => {
            assert_eq!(name, "crm")
        }
        other => panic!("expected an invalid row, got {other:?}"),
    }
}

#[actix_rt::test]
async fn cluster_nodes_unseen_for_an_hour_are_forgotten_with_their_plugin_states() {
    use std::time::Duration;
    use warden_actors::cluster::{NodeAddresses, NodeTable, PluginStateTable};

    let database = ScratchDatabase::create().await;
    let backend = database.backend();
    let nodes = NodeTable::open(backend.clone(), "shop").await.unwrap();
    let states = PluginStateTable::open(backend.clone(), "shop")
        .await
        .unwrap();
    let addresses = NodeAddresses {
        admin_address: "127.0.0.1:1".into(),
        http_address: None,
    };
    nodes.beat("old", &addresses).await.unwrap();
    nodes.beat("new", &addresses).await.unwrap();
    database
        .execute(
            "UPDATE warden.cluster_nodes SET last_seen = now() - interval '2 hours' WHERE node = 'old';
             INSERT INTO warden.cluster_plugin_states (cluster, node, plugin, state, restarts)
                 VALUES ('shop', 'old', 'a', 'running', 0), ('shop', 'new', 'a', 'failed', 2)",
        )
        .await;
    let listed: Vec<String> = nodes
        .list(Duration::from_secs(10))
        .await
        .unwrap()
        .into_iter()
        .map(|node| node.id)
        .collect();
    assert_eq!(listed, ["new"], "not listed past the hour");

    nodes.forget_old().await.unwrap();
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_rt::spawn(connection);
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM warden.cluster_nodes").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM warden.cluster_plugin_states WHERE node = 'old'").await,
        0,
        "a forgotten node's plugin states go with it"
    );
    let read = states
        .read(&["a".to_owned()], Duration::from_secs(10))
        .await
        .unwrap();
    let on_new = &read["a"]["new"];
    assert_eq!((on_new.state.as_str(), on_new.restarts), ("failed", 2));
}
