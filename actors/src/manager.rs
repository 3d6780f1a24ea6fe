//! PluginManager: the registry of loaded plugins and every change to it.
//!
//! Changes (load, unload, reload, scan, overrides) are serialized: each runs to completion
//! before the next starts, so validation always sees the registry as it will be when the change
//! commits, and a refused change leaves it untouched. Reads answer at once between changes.
//! Calls into plugins never go through this mailbox (see [`crate::directory`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, Addr, Arbiter, ArbiterHandle, AsyncContext as _, AtomicResponse, Context, Handler,
    Message, Supervisor, WrapFuture as _,
};
use serde_json::json;
use warden_runtime::graph::{plan_batch_load, Candidate, DependencyGraph};
use warden_runtime::js::{is_module_path, JsModule, JsPluginFactory};
use warden_runtime::manifest::validate_plugin_name;
use warden_runtime::resources::{ResourceGrants, ResourceKind, ResourceOverrides};
use warden_runtime::{Event, PluginDescription, PluginFactory, PluginLimits};

use crate::broker::{EventBroker, PublishEvent};
use crate::directory::{DirectoryEntry, PluginDirectory};
use crate::gateways::kafka::EnsureTopics;
use crate::gateways::storage::EnsureBuckets;
use crate::gateways::store::{StateStore, StoredState};
use crate::gateways::PrepareDatabase;
use crate::gateways::{Backends, DatabaseGateway, KafkaGateway, PluginGateways, StorageGateway};
use crate::plugin_actor::{
    CreateInstance, InitializeInstance, PluginActor, PluginServices, PluginState,
    PluginStateChanged, StopInstance, SupervisionPolicy, TerminatePlugin,
};
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
}

/// Where a plugin comes from.
#[derive(Clone)]
pub enum PluginSource {
    /// A module file, relative to the plugins directory.
    File(String),
    /// A native plugin registered by Rust code.
    Native(Arc<dyn PluginFactory>),
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

/// Loads every not-yet-loaded file of the plugins directory, in dependency order.
#[derive(Message)]
#[rtype(result = "ScanReport")]
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

struct LoadedPlugin {
    actor: Addr<PluginActor>,
    actor_id: u64,
    gateways: PluginGateways,
    description: PluginDescription,
    factory: Arc<dyn PluginFactory>,
    source: Option<String>,
    grants: ResourceGrants,
    overrides: Option<ResourceOverrides>,
    state: PluginState,
    restarts: u32,
}

/// A plugin instance created and described, not yet validated or initialized.
struct Prepared {
    actor: Addr<PluginActor>,
    actor_id: u64,
    arbiter: ArbiterHandle,
    description: PluginDescription,
    factory: Arc<dyn PluginFactory>,
    source: Option<String>,
}

struct Registry {
    config: ManagerConfig,
    plugins: BTreeMap<String, LoadedPlugin>,
    /// Names of plugins that held resources (recorded in the state store): their prefixes stay
    /// taken after unload, so no later plugin inherits their tables, topics or buckets.
    claimed_prefixes: BTreeSet<String>,
    graph: DependencyGraph,
    overrides: BTreeMap<String, ResourceOverrides>,
    directory: PluginDirectory,
    broker: Addr<EventBroker>,
    services: Option<PluginServices>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    next_actor_id: u64,
}

/// The plugin manager actor.
pub struct PluginManager {
    registry: Rc<RefCell<Registry>>,
}

impl PluginManager {
    /// A manager that runs plugins on `config.plugin_threads` arbiter threads of its own.
    pub fn new(
        config: ManagerConfig,
        broker: Addr<EventBroker>,
        directory: PluginDirectory,
    ) -> Self {
        let arbiters = (0..config.plugin_threads.max(1))
            .map(|_| Arbiter::new())
            .collect();
        PluginManager {
            registry: Rc::new(RefCell::new(Registry {
                config,
                plugins: BTreeMap::new(),
                claimed_prefixes: BTreeSet::new(),
                graph: DependencyGraph::new(),
                overrides: BTreeMap::new(),
                directory,
                broker,
                services: None,
                arbiters,
                next_arbiter: 0,
                next_actor_id: 1,
            })),
        }
    }
}

impl Actor for PluginManager {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        let mut registry = self.registry.borrow_mut();
        registry.services = Some(PluginServices {
            broker: registry.broker.clone(),
            directory: registry.directory.clone(),
            state_changes: context.address().recipient(),
            policy: registry.config.policy,
            call_timeout: Duration::from_millis(registry.config.limits.call_timeout_ms),
            max_message_bytes: registry.config.limits.max_message_bytes,
            event_queue_capacity: registry.config.event_queue_capacity,
        });
        update_state_gauges(&registry.plugins);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for arbiter in &self.registry.borrow().arbiters {
            arbiter.stop();
        }
    }
}

