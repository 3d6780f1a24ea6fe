//! Attacks on the ksqlDB guard, and the statements it must let through.

use super::*;

fn grants(plugin: &str, topics: &[&str]) -> ResourceGrants {
    let topics: Vec<String> = topics.iter().map(|topic| topic.to_string()).collect();
    ResourceGrants::resolve(plugin, &[], &topics, &[], None).expect("valid grants")
}

/// The statement as forwarded for plugin `orders` granted `events` and `audit.log`.
fn forwarded(statement: &str) -> String {
    match guard_ksql_statement(
        "orders",
        statement,
        &grants("orders", &["events", "audit.log"]),
    ) {
        Ok(guarded) => guarded.statement,
        Err(error) => panic!("{statement:?} was refused: {error}"),
    }
}

fn kind(statement: &str) -> KsqlStatementKind {
    guard_ksql_statement(
        "orders",
        statement,
        &grants("orders", &["events", "audit.log"]),
    )
    .map(|guarded| guarded.kind)
    .unwrap_or_else(|error| panic!("{statement:?} was refused: {error}"))
}

/// Asserts a refusal with `SqlNotAllowed` whose reason contains `because`.
fn assert_refused(statement: &str, because: &str) {
    match guard_ksql_statement(
        "orders",
        statement,
        &grants("orders", &["events", "audit.log"]),
    ) {
        Err(Error::SqlNotAllowed { reason }) => assert!(
            reason.contains(because),
            "{statement:?}: reason {reason:?} does not mention {because:?}"
        ),
        other => panic!("{statement:?} should be refused ({because}), got {other:?}"),
    }
}

fn assert_topic_denied(statement: &str, topic: &str) {
    match guard_ksql_statement(
        "orders",
        statement,
        &grants("orders", &["events", "audit.log"]),
    ) {
        Err(Error::TopicAccessDenied {
            topic: denied,
            allowed,
        }) => {
            assert_eq!(denied, topic);
            assert_eq!(allowed, ["events", "audit.log"]);
        }
        other => panic!("{statement:?} should be denied topic {topic}, got {other:?}"),
    }
}

#[test]
fn create_statements_get_prefixed_names_and_physical_topics() {
    assert_eq!(
        forwarded("CREATE STREAM pageviews (id INT KEY, url STRING) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');"),
        "CREATE STREAM `orders_pageviews` (id INT KEY, url STRING) WITH (KAFKA_TOPIC = 'orders_events', VALUE_FORMAT = 'JSON');"
    );
    assert_eq!(
        kind("CREATE STREAM s (id INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON')"),
        KsqlStatementKind::CreateStream
    );
    // Any case for keywords and properties, whitespace and line breaks anywhere; an
    // unquoted name is read in lower case, a trailing `;` is added.
    assert_eq!(
        forwarded("create or replace table IF not EXISTS Totals (\n  id STRING PRIMARY KEY,\n  n ARRAY<STRUCT<a INT, b MAP<STRING, DECIMAL(10, 2)>>>\n) with (kafka_topic = 'audit.log', partitions=1, key_format='kafka', WRAP_SINGLE_VALUE=false)"),
        "create or replace table IF not EXISTS `orders_totals` (id STRING PRIMARY KEY, n ARRAY < STRUCT < a INT, b MAP < STRING, DECIMAL(10, 2) > > >) with (kafka_topic = 'orders_audit.log', partitions = 1, key_format = 'kafka', WRAP_SINGLE_VALUE = false);"
    );
    assert_eq!(
        kind("CREATE TABLE t (id STRING PRIMARY KEY) WITH (KAFKA_TOPIC='events', FORMAT='JSON')"),
        KsqlStatementKind::CreateTable
    );
    // A quoted lowercase name is the same name.
    assert_eq!(
        forwarded("CREATE STREAM `pageviews` (v STRING HEADER('trace')) WITH (KAFKA_TOPIC='events')"),
        "CREATE STREAM `orders_pageviews` (v STRING HEADER('trace')) WITH (KAFKA_TOPIC = 'orders_events');"
    );
}

