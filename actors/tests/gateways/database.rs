//! Gateway tests against the real PostgreSQL of the local stack.

use std::time::Duration;

use actix::{Actor, Addr};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};
use warden_actors::gateways::database::*;
use warden_runtime::resources::ResourceGrants;
use warden_runtime::{Error, Result};

use super::support::{database_url, unique_name};

fn backend() -> DatabaseBackend {
    DatabaseBackend::connect(&database_url(), 16).expect("test database url is valid")
}

/// A plugin name no other test (in this process or another) uses, so tables never clash.
fn unique_plugin() -> String {
    unique_name("dbgw")
}

struct TestGateway {
    plugin: String,
    backend: DatabaseBackend,
    address: Addr<DatabaseGateway>,
}

impl TestGateway {
    fn start(tables: &[&str]) -> Self {
        Self::start_with(tables, backend())
    }

    fn start_with(tables: &[&str], backend: DatabaseBackend) -> Self {
        let plugin = unique_plugin();
        let tables: Vec<String> = tables.iter().map(|table| (*table).to_owned()).collect();
        let grants =
            ResourceGrants::resolve(&plugin, &tables, &[], &[], None).expect("test grants resolve");
        let address = DatabaseGateway::new(plugin.clone(), grants, backend.clone()).start();
        TestGateway {
            plugin,
            backend,
            address,
        }
    }

