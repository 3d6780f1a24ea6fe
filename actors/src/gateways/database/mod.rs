//! The database gateway: checks and rewrites every statement, then runs it on the shared pool.
//!
//! Parameters arrive as JSON and are converted to the type PostgreSQL declared for each `$n`
//! when the statement was prepared; rows leave as JSON objects. The mapping, both ways:
//!
//! | PostgreSQL | parameter accepts | result |
//! | --- | --- | --- |
//! | `bool` | boolean, `"true"`/`"false"` | boolean |
//! | `int2`, `int4`, `int8`, `oid` | integral number, integer string | number |
//! | `float4`, `float8` | number, numeric string (`"NaN"`, `"Infinity"`) | number; `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `numeric` | number, numeric string | **string**, exact (a JSON number would lose digits) |
//! | `text`, `varchar`, `bpchar`, `name` | string; numbers and booleans stringified, objects and arrays as JSON text | string |
//! | `json`, `jsonb` | any JSON value; a string holding JSON text is that JSON (as node-postgres sent it), any other string a JSON string | the JSON value |
//! | `uuid` | string | string |
//! | `timestamptz` | RFC 3339 string | RFC 3339 in UTC with `Z` |
//! | `timestamp` | ISO 8601 string without offset | ISO 8601 without offset |
//! | `date`, `time` | `YYYY-MM-DD`, `HH:MM:SS[.f]` | the same |
//! | `bytea` | base64 string | base64 string |
//! | arrays of the above | JSON array (one dimension), or an array literal string | JSON array (nested for more dimensions) |
//! | enums, domains | as their label / base type | as their label / base type |
//! | `interval`, `inet`, `cidr`, `timetz`, `"char"` | string in PostgreSQL's text form | PostgreSQL's text form |
//!
//! `null` is SQL `NULL` for every type. A string Warden does not parse itself for a date/time,
//! numeric or other type (for example `"infinity"`, or a timestamp with a time zone name) is sent
//! to PostgreSQL in text form, so PostgreSQL's own input rules apply. A result column of a type
//! with no JSON form here (`money`, geometric types, ranges, composites, …) is an
//! [`Error::InvalidValue`] naming the column and type; cast it in SQL (`::text`).

mod parameters;
mod roles;
mod rows;

pub use roles::DatabaseSettings;

#[cfg(test)]
use parameters::is_numeric_literal;
use parameters::{bind_parameters, shortened};
use roles::{
    ConnectionError, PluginConnectionManager, PluginConnectionPool, PluginDatabaseAccess,
    PluginPool, IDLE_CONNECTION_LIFETIME,
};
use rows::{raw_size, row_to_json};

use std::borrow::Cow;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseFuture};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta, Utc};
use deadpool_postgres::ClientWrapper;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::TryStreamExt as _;
use rust_decimal::Decimal;
use serde_json::{Map, Number, Value};
use tokio::sync::OnceCell;
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type};
use tokio_postgres::{Column, NoTls, Row, Statement};
use uuid::Uuid;
use warden_runtime::access::AccessLevel;
use warden_runtime::resources::{ResourceGrants, ResourceKind};
use warden_runtime::sql_guard::{guard_statement, GuardedStatement};
use warden_runtime::{Error, Result};

/// How long `check` waits for `SELECT 1`, so that `/ready` answers promptly when PostgreSQL
/// hangs.
const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// How long opening one connection may take when the URL does not say
/// (`connect_timeout`): without a bound, an unreachable host would hold a caller for minutes.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many checked statements one gateway remembers. Plugins normally use a fixed set of
/// statements; one that builds SQL text per call would otherwise grow the map without end.
const MAX_CHECKED_STATEMENTS: usize = 1_024;

/// How many prepared statements one pooled connection keeps (server-side memory, per
/// connection); past it the connection's cache starts over.
const MAX_PREPARED_PER_CONNECTION: usize = 2_048;

/// How much of a refused statement the warning quotes.
const MAX_LOGGED_SQL_BYTES: usize = 2_048;

/// The SQLSTATE given for failures without one of PostgreSQL's own (pool exhausted by errors,
/// connection refused or lost): `connection_failure`.
pub(super) const CONNECTION_FAILURE: &str = "08006";

/// Resets what a plugin's session could hold past its statement: settings (`RESET ALL`, which
/// includes `SET ROLE`), advisory locks (the one state that reaches other sessions), cursors and
/// listeners. The rest of deadpool's `RecyclingMethod::Clean` is left out because the role's
/// walls make it moot, and each statement more costs the server on every plugin statement:
/// `SET SESSION AUTHORIZATION` needs a superuser session user, temporary objects need the
/// `TEMPORARY` right the plugin roles do not have, and sequence state is the session's own
/// `currval` cache. Prepared statements are Warden's cache; SQL `PREPARE` is refused by the
/// guard, and anything a statement could prepare stays in the plugin's own pool.
pub(super) const SESSION_RESET: &str =
    "RESET ALL; SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;";

