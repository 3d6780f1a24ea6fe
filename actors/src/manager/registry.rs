//! The registry: loaded plugins, their actors and gateways, and the naming rules between them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix::{Actor, Addr, Arbiter, ArbiterHandle, Supervisor};
use warden_runtime::graph::DependencyGraph;
use warden_runtime::js::SourceBundle;
use warden_runtime::resources::{
    overlapping_prefix, PrefixOverlap, ResourceGrants, ResourceOverrides,
};
use warden_runtime::{Event, PluginDescription, PluginFactory};

use super::messages::{ManagerConfig, PluginInfo};
use crate::broker::{EventBroker, PublishEvent, WARDEN_SOURCE};
use crate::cluster::NodePluginState;
use crate::directory::PluginDirectory;
use crate::gateways::{DatabaseGateway, KafkaGateway, PluginGateways, StorageGateway};
use crate::plugin_actor::{PluginActor, PluginServices, PluginState};
use crate::{Error, Result};

pub(super) struct LoadedPlugin {
    pub(super) actor: Addr<PluginActor>,
    pub(super) actor_id: u64,
    pub(super) gateways: PluginGateways,
    pub(super) description: PluginDescription,
    pub(super) factory: Arc<dyn PluginFactory>,
    pub(super) source: Option<String>,
    /// The recorded source it runs, in a cluster.
    pub(super) bundle: Option<Arc<SourceBundle>>,
    pub(super) grants: ResourceGrants,
    pub(super) overrides: Option<ResourceOverrides>,
    pub(super) state: PluginState,
    pub(super) restarts: u32,
}

/// A plugin instance created and described, not yet validated or initialized.
pub(super) struct Prepared {
    pub(super) actor: Addr<PluginActor>,
    pub(super) actor_id: u64,
    pub(super) arbiter: ArbiterHandle,
    pub(super) description: PluginDescription,
    pub(super) factory: Arc<dyn PluginFactory>,
    pub(super) source: Option<String>,
    /// The source to record, in a cluster.
    pub(super) bundle: Option<Arc<SourceBundle>>,
}

pub(super) struct Registry {
    pub(super) config: ManagerConfig,
    pub(super) plugins: BTreeMap<String, LoadedPlugin>,
    /// Names of plugins that held resources (recorded in the state store): their prefixes stay
    /// taken after unload, so no later plugin inherits their tables, topics or buckets.
    pub(super) claimed_prefixes: BTreeSet<String>,
    pub(super) graph: DependencyGraph,
    pub(super) overrides: BTreeMap<String, ResourceOverrides>,
    pub(super) directory: PluginDirectory,
    pub(super) broker: Addr<EventBroker>,
    pub(super) services: Option<PluginServices>,
    pub(super) arbiters: Vec<Arbiter>,
    pub(super) next_arbiter: usize,
    pub(super) next_actor_id: u64,
    /// In a cluster, the newest generation of the desired state this node recorded or
    /// applied: an older state read before it is stale and is not applied.
    pub(super) cluster_generation: i64,
    /// In a cluster, the recorded plugins this node could not bring up (reported `failed`).
    pub(super) cluster_failures: BTreeSet<String>,
    /// Of those, the ones whose instance was described before it failed to come up: listed by
    /// this node as `failed` (`PluginInfo.state` is the answering node's), and unloaded or
    /// reloaded through it like a loaded plugin. Never a name of `plugins`: an entry is made
    /// only for a load that failed, and a commit removes it.
    pub(super) failed_here: BTreeMap<String, PluginInfo>,
    /// During a scan, the plugins of the wave being admitted that passed their checks: taken
    /// as loaded by the checks of the rest of the wave (names and prefixes).
    pub(super) admitting: BTreeSet<String>,
    /// In a cluster, reloads that failed here, by plugin: the recorded digest and the error,
    /// so the same source is not tried again (each try stops the version that runs).
    pub(super) failed_reloads: BTreeMap<String, (String, Error)>,
    /// In a cluster, the names the last applied state records: a scan never loads this node's
    /// own file of one of them over the recorded source.
    pub(super) cluster_recorded: BTreeSet<String>,
}

impl Registry {
    /// A plugin as this node lists it: loaded, or recorded by the cluster and failed here.
    pub(super) fn listed_info(&self, name: &str) -> Result<PluginInfo> {
        self.info(name)
            .or_else(|error| self.failed_here.get(name).cloned().ok_or(error))
    }

