//! The cluster's desired state in PostgreSQL: the loaded plugins in load order with the exact
//! source each runs, and the overrides, under one generation number that every change raises
//! (and announces with `NOTIFY`), so a node knows at a glance whether it is behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use warden_runtime::js::SourceBundle;
use warden_runtime::resources::ResourceOverrides;

use crate::gateways::DatabaseBackend;
use crate::state_store::{connection, create_missing, StoreError};

/// The `LISTEN`/`NOTIFY` channel of every cluster on one database; the payload is the cluster's
/// name.
pub const CHANGES_CHANNEL: &str = "warden_cluster_changes";

/// How long a node waits for the database before it calls the cluster unavailable.
const DATABASE_WAIT: Duration = Duration::from_secs(3);
/// How long reading the whole state may take: every recorded source, up to 16 MiB each, so
/// longer than one small statement.
const STATE_READ_WAIT: Duration = Duration::from_secs(60);

const CREATE_STATEMENTS: [&str; 4] = [
    "CREATE SCHEMA IF NOT EXISTS warden",
    "CREATE TABLE IF NOT EXISTS warden.cluster_generations (
        cluster text PRIMARY KEY,
        generation bigint NOT NULL DEFAULT 0
    )",
    "CREATE TABLE IF NOT EXISTS warden.cluster_plugins (
        cluster text NOT NULL,
        name text NOT NULL,
        entry text NOT NULL,
        sha256 text NOT NULL,
        digest text NOT NULL,
        files jsonb NOT NULL,
        loaded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        position bigserial,
        PRIMARY KEY (cluster, name)
    )",
    "CREATE TABLE IF NOT EXISTS warden.cluster_overrides (
        cluster text NOT NULL,
        name text NOT NULL,
        overrides jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (cluster, name)
    )",
];

const INSERT_GENERATION: &str =
    "INSERT INTO warden.cluster_generations (cluster) VALUES ($1) ON CONFLICT DO NOTHING";

/// Raising the generation locks the cluster's row until the change commits, so changes made
/// through different nodes at once are recorded one after the other.
const NEXT_GENERATION: &str = "UPDATE warden.cluster_generations SET generation = generation + 1
    WHERE cluster = $1 RETURNING generation";

const SELECT_GENERATION: &str =
    "SELECT generation FROM warden.cluster_generations WHERE cluster = $1";

/// A reload keeps the plugin's place in the load order.
const UPSERT_PLUGIN: &str =
    "INSERT INTO warden.cluster_plugins (cluster, name, entry, sha256, digest, files)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (cluster, name) DO UPDATE SET entry = EXCLUDED.entry, sha256 = EXCLUDED.sha256,
        digest = EXCLUDED.digest, files = EXCLUDED.files, loaded_at = clock_timestamp()";

const DELETE_PLUGIN: &str = "DELETE FROM warden.cluster_plugins WHERE cluster = $1 AND name = $2";

const UPSERT_OVERRIDES: &str = "INSERT INTO warden.cluster_overrides (cluster, name, overrides)
    VALUES ($1, $2, $3)
    ON CONFLICT (cluster, name) DO UPDATE SET overrides = EXCLUDED.overrides,
        updated_at = clock_timestamp()";

const DELETE_OVERRIDES: &str =
    "DELETE FROM warden.cluster_overrides WHERE cluster = $1 AND name = $2";

const SELECT_PLUGINS: &str = "SELECT name, entry, digest, files FROM warden.cluster_plugins
    WHERE cluster = $1 ORDER BY position";

const SELECT_OVERRIDES: &str =
    "SELECT name, overrides FROM warden.cluster_overrides WHERE cluster = $1 ORDER BY name";

/// One change to the desired state.
#[derive(Debug, Clone)]
pub enum DesiredChange {
    /// The plugin runs this source (a load or a reload).
    Loaded {
        name: String,
        bundle: Arc<SourceBundle>,
    },
    /// The plugin is no longer loaded.
    Unloaded { name: String },
    /// The plugin name's overrides are these (`None`: none).
    Overrides {
        name: String,
        overrides: Option<ResourceOverrides>,
    },
}

/// A recorded plugin: its name and source.
#[derive(Debug, Clone)]
pub struct RecordedPlugin {
    pub name: String,
    pub bundle: Arc<SourceBundle>,
    /// [`SourceBundle::digest`] of `bundle`.
    pub digest: String,
}

/// Everything every node of the cluster should run.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    pub generation: i64,
    /// In load order.
    pub plugins: Vec<RecordedPlugin>,
    pub overrides: BTreeMap<String, ResourceOverrides>,
}

/// Reads and writes one cluster's desired state.
#[derive(Clone)]
pub struct DesiredStateStore {
    backend: DatabaseBackend,
    cluster: String,
}

