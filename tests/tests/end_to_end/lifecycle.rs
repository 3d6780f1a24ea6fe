//! Plugin lifecycle through the admin API: load, list, unload, reload, overrides, scan, watch and
//! shutdown.

use serde_json::{json, Value};
use warden_tests::{assert_error, plugin_names, wait_until, WardenProcess, PATIENCE};

/// A plugin that logs `INIT:<name>` and `CLEANUP:<name>` and depends on `dependencies`.
fn logging_plugin(name: &str, dependencies: &[&str]) -> String {
    format!(
        r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0", dependencies: {dependencies} }},
  async initialize(context) {{ console.log("INIT:{name}"); }},
  async cleanup() {{ console.log("CLEANUP:{name}"); }},
  async execute() {{ return "{name}"; }},
}};
"#,
        dependencies = serde_json::to_string(dependencies).unwrap()
    )
}

/// Asserts that the log lines containing `markers` appear in that order.
#[track_caller]
fn assert_log_order(warden: &WardenProcess, markers: &[&str]) {
    let positions: Vec<Option<usize>> = markers
        .iter()
        .map(|marker| warden.log_index(marker))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|pair| pair[0] < pair[1]),
        "expected log lines in the order {markers:?}, found them at {positions:?}; log:\n{}",
        warden.logs().join("\n")
    );
}

const USERS: &str = r#"
export default {
  metadata: { name: "users", version: "1.0.0" },
  async findUser(id) { return { id }; },
};
"#;

const ORDERS: &str = r#"
export default {
  metadata: {
    name: "orders",
    version: "1.2.0",
    description: "Order handling",
    dependencies: ["users"],
    allowedTables: ["orders"],
    allowedTopics: ["order-events"],
    allowedBuckets: ["invoices"],
  },
  async initialize(context) { this.context = context; },
  async cleanup() {},
  async execute(input) { return input; },
  async findOrder(id) { return { id }; },
};
"#;

#[actix_rt::test]
async fn loading_a_js_plugin_answers_its_plugin_info() {
    let warden = WardenProcess::start(
        &[("users.js", USERS), ("orders.js", ORDERS)],
        &[],
        &["--no-load-all"],
    );
    let api = warden.admin();
    assert_eq!(api.get("/plugins").await, (200, json!({ "plugins": [] })));

    let (status, users) = api.load("users.js").await;
    assert_eq!(status, 201, "{users}");
    let (status, orders) = api.load("orders.js").await;
    assert_eq!(status, 201, "{orders}");
    let expected = json!({
        "name": "orders", "version": "1.2.0", "description": "Order handling",
        "kind": "js", "source": "orders.js",
        "state": "running",
        "dependencies": ["users"], "dependents": [],
        "restarts": 0,
        "resources": {
            "tables":  [{ "name": "orders", "physical": "orders_orders", "access": "owner" }],
            "topics":  [{ "name": "order-events", "physical": "orders_order-events", "access": "all" }],
            "buckets": [{ "name": "invoices", "physical": "orders-invoices", "access": "all" }]
        },
        "overrides": null,
        "exports": ["findOrder"],
        "databaseRole": null,
        "routes": [],
        "sha256": warden_runtime::sha256_hex(ORDERS.as_bytes())
    });
    assert_eq!(orders, expected);
    assert_eq!(api.get("/plugins/orders").await, (200, expected));

    let (_, users) = api.get("/plugins/users").await;
    assert_eq!(users["dependents"], json!(["orders"]));
    assert_eq!(users["dependencies"], json!([]));
    assert_eq!(users["description"], Value::Null);
    assert_eq!(users["exports"], json!(["findUser"]));
}

#[actix_rt::test]
async fn loading_a_typescript_plugin_strips_its_types() {
    let calculator = r#"
interface Operands { a: number; b: number }
type Sum = { sum: number };

const plugin = {
  metadata: { name: "calculator", version: "0.3.1", description: "Adds" },
  async execute(input: Operands): Promise<Sum> {
    const add = (x: number, y: number): number => x + y;
    return { sum: add(input.a, input.b) };
  },
};
export default plugin;
"#;
    let warden = WardenProcess::start(&[("calculator.ts", calculator)], &[], &["--no-load-all"]);
    let api = warden.admin();

    let (status, info) = api.load("calculator.ts").await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["name"], "calculator");
    assert_eq!(info["version"], "0.3.1");
    assert_eq!(info["kind"], "js");
    assert_eq!(info["source"], "calculator.ts");
    assert_eq!(info["state"], "running");
    assert_eq!(
        api.execute("calculator", json!({ "a": 2, "b": 40 })).await,
        (200, json!({ "result": { "sum": 42 } }))
    );
}

