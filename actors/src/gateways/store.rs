//! Warden's own durable state in PostgreSQL (schema `warden`): overrides and loaded plugins.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use warden_runtime::resources::ResourceOverrides;

use super::DatabaseBackend;

/// The schema and tables, each created only when missing. `open` runs them one at a time so
/// that losing a creation race to another process fails only that statement.
const CREATE_STATEMENTS: [&str; 4] = [
    "CREATE SCHEMA IF NOT EXISTS warden",
    "CREATE TABLE IF NOT EXISTS warden.overrides (
        name text PRIMARY KEY,
        overrides jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )",
    "CREATE TABLE IF NOT EXISTS warden.loaded_plugins (
        name text PRIMARY KEY,
        source text NOT NULL,
        loaded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        position bigserial
    )",
    // A plugin name whose prefix once held resources: no later plugin may overlap it.
    "CREATE TABLE IF NOT EXISTS warden.claimed_prefixes (
        name text PRIMARY KEY,
        claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )",
];

const SELECT_CLAIMED: &str = "SELECT name FROM warden.claimed_prefixes ORDER BY name";

const INSERT_CLAIMED: &str =
    "INSERT INTO warden.claimed_prefixes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";

const SELECT_OVERRIDES: &str = "SELECT name, overrides FROM warden.overrides ORDER BY name";

const SELECT_LOADED: &str = "SELECT source FROM warden.loaded_plugins ORDER BY position";

const UPSERT_OVERRIDES: &str = "INSERT INTO warden.overrides (name, overrides) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET overrides = EXCLUDED.overrides, updated_at = now()";

const DELETE_OVERRIDES: &str = "DELETE FROM warden.overrides WHERE name = $1";

/// Keeps the row's `position` when the plugin is recorded again (a reload keeps its place in
/// the load order).
const UPSERT_LOADED: &str = "INSERT INTO warden.loaded_plugins (name, source) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, loaded_at = clock_timestamp()";

const DELETE_LOADED: &str = "DELETE FROM warden.loaded_plugins WHERE name = $1";

/// What a restarted `warden serve` restores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Overrides by plugin name.
    pub overrides: BTreeMap<String, ResourceOverrides>,
    /// Files (relative to the plugins directory) of plugins that were loaded, in load order.
    pub loaded_sources: Vec<String>,
    /// Plugin names whose prefixes are claimed, loaded or not.
    pub claimed_prefixes: Vec<String>,
}

/// Reads and writes Warden's state; every write is one statement, so a crash never leaves half.
#[derive(Clone)]
pub struct StateStore {
    backend: DatabaseBackend,
}

impl StateStore {
    /// Creates the schema and tables when missing.
    pub async fn open(backend: DatabaseBackend) -> std::result::Result<Self, String> {
        let client = connection(&backend, "open the state store").await?;
        for statement in CREATE_STATEMENTS {
            match client.batch_execute(statement).await {
                Ok(()) => {}
                // `IF NOT EXISTS` checks before it creates, so two processes starting together
                // can both decide to create; the loser fails on the catalog's unique index, and
                // what it wanted now exists.
                Err(error) if lost_creation_race(&error) => {
                    tracing::debug!(%error, "another process created warden's state tables first");
                }
                Err(error) => {
                    return Err(format!(
                        "cannot create warden's state tables: {}",
                        describe(&error)
                    ))
                }
            }
        }
        Ok(StateStore { backend })
    }