#[test]
fn persistent_queries_prefix_every_source_and_keep_the_written_name_as_alias() {
    assert_eq!(
        forwarded("CREATE STREAM enriched WITH (KAFKA_TOPIC='audit.log') AS SELECT v.id, u.name, COUNT(*) AS n FROM views v LEFT JOIN users u WITHIN 1 HOUR ON v.user_id = u.id WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) WHERE v.url LIKE '%x%' GROUP BY v.id, u.name HAVING COUNT(*) > 1 EMIT CHANGES;"),
        "CREATE STREAM `orders_enriched` WITH (KAFKA_TOPIC = 'orders_audit.log') AS SELECT v.id, u.name, COUNT(*) AS n FROM `orders_views` v LEFT JOIN `orders_users` u WITHIN 1 HOUR ON v.user_id = u.id WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) WHERE v.url LIKE '%x%' GROUP BY v.id, u.name HAVING COUNT(*) > 1 EMIT CHANGES;"
    );
    // Without an alias, the written name becomes one, so `views.id` still resolves.
    assert_eq!(
        forwarded("CREATE TABLE t WITH (KAFKA_TOPIC='events') AS SELECT views.id, LATEST_BY_OFFSET(views.url) AS url FROM views INNER JOIN other ON views.id = other.id GROUP BY views.id"),
        "CREATE TABLE `orders_t` WITH (KAFKA_TOPIC = 'orders_events') AS SELECT views.id, LATEST_BY_OFFSET(views.url) AS url FROM `orders_views` views INNER JOIN `orders_other` other ON views.id = other.id GROUP BY views.id;"
    );
    assert_eq!(kind("CREATE STREAM s WITH (KAFKA_TOPIC='events') AS SELECT * FROM x PARTITION BY id EMIT CHANGES"), KsqlStatementKind::CreateStreamAsSelect);
    assert_eq!(kind("CREATE TABLE s WITH (KAFKA_TOPIC='events') AS SELECT id, SUM(n) FROM x AS y GROUP BY id"), KsqlStatementKind::CreateTableAsSelect);
    assert_eq!(
        forwarded("INSERT INTO archive SELECT CAST(id AS STRING) AS id, CASE WHEN n > 0 THEN 'p' ELSE 'n' END AS sign FROM live EMIT CHANGES"),
        "INSERT INTO `orders_archive` SELECT CAST(id AS STRING) AS id, CASE WHEN n > 0 THEN 'p' ELSE 'n' END AS sign FROM `orders_live` live EMIT CHANGES;"
    );
    assert_eq!(
        kind("INSERT INTO archive SELECT * FROM live"),
        KsqlStatementKind::InsertSelect
    );
}

#[test]
fn inserts_drops_describes_and_pull_queries_are_rewritten() {
    assert_eq!(
        forwarded("INSERT INTO s (id, `Mixed Case`) VALUES (1, 'it''s -- not a comment /* nor this */')"),
        "INSERT INTO `orders_s` (id, `Mixed Case`) VALUES (1, 'it''s -- not a comment /* nor this */');"
    );
    assert_eq!(
        kind("INSERT INTO s VALUES (ARRAY[1, 2], MAP('a' := 1.5e3), .5)"),
        KsqlStatementKind::InsertValues
    );
    assert_eq!(
        forwarded("DROP STREAM IF EXISTS s;"),
        "DROP STREAM IF EXISTS `orders_s`;"
    );
    assert_eq!(kind("drop table t"), KsqlStatementKind::DropTable);
    assert_eq!(
        forwarded("DESCRIBE s EXTENDED"),
        "DESCRIBE `orders_s` EXTENDED;"
    );
    assert_eq!(
        forwarded("DESCRIBE EXTENDED s"),
        "DESCRIBE EXTENDED `orders_s`;"
    );
    assert_eq!(
        forwarded("SELECT * FROM totals WHERE id = 'a' AND n IN (1, 2) LIMIT 10;"),
        "SELECT * FROM `orders_totals` totals WHERE id = 'a' AND n IN (1, 2) LIMIT 10;"
    );
    let pull = guard_ksql_statement("orders", "SELECT id FROM t", &grants("orders", &[])).unwrap();
    assert!(pull.kind.is_query());
    assert!(!KsqlStatementKind::Describe.is_query());
}

