//! Warden's own durable state in PostgreSQL (schema `warden`): per node, the loaded plugins and
//! the overrides; for the whole database, the claimed name prefixes.
//!
//! A node keeps its state under its node id (`ADMIN_API.md`, "Cluster"), so two single nodes on
//! one database never restore each other's plugins, and a restart of the same deployment (same
//! id) restores its own. Prefix claims are not per node: they protect physical names, which all
//! nodes on one database share.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_postgres::error::SqlState;
use warden_runtime::resources::ResourceOverrides;

use crate::gateways::DatabaseBackend;

/// The schema and tables, each created only when missing. `open` runs them one at a time so
/// that losing a creation race to another process fails only that statement.
const CREATE_STATEMENTS: [&str; 4] = [
    "CREATE SCHEMA IF NOT EXISTS warden",
    "CREATE TABLE IF NOT EXISTS warden.node_overrides (
        node text NOT NULL,
        name text NOT NULL,
        overrides jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (node, name)
    )",
    "CREATE TABLE IF NOT EXISTS warden.node_plugins (
        node text NOT NULL,
        name text NOT NULL,
        source text NOT NULL,
        loaded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        position bigserial,
        PRIMARY KEY (node, name)
    )",
    // A plugin name whose prefix once held resources: no later plugin may overlap it.
    "CREATE TABLE IF NOT EXISTS warden.claimed_prefixes (
        name text PRIMARY KEY,
        claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )",
];

/// Serializes the adoption of state written before node ids (below) between processes.
const ADOPTION_LOCK: i64 = 0x7761_7264_656e_0002;

/// State written before node ids, in tables without a node column, belongs to the first node
/// that opens the store after the upgrade: it is moved under that node's id and the old tables
/// are dropped, so an upgraded deployment restores what it ran.
const ADOPT_UNKEYED_STATE: &str = "DO $adopt$
BEGIN
    IF to_regclass('warden.loaded_plugins') IS NOT NULL THEN
        INSERT INTO warden.node_plugins (node, name, source, loaded_at)
            SELECT current_setting('warden.adopting_node'), name, source, loaded_at
            FROM warden.loaded_plugins ORDER BY position
            ON CONFLICT DO NOTHING;
        DROP TABLE warden.loaded_plugins;
    END IF;
    IF to_regclass('warden.overrides') IS NOT NULL THEN
        INSERT INTO warden.node_overrides (node, name, overrides, updated_at)
            SELECT current_setting('warden.adopting_node'), name, overrides, updated_at
            FROM warden.overrides
            ON CONFLICT DO NOTHING;
        DROP TABLE warden.overrides;
    END IF;
END
$adopt$";

const SELECT_CLAIMED: &str = "SELECT name FROM warden.claimed_prefixes ORDER BY name";

const INSERT_CLAIMED: &str =
    "INSERT INTO warden.claimed_prefixes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";

const SELECT_OVERRIDES: &str =
    "SELECT name, overrides FROM warden.node_overrides WHERE node = $1 ORDER BY name";

const SELECT_LOADED: &str =
    "SELECT source FROM warden.node_plugins WHERE node = $1 ORDER BY position";

const UPSERT_OVERRIDES: &str =
    "INSERT INTO warden.node_overrides (node, name, overrides) VALUES ($1, $2, $3)
    ON CONFLICT (node, name) DO UPDATE SET overrides = EXCLUDED.overrides, updated_at = now()";

const DELETE_OVERRIDES: &str = "DELETE FROM warden.node_overrides WHERE node = $1 AND name = $2";

/// Keeps the row's `position` when the plugin is recorded again (a reload keeps its place in
/// the load order).
const UPSERT_LOADED: &str =
    "INSERT INTO warden.node_plugins (node, name, source) VALUES ($1, $2, $3)
    ON CONFLICT (node, name) DO UPDATE SET source = EXCLUDED.source, loaded_at = clock_timestamp()";

const DELETE_LOADED: &str = "DELETE FROM warden.node_plugins WHERE node = $1 AND name = $2";

/// Why the state store could not read or write. Warden's state is never half written: every
/// write is one statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No connection to PostgreSQL could be had.
    #[error("cannot {purpose}: no database connection: {reason}")]
    Unavailable {
        purpose: &'static str,
        reason: String,
    },
    /// PostgreSQL refused a statement.
    #[error("cannot {purpose}: {message} (SQLSTATE {sqlstate})")]
    Statement {
        purpose: &'static str,
        sqlstate: String,
        message: String,
    },
    /// A stored row does not hold what Warden writes (changed by hand, or by another version).
    #[error("cannot {purpose}: the stored row of '{name}' is invalid: {reason}")]
    InvalidRow {
        purpose: &'static str,
        name: String,
        reason: String,
    },
}

/// What a restarted `warden serve` restores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Overrides by plugin name.
    pub overrides: BTreeMap<String, ResourceOverrides>,
    /// Files (relative to the plugins directory) of plugins that were loaded, in load order.
    pub loaded_sources: Vec<String>,
    /// Plugin names whose prefixes are claimed, loaded or not, by any node.
    pub claimed_prefixes: Vec<String>,
}

/// Reads and writes one node's state.
#[derive(Clone)]
pub struct StateStore {
    backend: DatabaseBackend,
    node_id: String,
}