#[actix_rt::test]
async fn a_named_plugin_export_is_loaded_when_there_is_no_default() {
    let named = r#"
export const plugin = {
  metadata: { name: "named", version: "1.0.0" },
  async execute() { return "named export"; },
};
"#;
    let warden = WardenProcess::start(&[("named.mjs", named)], &[], &["--no-load-all"]);
    let api = warden.admin();
    assert_eq!(api.load("named.mjs").await.0, 201);
    assert_eq!(
        api.execute("named", json!(null)).await,
        (200, json!({ "result": "named export" }))
    );
}

#[actix_rt::test]
async fn loading_a_loaded_plugin_is_already_loaded() {
    let first = r#"export default { metadata: { name: "dup", version: "1.0.0" }, execute() { return 1; } };"#;
    let second = r#"export default { metadata: { name: "dup", version: "2.0.0" }, execute() { return 2; } };"#;
    let warden = WardenProcess::start(
        &[("dup.js", first), ("dup_copy.js", second)],
        &[],
        &["--no-load-all"],
    );
    let api = warden.admin();
    assert_eq!(api.load("dup.js").await.0, 201);

    assert_error(&api.load("dup.js").await, 409, "already_loaded");
    assert_error(&api.load("dup_copy.js").await, 409, "already_loaded");
    let (_, info) = api.get("/plugins/dup").await;
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["source"], "dup.js");
    assert_eq!(
        api.execute("dup", json!(null)).await,
        (200, json!({ "result": 1 }))
    );
}

#[actix_rt::test]
async fn plugins_are_listed_sorted_by_name() {
    let plugin = |name: &str| {
        format!("export default {{ metadata: {{ name: \"{name}\", version: \"1.0.0\" }} }};\n")
    };
    let (zeta, alpha, middle) = (plugin("zeta"), plugin("alpha"), plugin("middle"));
    // File names sort differently from plugin names, so the list must sort by name.
    let warden = WardenProcess::start(
        &[("a.js", &zeta), ("b.ts", &middle), ("c.mjs", &alpha)],
        &[],
        &[],
    );
    let api = warden.admin();
    let (status, list) = api.get("/plugins").await;
    assert_eq!(status, 200);
    assert_eq!(plugin_names(&list), ["alpha", "middle", "zeta"]);
}

#[actix_rt::test]
async fn an_unloaded_plugin_is_gone() {
    let warden = WardenProcess::start(&[("users.js", USERS)], &[], &[]);
    let api = warden.admin();
    assert_eq!(api.plugin("users").await["state"], "running");

    assert_eq!(api.delete("/plugins/users").await, (204, Value::Null));
    assert_error(&api.get("/plugins/users").await, 404, "plugin_not_found");
    assert_error(&api.delete("/plugins/users").await, 404, "plugin_not_found");
    assert_error(
        &api.execute("users", json!({})).await,
        404,
        "plugin_not_found",
    );
    assert_eq!(api.get("/plugins").await, (200, json!({ "plugins": [] })));

    // The file is still there: it loads again.
    assert_eq!(api.load("users.js").await.0, 201);
}

#[actix_rt::test]
async fn unload_refuses_plugins_with_dependents_unless_cascading_in_reverse_order() {
    // zeta <- alpha <- mid, and zeta <- side: neither name order nor its reverse is the
    // dependency order.
    let (zeta, alpha, mid, side) = (
        logging_plugin("zeta", &[]),
        logging_plugin("alpha", &["zeta"]),
        logging_plugin("mid", &["alpha"]),
        logging_plugin("side", &["zeta"]),
    );
    let warden = WardenProcess::start(
        &[
            ("zeta.js", &zeta),
            ("alpha.js", &alpha),
            ("mid.js", &mid),
            ("side.js", &side),
        ],
        &[],
        &[],
    );
    let api = warden.admin();
    let before = api.get("/plugins").await;
    assert_eq!(plugin_names(&before.1), ["alpha", "mid", "side", "zeta"]);

    let refused = api.delete("/plugins/zeta").await;
    assert_error(&refused, 409, "has_dependents");
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("alpha") && message.contains("side"),
        "the message lists the dependents: {message}"
    );
    assert_error(&api.delete("/plugins/alpha").await, 409, "has_dependents");
    assert_eq!(api.get("/plugins").await, before);
    assert_eq!(warden.log_count("CLEANUP:"), 0);

    assert_eq!(
        api.delete("/plugins/zeta?cascade=true").await,
        (204, Value::Null)
    );
    assert_eq!(api.get("/plugins").await, (200, json!({ "plugins": [] })));
    assert!(warden.wait_for_log("CLEANUP:zeta", PATIENCE).await);
    assert_log_order(&warden, &["CLEANUP:mid", "CLEANUP:alpha", "CLEANUP:zeta"]);
    assert_log_order(&warden, &["CLEANUP:side", "CLEANUP:zeta"]);
}

