//! `Warden`: starts the actor system and is the one handle the binary holds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use notify::Watcher as _;
use serde_json::Value;
use tokio::sync::mpsc;
use warden_runtime::events::{validate_event_name, EventPattern};
use warden_runtime::resources::ResourceOverrides;
use warden_runtime::routes::PluginRoutes;
use warden_runtime::{CallTarget, Event, PluginFactory};

use crate::broker::{EventBroker, OpenEventStream, PublishEvent};
use crate::capabilities::check_event_size;
use crate::cluster::{
    ApplyDesiredState, ClusterEventReader, ClusterEventTopic, ClusterFollower, DesiredState,
    DesiredStateStore, StopFollowing,
};
use crate::directory::PluginDirectory;
use crate::gateways::{Backends, Readiness};
use crate::manager::{
    ClearOverrides, GetOverrides, GetPlugin, ListMigrations, ListPlugins, LoadPlugin,
    ManagerConfig, MigrationPlan, MigrationStatus, PlanMigrations, PluginInfo, PluginManager,
    PluginSource, ReloadChangedFiles, ReloadPlugin, RestoreState, ScanPlugins, ScanReport,
    SetOverrides, UnloadAll, UnloadPlugin,
};
use crate::plugin_actor::{CallPlugin, PluginActor, PluginState};
use crate::state_store::StoredState;
use crate::{Error, Result};

/// How long file changes are gathered before the watcher reloads, so one save that touches a
/// file several times reloads it once.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(150);

/// How long a joining node waits for its share of the cluster's event partitions.
pub const EVENT_GROUP_PATIENCE: Duration = Duration::from_secs(30);

/// A loaded plugin as the public listener sees it: its routes and its actor.
#[derive(Clone)]
pub struct RoutedPlugin {
    pub name: String,
    pub routes: Arc<PluginRoutes>,
    address: Addr<PluginActor>,
}

impl RoutedPlugin {
    /// Calls route `index` with `request` (the plugin API's request object), as a call in the
    /// plugin's actor like `execute`: same heap, time limit and supervision.
    pub async fn call(&self, index: usize, request: Value) -> Result<Value> {
        call_plugin(
            &self.address,
            &self.name,
            CallTarget::Route(index),
            vec![request],
        )
        .await
    }
}

/// One call into a plugin's actor; an actor that has stopped answers `Unavailable` ("stopped").
async fn call_plugin(
    address: &Addr<PluginActor>,
    plugin: &str,
    target: CallTarget,
    arguments: Vec<Value>,
) -> Result<Value> {
    let result = address
        .send(CallPlugin { target, arguments })
        .await
        .map_err(|_| warden_runtime::Error::Unavailable {
            plugin: plugin.to_string(),
            state: "stopped".into(),
        })?;
    Ok(result?)
}

/// The running actor system.
#[derive(Clone)]
pub struct Warden {
    manager: Addr<PluginManager>,
    backends: Backends,
    broker: Addr<EventBroker>,
    directory: PluginDirectory,
    watcher: Option<Arc<std::sync::Mutex<notify::RecommendedWatcher>>>,
    /// In a cluster: what keeps this node on the cluster's desired state.
    follower: Option<Addr<ClusterFollower>>,
    /// In a cluster: the topic events cross nodes through.
    cluster_events: Option<ClusterEventTopic>,
    /// In a cluster: the readers of the event topic (every node's, then the group's).
    event_readers: Vec<Arc<ClusterEventReader>>,
    /// The largest event `data` [`Warden::publish`] accepts, as for plugins.
    max_message_bytes: usize,
    /// Each plugin call's time limit.
    call_timeout: Duration,
}

impl Warden {
    /// Starts the broker and the manager on the current actix system.
    pub fn start(config: ManagerConfig) -> Self {
        let backends = config.backends.clone();
        let max_message_bytes = config.limits.max_message_bytes;
        let call_timeout = Duration::from_millis(config.limits.call_timeout_ms);
        let mut broker = EventBroker::new(config.event_queue_capacity, call_timeout);
        let cluster_events = config.cluster_events.clone();
        if let Some(topic) = &cluster_events {
            broker = broker.with_relay(Box::new(topic.relay()));
        }
        let every_node_interest = broker.every_node_interest();
        let broker = broker.start();
        // Every node hears every event from now on, for `everyNode` listeners and streams.
        let event_readers = cluster_events
            .iter()
            .map(|topic| {
                let reader =
                    topic.start_every_node_reader(broker.clone(), every_node_interest.clone());
                Arc::new(reader)
            })
            .collect();
        let directory = PluginDirectory::default();
        let manager = PluginManager::new(config, broker.clone(), directory.clone()).start();
        Warden {
            manager,
            backends,
            broker,
            directory,
            watcher: None,
            follower: None,
            cluster_events,
            event_readers,
            max_message_bytes,
            call_timeout,
        }
    }

