//! The resource gateways against the local stack (`just infra-up`): PostgreSQL through
//! `context.database`, Kafka through `context.kafka`, S3 through `context.s3`, operator
//! overrides of their names, `/ready`, and overrides and loaded plugins surviving a restart.
//!
//! Every test names its plugins (and through them its tables, topics and buckets) with a random
//! suffix: the stack, and Warden's state stored in it, are shared by every test running in
//! parallel and by earlier runs. Tests drop the tables they create and unload their plugins,
//! so the stored set of loaded plugins does not grow.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_tests::{assert_error, Admin, WardenProcess};

/// How long to wait for what goes through a real backend (a Kafka consumer group has to form
/// first, which takes seconds).
pub(crate) const BACKEND_PATIENCE: Duration = Duration::from_secs(60);

/// `prefix_<8 random base-36 characters>`: a plugin name no other test, and no earlier run,
/// uses. Lowercase letters and digits only after the `_`, so it is also fine inside table,
/// topic and bucket names.
pub(crate) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    let mut value = hasher.finish();
    let mut suffix = String::new();
    for _ in 0..8 {
        suffix.push(char::from_digit((value % 36) as u32, 36).unwrap());
        value /= 36;
    }
    format!("{prefix}_{suffix}")
}

/// Starts Warden on the local stack with `plugins` given as (plugin name, source): each file is
/// `<name>.js`, unique like the name, so a stored "loaded" record of another test never matches
/// a file here. Calls may take long: the subject is the gateways, not the time limit.
pub(crate) fn start(plugins: &[(&str, &str)], args: &[&str]) -> WardenProcess {
    let files: Vec<(String, &str)> = plugins
        .iter()
        .map(|(name, source)| (format!("{name}.js"), *source))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(file, source)| (file.as_str(), *source))
        .collect();
    WardenProcess::start_with_stack(&files, &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "30000")], args)
}

/// Asserts that a plugin's code threw an error named `js_name` (422 `execution_failed`).
#[track_caller]
pub(crate) fn assert_plugin_error(answer: &(u16, Value), js_name: &str) {
    assert_error(answer, 422, "execution_failed");
    assert_eq!(answer.1["error"]["name"], js_name, "{answer:?}");
}

/// The `result` of executing `name` with `input`, asserting 200.
pub(crate) async fn run(api: &Admin, name: &str, input: Value) -> Value {
    let (status, body) = api.execute(name, input.clone()).await;
    assert_eq!(status, 200, "execute {name} with {input}: {body}");
    body["result"].clone()
}

/// `DELETE /plugins/{name}`, asserting 204: unloads the plugin and drops its stored record.
pub(crate) async fn unload(api: &Admin, name: &str) {
    let answer = api.delete(&format!("/plugins/{name}")).await;
    assert_eq!(answer.0, 204, "unload {name}: {answer:?}");
}

/// `DELETE /plugins/{name}/overrides`, asserting 204.
async fn clear_overrides(api: &Admin, name: &str) {
    let answer = api.delete(&format!("/plugins/{name}/overrides")).await;
    assert_eq!(answer.0, 204, "clear the overrides of {name}: {answer:?}");
}

/// `PUT /plugins/{name}/overrides`, asserting 200; answers the reloaded plugin's info.
async fn put_overrides(api: &Admin, name: &str, overrides: Value) -> Value {
    let (status, body) = api
        .put(
            &format!("/plugins/{name}/overrides"),
            Some(overrides.clone()),
        )
        .await;
    assert_eq!(status, 200, "PUT overrides {overrides} for {name}: {body}");
    assert_eq!(body["overrides"], overrides, "{body}");
    body["plugin"].clone()
}

/// Sorted strings of a JSON array (for lists whose order the contract leaves open).
pub(crate) fn sorted_strings(value: &Value) -> Vec<String> {
    let mut strings: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("not a string: {item}"))
                .to_string()
        })
        .collect();
    strings.sort();
    strings
}

// --- PostgreSQL -------------------------------------------------------------------------------

