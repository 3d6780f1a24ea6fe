//! Each node's state of each cluster plugin (`warden.cluster_plugin_states`), so any node can
//! answer `PluginInfo.nodes`: written by a reporter task behind the manager, read with the up
//! nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::gateways::DatabaseBackend;
use crate::state_store::{connection, create_missing, StoreError};

const CREATE_STATEMENTS: [&str; 2] = [
    "CREATE SCHEMA IF NOT EXISTS warden",
    "CREATE TABLE IF NOT EXISTS warden.cluster_plugin_states (
        cluster text NOT NULL,
        node text NOT NULL,
        plugin text NOT NULL,
        state text NOT NULL,
        restarts bigint NOT NULL,
        error text,
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (cluster, node, plugin)
    )",
];

const UPSERT_STATE: &str = "INSERT INTO warden.cluster_plugin_states
        (cluster, node, plugin, state, restarts, error) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (cluster, node, plugin) DO UPDATE SET state = EXCLUDED.state,
        restarts = EXCLUDED.restarts, error = EXCLUDED.error, updated_at = clock_timestamp()";

const DELETE_STATE: &str = "DELETE FROM warden.cluster_plugin_states
    WHERE cluster = $1 AND node = $2 AND plugin = $3";

/// A node that starts again reports its plugins anew: what it reported before is gone.
const DELETE_NODE_STATES: &str =
    "DELETE FROM warden.cluster_plugin_states WHERE cluster = $1 AND node = $2";

/// The states of the named plugins on the nodes that are up.
const SELECT_STATES: &str = "SELECT states.plugin, states.node, states.state, states.restarts,
        states.error
    FROM warden.cluster_plugin_states AS states
    JOIN warden.cluster_nodes AS nodes ON nodes.cluster = states.cluster AND nodes.node = states.node
    WHERE states.cluster = $1 AND states.plugin = ANY($2)
        AND NOT nodes.stopped AND clock_timestamp() - nodes.last_seen <= make_interval(secs => $3)
    ORDER BY states.plugin, states.node";

/// How long the reporter waits before it writes again after the database refused.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// One plugin's state on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePluginState {
    /// `PluginState::as_str`: `running`, `failed`, ….
    pub state: String,
    pub restarts: u32,
    /// Why it failed on that node, when it did.
    pub error: Option<String>,
}

/// The plugin states of one cluster.
#[derive(Clone)]
pub struct PluginStateTable {
    backend: DatabaseBackend,
    cluster: String,
}

impl PluginStateTable {
    /// Creates the table when missing.
    pub async fn open(backend: DatabaseBackend, cluster: &str) -> Result<Self, StoreError> {
        const PURPOSE: &str = "create the cluster's plugin state table";
        drop(create_missing(&backend, PURPOSE, &CREATE_STATEMENTS).await?);
        Ok(PluginStateTable {
            backend,
            cluster: cluster.to_owned(),
        })
    }

    /// Forgets what `node` reported before (it starts again).
    pub async fn clear_node(&self, node: &str) -> Result<(), StoreError> {
        const PURPOSE: &str = "clear this node's plugin states";
        let client = connection(&self.backend, PURPOSE).await?;
        client
            .execute(DELETE_NODE_STATES, &[&self.cluster, &node])
            .await
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }

    async fn write(
        &self,
        node: &str,
        plugin: &str,
        state: Option<&NodePluginState>,
    ) -> Result<(), StoreError> {
        const PURPOSE: &str = "record a plugin's state on this node";
        let client = connection(&self.backend, PURPOSE).await?;
        let written = match state {
            Some(state) => {
                client
                    .execute(
                        UPSERT_STATE,
                        &[
                            &self.cluster,
                            &node,
                            &plugin,
                            &state.state,
                            &i64::from(state.restarts),
                            &state.error,
                        ],
                    )
                    .await
            }
            None => {
                client
                    .execute(DELETE_STATE, &[&self.cluster, &node, &plugin])
                    .await
            }
        };
        written
            .map(drop)
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))
    }

    /// Plugin → node → state, for the named plugins on the nodes up now.
    pub async fn read(
        &self,
        plugins: &[String],
        node_timeout: Duration,
    ) -> Result<BTreeMap<String, BTreeMap<String, NodePluginState>>, StoreError> {
        const PURPOSE: &str = "read the plugins' states on the cluster's nodes";
        let client = connection(&self.backend, PURPOSE).await?;
        let rows = client
            .query(
                SELECT_STATES,
                &[&self.cluster, &plugins, &node_timeout.as_secs_f64()],
            )
            .await
            .map_err(|error| StoreError::from_postgres(PURPOSE, &error))?;
        let mut states: BTreeMap<String, BTreeMap<String, NodePluginState>> = BTreeMap::new();
        for row in rows {
            let invalid = |error: tokio_postgres::Error| StoreError::InvalidRow {
                purpose: PURPOSE,
                name: "cluster_plugin_states".to_owned(),
                reason: error.to_string(),
            };
            let plugin: String = row.try_get(0).map_err(invalid)?;
            let node: String = row.try_get(1).map_err(invalid)?;
            let restarts: i64 = row.try_get(3).map_err(invalid)?;
            states.entry(plugin).or_default().insert(
                node,
                NodePluginState {
                    state: row.try_get(2).map_err(invalid)?,
                    restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
                    error: row.try_get(4).map_err(invalid)?,
                },
            );
        }
        Ok(states)
    }
}

/// Hands this node's plugin states to a task that writes them, newest per plugin, in order and
/// without ever making the manager wait; what the database refused is written again later.
#[derive(Clone)]
pub struct PluginStateReporter {
    sender: mpsc::UnboundedSender<(String, Option<NodePluginState>)>,
}

impl PluginStateReporter {
    /// Starts the writing task on the current actix system (it ends with the last reporter).
    pub fn start(table: PluginStateTable, node: String) -> Self {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        actix::spawn(async move {
            let mut pending: BTreeMap<String, Option<NodePluginState>> = BTreeMap::new();
            loop {
                if pending.is_empty() {
                    match receiver.recv().await {
                        Some((plugin, state)) => {
                            pending.insert(plugin, state);
                        }
                        None => return,
                    }
                }
                while let Ok((plugin, state)) = receiver.try_recv() {
                    pending.insert(plugin, state);
                }
                let mut failed = false;
                while let Some((plugin, state)) = pending.pop_first() {
                    if let Err(error) = table.write(&node, &plugin, state.as_ref()).await {
                        tracing::debug!(%plugin, %error, "a plugin's state on this node was not recorded yet");
                        pending.insert(plugin, state);
                        failed = true;
                        break;
                    }
                }
                if failed {
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        });
        PluginStateReporter { sender }
    }

    /// Reports `plugin`'s state on this node (`None`: it does not run here any more).
    pub fn report(&self, plugin: &str, state: Option<NodePluginState>) {
        let _ = self.sender.send((plugin.to_owned(), state));
    }
}
