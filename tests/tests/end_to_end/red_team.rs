//! A hostile plugin against a fresh `warden serve` on the local stack, by family. Each attack is
//! refused with a typed error and nothing is read, written or harmed, checked in PostgreSQL
//! directly; for the SQL families the same statement is also run without the guard, as the
//! plugin's own database role (the local stack trusts loopback logins), to show that the second
//! wall refuses it too.

use std::process::Command;

use serde_json::{json, Value};
use warden_tests::{assert_error, local_stack_env};

use crate::gateways::{
    assert_plugin_error, command, query, run, sql_plugin, start, try_sql, unique, unload,
};

/// The local stack's database as `(host, port, database)`, from `WARDEN_DATABASE_URL`.
fn database_address() -> (String, String, String) {
    let url = local_stack_env()
        .into_iter()
        .find(|(key, _)| key == "WARDEN_DATABASE_URL")
        .map(|(_, value)| value)
        .expect("infra/local.env names the database");
    let after_user = url.rsplit('@').next().unwrap_or_default();
    let (host_port, database) = after_user.split_once('/').expect("url has a database");
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    (host.to_string(), port.to_string(), database.to_string())
}

/// Runs `sql` with psql as `user`, bypassing Warden entirely; answers success and what
/// PostgreSQL printed.
pub(crate) fn psql_as(user: &str, sql: &str) -> (bool, String) {
    let (host, port, database) = database_address();
    let output = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            &format!("host={host} port={port} dbname={database} user={user}"),
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The role a loaded plugin's statements run as, from `PluginInfo.databaseRole`.
async fn role_of(api: &warden_tests::Admin, name: &str) -> String {
    let info = api.plugin(name).await;
    info["databaseRole"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no database role: {info}"))
        .to_string()
}

#[actix_rt::test]
async fn each_plugin_runs_as_its_own_unprivileged_role_that_refuses_other_plugins_data() {
    let victim = unique("victim");
    let attacker = unique("attacker");
    let warden = start(
        &[
            (&victim, &sql_plugin(&victim, &["secrets"])),
            (&attacker, &sql_plugin(&attacker, &["notes"])),
        ],
        &[],
    );
    let api = &warden.admin();
    command(
        api,
        &victim,
        "CREATE TABLE secrets (id serial PRIMARY KEY, body text)",
        json!([]),
    )
    .await;
    command(
        api,
        &victim,
        "INSERT INTO secrets (body) VALUES ($1)",
        json!(["the crown jewels"]),
    )
    .await;
    let attacker_role = role_of(api, &attacker).await;
    let victim_role = role_of(api, &victim).await;
    assert_ne!(attacker_role, victim_role);

    // The role holds no privilege beyond logging in.
    let (ok, attributes) = psql_as(
        &attacker_role,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, \
         (SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member \
          WHERE r.rolname = current_user) FROM pg_roles WHERE rolname = current_user",
    );
    assert!(ok, "{attributes}");
    assert_eq!(attributes.trim(), "f|f|f|f|0", "{attributes}");
    assert_eq!(
        psql_as(&attacker_role, "SELECT session_user").1.trim(),
        attacker_role
    );

    // Unguarded, as the attacker's own role: every escape the guard exists for is refused.
    let victim_table = format!("\"{victim}_secrets\"");
    for attack in [
        format!("SELECT body FROM {victim_table}"),
        format!("UPDATE {victim_table} SET body = 'owned'"),
        format!("DELETE FROM {victim_table}"),
        format!("SELECT nextval('\"{victim}_secrets_id_seq\"')"),
        format!("DROP TABLE {victim_table}"),
        format!("ALTER TABLE {victim_table} ADD COLUMN x int"),
        "SELECT pg_read_file('/etc/passwd')".to_string(),
        "SELECT pg_ls_dir('.')".to_string(),
        "COPY (SELECT 1) TO '/tmp/warden-red-team'".to_string(),
        "SELECT current_setting('data_directory')".to_string(),
        "CREATE TEMPORARY TABLE poisoned (x int)".to_string(),
        format!("SET ROLE \"{victim_role}\""),
        "SET ROLE warden".to_string(),
        "CREATE ROLE escalated".to_string(),
    ] {
        let (ok, said) = psql_as(&attacker_role, &attack);
        assert!(
            !ok,
            "PostgreSQL let the attacker's role run {attack:?}: {said}"
        );
    }

    // Through Warden, the guard refuses them first, typed; the victim's row is untouched.
    for attack in [
        format!("SELECT body FROM {victim}_secrets"),
        "SELECT g.pg_read_file FROM unnest(ARRAY['/etc/passwd']) AS g".to_string(),
        "SELECT ('/etc/passwd'::text).pg_read_file".to_string(),
        "SELECT 'secrets'::regclass".to_string(),
        "SELECT current_user".to_string(),
        "SELECT * FROM notes WHERE body = N'x'' OR true --'".to_string(),
    ] {
        let answer = try_sql(api, &attacker, &attack, false).await;
        assert_eq!(answer.0, 422, "{attack:?}: {answer:?}");
        let name = answer.1["error"]["name"].as_str().unwrap_or_default();
        assert!(
            name == "SqlNotAllowedError" || name == "TableAccessDeniedError",
            "{attack:?}: {answer:?}"
        );
    }
    let rows = query(api, &victim, "SELECT body FROM secrets", json!([])).await;
    assert_eq!(rows, json!([{ "body": "the crown jewels" }]));

    command(api, &victim, "DROP TABLE secrets", json!([])).await;
    unload(api, &victim).await;
    unload(api, &attacker).await;
}

#[actix_rt::test]
async fn access_levels_are_reported_and_enforced_with_the_levels_named() {
    let owner = unique("levels");
    let source = sql_plugin(&owner, &["ledger", "rates:read", "journal:write"]);
    let warden = start(&[(&owner, &source)], &[]);
    let api = &warden.admin();
    let info = api.plugin(&owner).await;
    let levels: Vec<(Value, Value)> = info["resources"]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|table| (table["name"].clone(), table["access"].clone()))
        .collect();
    assert_eq!(
        levels,
        [
            (json!("ledger"), json!("owner")),
            (json!("rates"), json!("read")),
            (json!("journal"), json!("write")),
        ]
    );
    assert_eq!(
        run(api, &owner, json!({ "allowedTables": true })).await,
        json!(["ledger", "rates", "journal"])
    );

    let insert = try_sql(api, &owner, "INSERT INTO rates (id) VALUES (1)", true).await;
    assert_plugin_error(&insert, "TableAccessDeniedError");
    let message = insert.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("rates") && message.contains("'read'") && message.contains("'write'"),
        "{message}"
    );
    let truncate = try_sql(api, &owner, "TRUNCATE journal", true).await;
    assert_plugin_error(&truncate, "TableAccessDeniedError");
    assert!(truncate.1["error"]["message"]
        .as_str()
        .is_some_and(|message| message.contains("'owner'")));
    unload(api, &owner).await;
}

