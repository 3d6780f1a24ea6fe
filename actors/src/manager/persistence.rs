//! The manager's durable state (loaded plugins, overrides, claimed prefixes) and the reload of
//! changed files. Durability is best effort per change: a failed write is logged, and the
//! change stands.

use std::path::PathBuf;

use warden_runtime::resources::ResourceOverrides;

use super::changes::Core;
use super::messages::{PluginSource, ScanReport};
use crate::state_store::{StateStore, StoredState};

impl Core {
    pub(super) fn store(&self) -> Option<StateStore> {
        self.registry.borrow().config.store.clone()
    }

    /// Durability is best effort per change: a failed write is logged, and the change stands.
    pub(super) async fn persist_loaded(&self, name: &str, source: Option<&str>) {
        if let Some(store) = self.store() {
            if let Err(error) = store.save_loaded(name, source).await {
                tracing::warn!(plugin = %name, %error, "could not record the set of loaded plugins");
            }
        }
    }

    pub(super) async fn persist_claim(&self, name: &str) {
        if let Some(store) = self.store() {
            if let Err(error) = store.claim_prefix(name).await {
                tracing::warn!(plugin = %name, %error, "could not record the claimed name prefix");
            }
        }
    }

    pub(super) async fn persist_overrides(
        &self,
        name: &str,
        overrides: Option<&ResourceOverrides>,
    ) {
        if let Some(store) = self.store() {
            if let Err(error) = store.save_overrides(name, overrides).await {
                tracing::warn!(plugin = %name, %error, "could not store overrides");
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