/// A plugin named `name` allowed `tables` that runs the SQL it is given:
/// `{sql, params?, command?}` goes to `executeCommand` when `command` is true, else to
/// `executeQuery`; `{allowedTables: true}` answers `getAllowedTables()`.
pub(crate) fn sql_plugin(name: &str, tables: &[&str]) -> String {
    r#"
export default {
  metadata: { name: "__NAME__", version: "1.0.0", allowedTables: __TABLES__ },
  async initialize(context) {
    this.database = context.database;
  },
  async execute(input) {
    if (this.database === undefined) throw new Error("context.database is missing");
    if (input.allowedTables) return this.database.getAllowedTables();
    const params = input.params === undefined ? [] : input.params;
    if (input.command) return this.database.executeCommand(input.sql, params);
    return this.database.executeQuery(input.sql, params);
  },
};
"#
    .replace("__NAME__", name)
    .replace("__TABLES__", &serde_json::to_string(tables).unwrap())
}

/// The rows `executeQuery(sql, params)` answers in plugin `name`.
pub(crate) async fn query(api: &Admin, name: &str, sql: &str, params: Value) -> Value {
    run(api, name, json!({ "sql": sql, "params": params })).await
}

/// The count `executeCommand(sql, params)` answers in plugin `name`.
pub(crate) async fn command(api: &Admin, name: &str, sql: &str, params: Value) -> Value {
    run(
        api,
        name,
        json!({ "sql": sql, "params": params, "command": true }),
    )
    .await
}

/// The answer to running `sql` through `executeQuery` (or `executeCommand`), without asserting.
pub(crate) async fn try_sql(api: &Admin, name: &str, sql: &str, use_command: bool) -> (u16, Value) {
    api.execute(name, json!({ "sql": sql, "command": use_command }))
        .await
}