    async fn run(&self, sql: &str, parameters: Vec<Value>, expect: Expect) -> Result<SqlOutcome> {
        self.address
            .send(ExecuteSql {
                sql: sql.to_owned(),
                parameters,
                expect,
                transaction: None,
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
        transaction: None,
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
            transaction: None,
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

#[actix_rt::test]
async fn results_over_the_row_or_byte_limit_are_refused_whole() {
    let settings = DatabaseSettings {
        max_rows: 10,
        max_result_bytes: 4_096,
        ..DatabaseSettings::with_pool_size(16)
    };
    let backend =
        DatabaseBackend::connect_with(&database_url(), settings).expect("test database url");
    let gateway = TestGateway::start_with(&[], backend);
    let ten = gateway
        .query("SELECT n FROM generate_series(1, 10) AS g(n)", vec![])
        .await
        .expect("ten rows fit");
    assert_eq!(ten.len(), 10);
    let eleven = gateway
        .query("SELECT n FROM generate_series(1, 11) AS g(n)", vec![])
        .await;
    assert!(
        matches!(&eleven, Err(Error::ResultTooLarge { limit }) if limit.contains("10 rows")),
        "{eleven:?}"
    );
    let wide = gateway
        .query("SELECT repeat('x', 5000) AS wide", vec![])
        .await;
    assert!(
        matches!(&wide, Err(Error::ResultTooLarge { limit }) if limit.contains("4096 bytes")),
        "{wide:?}"
    );
}

#[actix_rt::test]
async fn a_statement_past_the_call_limit_is_cancelled_on_the_server() {
    let settings = DatabaseSettings {
        statement_timeout: Duration::from_millis(300),
        ..DatabaseSettings::with_pool_size(16)
    };
    let backend =
        DatabaseBackend::connect_with(&database_url(), settings).expect("test database url");
    let gateway = TestGateway::start_with(&[], backend.clone());
    let started = std::time::Instant::now();
    let endless = gateway
        .query(
            "SELECT count(*) AS n FROM generate_series(1, 1000000000) AS a(x)",
            vec![],
        )
        .await;
    assert!(
        matches!(&endless, Err(Error::Database { sqlstate, .. }) if sqlstate == "57014"),
        "{endless:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancelled promptly"
    );
    let role = backend.role_of(&gateway.plugin).expect("roles are on");
    let client = backend.pool().get().await.expect("test database answers");
    let still_running = async {
        loop {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active'",
                    &[&role],
                )
                .await
                .expect("pg_stat_activity");
            if row.get::<_, i64>(0) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The server ends it at its own statement_timeout too; the wait is long only so that a
    // machine busy with other tests does not fail it, and the failure says what still runs.
    if tokio::time::timeout(Duration::from_secs(15), still_running)
        .await
        .is_err()
    {
        let rows = client
            .query(
                "SELECT pid, state, query FROM pg_stat_activity WHERE usename = $1",
                &[&role],
            )
            .await
            .expect("pg_stat_activity");
        let running: Vec<String> = rows
            .iter()
            .map(|row| {
                format!(
                    "{} {:?} {:?}",
                    row.get::<_, i32>(0),
                    row.get::<_, Option<String>>(1),
                    row.get::<_, Option<String>>(2)
                )
            })
            .collect();
        panic!("a backend of the plugin keeps running: {running:?}");
    }
}

#[actix_rt::test]
async fn the_session_reset_clears_settings_locks_cursors_and_listeners() {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    actix_rt::spawn(connection);
    // What a statement past the guard could leave behind on its session.
    client
        .batch_execute(
            "SET work_mem = '1234kB'; SET statement_timeout = 0;
             SELECT pg_advisory_lock(4242); LISTEN leftover;
             BEGIN; DECLARE leftover CURSOR WITH HOLD FOR SELECT 1; COMMIT;",
        )
        .await
        .expect("leave state behind");
    client.batch_execute(SESSION_RESET).await.expect("reset");
    let row = client
        .query_one(
            "SELECT setting = reset_val FROM pg_settings WHERE name = 'work_mem'",
            &[],
        )
        .await
        .expect("work_mem");
    assert!(row.get::<_, bool>(0), "settings are back to their defaults");
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
                    (SELECT count(*) FROM pg_listening_channels()),
                    (SELECT count(*) FROM pg_cursors WHERE name = 'leftover')",
            &[],
        )
        .await
        .expect("leftovers");
    assert_eq!(
        (
            counts.get::<_, i64>(0),
            counts.get::<_, i64>(1),
            counts.get::<_, i64>(2)
        ),
        (0, 0, 0),
        "no advisory lock, listener or cursor survives the reset"
    );
}

#[actix_rt::test]
async fn connections_left_idle_after_a_burst_of_queued_statements_were_reset_last() {
    let backend = backend();
    let gateway = TestGateway::start_with(&["points"], backend.clone());
    gateway
        .command(
            "CREATE TABLE points (id int4 PRIMARY KEY, value text)",
            vec![],
        )
        .await
        .expect("create");
    gateway
        .command(
            "INSERT INTO points SELECT n, 'value ' || n FROM generate_series(1, 100) AS s(n)",
            vec![],
        )
        .await
        .expect("insert");
    // Many more statements in flight than the plugin's share of connections, so most of them
    // queue for a connection and are handed one straight from the statement before.
    let burst: Vec<_> = (0..400)
        .map(|n| {
            gateway.query(
                "SELECT value FROM points WHERE id = $1",
                vec![json!(n % 100 + 1)],
            )
        })
        .collect();
    for (n, rows) in futures::future::join_all(burst)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            rows.expect("point query"),
            vec![json!({ "value": format!("value {}", n % 100 + 1) })]
        );
    }
    let role = backend.role_of(&gateway.plugin).expect("roles are on");
    let client = backend.pool().get().await.expect("test database answers");
    let sessions = client
        .query(
            "SELECT state, query FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .expect("sessions");
    assert!(!sessions.is_empty(), "the plugin keeps idle connections");
    for session in &sessions {
        let (state, query): (Option<String>, Option<String>) = (session.get(0), session.get(1));
        assert_eq!(
            (state.as_deref(), query.as_deref()),
            (Some("idle"), Some(SESSION_RESET)),
            "an idle connection of the plugin ran the session reset last"
        );
    }
    drop(client);
    gateway
        .command("DROP TABLE points", vec![])
        .await
        .expect("drop");
}

#[actix_rt::test]
async fn a_statement_new_to_its_connection_runs_before_the_reset() {
    let backend = backend();
    let gateway = TestGateway::start_with(&[], backend.clone());
    // Preparing a text the connection has not seen is a round of its own; the reset sent
    // behind the statement must still reach the server after the statement's execution.
    let rows = gateway
        .query("SELECT 41 + 1 AS answer", vec![])
        .await
        .expect("query");
    assert_eq!(rows, vec![json!({ "answer": 42 })]);
    let role = backend.role_of(&gateway.plugin).expect("roles are on");
    let client = backend.pool().get().await.expect("test database answers");
    let sessions = client
        .query(
            "SELECT query FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .expect("sessions");
    let last: Vec<Option<String>> = sessions.iter().map(|row| row.get(0)).collect();
    assert_eq!(last, vec![Some(SESSION_RESET.to_owned())]);
}