#[actix_rt::test]
async fn a_prefix_that_held_resources_stays_claimed_after_unload() {
    let first = unique("claim");
    let inheritor = format!("{first}_x");
    let warden = start(
        &[
            (&first, &sql_plugin(&first, &["users"])),
            (&inheritor, &sql_plugin(&inheritor, &["users"])),
        ],
        &["--no-load-all"],
    );
    let api = &warden.admin();
    let (status, body) = api.load(&format!("{first}.js")).await;
    assert_eq!(status, 201, "{body}");
    unload(api, &first).await;
    let answer = api.load(&format!("{inheritor}.js")).await;
    assert_error(&answer, 422, "invalid_name");
    assert!(answer.1["error"]["message"]
        .as_str()
        .is_some_and(|message| message.contains(&first)));
}

// --- the host -----------------------------------------------------------------------------------

/// A plugin that runs what it is asked to against the host: emit a payload of `size` bytes, call
/// a lifecycle function of its dependency, or arm timers.
const HOST_ATTACKER: &str = r#"
export default {
  metadata: { name: "intruder", version: "1.0.0", dependencies: ["target"] },
  async initialize(context) { this.context = context; },
  async execute(input) {
    if (input.emit) {
      this.context.eventBus.emit("data:blob", { blob: "x".repeat(input.emit) });
      return "emitted";
    }
    if (input.lifecycle) return this.context.getDependency("target").call(input.lifecycle);
    if (input.timers) {
      for (let i = 0; i < input.timers; i++) setTimeout(() => {}, 60000);
      return "armed";
    }
    return null;
  },
};
"#;

