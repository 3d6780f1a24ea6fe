//! This node's membership: in a cluster, a heartbeat in PostgreSQL every second; the node list
//! `GET /cluster` answers with.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::{Actor, ActorFutureExt as _, AsyncContext, Context, Handler, Message, WrapFuture};
use chrono::Utc;

use super::node_table::{rfc3339, NodeAddresses, NodeRecord, NodeTable};
use super::plugin_states::{NodePluginState, PluginStateTable};
use crate::gateways::DatabaseBackend;
use crate::state_store::StoreError;

/// How often a node writes its heartbeat. A node unseen for `WARDEN_NODE_TIMEOUT_S` is down,
/// and the others see it so within one more interval.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long one heartbeat or read may take before it counts as failed: a database that does
/// not answer is as good as gone.
const DATABASE_WAIT: Duration = Duration::from_secs(2);

/// Rows unseen for an hour are removed about this often.
const FORGET_EVERY_BEATS: u64 = 600;

/// Who this node is and where it listens.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// The cluster's name, or `None` for a single node.
    pub cluster: Option<String>,
    pub node: String,
    pub addresses: NodeAddresses,
    /// A node unseen this long is down.
    pub node_timeout: Duration,
}

/// The answer of `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster: Option<String>,
    pub node: String,
    /// Sorted by id.
    pub nodes: Vec<NodeRecord>,
}

/// Lists the cluster's nodes (a single node lists itself).
#[derive(Message)]
#[rtype(result = "ClusterView")]
pub struct ListNodes;

/// The named plugins' states on the up nodes (`PluginInfo.nodes`).
#[derive(Debug, Clone, Default)]
pub struct PluginNodes {
    /// The answering node, whose own entry is its live state rather than what it recorded.
    pub node: String,
    /// Plugin → node → state.
    pub plugins: BTreeMap<String, BTreeMap<String, NodePluginState>>,
}

/// Reads the named plugins' states on every up node; `None` for a single node (no `nodes`).
#[derive(Message)]
#[rtype(result = "Option<PluginNodes>")]
pub struct ListPluginNodes {
    pub plugins: Vec<String>,
}

/// Stops the heartbeat and records that this node stopped, so the others see it down at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveCluster;

/// The membership actor.
pub struct Membership {
    config: MembershipConfig,
    /// Present in a cluster.
    table: Option<NodeTable>,
    plugin_states: Option<PluginStateTable>,
    beating: bool,
    beats: u64,
    /// Whether the last heartbeat was written, to log a change once rather than every second.
    connected: bool,
    /// The last list read, answered while the database does not.
    last_read: Vec<NodeRecord>,
    left: bool,
}

impl Membership {
    /// Starts the membership of this node. In a cluster the node's first heartbeat is written
    /// before this returns, so the node is listed before it reports ready.
    pub async fn start(
        config: MembershipConfig,
        database: Option<DatabaseBackend>,
        plugin_states: Option<PluginStateTable>,
    ) -> Result<actix::Addr<Membership>, StoreError> {
        let table = match (&config.cluster, database) {
            (Some(cluster), Some(database)) => {
                let table = NodeTable::open(database, cluster).await?;
                table.beat(&config.node, &config.addresses).await?;
                if let Err(error) = table.forget_old().await {
                    tracing::warn!(%error, "nodes unseen for an hour were not removed");
                }
                Some(table)
            }
            _ => None,
        };
        Ok(Membership {
            config,
            table,
            plugin_states,
            beating: false,
            beats: 0,
            connected: true,
            last_read: Vec::new(),
            left: false,
        }
        .start())
    }

    /// This node as it lists itself when nothing better is known.
    fn itself(&self) -> NodeRecord {
        NodeRecord {
            id: self.config.node.clone(),
            up: true,
            admin_address: self.config.addresses.admin_address.clone(),
            http_address: self.config.addresses.http_address.clone(),
            last_seen: rfc3339(Utc::now()),
        }
    }