#[actix_rt::test]
async fn database_round_trips_every_json_type_and_counts_rows() {
    let name = unique("dbtypes");
    let plugin = sql_plugin(&name, &["things", "owners"]);
    let warden = start(&[(&name, &plugin)], &[]);
    let api = &warden.admin();

    command(
        api,
        &name,
        "CREATE TABLE things (id int PRIMARY KEY, big bigint, amount numeric(12, 3), active bool, \
         label text, doc jsonb, at timestamptz, raw bytea, uid uuid, owner_id int)",
        json!([]),
    )
    .await;
    command(
        api,
        &name,
        "CREATE TABLE owners (id int PRIMARY KEY, name text NOT NULL)",
        json!([]),
    )
    .await;
    assert_eq!(
        command(
            api,
            &name,
            "INSERT INTO owners (id, name) VALUES (1, 'ada'), (2, 'bob')",
            json!([])
        )
        .await,
        json!(2)
    );

    let insert =
        "INSERT INTO things (id, big, amount, active, label, doc, at, raw, uid, owner_id) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    let document = json!({ "a": [1, 2, { "b": null }], "s": "x", "n": 1.5, "t": true });
    let rows = [
        json!([
            1,
            9_007_199_254_740_991_i64,
            "12345.678",
            true,
            "héllo ✓",
            document,
            "2024-05-06T07:08:09.123Z",
            "AAEC/w==",
            "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
            1
        ]),
        json!([
            2,
            -5,
            "0.5",
            false,
            "second",
            [1, "two"],
            "1999-12-31T23:59:59Z",
            "",
            "00000000-0000-0000-0000-000000000002",
            2
        ]),
        json!([3, null, null, false, null, null, null, null, null, 1]),
    ];
    for params in rows {
        assert_eq!(command(api, &name, insert, params).await, json!(1));
    }

    let selected = query(api, &name, "SELECT * FROM things WHERE id = $1", json!([1])).await;
    let row = &selected[0];
    assert_eq!(selected.as_array().map(Vec::len), Some(1), "{selected}");
    assert_eq!(row["id"], json!(1));
    // The contract leaves bigint's JSON form open (a number, or a string as node-postgres
    // gives); either way it must be exact.
    assert!(
        row["big"] == json!(9_007_199_254_740_991_i64) || row["big"] == json!("9007199254740991"),
        "bigint: {row}"
    );
    assert_eq!(
        row["amount"],
        json!("12345.678"),
        "numeric comes back as a string"
    );
    assert_eq!(row["active"], json!(true));
    assert_eq!(row["label"], json!("héllo ✓"));
    assert_eq!(row["doc"], document, "jsonb comes back as a value");
    let at = row["at"]
        .as_str()
        .unwrap_or_else(|| panic!("timestamptz: {row}"));
    assert!(
        at.starts_with("2024-05-06T07:08:09.123")
            && matches!(&at["2024-05-06T07:08:09.123".len()..], "Z" | "+00:00"),
        "timestamptz is RFC 3339 in UTC: {at}"
    );
    assert_eq!(row["raw"], json!("AAEC/w=="), "bytea comes back as base64");
    assert_eq!(row["uid"], json!("6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"));
    assert_eq!(row["owner_id"], json!(1));

    let second = query(
        api,
        &name,
        "SELECT doc, raw, amount FROM things WHERE id = $1",
        json!([2]),
    )
    .await;
    assert_eq!(
        second,
        json!([{ "doc": [1, "two"], "raw": "", "amount": "0.500" }])
    );
    let nulls = query(
        api,
        &name,
        "SELECT big, amount, label, doc, at, raw, uid FROM things WHERE id = 3",
        json!([]),
    )
    .await;
    assert_eq!(
        nulls,
        json!([{ "big": null, "amount": null, "label": null, "doc": null, "at": null, "raw": null, "uid": null }])
    );

    // Commands answer how many rows they touched.
    assert_eq!(
        command(
            api,
            &name,
            "UPDATE things SET active = NOT active WHERE owner_id = $1",
            json!([1])
        )
        .await,
        json!(2)
    );
    assert_eq!(
        command(api, &name, "DELETE FROM things WHERE id = $1", json!([2])).await,
        json!(1)
    );
    assert_eq!(
        command(api, &name, "DELETE FROM things WHERE id = $1", json!([2])).await,
        json!(0)
    );

    // A join across two of its tables, and a CTE whose name is not a table.
    assert_eq!(
        query(
            api,
            &name,
            "SELECT o.name, count(t.id)::int AS n FROM owners o LEFT JOIN things t ON t.owner_id = o.id \
             GROUP BY o.name ORDER BY o.name",
            json!([]),
        )
        .await,
        json!([{ "name": "ada", "n": 2 }, { "name": "bob", "n": 0 }])
    );
    assert_eq!(
        query(
            api,
            &name,
            "WITH active_things AS (SELECT id, owner_id FROM things WHERE active) \
             SELECT a.id, o.name FROM active_things a JOIN owners o ON o.id = a.owner_id \
             WHERE a.id IN (SELECT id FROM things WHERE label IS NULL) ORDER BY a.id",
            json!([]),
        )
        .await,
        json!([{ "id": 3, "name": "ada" }])
    );

    let allowed = run(api, &name, json!({ "allowedTables": true })).await;
    assert_eq!(sorted_strings(&allowed), ["owners", "things"]);
    let info = api.plugin(&name).await;
    assert_eq!(
        info["resources"]["tables"],
        json!([
            { "name": "things", "physical": format!("{name}_things"), "access": "owner" },
            { "name": "owners", "physical": format!("{name}_owners"), "access": "owner" },
        ]),
        "{info}"
    );

    command(api, &name, "DROP TABLE things, owners", json!([])).await;
    unload(api, &name).await;
}

