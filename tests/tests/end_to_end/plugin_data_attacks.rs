//! Attacks on a plugin's data over time, by a hostile plugin author or a careless client: SQL
//! splitting tricks and escapes in migrations, forged migration records (through Warden and, as
//! the second wall, as the plugin's own role without Warden), prefix claims, plans that must
//! change nothing, slow and hostile migration lists (transactions: `transaction_attacks`).
//! After each attack the plugin's role must hold no session inside a transaction and no
//! statement still running. What PostgreSQL holds is checked in PostgreSQL.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{assert_error, wait_until, Admin, WardenProcess};

use crate::gateways::{sql_plugin, start, unique, unload};
use crate::plugin_data::{
    ids_and_states, load_scripted, migrating_plugin, migrations_of, scalar, script, sha256,
    write_migrating, CREATE_ITEMS,
};
use crate::red_team::psql_as;

pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// The database role a loaded plugin's statements run as.
pub(crate) async fn role_of(api: &Admin, name: &str) -> String {
    let info = api.plugin(name).await;
    info["databaseRole"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no database role: {info}"))
        .to_string()
}

/// Sessions of `role` running a statement now.
pub(crate) fn active_statements_of(role: &str) -> i64 {
    scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND state = 'active'"
    ))
    .parse()
    .unwrap()
}

/// Sessions of `role`, whatever they do.
pub(crate) fn sessions_of(role: &str) -> i64 {
    scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .parse()
    .unwrap()
}

pub(crate) fn table_exists(physical: &str) -> bool {
    scalar(&format!(
        "SELECT to_regclass('public.\"{physical}\"') IS NOT NULL"
    )) == "t"
}

pub(crate) fn records_of(plugin: &str) -> String {
    scalar(&format!(
        "SELECT coalesce(string_agg(id || ':' || checksum, ',' ORDER BY id), '') \
         FROM warden.plugin_migrations WHERE plugin = '{plugin}'"
    ))
}

/// Runs `body` (the inside of an async function of `db` and `self`) from a timer, outside any
/// call, and keeps its outcome in `self.outcome`: `{value}` or `{error, code, message}`.
pub(crate) async fn in_background(api: &Admin, name: &str, body: &str) {
    let wrapped = format!(
        r#"
        self.outcome = null;
        setTimeout(() => {{
          const began = Date.now();
          (async () => {{ {body} }})().then(
            (value) => {{ self.outcome = {{ value: value === undefined ? null : value, ms: Date.now() - began }}; }},
            (error) => {{ self.outcome = {{ error: String(error && error.name), code: error && error.code, message: String(error && error.message), ms: Date.now() - began }}; }});
        }}, 0);
        return "started";"#
    );
    let (status, answer) = script(api, name, &wrapped).await;
    assert_eq!(
        (status, answer["result"].clone()),
        (200, json!("started")),
        "{answer}"
    );
}

/// Waits for the outcome of [`in_background`].
pub(crate) async fn background_outcome(api: &Admin, name: &str) -> Value {
    let last = RefCell::new(Value::Null);
    let settled = wait_until(PATIENCE, || {
        let last = &last;
        async move {
            let (_, body) = script(
                api,
                name,
                "return self.outcome === undefined ? null : self.outcome;",
            )
            .await;
            *last.borrow_mut() = body["result"].clone();
            !last.borrow().is_null()
        }
    })
    .await;
    assert!(settled, "the background work of {name} never settled");
    last.into_inner()
}

pub(crate) fn drop_table(physical: &str) {
    scalar(&format!("DROP TABLE IF EXISTS public.\"{physical}\""));
}

// --- Migrations --------------------------------------------------------------------------------

