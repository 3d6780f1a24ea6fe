//! A plugin's data over time, on the local stack: `migrations` applied once and in order, in one
//! transaction, recorded, listed and planned; and `context.database.transaction` committing,
//! rolling back, and rolled back by Warden at the time limit and at unload. What PostgreSQL
//! holds is checked in PostgreSQL directly, not through the plugin.

use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::{assert_error, local_stack_env, wait_until, Admin, WardenProcess};

use crate::gateways::{assert_plugin_error, run, start, unique, unload};
use crate::red_team::psql_as;

const PATIENCE: Duration = Duration::from_secs(30);

/// Warden's own database user on the local stack: a member of every plugin role, so it sees
/// their sessions in `pg_stat_activity`.
pub(crate) fn warden_user() -> String {
    let url = local_stack_env()
        .into_iter()
        .find(|(key, _)| key == "WARDEN_DATABASE_URL")
        .map(|(_, value)| value)
        .expect("infra/local.env names the database");
    let user = url
        .trim_start_matches("postgres://")
        .split('@')
        .next()
        .unwrap_or_default();
    user.split(':').next().unwrap_or_default().to_string()
}

/// One value PostgreSQL prints for `sql`, run as Warden's user without Warden.
pub(crate) fn scalar(sql: &str) -> String {
    let (ok, text) = psql_as(&warden_user(), sql);
    assert!(ok, "{sql}: {text}");
    text.trim().to_string()
}

/// A plugin with `migrations` (a JavaScript array literal) whose `execute({sql, params,
/// command})` runs one statement.
pub(crate) fn migrating_plugin(
    name: &str,
    version: &str,
    tables: &[&str],
    migrations: &str,
) -> String {
    format!(
        r#"
export default {{
  metadata: {{ name: "{name}", version: "{version}", allowedTables: {tables} }},
  migrations: {migrations},
  initialize(context) {{ this.database = context.database; }},
  execute(input) {{
    const params = input.params === undefined ? [] : input.params;
    return input.command ? this.database.executeCommand(input.sql, params) : this.database.executeQuery(input.sql, params);
  }},
}};
"#,
        tables = json!(tables)
    )
}

/// Writes `<name>.js`, a [`migrating_plugin`] with `migrations` (JSON), into `warden`'s plugins
/// directory.
pub(crate) fn write_migrating(
    warden: &WardenProcess,
    name: &str,
    version: &str,
    tables: &[&str],
    migrations: &Value,
) {
    warden.write_plugin(
        &format!("{name}.js"),
        &migrating_plugin(name, version, tables, &migrations.to_string()),
    );
}

pub(crate) fn sha256(text: &str) -> String {
    warden_runtime::sha256_hex(text.as_bytes())
}

pub(crate) async fn migrations_of(api: &Admin, name: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/plugins/{name}/migrations")).await;
    assert_eq!(status, 200, "{body}");
    body["migrations"].as_array().unwrap().clone()
}

