//! The directory of running plugin actors, shared by every arbiter thread.
//!
//! Plugins call their dependencies and the admin API calls `execute` without going through the
//! manager's mailbox, which may be busy with a long load; so the manager publishes each loaded
//! plugin's address here, and, in a cluster, the names of the recorded plugins that failed to
//! come up on this node (callers are told they are unavailable, not missing). Only the manager
//! writes.

use std::collections::{BTreeSet, HashMap};
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
#[derive(Clone)]
pub struct PluginDirectory {
    entries: Arc<RwLock<HashMap<String, DirectoryEntry>>>,
    /// In a cluster, the recorded plugins that failed to come up here.
    failed_here: Arc<RwLock<BTreeSet<String>>>,
    /// Counts changes, so a caller can wait for a plugin's entry to be swapped.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for PluginDirectory {
    fn default() -> Self {
        PluginDirectory {
            entries: Arc::default(),
            failed_here: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl PluginDirectory {
    /// A receiver that sees every later insert or remove.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The entry of a loaded plugin.
    pub fn get(&self, name: &str) -> Option<DirectoryEntry> {
        self.read().get(name).cloned()
    }

    /// What `read` takes from a loaded plugin's entry, without copying the rest of it.
    pub fn read_entry<R>(&self, name: &str, read: impl FnOnce(&DirectoryEntry) -> R) -> Option<R> {
        self.read().get(name).map(read)
    }

    pub(crate) fn insert(&self, name: String, entry: DirectoryEntry) {
        self.write().insert(name, entry);
        self.changes.send_modify(|changes| *changes += 1);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.write().remove(name);
        self.changes.send_modify(|changes| *changes += 1);
    }

    /// Whether `name` is a plugin of the cluster that failed to come up on this node.
    pub fn failed_here(&self, name: &str) -> bool {
        self.failed_here
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(name)
    }

    pub(crate) fn set_failed_here(&self, names: BTreeSet<String>) {
        *self
            .failed_here
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = names;
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