    /// Every plugin this node lists, sorted by name.
    pub(super) fn listed(&self) -> Vec<PluginInfo> {
        let mut listed: Vec<PluginInfo> = self
            .plugins
            .keys()
            .filter_map(|name| self.info(name).ok())
            .chain(self.failed_here.values().cloned())
            .collect();
        listed.sort_by(|one, other| {
            one.description
                .manifest
                .name
                .cmp(&other.description.manifest.name)
        });
        listed
    }

    /// The plugins that failed to come up here and depend on one of `roots`, directly or
    /// through each other, in unload order (a dependent before what it depends on); `roots`
    /// not among them.
    pub(super) fn failed_here_dependents(&self, roots: &[String]) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut next = 0;
        let mut pending: Vec<String> = roots.to_vec();
        while let Some(current) = pending.get(next).cloned() {
            for info in self.failed_here.values() {
                let dependent = &info.description.manifest.name;
                let depends = info
                    .description
                    .manifest
                    .dependencies
                    .iter()
                    .any(|dependency| dependency.name == current);
                if depends && !pending.contains(dependent) {
                    pending.push(dependent.clone());
                    found.push(dependent.clone());
                }
            }
            next += 1;
        }
        found.reverse();
        found
    }

    /// Publishes the names in `failed_here` to the directory, after each change of it.
    pub(super) fn publish_failed_here(&self) {
        self.directory
            .set_failed_here(self.failed_here.keys().cloned().collect());
    }

    pub(super) fn info(&self, name: &str) -> Result<PluginInfo> {
        let plugin = self
            .plugins
            .get(name)
            .ok_or_else(|| Error::PluginNotFound {
                name: name.to_string(),
            })?;
        Ok(PluginInfo {
            description: plugin.description.clone(),
            kind: plugin.factory.kind(),
            sha256: plugin.factory.source_sha256(),
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

    pub(super) fn publish(&self, event: &str, mut data: serde_json::Value) {
        // In a cluster each node announces the changes it applies, with its id.
        if let (Some(topic), Some(fields)) = (&self.config.cluster_events, data.as_object_mut()) {
            fields.insert("node".into(), topic.node().into());
        }
        self.broker.do_send(PublishEvent {
            event: Event::new(event, WARDEN_SOURCE, data),
            emitter: None,
        });
    }

    pub(super) fn next_arbiter(&mut self) -> ArbiterHandle {
        let index = self.next_arbiter % self.arbiters.len();
        self.next_arbiter += 1;
        self.arbiters[index].handle()
    }

    pub(super) fn start_actor(
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
    pub(super) fn start_gateways(
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

    /// Refuses a plugin whose name prefix overlaps a loaded plugin's, a claimed one's or the
    /// shared resources' ([`overlapping_prefix`]).
    pub(super) fn check_name_prefix(&self, plugin: &str) -> Result<()> {
        let others = self
            .plugins
            .keys()
            .chain(self.admitting.iter())
            .chain(self.claimed_prefixes.iter())
            .map(String::as_str);
        let reason = match overlapping_prefix(plugin, others) {
            None => return Ok(()),
            Some(PrefixOverlap::Shared) => format!(
                "plugin name '{plugin}' would share the prefix of shared resources ('shared_')"
            ),
            Some(PrefixOverlap::Plugin(other)) => {
                let whose = if self.plugins.contains_key(other) {
                    "loaded plugin"
                } else {
                    "plugin"
                };
                format!("plugin name '{plugin}' overlaps the prefix of {whose} '{other}', so their physical names could meet (a prefix that held resources stays claimed after unload)")
            }
        };
        Err(Error::Plugin(warden_runtime::Error::invalid_name(reason)))
    }

    pub(super) fn set_state(&mut self, name: &str, state: PluginState) {
        if let Some(plugin) = self.plugins.get_mut(name) {
            plugin.state = state;
        }
        update_state_gauges(&self.plugins);
        self.report_state(name, None);
    }

    /// In a cluster, reports `name`'s state on this node for `PluginInfo.nodes`: the loaded
    /// plugin's state, else `failed` with `error` when one is given, else that it does not run
    /// here.
    pub(super) fn report_state(&self, name: &str, error: Option<String>) {
        let Some(reporter) = &self.config.node_states else {
            return;
        };
        let state = match (self.plugins.get(name), error) {
            (Some(plugin), error) => Some(NodePluginState {
                state: plugin.state.as_str().to_owned(),
                restarts: plugin.restarts,
                error,
            }),
            (None, Some(error)) => Some(NodePluginState {
                state: PluginState::Failed.as_str().to_owned(),
                restarts: 0,
                error: Some(error),
            }),
            (None, None) => None,
        };
        reporter.report(name, state);
    }
}

pub(super) fn update_state_gauges(plugins: &BTreeMap<String, LoadedPlugin>) {
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
