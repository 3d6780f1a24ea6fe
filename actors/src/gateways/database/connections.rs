//! Plugin connections: each holds a permit of the one budget all plugins' connections share
//! (`WARDEN_DATABASE_POOL_SIZE`) for its whole life, and a plugin that needs one while the
//! budget is spent first closes idle connections of other plugins. Each also counts what ran on
//! its session since the last reset ([`SessionUse`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{
    Manager as ManageConnections, Metrics, Pool as ManagedPool, RecycleError, RecycleResult,
    WeakPool,
};
use deadpool_postgres::{ClientWrapper, Manager};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use warden_runtime::access::AccessLevel;

/// How long a plugin's connection may sit idle before it is closed.
pub(super) const IDLE_CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// The most statements of one plugin that may share a connection's session state between two
/// resets, while the plugin's statements queue for its connections.
pub(super) const MAX_STATEMENTS_BETWEEN_RESETS: u32 = 32;

/// The longest a connection's session state may live between two resets, likewise.
pub(super) const MAX_TIME_BETWEEN_RESETS: Duration = Duration::from_millis(50);

/// A plugin connection and the budget permit it holds while it lives.
pub(super) struct PluginConnection {
    pub(super) client: ClientWrapper,
    /// What ran on the session since its last reset.
    pub(super) session: SessionUse,
    _permit: OwnedSemaphorePermit,
}

/// The statements a connection ran since its session was last reset.
///
/// The reset (`SESSION_RESET`) is sent behind a statement on the same connection, but it is a
/// protocol round of its own: PostgreSQL answers and flushes it apart from the statement, which
/// cost 30 to 40% of the point-query throughput at concurrency 32 (BENCHMARKS.md). So on a
/// plugin's own pool, where every statement waiting for a connection is the same plugin's, a
/// connection handed straight from one of its statements to the next may skip the reset, for at
/// most [`MAX_STATEMENTS_BETWEEN_RESETS`] statements and [`MAX_TIME_BETWEEN_RESETS`]. A connection
/// that would sit idle is reset first, and so is one taken for a transaction, a migration or a
/// catalog lookup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct SessionUse {
    statements: u32,
    first_unreset: Option<Instant>,
}

impl SessionUse {
    /// Whether the reset goes behind the next statement: always, unless other statements of the
    /// same plugin wait for a connection and this one is within the bounds after that statement.
    pub(super) fn reset_behind_next(&self, same_plugin_waiting: bool, now: Instant) -> bool {
        !same_plugin_waiting
            || self.too_old(now)
            || self.statements + 1 >= MAX_STATEMENTS_BETWEEN_RESETS
    }

    /// Whether the session is due for its reset before the connection serves again.
    pub(super) fn past_bounds(&self, now: Instant) -> bool {
        self.too_old(now) || self.statements >= MAX_STATEMENTS_BETWEEN_RESETS
    }

    fn too_old(&self, now: Instant) -> bool {
        self.first_unreset
            .is_some_and(|first| now.saturating_duration_since(first) >= MAX_TIME_BETWEEN_RESETS)
    }

    /// A statement ran without the reset behind it.
    pub(super) fn ran_without_reset(&mut self, now: Instant) {
        self.first_unreset.get_or_insert(now);
        self.statements += 1;
    }

    /// The session was reset.
    pub(super) fn was_reset(&mut self) {
        *self = SessionUse::default();
    }

    /// Whether something ran since the last reset.
    pub(super) fn needs_reset(&self) -> bool {
        self.statements > 0
    }
}

/// Opens plugin connections within the budget. Their session state is reset after every
/// statement (see `SESSION_RESET` in the gateway), a closed or broken one is replaced.
pub(super) struct PluginConnectionManager {
    pub(super) connections: Manager,
    pub(super) access: Arc<PluginAccessShared>,
    /// A sweep of idle connections whose session was not reset is pending.
    pub(super) sweep_pending: AtomicBool,
}

impl PluginConnectionManager {
    /// Marks a sweep of unreset idle connections pending; false when one already is.
    pub(super) fn schedule_sweep(&self) -> bool {
        !self.sweep_pending.swap(true, Ordering::AcqRel)
    }

    /// The pending sweep runs now: a connection handed back unreset after this needs another.
    pub(super) fn sweep_started(&self) {
        self.sweep_pending.store(false, Ordering::Release);
    }

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
            session: SessionUse::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_nobody_waits_for_is_reset_behind_every_statement() {
        let now = Instant::now();
        let mut session = SessionUse::default();
        assert!(session.reset_behind_next(false, now));
        session.ran_without_reset(now);
        assert!(session.reset_behind_next(false, now));
    }

    #[test]
    fn statements_of_the_same_plugin_share_a_session_within_the_statement_bound() {
        let now = Instant::now();
        let mut session = SessionUse::default();
        for ran in 0..MAX_STATEMENTS_BETWEEN_RESETS - 1 {
            assert!(
                !session.reset_behind_next(true, now),
                "after {ran} statements"
            );
            session.ran_without_reset(now);
        }
        assert!(
            session.reset_behind_next(true, now),
            "the last statement the bound allows carries the reset behind it"
        );
        session.was_reset();
        assert!(!session.needs_reset());
        assert!(!session.reset_behind_next(true, now));
    }

    #[test]
    fn a_session_older_than_the_time_bound_is_reset_behind_the_next_statement() {
        let start = Instant::now();
        let mut session = SessionUse::default();
        session.ran_without_reset(start);
        assert!(session.needs_reset());
        assert!(!session.reset_behind_next(true, start + MAX_TIME_BETWEEN_RESETS / 2));
        assert!(!session.past_bounds(start + MAX_TIME_BETWEEN_RESETS / 2));
        assert!(session.reset_behind_next(true, start + MAX_TIME_BETWEEN_RESETS));
        assert!(
            session.past_bounds(start + MAX_TIME_BETWEEN_RESETS),
            "a statement that ran long is followed by the reset, waiters or not"
        );
    }
}