#[actix_rt::test]
async fn reload_rereads_the_file_and_keeps_overrides() {
    let version = |version: &str| {
        format!(
            r#"
export default {{
  metadata: {{ name: "shop", version: "{version}", allowedTables: ["orders"] }},
  async execute() {{ return "v{version}"; }},
}};
"#
        )
    };
    let warden = WardenProcess::start(&[("shop.js", &version("1.0.0"))], &[], &["--no-load-all"]);
    let api = warden.admin();
    let overrides = json!({ "tableNameMap": { "orders": "shared:orders" } });
    let (status, loaded) = api
        .post(
            "/plugins",
            Some(json!({ "path": "shop.js", "overrides": overrides })),
        )
        .await;
    assert_eq!(status, 201, "{loaded}");
    assert_eq!(loaded["overrides"], overrides);
    let shared = json!([{ "name": "orders", "physical": "shared_orders", "access": "owner" }]);
    assert_eq!(loaded["resources"]["tables"], shared);

    warden.write_plugin("shop.js", &version("2.0.0"));
    let (status, reloaded) = api.post("/plugins/shop/reload", None).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["version"], "2.0.0");
    assert_eq!(reloaded["state"], "running");
    assert_eq!(reloaded["overrides"], overrides);
    assert_eq!(reloaded["resources"]["tables"], shared);
    assert_eq!(
        api.execute("shop", json!(null)).await,
        (200, json!({ "result": "v2.0.0" }))
    );

    // An empty JSON object is "no new overrides" too.
    warden.write_plugin("shop.js", &version("2.1.0"));
    let (status, reloaded) = api.post("/plugins/shop/reload", Some(json!({}))).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["version"], "2.1.0");
    assert_eq!(reloaded["overrides"], overrides);
    assert_eq!(api.get("/plugins/shop/overrides").await, (200, overrides));
}

#[actix_rt::test]
async fn a_reload_that_fails_leaves_the_plugin_as_it_was() {
    let good = r#"export default { metadata: { name: "steady", version: "1.0.0" }, execute() { return "good"; } };"#;
    let warden = WardenProcess::start(&[("steady.js", good)], &[], &[]);
    let api = warden.admin();
    let before = api.get("/plugins/steady").await;
    assert_eq!(before.0, 200);

    warden.write_plugin(
        "steady.js",
        "export default { metadata: { name: \"steady\", ",
    );
    assert_error(
        &api.post("/plugins/steady/reload", None).await,
        422,
        "invalid_plugin",
    );
    assert_eq!(api.get("/plugins/steady").await, before);
    assert_eq!(
        api.execute("steady", json!(null)).await,
        (200, json!({ "result": "good" }))
    );
}