    fn beat(&mut self, context: &mut Context<Self>) {
        let Some(table) = self.table.clone() else {
            return;
        };
        if self.beating || self.left {
            return;
        }
        self.beating = true;
        self.beats += 1;
        let forget = self.beats.is_multiple_of(FORGET_EVERY_BEATS);
        let node = self.config.node.clone();
        let addresses = self.config.addresses.clone();
        let beat = async move {
            let written = tokio::time::timeout(DATABASE_WAIT, table.beat(&node, &addresses)).await;
            if forget && matches!(written, Ok(Ok(()))) {
                let _ = tokio::time::timeout(DATABASE_WAIT, table.forget_old()).await;
            }
            written
        };
        context.spawn(beat.into_actor(self).map(|written, membership, _| {
            membership.beating = false;
            let failure = match written {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!(
                    "the database did not answer within {} s",
                    DATABASE_WAIT.as_secs()
                )),
            };
            match (failure, membership.connected) {
                (None, false) => {
                    tracing::info!("the heartbeat reaches the database again");
                    membership.connected = true;
                }
                (Some(error), true) => {
                    tracing::warn!(%error, "this node's heartbeat could not be written");
                    membership.connected = false;
                }
                _ => {}
            }
        }));
    }
}

impl Actor for Membership {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        if self.table.is_some() {
            context.run_interval(HEARTBEAT_INTERVAL, |membership, context| {
                membership.beat(context);
            });
        }
    }
}

impl Handler<ListNodes> for Membership {
    type Result = actix::ResponseActFuture<Self, ClusterView>;

    fn handle(&mut self, _: ListNodes, _: &mut Self::Context) -> Self::Result {
        let table = self.table.clone();
        let timeout = self.config.node_timeout;
        let read = async move {
            match table {
                Some(table) => Some(tokio::time::timeout(DATABASE_WAIT, table.list(timeout)).await),
                None => None,
            }
        };
        Box::pin(read.into_actor(self).map(|read, membership, _| {
            let nodes = match read {
                None => vec![membership.itself()],
                Some(Ok(Ok(nodes))) => {
                    membership.last_read = nodes.clone();
                    nodes
                }
                Some(failed) => {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "the database did not answer".to_owned(),
                    };
                    tracing::warn!(%error, "the cluster's nodes could not be read; answering the last list read");
                    if membership.last_read.is_empty() {
                        vec![membership.itself()]
                    } else {
                        membership.last_read.clone()
                    }
                }
            };
            ClusterView {
                cluster: membership.config.cluster.clone(),
                node: membership.config.node.clone(),
                nodes,
            }
        }))
    }
}

impl Handler<ListPluginNodes> for Membership {
    type Result = actix::ResponseFuture<Option<PluginNodes>>;

    fn handle(&mut self, message: ListPluginNodes, _: &mut Self::Context) -> Self::Result {
        let table = self.plugin_states.clone();
        let timeout = self.config.node_timeout;
        let node = self.config.node.clone();
        Box::pin(async move {
            let table = table?;
            let read = tokio::time::timeout(DATABASE_WAIT, table.read(&message.plugins, timeout));
            let plugins = match read.await {
                Ok(Ok(states)) => states,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the plugins' states on the other nodes could not be read");
                    BTreeMap::new()
                }
                Err(_) => BTreeMap::new(),
            };
            Some(PluginNodes { node, plugins })
        })
    }
}

impl Handler<LeaveCluster> for Membership {
    type Result = actix::ResponseFuture<()>;

    fn handle(&mut self, _: LeaveCluster, _: &mut Self::Context) -> Self::Result {
        self.left = true;
        let table = self.table.clone();
        let node = self.config.node.clone();
        Box::pin(async move {
            if let Some(table) = table {
                match tokio::time::timeout(DATABASE_WAIT, table.leave(&node)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "could not record that this node stopped")
                    }
                    Err(_) => tracing::warn!(
                        "could not record that this node stopped: the database did not answer"
                    ),
                }
            }
        })
    }
}
