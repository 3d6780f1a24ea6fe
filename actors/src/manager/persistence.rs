//! The manager's durable state (loaded plugins, overrides, claimed prefixes) and the reload of
//! changed files. A single node keeps its state under its node id, best effort per change (a
//! failed write is logged, and the change stands); in a cluster, changes are recorded in the
//! cluster's desired state, which every node follows.

use std::path::PathBuf;
use std::sync::Arc;

use warden_runtime::js::SourceBundle;
use warden_runtime::resources::ResourceOverrides;

use super::changes::Core;
use super::messages::{PluginSource, ScanReport};
use crate::cluster::{DesiredChange, DesiredStateStore};
use crate::state_store::{StateStore, StoredState};
use crate::{Error, Result};

/// One change to record.
pub(super) enum Record<'a> {
    /// `name` runs from `source` (a file of the plugins directory), recorded as `bundle`.
    Loaded {
        name: &'a str,
        source: Option<&'a str>,
        bundle: Option<&'a Arc<SourceBundle>>,
    },
    Unloaded {
        name: &'a str,
    },
    Overrides {
        name: &'a str,
        overrides: Option<&'a ResourceOverrides>,
    },
}

impl Core {
    pub(super) fn store(&self) -> Option<StateStore> {
        self.registry.borrow().config.store.clone()
    }

    fn cluster_store(&self) -> Option<DesiredStateStore> {
        self.registry.borrow().config.cluster.clone()
    }

    /// In a cluster, refuses a change the cluster could not record (`cluster_unavailable`)
    /// before anything is changed. Changes applied from the cluster's own state are not checked.
    pub(super) async fn ensure_recordable(&self) -> Result<()> {
        let Some(cluster) = self.cluster_store().filter(|_| self.recording) else {
            return Ok(());
        };
        cluster
            .check_available()
            .await
            .map_err(|error| Error::ClusterUnavailable {
                reason: error.to_string(),
            })
    }

    /// Records `changes`: in a cluster in one transaction of the desired state, otherwise in
    /// the node's own state one at a time. Nothing is recorded for changes applied from the
    /// cluster's state.
    pub(super) async fn persist(&self, changes: &[Record<'_>]) {
        if let Err(error) = self.persist_or_refuse(changes).await {
            tracing::error!(
                %error,
                "a change applied on this node could not be recorded for the cluster; the cluster's state undoes it here at the next full reconcile"
            );
        }
    }

    /// Records `changes` as [`Core::persist`] does, answering `cluster_unavailable` when a
    /// cluster's record failed: for a change that exists only as that record (an unload through
    /// a node where the plugin does not run).
    pub(super) async fn persist_or_refuse(&self, changes: &[Record<'_>]) -> Result<()> {
        if !self.recording {
            return Ok(());
        }
        if let Some(cluster) = self.cluster_store() {
            let desired: Vec<DesiredChange> = changes
                .iter()
                .filter_map(|change| match change {
                    // Native plugins are registered by each node's own code: not recorded.
                    Record::Loaded { bundle: None, .. } => None,
                    Record::Loaded {
                        name,
                        bundle: Some(bundle),
                        ..
                    } => Some(DesiredChange::Loaded {
                        name: (*name).to_owned(),
                        bundle: Arc::clone(bundle),
                    }),
                    Record::Unloaded { name } => Some(DesiredChange::Unloaded {
                        name: (*name).to_owned(),
                    }),
                    Record::Overrides { name, overrides } => Some(DesiredChange::Overrides {
                        name: (*name).to_owned(),
                        overrides: overrides.cloned(),
                    }),
                })
                .collect();
            if desired.is_empty() {
                return Ok(());
            }
            let generation =
                cluster
                    .record(&desired)
                    .await
                    .map_err(|error| Error::ClusterUnavailable {
                        reason: error.to_string(),
                    })?;
            let mut registry = self.registry.borrow_mut();
            registry.cluster_generation = registry.cluster_generation.max(generation);
            return Ok(());
        }
        let Some(store) = self.store() else {
            return Ok(());
        };
        for change in changes {
            let (name, written) = match change {
                Record::Loaded { name, source, .. } => {
                    (*name, store.save_loaded(name, *source).await)
                }
                Record::Unloaded { name } => (*name, store.save_loaded(name, None).await),
                Record::Overrides { name, overrides } => {
                    (*name, store.save_overrides(name, *overrides).await)
                }
            };
            // A single node's record is best effort: the change stands on the node.
            if let Err(error) = written {
                tracing::warn!(plugin = %name, %error, "could not record a change of the plugin");
            }
        }
        Ok(())
    }

    pub(super) async fn persist_claim(&self, name: &str) {
        if let Some(store) = self.store() {
            if let Err(error) = store.claim_prefix(name).await {
                tracing::warn!(plugin = %name, %error, "could not record the claimed name prefix");
            }
        }
    }

    pub(super) async fn restore(&self, state: StoredState) -> ScanReport {
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

    pub(super) async fn reload_changed(&self, paths: Vec<PathBuf>) {
        let names: Vec<String> = {
            let registry = self.registry.borrow();
            let Ok(root) = registry.config.plugins_dir.canonicalize() else {
                return;
            };
            // The plugins that run here, and in a cluster those that failed to come up here (a
            // reload through this node makes its file the cluster's source either way).
            let running = registry
                .plugins
                .iter()
                .map(|(name, plugin)| (name, plugin.source.as_ref()));
            let failed_here = registry
                .failed_here
                .iter()
                .map(|(name, info)| (name, info.source.as_ref()));
            running
                .chain(failed_here)
                .filter(|(_, source)| {
                    source.is_some_and(|source| {
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