#[actix_rt::test]
async fn overrides_are_stored_applied_and_cleared() {
    let shop = r#"
export default {
  metadata: {
    name: "shop", version: "1.0.0",
    allowedTables: ["orders"], allowedTopics: ["events"], allowedBuckets: ["data"],
  },
};
"#;
    let later = r#"
export default { metadata: { name: "later", version: "1.0.0", allowedTables: ["items"] } };
"#;
    let warden = WardenProcess::start(
        &[("shop.js", shop), ("later.js", later)],
        &[],
        &["--no-load-all"],
    );
    let api = warden.admin();

    // Names that are not loaded have no overrides, and can be given some.
    assert_eq!(api.get("/plugins/nobody/overrides").await, (200, json!({})));
    let for_later = json!({ "allowedTables": ["items", "archive"] });
    assert_eq!(
        api.put("/plugins/later/overrides", Some(for_later.clone()))
            .await,
        (200, json!({ "overrides": for_later, "plugin": null }))
    );
    assert_eq!(
        api.get("/plugins/later/overrides").await,
        (200, for_later.clone())
    );
    let (status, later_info) = api.load("later.js").await;
    assert_eq!(status, 201, "{later_info}");
    assert_eq!(later_info["overrides"], for_later);
    assert_eq!(
        later_info["resources"]["tables"],
        json!([
            { "name": "items", "physical": "later_items", "access": "owner" },
            { "name": "archive", "physical": "later_archive", "access": "owner" }
        ])
    );

    // A loaded plugin's declared resources, then the same plugin with overrides.
    let (status, info) = api.load("shop.js").await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(
        info["resources"],
        json!({
            "tables": [{ "name": "orders", "physical": "shop_orders", "access": "owner" }],
            "topics": [{ "name": "events", "physical": "shop_events", "access": "all" }],
            "buckets": [{ "name": "data", "physical": "shop-data", "access": "all" }]
        })
    );
    let overrides = json!({
        "allowedTables": ["orders", "customers"],
        "tableNameMap": { "orders": "shared:orders" },
        "topicNameMap": { "events": "shared:events" },
        "bucketNameMap": { "data": "shared:data" }
    });
    let (status, answer) = api
        .put("/plugins/shop/overrides", Some(overrides.clone()))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["overrides"], overrides);
    let plugin = &answer["plugin"];
    assert_eq!(plugin["name"], "shop");
    assert_eq!(plugin["state"], "running");
    assert_eq!(plugin["overrides"], overrides);
    assert_eq!(
        plugin["resources"],
        json!({
            "tables": [
                { "name": "orders", "physical": "shared_orders", "access": "owner" },
                { "name": "customers", "physical": "shop_customers", "access": "owner" }
            ],
            "topics": [{ "name": "events", "physical": "shared_events", "access": "all" }],
            "buckets": [{ "name": "data", "physical": "shared-data", "access": "all" }]
        })
    );
    assert_eq!(api.get("/plugins/shop").await, (200, plugin.clone()));
    assert_eq!(api.get("/plugins/shop/overrides").await, (200, overrides));

    // Deleting them reloads the plugin with what it declared.
    assert_eq!(
        api.delete("/plugins/shop/overrides").await,
        (204, Value::Null)
    );
    assert_eq!(api.get("/plugins/shop/overrides").await, (200, json!({})));
    let (_, info) = api.get("/plugins/shop").await;
    assert_eq!(info["overrides"], Value::Null);
    assert_eq!(
        info["resources"]["tables"],
        json!([{ "name": "orders", "physical": "shop_orders", "access": "owner" }])
    );
    assert_eq!(
        api.delete("/plugins/nobody/overrides").await,
        (204, Value::Null)
    );
}

