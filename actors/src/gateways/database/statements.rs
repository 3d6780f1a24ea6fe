//! Running one checked statement: on any of the plugin's connections (with the session reset
//! pipelined behind it, or within the bounds of
//! [`SessionUse`](super::connections::SessionUse) after it) or inside an open
//! transaction, cancelled at the call time limit, with results bounded in rows and bytes as
//! they stream in.

use super::*;

/// Runs a checked statement inside an open transaction, after the statements before it.
pub(super) async fn run_in_transaction(
    transaction: &OpenTransaction,
    checked: &CheckedStatement,
    opener: &ConnectionOpener,
    parameters: &[Value],
    expect: Expect,
    limits: ResultLimits,
    deadline: tokio::time::Instant,
) -> Result<SqlOutcome> {
    checked.check_runs_in_transaction()?;
    let outcome = transaction
        .run(async |client| {
            check_dropped_indexes(client, checked, &opener.grants).await?;
            let cancel = CancelOnDrop(Some(client.cancel_token()));
            match tokio::time::timeout_at(
                deadline,
                run_checked(client, checked, parameters, expect, limits),
            )
            .await
            {
                Ok(outcome) => {
                    cancel.finished();
                    outcome
                }
                Err(_) => Err(statement_timed_out("the statement ran")),
            }
        })
        .await;
    if checked.changes_schema {
        if let Some(connections) = opener.connections.get() {
            connections.pool.manager().clear_statement_caches();
        }
    }
    outcome
}

/// The most a query may return to a plugin.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResultLimits {
    pub(super) max_rows: usize,
    pub(super) max_bytes: usize,
}

/// Gets one of the plugin's connections before `deadline`.
pub(super) async fn connection(
    pool: &PluginConnectionPool,
    deadline: tokio::time::Instant,
) -> Result<deadpool::managed::Object<PluginConnectionManager>> {
    match tokio::time::timeout_at(deadline, pool.get()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(deadpool::managed::PoolError::Backend(ConnectionError::Postgres(error)))) => {
            Err(database_error(error))
        }
        Ok(Err(error)) => Err(Error::Database {
            sqlstate: CONNECTION_FAILURE.to_owned(),
            message: format!("cannot get a database connection: {error}"),
        }),
        Err(_) => Err(statement_timed_out(
            "waiting for one of the plugin's connections",
        )),
    }
}

pub(super) fn statement_timed_out(doing: &str) -> Error {
    Error::Database {
        sqlstate: QUERY_CANCELED.to_owned(),
        message: format!("canceling statement: the plugin's call time limit passed while {doing}"),
    }
}

/// `DROP INDEX` needs `owner` on the index's table, which only the catalog knows.
pub(super) async fn check_dropped_indexes(
    client: &ClientWrapper,
    checked: &CheckedStatement,
    grants: &ResourceGrants,
) -> Result<()> {
    for index in &checked.dropped_indexes {
        let table: Option<String> = client
            .query_opt(
                // Qualified, so that no session setting (`search_path`) can redirect the lookup.
                "SELECT tables.relname FROM pg_catalog.pg_index ix \
                 JOIN pg_catalog.pg_class indexes ON indexes.oid = ix.indexrelid \
                 JOIN pg_catalog.pg_class tables ON tables.oid = ix.indrelid \
                 WHERE indexes.relname = $1 \
                 AND indexes.relnamespace = 'public'::pg_catalog.regnamespace",
                &[index],
            )
            .await
            .map_err(database_error)?
            .map(|row| row.get(0));
        let Some(table) = table else {
            // No such index: PostgreSQL says so when the statement runs.
            continue;
        };
        match grants
            .grants(ResourceKind::Table)
            .iter()
            .find(|grant| grant.physical == table)
        {
            Some(grant) => grant.require(ResourceKind::Table, AccessLevel::Owner)?,
            None => {
                return Err(Error::SqlNotAllowed {
                    reason: format!("index '{index}' belongs to a table the plugin is not granted"),
                })
            }
        }
    }
    Ok(())
}

/// Cancels the statement on the server when its future is dropped before it finished (the
/// call timed out, the plugin was unloaded), so that no backend keeps running it.
pub(super) struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl CancelOnDrop {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(token), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = token.cancel_query(NoTls).await;
            });
        }
    }
}

/// A pooled plugin connection, checked out.
type PooledConnection = deadpool::managed::Object<PluginConnectionManager>;

/// Gets one of the plugin's connections before `deadline`, its session reset if a statement
/// ran on it since the last reset: what runs next relies on a clean session (a transaction, a
/// migration, Warden's own catalog lookup).
pub(super) async fn clean_connection(
    pool: &PluginConnectionPool,
    deadline: tokio::time::Instant,
) -> Result<PooledConnection> {
    // A connection whose reset fails is closed; another one (a new one if need be) serves.
    let mut attempts_left = 2;
    loop {
        let checked_out = connection(pool, deadline).await?;
        if !checked_out.session.needs_reset() {
            return Ok(checked_out);
        }
        attempts_left -= 1;
        match reset_on_its_own(checked_out, deadline).await {
            Err(_) if attempts_left > 0 => continue,
            reset => return reset,
        }
    }
}

