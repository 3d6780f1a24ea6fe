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

use std::borrow::Cow;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::TryStreamExt as _;
use rust_decimal::Decimal;
use serde_json::{Map, Number, Value};
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type};
use tokio_postgres::{Column, NoTls, Row, Statement};
use uuid::Uuid;
use warden_runtime::resources::ResourceGrants;
use warden_runtime::sql_guard::guard_statement;
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
const CONNECTION_FAILURE: &str = "08006";

/// The message PostgreSQL gives when a prepared statement's result columns changed under it
/// (after `ALTER TABLE`, or a table dropped and created again by another connection).
const STALE_PLAN_MESSAGE: &str = "cached plan must not change result type";

type BoxError = Box<dyn StdError + Sync + Send>;

/// The shared PostgreSQL pool.
#[derive(Clone)]
pub struct DatabaseBackend {
    pool: deadpool_postgres::Pool,
}

impl DatabaseBackend {
    /// A pool for `url` (not connected until first use; failures surface per call).
    pub fn connect(url: &str, max_size: usize) -> std::result::Result<Self, String> {
        if max_size == 0 {
            return Err("the database pool needs at least one connection".into());
        }
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|error| format!("invalid database url: {error}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .build()
            .map_err(|error| format!("cannot build the database pool: {error}"))?;
        Ok(DatabaseBackend { pool })
    }

    /// The pool, for Warden's own state store.
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
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

/// One plugin's database gateway.
pub struct DatabaseGateway {
    plugin: String,
    grants: ResourceGrants,
    backend: DatabaseBackend,
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
}

impl CheckedStatement {
    fn new(sql: String) -> Self {
        let keyword = sql.split_ascii_whitespace().next().unwrap_or_default();
        let changes_schema = ["CREATE", "ALTER", "DROP"]
            .iter()
            .any(|schema_keyword| keyword.eq_ignore_ascii_case(schema_keyword));
        CheckedStatement {
            sql,
            changes_schema,
        }
    }
}

impl DatabaseGateway {
    /// A gateway for `plugin` holding `grants`.
    pub fn new(plugin: String, grants: ResourceGrants, backend: DatabaseBackend) -> Self {
        DatabaseGateway {
            plugin,
            grants,
            backend,
            checked: HashMap::new(),
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
                let checked = Arc::new(CheckedStatement::new(guarded.sql));
                self.checked.insert(sql.to_owned(), Arc::clone(&checked));
                Ok(checked)
            }
            Err(error) => {
                // A refused statement can be up to any size; the log keeps its start.
                let sql = shortened(sql, MAX_LOGGED_SQL_BYTES).unwrap_or(sql);
                tracing::warn!(plugin = %self.plugin, sql, error = %error, "sql statement refused");
                metrics::counter!("warden_sql_denied_total", "plugin" => self.plugin.clone())
                    .increment(1);
                Err(error)
            }
        }
    }
}

impl Actor for DatabaseGateway {
    type Context = Context<Self>;
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
        // statements of one plugin run concurrently on the pool.
        let pool = self.backend.pool.clone();
        Box::pin(async move { run_statement(&pool, &checked, &parameters, expect).await })
    }
}

/// Runs a checked statement on a pooled connection.
async fn run_statement(
    pool: &Pool,
    checked: &CheckedStatement,
    parameters: &[Value],
    expect: Expect,
) -> Result<SqlOutcome> {
    let client = pool.get().await.map_err(|error| Error::Database {
        sqlstate: CONNECTION_FAILURE.to_owned(),
        message: format!("cannot get a database connection: {error}"),
    })?;
    let statement = prepare(&client, checked).await?;
    let outcome = match run_prepared(&client, &statement, parameters, expect).await {
        Err(error) if is_stale_plan(&error) => {
            // PostgreSQL refused before running anything, so running again is safe.
            drop(statement);
            client.statement_cache.remove(&checked.sql, &[]);
            let statement = prepare(&client, checked).await?;
            run_prepared(&client, &statement, parameters, expect).await
        }
        outcome => outcome,
    }?;
    if checked.changes_schema {
        pool.manager().statement_caches.clear();
    }
    Ok(outcome)
}