pub(crate) fn ids_and_states(migrations: &[Value]) -> Vec<(String, String)> {
    migrations
        .iter()
        .map(|migration| {
            (
                migration["id"].as_str().unwrap().to_string(),
                migration["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub(crate) fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(id, state)| (id.to_string(), state.to_string()))
        .collect()
}

pub(crate) const CREATE_ITEMS: &str =
    "CREATE TABLE items (id INT PRIMARY KEY, label TEXT NOT NULL)";
const SEED_ITEMS: &str =
    "INSERT INTO items VALUES (1, 'first'); CREATE INDEX items_by_label ON items (label);";

#[actix_rt::test]
async fn migrations_apply_once_in_order_and_are_listed_with_their_checksums() {
    let name = unique("migrate");
    let v1 = migrating_plugin(
        &name,
        "1.0.0",
        &["items"],
        &json!([{"id": "001_items", "sql": CREATE_ITEMS}, {"id": "002.seed-items", "sql": SEED_ITEMS}])
            .to_string(),
    );
    let warden = start(&[], &[]);
    warden.write_plugin(&format!("{name}.js"), &v1);
    let api = &warden.admin();
    let (status, body) = api.load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{body}");

    let listed = migrations_of(api, &name).await;
    assert_eq!(
        ids_and_states(&listed),
        pairs(&[("001_items", "applied"), ("002.seed-items", "applied")])
    );
    assert_eq!(listed[0]["checksum"], sha256(CREATE_ITEMS));
    assert_eq!(listed[1]["checksum"], sha256(SEED_ITEMS));
    let applied_at = listed[0]["appliedAt"].as_str().unwrap();
    assert!(
        applied_at.ends_with('Z') && applied_at.contains('T'),
        "{applied_at}"
    );
    assert_eq!(
        run(api, &name, json!({"sql": "SELECT label FROM items"})).await,
        json!([{"label": "first"}])
    );

    // A reload applies nothing again: the seeding migration would fail on its primary key.
    let (status, body) = api.post(&format!("/plugins/{name}/reload"), None).await;
    assert_eq!(status, 200, "{body}");
    // A new version adds one at the end: only that one runs.
    let v2 = migrating_plugin(
        &name,
        "1.1.0",
        &["items"],
        &json!([
            {"id": "001_items", "sql": CREATE_ITEMS},
            {"id": "002.seed-items", "sql": SEED_ITEMS},
            {"id": "003_more", "sql": "INSERT INTO items VALUES (2, 'second')"},
        ])
        .to_string(),
    );
    warden.write_plugin(&format!("{name}.js"), &v2);
    let (status, body) = api.post(&format!("/plugins/{name}/reload"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        run(
            api,
            &name,
            json!({"sql": "SELECT count(*)::int AS n FROM items"})
        )
        .await,
        json!([{"n": 2}])
    );
    let table = format!("{name}_items");
    assert_eq!(
        scalar(&format!(
            "SELECT string_agg(id || '@' || plugin_version, ',' ORDER BY id) FROM warden.plugin_migrations WHERE plugin = '{name}'"
        )),
        "001_items@1.0.0,002.seed-items@1.0.0,003_more@1.1.0"
    );
    unload(api, &name).await;
    scalar(&format!("DROP TABLE public.\"{table}\""));
}

#[actix_rt::test]
async fn a_changed_migration_refuses_the_reload_and_the_previous_version_keeps_running() {
    let name = unique("migchg");
    let plugin = |sql: &str, version: &str| {
        migrating_plugin(
            &name,
            version,
            &["items"],
            &json!([{"id": "001_items", "sql": sql}]).to_string(),
        )
    };
    let warden = start(&[], &[]);
    warden.write_plugin(&format!("{name}.js"), &plugin(CREATE_ITEMS, "1.0.0"));
    let api = &warden.admin();
    assert_eq!(api.load(&format!("{name}.js")).await.0, 201);
    warden.write_plugin(
        &format!("{name}.js"),
        &plugin(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, label TEXT)",
            "1.1.0",
        ),
    );
    let answer = api.post(&format!("/plugins/{name}/reload"), None).await;
    assert_error(&answer, 422, "migration_changed");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("001_items") && message.contains("add a new one"),
        "{message}"
    );
    let info = api.plugin(&name).await;
    assert_eq!(
        (info["version"].clone(), info["state"].clone()),
        (json!("1.0.0"), json!("running"))
    );
    assert_eq!(
        run(
            api,
            &name,
            json!({"sql": "SELECT count(*)::int AS n FROM items"})
        )
        .await,
        json!([{"n": 0}])
    );
    unload(api, &name).await;
    scalar(&format!("DROP TABLE public.\"{name}_items\""));
}

#[actix_rt::test]
async fn a_failing_migration_rolls_back_its_whole_batch_with_its_sqlstate() {
    let name = unique("migfail");
    let v1 = migrating_plugin(
        &name,
        "1.0.0",
        &["items", "tags"],
        &json!([{"id": "001_items", "sql": CREATE_ITEMS}]).to_string(),
    );
    let warden = start(&[], &[]);
    warden.write_plugin(&format!("{name}.js"), &v1);
    let api = &warden.admin();
    assert_eq!(api.load(&format!("{name}.js")).await.0, 201);
    let v2 = migrating_plugin(
        &name,
        "2.0.0",
        &["items", "tags"],
        &json!([
            {"id": "001_items", "sql": CREATE_ITEMS},
            {"id": "002_tags", "sql": "CREATE TABLE tags (id INT); INSERT INTO items VALUES (7, 'kept?')"},
            {"id": "003_broken", "sql": "INSERT INTO items (id, no_such_column) VALUES (8, 'x')"},
        ])
        .to_string(),
    );
    warden.write_plugin(&format!("{name}.js"), &v2);
    let answer = api.post(&format!("/plugins/{name}/reload"), None).await;
    assert_error(&answer, 422, "migration_failed");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("003_broken")
            && message.contains("42703")
            && message.contains("no_such_column"),
        "{message}"
    );
    // Nothing of the batch stayed: no table, no row, no record; version 1 still runs.
    assert_eq!(
        scalar(&format!(
            "SELECT to_regclass('public.\"{name}_tags\"') IS NULL"
        )),
        "t"
    );
    assert_eq!(
        scalar(&format!("SELECT count(*) FROM public.\"{name}_items\"")),
        "0"
    );
    assert_eq!(
        ids_and_states(&migrations_of(api, &name).await),
        pairs(&[("001_items", "applied")])
    );
    assert_eq!(api.plugin(&name).await["version"], "1.0.0");
    unload(api, &name).await;
    scalar(&format!("DROP TABLE public.\"{name}_items\""));
}

#[actix_rt::test]
async fn every_migration_statement_passes_the_sql_guard() {
    let name = unique("migguard");
    let victim = unique("victim");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    scalar(&format!(
        "CREATE TABLE IF NOT EXISTS public.\"{victim}_secrets\" (v TEXT)"
    ));
    for (sql, expected) in [
        (
            format!("CREATE TABLE items (id INT); DROP TABLE {victim}_secrets"),
            "TableAccessDeniedError",
        ),
        (
            "CREATE TABLE items (id INT); COMMIT; CREATE TABLE other (id INT)".to_string(),
            "SqlNotAllowedError",
        ),
        ("BEGIN".to_string(), "SqlNotAllowedError"),
        ("SET ROLE warden".to_string(), "SqlNotAllowedError"),
        (
            "SELECT pg_read_file('/etc/passwd')".to_string(),
            "SqlNotAllowedError",
        ),
        ("-- only a comment\n;".to_string(), "holds no statement"),
        (
            "CREATE TABLE items (note TEXT DEFAULT 'open".to_string(),
            "42601",
        ),
    ] {
        let file = format!("{name}.js");
        write_migrating(
            &warden,
            &name,
            "1.0.0",
            &["items"],
            &json!([{"id": "001", "sql": sql}]),
        );
        let answer = api.load(&file).await;
        assert_error(&answer, 422, "migration_failed");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("'001'") && message.contains(expected),
            "{sql}: {message}"
        );
        assert_eq!(
            scalar(&format!(
                "SELECT to_regclass('public.\"{name}_items\"') IS NULL"
            )),
            "t",
            "{sql}"
        );
    }
    assert_eq!(
        scalar(&format!(
            "SELECT to_regclass('public.\"{victim}_secrets\"') IS NOT NULL"
        )),
        "t"
    );
    assert_eq!(api.get("/plugins").await.1["plugins"], json!([]));
    scalar(&format!("DROP TABLE public.\"{victim}_secrets\""));
}

#[actix_rt::test]
async fn migrations_of_an_older_version_are_reported_unknown_and_never_undone() {
    let name = unique("migold");
    let both = json!([
        {"id": "001_items", "sql": CREATE_ITEMS},
        {"id": "002_tags", "sql": "CREATE TABLE tags (id INT)"},
    ]);
    let warden = start(&[], &[]);
    warden.write_plugin(
        &format!("{name}.js"),
        &migrating_plugin(&name, "2.0.0", &["items", "tags"], &both.to_string()),
    );
    let api = &warden.admin();
    assert_eq!(api.load(&format!("{name}.js")).await.0, 201);
    unload(api, &name).await;
    let older = json!([{"id": "001_items", "sql": CREATE_ITEMS}]);
    warden.write_plugin(
        &format!("{name}.js"),
        &migrating_plugin(&name, "1.0.0", &["items", "tags"], &older.to_string()),
    );
    let (status, body) = api.load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{body}");
    let listed = migrations_of(api, &name).await;
    assert_eq!(
        ids_and_states(&listed),
        pairs(&[("001_items", "applied"), ("002_tags", "unknown")])
    );
    assert_eq!(listed[1]["checksum"], sha256("CREATE TABLE tags (id INT)"));
    assert!(listed[1]["appliedAt"].is_string());
    assert_eq!(
        scalar(&format!(
            "SELECT to_regclass('public.\"{name}_tags\"') IS NOT NULL"
        )),
        "t"
    );
    unload(api, &name).await;
    scalar(&format!(
        "DROP TABLE public.\"{name}_items\", public.\"{name}_tags\""
    ));
}

#[actix_rt::test]
async fn the_plan_rehearses_pending_migrations_and_changes_nothing() {
    let name = unique("migplan");
    let file = format!("{name}.js");
    let one = json!([{"id": "001_items", "sql": CREATE_ITEMS}]);
    let warden = start(&[], &[]);
    warden.write_plugin(
        &format!("{name}.js"),
        &migrating_plugin(&name, "1.0.0", &["items"], &one.to_string()),
    );
    let api = &warden.admin();
    let (status, plan) = api
        .post("/plugins/migrations/plan", Some(json!({"path": file})))
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        plan,
        json!({"plugin": name, "pending": ["001_items"], "unknown": [], "ok": true})
    );
    assert_eq!(
        scalar(&format!(
            "SELECT to_regclass('public.\"{name}_items\"') IS NULL"
        )),
        "t"
    );
    assert_eq!(
        scalar(&format!(
            "SELECT count(*) FROM warden.plugin_migrations WHERE plugin = '{name}'"
        )),
        "0"
    );
    assert_error(
        &api.get(&format!("/plugins/{name}/migrations")).await,
        404,
        "plugin_not_found",
    );

    assert_eq!(api.load(&file).await.0, 201);
    let (_, plan) = api
        .post("/plugins/migrations/plan", Some(json!({"path": file})))
        .await;
    assert_eq!(
        (plan["pending"].clone(), plan["ok"].clone()),
        (json!([]), json!(true))
    );
    // A changed migration and a failing one, as a load would meet them.
    let changed = json!([{"id": "001_items", "sql": "CREATE TABLE items (id BIGINT)"}]);
    warden.write_plugin(
        &file,
        &migrating_plugin(&name, "1.1.0", &["items"], &changed.to_string()),
    );
    let (status, plan) = api
        .post("/plugins/migrations/plan", Some(json!({"path": file})))
        .await;
    assert_eq!((status, plan["ok"].clone()), (200, json!(false)), "{plan}");
    assert_eq!(plan["error"]["code"], "migration_changed");
    let failing = json!([
        {"id": "001_items", "sql": CREATE_ITEMS},
        {"id": "002_rows", "sql": "INSERT INTO items VALUES (1, 'a')"},
        {"id": "003_duplicate", "sql": "INSERT INTO items VALUES (1, 'b')"},
    ]);
    warden.write_plugin(
        &file,
        &migrating_plugin(&name, "1.2.0", &["items"], &failing.to_string()),
    );
    let (_, plan) = api
        .post("/plugins/migrations/plan", Some(json!({"path": file})))
        .await;
    assert_eq!(plan["pending"], json!(["002_rows", "003_duplicate"]));
    assert_eq!(plan["error"]["code"], "migration_failed");
    assert!(
        plan["error"]["message"].as_str().unwrap().contains("23505"),
        "{plan}"
    );
    assert_eq!(
        scalar(&format!("SELECT count(*) FROM public.\"{name}_items\"")),
        "0"
    );
    assert_eq!(
        ids_and_states(&migrations_of(api, &name).await),
        pairs(&[("001_items", "applied")])
    );

    assert_error(
        &api.post(
            "/plugins/migrations/plan",
            Some(json!({"path": "missing.js"})),
        )
        .await,
        404,
        "plugin_not_found",
    );
    warden.write_plugin("broken.js", "export default {");
    assert_eq!(
        api.post(
            "/plugins/migrations/plan",
            Some(json!({"path": "broken.js"}))
        )
        .await
        .0,
        422
    );
    assert_error(
        &api.post("/plugins/migrations/plan", Some(json!({}))).await,
        400,
        "invalid_request",
    );
    unload(api, &name).await;
    scalar(&format!("DROP TABLE public.\"{name}_items\""));
}

