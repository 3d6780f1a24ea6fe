//! The manager's changes: load, unload, reload, scan and overrides, each all or nothing.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;
use warden_runtime::manifest::validate_plugin_name;
use warden_runtime::resources::{ResourceGrants, ResourceKind, ResourceOverrides};

use super::files::SourceFactory;
use super::messages::{PluginInfo, PluginSource};
use super::persistence::Record;
use super::registry::{update_state_gauges, LoadedPlugin, Prepared, Registry};
use crate::directory::DirectoryEntry;
use crate::gateways::kafka::EnsureTopics;
use crate::gateways::storage::EnsureBuckets;
use crate::gateways::{PluginGateways, PrepareDatabase};
use crate::plugin_actor::{
    CreateInstance, InitializeInstance, PluginState, StopInstance, TerminatePlugin,
};
use crate::{Error, Result};

/// The manager's changes as plain async functions over the shared registry. A `RefCell` borrow
/// is never held across an `.await`.
#[derive(Clone)]
pub(super) struct Core {
    pub(super) registry: Rc<RefCell<Registry>>,
    /// Whether changes are recorded in the durable state: not when they apply the cluster's
    /// recorded state, which they come from.
    pub(super) recording: bool,
}

impl Core {
    /// Creates and describes an instance in a new actor.
    pub(super) async fn prepare(&self, source: &PluginSource) -> Result<Prepared> {
        let SourceFactory {
            factory,
            source,
            hint,
            bundle,
        } = self.factory_for(source)?;
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
                bundle,
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
    pub(super) fn validate(
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
                None if registry.plugins.contains_key(name)
                    || registry.admitting.contains(name) =>
                {
                    return Err(Error::AlreadyLoaded { name: name.clone() });
                }
                // Listed here as failed, it is the cluster's: reloaded, not loaded again.
                None if self.recording && registry.failed_here.contains_key(name) => {
                    return Err(Error::AlreadyLoaded { name: name.clone() });
                }
                None => {}
            }
            registry
                .graph
                .validate(name, &manifest.version, &manifest.dependencies)?;
            registry.check_name_prefix(name)?;
            if !prepared.description.migrations.is_empty()
                && registry.config.backends.database.is_none()
            {
                return Err(super::migrations::no_database(name));
            }
            let effective = overrides
                .clone()
                .or_else(|| registry.overrides.get(name).cloned())
                .filter(|overrides| *overrides != ResourceOverrides::default());
            let grants = ResourceGrants::of_manifest(manifest, effective.as_ref())?;
            Ok((grants, effective))
        })();
        if validated.is_err() {
            prepared.actor.do_send(TerminatePlugin);
        }
        validated
    }

    /// Starts the instance's gateways, creates its declared topics and buckets, applies its
    /// pending migrations and runs its `initialize`. On failure the prepared actor is terminated.
    pub(super) async fn start_instance(
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
        let initialize_failed = |error| match error {
            Error::Plugin(source) => Error::InitializeFailed {
                plugin: name.clone(),
                source,
            },
            other => other,
        };
        let started = async {
            self.claim_prefix(name, grants).await;
            ensure_resources(&gateways)
                .await
                .map_err(initialize_failed)?;
            // Migrations keep their own errors (`migration_changed`, `migration_failed`).
            self.apply_migrations(&prepared.description, &gateways)
                .await?;
            flatten(prepared.actor.send(initialize).await).map_err(initialize_failed)
        };
        match started.await {
            Ok(()) => Ok(gateways),
            Err(error) => {
                prepared.actor.do_send(StopInstance { cleanup: false });
                prepared.actor.do_send(TerminatePlugin);
                gateways.close();
                Err(error)
            }
        }
    }

    /// Claims the name prefix of a plugin that holds resources of its own, before anything is
    /// created under it: tables its migrations or its `initialize` made stay even when the load
    /// is then refused, and no later plugin whose prefix overlaps may inherit them.
    async fn claim_prefix(&self, name: &str, grants: &ResourceGrants) {
        let holds_resources = [
            ResourceKind::Table,
            ResourceKind::Topic,
            ResourceKind::Bucket,
        ]
        .iter()
        .any(|kind| grants.grants(*kind).iter().any(|grant| !grant.shared));
        if holds_resources && !self.registry.borrow().claimed_prefixes.contains(name) {
            self.persist_claim(name).await;
            self.registry
                .borrow_mut()
                .claimed_prefixes
                .insert(name.to_owned());
        }
    }

    /// Records a running instance in the registry, the directory and the state store.
    /// `overrides` are the new ones given with the change (`Some(default)` removes them).
    pub(super) async fn commit(
        &self,
        prepared: Prepared,
        gateways: PluginGateways,
        grants: ResourceGrants,
        effective: Option<ResourceOverrides>,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        let name = prepared.description.manifest.name.clone();
        let reloaded = self.registry.borrow().plugins.contains_key(&name);
        let mut records = vec![Record::Loaded {
            name: &name,
            source: prepared.source.as_deref(),
            bundle: prepared.bundle.as_ref(),
        }];
        // A native plugin's overrides are its node's own: a cluster does not record them.
        let recorded_overrides =
            prepared.bundle.is_some() || self.registry.borrow().config.cluster.is_none();
        if let Some(overrides) = overrides.as_ref().filter(|_| recorded_overrides) {
            let stored =
                Some(overrides).filter(|overrides| **overrides != ResourceOverrides::default());
            records.push(Record::Overrides {
                name: &name,
                overrides: stored,
            });
        }
        self.persist(&records).await;
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
                bundle: prepared.bundle,
                grants,
                overrides: effective,
                state: PluginState::Running,
                restarts: 0,
            },
        );
        update_state_gauges(&registry.plugins);
        registry.cluster_failures.remove(&name);
        if registry.failed_here.remove(&name).is_some() {
            registry.publish_failed_here();
        }
        registry.failed_reloads.remove(&name);
        registry.report_state(&name, None);
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

    /// Checks, starts and commits a prepared instance; `replacing` names the plugin it must be
    /// (a reload through a node where that plugin failed to come up).
    pub(super) async fn admit(
        &self,
        prepared: Prepared,
        overrides: Option<ResourceOverrides>,
        replacing: Option<&str>,
    ) -> Result<PluginInfo> {
        let (grants, effective) = self.validate(&prepared, &overrides, replacing)?;
        let gateways = self.start_instance(&prepared, &grants).await?;
        self.commit(prepared, gateways, grants, effective, overrides)
            .await
    }

    pub(super) async fn load(
        &self,
        source: PluginSource,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        self.load_as(source, overrides, None).await
    }

    /// A load of `source`; with `replacing`, its file must declare that plugin.
    pub(super) async fn load_as(
        &self,
        source: PluginSource,
        overrides: Option<ResourceOverrides>,
        replacing: Option<&str>,
    ) -> Result<PluginInfo> {
        if let Some(overrides) = &overrides {
            overrides.validate()?;
        }
        self.ensure_recordable().await?;
        let prepared = self.prepare(&source).await?;
        self.admit(prepared, overrides, replacing).await
    }

    /// Stops one plugin for good: out of the directory, `cleanup()`, dispose, forget. With
    /// `forget`, it is also dropped from the durable set of loaded plugins (not at shutdown,
    /// whose plugins a restarted Warden loads again).
    pub(super) async fn stop_plugin(&self, name: &str, forget: bool) {
        if forget {
            self.persist(&[Record::Unloaded { name }]).await;
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
            plugin.gateways.close();
            registry.graph.remove(name);
            update_state_gauges(&registry.plugins);
            registry.report_state(name, None);
            tracing::info!(plugin = %name, "plugin unloaded");
            registry.publish(
                "plugin:unloaded",
                json!({ "name": name, "version": plugin.description.manifest.version.to_string() }),
            );
        }
    }

    pub(super) async fn unload(&self, name: String, cascade: bool) -> Result<()> {
        let failed_here = self.registry.borrow().failed_here.contains_key(&name);
        if failed_here {
            return self.unload_failed_here(name, cascade).await;
        }
        let (dependents, failed_here_dependents) = {
            let registry = self.registry.borrow();
            if !registry.plugins.contains_key(&name) {
                return Err(Error::PluginNotFound { name });
            }
            let dependents = registry.graph.dependents_in_unload_order(&name);
            // In a cluster, dependents that failed to come up here run elsewhere: they count.
            let mut roots = dependents.clone();
            roots.push(name.clone());
            let failed_here_dependents = registry.failed_here_dependents(&roots);
            let mut direct = registry.graph.direct_dependents(&name);
            direct.extend(failed_here_dependents.iter().cloned());
            direct.sort();
            direct.dedup();
            if !direct.is_empty() && !cascade {
                return Err(Error::HasDependents {
                    name,
                    dependents: direct,
                });
            }
            (dependents, failed_here_dependents)
        };
        self.ensure_recordable().await?;
        self.forget_failed_here(&failed_here_dependents).await?;
        for dependent in dependents {
            self.stop_plugin(&dependent, true).await;
        }
        self.stop_plugin(&name, true).await;
        Ok(())
    }

    pub(super) async fn reload(
        &self,
        name: String,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        match self.failed_here_file(&name) {
            // Nothing runs here to replace: this node's file is loaded, checked as a reload's
            // is (it must declare the same plugin), and becomes the cluster's source.
            Some(file) => {
                self.load_as(PluginSource::File(file), overrides, Some(&name))
                    .await
            }
            None => self.reload_from(name, None, overrides).await,
        }
    }

    /// Replaces a loaded plugin by a new instance of `source` (`None`: its own file, read
    /// again), all or nothing: a failed reload leaves the previous version running.
    pub(super) async fn reload_from(
        &self,
        name: String,
        source: Option<PluginSource>,
        overrides: Option<ResourceOverrides>,
    ) -> Result<PluginInfo> {
        if let Some(overrides) = &overrides {
            overrides.validate()?;
        }
        let (own_source, old_actor, old_gateways, old_grants) = {
            let registry = self.registry.borrow();
            let plugin = registry
                .plugins
                .get(&name)
                .ok_or_else(|| Error::PluginNotFound { name: name.clone() })?;
            let own_source = match &plugin.source {
                Some(relative) => PluginSource::File(relative.clone()),
                None => PluginSource::Native(plugin.factory.clone()),
            };
            (
                own_source,
                plugin.actor.clone(),
                plugin.gateways.clone(),
                plugin.grants.clone(),
            )
        };
        let source = source.unwrap_or(own_source);
        self.ensure_recordable().await?;
        let prepared = self.prepare(&source).await?;
        let (grants, effective) = self.validate(&prepared, &overrides, Some(&name))?;
        self.registry
            .borrow_mut()
            .set_state(&name, PluginState::Stopping);
        let _ = old_actor.send(StopInstance { cleanup: true }).await;
        old_gateways.release_idle_connections();
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
        old_gateways.close();
        self.commit(prepared, gateways, grants, effective, overrides)
            .await
    }

    pub(super) async fn set_overrides(
        &self,
        name: String,
        overrides: ResourceOverrides,
    ) -> Result<(ResourceOverrides, Option<PluginInfo>)> {
        validate_plugin_name(&name)?;
        overrides.validate()?;
        let loaded = self.registry.borrow().plugins.contains_key(&name);
        if loaded {
            let source = self.running_source(&name);
            let info = self
                .reload_from(name, source, Some(overrides.clone()))
                .await?;
            return Ok((overrides, Some(info)));
        }
        // A plugin of the cluster that failed here: its overrides must resolve against what its
        // instance declared, as they must on the nodes that run it.
        let failed_here = self
            .registry
            .borrow()
            .failed_here
            .get(&name)
            .map(|info| info.description.manifest.clone());
        if let Some(manifest) = failed_here {
            ResourceGrants::of_manifest(&manifest, Some(&overrides))?;
        }
        self.ensure_recordable().await?;
        self.persist(&[Record::Overrides {
            name: &name,
            overrides: Some(&overrides),
        }])
        .await;
        self.registry
            .borrow_mut()
            .overrides
            .insert(name, overrides.clone());
        Ok((overrides, None))
    }

    pub(super) async fn clear_overrides(&self, name: String) -> Result<()> {
        validate_plugin_name(&name)?;
        let loaded = self.registry.borrow().plugins.contains_key(&name);
        if loaded {
            // The reload records that the plugin has no overrides any more.
            let source = self.running_source(&name);
            self.reload_from(name.clone(), source, Some(ResourceOverrides::default()))
                .await?;
        } else {
            self.ensure_recordable().await?;
            self.persist(&[Record::Overrides {
                name: &name,
                overrides: None,
            }])
            .await;
        }
        self.registry.borrow_mut().overrides.remove(&name);
        Ok(())
    }

    /// What an overrides change reloads: in a cluster the source the plugin runs now (only a
    /// reload reads its file again), otherwise its file.
    fn running_source(&self, name: &str) -> Option<PluginSource> {
        let registry = self.registry.borrow();
        let bundle = registry.plugins.get(name)?.bundle.clone()?;
        Some(PluginSource::Recorded(bundle))
    }

    pub(super) async fn unload_all(&self) {
        let order = self.registry.borrow().graph.load_order();
        for name in order.into_iter().rev() {
            self.stop_plugin(&name, false).await;
        }
        if let Some(kafka) = &self.registry.borrow().config.backends.kafka {
            kafka.flush();
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

pub(super) fn flatten<T>(
    result: std::result::Result<warden_runtime::Result<T>, actix::MailboxError>,
) -> Result<T> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Error::Plugin(error)),
        Err(error) => Err(error.into()),
    }
}
