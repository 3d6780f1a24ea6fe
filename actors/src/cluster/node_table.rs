//! The nodes of a cluster in PostgreSQL (`warden.cluster_nodes`): one row per node, written by
//! its heartbeat, read by `GET /cluster`.
//!
//! Times are the database's (`clock_timestamp()`), on writes and reads alike, so nodes whose
//! clocks disagree still agree on who is down.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::gateways::DatabaseBackend;
use crate::state_store::{connection, create_missing, StoreError};

const CREATE_STATEMENTS: [&str; 3] = [
    "CREATE SCHEMA IF NOT EXISTS warden",
    "CREATE TABLE IF NOT EXISTS warden.cluster_nodes (
        cluster text NOT NULL,
        node text NOT NULL,
        admin_address text NOT NULL,
        http_address text,
        started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        last_seen timestamptz NOT NULL DEFAULT clock_timestamp(),
        stopped boolean NOT NULL DEFAULT false,
        PRIMARY KEY (cluster, node)
    )",
    // Which run of the node wrote the row: a heartbeat still in flight when its process
    // leaves must not mark the node up again, a new run of it must.
    "ALTER TABLE warden.cluster_nodes ADD COLUMN IF NOT EXISTS incarnation text NOT NULL DEFAULT ''",
];

/// A restart of the same node keeps its row: it is the same member, back.
const UPSERT_BEAT: &str = "INSERT INTO warden.cluster_nodes
        (cluster, node, admin_address, http_address, incarnation) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (cluster, node) DO UPDATE SET admin_address = EXCLUDED.admin_address,
        http_address = EXCLUDED.http_address, last_seen = clock_timestamp(), stopped = false,
        incarnation = EXCLUDED.incarnation
    WHERE NOT (cluster_nodes.stopped AND cluster_nodes.incarnation = EXCLUDED.incarnation)";

/// A node that stopped on purpose is down at once, not only after the timeout.
const MARK_STOPPED: &str =
    "UPDATE warden.cluster_nodes SET stopped = true, last_seen = clock_timestamp()
    WHERE cluster = $1 AND node = $2";

/// Down nodes stay listed for an hour after they were last seen (`ADMIN_API.md`, `GET /cluster`).
const SELECT_NODES: &str = "SELECT node, admin_address, http_address, last_seen,
        NOT stopped AND clock_timestamp() - last_seen <= make_interval(secs => $2) AS up
    FROM warden.cluster_nodes
    WHERE cluster = $1 AND last_seen > clock_timestamp() - interval '1 hour'
    ORDER BY node";

/// Rows past the hour are of no use to anyone; the heartbeat removes them now and then, with
/// the plugin states those nodes reported.
const DELETE_FORGOTTEN: &str = "WITH forgotten AS (
        DELETE FROM warden.cluster_nodes
        WHERE cluster = $1 AND last_seen <= clock_timestamp() - interval '1 hour'
        RETURNING node
    )
    DELETE FROM warden.cluster_plugin_states
    WHERE cluster = $1 AND node IN (SELECT node FROM forgotten)";

/// One node as `GET /cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub up: bool,
    pub admin_address: String,
    pub http_address: Option<String>,
    /// RFC 3339, UTC.
    pub last_seen: String,
}

/// What a node writes about itself.
#[derive(Debug, Clone)]
pub struct NodeAddresses {
    pub admin_address: String,
    pub http_address: Option<String>,
}

/// An id of this run of the process, different at every start.
fn incarnation() -> &'static str {
    static INCARNATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INCARNATION.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        format!("{}-{started}", std::process::id())
    })
}

/// The rows of one cluster.
#[derive(Clone)]
pub struct NodeTable {
    backend: DatabaseBackend,
    cluster: String,
}

impl NodeTable {
    /// Creates the table when missing.
    pub async fn open(backend: DatabaseBackend, cluster: &str) -> Result<Self, StoreError> {
        const PURPOSE: &str = "create the cluster's node table";
        drop(create_missing(&backend, PURPOSE, &CREATE_STATEMENTS).await?);
        Ok(NodeTable {
            backend,
            cluster: cluster.to_owned(),
        })
    }

    /// Records that `node` is alive now, at these addresses.
    pub async fn beat(&self, node: &str, addresses: &NodeAddresses) -> Result<(), StoreError> {
        const PURPOSE: &str = "record this node's heartbeat";
        let client = connection(&self.backend, PURPOSE).await?;
        client
            .execute(
                UPSERT_BEAT,
                &[
                    &self.cluster,
                    &node,
                    &addresses.admin_address,
                    &addresses.http_address,
                    &incarnation(),
                ],
            )
            .await
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }

    /// Records that `node` stopped.
    pub async fn leave(&self, node: &str) -> Result<(), StoreError> {
        const PURPOSE: &str = "record that this node stopped";
        let client = connection(&self.backend, PURPOSE).await?;
        client
            .execute(MARK_STOPPED, &[&self.cluster, &node])
            .await
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }

    /// Removes nodes unseen for more than an hour.
    pub async fn forget_old(&self) -> Result<(), StoreError> {
        const PURPOSE: &str = "remove nodes unseen for an hour";
        let client = connection(&self.backend, PURPOSE).await?;
        client
            .execute(DELETE_FORGOTTEN, &[&self.cluster])
            .await
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }

    /// The cluster's nodes seen in the last hour, sorted by id; a node unseen for longer than
    /// `timeout` (or stopped) is down.
    pub async fn list(&self, timeout: Duration) -> Result<Vec<NodeRecord>, StoreError> {
        const PURPOSE: &str = "read the cluster's nodes";
        let client = connection(&self.backend, PURPOSE).await?;
        let rows = client
            .query(SELECT_NODES, &[&self.cluster, &timeout.as_secs_f64()])
            .await
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))?;
        rows.iter()
            .map(|row| {
                let invalid = |error: tokio_postgres::Error| StoreError::InvalidRow {
                    purpose: PURPOSE,
                    name: "cluster_nodes".to_owned(),
                    reason: error.to_string(),
                };
                let last_seen: DateTime<Utc> = row.try_get(3).map_err(invalid)?;
                Ok(NodeRecord {
                    id: row.try_get(0).map_err(invalid)?,
                    admin_address: row.try_get(1).map_err(invalid)?,
                    http_address: row.try_get(2).map_err(invalid)?,
                    last_seen: rfc3339(last_seen),
                    up: row.try_get(4).map_err(invalid)?,
                })
            })
            .collect()
    }
}

/// RFC 3339 in UTC with `Z`, to the millisecond.
pub(crate) fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}