#[actix_rt::test]
async fn two_processes_loading_one_plugin_at_once_apply_each_migration_once() {
    let name = unique("migtwo");
    let file = format!("{name}.js");
    // Not idempotent: applied twice, the insert would fail or count 2.
    let migrations = json!([
        {"id": "001_items", "sql": CREATE_ITEMS},
        {"id": "002_seed", "sql": "INSERT INTO items SELECT n, 'row' FROM generate_series(1, 1000) AS n"},
    ]);
    let source = migrating_plugin(&name, "1.0.0", &["items"], &migrations.to_string());
    let first = start(&[], &[]);
    let second = start(&[], &[]);
    first.write_plugin(&file, &source);
    second.write_plugin(&file, &source);
    let (a, b) = (first.admin(), second.admin());
    let (one, two) = futures::join!(a.load(&file), b.load(&file));
    assert_eq!((one.0, two.0), (201, 201), "{one:?} {two:?}");
    assert_eq!(
        scalar(&format!("SELECT count(*) FROM public.\"{name}_items\"")),
        "1000"
    );
    assert_eq!(
        scalar(&format!(
            "SELECT count(*) FROM warden.plugin_migrations WHERE plugin = '{name}'"
        )),
        "2"
    );
    unload(&a, &name).await;
    unload(&b, &name).await;
    scalar(&format!("DROP TABLE public.\"{name}_items\""));
}