impl Registry {
    fn info(&self, name: &str) -> Result<PluginInfo> {
        let plugin = self
            .plugins
            .get(name)
            .ok_or_else(|| Error::PluginNotFound {
                name: name.to_string(),
            })?;
        Ok(PluginInfo {
            description: plugin.description.clone(),
            kind: plugin.factory.kind(),
            source: plugin.source.clone(),
            state: plugin.state,
            dependents: self.graph.direct_dependents(name),
            restarts: plugin.restarts,
            grants: plugin.grants.clone(),
            overrides: plugin.overrides.clone(),
            database_role: self
                .config
                .backends
                .database
                .as_ref()
                .and_then(|database| database.role_of(name)),
        })
    }

    fn publish(&self, event: &str, data: serde_json::Value) {
        self.broker.do_send(PublishEvent {
            event: Event::new(event, "warden", data),
        });
    }

    fn next_arbiter(&mut self) -> ArbiterHandle {
        let index = self.next_arbiter % self.arbiters.len();
        self.next_arbiter += 1;
        self.arbiters[index].handle()
    }

    fn start_actor(
        &mut self,
        name_hint: String,
        factory: Arc<dyn PluginFactory>,
    ) -> Result<(Addr<PluginActor>, u64, ArbiterHandle)> {
        let services = self
            .services
            .clone()
            .ok_or_else(|| Error::SystemUnavailable {
                reason: "the plugin manager has not started".into(),
            })?;
        let actor_id = self.next_actor_id;
        self.next_actor_id += 1;
        let arbiter = self.next_arbiter();
        let address = Supervisor::start_in_arbiter(&arbiter, move |_| {
            PluginActor::new(name_hint, actor_id, factory, services)
        });
        Ok((address, actor_id, arbiter))
    }

    /// Starts the plugin's gateway actors, on its own arbiter, holding its grants.
    fn start_gateways(
        &self,
        plugin: &str,
        grants: &ResourceGrants,
        arbiter: &ArbiterHandle,
    ) -> PluginGateways {
        let backends = &self.config.backends;
        PluginGateways {
            database: backends.database.clone().map(|backend| {
                let (plugin, grants) = (plugin.to_string(), grants.clone());
                DatabaseGateway::start_in_arbiter(arbiter, move |_| {
                    DatabaseGateway::new(plugin, grants, backend)
                })
            }),
            kafka: backends.kafka.clone().map(|backend| {
                let (plugin, grants) = (plugin.to_string(), grants.clone());
                KafkaGateway::start_in_arbiter(arbiter, move |_| {
                    KafkaGateway::new(plugin, grants, backend)
                })
            }),
            storage: backends.storage.clone().map(|backend| {
                let (plugin, grants) = (plugin.to_string(), grants.clone());
                StorageGateway::start_in_arbiter(arbiter, move |_| {
                    StorageGateway::new(plugin, grants, backend)
                })
            }),
        }
    }

    /// The plugins directory with its symbolic links resolved.
    fn plugins_root(&self) -> Result<PathBuf> {
        self.config
            .plugins_dir
            .canonicalize()
            .map_err(|error| Error::InvalidRequest {
                reason: format!("the plugins directory cannot be read: {error}"),
            })
    }

    /// Resolves a path given by an operator to a file inside the plugins directory.
    fn plugin_file(&self, relative: &str) -> Result<PathBuf> {
        let candidate = Path::new(relative);
        let escapes = candidate.is_absolute()
            || candidate
                .components()
                .any(|component| !matches!(component, Component::Normal(_) | Component::CurDir));
        if relative.is_empty() || escapes {
            return Err(Error::InvalidRequest {
                reason: format!("path '{relative}' must be relative to the plugins directory and stay inside it"),
            });
        }
        let path = self.config.plugins_dir.join(candidate);
        // Symbolic links may point outside: compare the resolved paths too.
        let resolved = path.canonicalize().map_err(|_| Error::FileNotFound {
            path: relative.to_string(),
        })?;
        let root = self.plugins_root()?;
        if !resolved.starts_with(&root) {
            return Err(Error::InvalidRequest {
                reason: format!("path '{relative}' leads outside the plugins directory"),
            });
        }
        if !resolved.is_file() {
            return Err(Error::FileNotFound {
                path: relative.to_string(),
            });
        }
        Ok(resolved)
    }

