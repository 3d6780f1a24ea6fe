//! Warden as a cluster (`ADMIN_API.md`, "Cluster"): nodes started with one `--cluster` name on
//! one PostgreSQL form one Warden.
//!
//! - `node_table`: the nodes' rows in `warden.cluster_nodes` (heartbeats, stops, the list);
//! - `membership`: this node's heartbeat and the list `GET /cluster` answers with;
//! - `desired_state`: the plugins, their recorded sources and the overrides every node runs;
//! - `follower`: keeps this node on the desired state (`NOTIFY`, and a reconcile every second);
//! - `plugin_states`: each node's state of each plugin, for `PluginInfo.nodes`;
//! - `events`: events between nodes, through the cluster's Kafka topic.
//!
//! The plugin manager records the changes it applies in the desired state and applies the
//! state the follower hands it; this module does not depend on the manager.

mod desired_state;
mod events;
mod follower;
mod membership;
mod node_table;
mod plugin_states;

pub use desired_state::{
    DesiredChange, DesiredState, DesiredStateStore, RecordedPlugin, CHANGES_CHANNEL,
};
pub use events::{ClusterEventReader, ClusterEventTopic, KafkaEventRelay};
pub use follower::{ApplyDesiredState, ClusterFollower, StopFollowing};
pub use membership::{
    ClusterView, LeaveCluster, ListNodes, ListPluginNodes, Membership, MembershipConfig,
    PluginNodes,
};
pub use node_table::{NodeAddresses, NodeRecord, NodeTable};
pub use plugin_states::{NodePluginState, PluginStateReporter, PluginStateTable};