#[actix_rt::test]
async fn migration_lists_are_checked_at_load_without_any_service() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = &warden.admin();
    for (migrations, expected) in [
        (
            r#"[{ id: "001", sql: "CREATE TABLE a (id INT)" }, { id: "001", sql: "SELECT 1" }]"#,
            "appears twice",
        ),
        (r#"[{ id: "001 first", sql: "SELECT 1" }]"#, "' '"),
        (r#"[{ id: "", sql: "SELECT 1" }]"#, "1 to 128"),
        (r#"[{ id: 1, sql: "SELECT 1" }]"#, "number"),
        (r#"[{ id: "001" }]"#, "no string 'sql'"),
        (
            r#"["CREATE TABLE a (id INT)"]"#,
            "migrations[0] is a string",
        ),
        (
            r#"{ first: "CREATE TABLE a (id INT)" }"#,
            "must be an array",
        ),
        (
            r#"[{ get id() { throw new Error("no id today"); }, sql: "SELECT 1" }]"#,
            "no id today",
        ),
    ] {
        warden.write_plugin(
            "shape.js",
            &migrating_plugin("shape", "1.0.0", &["a"], migrations),
        );
        let answer = api.load("shape.js").await;
        assert_error(&answer, 422, "invalid_plugin");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{migrations}: {message}");
    }
    // A valid list without a database is refused too: migrations need one.
    warden.write_plugin(
        "shape.js",
        &migrating_plugin(
            "shape",
            "1.0.0",
            &["a"],
            r#"[{ id: "001", sql: "CREATE TABLE a (id INT)" }]"#,
        ),
    );
    let answer = api.load("shape.js").await;
    assert_error(&answer, 422, "invalid_plugin");
    assert!(answer.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("WARDEN_DATABASE_URL"));
    assert_eq!(api.get("/plugins").await.1["plugins"], json!([]));
}

/// A plugin whose `execute(input)` runs the JavaScript in `input.script` as an async function
/// of `db` (its `context.database`) and `self` (the plugin object), for transaction tests.
pub(crate) fn scripted_plugin(name: &str, tables: &[&str]) -> String {
    format!(
        r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0", allowedTables: {tables} }},
  migrations: [{{ id: "001", sql: "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL); INSERT INTO accounts VALUES (1, 100), (2, 100)" }}],
  initialize(context) {{ this.db = context.database; }},
  async execute(input) {{
    const run = new Function("db", "self", "return (async () => {{" + input.script + "}})();");
    return run(this.db, this);
  }},
}};
"#,
        tables = json!(tables)
    )
}

pub(crate) async fn script(api: &Admin, name: &str, script: &str) -> (u16, Value) {
    api.execute(name, json!({ "script": script })).await
}

/// Loads a scripted plugin (`accounts` with balances 100 and 100) in `warden`; answers its
/// database role.
pub(crate) async fn load_scripted(warden: &WardenProcess, name: &str) -> String {
    warden.write_plugin(&format!("{name}.js"), &scripted_plugin(name, &["accounts"]));
    let api = &warden.admin();
    let (status, body) = api.load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{body}");
    api.plugin(name).await["databaseRole"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Unloads a scripted plugin and drops its table.
pub(crate) async fn unload_scripted(api: &Admin, name: &str) {
    unload(api, name).await;
    scalar(&format!("DROP TABLE public.\"{name}_accounts\""));
}

pub(crate) fn balances(name: &str) -> String {
    scalar(&format!(
        "SELECT string_agg(balance::text, ',' ORDER BY id) FROM public.\"{name}_accounts\""
    ))
}

#[actix_rt::test]
async fn a_transaction_commits_on_resolve_and_rolls_back_on_reject_with_the_same_error() {
    let name = unique("txbasic");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    load_scripted(&warden, &name).await;

    let (status, body) = script(
        api,
        &name,
        r#"
        return db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = balance - 30 WHERE id = 1");
          await tx.executeCommand("UPDATE accounts SET balance = balance + 30 WHERE id = 2");
          // Outside the transaction, nothing of it is visible yet.
          const outside = await db.executeQuery("SELECT balance FROM accounts WHERE id = 1");
          const inside = await tx.executeQuery("SELECT balance FROM accounts WHERE id = 1");
          return { outside: outside[0].balance, inside: inside[0].balance };
        });"#,
    )
    .await;
    assert_eq!(
        (status, body["result"].clone()),
        (200, json!({"outside": 100, "inside": 70})),
        "{body}"
    );
    assert_eq!(balances(&name), "70,130");

    let (status, body) = script(api, &name, r#"
        const thrown = Object.assign(new Error("insufficient funds"), { code: "no_funds", detail: 42 });
        try {
          await db.transaction(async (tx) => {
            await tx.executeCommand("UPDATE accounts SET balance = balance - 500 WHERE id = 1");
            throw thrown;
          });
          return "committed";
        } catch (error) {
          return { same: error === thrown, message: error.message, code: error.code, detail: error.detail };
        }"#).await;
    assert_eq!(
        (status, body["result"].clone()),
        (
            200,
            json!({"same": true, "message": "insufficient funds", "code": "no_funds", "detail": 42})
        ),
        "{body}"
    );
    assert_eq!(balances(&name), "70,130");

    // A callback that throws synchronously, and a failed statement the callback swallowed:
    // both roll back; the second cannot commit and says so.
    let (_, body) = script(api, &name, r#"
        const sync = await db.transaction(() => { throw new TypeError("sync"); }).catch((e) => e.name);
        const swallowed = await db.transaction(async (tx) => {
          await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 2");
          await tx.executeCommand("INSERT INTO accounts VALUES (1, 1)").catch(() => {});
          return "done";
        }).catch((e) => e.name + " " + e.code);
        return { sync, swallowed };"#).await;
    assert_eq!(
        body["result"],
        json!({"sync": "TypeError", "swallowed": "DatabaseError 25P02"}),
        "{body}"
    );
    assert_eq!(balances(&name), "70,130");
    unload_scripted(api, &name).await;
}

#[actix_rt::test]
async fn a_closed_transaction_and_sql_transaction_control_are_refused() {
    let name = unique("txclosed");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    load_scripted(&warden, &name).await;
    let (_, body) = script(api, &name, r#"
        let kept;
        await db.transaction(async (tx) => { kept = tx; });
        const after = await kept.executeQuery("SELECT 1").then(() => "ran", (e) => e.name);
        const control = [];
        for (const sql of ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT a", "RELEASE SAVEPOINT a", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "START TRANSACTION", "END"]) {
          control.push(await db.executeCommand(sql).then(() => "ran", (e) => e.name));
          control.push(await db.transaction((tx) => tx.executeCommand(sql)).then(() => "ran", (e) => e.name));
        }
        const options = [];
        for (const bad of [{ isolation: "read uncommitted" }, { readOnly: "yes" }, { deferrable: true }, "serializable"]) {
          options.push(await db.transaction(async () => "ran", bad).then((r) => r, (e) => e.name));
        }
        const notAFunction = await db.transaction("SELECT 1").then(() => "ran", (e) => e.name);
        return { after, control: [...new Set(control)], options: [...new Set(options)], notAFunction };"#).await;
    assert_eq!(
        body["result"],
        json!({"after": "TransactionClosedError", "control": ["SqlNotAllowedError"], "options": ["TypeError"], "notAFunction": "TypeError"}),
        "{body}"
    );
    unload_scripted(api, &name).await;
}

#[actix_rt::test]
async fn read_only_and_serializable_transactions_fail_as_postgresql_says() {
    let name = unique("txiso");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    load_scripted(&warden, &name).await;
    let (_, body) = script(api, &name, r#"
        return db.transaction((tx) => tx.executeCommand("UPDATE accounts SET balance = 1"), { readOnly: true })
          .then(() => "wrote", (e) => e.name + " " + e.code);"#).await;
    assert_eq!(body["result"], "DatabaseError 25006", "{body}");

    // Write skew: each reads the sum, then writes on the other's row. Under serializable one of
    // the two is refused with a serialization failure.
    let (_, body) = script(api, &name, r#"
        const gate = () => { let open; const opened = new Promise((resolve) => { open = resolve; }); return { opened, open }; };
        const readA = gate(), readB = gate();
        const transfer = (from, mine, theirs) => db.transaction(async (tx) => {
          const [{ total }] = await tx.executeQuery("SELECT sum(balance)::int AS total FROM accounts");
          mine.open();
          await theirs.opened;
          await tx.executeCommand("UPDATE accounts SET balance = balance - $1 WHERE id = $2", [total, from]);
        }, { isolation: "serializable" });
        const outcomes = await Promise.allSettled([transfer(1, readA, readB), transfer(2, readB, readA)]);
        return outcomes.map((o) => o.status === "fulfilled" ? "committed" : o.reason.name + " " + o.reason.code).sort();"#).await;
    assert_eq!(
        body["result"],
        json!(["DatabaseError 40001", "committed"]),
        "{body}"
    );
    unload_scripted(api, &name).await;
}

/// The sessions of `role` that are inside a transaction now.
pub(crate) fn open_transactions_of(role: &str) -> i64 {
    scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND xact_start IS NOT NULL"
    ))
    .parse()
    .unwrap()
}

/// Starts, from a timer (outside any call), a transaction that updates account 1 and then
/// never settles.
pub(crate) const HANGING_TRANSACTION: &str = r#"
    setTimeout(() => {
      db.transaction(async (tx) => {
        self.tx = tx;
        await tx.executeCommand("UPDATE accounts SET balance = 0 WHERE id = 1");
        await new Promise(() => {});
      }).catch(() => {});
    }, 0);
    return "started";"#;

/// Starts [`HANGING_TRANSACTION`] in `name` and waits until PostgreSQL shows it open.
async fn start_hanging_transaction(api: &Admin, name: &str, role: &str) {
    assert_eq!(
        script(api, name, HANGING_TRANSACTION).await.1["result"],
        "started"
    );
    assert!(wait_until(PATIENCE, || async { open_transactions_of(role) == 1 }).await);
}

#[actix_rt::test]
async fn warden_rolls_back_a_transaction_at_the_time_limit_and_at_unload() {
    let name = unique("txhang");
    let warden =
        WardenProcess::start_with_stack(&[], &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "2000")], &[]);
    warden.write_plugin(
        &format!("{name}.js"),
        &scripted_plugin(&name, &["accounts"]),
    );
    let api = &warden.admin();
    assert_eq!(api.load(&format!("{name}.js")).await.0, 201);
    let role = api.plugin(&name).await["databaseRole"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(
        script(api, &name, HANGING_TRANSACTION).await.1["result"],
        "started"
    );
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 1 }).await);
    // Held past the 2 s limit, it is rolled back; its handle then says so.
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 0 }).await);
    assert_eq!(balances(&name), "100,100");
    let (_, body) = script(api, &name, "return self.tx.executeQuery('SELECT 1').then(() => 'ran', (e) => e.name + ': ' + e.message);").await;
    let answer = body["result"].as_str().unwrap();
    assert!(answer.starts_with("TransactionClosedError"), "{answer}");
    assert!(warden.log_count("an open transaction was rolled back") >= 1);

    // Unloaded while one is open: rolled back at once, well before the time limit.
    assert_eq!(
        script(api, &name, HANGING_TRANSACTION).await.1["result"],
        "started"
    );
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 1 }).await);
    let unloaded_at = std::time::Instant::now();
    unload(api, &name).await;
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 0 }).await);
    assert!(
        unloaded_at.elapsed() < Duration::from_millis(1_900),
        "{:?}",
        unloaded_at.elapsed()
    );
    assert_eq!(balances(&name), "100,100");
    scalar(&format!("DROP TABLE public.\"{name}_accounts\""));
}