#[test]
fn comments_are_removed_and_cannot_hide_a_second_statement() {
    assert_eq!(
        forwarded("DROP /* why */ STREAM s -- gone\n;"),
        "DROP STREAM `orders_s`;"
    );
    // The comment swallows nothing the guard does not see: the second statement is
    // outside it, so it is a second statement.
    assert_refused(
        "DROP STREAM s; /* hidden */ TERMINATE ALL;",
        "only one statement",
    );
    assert_refused(
        "DROP STREAM s; -- a comment\nDROP STREAM t",
        "only one statement",
    );
    assert_refused("DROP STREAM s;;", "only one statement");
    // A line comment ends at a line break: what follows is read, and refused.
    assert_refused(
        "DESCRIBE s -- x\r TERMINATE ALL",
        "the end of the statement expected",
    );
    assert_refused("DESCRIBE s /* never closed", "unterminated /* comment");
    // Text after a comment inside a statement is still checked.
    assert_refused(
        "CREATE STREAM s WITH (KAFKA_TOPIC='events' /* , */, VALUE_SCHEMA_ID=1)",
        "VALUE_SCHEMA_ID is not allowed",
    );
    // `--` and `/*` inside a string stay in the string.
    assert_eq!(
        forwarded("INSERT INTO s (v) VALUES ('--'); "),
        "INSERT INTO `orders_s` (v) VALUES ('--');"
    );
}

#[test]
fn quoting_tricks_are_read_as_ksqldb_reads_them() {
    // An escaped quote does not end the string, so the `;` and the second statement are
    // inside it and the whole value is checked as one topic name.
    assert_topic_denied(
        "CREATE STREAM s WITH (KAFKA_TOPIC='events''); DROP STREAM x; --')",
        "events'); DROP STREAM x; --",
    );
    assert_topic_denied("CREATE STREAM s WITH (KAFKA_TOPIC=' events')", " events");
    assert_refused(
        "INSERT INTO s VALUES ('unterminated)",
        "unterminated ' quote",
    );
    assert_refused("DESCRIBE `s", "unterminated ` quote");
    assert_refused("DESCRIBE \"s", "unterminated \" quote");
    // A quoted name that ksqlDB would keep in another case, or with other characters, is
    // not a name the plugin may use.
    assert_refused("DROP STREAM `S`", "stream or table name 'S' is not allowed");
    assert_refused("DROP STREAM \"a b\"", "is not allowed");
    assert_refused("DROP STREAM ``", "non-empty");
    // A doubled backquote inside a quoted identifier is one backquote, and not a name.
    assert_refused("DROP STREAM `a``b`", "is not allowed");
    // A quoted identifier is re-printed with its escapes.
    assert_eq!(
        forwarded("INSERT INTO s (`a``b`, \"c\"\"d\") VALUES (1, 2)"),
        "INSERT INTO `orders_s` (`a``b`, `c\"d`) VALUES (1, 2);"
    );
    // The property key must be a bare word; a string or quoted key is not read as one.
    assert_refused(
        "CREATE STREAM s WITH ('KAFKA_TOPIC'='billing_events')",
        "a property name expected",
    );
    assert_refused(
        "CREATE STREAM s WITH (`KAFKA_TOPIC`='billing_events')",
        "a property name expected",
    );
    // A topic given as a name or a number is not a topic.
    assert_refused(
        "CREATE STREAM s WITH (KAFKA_TOPIC=events)",
        "a value for KAFKA_TOPIC expected",
    );
}

#[test]
fn unicode_and_invisible_characters_are_refused_outside_and_inside_quotes() {
    // A full-width semicolon, a no-break space, a homoglyph and a non-ASCII letter.
    assert_refused(
        "DROP STREAM s； TERMINATE ALL",
        "not allowed outside string literals",
    );
    assert_refused("DROP\u{a0}STREAM s", "not allowed outside string literals");
    assert_refused("DROP STREAM ѕ", "not allowed outside string literals");
    assert_refused("DESCRIBE café", "not allowed outside string literals");
    // Direction overrides and zero-width characters, even quoted.
    assert_refused(
        "INSERT INTO s VALUES ('\u{202e}evil')",
        "invisible character",
    );
    assert_refused("DROP STREAM `s\u{200b}`", "invisible character");
    assert_refused("INSERT INTO s VALUES ('a\u{0}b')", "invisible character");
    // Ordinary non-ASCII text in a string literal is fine.
    assert_eq!(
        forwarded("INSERT INTO s (v) VALUES ('é ✓ 日本')"),
        "INSERT INTO `orders_s` (v) VALUES ('é ✓ 日本');"
    );
}