    /// Refuses a plugin whose name prefix overlaps a loaded plugin's (or the shared one's):
    /// physical names are `<plugin>_<name>` (buckets `<plugin>-<name>`, `_` as `-`), so with
    /// `shop` and `shop_x` loaded, `shop`'s `x_users` and `shop_x`'s `users` would meet — for
    /// tables, indexes, constraints, topics and buckets alike.
    fn check_name_prefix(&self, plugin: &str) -> Result<()> {
        let normalized = |name: &str| format!("{}-", name.replace('_', "-"));
        let candidate = normalized(plugin);
        let shared = normalized("shared");
        let overlapping = self
            .plugins
            .keys()
            .chain(self.claimed_prefixes.iter())
            .map(String::as_str)
            .chain(std::iter::once("shared"))
            .filter(|other| *other != plugin)
            .find(|other| {
                let other = normalized(other);
                candidate.starts_with(&other) || other.starts_with(&candidate)
            });
        match overlapping {
            Some(other) => {
                let reason = if normalized(other) == shared {
                    format!("plugin name '{plugin}' would share the prefix of shared resources ('shared_')")
                } else {
                    let whose = if self.plugins.contains_key(other) {
                        "loaded plugin"
                    } else {
                        "plugin"
                    };
                    format!("plugin name '{plugin}' overlaps the prefix of {whose} '{other}', so their physical names could meet (a prefix that held resources stays claimed after unload)")
                };
                Err(Error::Plugin(warden_runtime::Error::invalid_name(reason)))
            }
            None => Ok(()),
        }
    }

    fn set_state(&mut self, name: &str, state: PluginState) {
        if let Some(plugin) = self.plugins.get_mut(name) {
            plugin.state = state;
        }
        update_state_gauges(&self.plugins);
    }
}

fn update_state_gauges(plugins: &BTreeMap<String, LoadedPlugin>) {
    const STATES: [PluginState; 5] = [
        PluginState::Starting,
        PluginState::Running,
        PluginState::Restarting,
        PluginState::Failed,
        PluginState::Stopping,
    ];
    let mut counts = [0usize; STATES.len()];
    for plugin in plugins.values() {
        if let Some(index) = STATES.iter().position(|state| *state == plugin.state) {
            counts[index] += 1;
        }
    }
    for (state, count) in STATES.iter().zip(counts) {
        metrics::gauge!("warden_plugins", "state" => state.as_str()).set(count as f64);
    }
}

/// The manager's changes as plain async functions over the shared registry. A `RefCell` borrow
/// is never held across an `.await`.
#[derive(Clone)]
struct Core {
    registry: Rc<RefCell<Registry>>,
}

impl Core {
    fn factory_for(
        &self,
        source: &PluginSource,
    ) -> Result<(Arc<dyn PluginFactory>, Option<String>, String)> {
        match source {
            PluginSource::Native(factory) => Ok((factory.clone(), None, "native".into())),
            PluginSource::File(relative) => {
                let registry = self.registry.borrow();
                let path = registry.plugin_file(relative)?;
                // Imports are confined to the whole plugins directory (the entry may be a link
                // into a subdirectory), and entry files at its top are off limits to them.
                let module = JsModule::read_in(&registry.plugins_root()?, &path)?;
                let factory = Arc::new(JsPluginFactory {
                    module,
                    limits: registry.config.limits,
                });
                Ok((
                    factory,
                    Some(normalize_relative(relative)),
                    relative.clone(),
                ))
            }
        }
    }