    /// Everything stored.
    pub async fn load(&self) -> std::result::Result<StoredState, String> {
        let client = connection(&self.backend, "load stored state").await?;
        let override_rows = client
            .query(SELECT_OVERRIDES, &[])
            .await
            .map_err(|error| format!("cannot read stored overrides: {}", describe(&error)))?;
        let mut overrides = BTreeMap::new();
        for row in override_rows {
            let name: String = row
                .try_get(0)
                .map_err(|error| format!("cannot read stored overrides: {error}"))?;
            let document: Value = row
                .try_get(1)
                .map_err(|error| format!("cannot read stored overrides of '{name}': {error}"))?;
            let parsed = overrides_from_json(&document)
                .map_err(|error| format!("stored overrides of '{name}' are invalid: {error}"))?;
            overrides.insert(name, parsed);
        }
        let loaded_rows = client.query(SELECT_LOADED, &[]).await.map_err(|error| {
            format!(
                "cannot read the stored loaded plugins: {}",
                describe(&error)
            )
        })?;
        let loaded_sources = loaded_rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("cannot read the stored loaded plugins: {error}"))?;
        let claimed_prefixes = client
            .query(SELECT_CLAIMED, &[])
            .await
            .map_err(|error| format!("cannot read the claimed prefixes: {}", describe(&error)))?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("cannot read the claimed prefixes: {error}"))?;
        Ok(StoredState {
            overrides,
            loaded_sources,
            claimed_prefixes,
        })
    }

    /// Records that plugin `name` held resources, so its prefix stays claimed after unload.
    pub async fn claim_prefix(&self, name: &str) -> std::result::Result<(), String> {
        let client = connection(&self.backend, "claim a name prefix").await?;
        client
            .execute(INSERT_CLAIMED, &[&name])
            .await
            .map(drop)
            .map_err(|error| format!("cannot claim the prefix of '{name}': {}", describe(&error)))
    }

    /// Stores (`Some`) or removes (`None`) a plugin name's overrides.
    pub async fn save_overrides(
        &self,
        name: &str,
        overrides: Option<&ResourceOverrides>,
    ) -> std::result::Result<(), String> {
        let client = connection(&self.backend, "store overrides").await?;
        let written = match overrides {
            Some(overrides) => {
                let document = overrides_to_json(overrides);
                client.execute(UPSERT_OVERRIDES, &[&name, &document]).await
            }
            None => client.execute(DELETE_OVERRIDES, &[&name]).await,
        };
        written.map(drop).map_err(|error| {
            format!(
                "cannot store the overrides of '{name}': {}",
                describe(&error)
            )
        })
    }

    /// Records that `name` is loaded from `source` (`Some`), or no longer loaded (`None`).
    pub async fn save_loaded(
        &self,
        name: &str,
        source: Option<&str>,
    ) -> std::result::Result<(), String> {
        let client = connection(&self.backend, "record a loaded plugin").await?;
        let written = match source {
            Some(source) => client.execute(UPSERT_LOADED, &[&name, &source]).await,
            None => client.execute(DELETE_LOADED, &[&name]).await,
        };
        written.map(drop).map_err(|error| {
            format!(
                "cannot record whether '{name}' is loaded: {}",
                describe(&error)
            )
        })
    }
}

async fn connection(
    backend: &DatabaseBackend,
    purpose: &str,
) -> std::result::Result<deadpool_postgres::Client, String> {
    backend
        .pool()
        .get()
        .await
        .map_err(|error| format!("cannot {purpose}: no database connection: {error}"))
}

/// Whether creating failed only because a concurrent creation of the same object won.
fn lost_creation_race(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        [
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_SCHEMA,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_OBJECT,
        ]
        .contains(code)
    })
}

/// PostgreSQL's own message and SQLSTATE when there is one, otherwise the client's error.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(database) => format!("{} ({})", database.message(), database.code().code()),
        None => error.to_string(),
    }
}

/// The `Overrides` document of `ADMIN_API.md` (camelCase field names). An allowed list is
/// written only when present and a name map only when not empty, so no overrides is `{}`.
pub fn overrides_to_json(overrides: &ResourceOverrides) -> Value {
    let mut document = Map::new();
    let lists = [
        ("allowedTables", &overrides.allowed_tables),
        ("allowedTopics", &overrides.allowed_topics),
        ("allowedBuckets", &overrides.allowed_buckets),
    ];
    for (field, list) in lists {
        if let Some(list) = list {
            document.insert(field.to_owned(), Value::from(list.clone()));
        }
    }
    let maps = [
        ("tableNameMap", &overrides.table_name_map),
        ("topicNameMap", &overrides.topic_name_map),
        ("bucketNameMap", &overrides.bucket_name_map),
    ];
    for (field, map) in maps {
        if !map.is_empty() {
            let entries = map
                .iter()
                .map(|(from, to)| (from.clone(), Value::String(to.clone())))
                .collect();
            document.insert(field.to_owned(), Value::Object(entries));
        }
    }
    Value::Object(document)
}