#[actix_rt::test]
async fn migration_sql_splits_only_at_the_semicolons_postgresql_would() {
    let name = unique("migsplit");
    // Semicolons in strings, after a backslash (a plain character with standard_conforming_strings),
    // in doubled quotes, in `--` comments, in nested block comments hiding a DROP, empty
    // statements, and a last comment without a newline.
    let sql = "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT NOT NULL);\n\
               /* outer /* inner ; */ still a comment ; DROP TABLE notes; */\n\
               INSERT INTO notes VALUES (1, 'semi;colon'), (2, 'back\\slash;'), (3, 'it''s; quoted');;\n\
               INSERT INTO notes VALUES (4, 'dash -- not a comment; really') -- a comment ; here\n\
               ;\n\
               INSERT INTO notes VALUES (5, '/* not a comment; */');\n\
               -- the last line; no newline after it";
    let warden = start(&[], &[]);
    let api = &warden.admin();
    write_migrating(
        &warden,
        &name,
        "1.0.0",
        &["notes"],
        &json!([{"id": "001_notes", "sql": sql}]),
    );
    let (status, body) = api.load(&format!("{name}.js")).await;
    let contents = if table_exists(&format!("{name}_notes")) {
        scalar(&format!(
            "SELECT string_agg(id || '=' || body, '|' ORDER BY id) FROM public.\"{name}_notes\""
        ))
    } else {
        "(no table)".to_string()
    };
    let records = records_of(&name);
    if status == 201 {
        unload(api, &name).await;
    }
    drop_table(&format!("{name}_notes"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        contents,
        "1=semi;colon|2=back\\slash;|3=it's; quoted|4=dash -- not a comment; really|5=/* not a comment; */"
    );
    assert_eq!(records, format!("001_notes:{}", sha256(sql)));
}

#[actix_rt::test]
async fn migrations_cannot_reach_the_records_locks_settings_or_another_plugins_tables() {
    let name = unique("migesc");
    let victim = unique("migvic");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    write_migrating(
        &warden,
        &victim,
        "1.0.0",
        &["items"],
        &json!([{"id": "001_items", "sql": CREATE_ITEMS}]),
    );
    assert_eq!(api.load(&format!("{victim}.js")).await.0, 201);
    let victim_records = records_of(&victim);
    let create = "CREATE TABLE items (id INT)";
    let attacks: Vec<(String, &str)> = vec![
        // Literals the guard cannot print back exactly, holding a separator.
        (format!("{create}; INSERT INTO items VALUES (E'a\\';b')"), "SqlNotAllowedError"),
        (format!("{create}; INSERT INTO items VALUES ($t$;$t$)"), "SqlNotAllowedError"),
        // Forged records, by schema-qualified name and by bare name.
        (
            format!(
                "{create}; INSERT INTO warden.plugin_migrations (plugin, id, checksum, plugin_version) \
                 VALUES ('{victim}', '002_forged', 'x', '6.6.6')"
            ),
            "SqlNotAllowedError",
        ),
        (format!("{create}; DELETE FROM plugin_migrations"), "TableAccessDeniedError"),
        (
            format!("{create}; UPDATE {victim}_items SET label = 'owned'"),
            "TableAccessDeniedError",
        ),
        // Locks that would hold other loads, and settings that would lift the time limit.
        (format!("{create}; SELECT pg_advisory_lock(1)"), "SqlNotAllowedError"),
        (format!("SELECT pg_advisory_xact_lock(1); {create}"), "SqlNotAllowedError"),
        (
            format!("{create}; SELECT set_config('statement_timeout', '0', true)"),
            "SqlNotAllowedError",
        ),
        (format!("{create}; SET LOCAL statement_timeout = 0"), "SqlNotAllowedError"),
        (format!("{create}; SELECT pg_sleep(100)"), "SqlNotAllowedError"),
        (format!("{create}; LOCK TABLE items IN ACCESS EXCLUSIVE MODE"), "SqlNotAllowedError"),
        (format!("{create}; CREATE TABLE public.items2 (id INT)"), "SqlNotAllowedError"),
        (format!("{create}; PREPARE sneaky AS SELECT 1"), "SqlNotAllowedError"),
        (format!("{create}; RESET ALL"), "SqlNotAllowedError"),
        (format!("{create}; DISCARD ALL"), "SqlNotAllowedError"),
        (format!("{create}; ROLLBACK; {create}"), "SqlNotAllowedError"),
        // An unterminated comment swallowing the rest.
        (format!("{create} /* never closed ; DROP TABLE items"), "42601"),
        // Cannot run inside the batch's transaction, whoever refuses it.
        (
            format!("{create}; CREATE INDEX CONCURRENTLY items_by_id ON items (id)"),
            "'001'",
        ),
    ];
    let mut failures = Vec::new();
    for (sql, expected) in &attacks {
        let file = format!("{name}.js");
        write_migrating(
            &warden,
            &name,
            "1.0.0",
            &["items"],
            &json!([{"id": "001", "sql": sql}]),
        );
        let answer = api.load(&file).await;
        let message = answer.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let refused = answer.0 == 422
            && answer.1["error"]["code"] == "migration_failed"
            && message.contains("'001'")
            && message.contains(expected);
        if answer.0 == 201 {
            unload(api, &name).await;
        }
        if !refused || table_exists(&format!("{name}_items")) {
            failures.push(format!("{sql:?}: {answer:?}"));
        }
        drop_table(&format!("{name}_items"));
    }
    let attacker_records = records_of(&name);
    let victim_after = records_of(&victim);
    let victim_rows = scalar(&format!(
        "SELECT count(*) FROM public.\"{victim}_items\" WHERE label = 'owned'"
    ));
    unload(api, &victim).await;
    drop_table(&format!("{victim}_items"));
    assert!(
        failures.is_empty(),
        "not refused as expected:\n{}",
        failures.join("\n")
    );
    assert_eq!(attacker_records, "");
    assert_eq!(victim_after, victim_records);
    assert_eq!(victim_rows, "0");
}

#[actix_rt::test]
async fn a_plugin_role_reads_and_adds_only_its_own_migration_records() {
    let attacker = unique("recatk");
    let victim = unique("recvic");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    for name in [&attacker, &victim] {
        write_migrating(
            &warden,
            name,
            "1.0.0",
            &["items"],
            &json!([{"id": "001_items", "sql": CREATE_ITEMS}]),
        );
        assert_eq!(api.load(&format!("{name}.js")).await.0, 201);
    }
    let role = role_of(api, &attacker).await;
    let victim_records = records_of(&victim);
    let attacker_records = records_of(&attacker);

    // Through Warden, the guard refuses the records table however it is named.
    let through_warden = api
        .execute(
            &attacker,
            json!({"sql": "SELECT * FROM warden.plugin_migrations"}),
        )
        .await;
    assert_error(&through_warden, 422, "execution_failed");

    // Without Warden, as the plugin's own role: row-level security shows only its own rows,
    // also through the planner's statistics.
    let (ok, seen) = psql_as(
        &role,
        "SELECT string_agg(plugin || '/' || id, ',') FROM warden.plugin_migrations",
    );
    assert!(ok, "{seen}");
    assert_eq!(seen.trim(), format!("{attacker}/001_items"));
    scalar("ANALYZE warden.plugin_migrations");
    let (ok, stats) = psql_as(
        &role,
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'warden' AND tablename = 'plugin_migrations'",
    );
    assert!(ok, "{stats}");
    assert_eq!(stats.trim(), "0");

    let role_sql = format!("\"{role}\"");
    let mut allowed = Vec::new();
    for attack in [
        format!(
            "INSERT INTO warden.plugin_migrations (plugin, id, checksum, plugin_version) \
             VALUES ('{victim}', '002_forged', 'x', '6.6.6')"
        ),
        format!(
            "INSERT INTO warden.plugin_migrations (plugin, id, checksum, plugin_version) \
             VALUES ('{attacker}', '001_items', 'x', '6.6.6') \
             ON CONFLICT (plugin, id) DO UPDATE SET checksum = 'x'"
        ),
        format!("UPDATE warden.plugin_migrations SET checksum = 'x' WHERE plugin = '{attacker}'"),
        "UPDATE warden.plugin_migrations SET plugin = 'someone'".to_string(),
        "DELETE FROM warden.plugin_migrations".to_string(),
        "TRUNCATE warden.plugin_migrations".to_string(),
        "ALTER TABLE warden.plugin_migrations DISABLE ROW LEVEL SECURITY".to_string(),
        format!("ALTER TABLE warden.plugin_migrations OWNER TO {role_sql}"),
        format!("DROP POLICY {role_sql} ON warden.plugin_migrations"),
        "CREATE POLICY sneaky ON warden.plugin_migrations USING (true)".to_string(),
        "GRANT SELECT ON warden.plugin_migrations TO PUBLIC".to_string(),
        "SET row_security = off; SELECT count(*) FROM warden.plugin_migrations".to_string(),
        "SELECT count(*) FROM warden.claimed_prefixes".to_string(),
        "SELECT count(*) FROM warden.node_plugins".to_string(),
        "SELECT count(*) FROM warden.node_overrides".to_string(),
        "CREATE TABLE warden.sneaky (x int)".to_string(),
        "CREATE FUNCTION warden.sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'".to_string(),
        "SELECT pg_advisory_lock(1), pg_advisory_unlock(1)".to_string(),
    ] {
        let (ok, said) = psql_as(&role, &attack);
        if ok {
            allowed.push(format!("{attack}: {said}"));
        }
    }
    let victim_after = records_of(&victim);
    let attacker_after = records_of(&attacker);
    for name in [&attacker, &victim] {
        unload(api, name).await;
        drop_table(&format!("{name}_items"));
    }
    // Advisory locks are PostgreSQL's to give every role; the guard refuses them, so only the
    // records' wall is asserted here. The list below must hold only that one.
    // A GRANT of nothing succeeds with a warning ("no privileges were granted"): not a grant.
    allowed.retain(|line| {
        !line.starts_with("SELECT pg_advisory_lock") && !line.contains("no privileges were granted")
    });
    assert!(
        allowed.is_empty(),
        "the plugin's role was allowed:\n{}",
        allowed.join("\n")
    );
    assert_eq!(victim_after, victim_records);
    assert_eq!(attacker_after, attacker_records);
}

#[actix_rt::test]
async fn tables_made_by_committed_migrations_keep_their_prefix_claimed_when_initialize_fails() {
    // The victim's migrations commit, then its initialize fails: the contract keeps the
    // migrations applied, so its table (seeded with a secret) stays. A plugin whose name
    // extends the victim's prefix must not inherit it.
    let victim = unique("claimv");
    let attacker = format!("{victim}_b");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    let victim_source = format!(
        r#"
export default {{
  metadata: {{ name: "{victim}", version: "1.0.0", allowedTables: ["b_secrets"] }},
  migrations: [{{ id: "001", sql: "CREATE TABLE b_secrets (body TEXT); INSERT INTO b_secrets VALUES ('the crown jewels')" }}],
  async initialize() {{ throw new Error("not today"); }},
}};
"#
    );
    warden.write_plugin(&format!("{victim}.js"), &victim_source);
    let refused = api.load(&format!("{victim}.js")).await;
    assert_error(&refused, 422, "initialize_failed");
    let physical = format!("{victim}_b_secrets");
    assert!(
        table_exists(&physical),
        "the committed migration stays, as the contract says"
    );

    warden.write_plugin(
        &format!("{attacker}.js"),
        &sql_plugin(&attacker, &["secrets"]),
    );
    let answer = api.load(&format!("{attacker}.js")).await;
    let mut read = Value::Null;
    if answer.0 == 201 {
        read = api
            .execute(&attacker, json!({"sql": "SELECT body FROM secrets"}))
            .await
            .1;
        unload(api, &attacker).await;
    }
    let owner = scalar(&format!(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.\"{physical}\"'::regclass"
    ));
    drop_table(&physical);
    assert!(
        answer.0 == 422 && answer.1["error"]["code"] == "invalid_name",
        "the overlapping plugin loaded ({}), its role now owns the victim's table (owner {owner}) \
         and it read {read}",
        answer.0
    );
}

#[actix_rt::test]
async fn a_plan_hands_no_table_to_the_plugin_and_refuses_an_overlapping_name() {
    let name = unique("planown");
    let physical = format!("{name}_items");
    // A table the operator made for the plugin, owned by Warden's user, with one row.
    scalar(&format!(
        "CREATE TABLE public.\"{physical}\" (id INT PRIMARY KEY, label TEXT NOT NULL); \
         INSERT INTO public.\"{physical}\" VALUES (1, 'by the operator')"
    ));
    let owner_before = scalar(&format!(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.\"{physical}\"'::regclass"
    ));
    let acl_before = scalar(&format!(
        "SELECT coalesce(relacl::text, '') FROM pg_class WHERE oid = 'public.\"{physical}\"'::regclass"
    ));
    let warden = start(&[], &[]);
    let api = &warden.admin();
    let file = format!("{name}.js");
    write_migrating(
        &warden,
        &name,
        "1.0.0",
        &["items"],
        &json!([{"id": "001_rows", "sql": "INSERT INTO items VALUES (2, 'planned')"}]),
    );
    let (status, plan) = api
        .post("/plugins/migrations/plan", Some(json!({"path": file})))
        .await;
    let owner_after = scalar(&format!(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.\"{physical}\"'::regclass"
    ));
    let acl_after = scalar(&format!(
        "SELECT coalesce(relacl::text, '') FROM pg_class WHERE oid = 'public.\"{physical}\"'::regclass"
    ));
    let rows = scalar(&format!(
        "SELECT string_agg(id || '=' || label, ',' ORDER BY id) FROM public.\"{physical}\""
    ));
    let records = records_of(&name);

    // A plan of a name whose prefix overlaps a loaded plugin's is refused like its load.
    let loaded = unique("planpre");
    warden.write_plugin(&format!("{loaded}.js"), &sql_plugin(&loaded, &["b_items"]));
    assert_eq!(api.load(&format!("{loaded}.js")).await.0, 201);
    let overlapping = format!("{loaded}_b");
    write_migrating(
        &warden,
        &overlapping,
        "1.0.0",
        &["items"],
        &json!([{"id": "001", "sql": CREATE_ITEMS}]),
    );
    let overlap_plan = api
        .post(
            "/plugins/migrations/plan",
            Some(json!({"path": format!("{overlapping}.js")})),
        )
        .await;
    let overlapping_roles = scalar(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE '%.{overlapping}'"
    ));
    // Reserved names and the shared prefix are refused like a load too, before any role.
    let mut reserved_plans = Vec::new();
    for reserved in ["warden", "shared", "shared_evil"] {
        let file = format!("{name}-{reserved}.js");
        let migrations = json!([{"id": "001", "sql": CREATE_ITEMS}]).to_string();
        warden.write_plugin(
            &file,
            &migrating_plugin(reserved, "1.0.0", &["items"], &migrations),
        );
        let answer = api
            .post("/plugins/migrations/plan", Some(json!({"path": file})))
            .await;
        reserved_plans.push((reserved, answer.0, answer.1["error"]["code"].clone()));
    }
    unload(api, &loaded).await;
    drop_table(&physical);

    // The plan hands no table over, so it runs the insert with the rights the role has now
    // (none on a table the operator made): it says so, and changes nothing (ARCHITECTURE.md,
    // "Migrations and transactions").
    assert_eq!(
        (status, plan["pending"].clone(), plan["unknown"].clone()),
        (200, json!(["001_rows"]), json!([])),
        "{plan}"
    );
    assert!(
        plan["ok"] == json!(true) || plan["error"]["code"] == "migration_failed",
        "{plan}"
    );
    assert_eq!(rows, "1=by the operator");
    assert_eq!(records, "");
    assert_error(&overlap_plan, 422, "invalid_name");
    assert_eq!(overlapping_roles, "0");
    for (reserved, status, code) in reserved_plans {
        assert_eq!(
            (status, code),
            (422, json!("invalid_name")),
            "plan of {reserved}"
        );
    }
    assert_eq!(
        (owner_after, acl_after),
        (owner_before, acl_before),
        "the plan changed the owner or the grants of the plugin's table"
    );
}

