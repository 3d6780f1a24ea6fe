//! PluginManager: the registry of loaded plugins and every change to it.
//!
//! Changes (load, unload, reload, scan, overrides) are serialized: each runs to completion
//! before the next starts, so validation always sees the registry as it will be when the change
//! commits, and a refused change leaves it untouched. Reads answer at once between changes.
//! Calls into plugins never go through this mailbox (see [`crate::directory`]).
//!
//! - this file: the actor and its handlers;
//! - `messages`: what the manager answers to, and what it reports;
//! - `registry`: the loaded plugins, their actors and gateways, and the naming rules;
//! - `changes`: load, unload, reload, scan and overrides, each all or nothing;
//! - `files`: plugin files inside the plugins directory;
//! - `migrations`: applying a plugin's migrations in a load, listing them, and the plan;
//! - `cluster_state`: applying the cluster's desired state on this node;
//! - `persistence`: the durable state (loaded plugins, overrides, claimed prefixes) and the
//!   reload of changed files.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, AsyncContext, AtomicResponse, Context, Handler, WrapFuture};
use serde_json::json;
use warden_runtime::graph::DependencyGraph;
use warden_runtime::manifest::validate_plugin_name;
use warden_runtime::resources::ResourceOverrides;

mod changes;
mod cluster_state;
mod files;
mod messages;
mod migrations;
mod persistence;
mod registry;
mod scan;

pub use messages::{
    ClearOverrides, GetOverrides, GetPlugin, ListPlugins, LoadPlugin, ManagerConfig, PluginInfo,
    PluginSource, ReloadChangedFiles, ReloadPlugin, RestoreState, ScanPlugins, ScanReport,
    SetOverrides, UnloadAll, UnloadPlugin,
};
pub use migrations::{
    ListMigrations, MigrationPlan, MigrationState, MigrationStatus, PlanMigrations,
};

use changes::Core;
use registry::{update_state_gauges, Registry};

use crate::broker::EventBroker;
use crate::directory::PluginDirectory;
use crate::plugin_actor::{PluginServices, PluginState, PluginStateChanged};
use crate::Result;

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
                cluster_generation: 0,
                cluster_failures: BTreeSet::new(),
                failed_here: BTreeMap::new(),
                admitting: BTreeSet::new(),
                failed_reloads: BTreeMap::new(),
                cluster_recorded: BTreeSet::new(),
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
            event_backlog_bytes: usize::try_from(registry.config.limits.memory_limit_mb)
                .unwrap_or(usize::MAX)
                .saturating_mul(1024 * 1024),
        });
        update_state_gauges(&registry.plugins);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for arbiter in &self.registry.borrow().arbiters {
            arbiter.stop();
        }
    }
}

impl PluginManager {
    fn core(&self) -> Core {
        Core {
            registry: self.registry.clone(),
            recording: true,
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
    type Result = AtomicResponse<Self, Result<ScanReport>>;

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
        self.registry.borrow().listed()
    }
}

impl Handler<GetPlugin> for PluginManager {
    type Result = Result<PluginInfo>;

    fn handle(&mut self, message: GetPlugin, _: &mut Self::Context) -> Self::Result {
        self.registry.borrow().listed_info(&message.name)
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
        let error = (message.state == PluginState::Failed).then(|| message.reason.clone());
        registry.report_state(&message.plugin, error.flatten());
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