#[test]
fn another_plugins_streams_and_global_names_are_out_of_reach() {
    // Plugin `orders` naming `billing_payments` reaches `orders_billing_payments`, never
    // billing's stream `billing_payments`.
    assert_eq!(
        forwarded("INSERT INTO billing_payments SELECT * FROM billing_invoices"),
        "INSERT INTO `orders_billing_payments` SELECT * FROM `orders_billing_invoices` billing_invoices;"
    );
    assert_eq!(
        forwarded("DROP TABLE billing_totals"),
        "DROP TABLE `orders_billing_totals`;"
    );
    assert_eq!(
        forwarded("DESCRIBE KSQL_PROCESSING_LOG"),
        "DESCRIBE `orders_ksql_processing_log`;"
    );
    // Listing everything is refused.
    assert_refused("DESCRIBE STREAMS", "cannot be a stream or table name");
    assert_refused(
        "DESCRIBE TABLES EXTENDED",
        "cannot be a stream or table name",
    );
    assert_refused(
        "DESCRIBE FUNCTION concat",
        "cannot be a stream or table name",
    );
    assert_refused("DESCRIBE CONNECTOR c", "cannot be a stream or table name");
    // Another plugin's topic, under its own or its physical name.
    assert_topic_denied(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='billing_events')",
        "billing_events",
    );
    assert_topic_denied(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='orders_events')",
        "orders_events",
    );
    assert_topic_denied(
        "CREATE TABLE t WITH (KAFKA_TOPIC='payments') AS SELECT id, COUNT(*) FROM x GROUP BY id",
        "payments",
    );
    // A name whose physical form passes the store's limit is refused, not truncated.
    let long = "s".repeat(60);
    assert_refused(&format!("DROP STREAM {long}"), "over the 63-byte limit");
    // A qualified source could be read as another namespace.
    assert_refused("SELECT * FROM other.s", "the end of the statement expected");
}

#[test]
fn statement_kinds_outside_the_list_are_refused() {
    for (statement, because) in [
        ("TERMINATE ALL", "TERMINATE statements are not allowed"),
        (
            "TERMINATE CSAS_ORDERS_S_1",
            "TERMINATE statements are not allowed",
        ),
        ("RUN SCRIPT '/etc/passwd'", "RUN statements are not allowed"),
        (
            "SET 'auto.offset.reset'='earliest'",
            "SET statements are not allowed",
        ),
        (
            "UNSET 'auto.offset.reset'",
            "UNSET statements are not allowed",
        ),
        (
            "DEFINE topic = 'billing_events'",
            "DEFINE statements are not allowed",
        ),
        ("UNDEFINE topic", "UNDEFINE statements are not allowed"),
        (
            "PRINT 'billing_events' FROM BEGINNING",
            "PRINT statements are not allowed",
        ),
        ("PRINT billing_events", "PRINT statements are not allowed"),
        ("SHOW STREAMS", "SHOW statements are not allowed"),
        ("LIST TOPICS", "LIST statements are not allowed"),
        ("SHOW QUERIES EXTENDED", "SHOW statements are not allowed"),
        (
            "EXPLAIN SELECT * FROM s",
            "EXPLAIN statements are not allowed",
        ),
        (
            "ALTER STREAM s ADD COLUMN x INT",
            "ALTER statements are not allowed",
        ),
        ("PAUSE ALL", "PAUSE statements are not allowed"),
        (
            "ASSERT TOPIC billing_events",
            "ASSERT statements are not allowed",
        ),
        (
            "CREATE SOURCE CONNECTOR c WITH ('connector.class'='x')",
            "CREATE SOURCE is not allowed",
        ),
        (
            "CREATE SINK CONNECTOR c WITH ('connector.class'='x')",
            "CREATE SINK is not allowed",
        ),
        (
            "CREATE SOURCE STREAM s (v STRING) WITH (KAFKA_TOPIC='events')",
            "CREATE SOURCE is not allowed",
        ),
        (
            "CREATE TYPE t AS STRUCT<a INT>",
            "CREATE TYPE is not allowed",
        ),
        ("DROP CONNECTOR c", "only DROP STREAM and DROP TABLE"),
        ("DROP TYPE t", "only DROP STREAM and DROP TABLE"),
        ("DROP STREAM s DELETE TOPIC", "DELETE TOPIC is not allowed"),
        (
            "DROP TABLE IF EXISTS t DELETE TOPIC;",
            "DELETE TOPIC is not allowed",
        ),
        ("SELECT * FROM s EMIT CHANGES", "push queries"),
        ("SELECT * FROM s EMIT FINAL LIMIT 1", "push queries"),
        ("", "a statement keyword expected"),
        (";", "a statement keyword expected"),
        ("-- only a comment", "a statement keyword expected"),
        ("'DROP STREAM s'", "a statement keyword expected"),
    ] {
        assert_refused(statement, because);
    }
}