/// Resets a connection's session on a round of its own. A connection whose reset failed or
/// did not finish by `deadline` is closed rather than reused.
async fn reset_on_its_own(
    mut connection: PooledConnection,
    deadline: tokio::time::Instant,
) -> Result<PooledConnection> {
    let reset = tokio::time::timeout_at(deadline, connection.client.batch_execute(SESSION_RESET));
    match reset.await {
        Ok(Ok(())) => {
            connection.session.was_reset();
            Ok(connection)
        }
        outcome => {
            tracing::warn!(
                ?outcome,
                "a plugin connection could not be reset; it is closed"
            );
            let _ = deadpool::managed::Object::take(connection);
            Err(Error::Database {
                sqlstate: CONNECTION_FAILURE.to_owned(),
                message: "a database connection could not be reset".to_owned(),
            })
        }
    }
}

/// Runs a checked statement on one of the plugin's connections, cancelled at `deadline`.
///
/// The session reset is sent right behind the statement on the same connection (tokio-postgres
/// pipelines them), so the connection goes back to the pool clean without a round trip of its
/// own at the next checkout. On the plugin's own pool (`own_pool`), while every one of its
/// connections is open and statements of the plugin wait for one, the reset may be left out
/// within the bounds of [`SessionUse`](super::connections::SessionUse); a connection past them,
/// or that nobody waits for, is then reset on a round of its own before it goes back.
pub(super) async fn run_statement(
    pool: &PluginConnectionPool,
    own_pool: bool,
    checked: &CheckedStatement,
    parameters: &[Value],
    expect: Expect,
    limits: ResultLimits,
    deadline: tokio::time::Instant,
) -> Result<SqlOutcome> {
    let mut connection = connection(pool, deadline).await?;
    let saturated = || own_pool && pool_is_saturated(pool);
    let started = tokio::time::Instant::now();
    let reset_behind = connection.session.reset_behind_next(saturated(), started);
    let cancel = CancelOnDrop(Some(connection.client.cancel_token()));
    let run = run_then_reset(
        &connection.client,
        checked,
        parameters,
        (expect, limits),
        reset_behind,
    );
    let (outcome, reset) = match tokio::time::timeout_at(deadline, run).await {
        Ok(ran) => ran,
        Err(_) => {
            // Dropping `cancel` cancels the statement on the server; the connection, whose
            // reset may not have run, is closed rather than reused.
            let _ = deadpool::managed::Object::take(connection);
            return Err(statement_timed_out("the statement ran"));
        }
    };
    cancel.finished();
    match reset {
        Some(Ok(())) => connection.session.was_reset(),
        Some(Err(error)) => {
            tracing::warn!(%error, "a plugin connection could not be reset; it is closed");
            let _ = deadpool::managed::Object::take(connection);
            return outcome;
        }
        None => connection.session.ran_without_reset(started),
    }
    if connection.session.needs_reset() {
        let now = tokio::time::Instant::now();
        if connection.session.past_bounds(now) || !saturated() {
            // A connection nobody takes straight from here is reset before it sits idle (one
            // that cannot be reset is closed; the statement's outcome stands).
            drop(reset_on_its_own(connection, deadline).await);
        } else {
            drop(connection);
            // Should the waiter give up or be served by another connection, this one would sit
            // idle with its session as the statement left it: it is closed then.
            close_unreset_idle_connections_soon(pool);
        }
    }
    if outcome.is_ok() && checked.changes_schema {
        pool.manager().clear_statement_caches();
    }
    outcome
}

/// Every connection of the pool is open and statements wait for one of them, so a connection
/// handed back goes to one of those statements rather than sitting idle (a statement still
/// opening a connection of its own is counted as waiting too, hence the size).
fn pool_is_saturated(pool: &PluginConnectionPool) -> bool {
    let status = pool.status();
    status.size >= status.max_size && status.waiting > 0
}

/// A moment from now (the longest a session may go unreset), closes the pool's idle
/// connections whose session was not reset. One such sweep is pending per pool at a time.
fn close_unreset_idle_connections_soon(pool: &PluginConnectionPool) {
    if !pool.manager().schedule_sweep() {
        return;
    }
    let pool = pool.weak();
    tokio::spawn(async move {
        tokio::time::sleep(MAX_TIME_BETWEEN_RESETS).await;
        if let Some(pool) = pool.upgrade() {
            pool.manager().sweep_started();
            pool.retain(|connection, _| !connection.session.needs_reset());
        }
    });
}