/// The SQLSTATE of a statement cancelled at the plugin's call time limit: `query_canceled`.
const QUERY_CANCELED: &str = "57014";

/// The message PostgreSQL gives when a prepared statement's result columns changed under it
/// (after `ALTER TABLE`, or a table dropped and created again by another connection).
const STALE_PLAN_MESSAGE: &str = "cached plan must not change result type";

type BoxError = Box<dyn StdError + Sync + Send>;

/// Warden's PostgreSQL: its own pool (the state store; never a plugin's statement) and the
/// plugins' access (a role and a pool per plugin, see [`roles`]).
#[derive(Clone)]
pub struct DatabaseBackend {
    pool: deadpool_postgres::Pool,
    plugins: Arc<PluginDatabaseAccess>,
}

impl DatabaseBackend {
    /// A pool of `max_size` for `url`, with the default settings otherwise (not connected until
    /// first use; failures surface per call).
    pub fn connect(url: &str, max_size: usize) -> std::result::Result<Self, String> {
        Self::connect_with(url, DatabaseSettings::with_pool_size(max_size))
    }

    /// A backend for `url` with `settings`.
    pub fn connect_with(
        url: &str,
        settings: DatabaseSettings,
    ) -> std::result::Result<Self, String> {
        if settings.pool_size == 0 {
            return Err("the database pool needs at least one connection".into());
        }
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|error| format!("invalid database url: {error}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        // Plugins' tables live in public; a user named like Warden's schema `warden` would
        // otherwise resolve (and create) unqualified names there first.
        let mut own_config = config.clone();
        own_config.options("-c search_path=public");
        let manager = Manager::from_config(
            own_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .build()
            .map_err(|error| format!("cannot build the database pool: {error}"))?;
        let plugins = Arc::new(PluginDatabaseAccess::new(pool.clone(), config, settings));
        Ok(DatabaseBackend { pool, plugins })
    }

    /// Warden's own pool, for the state store.
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
    }

    /// The role `plugin`'s statements run as, once roles are known to be on.
    pub fn role_of(&self, plugin: &str) -> Option<String> {
        self.plugins.role_of(plugin)
    }

    /// Whether PostgreSQL answers `SELECT 1` within a second.
    pub async fn check(&self) -> bool {
        let probe = async {
            let client = self.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(
            tokio::time::timeout(READINESS_TIMEOUT, probe).await,
            Ok(Some(_))
        )
    }
}

/// What a statement is expected to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Rows (`executeQuery`).
    Rows,
    /// A count of affected rows (`executeCommand`).
    Affected,
}

/// What a statement returned.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlOutcome {
    /// Rows as JSON objects keyed by column name.
    Rows(Vec<Value>),
    /// Rows affected.
    Affected(u64),
}

/// Runs one statement for the plugin (after the SQL guard).
#[derive(Message)]
#[rtype(result = "Result<SqlOutcome>")]
pub struct ExecuteSql {
    /// The statement as the plugin wrote it.
    pub sql: String,
    /// `$1, $2, …` as JSON.
    pub parameters: Vec<Value>,
    /// Rows or a count.
    pub expect: Expect,
}

/// Prepares the plugin's database access before its `initialize` runs (its role, its tables,
/// its grants on shared tables); answers the role its statements run as (`None` with roles off).
#[derive(Message)]
#[rtype(result = "Result<Option<String>>")]
pub struct PrepareDatabase;

/// One plugin's database gateway.
pub struct DatabaseGateway {
    plugin: Arc<str>,
    grants: Arc<ResourceGrants>,
    backend: DatabaseBackend,
    /// The plugin's connections, opened at the first statement or at [`PrepareDatabase`].
    connections: Arc<OnceCell<PluginPool>>,
    /// What the guard made of each statement text this gateway has seen. The guard is a pure
    /// function of the plugin, the text and the grants, all fixed for the gateway's life, so
    /// its answer can be reused; parsing again on every call would cost more CPU than the
    /// round trip to PostgreSQL on a small machine. Refusals are not kept, so every refused
    /// call is logged and counted.
    checked: HashMap<String, Arc<CheckedStatement>>,
}

/// A statement that passed the guard.
#[derive(Debug)]
struct CheckedStatement {
    /// The rewritten SQL, with physical table names.
    sql: String,
    /// `CREATE`, `ALTER` or `DROP`: not worth a cached prepared statement, and prepared
    /// statements of every connection may describe the old shape afterwards.
    changes_schema: bool,
    /// Physical names of the shared tables it touches, whose grants follow a schema change.
    shared_tables: Vec<String>,
    /// Physical names of the indexes it drops, whose tables must be held at `owner`.
    dropped_indexes: Vec<String>,
}