#[test]
fn create_needs_a_granted_topic_and_only_vetted_properties() {
    assert_refused(
        "CREATE STREAM s (v STRING)",
        "must name one of the plugin's topics",
    );
    assert_refused(
        "CREATE STREAM s AS SELECT * FROM x",
        "must name one of the plugin's topics",
    );
    assert_refused(
        "CREATE STREAM s WITH (VALUE_FORMAT='JSON') AS SELECT * FROM x",
        "must name one of the plugin's topics",
    );
    for property in [
        "VALUE_SCHEMA_ID=1",
        "KEY_SCHEMA_FULL_NAME='x'",
        "VALUE_AVRO_SCHEMA_FULL_NAME='x'",
        "RETENTION_MS=1",
        "SOURCE_CONNECTOR='x'",
        "CLEANUP_POLICY='compact'",
    ] {
        assert_refused(
            &format!("CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events', {property})"),
            "is not allowed; allowed: KAFKA_TOPIC",
        );
    }
    assert_refused(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events', kafka_topic='audit.log')",
        "given twice",
    );
    assert_refused(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='PLUGIN_FORMAT')",
        "format 'PLUGIN_FORMAT' is not allowed",
    );
    assert_refused(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events', PARTITIONS=100000)",
        "PARTITIONS must be a whole number from 1 to 64",
    );
    assert_refused(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events', PARTITIONS=0)",
        "PARTITIONS must be",
    );
    assert_refused(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events', REPLICAS=1.5)",
        "REPLICAS must be",
    );
    assert_refused(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events', PARTITIONS='3')",
        "a value for PARTITIONS expected",
    );
    // Columns and AS SELECT together are not a statement.
    assert_refused(
        "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events') AS SELECT * FROM x",
        "the end of the statement expected",
    );
    // Column definitions hold names and types only.
    assert_refused(
        "CREATE STREAM s (v STRING, w SELECT) WITH (KAFKA_TOPIC='events')",
        "a column definition expected",
    );
    assert_refused(
        "CREATE STREAM s (v MY_UDF(1)) WITH (KAFKA_TOPIC='events')",
        "a column definition expected",
    );
    assert_refused(
        "CREATE STREAM s (v ARRAY<INT) WITH (KAFKA_TOPIC='events')",
        "balanced brackets",
    );
}

