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

mod connections;
mod migrations;
mod parameters;
mod roles;
mod rows;
mod settings;
mod statements;
mod transaction;

pub use migrations::{ApplyMigrations, MigrationRecord, MigrationReport, ReadMigrationRecords};
pub use settings::DatabaseSettings;
pub use transaction::{AbandonTransactions, BeginTransaction, EndTransaction};

use connections::{
    ConnectionError, PluginConnectionManager, PluginConnectionPool, IDLE_CONNECTION_LIFETIME,
    MAX_TIME_BETWEEN_RESETS,
};
#[cfg(test)]
use parameters::is_numeric_literal;
use parameters::{bind_parameters, shortened};
use roles::{PluginDatabaseAccess, PluginPool};
use rows::{raw_size, row_to_json};
use statements::{
    check_dropped_indexes, clean_connection, run_in_transaction, run_statement, ResultLimits,
};
use transaction::{OpenTransaction, PluginTransactions};

use std::borrow::Cow;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext as _, AsyncContext, Context, Handler, Message, ResponseFuture};
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
pub const SESSION_RESET: &str =
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
    /// How Warden's own connections connect, for one outside the pool (`LISTEN`).
    own_config: tokio_postgres::Config,
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
            own_config.clone(),
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
        Ok(DatabaseBackend {
            pool,
            own_config,
            plugins,
        })
    }

    /// Warden's own pool, for the state store.
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
    }

    /// How Warden's own connections connect: for a connection of its own outside the pool,
    /// such as one that waits for notifications.
    pub fn own_config(&self) -> &tokio_postgres::Config {
        &self.own_config
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
    /// The open transaction it runs in, or `None` for any of the plugin's connections.
    pub transaction: Option<u64>,
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
    /// The plugin's open transactions, each holding one of its connections.
    transactions: PluginTransactions,
    /// A gateway that only rehearses migrations (`POST /plugins/migrations/plan`): preparing
    /// its role leaves the grants of shared tables as they are.
    rehearsal: bool,
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

impl CheckedStatement {
    /// It alters, indexes or drops a shared table, which runs with the table lent to the
    /// plugin's role for the statement.
    fn changes_shared_tables(&self) -> bool {
        self.changes_schema && !self.shared_tables.is_empty()
    }

    /// Refuses what only runs on its own, outside a transaction (a migration batch included):
    /// lending a shared table takes a lock the transaction may already hold.
    fn check_runs_in_transaction(&self) -> Result<()> {
        if !self.changes_shared_tables() {
            return Ok(());
        }
        Err(Error::SqlNotAllowed {
            reason: format!(
                "the shape of shared table '{}' is changed outside migrations and transactions, with executeCommand",
                self.shared_tables.join("', '")
            ),
        })
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
            transactions: PluginTransactions::default(),
            rehearsal: false,
        }
    }

    /// A gateway for rehearsing `plugin`'s migrations with `grants` (a plan): it changes no
    /// grant of a shared table when it prepares the plugin's role.
    pub fn for_rehearsal(plugin: String, grants: ResourceGrants, backend: DatabaseBackend) -> Self {
        DatabaseGateway {
            rehearsal: true,
            ..Self::new(plugin, grants, backend)
        }
    }

    /// What a statement's future needs to open the plugin's connections if they are not open.
    fn connection_opener(&self) -> ConnectionOpener {
        ConnectionOpener {
            plugin: Arc::clone(&self.plugin),
            grants: Arc::clone(&self.grants),
            access: Arc::clone(&self.backend.plugins),
            connections: Arc::clone(&self.connections),
            rehearsal: self.rehearsal,
        }
    }

    /// Runs the guard (or recalls its earlier answer); a refusal is logged and counted.
    fn check(&mut self, sql: &str) -> Result<Arc<CheckedStatement>> {
        if let Some(checked) = self.checked.get(sql) {
            return Ok(Arc::clone(checked));
        }
        let checked = Arc::new(checked_statement(&self.plugin, &self.grants, sql)?);
        if self.checked.len() >= MAX_CHECKED_STATEMENTS {
            self.checked.clear();
        }
        self.checked.insert(sql.to_owned(), Arc::clone(&checked));
        Ok(checked)
    }
}