async fn prepare(
    client: &deadpool_postgres::Client,
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

async fn run_prepared(
    client: &deadpool_postgres::Client,
    statement: &Statement,
    parameters: &[Value],
    expect: Expect,
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
            while let Some(row) = stream.try_next().await.map_err(database_error)? {
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
fn database_error(error: tokio_postgres::Error) -> Error {
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

/// The type a domain is defined over (the type itself for anything else): values of a domain
/// travel in its base type's format.
fn base_type(mut ty: &Type) -> &Type {
    while let Kind::Domain(base) = ty.kind() {
        ty = base;
    }
    ty
}

// Parameters: JSON to PostgreSQL.

/// Converts every JSON parameter to the type PostgreSQL declared for it.
fn bind_parameters<'a>(types: &[Type], values: &'a [Value]) -> Result<Vec<Parameter<'a>>> {
    if types.len() != values.len() {
        return Err(Error::InvalidValue {
            reason: format!(
                "the statement takes {} parameter(s) but {} were given",
                types.len(),
                values.len()
            ),
        });
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(index, (ty, value))| {
            Parameter::convert(value, ty).map_err(|expected| Error::InvalidValue {
                reason: format!(
                    "parameter ${} of type {ty} expects {expected}, got {}",
                    index + 1,
                    preview(value)
                ),
            })
        })
        .collect()
}

/// A JSON value short enough to quote in an error message.
fn preview(value: &Value) -> String {
    let text = value.to_string();
    match shortened(&text, 60) {
        Some(prefix) => format!("{prefix}…"),
        None => text,
    }
}

/// The longest prefix of `text` within `limit` bytes, when `text` is longer than that.
fn shortened(text: &str, limit: usize) -> Option<&str> {
    if text.len() <= limit {
        return None;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(&text[..end])
}

/// One parameter, converted for its declared type.
#[derive(Debug)]
enum Parameter<'a> {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Oid(u32),
    Float4(f32),
    Float8(f64),
    Numeric(Decimal),
    /// UTF-8 bytes in binary format, which is how text-like types and enum labels travel.
    Text(Cow<'a, str>),
    /// A value PostgreSQL parses itself from its text form.
    TextFormat(Cow<'a, str>),
    Json(Cow<'a, Value>),
    Uuid(Uuid),
    Timestamptz(DateTime<Utc>),
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    Bytea(Vec<u8>),
    /// A one-dimensional array; every element is in binary format.
    Array(Vec<Parameter<'a>>),
}

type Expected = Cow<'static, str>;

const EXPECT_BOOL: &str = "a boolean";
const EXPECT_INTEGER: &str = "an integer in range, as a number or a string";
const EXPECT_FLOAT: &str = "a number or a numeric string";
const EXPECT_NUMERIC: &str = "a number or a numeric string";
const EXPECT_UUID: &str = "a UUID string";
const EXPECT_TEXT_FORM: &str = "a string in PostgreSQL's text form for the type";
const EXPECT_BASE64: &str = "a base64 string";

impl<'a> Parameter<'a> {
    fn convert(value: &'a Value, ty: &Type) -> std::result::Result<Self, Expected> {
        if value.is_null() {
            return Ok(Parameter::Null);
        }
        let ty = base_type(ty);
        let parameter = match *ty {
            Type::BOOL => match value {
                Value::Bool(flag) => Parameter::Bool(*flag),
                Value::String(text) if text == "true" => Parameter::Bool(true),
                Value::String(text) if text == "false" => Parameter::Bool(false),
                _ => return Err(EXPECT_BOOL.into()),
            },
            Type::INT2 => Parameter::Int2(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::INT4 => Parameter::Int4(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::INT8 => Parameter::Int8(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::OID => Parameter::Oid(integer(value).ok_or(EXPECT_INTEGER)?),
            Type::FLOAT4 => {
                let wide = float(value).ok_or(EXPECT_FLOAT)?;
                let narrow = wide as f32;
                if wide.is_finite() && !narrow.is_finite() {
                    return Err("a number within float4 range".into());
                }
                Parameter::Float4(narrow)
            }
            Type::FLOAT8 => Parameter::Float8(float(value).ok_or(EXPECT_FLOAT)?),
            Type::NUMERIC => numeric(value)?,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Parameter::Text(text(value))
            }
            // A string that is JSON text is that JSON, as node-postgres (which sent strings as
            // text) stored it; any other string is stored as a JSON string.
            Type::JSON | Type::JSONB => Parameter::Json(match value {
                Value::String(text) => {
                    serde_json::from_str(text).map_or(Cow::Borrowed(value), Cow::Owned)
                }
                other => Cow::Borrowed(other),
            }),
            Type::UUID => Parameter::Uuid(
                value
                    .as_str()
                    .and_then(|text| Uuid::parse_str(text.trim()).ok())
                    .ok_or(EXPECT_UUID)?,
            ),
            Type::TIMESTAMPTZ => {
                let text = value.as_str().ok_or("an RFC 3339 timestamp string")?;
                match DateTime::parse_from_rfc3339(text.trim()) {
                    Ok(moment) => Parameter::Timestamptz(moment.with_timezone(&Utc)),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::TIMESTAMP => {
                let text = value.as_str().ok_or("an ISO 8601 timestamp string")?;
                let trimmed = text.trim();
                match NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f"))
                {
                    Ok(moment) => Parameter::Timestamp(moment),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::DATE => {
                let text = value.as_str().ok_or("a YYYY-MM-DD date string")?;
                match NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
                    Ok(date) => Parameter::Date(date),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::TIME => {
                let text = value.as_str().ok_or("an HH:MM:SS time string")?;
                match NaiveTime::parse_from_str(text.trim(), "%H:%M:%S%.f") {
                    Ok(time) => Parameter::Time(time),
                    Err(_) => Parameter::TextFormat(Cow::Borrowed(text)),
                }
            }
            Type::BYTEA => Parameter::Bytea(
                value
                    .as_str()
                    .and_then(|text| BASE64.decode(text).ok())
                    .ok_or(EXPECT_BASE64)?,
            ),
            _ => match ty.kind() {
                Kind::Array(element_type) => match value {
                    Value::Array(items) => Parameter::Array(array_elements(items, element_type)?),
                    Value::String(literal) => Parameter::TextFormat(Cow::Borrowed(literal)),
                    _ => return Err("a JSON array or an array literal string".into()),
                },
                Kind::Enum(_) => match value {
                    Value::String(label) => Parameter::Text(Cow::Borrowed(label)),
                    _ => return Err("a string naming one of the enum's labels".into()),
                },
                _ => Parameter::TextFormat(scalar_text(value).ok_or(EXPECT_TEXT_FORM)?),
            },
        };
        Ok(parameter)
    }
}

fn array_elements<'a>(
    items: &'a [Value],
    element_type: &Type,
) -> std::result::Result<Vec<Parameter<'a>>, Expected> {
    items
        .iter()
        .map(|item| match Parameter::convert(item, element_type) {
            Ok(Parameter::TextFormat(_)) | Ok(Parameter::Array(_)) => Err(Cow::Owned(format!(
                "an array literal string (elements of type {element_type} cannot be given \
                 as a JSON array)"
            ))),
            Ok(element) => Ok(element),
            Err(expected) => Err(Cow::Owned(format!(
                "a JSON array whose elements are each {expected}"
            ))),
        })
        .collect()
}

/// An integral JSON number, or a string holding one, that fits `T`.
fn integer<T: TryFrom<i64>>(value: &Value) -> Option<T> {
    let wide = match value {
        Value::Number(number) => match number.as_i64() {
            Some(integral) => integral,
            None => {
                let float = number.as_f64()?;
                // JavaScript has no integer type: 3.0 is the number 3.
                if float.fract() != 0.0 || float.abs() >= 9.223_372_036_854_775e18 {
                    return None;
                }
                float as i64
            }
        },
        Value::String(text) => text.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    T::try_from(wide).ok()
}

fn float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A `numeric` parameter: exact through `rust_decimal` when it fits its 28 digits, otherwise
/// (more digits, an exponent, `NaN`, `Infinity`) as text that PostgreSQL parses exactly.
fn numeric(value: &Value) -> std::result::Result<Parameter<'_>, Expected> {
    let text: Cow<'_, str> = match value {
        Value::Number(number) => {
            if let Some(integral) = number.as_i64() {
                return Ok(Parameter::Numeric(Decimal::from(integral)));
            }
            if let Some(integral) = number.as_u64() {
                return Ok(Parameter::Numeric(Decimal::from(integral)));
            }
            Cow::Owned(number.to_string())
        }
        Value::String(text) => Cow::Borrowed(text.trim()),
        _ => return Err(EXPECT_NUMERIC.into()),
    };
    if let Ok(decimal) = Decimal::from_str_exact(&text) {
        return Ok(Parameter::Numeric(decimal));
    }
    if is_numeric_literal(&text) {
        return Ok(Parameter::TextFormat(text));
    }
    Err(EXPECT_NUMERIC.into())
}

/// Whether `text` is a literal PostgreSQL's `numeric` input accepts: an optional sign, digits
/// with an optional decimal point, an optional exponent; or `NaN`, `Infinity`, `inf`.
fn is_numeric_literal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if ["nan", "infinity", "inf"]
        .iter()
        .any(|special| unsigned.eq_ignore_ascii_case(special))
    {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let mantissa_ok =
        digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|exponent| {
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        !exponent.is_empty() && digits(exponent)
    });
    mantissa_ok && exponent_ok
}

/// Text for a text-like column: strings as they are, numbers and booleans as written in JSON,
/// objects and arrays as JSON text.
fn text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        other => Cow::Owned(other.to_string()),
    }
}

/// The text form of a scalar, for types PostgreSQL parses itself.
fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => Some(Cow::Borrowed(text)),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        _ => None,
    }
}

impl ToSql for Parameter<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        let ty = base_type(ty);
        match self {
            Parameter::Null => Ok(IsNull::Yes),
            Parameter::Bool(flag) => flag.to_sql(ty, out),
            Parameter::Int2(number) => number.to_sql(ty, out),
            Parameter::Int4(number) => number.to_sql(ty, out),
            Parameter::Int8(number) => number.to_sql(ty, out),
            Parameter::Oid(number) => number.to_sql(ty, out),
            Parameter::Float4(number) => number.to_sql(ty, out),
            Parameter::Float8(number) => number.to_sql(ty, out),
            Parameter::Numeric(decimal) => decimal.to_sql(ty, out),
            Parameter::Text(text) | Parameter::TextFormat(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            Parameter::Json(value) => value.as_ref().to_sql(ty, out),
            Parameter::Uuid(uuid) => uuid.to_sql(ty, out),
            Parameter::Timestamptz(moment) => moment.to_sql(ty, out),
            Parameter::Timestamp(moment) => moment.to_sql(ty, out),
            Parameter::Date(date) => date.to_sql(ty, out),
            Parameter::Time(time) => time.to_sql(ty, out),
            Parameter::Bytea(bytes) => bytes.as_slice().to_sql(ty, out),
            Parameter::Array(elements) => write_array(ty, elements, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // `Parameter::convert` already chose the representation from the declared type.
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        match self {
            Parameter::TextFormat(_) => Format::Text,
            _ => Format::Binary,
        }
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Writes a one-dimensional array in PostgreSQL's binary array format.
fn write_array(
    ty: &Type,
    elements: &[Parameter<'_>],
    out: &mut BytesMut,
) -> std::result::Result<IsNull, BoxError> {
    let Kind::Array(element_type) = ty.kind() else {
        return Err(format!("type {ty} is not an array type").into());
    };
    let dimensions: i32 = if elements.is_empty() { 0 } else { 1 };
    let has_null = elements
        .iter()
        .any(|element| matches!(element, Parameter::Null));
    out.extend_from_slice(&dimensions.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&element_type.oid().to_be_bytes());
    if elements.is_empty() {
        return Ok(IsNull::No);
    }
    out.extend_from_slice(&i32::try_from(elements.len())?.to_be_bytes());
    out.extend_from_slice(&1_i32.to_be_bytes());
    for element in elements {
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let length = match element.to_sql(element_type, out)? {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(out.len() - length_at - 4)?,
        };
        out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }
    Ok(IsNull::No)
}

// Rows: PostgreSQL to JSON.

/// One row as a JSON object keyed by column name. When two columns share a name, the later
/// one wins, as in node-postgres.
fn row_to_json(row: &Row) -> Result<Value> {
    let columns = row.columns();
    let mut object = Map::new();
    for (index, column) in columns.iter().enumerate() {
        let JsonCell(value) = row
            .try_get(index)
            .map_err(|error| column_error(column, &error))?;
        object.insert(column.name().to_owned(), value);
    }
    Ok(Value::Object(object))
}

fn column_error(column: &Column, error: &tokio_postgres::Error) -> Error {
    let cause = error
        .source()
        .map_or_else(|| error.to_string(), ToString::to_string);
    Error::InvalidValue {
        reason: format!(
            "column '{}' of type {}: {cause}",
            column.name(),
            column.type_()
        ),
    }
}

/// One result value as JSON (see the module's table). `numeric` becomes a string, because a
/// JSON number is a double in JavaScript and would silently lose digits.
struct JsonCell(Value);

impl<'a> FromSql<'a> for JsonCell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        decode(ty, raw).map(JsonCell)
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(JsonCell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        // Every type is accepted here; one with no JSON form fails in `decode` with a message
        // naming it.
        true
    }
}

fn decode(ty: &Type, raw: &[u8]) -> std::result::Result<Value, BoxError> {
    let value = match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
        Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
        Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
        Type::OID => Value::from(u32::from_sql(ty, raw)?),
        Type::FLOAT4 => {
            let number = f32::from_sql(ty, raw)?;
            // Through the shortest text of the `f32`, so that 0.1 stays 0.1 rather than
            // becoming 0.10000000149011612.
            match number.to_string().parse::<f64>() {
                Ok(wide) if number.is_finite() => float_json(wide),
                _ => float_json(f64::from(number)),
            }
        }
        Type::FLOAT8 => float_json(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Value::String(numeric_text(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            Value::String(std::str::from_utf8(raw)?.to_owned())
        }
        Type::CHAR => Value::String(char_text(i8::from_sql(ty, raw)?)),
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::UUID => Value::String(Uuid::from_slice(raw)?.hyphenated().to_string()),
        Type::TIMESTAMPTZ => Value::String(timestamp_text(raw, true)?),
        Type::TIMESTAMP => Value::String(timestamp_text(raw, false)?),
        Type::DATE => Value::String(date_text(raw)?),
        Type::TIME => Value::String(time_text(be_i64(raw, 0)?)),
        Type::TIMETZ => Value::String(timetz_text(raw)?),
        Type::INTERVAL => Value::String(interval_text(raw)?),
        Type::BYTEA => Value::String(BASE64.encode(raw)),
        Type::INET | Type::CIDR => Value::String(inet_text(raw, *ty == Type::CIDR)?),
        _ => match ty.kind() {
            Kind::Array(element_type) => decode_array(element_type, raw)?,
            Kind::Domain(base) => decode(base, raw)?,
            Kind::Enum(_) => Value::String(std::str::from_utf8(raw)?.to_owned()),
            Kind::Simple if ty.name() == "citext" => {
                Value::String(std::str::from_utf8(raw)?.to_owned())
            }
            _ => {
                return Err(format!(
                    "type {ty} has no JSON form; cast the column in SQL, e.g. to text"
                )
                .into())
            }
        },
    };
    Ok(value)
}

/// A finite float as a JSON number; `NaN` and the infinities as PostgreSQL writes them.
fn float_json(number: f64) -> Value {
    match Number::from_f64(number) {
        Some(number) => Value::Number(number),
        None if number.is_nan() => Value::String("NaN".to_owned()),
        None if number > 0.0 => Value::String("Infinity".to_owned()),
        None => Value::String("-Infinity".to_owned()),
    }
}

fn be_bytes<const N: usize>(raw: &[u8], at: usize) -> std::result::Result<[u8; N], BoxError> {
    raw.get(at..at + N)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "value is shorter than its type's binary format".into())
}

fn be_i16(raw: &[u8], at: usize) -> std::result::Result<i16, BoxError> {
    Ok(i16::from_be_bytes(be_bytes(raw, at)?))
}

fn be_u16(raw: &[u8], at: usize) -> std::result::Result<u16, BoxError> {
    Ok(u16::from_be_bytes(be_bytes(raw, at)?))
}

fn be_i32(raw: &[u8], at: usize) -> std::result::Result<i32, BoxError> {
    Ok(i32::from_be_bytes(be_bytes(raw, at)?))
}

fn be_i64(raw: &[u8], at: usize) -> std::result::Result<i64, BoxError> {
    Ok(i64::from_be_bytes(be_bytes(raw, at)?))
}

/// A `numeric` in its binary format (base-10000 digits, a weight, a sign and a display scale)
/// written out exactly as PostgreSQL's `numeric_out` does.
fn numeric_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const POSITIVE_INFINITY: u16 = 0xD000;
    const NEGATIVE_INFINITY: u16 = 0xF000;

    let digit_count = usize::from(be_u16(raw, 0)?);
    let weight = i32::from(be_i16(raw, 2)?);
    let sign = be_u16(raw, 4)?;
    let display_scale = usize::from(be_u16(raw, 6)?);
    if raw.len() != 8 + 2 * digit_count {
        return Err("numeric value has a malformed binary format".into());
    }
    match sign {
        NAN => return Ok("NaN".to_owned()),
        POSITIVE_INFINITY => return Ok("Infinity".to_owned()),
        NEGATIVE_INFINITY => return Ok("-Infinity".to_owned()),
        POSITIVE | NEGATIVE => {}
        _ => return Err("numeric value has an unknown sign".into()),
    }
    // Digit `index` counts 10000^(weight - index); outside the stored digits it is zero.
    let digit = |index: i32| -> u16 {
        usize::try_from(index)
            .ok()
            .filter(|&index| index < digit_count)
            .map_or(0, |index| {
                u16::from_be_bytes([raw[8 + 2 * index], raw[9 + 2 * index]])
            })
    };
    let mut text = String::with_capacity(2 + 4 * (digit_count + 1) + display_scale);
    if sign == NEGATIVE {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for index in 0..=weight {
            if index == 0 {
                let _ = write!(text, "{}", digit(index));
            } else {
                let _ = write!(text, "{:04}", digit(index));
            }
        }
    }
    if display_scale > 0 {
        text.push('.');
        let fraction_start = text.len();
        let mut index = weight + 1;
        while text.len() - fraction_start < display_scale {
            let _ = write!(text, "{:04}", digit(index));
            index += 1;
        }
        text.truncate(fraction_start + display_scale);
    }
    Ok(text)
}

fn char_text(byte: i8) -> String {
    let byte = byte as u8;
    match byte {
        0 => String::new(),
        1..=127 => char::from(byte).to_string(),
        _ => format!("\\{byte:03o}"),
    }
}

/// Midnight of 2000-01-01, PostgreSQL's epoch for dates and timestamps.
fn postgres_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .expect("2000-01-01 is a valid date")
}

/// A `timestamptz` (RFC 3339, UTC, `Z`) or `timestamp` (ISO 8601 without offset).
fn timestamp_text(raw: &[u8], with_time_zone: bool) -> std::result::Result<String, BoxError> {
    let microseconds = be_i64(raw, 0)?;
    match microseconds {
        i64::MAX => return Ok("infinity".to_owned()),
        i64::MIN => return Ok("-infinity".to_owned()),
        _ => {}
    }
    let moment = postgres_epoch()
        .checked_add_signed(TimeDelta::microseconds(microseconds))
        .ok_or("timestamp is outside the range Warden can represent")?;
    Ok(if with_time_zone {
        moment
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    } else {
        moment.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
    })
}

fn date_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let days = be_i32(raw, 0)?;
    match days {
        i32::MAX => return Ok("infinity".to_owned()),
        i32::MIN => return Ok("-infinity".to_owned()),
        _ => {}
    }
    let date = postgres_epoch()
        .date()
        .checked_add_signed(TimeDelta::days(i64::from(days)))
        .ok_or("date is outside the range Warden can represent")?;
    Ok(date.format("%Y-%m-%d").to_string())
}

/// `HH:MM:SS` and, when there is one, the fraction without trailing zeros, as PostgreSQL writes
/// a `time` (which can be `24:00:00`).
fn time_text(microseconds: i64) -> String {
    let microseconds = microseconds.unsigned_abs();
    let mut text = String::with_capacity(15);
    let _ = write!(
        text,
        "{:02}:{:02}:{:02}",
        microseconds / 3_600_000_000,
        microseconds / 60_000_000 % 60,
        microseconds / 1_000_000 % 60
    );
    push_fraction(&mut text, microseconds % 1_000_000);
    text
}

fn push_fraction(text: &mut String, microseconds: u64) {
    if microseconds == 0 {
        return;
    }
    let digits = format!("{microseconds:06}");
    text.push('.');
    text.push_str(digits.trim_end_matches('0'));
}

/// A `timetz`: the time, then the offset east of UTC as PostgreSQL writes it (`+02`, `-05:30`).
fn timetz_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let mut text = time_text(be_i64(raw, 0)?);
    // Stored as seconds west of UTC.
    let east = -i64::from(be_i32(raw, 8)?);
    text.push(if east >= 0 { '+' } else { '-' });
    let east = east.unsigned_abs();
    let _ = write!(text, "{:02}", east / 3600);
    if east % 3600 != 0 {
        let _ = write!(text, ":{:02}", east / 60 % 60);
        if east % 60 != 0 {
            let _ = write!(text, ":{:02}", east % 60);
        }
    }
    Ok(text)
}

/// An `interval` in PostgreSQL's default output style (`1 year 2 mons -3 days +04:05:06.5`).
fn interval_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let microseconds = be_i64(raw, 0)?;
    let days = be_i32(raw, 8)?;
    let months = be_i32(raw, 12)?;
    let mut text = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    for (value, unit) in [
        (i64::from(months / 12), "year"),
        (i64::from(months % 12), "mon"),
        (i64::from(days), "day"),
    ] {
        if value == 0 {
            continue;
        }
        let _ = write!(
            text,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value == 1 { "" } else { "s" }
        );
        is_before = value < 0;
        is_zero = false;
    }
    if is_zero || microseconds != 0 {
        let sign = if microseconds < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        if !is_zero {
            text.push(' ');
        }
        text.push_str(sign);
        text.push_str(&time_text(microseconds));
    }
    Ok(text)
}

/// An `inet` (`/bits` only when not a single host) or a `cidr` (always `/bits`).
fn inet_text(raw: &[u8], is_cidr_type: bool) -> std::result::Result<String, BoxError> {
    const FAMILY_INET: u8 = 2;
    const FAMILY_INET6: u8 = 3;
    let [family, bits, _, length] = be_bytes::<4>(raw, 0)?;
    let address = raw
        .get(4..4 + usize::from(length))
        .ok_or("malformed inet")?;
    let (text, full_bits) = match (family, address.len()) {
        (FAMILY_INET, 4) => {
            let octets: [u8; 4] = address.try_into()?;
            (Ipv4Addr::from(octets).to_string(), 32)
        }
        (FAMILY_INET6, 16) => {
            let octets: [u8; 16] = address.try_into()?;
            (Ipv6Addr::from(octets).to_string(), 128)
        }
        _ => return Err("malformed inet".into()),
    };
    Ok(if is_cidr_type || bits != full_bits {
        format!("{text}/{bits}")
    } else {
        text
    })
}

/// An array of any decodable element type, nested once per dimension.
fn decode_array(element_type: &Type, raw: &[u8]) -> std::result::Result<Value, BoxError> {
    let dimension_count = usize::try_from(be_i32(raw, 0)?)?;
    if dimension_count == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    let mut lengths = Vec::with_capacity(dimension_count);
    for dimension in 0..dimension_count {
        lengths.push(usize::try_from(be_i32(raw, 12 + 8 * dimension)?)?);
    }
    let mut at = 12 + 8 * dimension_count;
    let value = decode_dimension(element_type, raw, &lengths, &mut at)?;
    if at != raw.len() {
        return Err("array value has trailing bytes".into());
    }
    Ok(value)
}

fn decode_dimension(
    element_type: &Type,
    raw: &[u8],
    lengths: &[usize],
    at: &mut usize,
) -> std::result::Result<Value, BoxError> {
    let (&length, inner) = lengths.split_first().ok_or("array without dimensions")?;
    let mut items = Vec::with_capacity(length);
    for _ in 0..length {
        let item = if inner.is_empty() {
            let size = be_i32(raw, *at)?;
            *at += 4;
            if size < 0 {
                Value::Null
            } else {
                let size = usize::try_from(size)?;
                let bytes = raw
                    .get(*at..*at + size)
                    .ok_or("array element is cut short")?;
                *at += size;
                decode(element_type, bytes)?
            }
        } else {
            decode_dimension(element_type, raw, inner, at)?
        };
        items.push(item);
    }
    Ok(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use actix::{Actor, Addr};
    use serde_json::json;

    use super::*;

    const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn database_url() -> String {
        std::env::var("WARDEN_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
    }

    fn backend() -> DatabaseBackend {
        DatabaseBackend::connect(&database_url(), 4).expect("test database url is valid")
    }

    /// A plugin name no other test (in this process or another) uses, so tables never clash.
    fn unique_plugin() -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        format!(
            "dbgw_{}x{nanos}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    struct TestGateway {
        plugin: String,
        backend: DatabaseBackend,
        address: Addr<DatabaseGateway>,
    }

    impl TestGateway {
        fn start(tables: &[&str]) -> Self {
            let plugin = unique_plugin();
            let tables: Vec<String> = tables.iter().map(|table| (*table).to_owned()).collect();
            let grants = ResourceGrants::resolve(&plugin, &tables, &[], &[], None)
                .expect("test grants resolve");
            let backend = backend();
            let address = DatabaseGateway::new(plugin.clone(), grants, backend.clone()).start();
            TestGateway {
                plugin,
                backend,
                address,
            }
        }

        async fn run(
            &self,
            sql: &str,
            parameters: Vec<Value>,
            expect: Expect,
        ) -> Result<SqlOutcome> {
            self.address
                .send(ExecuteSql {
                    sql: sql.to_owned(),
                    parameters,
                    expect,
                })
                .await
                .expect("gateway is running")
        }

        async fn query(&self, sql: &str, parameters: Vec<Value>) -> Result<Vec<Value>> {
            match self.run(sql, parameters, Expect::Rows).await? {
                SqlOutcome::Rows(rows) => Ok(rows),
                other => panic!("expected rows, got {other:?}"),
            }
        }

        async fn command(&self, sql: &str, parameters: Vec<Value>) -> Result<u64> {
            match self.run(sql, parameters, Expect::Affected).await? {
                SqlOutcome::Affected(count) => Ok(count),
                other => panic!("expected a count, got {other:?}"),
            }
        }

        async fn physical_table_exists(&self, table: &str) -> bool {
            let client = self
                .backend
                .pool()
                .get()
                .await
                .expect("test database answers");
            let row = client
                .query_one(
                    "SELECT to_regclass(quote_ident($1)) IS NOT NULL",
                    &[&format!("{}_{table}", self.plugin)],
                )
                .await
                .expect("to_regclass runs");
            row.get(0)
        }
    }

    fn single(rows: Vec<Value>) -> Value {
        assert_eq!(rows.len(), 1, "expected one row: {rows:?}");
        rows.into_iter().next().unwrap_or_default()
    }

    #[actix_rt::test]
    async fn every_supported_type_round_trips_through_parameters_and_rows() {
        let gateway = TestGateway::start(&["everything"]);
        gateway
            .command(
                "CREATE TABLE everything (id int4 PRIMARY KEY, c_bool bool, c_int2 int2, \
                 c_int4 int4, c_int8 int8, c_float4 float4, c_float8 float8, c_numeric numeric, \
                 c_text text, c_varchar varchar(20), c_char char(5), c_json json, c_jsonb jsonb, \
                 c_uuid uuid, c_timestamptz timestamptz, c_timestamp timestamp, c_date date, \
                 c_time time, c_bytea bytea, c_int4s int4[], c_int8s int8[], c_texts text[])",
                vec![],
            )
            .await
            .expect("create table");
        let inserted = gateway
            .command(
                "INSERT INTO everything VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
                vec![
                    json!(1),
                    json!(true),
                    json!("12"),
                    json!(123_456),
                    json!(1_234_567_890_123_i64),
                    json!(1.5),
                    json!(0.1),
                    json!("12.50"),
                    json!("héllo \"world\""),
                    json!(42),
                    json!("ab"),
                    json!({"list": [1, 2], "nested": {"ok": true}}),
                    json!({"k": "v", "n": 1}),
                    json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
                    json!("2024-02-29T12:34:56.789+02:00"),
                    json!("2024-02-29T12:34:56.5"),
                    json!("2024-02-29"),
                    json!("13:14:15.25"),
                    json!("AAEC/w=="),
                    json!([1, 2, null, 4]),
                    json!([1, "9000000000"]),
                    json!(["a", "b c", null, ""]),
                ],
            )
            .await
            .expect("insert every type");
        assert_eq!(inserted, 1);
        let nulls = vec![Value::Null; 21];
        let mut parameters = vec![json!(2)];
        parameters.extend(nulls);
        gateway
            .command(
                "INSERT INTO everything VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
                parameters,
            )
            .await
            .expect("insert nulls");

        let rows = gateway
            .query("SELECT * FROM everything ORDER BY id", vec![])
            .await
            .expect("select every type");
        assert_eq!(
            rows[0],
            json!({
                "id": 1,
                "c_bool": true,
                "c_int2": 12,
                "c_int4": 123_456,
                "c_int8": 1_234_567_890_123_i64,
                "c_float4": 1.5,
                "c_float8": 0.1,
                "c_numeric": "12.50",
                "c_text": "héllo \"world\"",
                "c_varchar": "42",
                "c_char": "ab   ",
                "c_json": {"list": [1, 2], "nested": {"ok": true}},
                "c_jsonb": {"k": "v", "n": 1},
                "c_uuid": "67e55044-10b1-426f-9247-bb680e5fe0c8",
                "c_timestamptz": "2024-02-29T10:34:56.789Z",
                "c_timestamp": "2024-02-29T12:34:56.500",
                "c_date": "2024-02-29",
                "c_time": "13:14:15.25",
                "c_bytea": "AAEC/w==",
                "c_int4s": [1, 2, null, 4],
                "c_int8s": [1, 9_000_000_000_i64],
                "c_texts": ["a", "b c", null, ""],
            })
        );
        let second = rows[1].as_object().expect("row is an object");
        assert_eq!(second["id"], json!(2));
        assert!(
            second
                .iter()
                .filter(|(column, _)| column.as_str() != "id")
                .all(|(_, value)| value.is_null()),
            "every other column is null: {second:?}"
        );

        // Parameters are converted to the column's type in WHERE clauses too.
        let found = gateway
            .query(
                "SELECT id FROM everything WHERE c_uuid = $1 AND c_timestamptz = $2 \
                 AND c_int8 = $3 AND c_bytea = $4 AND c_int4s = $5",
                vec![
                    json!("67E55044-10B1-426F-9247-BB680E5FE0C8"),
                    json!("2024-02-29T10:34:56.789Z"),
                    json!("1234567890123"),
                    json!("AAEC/w=="),
                    json!([1, 2, null, 4]),
                ],
            )
            .await
            .expect("select with typed parameters");
        assert_eq!(found, vec![json!({"id": 1})]);

        gateway
            .command("DROP TABLE everything", vec![])
            .await
            .expect("drop table");
        assert!(!gateway.physical_table_exists("everything").await);
    }

    #[actix_rt::test]
    async fn expressions_of_other_types_have_text_forms() {
        let gateway = TestGateway::start(&[]);
        let row = single(
            gateway
                .query(
                    "SELECT 'NaN'::float8 AS not_a_number, '-Infinity'::float8 AS minus_infinity, \
                     0.1::float4 AS narrow, 'infinity'::timestamptz AS forever, \
                     '2024-01-02 03:04:05'::timestamp AS plain, '1 year 2 mons 3 days 04:05:06.5'::interval AS span, \
                     '-1 day +02:00:00'::interval AS mixed, '0'::interval AS nothing, \
                     '10.1.2.3/8'::inet AS host, '10.0.0.0/8'::cidr AS network, '::1'::inet AS six, \
                     '13:14:15+05:30'::timetz AS zoned, '24:00:00'::time AS midnight, \
                     ARRAY[[1, 2], [3, 4]] AS matrix, ARRAY[]::text[] AS empty, \
                     ARRAY['2024-01-01'::date] AS dates, ARRAY[1.10, NULL]::numeric[] AS decimals, \
                     'x'::\"char\" AS letter, 5::oid AS object_id",
                    vec![],
                )
                .await
                .expect("select expressions"),
        );
        assert_eq!(
            row,
            json!({
                "not_a_number": "NaN",
                "minus_infinity": "-Infinity",
                "narrow": 0.1,
                "forever": "infinity",
                "plain": "2024-01-02T03:04:05",
                "span": "1 year 2 mons 3 days 04:05:06.5",
                "mixed": "-1 days +02:00:00",
                "nothing": "00:00:00",
                "host": "10.1.2.3/8",
                "network": "10.0.0.0/8",
                "six": "::1",
                "zoned": "13:14:15+05:30",
                "midnight": "24:00:00",
                "matrix": [[1, 2], [3, 4]],
                "empty": [],
                "dates": ["2024-01-01"],
                "decimals": ["1.10", null],
                "letter": "x",
                "object_id": 5,
            })
        );
    }

    #[actix_rt::test]
    async fn numeric_is_an_exact_string_both_ways() {
        let gateway = TestGateway::start(&["amounts"]);
        gateway
            .command(
                "CREATE TABLE amounts (id int4 PRIMARY KEY, amount numeric)",
                vec![],
            )
            .await
            .expect("create table");
        let values = [
            (json!(1.5), "1.5"),
            (json!(-7), "-7"),
            (json!("0.000001"), "0.000001"),
            (
                json!("12345678901234567890.123456789"),
                "12345678901234567890.123456789",
            ),
            (
                json!("-1234567890123456789012345678901234567890.0001"),
                "-1234567890123456789012345678901234567890.0001",
            ),
            (json!("1.5e3"), "1500"),
            (json!("NaN"), "NaN"),
            (json!("100.00"), "100.00"),
            (json!(0), "0"),
        ];
        for (id, (parameter, _)) in values.iter().enumerate() {
            gateway
                .command(
                    "INSERT INTO amounts (id, amount) VALUES ($1, $2)",
                    vec![json!(id), parameter.clone()],
                )
                .await
                .unwrap_or_else(|error| panic!("insert {parameter}: {error}"));
        }
        let rows = gateway
            .query("SELECT amount FROM amounts ORDER BY id", vec![])
            .await
            .expect("select amounts");
        let expected: Vec<Value> = values
            .iter()
            .map(|(_, text)| json!({ "amount": text }))
            .collect();
        assert_eq!(rows, expected);

        let sum = single(
            gateway
                .query(
                    "SELECT sum(amount) AS total FROM amounts WHERE id < 3",
                    vec![],
                )
                .await
                .expect("sum"),
        );
        assert_eq!(sum, json!({"total": "-5.499999"}));

        let refused = gateway
            .command(
                "INSERT INTO amounts (id, amount) VALUES ($1, $2)",
                vec![json!(100), json!("twelve")],
            )
            .await;
        assert!(
            matches!(&refused, Err(Error::InvalidValue { reason }) if reason.contains("$2") && reason.contains("numeric")),
            "{refused:?}"
        );
        gateway
            .command("DROP TABLE amounts", vec![])
            .await
            .expect("drop");
    }

    #[actix_rt::test]
    async fn jsonb_parameters_and_results_keep_their_json_shape() {
        let gateway = TestGateway::start(&["documents"]);
        gateway
            .command(
                "CREATE TABLE documents (id serial PRIMARY KEY, body jsonb NOT NULL)",
                vec![],
            )
            .await
            .expect("create table");
        let bodies = [
            json!({"user": {"name": "Ada", "tags": ["a", "b"]}, "score": 1.25}),
            json!([1, "two", null, {"three": 3}]),
            json!("a plain string"),
            json!(42),
            json!(false),
        ];
        for body in &bodies {
            gateway
                .command(
                    "INSERT INTO documents (body) VALUES ($1)",
                    vec![body.clone()],
                )
                .await
                .expect("insert jsonb");
        }
        let rows = gateway
            .query("SELECT body FROM documents ORDER BY id", vec![])
            .await
            .expect("select jsonb");
        let expected: Vec<Value> = bodies.iter().map(|body| json!({ "body": body })).collect();
        assert_eq!(rows, expected);

        let matched = gateway
            .query(
                "SELECT body -> 'user' ->> 'name' AS name FROM documents WHERE body @> $1",
                vec![json!({"user": {"tags": ["b"]}})],
            )
            .await
            .expect("containment query");
        assert_eq!(matched, vec![json!({"name": "Ada"})]);
        gateway
            .command("DROP TABLE documents", vec![])
            .await
            .expect("drop");
    }

    #[actix_rt::test]
    async fn bytea_travels_as_base64() {
        let gateway = TestGateway::start(&["blobs"]);
        gateway
            .command(
                "CREATE TABLE blobs (id int4 PRIMARY KEY, data bytea)",
                vec![],
            )
            .await
            .expect("create table");
        let bytes: Vec<u8> = (0..=255).collect();
        let encoded = BASE64.encode(&bytes);
        gateway
            .command(
                "INSERT INTO blobs VALUES (1, $1), (2, $2)",
                vec![json!(encoded), json!("")],
            )
            .await
            .expect("insert bytea");
        let rows = gateway
            .query(
                "SELECT data, length(data) AS size FROM blobs ORDER BY id",
                vec![],
            )
            .await
            .expect("select bytea");
        assert_eq!(
            rows,
            vec![
                json!({"data": encoded, "size": 256}),
                json!({"data": "", "size": 0}),
            ]
        );
        let refused = gateway
            .command(
                "INSERT INTO blobs VALUES (3, $1)",
                vec![json!("not base64!")],
            )
            .await;
        assert!(
            matches!(&refused, Err(Error::InvalidValue { reason }) if reason.contains("$1") && reason.contains("bytea")),
            "{refused:?}"
        );
        gateway
            .command("DROP TABLE blobs", vec![])
            .await
            .expect("drop");
    }

    /// Creates `users` and `orders` with a few rows.
    async fn create_shop(gateway: &TestGateway) {
        gateway
            .command(
                "CREATE TABLE users (id int4 PRIMARY KEY, name text NOT NULL UNIQUE)",
                vec![],
            )
            .await
            .expect("create users");
        gateway
            .command(
                "CREATE TABLE orders (id int4 PRIMARY KEY, user_id int4 NOT NULL REFERENCES users (id), \
                 total numeric NOT NULL)",
                vec![],
            )
            .await
            .expect("create orders");
        gateway
            .command(
                "INSERT INTO users (id, name) VALUES ($1, $2), ($3, $4)",
                vec![json!(1), json!("ada"), json!(2), json!("grace")],
            )
            .await
            .expect("insert users");
        let inserted = gateway
            .command(
                "INSERT INTO orders (id, user_id, total) VALUES (10, 1, 5), (11, 1, 50), (12, 2, 70)",
                vec![],
            )
            .await
            .expect("insert orders");
        assert_eq!(inserted, 3);
    }

    async fn drop_shop(gateway: &TestGateway) {
        gateway
            .command("DROP TABLE orders", vec![])
            .await
            .expect("drop orders");
        gateway
            .command("DROP TABLE users", vec![])
            .await
            .expect("drop users");
        assert!(!gateway.physical_table_exists("orders").await);
        assert!(!gateway.physical_table_exists("users").await);
    }

    #[actix_rt::test]
    async fn joins_and_ctes_run_on_the_physical_tables() {
        let gateway = TestGateway::start(&["users", "orders"]);
        create_shop(&gateway).await;
        assert!(gateway.physical_table_exists("users").await);

        let joined = gateway
            .query(
                "SELECT u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id \
                 WHERE o.total > $1 ORDER BY o.id",
                vec![json!(10)],
            )
            .await
            .expect("join");
        assert_eq!(
            joined,
            vec![
                json!({"name": "ada", "total": "50"}),
                json!({"name": "grace", "total": "70"}),
            ]
        );

        let summed = gateway
            .query(
                "WITH big AS (SELECT user_id, total FROM orders WHERE total >= $1) \
                 SELECT users.name, count(*) AS orders, sum(big.total) AS spent \
                 FROM big JOIN users ON users.id = big.user_id GROUP BY users.name ORDER BY users.name",
                vec![json!("5")],
            )
            .await
            .expect("cte");
        assert_eq!(
            summed,
            vec![
                json!({"name": "ada", "orders": 2, "spent": "55"}),
                json!({"name": "grace", "orders": 1, "spent": "70"}),
            ]
        );

        let updated = gateway
            .command(
                "WITH doubled AS (UPDATE orders SET total = total * 2 WHERE user_id = $1 RETURNING id) \
                 SELECT count(*) FROM doubled",
                vec![json!(1)],
            )
            .await
            .expect("data-modifying cte");
        assert_eq!(updated, 1);
        let returned = gateway
            .query(
                "UPDATE orders SET total = total + 1 WHERE id = $1 RETURNING id, total",
                vec![json!(12)],
            )
            .await
            .expect("update returning");
        assert_eq!(returned, vec![json!({"id": 12, "total": "71"})]);
        let deleted = gateway
            .command("DELETE FROM orders WHERE user_id = $1", vec![json!(1)])
            .await
            .expect("delete");
        assert_eq!(deleted, 2);
        drop_shop(&gateway).await;
    }

    #[actix_rt::test]
    async fn a_denied_table_is_refused_and_nothing_runs() {
        let gateway = TestGateway::start(&["users", "orders"]);
        create_shop(&gateway).await;
        let refused = gateway
            .command(
                "DELETE FROM users WHERE id IN (SELECT user_id FROM secrets)",
                vec![],
            )
            .await;
        assert!(
            matches!(&refused, Err(Error::TableAccessDenied { table, allowed })
                if table == "secrets" && allowed.contains(&"users".to_owned())),
            "{refused:?}"
        );
        // Refusals are never remembered as if they had passed.
        let refused_again = gateway
            .command(
                "DELETE FROM users WHERE id IN (SELECT user_id FROM secrets)",
                vec![],
            )
            .await;
        assert!(
            matches!(refused_again, Err(Error::TableAccessDenied { .. })),
            "{refused_again:?}"
        );
        let count = single(
            gateway
                .query("SELECT count(*) AS users FROM users", vec![])
                .await
                .expect("count"),
        );
        assert_eq!(count, json!({"users": 2}));
        drop_shop(&gateway).await;
    }

    #[actix_rt::test]
    async fn postgres_errors_keep_their_sqlstate_and_guard_errors_their_kind() {
        let gateway = TestGateway::start(&["users", "orders"]);
        create_shop(&gateway).await;
        let duplicate = gateway
            .command(
                "INSERT INTO users (id, name) VALUES ($1, $2)",
                vec![json!(1), json!("again")],
            )
            .await;
        assert!(
            matches!(&duplicate, Err(Error::Database { sqlstate, message })
                if sqlstate == "23505" && message.contains("duplicate key")),
            "{duplicate:?}"
        );
        let foreign = gateway
            .command("INSERT INTO orders VALUES (99, 99, 1)", vec![])
            .await;
        assert!(
            matches!(&foreign, Err(Error::Database { sqlstate, .. }) if sqlstate == "23503"),
            "{foreign:?}"
        );
        let missing_column = gateway.query("SELECT nope FROM users", vec![]).await;
        assert!(
            matches!(&missing_column, Err(Error::Database { sqlstate, .. }) if sqlstate == "42703"),
            "{missing_column:?}"
        );
        // The guard reports a syntax error as PostgreSQL would; nothing reaches the server.
        let syntax = gateway.query("SELEC id FROM users", vec![]).await;
        assert!(
            matches!(&syntax, Err(Error::Database { sqlstate, .. }) if sqlstate == "42601"),
            "{syntax:?}"
        );
        let refused = gateway.query("LOCK TABLE users", vec![]).await;
        assert!(
            matches!(refused, Err(Error::SqlNotAllowed { .. })),
            "{refused:?}"
        );

        let not_an_integer = gateway
            .query("SELECT name FROM users WHERE id = $1", vec![json!("one")])
            .await;
        assert!(
            matches!(&not_an_integer, Err(Error::InvalidValue { reason })
                if reason.contains("$1") && reason.contains("int4")),
            "{not_an_integer:?}"
        );
        let fraction = gateway
            .query("SELECT name FROM users WHERE id = $1", vec![json!(1.5)])
            .await;
        assert!(
            matches!(fraction, Err(Error::InvalidValue { .. })),
            "{fraction:?}"
        );
        let too_few = gateway
            .query(
                "SELECT name FROM users WHERE id = $1 AND name = $2",
                vec![json!(1)],
            )
            .await;
        assert!(
            matches!(too_few, Err(Error::InvalidValue { .. })),
            "{too_few:?}"
        );
        let integral_float = gateway
            .query("SELECT name FROM users WHERE id = $1", vec![json!(1.0)])
            .await
            .expect("1.0 is the integer 1");
        assert_eq!(integral_float, vec![json!({"name": "ada"})]);

        // A failed statement leaves the pooled connection usable.
        let names = gateway
            .query("SELECT name FROM users ORDER BY id", vec![])
            .await
            .expect("select after errors");
        assert_eq!(
            names,
            vec![json!({"name": "ada"}), json!({"name": "grace"})]
        );
        drop_shop(&gateway).await;
    }

    #[actix_rt::test]
    async fn a_changed_table_shape_does_not_break_prepared_statements() {
        let gateway = TestGateway::start(&["notes"]);
        gateway
            .command("CREATE TABLE notes (id int4 PRIMARY KEY)", vec![])
            .await
            .expect("create");
        gateway
            .command("INSERT INTO notes VALUES (1)", vec![])
            .await
            .expect("insert");
        let before = gateway
            .query("SELECT * FROM notes", vec![])
            .await
            .expect("select");
        assert_eq!(before, vec![json!({"id": 1})]);
        gateway
            .command("ALTER TABLE notes ADD COLUMN body text DEFAULT 'x'", vec![])
            .await
            .expect("alter");
        let after = gateway
            .query("SELECT * FROM notes", vec![])
            .await
            .expect("select again");
        assert_eq!(after, vec![json!({"id": 1, "body": "x"})]);
        gateway
            .command("DROP TABLE notes", vec![])
            .await
            .expect("drop");
    }

    #[actix_rt::test]
    async fn statements_of_one_plugin_run_concurrently() {
        let gateway = TestGateway::start(&["counters"]);
        gateway
            .command(
                "CREATE TABLE counters (id int4 PRIMARY KEY, value int4)",
                vec![],
            )
            .await
            .expect("create");
        gateway
            .command("INSERT INTO counters VALUES (1, 0)", vec![])
            .await
            .expect("insert");

        // Another connection holds the row's lock, so the gateway's UPDATE waits for it.
        let mut holder = gateway.backend.pool().get().await.expect("connection");
        let transaction = holder.transaction().await.expect("begin");
        transaction
            .execute(
                &format!(
                    "SELECT * FROM \"{}_counters\" WHERE id = 1 FOR UPDATE",
                    gateway.plugin
                ),
                &[],
            )
            .await
            .expect("lock row");
        let blocked = gateway.address.send(ExecuteSql {
            sql: "UPDATE counters SET value = value + 1 WHERE id = 1".to_owned(),
            parameters: vec![],
            expect: Expect::Affected,
        });
        let blocked = actix_rt::spawn(blocked);

        // While it waits, the same gateway still answers.
        let answered = tokio::time::timeout(
            Duration::from_secs(10),
            gateway.query("SELECT value FROM counters", vec![]),
        )
        .await
        .expect("a second statement is not stuck behind the first")
        .expect("select");
        assert_eq!(answered, vec![json!({"value": 0})]);
        assert!(!blocked.is_finished());

        transaction.commit().await.expect("commit");
        let outcome = blocked
            .await
            .expect("task")
            .expect("mailbox")
            .expect("update");
        assert_eq!(outcome, SqlOutcome::Affected(1));
        drop(holder);
        gateway
            .command("DROP TABLE counters", vec![])
            .await
            .expect("drop");
    }

    #[actix_rt::test]
    async fn an_unreachable_server_is_a_connection_failure() {
        let backend = DatabaseBackend::connect("postgres://postgres@127.0.0.1:1/test", 2)
            .expect("a pool is made without connecting");
        assert!(!backend.check().await);
        let plugin = unique_plugin();
        let address = DatabaseGateway::new(plugin, ResourceGrants::default(), backend).start();
        let outcome = address
            .send(ExecuteSql {
                sql: "SELECT 1 AS one".to_owned(),
                parameters: vec![],
                expect: Expect::Rows,
            })
            .await
            .expect("gateway is running");
        assert!(
            matches!(&outcome, Err(Error::Database { sqlstate, .. }) if sqlstate == "08006"),
            "{outcome:?}"
        );
    }

    #[actix_rt::test]
    async fn check_answers_for_a_running_server() {
        assert!(backend().check().await);
        assert!(DatabaseBackend::connect("not a url", 2).is_err());
        assert!(DatabaseBackend::connect(&database_url(), 0).is_err());
    }

    /// Counts what `warden_sql_denied_total` receives, by its `plugin` label.
    #[derive(Default)]
    struct DeniedCounter {
        counts: std::sync::Mutex<HashMap<String, u64>>,
    }

    struct DeniedHandle {
        plugin: String,
        counter: Arc<DeniedCounter>,
    }

    impl metrics::CounterFn for DeniedHandle {
        fn increment(&self, value: u64) {
            let mut counts = self.counter.counts.lock().expect("counts lock");
            *counts.entry(self.plugin.clone()).or_default() += value;
        }

        fn absolute(&self, _: u64) {}
    }

    struct DeniedRecorder(Arc<DeniedCounter>);

    impl metrics::Recorder for DeniedRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            if key.name() != "warden_sql_denied_total" {
                return metrics::Counter::noop();
            }
            let plugin = key
                .labels()
                .find(|label| label.key() == "plugin")
                .map(|label| label.value().to_owned())
                .unwrap_or_default();
            metrics::Counter::from_arc(Arc::new(DeniedHandle {
                plugin,
                counter: Arc::clone(&self.0),
            }))
        }

        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn every_refusal_is_counted_for_its_plugin() {
        let plugin = unique_plugin();
        let grants = ResourceGrants::resolve(&plugin, &["users".to_owned()], &[], &[], None)
            .expect("test grants resolve");
        let mut gateway = DatabaseGateway::new(plugin.clone(), grants, backend());
        let counter = Arc::new(DeniedCounter::default());
        let recorder = DeniedRecorder(Arc::clone(&counter));
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..2 {
                assert!(matches!(
                    gateway.check("SELECT * FROM secrets"),
                    Err(Error::TableAccessDenied { .. })
                ));
            }
            assert!(matches!(
                gateway.check("DROP SCHEMA public"),
                Err(Error::SqlNotAllowed { .. })
            ));
            let checked = gateway.check("SELECT * FROM users").expect("allowed");
            assert!(
                checked.sql.contains(&format!("\"{plugin}_users\"")),
                "{checked:?}"
            );
            assert!(!checked.changes_schema);
        });
        let counts = counter.counts.lock().expect("counts lock");
        assert_eq!(counts.get(&plugin), Some(&3), "{counts:?}");
    }

    #[test]
    fn numeric_literals_are_recognised() {
        for literal in [
            "1",
            "-1.5",
            "+.5",
            "5.",
            "1e10",
            "1.5E-3",
            "NaN",
            "-Infinity",
            "inf",
        ] {
            assert!(is_numeric_literal(literal), "{literal}");
        }
        for literal in ["", ".", "1e", "e5", "1.2.3", "12a", "--1", "1e+-2", "0x10"] {
            assert!(!is_numeric_literal(literal), "{literal}");
        }
    }
}
