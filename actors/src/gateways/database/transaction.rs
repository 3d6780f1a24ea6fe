//! Connections held inside a transaction: a plugin's `context.database.transaction` and the
//! batch of its migrations.
//!
//! The invariant: **no connection goes back to the pool inside a transaction.** A
//! [`HeldConnection`] is released to the pool only after its `COMMIT` or `ROLLBACK` and the
//! session reset both succeeded; in every other case (an error, a time limit, an unload, a
//! dropped future) it is closed, and PostgreSQL rolls back what the closed session had open.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use actix::{
    ActorFutureExt as _, AsyncContext as _, Context, Handler, Message, ResponseActFuture,
    ResponseFuture, SpawnHandle, WrapFuture as _,
};
use deadpool::managed::Object;
use tokio_postgres::NoTls;
use warden_runtime::transactions::TransactionOptions;
use warden_runtime::{Error, Result};

use super::connections::PluginConnectionManager;
use super::{clean_connection, database_error, DatabaseGateway};

/// The end of a transaction followed by the session reset (`SESSION_RESET`, as the test
/// below checks).
const COMMIT_AND_RESET: &str =
    "COMMIT; RESET ALL; SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;";
const ROLLBACK_AND_RESET: &str =
    "ROLLBACK; RESET ALL; SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;";

/// A pooled connection taken out for one transaction. Dropped without [`Self::finish`], it is
/// closed, never returned to the pool.
pub(super) struct HeldConnection(Option<Object<PluginConnectionManager>>);

impl HeldConnection {
    pub(super) fn new(connection: Object<PluginConnectionManager>) -> Self {
        HeldConnection(Some(connection))
    }

    /// Its client; only a connection already handed back has none.
    pub(super) fn client(&self) -> Result<&deadpool_postgres::ClientWrapper> {
        self.0
            .as_ref()
            .map(|connection| &connection.client)
            .ok_or_else(|| Error::Database {
                sqlstate: super::CONNECTION_FAILURE.to_owned(),
                message: "the transaction's connection was already handed back".to_owned(),
            })
    }

    /// The token that cancels what runs on it now.
    pub(super) fn cancel_token(&self) -> Option<tokio_postgres::CancelToken> {
        self.0
            .as_ref()
            .map(|connection| connection.client.cancel_token())
    }

    /// Ends the transaction with `COMMIT` or `ROLLBACK` and resets the session, in one message
    /// (PostgreSQL skips the reset when the end fails); the connection goes back to the pool
    /// only if both succeeded.
    pub(super) async fn finish(mut self, commit: bool) -> Result<()> {
        let end = if commit {
            COMMIT_AND_RESET
        } else {
            ROLLBACK_AND_RESET
        };
        let outcome = match self.client() {
            Ok(client) => client.batch_execute(end).await.map_err(database_error),
            Err(error) => Err(error),
        };
        if outcome.is_ok() {
            // Back to the pool: the transaction ended and the session is clean.
            drop(self.0.take());
        }
        outcome
    }
}

impl HeldConnection {
    /// The connection, for going back to the pool untouched.
    fn release(mut self) -> Option<Object<PluginConnectionManager>> {
        self.0.take()
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            // Closing the session is the rollback PostgreSQL does itself.
            drop(Object::take(connection));
        }
    }
}

/// One open `context.database.transaction`.
pub(super) struct OpenTransaction {
    /// `None` once it ended; statements queue here one at a time.
    connection: tokio::sync::Mutex<Option<HeldConnection>>,
    cancel: Option<tokio_postgres::CancelToken>,
    /// A statement in it failed: PostgreSQL has aborted it, so `COMMIT` would roll back.
    failed: Cell<bool>,
    /// Why it ended, once Warden ended it (time limit, unload).
    ended_by_warden: RefCell<Option<&'static str>>,
    /// The `BEGIN` not sent yet: it goes out in one pipeline with the first statement, which
    /// saves a round trip per transaction. A transaction without statements never sends it.
    begin: Cell<Option<&'static str>>,
}

impl OpenTransaction {
    pub(super) fn new(connection: HeldConnection, options: TransactionOptions) -> Self {
        let cancel = connection.cancel_token();
        OpenTransaction {
            connection: tokio::sync::Mutex::new(Some(connection)),
            cancel,
            failed: Cell::new(false),
            ended_by_warden: RefCell::new(None),
            begin: Cell::new(Some(options.begin_statement())),
        }
    }