    /// Creates and describes an instance in a new actor.
    async fn prepare(&self, source: &PluginSource) -> Result<Prepared> {
        let (factory, source, hint) = self.factory_for(source)?;
        let (actor, actor_id, arbiter) = self
            .registry
            .borrow_mut()
            .start_actor(hint, factory.clone())?;
        match actor.send(CreateInstance).await {
            Ok(Ok(description)) => Ok(Prepared {
                actor,
                actor_id,
                arbiter,
                description,
                factory,
                source,
            }),
            Ok(Err(error)) => {
                actor.do_send(TerminatePlugin);
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Checks a prepared instance against the registry and resolves its grants. `reloading`
    /// names the loaded plugin it would replace. On refusal the prepared actor is terminated.
    fn validate(
        &self,
        prepared: &Prepared,
        overrides: &Option<ResourceOverrides>,
        reloading: Option<&str>,
    ) -> Result<(ResourceGrants, Option<ResourceOverrides>)> {
        let validated = (|| {
            let registry = self.registry.borrow();
            let manifest = &prepared.description.manifest;
            let name = &manifest.name;
            match reloading {
                Some(loaded) if loaded != name => {
                    return Err(Error::Plugin(warden_runtime::Error::invalid_format(format!(
                        "the file of plugin '{loaded}' now declares plugin '{name}'; unload it and load the file instead"
                    ))));
                }
                Some(_) => registry
                    .graph
                    .validate_version_change(name, &manifest.version)?,
                None if registry.plugins.contains_key(name) => {
                    return Err(Error::AlreadyLoaded { name: name.clone() });
                }
                None => {}
            }
            registry
                .graph
                .validate(name, &manifest.version, &manifest.dependencies)?;
            registry.check_name_prefix(name)?;
            let effective = overrides
                .clone()
                .or_else(|| registry.overrides.get(name).cloned())
                .filter(|overrides| *overrides != ResourceOverrides::default());
            let grants = ResourceGrants::resolve(
                name,
                &manifest.allowed_tables,
                &manifest.allowed_topics,
                &manifest.allowed_buckets,
                effective.as_ref(),
            )?;
            Ok((grants, effective))
        })();
        if validated.is_err() {
            prepared.actor.do_send(TerminatePlugin);
        }
        validated
    }

    /// Starts the instance's gateways, creates its declared topics and buckets, and runs its
    /// `initialize`. On failure the prepared actor is terminated.
    async fn start_instance(
        &self,
        prepared: &Prepared,
        grants: &ResourceGrants,
    ) -> Result<PluginGateways> {
        let name = &prepared.description.manifest.name;
        let gateways = self
            .registry
            .borrow()
            .start_gateways(name, grants, &prepared.arbiter);
        let initialize = InitializeInstance {
            gateways: gateways.clone(),
            grants: grants.clone(),
        };
        let started = match ensure_resources(&gateways).await {
            Ok(()) => flatten(prepared.actor.send(initialize).await),
            Err(error) => Err(error),
        };
        match started {
            Ok(()) => Ok(gateways),
            Err(error) => {
                prepared.actor.do_send(StopInstance { cleanup: false });
                prepared.actor.do_send(TerminatePlugin);
                Err(match error {
                    Error::Plugin(source) => Error::InitializeFailed {
                        plugin: name.clone(),
                        source,
                    },
                    other => other,
                })
            }
        }
    }

    /// Records a running instance in the registry, the directory and the state store.
    /// `overrides` are the new ones given with the change (`Some(default)` removes them).
    async fn commit(
        &self,
        prepared: Prepared,
        gateways: PluginGateways,
        grants: ResourceGrants,
        effective: Option<ResourceOverrides>,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        let name = prepared.description.manifest.name.clone();
        let reloaded = self.registry.borrow().plugins.contains_key(&name);
        self.persist_loaded(&name, prepared.source.as_deref()).await;
        let holds_resources = [
            ResourceKind::Table,
            ResourceKind::Topic,
            ResourceKind::Bucket,
        ]
        .iter()
        .any(|kind| grants.grants(*kind).iter().any(|grant| !grant.shared));
        if holds_resources && !self.registry.borrow().claimed_prefixes.contains(&name) {
            self.persist_claim(&name).await;
            self.registry
                .borrow_mut()
                .claimed_prefixes
                .insert(name.clone());
        }
        if let Some(overrides) = &overrides {
            let stored =
                Some(overrides).filter(|overrides| **overrides != ResourceOverrides::default());
            self.persist_overrides(&name, stored).await;
        }
        let mut registry = self.registry.borrow_mut();
        let manifest = prepared.description.manifest.clone();
        registry.graph.insert(
            &name,
            manifest.version.clone(),
            manifest.dependencies.clone(),
        );
        registry.directory.insert(
            name.clone(),
            DirectoryEntry {
                address: prepared.actor.clone(),
                description: prepared.description.clone(),
            },
        );
        match overrides {
            Some(overrides) if overrides == ResourceOverrides::default() => {
                registry.overrides.remove(&name);
            }
            Some(overrides) => {
                registry.overrides.insert(name.clone(), overrides);
            }
            None => {}
        }
        registry.plugins.insert(
            name.clone(),
            LoadedPlugin {
                actor: prepared.actor,
                actor_id: prepared.actor_id,
                gateways,
                description: prepared.description,
                factory: prepared.factory,
                source: prepared.source,
                grants,
                overrides: effective,
                state: PluginState::Running,
                restarts: 0,
            },
        );
        update_state_gauges(&registry.plugins);
        let version = manifest.version.to_string();
        if reloaded {
            tracing::info!(plugin = %name, %version, "plugin reloaded");
            registry.publish(
                "plugin:loaded",
                json!({ "name": name, "version": version, "reason": "reload" }),
            );
        } else {
            tracing::info!(plugin = %name, %version, "plugin loaded");
            registry.publish("plugin:loaded", json!({ "name": name, "version": version }));
        }
        registry.info(&name)
    }

    /// Validates a prepared instance against the registry, initializes it and commits it.
    async fn admit(
        &self,
        prepared: Prepared,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        let (grants, effective) = self.validate(&prepared, &overrides, None)?;
        let gateways = self.start_instance(&prepared, &grants).await?;
        self.commit(prepared, gateways, grants, effective, overrides)
            .await
    }

    async fn load(
        &self,
        source: PluginSource,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        if let Some(overrides) = &overrides {
            overrides.validate()?;
        }
        let prepared = self.prepare(&source).await?;
        self.admit(prepared, overrides).await
    }

    /// Stops one plugin for good: out of the directory, `cleanup()`, dispose, forget. With
    /// `forget`, it is also dropped from the durable set of loaded plugins (not at shutdown,
    /// whose plugins a restarted Warden loads again).
    async fn stop_plugin(&self, name: &str, forget: bool) {
        if forget {
            self.persist_loaded(name, None).await;
        }
        let actor = {
            let registry = self.registry.borrow();
            registry.directory.remove(name);
            registry
                .plugins
                .get(name)
                .map(|plugin| (plugin.actor.clone(), plugin.description.has_cleanup))
        };
        match actor {
            // `cleanup()` must have finished before the unload answers.
            Some((actor, true)) => {
                self.registry
                    .borrow_mut()
                    .set_state(name, PluginState::Stopping);
                let _ = actor.send(StopInstance { cleanup: true }).await;
                actor.do_send(TerminatePlugin);
            }
            // Nothing to wait for: the actor disposes the instance after the answer.
            Some((actor, false)) => actor.do_send(TerminatePlugin),
            None => {}
        }
        let mut registry = self.registry.borrow_mut();
        if let Some(plugin) = registry.plugins.remove(name) {
            registry.graph.remove(name);
            update_state_gauges(&registry.plugins);
            tracing::info!(plugin = %name, "plugin unloaded");
            registry.publish(
                "plugin:unloaded",
                json!({ "name": name, "version": plugin.description.manifest.version.to_string() }),
            );
        }
    }

    async fn unload(&self, name: String, cascade: bool) -> Result<()> {
        let dependents = {
            let registry = self.registry.borrow();
            if !registry.plugins.contains_key(&name) {
                return Err(Error::PluginNotFound { name });
            }
            let direct = registry.graph.direct_dependents(&name);
            if !direct.is_empty() && !cascade {
                return Err(Error::HasDependents {
                    name,
                    dependents: direct,
                });
            }
            registry.graph.dependents_in_unload_order(&name)
        };
        for dependent in dependents {
            self.stop_plugin(&dependent, true).await;
        }
        self.stop_plugin(&name, true).await;
        Ok(())
    }

    async fn reload(
        &self,
        name: String,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        if let Some(overrides) = &overrides {
            overrides.validate()?;
        }
        let (source, old_actor, old_gateways, old_grants) = {
            let registry = self.registry.borrow();
            let plugin = registry
                .plugins
                .get(&name)
                .ok_or_else(|| Error::PluginNotFound { name: name.clone() })?;
            let source = match &plugin.source {
                Some(relative) => PluginSource::File(relative.clone()),
                None => PluginSource::Native(plugin.factory.clone()),
            };
            (
                source,
                plugin.actor.clone(),
                plugin.gateways.clone(),
                plugin.grants.clone(),
            )
        };
        let prepared = self.prepare(&source).await?;
        let (grants, effective) = self.validate(&prepared, &overrides, Some(&name))?;
        self.registry
            .borrow_mut()
            .set_state(&name, PluginState::Stopping);
        let _ = old_actor.send(StopInstance { cleanup: true }).await;
        let gateways = match self.start_instance(&prepared, &grants).await {
            Ok(gateways) => gateways,
            Err(error) => {
                // Bring the previous version back, so a failed reload leaves the plugin as it was.
                let restored = match flatten(old_actor.send(CreateInstance).await) {
                    Ok(_) => flatten(
                        old_actor
                            .send(InitializeInstance {
                                gateways: old_gateways,
                                grants: old_grants,
                            })
                            .await,
                    ),
                    Err(error) => Err(error),
                };
                let mut registry = self.registry.borrow_mut();
                match restored {
                    Ok(()) => registry.set_state(&name, PluginState::Running),
                    Err(restore_error) => {
                        tracing::error!(plugin = %name, error = %restore_error, "the previous version could not be restored");
                        registry.set_state(&name, PluginState::Failed);
                    }
                }
                return Err(error);
            }
        };
        old_actor.do_send(TerminatePlugin);
        self.commit(prepared, gateways, grants, effective, overrides)
            .await
    }

    async fn scan(&self) -> ScanReport {
        let mut report = ScanReport::default();
        let files = match self.unloaded_files() {
            Ok(files) => files,
            Err(error) => {
                report.failed.push((String::new(), error));
                return report;
            }
        };
        let mut prepared: Vec<Option<Prepared>> = Vec::new();
        let mut candidates = Vec::new();
        let mut paths = Vec::new();
        for relative in files {
            match self.prepare(&PluginSource::File(relative.clone())).await {
                Ok(instance) => {
                    let manifest = &instance.description.manifest;
                    candidates.push(Candidate {
                        index: prepared.len(),
                        name: manifest.name.clone(),
                        version: manifest.version.clone(),
                        dependencies: manifest.dependencies.clone(),
                    });
                    prepared.push(Some(instance));
                    paths.push(relative);
                }
                Err(error) => report.failed.push((relative, error)),
            }
        }
        let (order, refused) = {
            let registry = self.registry.borrow();
            plan_batch_load(&registry.graph, &candidates)
        };
        for (index, error) in refused {
            if let Some(instance) = prepared[index].take() {
                instance.actor.do_send(TerminatePlugin);
            }
            report.failed.push((paths[index].clone(), error.into()));
        }
        for index in order {
            let Some(instance) = prepared[index].take() else {
                continue;
            };
            let name = instance.description.manifest.name.clone();
            match self.admit(instance, None).await {
                Ok(_) => report.loaded.push(name),
                Err(error) => report.failed.push((paths[index].clone(), error)),
            }
        }
        report
    }

    /// Module files at the top of the plugins directory that no loaded plugin came from.
    fn unloaded_files(&self) -> Result<Vec<String>> {
        let registry = self.registry.borrow();
        let loaded: BTreeSet<&str> = registry
            .plugins
            .values()
            .filter_map(|plugin| plugin.source.as_deref())
            .collect();
        let entries = std::fs::read_dir(&registry.config.plugins_dir).map_err(|error| {
            Error::InvalidRequest {
                reason: format!(
                    "the plugins directory '{}' cannot be read: {error}",
                    registry.config.plugins_dir.display()
                ),
            }
        })?;
        let mut files: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
            .map(|entry| entry.path())
            .filter(|path| is_module_path(path))
            .filter_map(|path| {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .filter(|name| !loaded.contains(name.as_str()))
            .collect();
        files.sort();
        Ok(files)
    }

    async fn set_overrides(
        &self,
        name: String,
        overrides: ResourceOverrides,
    ) -> Result<(ResourceOverrides, Option<PluginInfo>)> {
        validate_plugin_name(&name)?;
        overrides.validate()?;
        let loaded = self.registry.borrow().plugins.contains_key(&name);
        if loaded {
            let info = self.reload(name, Some(overrides.clone())).await?;
            return Ok((overrides, Some(info)));
        }
        self.persist_overrides(&name, Some(&overrides)).await;
        self.registry
            .borrow_mut()
            .overrides
            .insert(name, overrides.clone());
        Ok((overrides, None))
    }

    async fn clear_overrides(&self, name: String) -> Result<()> {
        validate_plugin_name(&name)?;
        let loaded = self.registry.borrow().plugins.contains_key(&name);
        if loaded {
            self.reload(name.clone(), Some(ResourceOverrides::default()))
                .await?;
        }
        self.persist_overrides(&name, None).await;
        self.registry.borrow_mut().overrides.remove(&name);
        Ok(())
    }

    fn store(&self) -> Option<StateStore> {
        self.registry.borrow().config.store.clone()
    }

    /// Durability is best effort per change: a failed write is logged, and the change stands.
    async fn persist_loaded(&self, name: &str, source: Option<&str>) {
        if let Some(store) = self.store() {
            if let Err(error) = store.save_loaded(name, source).await {
                tracing::warn!(plugin = %name, %error, "could not record the set of loaded plugins");
            }
        }
    }

    async fn persist_claim(&self, name: &str) {
        if let Some(store) = self.store() {
            if let Err(error) = store.claim_prefix(name).await {
                tracing::warn!(plugin = %name, %error, "could not record the claimed name prefix");
            }
        }
    }

    async fn persist_overrides(&self, name: &str, overrides: Option<&ResourceOverrides>) {
        if let Some(store) = self.store() {
            if let Err(error) = store.save_overrides(name, overrides).await {
                tracing::warn!(plugin = %name, %error, "could not store overrides");
            }
        }
    }

    async fn restore(&self, state: StoredState) -> ScanReport {
        {
            let mut registry = self.registry.borrow_mut();
            registry.overrides = state.overrides;
            registry.claimed_prefixes.extend(state.claimed_prefixes);
        }
        let mut report = ScanReport::default();
        for source in state.loaded_sources {
            match self.load(PluginSource::File(source.clone()), None).await {
                Ok(info) => report.loaded.push(info.description.manifest.name),
                Err(error) => report.failed.push((source, error)),
            }
        }
        report
    }

    async fn unload_all(&self) {
        let order = self.registry.borrow().graph.load_order();
        for name in order.into_iter().rev() {
            self.stop_plugin(&name, false).await;
        }
        if let Some(kafka) = &self.registry.borrow().config.backends.kafka {
            kafka.flush();
        }
    }

    async fn reload_changed(&self, paths: Vec<PathBuf>) {
        let names: Vec<String> = {
            let registry = self.registry.borrow();
            let Ok(root) = registry.config.plugins_dir.canonicalize() else {
                return;
            };
            registry
                .plugins
                .iter()
                .filter(|(_, plugin)| {
                    plugin.source.as_ref().is_some_and(|source| {
                        let source = root.join(source);
                        paths
                            .iter()
                            .any(|path| path.canonicalize().is_ok_and(|path| path == source))
                    })
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in names {
            match self.reload(name.clone(), None).await {
                Ok(_) => {}
                Err(error) => tracing::warn!(plugin = %name, %error, "changed file not reloaded"),
            }
        }
    }
}

/// Prepares the plugin's database role and creates its declared topics and buckets before its
/// `initialize` runs.
async fn ensure_resources(gateways: &PluginGateways) -> Result<()> {
    if let Some(database) = &gateways.database {
        flatten(database.send(PrepareDatabase).await)?;
    }
    if let Some(kafka) = &gateways.kafka {
        flatten(kafka.send(EnsureTopics).await)?;
    }
    if let Some(storage) = &gateways.storage {
        flatten(storage.send(EnsureBuckets).await)?;
    }
    Ok(())
}

fn flatten<T>(
    result: std::result::Result<warden_runtime::Result<T>, actix::MailboxError>,
) -> Result<T> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Error::Plugin(error)),
        Err(error) => Err(error.into()),
    }
}

fn normalize_relative(relative: &str) -> String {
    Path::new(relative)
        .components()
        .filter_map(|component| match component {
            Component::Normal(segment) => Some(segment.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl PluginManager {
    fn core(&self) -> Core {
        Core {
            registry: self.registry.clone(),
        }
    }
}

// Changes hold the manager's mailbox (`AtomicResponse`) until they commit or are refused, so
// no other change can interleave with their awaits and see a half-made registry.
macro_rules! atomic_change {
    ($self:ident, $future:expr) => {
        AtomicResponse::new(Box::pin($future.into_actor($self)))
    };
}

impl Handler<LoadPlugin> for PluginManager {
    type Result = AtomicResponse<Self, Result<PluginInfo>>;

    fn handle(&mut self, message: LoadPlugin, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(self, async move {
            core.load(message.source, message.overrides).await
        })
    }
}

impl Handler<UnloadPlugin> for PluginManager {
    type Result = AtomicResponse<Self, Result<()>>;

    fn handle(&mut self, message: UnloadPlugin, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(self, async move {
            core.unload(message.name, message.cascade).await
        })
    }
}

impl Handler<ReloadPlugin> for PluginManager {
    type Result = AtomicResponse<Self, Result<PluginInfo>>;

    fn handle(&mut self, message: ReloadPlugin, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(self, async move {
            core.reload(message.name, message.overrides).await
        })
    }
}

impl Handler<ScanPlugins> for PluginManager {
    type Result = AtomicResponse<Self, ScanReport>;

    fn handle(&mut self, _: ScanPlugins, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(self, async move { core.scan().await })
    }
}

impl Handler<SetOverrides> for PluginManager {
    type Result = AtomicResponse<Self, Result<(ResourceOverrides, Option<PluginInfo>)>>;

    fn handle(&mut self, message: SetOverrides, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(self, async move {
            core.set_overrides(message.name, message.overrides).await
        })
    }
}

impl Handler<ClearOverrides> for PluginManager {
    type Result = AtomicResponse<Self, Result<()>>;

    fn handle(&mut self, message: ClearOverrides, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(
            self,
            async move { core.clear_overrides(message.name).await }
        )
    }
}

impl Handler<UnloadAll> for PluginManager {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: UnloadAll, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(self, async move { core.unload_all().await })
    }
}

impl Handler<RestoreState> for PluginManager {
    type Result = AtomicResponse<Self, ScanReport>;

    fn handle(&mut self, message: RestoreState, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(self, async move { core.restore(message.state).await })
    }
}

impl Handler<ReloadChangedFiles> for PluginManager {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, message: ReloadChangedFiles, _: &mut Self::Context) -> Self::Result {
        let core = self.core();
        atomic_change!(
            self,
            async move { core.reload_changed(message.paths).await }
        )
    }
}

impl Handler<ListPlugins> for PluginManager {
    type Result = Vec<PluginInfo>;

    fn handle(&mut self, _: ListPlugins, _: &mut Self::Context) -> Self::Result {
        let registry = self.registry.borrow();
        registry
            .plugins
            .keys()
            .filter_map(|name| registry.info(name).ok())
            .collect()
    }
}

impl Handler<GetPlugin> for PluginManager {
    type Result = Result<PluginInfo>;

    fn handle(&mut self, message: GetPlugin, _: &mut Self::Context) -> Self::Result {
        self.registry.borrow().info(&message.name)
    }
}

impl Handler<GetOverrides> for PluginManager {
    type Result = Result<ResourceOverrides>;

    fn handle(&mut self, message: GetOverrides, _: &mut Self::Context) -> Self::Result {
        validate_plugin_name(&message.name)?;
        Ok(self
            .registry
            .borrow()
            .overrides
            .get(&message.name)
            .cloned()
            .unwrap_or_default())
    }
}

impl Handler<PluginStateChanged> for PluginManager {
    type Result = ();

    fn handle(&mut self, message: PluginStateChanged, _: &mut Self::Context) {
        let mut registry = self.registry.borrow_mut();
        let Some(plugin) = registry.plugins.get_mut(&message.plugin) else {
            return;
        };
        if plugin.actor_id != message.actor_id {
            return;
        }
        let previous = plugin.state;
        plugin.state = message.state;
        plugin.restarts = message.restarts;
        let version = plugin.description.manifest.version.to_string();
        update_state_gauges(&registry.plugins);
        match message.state {
            PluginState::Running if previous == PluginState::Restarting => {
                registry.publish(
                    "plugin:restarted",
                    json!({ "name": message.plugin, "version": version }),
                );
            }
            PluginState::Restarting => {
                tracing::warn!(plugin = %message.plugin, restarts = message.restarts, "plugin restarting");
            }
            PluginState::Failed => {
                registry.publish(
                    "plugin:failed",
                    json!({ "name": message.plugin, "version": version, "reason": message.reason }),
                );
            }
            _ => {}
        }
    }
}