impl DesiredStateStore {
    /// Creates the tables and the cluster's generation row when missing.
    pub async fn open(backend: DatabaseBackend, cluster: &str) -> Result<Self, StoreError> {
        const PURPOSE: &str = "create the cluster's state tables";
        let client = create_missing(&backend, PURPOSE, &CREATE_STATEMENTS).await?;
        client
            .execute(INSERT_GENERATION, &[&cluster])
            .await
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))?;
        Ok(DesiredStateStore {
            backend,
            cluster: cluster.to_owned(),
        })
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The database configuration, for the connection that listens for changes.
    pub fn backend(&self) -> &DatabaseBackend {
        &self.backend
    }

    /// Whether the desired state can be written now (the database answers).
    pub async fn check_available(&self) -> Result<(), StoreError> {
        const PURPOSE: &str = "reach the cluster's state";
        let check = async {
            let client = connection(&self.backend, PURPOSE).await?;
            client
                .execute("SELECT 1", &[])
                .await
                .map(drop)
                .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
        };
        within_wait(PURPOSE, check).await
    }

    /// Records `changes` in one transaction, raises the generation and wakes the other nodes;
    /// answers the new generation.
    pub async fn record(&self, changes: &[DesiredChange]) -> Result<i64, StoreError> {
        const PURPOSE: &str = "record a change of the cluster's state";
        let record = async {
            let mut client = connection(&self.backend, PURPOSE).await?;
            let failed = |error: tokio_postgres::Error| StoreError::from_postgres(PURPOSE, &error);
            let transaction = client.transaction().await.map_err(failed)?;
            let generation: i64 = transaction
                .query_one(NEXT_GENERATION, &[&self.cluster])
                .await
                .map_err(failed)?
                .try_get(0)
                .map_err(failed)?;
            for change in changes {
                match change {
                    DesiredChange::Loaded { name, bundle } => {
                        let files = Value::Object(
                            bundle
                                .files
                                .iter()
                                .map(|(file, text)| (file.clone(), Value::String(text.clone())))
                                .collect(),
                        );
                        let sha256 = warden_runtime::sha256_hex(bundle.entry_text().as_bytes());
                        transaction
                            .execute(
                                UPSERT_PLUGIN,
                                &[
                                    &self.cluster,
                                    name,
                                    &bundle.entry,
                                    &sha256,
                                    &bundle.digest(),
                                    &files,
                                ],
                            )
                            .await
                            .map_err(failed)?;
                    }
                    DesiredChange::Unloaded { name } => {
                        transaction
                            .execute(DELETE_PLUGIN, &[&self.cluster, name])
                            .await
                            .map_err(failed)?;
                    }
                    DesiredChange::Overrides {
                        name,
                        overrides: Some(overrides),
                    } => {
                        let document = serde_json::to_value(overrides).map_err(|error| {
                            StoreError::InvalidRow {
                                purpose: PURPOSE,
                                name: name.clone(),
                                reason: error.to_string(),
                            }
                        })?;
                        transaction
                            .execute(UPSERT_OVERRIDES, &[&self.cluster, name, &document])
                            .await
                            .map_err(failed)?;
                    }
                    DesiredChange::Overrides {
                        name,
                        overrides: None,
                    } => {
                        transaction
                            .execute(DELETE_OVERRIDES, &[&self.cluster, name])
                            .await
                            .map_err(failed)?;
                    }
                }
            }
            transaction
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&CHANGES_CHANNEL, &self.cluster],
                )
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)?;
            Ok(generation)
        };
        within_wait(PURPOSE, record).await
    }

    /// The cluster's generation now.
    pub async fn generation(&self) -> Result<i64, StoreError> {
        const PURPOSE: &str = "read the cluster's generation";
        let read = async {
            let client = connection(&self.backend, PURPOSE).await?;
            client
                .query_one(SELECT_GENERATION, &[&self.cluster])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
        };
        within_wait(PURPOSE, read).await
    }

    /// The whole desired state, read in one snapshot.
    pub async fn read(&self) -> Result<DesiredState, StoreError> {
        const PURPOSE: &str = "read the cluster's state";
        let read = async {
            let mut client = connection(&self.backend, PURPOSE).await?;
            let failed = |error: tokio_postgres::Error| StoreError::from_postgres(PURPOSE, &error);
            let transaction = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(failed)?;
            let generation: i64 = transaction
                .query_one(SELECT_GENERATION, &[&self.cluster])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(failed)?;
            let mut plugins = Vec::new();
            for row in transaction
                .query(SELECT_PLUGINS, &[&self.cluster])
                .await
                .map_err(failed)?
            {
                let name: String = row.try_get(0).map_err(failed)?;
                let invalid = |reason: String| StoreError::InvalidRow {
                    purpose: PURPOSE,
                    name: name.clone(),
                    reason,
                };
                let entry: String = row.try_get(1).map_err(failed)?;
                let digest: String = row.try_get(2).map_err(failed)?;
                let files: Value = row.try_get(3).map_err(failed)?;
                let Value::Object(files) = files else {
                    return Err(invalid("files is not an object".to_owned()));
                };
                let files = files
                    .into_iter()
                    .map(|(file, text)| match text {
                        Value::String(text) => Ok((file, text)),
                        _ => Err(invalid(format!("file '{file}' is not text"))),
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()?;
                let bundle = SourceBundle { entry, files };
                if !bundle.files.contains_key(&bundle.entry) {
                    return Err(invalid("the entry file is missing".to_owned()));
                }
                plugins.push(RecordedPlugin {
                    name,
                    bundle: Arc::new(bundle),
                    digest,
                });
            }
            let mut overrides = BTreeMap::new();
            for row in transaction
                .query(SELECT_OVERRIDES, &[&self.cluster])
                .await
                .map_err(failed)?
            {
                let name: String = row.try_get(0).map_err(failed)?;
                let document: Value = row.try_get(1).map_err(failed)?;
                let parsed =
                    serde_json::from_value(document).map_err(|error| StoreError::InvalidRow {
                        purpose: PURPOSE,
                        name: name.clone(),
                        reason: error.to_string(),
                    })?;
                overrides.insert(name, parsed);
            }
            transaction.commit().await.map_err(failed)?;
            Ok(DesiredState {
                generation,
                plugins,
                overrides,
            })
        };
        within(STATE_READ_WAIT, PURPOSE, read).await
    }
}

/// Runs `work`, or answers `Unavailable` when the database does not answer in time.
async fn within_wait<T>(
    purpose: &'static str,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    within(DATABASE_WAIT, purpose, work).await
}

async fn within<T>(
    limit: Duration,
    purpose: &'static str,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable {
            purpose,
            reason: format!("the database did not answer within {} s", limit.as_secs()),
        })
    })
}