/// Reads an `Overrides` document (camelCase field names). Absent or `null` fields are unset;
/// unknown fields are refused. Names are not checked here: `ResourceOverrides::validate` does
/// that.
pub fn overrides_from_json(document: &Value) -> std::result::Result<ResourceOverrides, String> {
    let Value::Object(fields) = document else {
        return Err("overrides must be a JSON object".into());
    };
    let mut overrides = ResourceOverrides::default();
    for (field, value) in fields {
        match field.as_str() {
            "allowedTables" => overrides.allowed_tables = string_list(field, value)?,
            "allowedTopics" => overrides.allowed_topics = string_list(field, value)?,
            "allowedBuckets" => overrides.allowed_buckets = string_list(field, value)?,
            "tableNameMap" => overrides.table_name_map = string_map(field, value)?,
            "topicNameMap" => overrides.topic_name_map = string_map(field, value)?,
            "bucketNameMap" => overrides.bucket_name_map = string_map(field, value)?,
            other => {
                return Err(format!(
                    "unknown field '{other}' in overrides; expected allowedTables, \
                     allowedTopics, allowedBuckets, tableNameMap, topicNameMap or bucketNameMap"
                ))
            }
        }
    }
    Ok(overrides)
}

fn string_list(field: &str, value: &Value) -> std::result::Result<Option<Vec<String>>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| format!("{field} must be an array of strings")),
        _ => Err(format!("{field} must be an array of strings")),
    }
}

