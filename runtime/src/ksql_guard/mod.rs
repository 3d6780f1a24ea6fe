//! The ksqlDB guard: one allowed statement, its names checked and prefixed, re-printed from tokens.
//!
//! ksqlDB has no parser in Rust, so the guard tokenizes the statement itself and walks the small
//! part of ksqlDB's grammar a plugin may use; whatever it does not recognise is refused. The
//! statement forwarded to ksqlDB is printed from the checked tokens (comments dropped, names
//! rewritten, one `;` at the end), so what ksqlDB runs is exactly what was checked.
//!
//! Allowed kinds:
//!
//! - `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name [(columns)] WITH (properties)`
//! - `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name WITH (properties) AS SELECT …`
//! - `INSERT INTO name [(columns)] VALUES (…)` and `INSERT INTO name SELECT …`
//! - `DROP STREAM|TABLE [IF EXISTS] name` (never `DELETE TOPIC`)
//! - `DESCRIBE name [EXTENDED]`
//! - a pull query: `SELECT … FROM name …` without `EMIT`
//!
//! Every stream and table name (after `CREATE`, `DROP`, `INSERT INTO`, `FROM`, `JOIN` and
//! `DESCRIBE`) is prefixed with the plugin's name like a table or topic (by
//! [`crate::resources::physical_name`], so it follows the table naming rule), as a backquoted
//! lowercase identifier; a source named in `FROM`/`JOIN` keeps the name the plugin wrote as its
//! alias, so column references such as `s.id` still resolve. Every `CREATE` must name a granted
//! topic in `KAFKA_TOPIC`, which is rewritten to its physical name. Refusals are
//! [`Error::SqlNotAllowed`] (the plugin API has no ksqlDB refusal of its own, and a ksqlDB
//! statement is SQL to the plugin), except for a topic the plugin was not granted, which is
//! [`Error::TopicAccessDenied`] as everywhere else in `context.kafka`.

mod grammar;
mod tokens;

#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::resources::ResourceGrants;
use grammar::Guard;
use tokens::{render, tokenize};

/// The longest statement the guard accepts, in bytes: far above any real statement, and it
/// keeps refusal logs and the guard's own work small.
const MAX_KSQL_STATEMENT_BYTES: usize = 64 * 1024;

/// The most partitions a `PARTITIONS` property may ask for: every partition costs the broker
/// memory and files, and one plugin's statement must not cost the cluster more than a handful.
const MAX_PARTITIONS: u64 = 64;

/// The most replicas a `REPLICAS` property may ask for.
const MAX_REPLICAS: u64 = 16;

/// The statement kinds a plugin may send, for refusal messages.
const ALLOWED_KINDS: &str = "CREATE STREAM/TABLE, CREATE STREAM/TABLE … AS SELECT, INSERT INTO, \
     DROP STREAM/TABLE, DESCRIBE and pull queries (SELECT without EMIT)";

/// Properties a `WITH (…)` clause may set. Anything else (schema ids and names, connector or
/// stream settings) reaches beyond the plugin's own topics or is not vetted.
const ALLOWED_PROPERTIES: &str = "\
    KAFKA_TOPIC KEY_FORMAT VALUE_FORMAT FORMAT PARTITIONS REPLICAS TIMESTAMP TIMESTAMP_FORMAT \
    KEY_DELIMITER VALUE_DELIMITER WRAP_SINGLE_VALUE WINDOW_TYPE WINDOW_SIZE";

/// The serialization formats a format property may name.
const ALLOWED_FORMATS: &str = "JSON JSON_SR AVRO PROTOBUF PROTOBUF_NOSR DELIMITED KAFKA NONE";

/// Built-in functions an expression may call: pure scalar, collection and aggregate functions
/// of ksqlDB. A name outside this list may be a user-defined function installed on the server,
/// which the guard cannot vet; regular-expression functions are left out because a crafted
/// pattern can keep a ksqlDB thread busy for a long time, and `GENERATE_SERIES` because it
/// builds arrays of any size.
const ALLOWED_FUNCTIONS: &str = "\
    ABS CEIL FLOOR ROUND SIGN SQRT EXP LN GREATEST LEAST RANDOM CONCAT CONCAT_WS LCASE UCASE LEN \
    TRIM LTRIM RTRIM SUBSTRING REPLACE INSTR SPLIT LPAD RPAD INITCAP MASK MASK_LEFT MASK_RIGHT \
    MASK_KEEP_LEFT MASK_KEEP_RIGHT CHR ENCODE UUID COALESCE IFNULL NULLIF EXTRACTJSONFIELD \
    IS_JSON_STRING JSON_ARRAY_LENGTH JSON_KEYS JSON_RECORDS JSON_CONCAT TO_JSON_STRING \
    UNIX_TIMESTAMP UNIX_DATE TIMESTAMPTOSTRING STRINGTOTIMESTAMP DATETOSTRING STRINGTODATE \
    FORMAT_TIMESTAMP PARSE_TIMESTAMP FORMAT_DATE PARSE_DATE FORMAT_TIME PARSE_TIME FROM_UNIXTIME \
    FROM_DAYS TIMESTAMPADD TIMESTAMPSUB DATEADD DATESUB CONVERT_TZ ARRAY_LENGTH ARRAY_CONTAINS \
    ARRAY_DISTINCT ARRAY_EXCEPT ARRAY_INTERSECT ARRAY_UNION ARRAY_JOIN ARRAY_MAX ARRAY_MIN \
    ARRAY_SORT ARRAY_REMOVE AS_MAP MAP_KEYS MAP_VALUES MAP_UNION ELT FIELD SLICE ENTRIES EXPLODE \
    AS_VALUE COUNT COUNT_DISTINCT SUM AVG MIN MAX COLLECT_LIST COLLECT_SET EARLIEST_BY_OFFSET \
    LATEST_BY_OFFSET TOPK TOPKDISTINCT HISTOGRAM STDDEV_SAMPLE CORRELATION";