#[actix_rt::test]
async fn scan_loads_good_files_in_dependency_order_and_reports_the_rest() {
    let cycle_a = r#"export default { metadata: { name: "cyc-a", version: "1.0.0", dependencies: ["cyc-b"] } };"#;
    let cycle_b = r#"export default { metadata: { name: "cyc-b", version: "1.0.0", dependencies: ["cyc-a"] } };"#;
    let broken = "export default { metadata: { name: \"broken\", version: \"1.0.0\" ";
    let orphan = r#"export default { metadata: { name: "orphan", version: "1.0.0", dependencies: ["ghost"] } };"#;
    // File names sort against the dependency order: app.js before base.js.
    let app = r#"
export default {
  metadata: { name: "app", version: "1.0.0", dependencies: ["base"] },
  async initialize(context) {
    console.log("INIT:app");
    this.fromBase = await context.getDependency("base").execute(null);
  },
  async execute() { return this.fromBase; },
};
"#;
    let base = r#"
export default {
  metadata: { name: "base", version: "1.0.0" },
  async initialize() { console.log("INIT:base"); },
  async execute() { return "base is up"; },
};
"#;
    let warden = WardenProcess::start(
        &[
            ("cyc_a.js", cycle_a),
            ("cyc_b.js", cycle_b),
            ("broken.js", broken),
            ("orphan.js", orphan),
            ("app.js", app),
            ("base.js", base),
            ("types.d.ts", "export interface Ignored { x: number }\n"),
            ("notes.txt", "not a module"),
        ],
        &[],
        &["--no-load-all"],
    );
    let api = warden.admin();

    let (status, report) = api.post("/plugins/scan", None).await;
    assert_eq!(status, 200, "{report}");
    let mut loaded: Vec<&str> = report["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    loaded.sort_unstable();
    assert_eq!(loaded, ["app", "base"], "{report}");
    assert!(warden.wait_for_log("INIT:app", PATIENCE).await);
    assert_log_order(&warden, &["INIT:base", "INIT:app"]);
    assert_eq!(
        api.execute("app", json!(null)).await,
        (200, json!({ "result": "base is up" }))
    );

    let mut failed: Vec<(String, String)> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| {
            assert!(
                failure["error"]["message"]
                    .as_str()
                    .is_some_and(|message| !message.is_empty()),
                "{failure}"
            );
            (
                failure["path"].as_str().unwrap().to_string(),
                failure["error"]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    failed.sort();
    let expected: Vec<(String, String)> = [
        ("broken.js", "invalid_plugin"),
        ("cyc_a.js", "circular_dependency"),
        ("cyc_b.js", "circular_dependency"),
        ("orphan.js", "dependency_not_found"),
    ]
    .iter()
    .map(|(path, code)| (path.to_string(), code.to_string()))
    .collect();
    assert_eq!(failed, expected, "{report}");
    let cycle_message = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|failure| failure["path"] == "cyc_a.js")
        .and_then(|failure| failure["error"]["message"].as_str())
        .unwrap();
    assert!(
        cycle_message.contains("cyc-a") && cycle_message.contains("cyc-b"),
        "the message shows the cycle: {cycle_message}"
    );

    let (_, list) = api.get("/plugins").await;
    assert_eq!(plugin_names(&list), ["app", "base"]);

    // A second scan loads nothing new and still reports the bad files.
    let (status, again) = api.post("/plugins/scan", None).await;
    assert_eq!(status, 200);
    assert_eq!(again["loaded"], json!([]));
    assert_eq!(again["failed"].as_array().map(Vec::len), Some(4), "{again}");
}

#[actix_rt::test]
async fn watch_reloads_a_changed_file() {
    let version = |version: &str| {
        format!(
            "export default {{ metadata: {{ name: \"watched\", version: \"{version}\" }}, execute() {{ return \"{version}\"; }} }};\n"
        )
    };
    let warden = WardenProcess::start(&[("watched.js", &version("1.0.0"))], &[], &["--watch"]);
    let api = &warden.admin();
    assert_eq!(api.plugin("watched").await["version"], "1.0.0");

    warden.write_plugin("watched.js", &version("1.1.0"));
    let reloaded = wait_until(PATIENCE, || async move {
        api.plugin("watched").await["version"] == "1.1.0"
    })
    .await;
    assert!(reloaded, "the changed file was not reloaded");
    assert_eq!(
        api.execute("watched", json!(null)).await,
        (200, json!({ "result": "1.1.0" }))
    );
}

#[actix_rt::test]
async fn sigterm_unloads_in_reverse_dependency_order_and_exits_zero() {
    let (zeta, alpha, mid) = (
        logging_plugin("zeta", &[]),
        logging_plugin("alpha", &["zeta"]),
        logging_plugin("mid", &["alpha"]),
    );
    let mut warden = WardenProcess::start(
        &[("zeta.js", &zeta), ("alpha.js", &alpha), ("mid.js", &mid)],
        &[],
        &[],
    );
    {
        let api = warden.admin();
        let (_, list) = api.get("/plugins").await;
        assert_eq!(plugin_names(&list), ["alpha", "mid", "zeta"]);
    }
    assert_log_order(&warden, &["INIT:zeta", "INIT:alpha", "INIT:mid"]);

    let status = warden.terminate();
    assert_eq!(status.code(), Some(0), "warden exits 0 after SIGTERM");
    assert_log_order(&warden, &["CLEANUP:mid", "CLEANUP:alpha", "CLEANUP:zeta"]);
}

#[actix_rt::test]
async fn plugin_info_carries_the_sha256_of_the_entry_file_as_loaded() {
    let first = r#"export default { metadata: { name: "hashed", version: "1.0.0" } };"#;
    let second = r#"export default { metadata: { name: "hashed", version: "1.0.1" } }; // changed"#;
    let warden = WardenProcess::start(&[("hashed.js", first)], &[], &[]);
    let api = warden.admin();
    assert_eq!(
        api.plugin("hashed").await["sha256"],
        warden_runtime::sha256_hex(first.as_bytes())
    );
    warden.write_plugin("hashed.js", second);
    assert_eq!(api.post("/plugins/hashed/reload", None).await.0, 200);
    assert_eq!(
        api.plugin("hashed").await["sha256"],
        warden_runtime::sha256_hex(second.as_bytes()),
        "a reload reports the file it loaded"
    );
}