#[test]
fn expressions_call_only_vetted_functions_and_name_no_sources() {
    for (statement, because) in [
        (
            "SELECT MY_UDF(v) FROM s",
            "the function MY_UDF is not allowed",
        ),
        (
            "SELECT id FROM s WHERE EXEC_SHELL('rm') = 1",
            "the function EXEC_SHELL is not allowed",
        ),
        (
            "SELECT REGEXP_REPLACE(v, '(a+)+$', '') FROM s",
            "the function REGEXP_REPLACE is not allowed",
        ),
        (
            "SELECT GENERATE_SERIES(1, 1000000000) FROM s",
            "the function GENERATE_SERIES is not allowed",
        ),
        ("SELECT `COUNT`(*) FROM s", "quoted function name"),
        (
            "SELECT ARRAY_SORT(a, x => x + 1) FROM s",
            "lambda expressions are not allowed",
        ),
        (
            "SELECT TRANSFORM(a, x => x + 1) FROM s",
            "the function TRANSFORM is not allowed",
        ),
        (
            "SELECT (SELECT 1 FROM t) FROM s",
            "SELECT is not allowed in an expression",
        ),
        (
            "SELECT id FROM s WHERE id IN (SELECT id FROM billing_s)",
            "SELECT is not allowed in an expression",
        ),
        (
            "SELECT COUNT(FROM) FROM s",
            "FROM is not allowed inside parentheses",
        ),
        // ksqlDB reads this FROM as part of the predicate; the guard refuses it rather than guess.
        (
            "SELECT id FROM s WHERE id IS DISTINCT FROM billing_s",
            "the end of the statement expected",
        ),
        (
            "INSERT INTO s VALUES (1) ; INSERT INTO billing_s VALUES (1)",
            "only one statement",
        ),
        ("INSERT INTO s VALUES ((1)", "')' expected"),
        ("INSERT INTO s VALUES (1])", "')' expected"),
        ("INSERT INTO s VALUES (a[1)])", "balanced brackets"),
        (
            "SELECT id FROM s WHERE v = '${secret}'",
            "variable substitution",
        ),
        (
            "SELECT id FROM s WHERE v = ${secret}",
            "not allowed outside string literals",
        ),
        (
            "SELECT id FROM s WHERE v = ?",
            "not allowed outside string literals",
        ),
        (
            "SELECT id FROM s WHERE a || b",
            "not allowed outside string literals",
        ),
        ("SELECT 1abc FROM s", "neither a number nor a name"),
        ("SELECT 1.2.3 FROM s", "neither a number nor a name"),
        (
            "SELECT * FROM s, billing_s",
            "the end of the statement expected",
        ),
        (
            "SELECT * FROM s WITH (KAFKA_TOPIC='billing')",
            "an alias expected",
        ),
        (
            "SELECT * FROM s JOIN t WITHIN 1 FORTNIGHT ON s.id = t.id",
            "a duration expected",
        ),
        (
            "SELECT * FROM s WINDOW SLIDING (SIZE 1 HOUR)",
            "TUMBLING, HOPPING or SESSION expected",
        ),
        (
            "SELECT * FROM s WINDOW TUMBLING (SIZE 1 HOUR, EVIL(1))",
            "a duration expected",
        ),
        ("SELECT FROM s", "an expression expected"),
        ("SELECT * FROM", "a stream or table name expected"),
        ("SELECT * FROM s LIMIT all", "a number expected"),
        (
            "INSERT INTO s WITH (QUERY_ID='x') SELECT * FROM t",
            "VALUES or SELECT expected",
        ),
    ] {
        assert_refused(statement, because);
    }
}

#[test]
fn output_never_holds_a_comment_or_a_joined_token() {
    // `-` and `/` never touch a following `-` or `*`.
    assert_eq!(
        forwarded("INSERT INTO s VALUES (1- -1, 2/ *x, (-1), a.b, s.*)"),
        "INSERT INTO `orders_s` VALUES (1 - - 1, 2 / * x, (- 1), a.b, s.*);"
    );
    assert_eq!(
        forwarded("SELECT a->b, x[1], COUNT(*)>=2 FROM s WHERE v<>'' AND w!=.5 GROUP BY a"),
        "SELECT a -> b, x [1], COUNT(*) >= 2 FROM `orders_s` s WHERE v <> '' AND w != .5 GROUP BY a;"
    );
}

#[test]
fn oversized_statements_are_refused_and_names_of_other_plugins_follow_the_plugin() {
    let huge = format!(
        "INSERT INTO s VALUES ('{}')",
        "x".repeat(MAX_KSQL_STATEMENT_BYTES)
    );
    assert_refused(&huge, "over the 65536-byte limit");
    // The prefix is the plugin's own, whatever it is called, and quoted when it has `-`.
    let guarded = guard_ksql_statement(
        "order-service",
        "DROP STREAM s",
        &grants("order-service", &[]),
    )
    .unwrap();
    assert_eq!(guarded.statement, "DROP STREAM `order-service_s`;");
}

#[test]
fn no_input_panics() {
    // Every prefix of a rich statement, and a few byte soups: refused or accepted, never a
    // panic (slicing at a byte that is not a character boundary would panic).
    let statement = "CREATE STREAM é WITH (KAFKA_TOPIC='events') AS SELECT `x`, \"y\", 'z''' /* c */ -- d\n FROM s; ✓";
    for (index, _) in statement.char_indices() {
        let _ = guard_ksql_statement(
            "orders",
            &statement[..index],
            &grants("orders", &["events"]),
        );
    }
    for soup in [
        "'",
        "`",
        "\"",
        "/*",
        "--",
        ".",
        "1e",
        "1e+",
        ".5.",
        "(((",
        ")))",
        "<<",
        "'''",
        "``x``",
        "\u{10ffff}",
    ] {
        let _ = guard_ksql_statement("orders", soup, &grants("orders", &["events"]));
    }
}
