//! Applying the cluster's desired state on this node, as the cluster follower hands it over:
//! unload what is no longer recorded (dependents first), then load what is missing and reload
//! what runs another source or other overrides, in the recorded load order. Nothing of this is
//! recorded again: it comes from the record.

use std::collections::{BTreeMap, BTreeSet};

use actix::{AtomicResponse, Handler, WrapFuture};
use warden_runtime::resources::ResourceOverrides;

use super::changes::Core;
use super::messages::PluginSource;
use super::PluginManager;
use crate::cluster::{ApplyDesiredState, DesiredState};
use crate::Error;

impl Handler<ApplyDesiredState> for PluginManager {
    // A change like any other: it holds the mailbox until it is done.
    type Result = AtomicResponse<Self, Vec<(String, Error)>>;

    fn handle(&mut self, message: ApplyDesiredState, _: &mut Self::Context) -> Self::Result {
        let core = Core {
            registry: self.registry.clone(),
            recording: false,
        };
        AtomicResponse::new(Box::pin(
            async move { core.apply_desired_state(message.state).await }.into_actor(self),
        ))
    }
}

/// What a plugin of the cluster should run with: its overrides, none when they are the defaults.
fn wanted_overrides(state: &DesiredState, name: &str) -> Option<ResourceOverrides> {
    state
        .overrides
        .get(name)
        .filter(|overrides| **overrides != ResourceOverrides::default())
        .cloned()
}

impl Core {
    /// Brings this node to `state`; answers the plugins it could not bring there.
    pub(super) async fn apply_desired_state(&self, state: DesiredState) -> Vec<(String, Error)> {
        {
            let mut registry = self.registry.borrow_mut();
            // Read before a change this node has recorded since: applying it would undo that.
            if state.generation < registry.cluster_generation {
                return Vec::new();
            }
            registry.cluster_generation = state.generation;
            registry.overrides = state.overrides.clone();
        }
        let recorded: BTreeMap<&str, usize> = state
            .plugins
            .iter()
            .enumerate()
            .map(|(index, plugin)| (plugin.name.as_str(), index))
            .collect();
        let mut failed = Vec::new();
        let unloads: Vec<String> = {
            let registry = self.registry.borrow();
            registry
                .graph
                .load_order()
                .into_iter()
                .rev()
                .filter(|name| {
                    // Native plugins belong to each node's own code, not to the cluster.
                    registry.plugins.get(name).is_some_and(|plugin| {
                        plugin.bundle.is_some() && !recorded.contains_key(name.as_str())
                    })
                })
                .collect()
        };
        for name in unloads {
            self.stop_plugin(&name, true).await;
        }
        for plugin in &state.plugins {
            let wanted = wanted_overrides(&state, &plugin.name);
            let current = {
                let registry = self.registry.borrow();
                registry.plugins.get(&plugin.name).map(|loaded| {
                    let same_source = loaded
                        .bundle
                        .as_ref()
                        .is_some_and(|bundle| bundle.digest() == plugin.digest);
                    same_source && loaded.overrides == wanted
                })
            };
            let source = PluginSource::Recorded(plugin.bundle.clone());
            let applied = match current {
                Some(true) => continue,
                Some(false) => self
                    .reload_from(plugin.name.clone(), Some(source), None)
                    .await
                    .map(drop),
                None => self.load(source, None).await.map(drop),
            };
            if let Err(error) = applied {
                failed.push((plugin.name.clone(), error));
            }
        }
        self.report_failures(&failed);
        failed
    }

    /// Reports `failed` on this node for `PluginInfo.nodes`, and that the plugins that failed
    /// before and are neither failing nor loaded now do not run here.
    fn report_failures(&self, failed: &[(String, Error)]) {
        let mut registry = self.registry.borrow_mut();
        let now: BTreeSet<String> = failed.iter().map(|(name, _)| name.clone()).collect();
        let before = std::mem::replace(&mut registry.cluster_failures, now.clone());
        for name in before.difference(&now) {
            registry.report_state(name, None);
        }
        for (name, error) in failed {
            registry.report_state(name, Some(error.to_string()));
        }
    }
}