    fn closed_error(&self) -> Error {
        let reason = self
            .ended_by_warden
            .borrow()
            .unwrap_or("it was committed or rolled back");
        Error::TransactionClosed {
            reason: reason.to_owned(),
        }
    }

    /// Runs `work` on the transaction's connection, after the statements before it.
    pub(super) async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&deadpool_postgres::ClientWrapper) -> Result<T>,
    ) -> Result<T> {
        let held = self.connection.lock().await;
        let Some(connection) = held.as_ref() else {
            return Err(self.closed_error());
        };
        let client = connection.client()?;
        let outcome = match self.begin.take() {
            // Sent first, so PostgreSQL runs it first. A `BEGIN` that fails means a broken
            // connection or a read-only server, on which the statement behind it fails too.
            Some(begin) => match futures::join!(client.batch_execute(begin), work(client)) {
                (Ok(()), outcome) => outcome,
                (Err(error), _) => Err(database_error(error)),
            },
            None => work(client).await,
        };
        // Only PostgreSQL's own errors abort the transaction; a value Warden could not convert
        // never reached the server.
        if matches!(outcome, Err(Error::Database { .. })) {
            self.failed.set(true);
        }
        outcome
    }

    /// Commits (or rolls back) at the plugin's request.
    pub(super) async fn finish(&self, commit: bool) -> Result<()> {
        let Some(connection) = self.connection.lock().await.take() else {
            return Err(self.closed_error());
        };
        if self.begin.get().is_some() {
            // Nothing was sent: the connection is as clean as it came out of the pool.
            drop(connection.release());
            return Ok(());
        }
        if commit && self.failed.get() {
            let _ = connection.finish(false).await;
            return Err(Error::Database {
                sqlstate: "25P02".to_owned(),
                message: "the transaction was rolled back: a statement in it failed, so it \
                          could not commit"
                    .to_owned(),
            });
        }
        connection.finish(commit).await
    }

    /// Ends it on Warden's side: cancels the statement running in it, then closes the
    /// connection, which rolls the transaction back.
    pub(super) async fn abandon(&self, reason: &'static str) {
        self.ended_by_warden.borrow_mut().get_or_insert(reason);
        if let Some(cancel) = &self.cancel {
            let _ = cancel.cancel_query(NoTls).await;
        }
        drop(self.connection.lock().await.take());
    }
}

/// The open transactions of one plugin, by the id its engine holds, each with the timer that
/// rolls it back at the time limit (cancelled when it ends first, so that finished
/// transactions leave no timer behind in the gateway's context).
#[derive(Default)]
pub(super) struct PluginTransactions {
    next_id: u64,
    /// How many times every open transaction was abandoned with its instance: a transaction
    /// still waiting for its connection when that happened belongs to the instance that is
    /// gone, and is not opened.
    abandonments: u64,
    open: HashMap<u64, (Rc<OpenTransaction>, Option<SpawnHandle>)>,
}

impl PluginTransactions {
    pub(super) fn insert(&mut self, transaction: OpenTransaction) -> u64 {
        self.next_id += 1;
        self.open.insert(self.next_id, (Rc::new(transaction), None));
        self.next_id
    }

    pub(super) fn set_deadline(&mut self, id: u64, timer: SpawnHandle) {
        if let Some(entry) = self.open.get_mut(&id) {
            entry.1 = Some(timer);
        }
    }

    pub(super) fn get(&self, id: u64) -> Result<Rc<OpenTransaction>> {
        self.open
            .get(&id)
            .map(|(transaction, _)| Rc::clone(transaction))
            .ok_or_else(|| Error::TransactionClosed {
                reason: "it was committed or rolled back, by the plugin or by Warden".to_owned(),
            })
    }

    /// Takes it out; its timer is cancelled in `context`.
    pub(super) fn remove(
        &mut self,
        id: u64,
        context: &mut Context<DatabaseGateway>,
    ) -> Option<Rc<OpenTransaction>> {
        let (transaction, timer) = self.open.remove(&id)?;
        if let Some(timer) = timer {
            context.cancel_future(timer);
        }
        Some(transaction)
    }

    pub(super) fn abandonments(&self) -> u64 {
        self.abandonments
    }

