//! The directory of running plugin actors, shared by every arbiter thread.
//!
//! Plugins call their dependencies and the admin API calls `execute` without going through the
//! manager's mailbox, which may be busy with a long load; so the manager publishes each loaded
//! plugin's address here. Only the manager writes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::Addr;
use warden_runtime::PluginDescription;

use crate::plugin_actor::PluginActor;

/// One loaded plugin as callers see it.
#[derive(Clone)]
pub struct DirectoryEntry {
    /// The plugin actor; stable across supervised restarts.
    pub address: Addr<PluginActor>,
    /// Manifest and exports of the loaded version.
    pub description: PluginDescription,
}

/// Name → running plugin, readable from any thread.
#[derive(Clone, Default)]
pub struct PluginDirectory {
    entries: Arc<RwLock<HashMap<String, DirectoryEntry>>>,
}

impl PluginDirectory {
    /// The entry of a loaded plugin.
    pub fn get(&self, name: &str) -> Option<DirectoryEntry> {
        self.read().get(name).cloned()
    }

    pub(crate) fn insert(&self, name: String, entry: DirectoryEntry) {
        self.write().insert(name, entry);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, DirectoryEntry>> {
        // A writer never panics while holding the lock, so a poisoned lock still holds valid data.
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, DirectoryEntry>> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