/// Runs a checked statement on `client`, with the session reset behind it when `reset_behind`;
/// answers the statement's outcome and the reset's (`None`: the session was not reset after
/// the statement).
///
/// The statement is prepared before the reset is sent: preparing a statement that is not in the
/// cache is a round of its own, and the reset must reach the server after the statement's
/// execution, not between its preparation and its execution.
async fn run_then_reset(
    client: &ClientWrapper,
    checked: &CheckedStatement,
    parameters: &[Value],
    (expect, limits): (Expect, ResultLimits),
    reset_behind: bool,
) -> (
    Result<SqlOutcome>,
    Option<std::result::Result<(), tokio_postgres::Error>>,
) {
    if !reset_behind {
        return (
            run_checked(client, checked, parameters, expect, limits).await,
            None,
        );
    }
    let statement = match prepare(client, checked).await {
        Ok(statement) => statement,
        Err(error) => return (Err(error), None),
    };
    let (outcome, reset) = futures::join!(
        run_prepared(client, &statement, parameters, expect, limits),
        client.batch_execute(SESSION_RESET)
    );
    match outcome {
        Err(error) if is_stale_plan(&error) => {
            // The run again comes after the reset, so the session counts as not reset.
            drop(statement);
            let again = run_again_after_stale_plan(client, checked, parameters, expect, limits);
            (again.await, reset.err().map(Err))
        }
        outcome => (outcome, Some(reset)),
    }
}

/// Prepares (or recalls) a checked statement and runs it on `client`.
pub(super) async fn run_checked(
    client: &ClientWrapper,
    checked: &CheckedStatement,
    parameters: &[Value],
    expect: Expect,
    limits: ResultLimits,
) -> Result<SqlOutcome> {
    let statement = prepare(client, checked).await?;
    match run_prepared(client, &statement, parameters, expect, limits).await {
        Err(error) if is_stale_plan(&error) => {
            drop(statement);
            run_again_after_stale_plan(client, checked, parameters, expect, limits).await
        }
        outcome => outcome,
    }
}

/// Prepares a statement whose cached plan PostgreSQL refused as stale, and runs it again:
/// PostgreSQL refused before running anything, so running again is safe.
async fn run_again_after_stale_plan(
    client: &ClientWrapper,
    checked: &CheckedStatement,
    parameters: &[Value],
    expect: Expect,
    limits: ResultLimits,
) -> Result<SqlOutcome> {
    client.statement_cache.remove(&checked.sql, &[]);
    let statement = prepare(client, checked).await?;
    run_prepared(client, &statement, parameters, expect, limits).await
}

pub(super) async fn prepare(
    client: &ClientWrapper,
    checked: &CheckedStatement,
) -> Result<Statement> {
    if checked.changes_schema {
        return client.prepare(&checked.sql).await.map_err(database_error);
    }
    let statement = client
        .prepare_cached(&checked.sql)
        .await
        .map_err(database_error)?;
    if client.statement_cache.size() > MAX_PREPARED_PER_CONNECTION {
        client.statement_cache.clear();
    }
    Ok(statement)
}

pub(super) async fn run_prepared(
    client: &ClientWrapper,
    statement: &Statement,
    parameters: &[Value],
    expect: Expect,
    limits: ResultLimits,
) -> Result<SqlOutcome> {
    let parameters = bind_parameters(statement.params(), parameters)?;
    match expect {
        Expect::Affected => client
            .execute_raw(statement, parameters.iter())
            .await
            .map(SqlOutcome::Affected)
            .map_err(database_error),
        Expect::Rows => {
            let stream = client
                .query_raw(statement, parameters.iter())
                .await
                .map_err(database_error)?;
            let mut stream = std::pin::pin!(stream);
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            // Counted as rows arrive, so that a large result is refused before it is held.
            while let Some(row) = stream.try_next().await.map_err(database_error)? {
                bytes = bytes.saturating_add(raw_size(&row));
                if rows.len() >= limits.max_rows {
                    return Err(Error::ResultTooLarge {
                        limit: format!("{} rows (WARDEN_DATABASE_MAX_ROWS)", limits.max_rows),
                    });
                }
                if bytes > limits.max_bytes {
                    return Err(Error::ResultTooLarge {
                        limit: format!(
                            "{} bytes (WARDEN_DATABASE_MAX_RESULT_BYTES)",
                            limits.max_bytes
                        ),
                    });
                }
                rows.push(row_to_json(&row)?);
            }
            Ok(SqlOutcome::Rows(rows))
        }
    }
}

pub(super) fn is_stale_plan(error: &Error) -> bool {
    matches!(error, Error::Database { sqlstate, message }
        if sqlstate == "0A000" && message.starts_with(STALE_PLAN_MESSAGE))
}