    /// Takes every one out, without touching timers (for a gateway that is stopping).
    pub(super) fn take_all(&mut self) -> Vec<Rc<OpenTransaction>> {
        self.open
            .drain()
            .map(|(_, (transaction, _))| transaction)
            .collect()
    }
}

/// Opens a transaction (`context.database.transaction`); answers its id. Warden rolls it back
/// itself once it has been open for the plugin's call time limit.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct BeginTransaction {
    pub options: TransactionOptions,
}

/// Commits or rolls back a transaction when the plugin's callback settled.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct EndTransaction {
    pub transaction: u64,
    pub commit: bool,
}

/// Rolls back every open transaction: the instance that began them is gone (unload, reload,
/// restart).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AbandonTransactions;

/// Why Warden ended a transaction the plugin had not ended, as the plugin's `tx` reports it.
const ABANDONED_AT_TIME_LIMIT: &str =
    "Warden rolled it back: it was open longer than the plugin's call time limit";
const ABANDONED_WITH_INSTANCE: &str =
    "Warden rolled it back: the plugin was unloaded, reloaded or restarted";

fn count_abandoned(plugin: &str, reason: &'static str) {
    tracing::warn!(plugin, reason, "an open transaction was rolled back");
    metrics::counter!("warden_database_transactions_abandoned_total", "plugin" => plugin.to_owned())
        .increment(1);
}

impl Handler<BeginTransaction> for DatabaseGateway {
    type Result = ResponseActFuture<Self, Result<u64>>;

    fn handle(&mut self, message: BeginTransaction, _: &mut Self::Context) -> Self::Result {
        let abandonments = self.transactions.abandonments();
        let opener = self.connection_opener();
        let limit = opener.access.settings().statement_timeout;
        let begin = async move {
            let connections = opener.open().await?;
            let deadline = tokio::time::Instant::now() + limit;
            let held = HeldConnection::new(clean_connection(&connections.pool, deadline).await?);
            Ok(OpenTransaction::new(held, message.options))
        };
        Box::pin(begin.into_actor(self).map(move |opened, gateway, context| {
            let opened = opened?;
            if gateway.transactions.abandonments() != abandonments {
                // Its instance is gone; the connection, which saw no BEGIN, is closed with it.
                return Err(Error::TransactionClosed {
                    reason: ABANDONED_WITH_INSTANCE.to_owned(),
                });
            }
            let id = gateway.transactions.insert(opened);
            let timer = context.run_later(limit, move |gateway, context| {
                if let Some(transaction) = gateway.transactions.remove(id, context) {
                    count_abandoned(&gateway.plugin, ABANDONED_AT_TIME_LIMIT);
                    context.spawn(
                        async move { transaction.abandon(ABANDONED_AT_TIME_LIMIT).await }
                            .into_actor(gateway),
                    );
                }
            });
            gateway.transactions.set_deadline(id, timer);
            Ok(id)
        }))
    }
}

impl Handler<EndTransaction> for DatabaseGateway {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, message: EndTransaction, context: &mut Self::Context) -> Self::Result {
        let transaction = self.transactions.remove(message.transaction, context);
        Box::pin(async move {
            match transaction {
                Some(transaction) => transaction.finish(message.commit).await,
                None => Err(Error::TransactionClosed {
                    reason: "Warden had already rolled it back".to_owned(),
                }),
            }
        })
    }
}

impl Handler<AbandonTransactions> for DatabaseGateway {
    type Result = ();

    fn handle(&mut self, _: AbandonTransactions, context: &mut Self::Context) {
        self.transactions.abandonments += 1;
        let ids: Vec<u64> = self.transactions.open.keys().copied().collect();
        let abandoned: Vec<_> = ids
            .into_iter()
            .filter_map(|id| self.transactions.remove(id, context))
            .collect();
        for transaction in abandoned {
            count_abandoned(&self.plugin, ABANDONED_WITH_INSTANCE);
            context.spawn(
                async move { transaction.abandon(ABANDONED_WITH_INSTANCE).await }.into_actor(self),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_a_transaction_resets_the_whole_session() {
        assert_eq!(
            COMMIT_AND_RESET,
            format!("COMMIT; {}", super::super::SESSION_RESET)
        );
        assert_eq!(
            ROLLBACK_AND_RESET,
            format!("ROLLBACK; {}", super::super::SESSION_RESET)
        );
    }
}