#[actix_rt::test]
async fn database_refuses_every_statement_that_could_escape() {
    let name = unique("dbguard");
    let plugin = sql_plugin(&name, &["items"]);
    let warden = start(&[(&name, &plugin)], &[]);
    let api = &warden.admin();
    command(
        api,
        &name,
        "CREATE TABLE items (id int PRIMARY KEY)",
        json!([]),
    )
    .await;

    let escapes = [
        "select 1; select 2",
        "SELECT * FROM items; DROP TABLE items",
        "SELECT * FROM public.items",
        "INSERT INTO public.items (id) VALUES (1)",
        "COPY items FROM '/etc/passwd'",
        "COPY items TO STDOUT",
        "DO $$ BEGIN PERFORM 1; END $$",
        "CREATE FUNCTION sneaky() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
        "CREATE ROLE intruder",
        "GRANT SELECT ON items TO PUBLIC",
        "SET search_path TO public",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT current_setting('x')",
        "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(a int)",
        "SELECT dblink('dbname=postgres', 'SELECT 1')",
    ];
    for sql in escapes {
        for use_command in [false, true] {
            let answer = try_sql(api, &name, sql, use_command).await;
            assert_eq!(
                (answer.0, answer.1["error"]["name"].as_str()),
                (422, Some("SqlNotAllowedError")),
                "{sql:?} (executeCommand: {use_command}) was not refused as SqlNotAllowedError: {answer:?}"
            );
            assert_plugin_error(&answer, "SqlNotAllowedError");
        }
    }
    // Nothing of the refused statements happened: the table is there and empty.
    assert_eq!(
        query(
            api,
            &name,
            "SELECT count(*)::int AS n FROM items",
            json!([])
        )
        .await,
        json!([{ "n": 0 }])
    );

    command(api, &name, "DROP TABLE items", json!([])).await;
    unload(api, &name).await;
}

#[actix_rt::test]
async fn database_denies_undeclared_tables_and_another_plugins_tables() {
    let owner = unique("dbowner");
    let other = unique("dbother");
    let (owner_plugin, other_plugin) = (
        sql_plugin(&owner, &["users"]),
        sql_plugin(&other, &["notes"]),
    );
    let warden = start(&[(&owner, &owner_plugin), (&other, &other_plugin)], &[]);
    let api = &warden.admin();
    command(
        api,
        &owner,
        "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE)",
        json!([]),
    )
    .await;
    command(
        api,
        &owner,
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.com')",
        json!([]),
    )
    .await;
    command(api, &other, "CREATE TABLE notes (id int)", json!([])).await;

    // An undeclared table: the message names it and lists the allowed ones.
    let answer = try_sql(api, &owner, "SELECT * FROM secrets", false).await;
    assert_plugin_error(&answer, "TableAccessDeniedError");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("secrets") && message.contains("users"),
        "the message names the table and the allowed ones: {message}"
    );

    // The other plugin reaches the owner's table neither by the owner's name nor by its
    // physical name, wherever the name appears in the statement.
    let physical = format!("{owner}_users");
    let attempts = [
        "SELECT * FROM users".to_string(),
        format!("SELECT * FROM {physical}"),
        format!("SELECT * FROM \"{physical}\""),
        format!("INSERT INTO {physical} (id, email) VALUES (2, 'x')"),
        format!("UPDATE {physical} SET email = 'x'"),
        format!("DELETE FROM {physical}"),
        format!("SELECT * FROM notes WHERE id IN (SELECT id FROM {physical})"),
        format!("SELECT n.id FROM notes n JOIN {physical} u ON u.id = n.id"),
        format!("WITH stolen AS (SELECT * FROM {physical}) SELECT * FROM stolen"),
        format!("DROP TABLE {physical}"),
        format!("TRUNCATE {physical}"),
        format!("CREATE INDEX stolen_index ON {physical} (email)"),
    ];
    for sql in &attempts {
        let answer = try_sql(api, &other, sql, false).await;
        assert_eq!(
            answer.1["error"]["name"].as_str(),
            Some("TableAccessDeniedError"),
            "{sql:?} from another plugin was not denied: {answer:?}"
        );
        assert_plugin_error(&answer, "TableAccessDeniedError");
    }
    // The owner's row is untouched.
    assert_eq!(
        query(api, &owner, "SELECT id, email FROM users", json!([])).await,
        json!([{ "id": 1, "email": "ada@example.com" }])
    );

    command(api, &owner, "DROP TABLE users", json!([])).await;
    command(api, &other, "DROP TABLE notes", json!([])).await;
    unload(api, &owner).await;
    unload(api, &other).await;
}

