//! Applying the cluster's desired state on this node, as the cluster follower hands it over:
//! unload what is no longer recorded (dependents first), then load what is missing and reload
//! what runs another source or other overrides, in the recorded load order. Nothing of this is
//! recorded again: it comes from the record. A recorded plugin that fails to come up here stays
//! listed by this node as `failed`, and an unload or reload through this node works on it.

use std::collections::BTreeSet;

use actix::{AtomicResponse, Handler, WrapFuture};
use warden_runtime::resources::{ResourceGrants, ResourceOverrides};

use super::changes::Core;
use super::messages::{PluginInfo, PluginSource};
use super::persistence::Record;
use super::registry::Prepared;
use super::PluginManager;
use crate::cluster::{ApplyDesiredState, DesiredState, RecordedPlugin};
use crate::plugin_actor::PluginState;
use crate::{Error, Result};

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
            // Native plugins' overrides are this node's own, and stay.
            let native: Vec<(String, ResourceOverrides)> = registry
                .overrides
                .iter()
                .filter(|(name, _)| {
                    registry
                        .plugins
                        .get(*name)
                        .is_some_and(|plugin| plugin.bundle.is_none())
                })
                .map(|(name, overrides)| (name.clone(), overrides.clone()))
                .collect();
            registry.overrides = state.overrides.clone();
            registry.overrides.extend(native);
            registry.cluster_recorded = state
                .plugins
                .iter()
                .map(|plugin| plugin.name.clone())
                .collect();
        }
        let recorded: BTreeSet<&str> = state
            .plugins
            .iter()
            .map(|plugin| plugin.name.as_str())
            .collect();
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
                        plugin.bundle.is_some() && !recorded.contains(name.as_str())
                    })
                })
                .collect()
        };
        for name in unloads {
            self.stop_plugin(&name, true).await;
        }
        // In passes: a reload keeps a plugin's place in the record, so a plugin may come before
        // a dependency it gained; a pass that brought something up lets the next try the rest.
        let mut pending: Vec<&RecordedPlugin> = state.plugins.iter().collect();
        let mut failed: Vec<(String, Error)> = Vec::new();
        loop {
            let mut progressed = false;
            failed.clear();
            let mut still_pending = Vec::new();
            for plugin in pending {
                match self.apply_recorded(&state, plugin).await {
                    Ok(changed) => progressed |= changed,
                    Err(error) => {
                        failed.push((plugin.name.clone(), error));
                        still_pending.push(plugin);
                    }
                }
            }
            pending = still_pending;
            if pending.is_empty() || !progressed {
                break;
            }
        }
        self.report_failures(&failed);
        failed
    }

    /// Brings one recorded plugin up here: loads it when it does not run, reloads it when it
    /// runs another source or other overrides; answers whether anything changed. A reload that
    /// failed here for this very source is not tried again (each try would stop and restart the
    /// version that runs): it stays failed until the cluster records another source.
    async fn apply_recorded(
        &self,
        state: &DesiredState,
        plugin: &RecordedPlugin,
    ) -> Result<bool, Error> {
        let wanted = wanted_overrides(state, &plugin.name);
        let current = {
            let registry = self.registry.borrow();
            registry.plugins.get(&plugin.name).map(|loaded| {
                let same_source = loaded
                    .bundle
                    .as_ref()
                    .is_some_and(|bundle| bundle.digest() == plugin.digest);
                (
                    same_source && loaded.overrides == wanted,
                    loaded.bundle.is_none(),
                )
            })
        };
        let source = PluginSource::Recorded(plugin.bundle.clone());
        match current {
            Some((true, _)) => Ok(false),
            Some((false, true)) => Err(Error::InvalidRequest {
                reason: format!(
                    "plugin '{}' is a native plugin of this node, which the cluster's plugin of that name does not replace",
                    plugin.name
                ),
            }),
            Some((false, false)) => {
                let failed_before = self
                    .registry
                    .borrow()
                    .failed_reloads
                    .get(&plugin.name)
                    .cloned();
                if let Some((_, error)) = failed_before.filter(|(digest, _)| *digest == plugin.digest) {
                    return Err(error);
                }
                match self.reload_from(plugin.name.clone(), Some(source), None).await {
                    Ok(_) => Ok(true),
                    Err(error) => {
                        self.registry
                            .borrow_mut()
                            .failed_reloads
                            .insert(plugin.name.clone(), (plugin.digest.clone(), error.clone()));
                        Err(error)
                    }
                }
            }
            None => self.load_recorded(plugin, source).await.map(|_| true),
        }
    }

    /// Loads a recorded plugin that does not run here. One whose instance was described but
    /// did not come up (its `initialize` threw here, a backend it needs is not configured
    /// here) stays listed by this node as `failed`, with what its instance said of itself.
    async fn load_recorded(
        &self,
        plugin: &RecordedPlugin,
        source: PluginSource,
    ) -> Result<PluginInfo, Error> {
        // A try that fails before its instance is described keeps what the last one knew.
        let prepared = self.prepare(&source).await?;
        let failed_info = self.failed_here_info(&prepared);
        self.admit(prepared, None, None).await.inspect_err(|_| {
            let mut registry = self.registry.borrow_mut();
            registry
                .failed_here
                .insert(plugin.name.clone(), failed_info);
            registry.publish_failed_here();
        })
    }

    /// How this node lists a described instance that failed to come up here.
    fn failed_here_info(&self, prepared: &Prepared) -> PluginInfo {
        let registry = self.registry.borrow();
        let manifest = &prepared.description.manifest;
        let overrides = registry
            .overrides
            .get(&manifest.name)
            .filter(|overrides| **overrides != ResourceOverrides::default())
            .cloned();
        // What it would hold, as far as it resolves: its declared names when its overrides do
        // not (the error in `nodes` says why it failed).
        let grants = ResourceGrants::of_manifest(manifest, overrides.as_ref())
            .or_else(|_| ResourceGrants::of_manifest(manifest, None))
            .unwrap_or_default();
        PluginInfo {
            description: prepared.description.clone(),
            kind: prepared.factory.kind(),
            source: prepared.source.clone(),
            state: PluginState::Failed,
            dependents: Vec::new(),
            restarts: 0,
            grants,
            overrides,
            database_role: registry
                .config
                .backends
                .database
                .as_ref()
                .and_then(|database| database.role_of(&manifest.name)),
            sha256: prepared.factory.source_sha256(),
        }
    }

    /// The file of a recorded plugin that failed to come up here, which a reload through this
    /// node loads (there is no running version to replace).
    pub(super) fn failed_here_file(&self, name: &str) -> Option<String> {
        self.registry
            .borrow()
            .failed_here
            .get(name)
            .and_then(|info| info.source.clone())
    }

    /// Unloads, through this node, a recorded plugin that failed to come up here: recorded as
    /// unloaded (the nodes that run it stop it), with the same refusal as a loaded plugin's
    /// when others recorded here depend on it.
    pub(super) async fn unload_failed_here(&self, name: String, cascade: bool) -> Result<()> {
        let dependents = self
            .registry
            .borrow()
            .failed_here_dependents(std::slice::from_ref(&name));
        if !dependents.is_empty() && !cascade {
            return Err(Error::HasDependents { name, dependents });
        }
        self.ensure_recordable().await?;
        let mut unloaded = dependents;
        unloaded.push(name);
        self.forget_failed_here(&unloaded).await
    }

    /// Records `names`, plugins that failed to come up here, as unloaded for the cluster, in
    /// that order, and stops listing them. The record is the whole change, so a record that
    /// fails is `cluster_unavailable` and changes nothing.
    pub(super) async fn forget_failed_here(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let records: Vec<Record<'_>> = names.iter().map(|name| Record::Unloaded { name }).collect();
        self.persist_or_refuse(&records).await?;
        let mut registry = self.registry.borrow_mut();
        for name in names {
            registry.failed_here.remove(name);
            registry.cluster_recorded.remove(name);
            registry.cluster_failures.remove(name);
            registry.failed_reloads.remove(name);
            registry.report_state(name, None);
        }
        registry.publish_failed_here();
        Ok(())
    }

    /// Reports `failed` on this node for `PluginInfo.nodes`, and that the plugins that failed
    /// before and are neither failing nor loaded now do not run here.
    fn report_failures(&self, failed: &[(String, Error)]) {
        let mut registry = self.registry.borrow_mut();
        let now: BTreeSet<String> = failed.iter().map(|(name, _)| name.clone()).collect();
        registry.failed_reloads.retain(|name, _| now.contains(name));
        registry.failed_here.retain(|name, _| now.contains(name));
        registry.publish_failed_here();
        let before = std::mem::replace(&mut registry.cluster_failures, now.clone());
        for name in before.difference(&now) {
            registry.report_state(name, None);
        }
        for (name, error) in failed {
            registry.report_state(name, Some(error.to_string()));
        }
    }
}