#[actix_rt::test]
async fn a_slow_batch_of_one_plugin_does_not_hold_another_plugins_load_in_another_process() {
    // The lock is per plugin: a second process loading another plugin must not wait for the
    // first process's long migration.
    let slow = unique("migslow");
    let quick = unique("migquick");
    let first = start(&[], &[]);
    let second = start(&[], &[]);
    first.write_plugin(
        &format!("{slow}.js"),
        &migrating_plugin(
            &slow,
            "1.0.0",
            &["items"],
            &json!([{"id": "001_slow", "sql": "CREATE TABLE items (n BIGINT); INSERT INTO items SELECT count(*) FROM generate_series(1, 60000000)"}]).to_string(),
        ),
    );
    write_migrating(
        &second,
        &quick,
        "1.0.0",
        &["items"],
        &json!([{"id": "001_items", "sql": CREATE_ITEMS}]),
    );
    let (a, b) = (first.admin(), second.admin());
    let slow_file = format!("{slow}.js");
    let slow_load = a.load(&slow_file);
    let quick_load = async {
        let running = wait_until(PATIENCE, || async {
            scalar(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '%.{slow}' \
                 AND state = 'active' AND query LIKE '%generate_series%'"
            )) == "1"
        })
        .await;
        let began = Instant::now();
        let answer = b.load(&format!("{quick}.js")).await;
        let still_running = scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '%.{slow}' AND state = 'active'"
        ));
        (running, answer, began.elapsed(), still_running)
    };
    let (slow_answer, (running, quick_answer, quick_took, still_running)) =
        futures::join!(slow_load, quick_load);
    if slow_answer.0 == 201 {
        unload(&a, &slow).await;
    }
    if quick_answer.0 == 201 {
        unload(&b, &quick).await;
    }
    drop_table(&format!("{slow}_items"));
    drop_table(&format!("{quick}_items"));
    assert!(running, "the slow migration was never seen running");
    assert_eq!(slow_answer.0, 201, "{slow_answer:?}");
    assert_eq!(quick_answer.0, 201, "{quick_answer:?}");
    assert!(
        quick_took < Duration::from_secs(3) && still_running == "1",
        "the other plugin's load waited for the slow batch: {quick_took:?} (slow batch still running: {still_running})"
    );
}