#[actix_rt::test]
async fn database_errors_carry_postgresqls_sqlstate() {
    let name = unique("dberror");
    let plugin = sql_plugin(&name, &["users"]);
    let warden = start(&[(&name, &plugin)], &[]);
    let api = &warden.admin();
    command(
        api,
        &name,
        "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE)",
        json!([]),
    )
    .await;
    let insert = "INSERT INTO users (id, email) VALUES ($1, $2)";
    command(api, &name, insert, json!([1, "ada@example.com"])).await;

    let answer = api
        .execute(
            &name,
            json!({ "sql": insert, "params": [2, "ada@example.com"], "command": true }),
        )
        .await;
    assert_plugin_error(&answer, "DatabaseError");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("23505"),
        "a unique violation names SQLSTATE 23505: {message}"
    );

    command(api, &name, "DROP TABLE users", json!([])).await;
    unload(api, &name).await;
}

#[actix_rt::test]
async fn a_syntax_error_is_a_database_error_with_its_sqlstate() {
    // PLUGIN_API.md: "`DatabaseError` — what PostgreSQL said (syntax error, constraint
    // violation, …), with its SQLSTATE". A typo is not an escape attempt.
    let name = unique("dbsyntax");
    let plugin = sql_plugin(&name, &["users"]);
    let warden = start(&[(&name, &plugin)], &[]);
    let api = &warden.admin();
    for sql in ["SELEC 1", "SELECT * FROM users WHERE"] {
        let answer = try_sql(api, &name, sql, false).await;
        assert_plugin_error(&answer, "DatabaseError");
        assert!(
            answer.1["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("42601")),
            "{sql:?}: a syntax error is SQLSTATE 42601: {answer:?}"
        );
    }
    unload(api, &name).await;
}

#[actix_rt::test]
async fn a_shared_table_override_lets_two_plugins_use_one_table() {
    let first = unique("sharea");
    let second = unique("shareb");
    let shared = unique("people");
    let (first_plugin, second_plugin) = (
        sql_plugin(&first, &["users"]),
        sql_plugin(&second, &["users"]),
    );
    let warden = start(&[(&first, &first_plugin), (&second, &second_plugin)], &[]);
    let api = &warden.admin();

    let overrides = json!({ "tableNameMap": { "users": format!("shared:{shared}") } });
    let tables =
        json!([{ "name": "users", "physical": format!("shared_{shared}"), "access": "owner" }]);
    for name in [&first, &second] {
        let info = put_overrides(api, name, overrides.clone()).await;
        assert_eq!(info["resources"]["tables"], tables, "{info}");
        assert_eq!(api.plugin(name).await["resources"]["tables"], tables);
    }

    command(
        api,
        &first,
        "CREATE TABLE users (id int PRIMARY KEY, name text)",
        json!([]),
    )
    .await;
    command(
        api,
        &first,
        "INSERT INTO users VALUES ($1, $2)",
        json!([1, "from the first"]),
    )
    .await;
    command(
        api,
        &second,
        "INSERT INTO users VALUES ($1, $2)",
        json!([2, "from the second"]),
    )
    .await;
    let both = json!([
        { "id": 1, "name": "from the first" },
        { "id": 2, "name": "from the second" },
    ]);
    for name in [&first, &second] {
        assert_eq!(
            query(
                api,
                name,
                "SELECT id, name FROM users ORDER BY id",
                json!([])
            )
            .await,
            both,
            "{name} sees both rows"
        );
    }

    command(api, &first, "DROP TABLE users", json!([])).await;
    for name in [&first, &second] {
        clear_overrides(api, name).await;
        unload(api, name).await;
    }
}

#[actix_rt::test]
async fn overrides_replace_the_allowed_tables_and_map_names_to_private_tables() {
    let name = unique("remap");
    let plugin = sql_plugin(&name, &["users"]);
    let warden = start(&[(&name, &plugin)], &[]);
    let api = &warden.admin();
    assert_eq!(
        api.plugin(&name).await["resources"]["tables"],
        json!([{ "name": "users", "physical": format!("{name}_users"), "access": "owner" }])
    );

    // An allowed list replaces the declared one.
    let info = put_overrides(api, &name, json!({ "allowedTables": ["audit"] })).await;
    assert_eq!(
        info["resources"]["tables"],
        json!([{ "name": "audit", "physical": format!("{name}_audit"), "access": "owner" }]),
        "{info}"
    );
    assert_eq!(
        run(api, &name, json!({ "allowedTables": true })).await,
        json!(["audit"])
    );
    assert_plugin_error(
        &try_sql(api, &name, "SELECT 1 FROM users", false).await,
        "TableAccessDeniedError",
    );
    command(api, &name, "CREATE TABLE audit (line text)", json!([])).await;
    command(api, &name, "DROP TABLE audit", json!([])).await;

    // A name map to a plain name: still the plugin's own table, under another name.
    let mapped = json!({ "tableNameMap": { "users": "crm_users" } });
    let info = put_overrides(api, &name, mapped.clone()).await;
    let mapped_tables =
        json!([{ "name": "users", "physical": format!("{name}_crm_users"), "access": "owner" }]);
    assert_eq!(info["resources"]["tables"], mapped_tables, "{info}");
    assert_eq!(
        run(api, &name, json!({ "allowedTables": true })).await,
        json!(["users"])
    );
    command(api, &name, "CREATE TABLE users (v text)", json!([])).await;
    command(
        api,
        &name,
        "INSERT INTO users (v) VALUES ($1)",
        json!(["mapped"]),
    )
    .await;

    // Without the override `users` is `<name>_users` again, which was never created: the row
    // went to the mapped table.
    clear_overrides(api, &name).await;
    let answer = try_sql(api, &name, "SELECT v FROM users", false).await;
    assert_plugin_error(&answer, "DatabaseError");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("42P01")),
        "an undefined table is SQLSTATE 42P01: {answer:?}"
    );
    put_overrides(api, &name, mapped).await;
    assert_eq!(
        query(api, &name, "SELECT v FROM users", json!([])).await,
        json!([{ "v": "mapped" }])
    );

    command(api, &name, "DROP TABLE users", json!([])).await;
    clear_overrides(api, &name).await;
    unload(api, &name).await;
}