impl StateStore {
    /// Creates the schema and tables when missing, and adopts state written before node ids.
    pub async fn open(backend: DatabaseBackend, node_id: &str) -> Result<Self, StoreError> {
        const PURPOSE: &str = "create warden's state tables";
        let mut client = create_missing(&backend, PURPOSE, &CREATE_STATEMENTS).await?;
        const ADOPTING: &str = "adopt state written before node ids";
        let adopting = async {
            let transaction = client.transaction().await?;
            transaction
                .execute("SELECT pg_advisory_xact_lock($1)", &[&ADOPTION_LOCK])
                .await?;
            transaction
                .execute(
                    "SELECT set_config('warden.adopting_node', $1, true)",
                    &[&node_id],
                )
                .await?;
            transaction.batch_execute(ADOPT_UNKEYED_STATE).await?;
            transaction.commit().await
        };
        // Not fatal: the node starts with what it has under its own id.
        if let Err(error) = adopting.await {
            let error = StoreError::from_postgres(ADOPTING, &error);
            tracing::warn!(%error, "state written before node ids was not adopted");
        }
        Ok(StateStore {
            backend,
            node_id: node_id.to_owned(),
        })
    }

    /// Everything stored for this node, and every claimed prefix.
    pub async fn load(&self) -> Result<StoredState, StoreError> {
        const OVERRIDES: &str = "read the stored overrides";
        const LOADED: &str = "read the stored loaded plugins";
        const CLAIMED: &str = "read the claimed prefixes";
        let client = connection(&self.backend, "load stored state").await?;
        let mut overrides = BTreeMap::new();
        for row in client
            .query(SELECT_OVERRIDES, &[&self.node_id])
            .await
            .map_err(|error| StoreError::from_postgres(OVERRIDES, &error))?
        {
            let name: String = row
                .try_get(0)
                .map_err(|error| invalid_row(OVERRIDES, "?", error))?;
            let document: Value = row
                .try_get(1)
                .map_err(|error| invalid_row(OVERRIDES, &name, error))?;
            let parsed = serde_json::from_value(document)
                .map_err(|error| invalid_row(OVERRIDES, &name, error))?;
            overrides.insert(name, parsed);
        }
        let loaded_sources = client
            .query(SELECT_LOADED, &[&self.node_id])
            .await
            .map_err(|error| StoreError::from_postgres(LOADED, &error))?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid_row(LOADED, "?", error))?;
        let claimed_prefixes = client
            .query(SELECT_CLAIMED, &[])
            .await
            .map_err(|error| StoreError::from_postgres(CLAIMED, &error))?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid_row(CLAIMED, "?", error))?;
        Ok(StoredState {
            overrides,
            loaded_sources,
            claimed_prefixes,
        })
    }

    /// Records that plugin `name` held resources, so its prefix stays claimed after unload.
    pub async fn claim_prefix(&self, name: &str) -> Result<(), StoreError> {
        const PURPOSE: &str = "claim a name prefix";
        let client = connection(&self.backend, PURPOSE).await?;
        client
            .execute(INSERT_CLAIMED, &[&name])
            .await
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }

    /// Stores (`Some`) or removes (`None`) a plugin name's overrides.
    pub async fn save_overrides(
        &self,
        name: &str,
        overrides: Option<&ResourceOverrides>,
    ) -> Result<(), StoreError> {
        const PURPOSE: &str = "store overrides";
        let client = connection(&self.backend, PURPOSE).await?;
        let written = match overrides {
            Some(overrides) => {
                let document = serde_json::to_value(overrides)
                    .map_err(|error| invalid_row(PURPOSE, name, error))?;
                client
                    .execute(UPSERT_OVERRIDES, &[&self.node_id, &name, &document])
                    .await
            }
            None => {
                client
                    .execute(DELETE_OVERRIDES, &[&self.node_id, &name])
                    .await
            }
        };
        written
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }

    /// Records that `name` is loaded from `source` (`Some`), or no longer loaded (`None`).
    pub async fn save_loaded(&self, name: &str, source: Option<&str>) -> Result<(), StoreError> {
        const PURPOSE: &str = "record a loaded plugin";
        let client = connection(&self.backend, PURPOSE).await?;
        let written = match source {
            Some(source) => {
                client
                    .execute(UPSERT_LOADED, &[&self.node_id, &name, &source])
                    .await
            }
            None => client.execute(DELETE_LOADED, &[&self.node_id, &name]).await,
        };
        written
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }
}

/// Runs `statements` (each a `CREATE … IF NOT EXISTS` or alike) one at a time, so that losing
/// a creation race to another process fails only that statement; answers the connection.
pub(crate) async fn create_missing(
    backend: &DatabaseBackend,
    purpose: &'static str,
    statements: &[&str],
) -> Result<deadpool_postgres::Client, StoreError> {
    let client = connection(backend, purpose).await?;
    for statement in statements {
        match client.batch_execute(statement).await {
            Ok(()) => {}
            // `IF NOT EXISTS` checks before it creates, so two processes starting together
            // can both decide to create; the loser fails on the catalog's unique index, and
            // what it wanted now exists.
            Err(error) if lost_creation_race(&error) => {
                tracing::debug!(%error, "another process created it first");
            }
            Err(error) => return Err(StoreError::from_postgres(purpose, &error)),
        }
    }
    Ok(client)
}

pub(crate) async fn connection(
    backend: &DatabaseBackend,
    purpose: &'static str,
) -> Result<deadpool_postgres::Client, StoreError> {
    backend
        .pool()
        .get()
        .await
        .map_err(|error| StoreError::Unavailable {
            purpose,
            reason: error.to_string(),
        })
}

impl StoreError {
    /// PostgreSQL's own message and SQLSTATE when there is one, otherwise the client's error.
    pub(crate) fn from_postgres(purpose: &'static str, error: &tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(database) => StoreError::Statement {
                purpose,
                sqlstate: database.code().code().to_owned(),
                message: database.message().to_owned(),
            },
            None => StoreError::Unavailable {
                purpose,
                reason: error.to_string(),
            },
        }
    }
}

fn invalid_row(purpose: &'static str, name: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidRow {
        purpose,
        name: name.to_owned(),
        reason: reason.to_string(),
    }
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