const HOST_TARGET: &str = r#"
export default {
  metadata: { name: "target", version: "1.0.0" },
  initialized: 0,
  async initialize() { this.initialized += 1; },
  async cleanup() { this.initialized = -1; },
  async execute() { return this.initialized; },
};
"#;

#[actix_rt::test]
async fn host_attacks_are_refused_typed_and_the_target_is_unharmed() {
    let warden = warden_tests::WardenProcess::start(
        &[("target.js", HOST_TARGET), ("intruder.js", HOST_ATTACKER)],
        &[
            ("WARDEN_PLUGIN_MAX_MESSAGE_BYTES", "65536"),
            ("WARDEN_PLUGIN_MAX_TIMERS", "100"),
        ],
        &[],
    );
    let api = &warden.admin();
    for lifecycle in ["initialize", "cleanup"] {
        let answer = api
            .execute("intruder", json!({ "lifecycle": lifecycle }))
            .await;
        assert_plugin_error(&answer, "MethodNotAllowedError");
    }
    assert_eq!(
        api.execute("target", json!(null)).await,
        (200, json!({ "result": 1 }))
    );

    let oversized = api.execute("intruder", json!({ "emit": 100_000 })).await;
    assert_plugin_error(&oversized, "MessageTooLargeError");
    let within = api.execute("intruder", json!({ "emit": 1_000 })).await;
    assert_eq!(within, (200, json!({ "result": "emitted" })));

    let timers = api.execute("intruder", json!({ "timers": 101 })).await;
    assert_plugin_error(&timers, "TimerLimitError");
}

#[actix_rt::test]
async fn reserved_names_and_imports_that_leave_the_directory_are_refused() {
    let warden = warden_tests::WardenProcess::start(
        &[
            (
                "admin.js",
                r#"export default { metadata: { name: "admin", version: "1.0.0" } };"#,
            ),
            (
                "sibling.js",
                r#"export default { metadata: { name: "sibling", version: "1.0.0" }, secret: 42 };"#,
            ),
            (
                "thief.js",
                r#"import sibling from "./sibling.js";
export default { metadata: { name: "thief", version: "1.0.0" }, async execute() { return sibling.secret; } };"#,
            ),
            (
                "escapee.js",
                r#"import "./lib/outside.js";
export default { metadata: { name: "escapee", version: "1.0.0" } };"#,
            ),
        ],
        &[],
        &["--no-load-all"],
    );
    warden.write_outside("secret.js", "export const secret = 42;");
    let link = warden.plugins_dir().join("lib");
    std::fs::create_dir_all(&link).expect("lib directory");
    std::os::unix::fs::symlink(
        warden
            .plugins_dir()
            .parent()
            .expect("a parent")
            .join("secret.js"),
        link.join("outside.js"),
    )
    .expect("symlink");
    let api = &warden.admin();
    assert_error(&api.load("admin.js").await, 422, "invalid_name");
    let thief = api.load("thief.js").await;
    assert_error(&thief, 422, "invalid_plugin");
    assert!(thief.1["error"]["message"]
        .as_str()
        .is_some_and(|message| message.contains("another plugin's entry file")));
    let escapee = api.load("escapee.js").await;
    assert_error(&escapee, 422, "invalid_plugin");
    assert!(escapee.1["error"]["message"]
        .as_str()
        .is_some_and(|message| message.contains("leads outside the plugins directory")));
    let (status, body) = api.get("/plugins").await;
    assert_eq!(status, 200);
    assert_eq!(body["plugins"], json!([]), "nothing was loaded: {body}");
}