/// Runs the guard on one statement of `plugin`; a refusal is logged and counted.
fn checked_statement(plugin: &str, grants: &ResourceGrants, sql: &str) -> Result<CheckedStatement> {
    match guard_statement(plugin, sql, grants) {
        Ok(guarded) => Ok(CheckedStatement::new(guarded, grants)),
        Err(error) => {
            // A refused statement can be up to any size; the log keeps its start.
            let sql = shortened(sql, MAX_LOGGED_SQL_BYTES).unwrap_or(sql);
            tracing::warn!(plugin, sql, error = %error, "sql statement refused");
            metrics::counter!("warden_sql_denied_total", "plugin" => plugin.to_owned())
                .increment(1);
            Err(error)
        }
    }
}

impl Actor for DatabaseGateway {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        // Idle connections close, so that a quiet plugin holds none of the shared budget. The
        // interval would keep the actor alive for ever, so it also stops the gateway once no
        // address of it is left.
        context.run_interval(IDLE_CONNECTION_LIFETIME / 2, |gateway, context| {
            if !context.connected() {
                context.stop();
                return;
            }
            if let Some(connections) = gateway.connections.get() {
                connections
                    .pool
                    .retain(|_, metrics| metrics.last_used() < IDLE_CONNECTION_LIFETIME);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Open transactions close with their connections (PostgreSQL rolls them back), and idle
        // connections leave the plugin role's connection limit at once.
        drop(self.transactions.take_all());
        // Only a role's own pool: with roles off, every plugin shares one.
        if let Some(connections) = self.connections.get().filter(|pool| pool.role.is_some()) {
            connections.pool.close();
        }
    }
}

/// Closes the gateway's idle connections, so that the next version of its plugin, whose pool
/// logs in as the same role, finds the role's connection limit free while this one stays
/// ready to serve again (a refused reload restores it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseIdleConnections;

impl Handler<ReleaseIdleConnections> for DatabaseGateway {
    type Result = ();

    fn handle(&mut self, _: ReleaseIdleConnections, _: &mut Self::Context) {
        if let Some(connections) = self.connections.get().filter(|pool| pool.role.is_some()) {
            connections.pool.retain(|_, _| false);
        }
    }
}

/// Stops the gateway now: its plugin's version is gone (unloaded, replaced by a reload, refused
/// at load, or a plan that is over), so its connections are closed rather than left idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseDatabaseGateway;

impl Handler<CloseDatabaseGateway> for DatabaseGateway {
    type Result = ();

    fn handle(&mut self, _: CloseDatabaseGateway, context: &mut Self::Context) {
        context.stop();
    }
}

/// Opens a plugin's connections once, from any of its statements' futures.
struct ConnectionOpener {
    plugin: Arc<str>,
    grants: Arc<ResourceGrants>,
    access: Arc<PluginDatabaseAccess>,
    connections: Arc<OnceCell<PluginPool>>,
    rehearsal: bool,
}

impl ConnectionOpener {
    async fn open(&self) -> Result<PluginPool> {
        self.connections
            .get_or_try_init(|| {
                self.access
                    .prepare(&self.plugin, &self.grants, self.rehearsal)
            })
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
            transaction,
        } = message;
        let checked = match self.check(&sql) {
            Ok(checked) => checked,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        // The future owns what it needs, so the actor takes its next message at once and the
        // statements of one plugin run concurrently on its pool.
        let opener = self.connection_opener();
        let settings = opener.access.settings();
        let limits = ResultLimits {
            max_rows: settings.max_rows,
            max_bytes: settings.max_result_bytes,
        };
        let deadline = tokio::time::Instant::now() + settings.statement_timeout;
        if let Some(id) = transaction {
            let transaction = match self.transactions.get(id) {
                Ok(transaction) => transaction,
                Err(error) => return Box::pin(std::future::ready(Err(error))),
            };
            return Box::pin(async move {
                run_in_transaction(
                    &transaction,
                    &checked,
                    &opener,
                    &parameters,
                    expect,
                    limits,
                    deadline,
                )
                .await
            });
        }
        Box::pin(async move {
            let connections = opener.open().await?;
            if !checked.dropped_indexes.is_empty() {
                let connection = clean_connection(&connections.pool, deadline).await?;
                check_dropped_indexes(&connection.client, &checked, &opener.grants).await?;
            }
            let changes_shared_tables = checked.changes_shared_tables();
            if let (true, Some(role)) = (changes_shared_tables, &connections.role) {
                opener
                    .access
                    .lend_shared_tables(role, &checked.shared_tables)
                    .await?;
            }
            let outcome = run_statement(
                &connections.pool,
                connections.role.is_some(),
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