// --- Kafka ------------------------------------------------------------------------------------

#[actix_rt::test]
async fn ready_reports_every_backend_ok_when_the_stack_runs() {
    let warden = start(&[], &[]);
    assert_eq!(
        warden.admin().get("/ready").await,
        (
            200,
            json!({
                "status": "ok",
                "checks": { "database": "ok", "kafka": "ok", "s3": "ok" }
            })
        )
    );
}

#[actix_rt::test]
async fn stored_overrides_survive_a_restart() {
    let name = unique("durable");
    let later = unique("later");
    let plugin = sql_plugin(&name, &["users"]);
    let mut warden = start(&[(&name, &plugin)], &["--no-load-all"]);
    let overrides = json!({ "tableNameMap": { "users": "crm_users" } });
    let later_overrides =
        json!({ "allowedTopics": ["later-events"], "bucketNameMap": { "data": "archive" } });
    let mapped_tables =
        json!([{ "name": "users", "physical": format!("{name}_crm_users"), "access": "owner" }]);
    {
        let api = &warden.admin();
        let (status, info) = api.load(&format!("{name}.js")).await;
        assert_eq!(status, 201, "{info}");
        let info = put_overrides(api, &name, overrides.clone()).await;
        assert_eq!(info["resources"]["tables"], mapped_tables, "{info}");
        let (status, body) = api
            .put(
                &format!("/plugins/{later}/overrides"),
                Some(later_overrides.clone()),
            )
            .await;
        assert_eq!(
            (status, body),
            (200, json!({ "overrides": later_overrides, "plugin": null }))
        );
        command(api, &name, "CREATE TABLE users (v text)", json!([])).await;
        command(
            api,
            &name,
            "INSERT INTO users (v) VALUES ($1)",
            json!(["before the restart"]),
        )
        .await;
        // Unloaded, the plugin is not loaded again at restart; its overrides stay stored.
        unload(api, &name).await;
    }

    let status = warden.terminate();
    assert_eq!(status.code(), Some(0), "warden exits 0 after SIGTERM");
    let warden = warden.restart(&["--no-load-all"]);
    let api = &warden.admin();

    assert_eq!(
        api.get(&format!("/plugins/{name}/overrides")).await,
        (200, overrides.clone())
    );
    assert_eq!(
        api.get(&format!("/plugins/{later}/overrides")).await,
        (200, later_overrides)
    );
    assert_eq!(api.plugin(&later).await, Value::Null, "never loaded");
    // Loading the plugin again applies its stored overrides: it finds its row in the mapped table.
    let (status, info) = api.load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["overrides"], overrides, "{info}");
    assert_eq!(info["resources"]["tables"], mapped_tables, "{info}");
    assert_eq!(
        query(api, &name, "SELECT v FROM users", json!([])).await,
        json!([{ "v": "before the restart" }])
    );

    command(api, &name, "DROP TABLE users", json!([])).await;
    clear_overrides(api, &name).await;
    clear_overrides(api, &later).await;
    unload(api, &name).await;
    assert_eq!(
        api.get(&format!("/plugins/{later}/overrides")).await,
        (200, json!({}))
    );
}