#[actix_rt::test]
async fn a_migration_past_its_time_limit_is_cancelled_and_other_plugins_keep_serving() {
    let slow = unique("migtime");
    let calm = unique("migcalm");
    let warden = start(&[], &[]);
    let api = &warden.admin();
    load_scripted(&warden, &calm).await;
    write_migrating(
        &warden,
        &slow,
        "1.0.0",
        &["items"],
        &json!([
            {"id": "001_items", "sql": "CREATE TABLE items (n BIGINT)"},
            {"id": "002_forever", "sql": "INSERT INTO items SELECT count(*) FROM generate_series(1, 100000000000)"},
        ]),
    );
    let began = Instant::now();
    // The batch may take 60 s, longer than the harness's HTTP client waits: curl waits instead.
    let load = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "150",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {}", warden_tests::ADMIN_TOKEN),
            "-H",
            "Content-Type: application/json",
            "-d",
            &json!({"path": format!("{slow}.js")}).to_string(),
            &warden.url("/plugins"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    let running = wait_until(PATIENCE, || async {
        scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '%.{slow}' \
             AND state = 'active' AND query LIKE '%generate_series%'"
        )) == "1"
    })
    .await;
    let asked = Instant::now();
    let (calm_status, calm_body) = script(
        api,
        &calm,
        "return (await db.executeQuery('SELECT count(*)::int AS n FROM accounts'))[0].n;",
    )
    .await;
    let calm_took = asked.elapsed();
    let output = load.wait_with_output().expect("curl ends");
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    let (text, code) = printed.rsplit_once('\n').unwrap_or(("", "0"));
    let answer: (u16, Value) = (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(text).unwrap_or(Value::Null),
    );
    let took = began.elapsed();
    let role_pattern = format!("%.{slow}");
    let no_backend = wait_until(PATIENCE, || async {
        scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '{role_pattern}' AND state = 'active'"
        )) == "0"
    })
    .await;
    let table_left = table_exists(&format!("{slow}_items"));
    let records = records_of(&slow);
    if answer.0 == 201 {
        unload(api, &slow).await;
    }
    unload(api, &calm).await;
    drop_table(&format!("{slow}_items"));
    drop_table(&format!("{calm}_accounts"));
    assert!(running);
    assert_error(&answer, 422, "migration_failed");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("002_forever") && message.contains("57014"),
        "{message}"
    );
    assert!(took < Duration::from_secs(90), "{took:?}");
    assert!(
        no_backend,
        "the cancelled migration left its statement running"
    );
    assert!(!table_left && records.is_empty(), "{records}");
    assert_eq!(
        (calm_status, calm_body["result"].clone()),
        (200, json!(2)),
        "{calm_body}"
    );
    assert!(calm_took < Duration::from_secs(3), "{calm_took:?}");
}