fn string_map(field: &str, value: &Value) -> std::result::Result<BTreeMap<String, String>, String> {
    match value {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(entries) => entries
            .iter()
            .map(|(from, to)| match to {
                Value::String(to) => Ok((from.clone(), to.clone())),
                _ => Err(format!("{field} value for '{from}' must be a string")),
            })
            .collect(),
        _ => Err(format!("{field} must be an object of strings")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;

    const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn backend() -> DatabaseBackend {
        let url = std::env::var("WARDEN_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
        DatabaseBackend::connect(&url, 4).expect("test database url is valid")
    }

    /// A name prefix no other test (in this process or another) uses.
    fn unique_prefix() -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        format!(
            "store-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn sample_overrides() -> ResourceOverrides {
        ResourceOverrides {
            allowed_tables: Some(vec!["users".to_owned(), "orders".to_owned()]),
            allowed_topics: Some(Vec::new()),
            allowed_buckets: None,
            table_name_map: BTreeMap::from([("users".to_owned(), "shared:users".to_owned())]),
            topic_name_map: BTreeMap::new(),
            bucket_name_map: BTreeMap::from([("data".to_owned(), "archive".to_owned())]),
        }
    }

    #[test]
    fn overrides_round_trip_through_the_api_shape() {
        let overrides = sample_overrides();
        let document = overrides_to_json(&overrides);
        assert_eq!(
            document,
            json!({
                "allowedTables": ["users", "orders"],
                "allowedTopics": [],
                "tableNameMap": {"users": "shared:users"},
                "bucketNameMap": {"data": "archive"},
            })
        );
        assert_eq!(overrides_from_json(&document), Ok(overrides));
        assert_eq!(overrides_to_json(&ResourceOverrides::default()), json!({}));
        assert_eq!(
            overrides_from_json(&json!({"allowedBuckets": null, "topicNameMap": null})),
            Ok(ResourceOverrides::default())
        );
    }

    #[test]
    fn malformed_overrides_are_refused_with_the_field() {
        let cases = [
            (json!([]), "JSON object"),
            (json!({"allowedTables": "users"}), "allowedTables"),
            (json!({"allowedTopics": [1]}), "allowedTopics"),
            (json!({"tableNameMap": {"users": 1}}), "tableNameMap"),
            (json!({"bucketNameMap": []}), "bucketNameMap"),
            (json!({"allowed_tables": []}), "allowed_tables"),
        ];
        for (document, field) in cases {
            let error = overrides_from_json(&document).expect_err("refused");
            assert!(error.contains(field), "{document}: {error}");
        }
    }

    #[actix_rt::test]
    async fn open_is_idempotent_even_when_raced() {
        let backend = backend();
        let (first, second) = tokio::join!(
            StateStore::open(backend.clone()),
            StateStore::open(backend.clone())
        );
        first.expect("first open");
        second.expect("second open");
        StateStore::open(backend)
            .await
            .expect("opening again changes nothing");
    }

    #[actix_rt::test]
    async fn overrides_are_saved_loaded_replaced_and_deleted() {
        let store = StateStore::open(backend()).await.expect("open");
        let prefix = unique_prefix();
        let first = format!("{prefix}-a");
        let second = format!("{prefix}-b");

        store
            .save_overrides(&first, Some(&sample_overrides()))
            .await
            .expect("save first");
        store
            .save_overrides(&second, Some(&ResourceOverrides::default()))
            .await
            .expect("save second");
        let state = store.load().await.expect("load");
        assert_eq!(state.overrides.get(&first), Some(&sample_overrides()));
        assert_eq!(
            state.overrides.get(&second),
            Some(&ResourceOverrides::default())
        );

        let replacement = ResourceOverrides {
            allowed_buckets: Some(vec!["data".to_owned()]),
            ..ResourceOverrides::default()
        };
        store
            .save_overrides(&first, Some(&replacement))
            .await
            .expect("replace");
        store.save_overrides(&second, None).await.expect("delete");
        store
            .save_overrides(&second, None)
            .await
            .expect("deleting what is not there is fine");
        let state = store.load().await.expect("load again");
        assert_eq!(state.overrides.get(&first), Some(&replacement));
        assert!(!state.overrides.contains_key(&second));

        store.save_overrides(&first, None).await.expect("clean up");
        let state = store.load().await.expect("load after clean up");
        assert!(state
            .overrides
            .keys()
            .all(|name| !name.starts_with(&prefix)));
    }

    #[actix_rt::test]
    async fn loaded_plugins_keep_their_load_order() {
        let store = StateStore::open(backend()).await.expect("open");
        let prefix = unique_prefix();
        let name = |plugin: &str| format!("{prefix}-{plugin}");
        let source = |file: &str| format!("{prefix}/{file}");
        let mine = |state: &StoredState| -> Vec<String> {
            state
                .loaded_sources
                .iter()
                .filter(|loaded| loaded.starts_with(&prefix))
                .cloned()
                .collect()
        };

        for plugin in ["users", "orders", "billing"] {
            store
                .save_loaded(&name(plugin), Some(&source(&format!("{plugin}.js"))))
                .await
                .expect("record loaded");
        }
        assert_eq!(
            mine(&store.load().await.expect("load")),
            [
                source("users.js"),
                source("orders.js"),
                source("billing.js")
            ]
        );

        // Recorded again (a reload, here from another file): it keeps its place.
        store
            .save_loaded(&name("users"), Some(&source("users.ts")))
            .await
            .expect("record again");
        store
            .save_loaded(&name("orders"), None)
            .await
            .expect("record unloaded");
        assert_eq!(
            mine(&store.load().await.expect("load")),
            [source("users.ts"), source("billing.js")]
        );

        // Unloaded and loaded again: it goes last.
        store
            .save_loaded(&name("orders"), Some(&source("orders.js")))
            .await
            .expect("record loaded again");
        assert_eq!(
            mine(&store.load().await.expect("load")),
            [
                source("users.ts"),
                source("billing.js"),
                source("orders.js")
            ]
        );

        for plugin in ["users", "orders", "billing"] {
            store
                .save_loaded(&name(plugin), None)
                .await
                .expect("clean up");
        }
        assert!(mine(&store.load().await.expect("load")).is_empty());
    }
}