impl CheckedStatement {
    fn new(guarded: GuardedStatement, grants: &ResourceGrants) -> Self {
        let keyword = guarded
            .sql
            .split_ascii_whitespace()
            .next()
            .unwrap_or_default();
        let changes_schema = ["CREATE", "ALTER", "DROP"]
            .iter()
            .any(|schema_keyword| keyword.eq_ignore_ascii_case(schema_keyword));
        let shared_tables = guarded
            .tables
            .iter()
            .filter_map(|table| grants.grant(ResourceKind::Table, table))
            .filter(|grant| grant.shared)
            .map(|grant| grant.physical.clone())
            .collect();
        CheckedStatement {
            sql: guarded.sql,
            changes_schema,
            shared_tables,
            dropped_indexes: guarded.dropped_indexes,
        }
    }
}

impl DatabaseGateway {
    /// A gateway for `plugin` holding `grants`.
    pub fn new(plugin: String, grants: ResourceGrants, backend: DatabaseBackend) -> Self {
        DatabaseGateway {
            plugin: plugin.into(),
            grants: Arc::new(grants),
            backend,
            connections: Arc::new(OnceCell::new()),
            checked: HashMap::new(),
        }
    }

    /// What a statement's future needs to open the plugin's connections if they are not open.
    fn connection_opener(&self) -> ConnectionOpener {
        ConnectionOpener {
            plugin: Arc::clone(&self.plugin),
            grants: Arc::clone(&self.grants),
            access: Arc::clone(&self.backend.plugins),
            connections: Arc::clone(&self.connections),
        }
    }

    /// Runs the guard (or recalls its earlier answer); a refusal is logged and counted.
    fn check(&mut self, sql: &str) -> Result<Arc<CheckedStatement>> {
        if let Some(checked) = self.checked.get(sql) {
            return Ok(Arc::clone(checked));
        }
        match guard_statement(&self.plugin, sql, &self.grants) {
            Ok(guarded) => {
                if self.checked.len() >= MAX_CHECKED_STATEMENTS {
                    self.checked.clear();
                }
                let checked = Arc::new(CheckedStatement::new(guarded, &self.grants));
                self.checked.insert(sql.to_owned(), Arc::clone(&checked));
                Ok(checked)
            }
            Err(error) => {
                // A refused statement can be up to any size; the log keeps its start.
                let sql = shortened(sql, MAX_LOGGED_SQL_BYTES).unwrap_or(sql);
                tracing::warn!(plugin = %self.plugin, sql, error = %error, "sql statement refused");
                metrics::counter!("warden_sql_denied_total", "plugin" => self.plugin.to_string())
                    .increment(1);
                Err(error)
            }
        }
    }
}

impl Actor for DatabaseGateway {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        // Idle connections close, so that a quiet plugin holds none of the shared budget.
        context.run_interval(IDLE_CONNECTION_LIFETIME / 2, |gateway, _| {
            if let Some(connections) = gateway.connections.get() {
                connections
                    .pool
                    .retain(|_, metrics| metrics.last_used() < IDLE_CONNECTION_LIFETIME);
            }
        });
    }
}

/// Opens a plugin's connections once, from any of its statements' futures.
struct ConnectionOpener {
    plugin: Arc<str>,
    grants: Arc<ResourceGrants>,
    access: Arc<PluginDatabaseAccess>,
    connections: Arc<OnceCell<PluginPool>>,
}

impl ConnectionOpener {
    async fn open(&self) -> Result<PluginPool> {
        self.connections
            .get_or_try_init(|| self.access.prepare(&self.plugin, &self.grants))
            .await
            .cloned()
    }
}

impl Handler<PrepareDatabase> for DatabaseGateway {
    type Result = ResponseFuture<Result<Option<String>>>;

    fn handle(&mut self, _: PrepareDatabase, _: &mut Self::Context) -> Self::Result {
        let opener = self.connection_opener();
        Box::pin(async move { opener.open().await.map(|connections| connections.role) })
    }
}

impl Handler<ExecuteSql> for DatabaseGateway {
    type Result = ResponseFuture<Result<SqlOutcome>>;