#[actix_rt::test]
async fn hostile_migration_lists_are_refused_promptly_or_read_exactly_once() {
    let warden = start(&[], &[]);
    let api = &warden.admin();

    // A list four billion entries long (sparse): describing it must end, refused, soon.
    let huge = unique("mighuge");
    warden.write_plugin(
        &format!("{huge}.js"),
        &migrating_plugin(
            &huge,
            "1.0.0",
            &["items"],
            "(() => { const list = []; list.length = 4294967295; return list; })()",
        ),
    );
    let began = Instant::now();
    let answer = api.load(&format!("{huge}.js")).await;
    let took = began.elapsed();
    assert_eq!(answer.0, 422, "{answer:?}");
    assert!(took < Duration::from_secs(40), "{took:?}");

    // An `sql` getter that answers differently on each read: what ran is what was recorded.
    let shifty = unique("migshift");
    let first_read = "CREATE TABLE items (id INT PRIMARY KEY, label TEXT NOT NULL)";
    warden.write_plugin(
        &format!("{shifty}.js"),
        &migrating_plugin(
            &shifty,
            "1.0.0",
            &["items"],
            &format!(
                r#"(() => {{ let reads = 0; return [{{ id: "001_items", get sql() {{ reads += 1; return reads === 1 ? {first} : "DROP TABLE items"; }} }}]; }})()"#,
                first = json!(first_read)
            ),
        ),
    );
    let (status, body) = api.load(&format!("{shifty}.js")).await;
    let exists_after_load = table_exists(&format!("{shifty}_items"));
    let records = records_of(&shifty);
    let reload = api.post(&format!("/plugins/{shifty}/reload"), None).await;
    let exists_after_reload = table_exists(&format!("{shifty}_items"));
    if status == 201 {
        unload(api, &shifty).await;
    }
    drop_table(&format!("{shifty}_items"));
    assert_eq!(status, 201, "{body}");
    assert!(exists_after_load && exists_after_reload);
    assert_eq!(records, format!("001_items:{}", sha256(first_read)));
    assert_eq!(reload.0, 200, "{reload:?}");

    // Warden still loads plugins after both.
    let after = unique("migafter");
    warden.write_plugin(&format!("{after}.js"), &sql_plugin(&after, &[]));
    assert_eq!(api.load(&format!("{after}.js")).await.0, 201);
    unload(api, &after).await;
}

