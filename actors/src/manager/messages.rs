//! The manager's messages, its configuration and what it reports.

use std::path::PathBuf;
use std::sync::Arc;

use actix::Message;
use warden_runtime::js::SourceBundle;
use warden_runtime::resources::{ResourceGrants, ResourceOverrides};
use warden_runtime::{PluginDescription, PluginFactory, PluginLimits};

use crate::cluster::{ClusterEventTopic, DesiredStateStore, PluginStateReporter};
use crate::gateways::Backends;
use crate::plugin_actor::{PluginState, SupervisionPolicy};
use crate::state_store::{StateStore, StoredState};
use crate::{Error, Result};

/// How the manager runs plugins.
#[derive(Clone)]
pub struct ManagerConfig {
    /// The directory plugin files are loaded from.
    pub plugins_dir: PathBuf,
    /// Heap, time, message, log and timer limits of every JavaScript plugin.
    pub limits: PluginLimits,
    /// Restart intensity and backoff.
    pub policy: SupervisionPolicy,
    /// Arbiter threads plugin actors are spread over.
    pub plugin_threads: usize,
    /// Events a plugin may have queued before more are dropped for it.
    pub event_queue_capacity: usize,
    /// Shared clients of the configured backing services.
    pub backends: Backends,
    /// Where overrides and the set of loaded plugins are kept (PostgreSQL), if configured.
    pub store: Option<StateStore>,
    /// In a cluster: the desired state every node runs, where changes are recorded instead of
    /// in the node's own `store` (which keeps the claimed prefixes).
    pub cluster: Option<DesiredStateStore>,
    /// In a cluster: where this node's plugin states go, for `PluginInfo.nodes`.
    pub node_states: Option<PluginStateReporter>,
    /// In a cluster: the topic events cross nodes through (and this node's id, which Warden's
    /// own `plugin:*` events carry).
    pub cluster_events: Option<ClusterEventTopic>,
}

/// Where a plugin comes from.
#[derive(Clone)]
pub enum PluginSource {
    /// A module file, relative to the plugins directory.
    File(String),
    /// A native plugin registered by Rust code.
    Native(Arc<dyn PluginFactory>),
    /// A source the cluster recorded (entry and imports), run as it is.
    Recorded(Arc<SourceBundle>),
}

/// A loaded plugin as operators see it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Manifest, exports and entry points of the loaded version.
    pub description: PluginDescription,
    /// `js` or `native`.
    pub kind: &'static str,
    /// The file, relative to the plugins directory (none for native plugins).
    pub source: Option<String>,
    /// Lifecycle state.
    pub state: PluginState,
    /// Loaded plugins that depend on this one, sorted.
    pub dependents: Vec<String>,
    /// Supervised restarts since it was loaded.
    pub restarts: u32,
    /// Its resources with their physical names.
    pub grants: ResourceGrants,
    /// The operator overrides in force, if any.
    pub overrides: Option<ResourceOverrides>,
    /// The PostgreSQL role its statements run as (none with roles off or no database).
    pub database_role: Option<String>,
    /// Lowercase hex SHA-256 of its entry file as loaded (none for native plugins).
    pub sha256: Option<String>,
}

/// What a directory scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Plugins loaded, in load order.
    pub loaded: Vec<String>,
    /// Files that did not load, with why (path relative to the plugins directory).
    pub failed: Vec<(String, Error)>,
}

/// Loads a plugin; refused if one of that name is loaded.
#[derive(Message)]
#[rtype(result = "Result<PluginInfo>")]
pub struct LoadPlugin {
    /// The file or native factory.
    pub source: PluginSource,
    /// Overrides to store and apply; `None` applies the stored ones, if any.
    pub overrides: Option<ResourceOverrides>,
}

/// Unloads a plugin (and, with `cascade`, its dependents first).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct UnloadPlugin {
    /// The plugin.
    pub name: String,
    /// Unload dependents first instead of refusing.
    pub cascade: bool,
}

/// Re-reads a plugin's file and replaces the running instance.
#[derive(Message)]
#[rtype(result = "Result<PluginInfo>")]
pub struct ReloadPlugin {
    /// The plugin.
    pub name: String,
    /// New overrides to store and apply; `None` keeps the stored ones.
    pub overrides: Option<ResourceOverrides>,
}

/// Loads every not-yet-loaded file of the plugins directory, in dependency order. In a cluster
/// whose state cannot be reached, refused as a whole (`ClusterUnavailable`).
#[derive(Message)]
#[rtype(result = "Result<ScanReport>")]
pub struct ScanPlugins;

/// Lists loaded plugins, sorted by name.
#[derive(Message)]
#[rtype(result = "Vec<PluginInfo>")]
pub struct ListPlugins;

/// Describes one loaded plugin.
#[derive(Message)]
#[rtype(result = "Result<PluginInfo>")]
pub struct GetPlugin {
    /// The plugin.
    pub name: String,
}

/// Reads the overrides stored for a plugin name (loaded or not).
#[derive(Message)]
#[rtype(result = "Result<ResourceOverrides>")]
pub struct GetOverrides {
    /// The plugin name.
    pub name: String,
}

/// Validates and stores overrides; a loaded plugin is reloaded with them first.
#[derive(Message)]
#[rtype(result = "Result<(ResourceOverrides, Option<PluginInfo>)>")]
pub struct SetOverrides {
    /// The plugin name.
    pub name: String,
    /// The new overrides.
    pub overrides: ResourceOverrides,
}

/// Removes stored overrides; a loaded plugin is reloaded with its declared resources.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct ClearOverrides {
    /// The plugin name.
    pub name: String,
}

/// Unloads every plugin in reverse dependency order, calling `cleanup()`; used at shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnloadAll;

/// Restores stored overrides and loads the plugins that were loaded before (at start).
#[derive(Message)]
#[rtype(result = "ScanReport")]
pub struct RestoreState {
    /// What the state store held.
    pub state: StoredState,
}

/// Files changed in the plugins directory (from the watcher); loaded ones are reloaded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadChangedFiles {
    /// Changed paths, absolute.
    pub paths: Vec<PathBuf>,
}