    /// Watches the plugins directory and reloads loaded plugins whose files change.
    pub fn watch(&mut self, plugins_dir: PathBuf) -> Result<()> {
        let manager = self.manager.clone();
        let (sender, mut receiver) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if matches!(
                        event.kind,
                        notify::EventKind::Modify(_) | notify::EventKind::Create(_)
                    ) {
                        for path in event.paths {
                            let _ = sender.send(path);
                        }
                    }
                }
            })
            .map_err(|error| Error::InvalidRequest {
                reason: format!("cannot watch '{}': {error}", plugins_dir.display()),
            })?;
        watcher
            .watch(&plugins_dir, notify::RecursiveMode::NonRecursive)
            .map_err(|error| Error::InvalidRequest {
                reason: format!("cannot watch '{}': {error}", plugins_dir.display()),
            })?;
        actix_rt::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut paths = vec![first];
                tokio::time::sleep(WATCH_DEBOUNCE).await;
                while let Ok(path) = receiver.try_recv() {
                    if !paths.contains(&path) {
                        paths.push(path);
                    }
                }
                if manager.send(ReloadChangedFiles { paths }).await.is_err() {
                    return;
                }
            }
        });
        self.watcher = Some(Arc::new(std::sync::Mutex::new(watcher)));
        Ok(())
    }

    /// Restores stored overrides and loads the plugins that were loaded when Warden stopped.
    pub async fn restore(&self, state: StoredState) -> Result<ScanReport> {
        Ok(self.manager.send(RestoreState { state }).await?)
    }

    /// Brings this node to the cluster's desired state (at start, before it reports ready);
    /// answers the plugins it could not bring there.
    pub async fn apply_desired_state(&self, state: DesiredState) -> Result<Vec<(String, Error)>> {
        Ok(self.manager.send(ApplyDesiredState { state }).await?)
    }

    /// Keeps this node on the cluster's desired state from now on, and takes its share of the
    /// cluster's events (its plugins run and listen by now); `applied` is the generation it has
    /// applied in full, if any.
    ///
    /// It waits (at most [`EVENT_GROUP_PATIENCE`]) for the group to give this node its share of
    /// the partitions, so a node that reports ready takes its events.
    pub async fn follow_cluster(&mut self, store: DesiredStateStore, applied: Option<i64>) {
        let follower = ClusterFollower::new(store, self.manager.clone().recipient(), applied);
        self.follower = Some(follower.start());
        if let Some(topic) = &self.cluster_events {
            let reader = Arc::new(topic.start_group_reader(self.broker.clone()));
            self.event_readers.push(Arc::clone(&reader));
            if !reader.joined(EVENT_GROUP_PATIENCE).await {
                tracing::warn!(
                    "the cluster's event group has not taken this node in yet; carrying on"
                );
            }
        }
    }

    /// Each backing service's readiness (`/ready`).
    pub async fn readiness(&self) -> [(&'static str, Readiness); 3] {
        self.backends.readiness().await
    }

    /// Loads a plugin file (relative to the plugins directory).
    pub async fn load(
        &self,
        path: String,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        self.manager
            .send(LoadPlugin {
                source: PluginSource::File(path),
                overrides,
            })
            .await?
    }

    /// Loads a native plugin.
    pub async fn load_native(&self, factory: Arc<dyn PluginFactory>) -> Result<PluginInfo> {
        self.manager
            .send(LoadPlugin {
                source: PluginSource::Native(factory),
                overrides: None,
            })
            .await?
    }

    /// Unloads a plugin; with `cascade`, its dependents first.
    pub async fn unload(&self, name: String, cascade: bool) -> Result<()> {
        self.manager.send(UnloadPlugin { name, cascade }).await?
    }

    /// Reloads a plugin from its file; `None` keeps its stored overrides.
    pub async fn reload(
        &self,
        name: String,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        self.manager.send(ReloadPlugin { name, overrides }).await?
    }

    /// Loads every file of the plugins directory that is not loaded yet.
    pub async fn scan(&self) -> Result<ScanReport> {
        self.manager.send(ScanPlugins).await?
    }

    /// Every loaded plugin, sorted by name.
    pub async fn list(&self) -> Result<Vec<PluginInfo>> {
        Ok(self.manager.send(ListPlugins).await?)
    }

    /// One loaded plugin.
    pub async fn get(&self, name: String) -> Result<PluginInfo> {
        self.manager.send(GetPlugin { name }).await?
    }

    /// A loaded plugin's migrations and their states.
    pub async fn migrations(&self, name: String) -> Result<Vec<MigrationStatus>> {
        self.manager.send(ListMigrations { name }).await?
    }

    /// What loading the file at `path` would do to its plugin's schema, rehearsed in a
    /// transaction that is rolled back.
    pub async fn plan_migrations(&self, path: String) -> Result<MigrationPlan> {
        self.manager.send(PlanMigrations { path }).await?
    }

    /// The overrides stored for a plugin name.
    pub async fn overrides(&self, name: String) -> Result<ResourceOverrides> {
        self.manager.send(GetOverrides { name }).await?
    }

    /// Stores overrides (reloading the plugin if it is loaded).
    pub async fn set_overrides(
        &self,
        name: String,
        overrides: ResourceOverrides,
    ) -> Result<(ResourceOverrides, Option<PluginInfo>)> {
        self.manager.send(SetOverrides { name, overrides }).await?
    }

    /// Removes stored overrides (reloading the plugin if it is loaded).
    pub async fn clear_overrides(&self, name: String) -> Result<()> {
        self.manager.send(ClearOverrides { name }).await?
    }

    /// Calls a plugin's `execute(input)` through its actor.
    pub async fn execute(&self, name: &str, input: Value) -> Result<Value> {
        // Only what the call needs: copying the whole description would cost every call.
        let entry = self.directory.read_entry(name, |entry| {
            (entry.address.clone(), entry.description.executable)
        });
        let Some((address, executable)) = entry else {
            return Err(self.not_running(name));
        };
        if !executable {
            return Err(Error::Plugin(warden_runtime::Error::NotExecutable {
                plugin: name.to_string(),
            }));
        }
        call_plugin(&address, name, CallTarget::Execute, vec![input]).await
    }

    /// Why a call to `name` finds no running plugin: a plugin this node lists (a cluster's
    /// plugin that failed to come up here) is unavailable, any other is not found.
    fn not_running(&self, name: &str) -> Error {
        match self.directory.failed_here(name) {
            true => Error::Plugin(warden_runtime::Error::Unavailable {
                plugin: name.to_string(),
                state: PluginState::Failed.as_str().to_string(),
            }),
            false => Error::PluginNotFound {
                name: name.to_string(),
            },
        }
    }

    /// Whether `name` is a plugin of the cluster that failed to come up on this node (the public
    /// listener answers its routes 503, not 404).
    pub fn failed_here(&self, name: &str) -> bool {
        self.directory.failed_here(name)
    }

    /// The routes of a loaded plugin and the door to call them, for the public listener; `None`
    /// when no plugin of that name is loaded. Taken per request, so a reload's new routes serve
    /// the next request and an unload's paths stop at once.
    pub fn routed_plugin(&self, name: &str) -> Option<RoutedPlugin> {
        // Per request: only the routes and the address are taken, not the whole description.
        self.directory.read_entry(name, |entry| RoutedPlugin {
            name: entry.description.manifest.name.clone(),
            routes: Arc::clone(&entry.description.routes),
            address: entry.address.clone(),
        })
    }

    /// A receiver that wakes at each later load, reload or unload (a change of the directory),
    /// for callers that wait for a plugin's new version.
    pub fn directory_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.directory.changes()
    }

    /// Each plugin call's time limit.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Publishes an event with source `admin` (or another host source).
    pub fn publish(&self, event: &str, source: &str, data: Value) -> Result<()> {
        validate_event_name(event)?;
        let event = Event::new(event, source, data);
        check_event_size(&event, self.max_message_bytes)?;
        self.broker.do_send(PublishEvent {
            event,
            emitter: None,
        });
        Ok(())
    }

    /// Opens a stream of events matching `pattern`; at most `capacity` wait in it.
    pub fn stream(&self, pattern: &str, capacity: usize) -> Result<mpsc::Receiver<Arc<Event>>> {
        let pattern = EventPattern::parse(pattern)?;
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        self.broker.do_send(OpenEventStream { pattern, sender });
        Ok(receiver)
    }

    /// The broker's address, for hosts that publish or subscribe natively.
    pub fn broker(&self) -> Addr<EventBroker> {
        self.broker.clone()
    }

    /// Unloads every plugin in reverse dependency order; the one shutdown path.
    pub async fn shutdown(&self) {
        // Stopping is this node's own business: the cluster's state must not load back what
        // the shutdown unloads.
        if let Some(follower) = &self.follower {
            let _ = follower.send(StopFollowing).await;
        }
        // The group's partitions move to the other nodes before the plugins go, with what was
        // handled here committed and the rest read again there.
        for reader in self.event_readers.iter().rev() {
            reader.stop().await;
        }
        if let Some(watcher) = &self.watcher {
            drop(
                watcher
                    .lock()
                    .map(|mut watcher| watcher.unwatch(std::path::Path::new("."))),
            );
        }
        let _ = self.manager.send(UnloadAll).await;
    }
}