#[actix_rt::test]
async fn many_migrations_and_the_longest_ids_apply_in_order_and_look_alike_ids_are_refused() {
    let name = unique("migmany");
    let long_id = format!("{}.9", "a".repeat(126));
    assert_eq!(long_id.chars().count(), 128);
    let mut migrations = vec![json!({"id": "0000_items", "sql": CREATE_ITEMS})];
    for n in 1..2000 {
        migrations.push(json!({"id": format!("{n:04}"), "sql": format!("INSERT INTO items VALUES ({n}, 'row')")}));
    }
    migrations.push(json!({"id": long_id, "sql": "INSERT INTO items VALUES (-1, 'long')"}));
    let warden = start(&[], &[]);
    let api = &warden.admin();
    warden.write_plugin(
        &format!("{name}.js"),
        &migrating_plugin(
            &name,
            "1.0.0",
            &["items"],
            &Value::Array(migrations.clone()).to_string(),
        ),
    );
    let began = Instant::now();
    let (status, body) = api.load(&format!("{name}.js")).await;
    let took = began.elapsed();
    let rows = if table_exists(&format!("{name}_items")) {
        scalar(&format!("SELECT count(*) FROM public.\"{name}_items\""))
    } else {
        "(no table)".into()
    };
    let listed = if status == 201 {
        let listed = migrations_of(api, &name).await;
        unload(api, &name).await;
        listed
    } else {
        Vec::new()
    };
    let recorded = scalar(&format!(
        "SELECT count(*) FROM warden.plugin_migrations WHERE plugin = '{name}'"
    ));
    drop_table(&format!("{name}_items"));
    assert_eq!(status, 201, "{body}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!((rows.as_str(), recorded.as_str()), ("2000", "2001"));
    let expected: Vec<(String, String)> = migrations
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), "applied".to_string()))
        .collect();
    assert_eq!(ids_and_states(&listed), expected);

    // Ids that only look like the allowed characters.
    for id in [
        "\u{ff10}\u{ff10}\u{ff11}", // fullwidth digits
        "\u{43e}rders",             // a Cyrillic o
        "001\u{200b}",              // a zero-width space
        "001\u{301}",               // a combining accent
        "001\u{0}",                 // a NUL
    ] {
        let file = format!("{name}.js");
        write_migrating(
            &warden,
            &name,
            "1.0.0",
            &["items"],
            &json!([{"id": id, "sql": CREATE_ITEMS}]),
        );
        let answer = api.load(&file).await;
        assert_error(&answer, 422, "invalid_plugin");
        assert!(!table_exists(&format!("{name}_items")), "{id:?}");
    }
    let too_long = "a".repeat(129);
    write_migrating(
        &warden,
        &name,
        "1.0.0",
        &["items"],
        &json!([{"id": too_long, "sql": CREATE_ITEMS}]),
    );
    let answer = api.load(&format!("{name}.js")).await;
    assert_error(&answer, 422, "invalid_plugin");
    assert!(answer.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1 to 128"));
}