#[actix_rt::test]
async fn a_reload_rolls_back_what_the_previous_version_left_open() {
    let name = unique("txreload");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    let role = load_scripted(&warden, &name).await;
    start_hanging_transaction(api, &name, &role).await;
    let (status, body) = api.post(&format!("/plugins/{name}/reload"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 0 }).await);
    assert_eq!(balances(&name), "100,100");
    // The new version's transactions work on the same pool.
    let (_, body) = script(api, &name, "return db.transaction((tx) => tx.executeCommand('UPDATE accounts SET balance = 5 WHERE id = 2'));").await;
    assert_eq!(body["result"], 1, "{body}");
    assert_eq!(balances(&name), "100,5");
    unload_scripted(api, &name).await;
}

#[actix_rt::test]
async fn a_restart_after_a_crash_rolls_back_what_the_crashed_instance_left_open() {
    let name = unique("txcrash");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    let role = load_scripted(&warden, &name).await;
    start_hanging_transaction(api, &name, &role).await;
    // Heap exhaustion crashes the instance at once; the supervisor starts a new one.
    let crashed_at = std::time::Instant::now();
    let (status, body) = script(
        api,
        &name,
        "const kept = []; while (true) kept.push(new Array(100000).fill(1));",
    )
    .await;
    assert_ne!(status, 200, "{body}");
    assert!(wait_until(PATIENCE, || async { open_transactions_of(&role) == 0 }).await);
    assert!(
        crashed_at.elapsed() < Duration::from_millis(4_000),
        "rolled back with the instance, not at the 5 s limit: {:?}",
        crashed_at.elapsed()
    );
    assert_eq!(balances(&name), "100,100");
    assert!(
        wait_until(PATIENCE, || async {
            let info = api.plugin(&name).await;
            info["state"] == "running" && info["restarts"] == 1
        })
        .await,
        "the plugin was restarted"
    );
    let (_, body) = script(api, &name, "return db.transaction((tx) => tx.executeCommand('UPDATE accounts SET balance = 7 WHERE id = 2'));").await;
    assert_eq!(
        body["result"], 1,
        "the restarted instance's transactions work: {body}"
    );
    assert_eq!(balances(&name), "100,7");
    unload_scripted(api, &name).await;
}

#[actix_rt::test]
async fn database_errors_carry_their_sqlstate_in_code() {
    let name = unique("txcode");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    load_scripted(&warden, &name).await;
    let (_, body) = script(api, &name, r#"
        const error = await db.executeCommand("INSERT INTO accounts VALUES (1, 1)").catch((e) => e);
        return { name: error.name, code: error.code, inMessage: error.message.includes(error.code) };"#).await;
    assert_eq!(
        body["result"],
        json!({"name": "DatabaseError", "code": "23505", "inMessage": true}),
        "{body}"
    );
    let answer = script(
        api,
        &name,
        "await db.executeQuery('SELECT * FROM missing_table');",
    )
    .await;
    assert_plugin_error(&answer, "TableAccessDeniedError");
    unload_scripted(api, &name).await;
}
