//! Plugin connections: each holds a permit of the one budget all plugins' connections share
//! (`WARDEN_DATABASE_POOL_SIZE`) for its whole life, and a plugin that needs one while the
//! budget is spent first closes idle connections of other plugins.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{
    Manager as ManageConnections, Metrics, Pool as ManagedPool, RecycleError, RecycleResult,
    WeakPool,
};
use deadpool_postgres::{ClientWrapper, Manager};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warden_runtime::access::AccessLevel;

/// How long a plugin's connection may sit idle before it is closed.
pub(super) const IDLE_CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// A plugin connection and the budget permit it holds while it lives.
pub(super) struct PluginConnection {
    pub(super) client: ClientWrapper,
    _permit: OwnedSemaphorePermit,
}

/// Opens plugin connections within the budget. Their session state is reset after every
/// statement (see `SESSION_RESET` in the gateway), a closed or broken one is replaced.
pub(super) struct PluginConnectionManager {
    pub(super) connections: Manager,
    pub(super) access: Arc<PluginAccessShared>,
}

impl PluginConnectionManager {
    /// Forgets every connection's prepared statements, after a statement changed the schema.
    pub(super) fn clear_statement_caches(&self) {
        self.connections.statement_caches.clear();
    }
}

/// A pool of plugin connections.
pub(super) type PluginConnectionPool = ManagedPool<PluginConnectionManager>;

/// Why a plugin connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the connection budget is closed")]
    BudgetClosed,
}

impl ManageConnections for PluginConnectionManager {
    type Type = PluginConnection;
    type Error = ConnectionError;

    async fn create(&self) -> std::result::Result<PluginConnection, ConnectionError> {
        let permit = match Arc::clone(&self.access.budget).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.access.close_idle_connections();
                // Waits for a connection of any plugin to close; the caller's time limit bounds
                // the wait.
                Arc::clone(&self.access.budget)
                    .acquire_owned()
                    .await
                    .map_err(|_| ConnectionError::BudgetClosed)?
            }
        };
        let client = self.connections.create().await?;
        Ok(PluginConnection {
            client,
            _permit: permit,
        })
    }

    async fn recycle(
        &self,
        connection: &mut PluginConnection,
        metrics: &Metrics,
    ) -> RecycleResult<ConnectionError> {
        self.connections
            .recycle(&mut connection.client, metrics)
            .await
            .map_err(|error| match error {
                RecycleError::Message(message) => RecycleError::Message(message),
                RecycleError::Backend(error) => RecycleError::Backend(error.into()),
            })
    }

    fn detach(&self, connection: &mut PluginConnection) {
        self.connections.detach(&mut connection.client);
    }
}

/// What every plugin's access shares: the budget and the registry of shared-table grants.
pub(super) struct PluginAccessShared {
    pub(super) budget: Arc<Semaphore>,
    /// Every plugin pool, to close idle connections when the budget is spent.
    pub(super) pools: Mutex<Vec<WeakPool<PluginConnectionManager>>>,
    /// For each shared table (physical name), the level each plugin role mapped to it holds.
    pub(super) shared_tables: Mutex<HashMap<String, BTreeMap<String, AccessLevel>>>,
}

impl PluginAccessShared {
    pub(super) fn close_idle_connections(&self) {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.retain(|pool| match pool.upgrade() {
            Some(pool) => {
                pool.retain(|_, _| false);
                true
            }
            None => false,
        });
    }
}