#[actix_rt::test]
async fn a_reload_is_not_refused_for_the_role_connections_the_previous_version_still_holds() {
    // Each role may open its share plus one connection. The previous version's idle
    // connections must not count against the new version's initialize.
    let name = unique("migconn");
    let source = format!(
        r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0", allowedTables: ["items"] }},
  migrations: [{{ id: "001_items", sql: {create} }}],
  async initialize(context) {{
    const heavy = "SELECT count(*) AS n FROM generate_series(1, 3000000)";
    await Promise.all([context.database.executeQuery(heavy), context.database.executeQuery(heavy)]);
  }},
}};
"#,
        create = json!(CREATE_ITEMS)
    );
    let warden = WardenProcess::start_with_stack(
        &[],
        &[
            ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "30000"),
            ("WARDEN_DATABASE_CONNECTIONS_PER_PLUGIN", "2"),
        ],
        &[],
    );
    warden.write_plugin(&format!("{name}.js"), &source);
    let api = &warden.admin();
    let (status, body) = api.load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{body}");
    let role = role_of(api, &name).await;
    let held = sessions_of(&role);
    let reload = api.post(&format!("/plugins/{name}/reload"), None).await;
    let state = api.plugin(&name).await["state"].clone();
    unload(api, &name).await;
    drop_table(&format!("{name}_items"));
    assert_eq!(held, 2, "the first version holds both of its connections");
    assert_eq!(reload.0, 200, "{reload:?}");
    assert_eq!(state, "running");
}