    fn handle(&mut self, message: ExecuteSql, _: &mut Self::Context) -> Self::Result {
        let ExecuteSql {
            sql,
            parameters,
            expect,
        } = message;
        let checked = match self.check(&sql) {
            Ok(checked) => checked,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        // The future owns what it needs, so the actor takes its next message at once and the
        // statements of one plugin run concurrently on its pool.
        let opener = self.connection_opener();
        Box::pin(async move {
            let connections = opener.open().await?;
            let settings = opener.access.settings();
            let limits = ResultLimits {
                max_rows: settings.max_rows,
                max_bytes: settings.max_result_bytes,
            };
            let deadline = tokio::time::Instant::now() + settings.statement_timeout;
            check_dropped_indexes(&connections.pool, &checked, &opener.grants, deadline).await?;
            let changes_shared_tables = checked.changes_schema && !checked.shared_tables.is_empty();
            if let (true, Some(role)) = (changes_shared_tables, &connections.role) {
                opener
                    .access
                    .lend_shared_tables(role, &checked.shared_tables)
                    .await?;
            }
            let outcome = run_statement(
                &connections.pool,
                &checked,
                &parameters,
                expect,
                limits,
                deadline,
            )
            .await;
            if changes_shared_tables {
                for table in &checked.shared_tables {
                    opener.access.shared_table_changed(table).await?;
                }
            }
            outcome
        })
    }
}

/// The most a query may return to a plugin.
#[derive(Debug, Clone, Copy)]
struct ResultLimits {
    max_rows: usize,
    max_bytes: usize,
}

/// Gets one of the plugin's connections before `deadline`.
async fn connection(
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

fn statement_timed_out(doing: &str) -> Error {
    Error::Database {
        sqlstate: QUERY_CANCELED.to_owned(),
        message: format!("canceling statement: the plugin's call time limit passed while {doing}"),
    }
}

/// `DROP INDEX` needs `owner` on the index's table, which only the catalog knows.
async fn check_dropped_indexes(
    pool: &PluginConnectionPool,
    checked: &CheckedStatement,
    grants: &ResourceGrants,
    deadline: tokio::time::Instant,
) -> Result<()> {
    if checked.dropped_indexes.is_empty() {
        return Ok(());
    }
    let connection = connection(pool, deadline).await?;
    for index in &checked.dropped_indexes {
        let table: Option<String> = connection
            .client
            .query_opt(
                "SELECT tables.relname FROM pg_index ix \
                 JOIN pg_class indexes ON indexes.oid = ix.indexrelid \
                 JOIN pg_class tables ON tables.oid = ix.indrelid \
                 WHERE indexes.relname = $1 AND indexes.relnamespace = 'public'::regnamespace",
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
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

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

/// Runs a checked statement on one of the plugin's connections, cancelled at `deadline`.
async fn run_statement(
    pool: &PluginConnectionPool,
    checked: &CheckedStatement,
    parameters: &[Value],
    expect: Expect,
    limits: ResultLimits,
    deadline: tokio::time::Instant,
) -> Result<SqlOutcome> {
    let connection = connection(pool, deadline).await?;
    let client = &connection.client;
    let cancel = CancelOnDrop(Some(client.cancel_token()));
    let work = async {
        let statement = prepare(client, checked).await?;
        match run_prepared(client, &statement, parameters, expect, limits).await {
            Err(error) if is_stale_plan(&error) => {
                // PostgreSQL refused before running anything, so running again is safe.
                drop(statement);
                client.statement_cache.remove(&checked.sql, &[]);
                let statement = prepare(client, checked).await?;
                run_prepared(client, &statement, parameters, expect, limits).await
            }
            outcome => outcome,
        }
    };
    // The session reset is sent right behind the statement on the same connection (tokio-postgres
    // pipelines them), so the connection goes back to the pool clean without a round trip of its
    // own at the next checkout.
    let with_reset = async { futures::join!(work, client.batch_execute(SESSION_RESET)) };
    let outcome = match tokio::time::timeout_at(deadline, with_reset).await {
        Ok((outcome, reset)) => {
            cancel.finished();
            if let Err(error) = reset {
                tracing::warn!(%error, "a plugin connection could not be reset; it is closed");
                let _ = deadpool::managed::Object::take(connection);
                return outcome;
            }
            outcome
        }
        Err(_) => {
            // Dropping `cancel` cancels the statement on the server; the connection, whose
            // reset may not have run, is closed rather than reused.
            let _ = deadpool::managed::Object::take(connection);
            return Err(statement_timed_out("the statement ran"));
        }
    }?;
    if checked.changes_schema {
        pool.manager().clear_statement_caches();
    }
    Ok(outcome)
}

async fn prepare(client: &ClientWrapper, checked: &CheckedStatement) -> Result<Statement> {
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

async fn run_prepared(
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

fn is_stale_plan(error: &Error) -> bool {
    matches!(error, Error::Database { sqlstate, message }
        if sqlstate == "0A000" && message.starts_with(STALE_PLAN_MESSAGE))
}

/// PostgreSQL's own errors keep their SQLSTATE; anything else is a connection failure.
pub(super) fn database_error(error: tokio_postgres::Error) -> Error {
    match error.as_db_error() {
        Some(database) => Error::Database {
            sqlstate: database.code().code().to_owned(),
            message: database.message().to_owned(),
        },
        None => Error::Database {
            sqlstate: CONNECTION_FAILURE.to_owned(),
            message: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