/// Keywords that may stand before `(` in an expression without being a function call.
const PARENTHESIZED_KEYWORDS: &str = "\
    AND OR NOT IN WHEN THEN ELSE CAST STRUCT MAP ARRAY LIKE BETWEEN DECIMAL AS";

/// Keywords that end an expression at the top level of a query (and are refused inside
/// parentheses, where ksqlDB has no use for them).
const CLAUSE_KEYWORDS: &str = "\
    FROM WINDOW WHERE GROUP PARTITION HAVING EMIT LIMIT JOIN LEFT RIGHT FULL INNER OUTER ON \
    WITHIN";

/// Keywords that never belong in an expression: they start statements, name sources or
/// topics, or set server state. Refusing them anywhere keeps every source name in a place the
/// guard rewrites.
const FORBIDDEN_IN_EXPRESSIONS: &str = "\
    SELECT INTO VALUES INSERT CREATE DROP DELETE TERMINATE RUN SCRIPT SET UNSET DEFINE UNDEFINE \
    PRINT SHOW LIST DESCRIBE EXPLAIN ALTER PAUSE RESUME ASSERT CONNECTOR TOPIC WITH STREAM TABLE";

/// Unquoted words that cannot be stream or table names: ksqlDB reads several of them as
/// listing everything (`DESCRIBE STREAMS`), which would show other plugins' names.
const RESERVED_NAMES: &str = "\
    STREAMS TABLES TOPICS QUERIES FUNCTION FUNCTIONS TYPES CONNECTOR CONNECTORS PROPERTIES \
    VARIABLES EXTENDED ALL";

/// Words inside `WINDOW TUMBLING (…)`, `WITHIN …` and their durations.
const DURATION_WORDS: &str = "\
    SIZE ADVANCE BY RETENTION GRACE PERIOD MILLISECOND MILLISECONDS SECOND SECONDS MINUTE \
    MINUTES HOUR HOURS DAY DAYS";

/// What a checked statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsqlStatementKind {
    /// `CREATE STREAM` on a topic.
    CreateStream,
    /// `CREATE TABLE` on a topic.
    CreateTable,
    /// `CREATE STREAM … AS SELECT`: a persistent query.
    CreateStreamAsSelect,
    /// `CREATE TABLE … AS SELECT`: a persistent query.
    CreateTableAsSelect,
    /// `INSERT INTO … VALUES`.
    InsertValues,
    /// `INSERT INTO … SELECT`: a persistent query.
    InsertSelect,
    /// `DROP STREAM`.
    DropStream,
    /// `DROP TABLE`.
    DropTable,
    /// `DESCRIBE`.
    Describe,
    /// A pull query, answered once (ksqlDB's `/query` endpoint).
    PullQuery,
}

impl KsqlStatementKind {
    /// The kind's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KsqlStatementKind::CreateStream => "create_stream",
            KsqlStatementKind::CreateTable => "create_table",
            KsqlStatementKind::CreateStreamAsSelect => "create_stream_as_select",
            KsqlStatementKind::CreateTableAsSelect => "create_table_as_select",
            KsqlStatementKind::InsertValues => "insert_values",
            KsqlStatementKind::InsertSelect => "insert_select",
            KsqlStatementKind::DropStream => "drop_stream",
            KsqlStatementKind::DropTable => "drop_table",
            KsqlStatementKind::Describe => "describe",
            KsqlStatementKind::PullQuery => "pull_query",
        }
    }

    /// Whether ksqlDB answers this kind on its query endpoint rather than its statement one.
    pub fn is_query(self) -> bool {
        self == KsqlStatementKind::PullQuery
    }
}

/// A statement that passed the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedKsql {
    /// The statement to forward: printed from its checked tokens, ending with `;`.
    pub statement: String,
    /// What it does.
    pub kind: KsqlStatementKind,
}

/// Checks one ksqlDB statement of `plugin` against its grants and rewrites it (see the module
/// documentation for what passes).
pub fn guard_ksql_statement(
    plugin: &str,
    statement: &str,
    grants: &ResourceGrants,
) -> Result<GuardedKsql> {
    if statement.len() > MAX_KSQL_STATEMENT_BYTES {
        return Err(refused(format!(
            "the statement is {} bytes, over the {MAX_KSQL_STATEMENT_BYTES}-byte limit",
            statement.len()
        )));
    }
    let tokens = tokenize(statement)?;
    let mut guard = Guard::new(plugin, grants, tokens);
    let kind = guard.statement()?;
    guard.end()?;
    Ok(GuardedKsql {
        statement: render(guard.output()),
        kind,
    })
}

/// Whether `word` is one of the space-separated words of `list`.
fn listed(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|listed| listed == word)
}

/// The words of `list`, comma-separated, for messages.
fn listing(list: &str) -> String {
    list.split_whitespace().collect::<Vec<_>>().join(", ")
}

fn refused(reason: impl Into<String>) -> Error {
    Error::SqlNotAllowed {
        reason: format!("ksql: {}", reason.into()),
    }
}