#[actix_rt::test]
async fn plugins_loaded_at_shutdown_are_loaded_again_with_their_overrides() {
    let name = unique("restored");
    let plugin = sql_plugin(&name, &["users"]);
    let mut warden = start(&[(&name, &plugin)], &["--no-load-all"]);
    let overrides = json!({ "allowedTables": ["audit"] });
    let tables =
        json!([{ "name": "audit", "physical": format!("{name}_audit"), "access": "owner" }]);
    {
        let api = &warden.admin();
        let (status, info) = api
            .post(
                "/plugins",
                Some(json!({ "path": format!("{name}.js"), "overrides": overrides })),
            )
            .await;
        assert_eq!(status, 201, "{info}");
        assert_eq!(info["resources"]["tables"], tables, "{info}");
    }

    let status = warden.terminate();
    assert_eq!(status.code(), Some(0), "warden exits 0 after SIGTERM");
    // No scan: only the stored set of loaded plugins can bring it back.
    let warden = warden.restart(&["--no-load-all"]);
    let api = &warden.admin();

    let info = api.plugin(&name).await;
    assert_eq!(info["state"], "running", "{name} was not restored: {info}");
    assert_eq!(info["overrides"], overrides, "{info}");
    assert_eq!(info["resources"]["tables"], tables, "{info}");
    assert_eq!(
        run(api, &name, json!({ "allowedTables": true })).await,
        json!(["audit"])
    );

    // Unloading forgets it: the next restart does not bring it back.
    clear_overrides(api, &name).await;
    unload(api, &name).await;
    let mut warden = warden;
    let status = warden.terminate();
    assert_eq!(status.code(), Some(0), "warden exits 0 after SIGTERM");
    let warden = warden.restart(&["--no-load-all"]);
    assert_eq!(warden.admin().plugin(&name).await, Value::Null);
}

#[actix_rt::test]
async fn two_single_nodes_on_one_database_never_restore_each_others_plugins() {
    let name = unique("nodeown");
    let plugin = sql_plugin(&name, &["users"]);
    // Two deployments on one machine and one database: different plugins directories give
    // different default node ids.
    let mut first = start(&[(&name, &plugin)], &["--no-load-all"]);
    let (status, info) = first.admin().load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{info}");
    let status = first.terminate();
    assert_eq!(status.code(), Some(0));

    let other = start(&[], &["--no-load-all"]);
    assert_eq!(
        other.admin().plugin(&name).await,
        Value::Null,
        "another node's plugin was restored"
    );
    assert_eq!(
        other.log_count("previously loaded plugin not restored"),
        0,
        "another node's plugins are not even tried: {:?}",
        other.logs()
    );

    // The first deployment, restarted on its own directory, restores its own.
    let first = first.restart(&["--no-load-all"]);
    let api = &first.admin();
    assert_eq!(api.plugin(&name).await["state"], "running");
    unload(api, &name).await;
}
