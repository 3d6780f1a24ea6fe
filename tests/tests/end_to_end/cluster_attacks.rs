//! Attacks on Warden as a cluster (`ADMIN_API.md`, "Cluster"; `ARCHITECTURE.md`, "Cluster"):
//! hostile plugin sources, a node that joins with a stale directory, the recorded load order,
//! per-plugin credentials shared by several nodes, and retries that disturb what runs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{wait_until, WardenProcess, PATIENCE};

use crate::gateways::unique;
use crate::plugin_data::scalar;

/// The nodes' timeout in these tests (as in `cluster.rs`).
const NODE_TIMEOUT_S: &str = "2";

/// A fresh cluster (or plugin) name: `unique` with `-` instead of `_`.
fn fresh(prefix: &str) -> String {
    unique(prefix).replace('_', "-")
}

/// Starts one node of `cluster` on the local stack, with `env` on top, without `--load-all`.
fn start_node_with(cluster: &str, node: &str, env: &[(&str, &str)]) -> WardenProcess {
    let mut all = vec![("WARDEN_NODE_TIMEOUT_S", NODE_TIMEOUT_S)];
    all.extend_from_slice(env);
    WardenProcess::start_with_stack(
        &[],
        &all,
        &["--cluster", cluster, "--node-id", node, "--no-load-all"],
    )
}

fn start_node(cluster: &str, node: &str) -> WardenProcess {
    start_node_with(cluster, node, &[])
}

/// A fresh cluster, a plugin name and two nodes, `node-a` and `node-b`, of a fresh cluster.
fn two_nodes(prefix: &str) -> (String, String, WardenProcess, WardenProcess) {
    let cluster = fresh(prefix);
    let name = fresh(&format!("{prefix}-plugin"));
    let (first, second) = (
        start_node(&cluster, "node-a"),
        start_node(&cluster, "node-b"),
    );
    (cluster, name, first, second)
}

/// What `name` answers on `process` (input `input`), or `None` while it does not answer 200.
async fn execute_with(process: &WardenProcess, name: &str, input: Value) -> Option<Value> {
    match process.admin().execute(name, input).await {
        (200, body) => Some(body["result"].clone()),
        _ => None,
    }
}

async fn execute_on(process: &WardenProcess, name: &str) -> Option<Value> {
    execute_with(process, name, json!("hi")).await
}

/// What `name` answers on `process`, waiting (bounded) while it does not answer 200.
async fn answer_of(process: &WardenProcess, name: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(answer) = execute_on(process, name).await {
            return answer;
        }
        assert!(Instant::now() < deadline, "{name} does not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `name` on `process` answers with `version`.
async fn converges(process: &WardenProcess, name: &str, version: &str) -> bool {
    wait_until(PATIENCE, || async {
        execute_on(process, name)
            .await
            .is_some_and(|result| result["version"] == version)
    })
    .await
}

/// A plugin that answers its version, with `dependencies` (plugin names).
fn versioned(name: &str, version: &str, dependencies: &[&str]) -> String {
    format!(
        r#"
export default {{
  metadata: {{ name: "{name}", version: "{version}", dependencies: {dependencies} }},
  async execute() {{ return {{ version: "{version}" }}; }},
}};
"#,
        dependencies = json!(dependencies)
    )
}

/// A plugin whose `initialize` needs far more than a 4 MB heap (as in `cluster.rs`).
fn hungry(name: &str, version: &str) -> String {
    format!(
        r#"
let kept;
export default {{
  metadata: {{ name: "{name}", version: "{version}" }},
  async initialize() {{ kept = new Array(200000).fill(0).map((_, index) => ({{ index }})); }},
  async execute() {{ return {{ version: "{version}", kept: kept.length }}; }},
}};
"#
    )
}

/// Attacks the recorded source with text PostgreSQL's `jsonb` cannot hold: a NUL character in a
/// file the entry imports with a literal dynamic `import()` (the entry itself loads, since the
/// module is only read at load). The load is applied on the receiving node, then its record
/// fails (`\u0000` is refused by `jsonb`), which is only logged: the operator got 201, no other
/// node ever runs the plugin, and the next full reconcile unloads it on the receiving node too.
/// Correct: a load answered 201 is recorded and reaches every node; a source that cannot be
/// recorded is refused, and then runs nowhere.
#[actix_rt::test]
async fn a_source_the_record_cannot_hold_is_refused_or_reaches_every_node() {
    let (cluster, name, first, second) = two_nodes("nul");
    first.write_plugin(
        &format!("{name}.js"),
        &format!(
            r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  async execute(input) {{
    if (input === "hi") return {{ version: "1.0.0" }};
    return (await import("./lib/{name}-lazy.js")).v;
  }},
}};
"#
        ),
    );
    first.write_plugin(
        &format!("lib/{name}-lazy.js"),
        "// a NUL character follows: \u{0}\nexport const v = 1;\n",
    );
    let (status, body) = first.admin().load(&format!("{name}.js")).await;
    let recorded = || {
        scalar(&format!(
            "SELECT count(*) FROM warden.cluster_plugins WHERE cluster = '{cluster}' AND name = '{name}'"
        ))
    };
    if status == 201 {
        assert_eq!(recorded(), "1", "a load answered 201 is recorded: {body}");
        assert!(
            converges(&second, &name, "1.0.0").await,
            "and every node runs it"
        );
    } else {
        assert!(
            (400..500).contains(&status),
            "refused as a request: {status} {body}"
        );
        assert!(
            execute_on(&first, &name).await.is_none(),
            "a refused change changes nothing"
        );
        assert_eq!(recorded(), "0");
    }
}

/// Attacks the node that reads the recorded source: a literal dynamic `import()` of a FIFO
/// inside the plugins directory. In a cluster the manager reads every imported file at load,
/// synchronously, with `read_to_string`, which blocks forever opening a FIFO with no writer;
/// the manager then never answers again (loads, lists, the follower). On a single node the
/// same plugin loads, since the import is only read when it runs. Correct: the load answers
/// promptly (refused, as the import is not a regular file, or loaded) and the node keeps
/// answering.
#[actix_rt::test]
async fn a_fifo_named_by_a_dynamic_import_does_not_hang_the_node() {
    let cluster = fresh("fifo");
    let name = fresh("fifo-plugin");
    let first = start_node(&cluster, "node-a");
    first.write_plugin(
        &format!("{name}.js"),
        &format!(
            r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  async execute() {{ return (await import("./lib/{name}-pipe.js")).v; }},
}};
"#
        ),
    );
    let lib = first.plugins_dir().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(lib.join(format!("{name}-pipe.js")))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());

    let load = tokio::time::timeout(
        Duration::from_secs(15),
        first.admin().load(&format!("{name}.js")),
    )
    .await;
    assert!(load.is_ok(), "the load must answer, not hang on the FIFO");
    let (status, body) = load.unwrap();
    assert!(
        status == 201 || (400..500).contains(&status),
        "{status} {body}"
    );
    let listed = tokio::time::timeout(Duration::from_secs(10), first.admin().get("/plugins")).await;
    assert!(
        listed.is_ok_and(|(status, _)| status == 200),
        "the node still answers"
    );
}

/// Attacks the cluster's desired state through a joining node with a stale directory: the
/// recorded plugin (v2) fails on the joining node (its heap is too small), so the node's
/// `--load-all` scan sees the plugin's file in its own directory as "not loaded" and loads its
/// own old v1, which records v1 as the cluster's source: every other node is reloaded to v1.
/// Correct (`ADMIN_API.md`: `--load-all` loads "the files of its directory that the cluster does
/// not have yet"): a plugin the cluster records is not loaded from the joining node's
/// directory, and the other nodes keep running v2.
#[actix_rt::test]
async fn a_joining_node_does_not_replace_a_recorded_plugin_with_its_own_file() {
    let cluster = fresh("stale");
    let name = fresh("stale-plugin");
    let first = start_node(&cluster, "node-a");
    first.write_plugin(&format!("{name}.js"), &hungry(&name, "2.0.0"));
    let (status, body) = first.admin().load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{body}");

    let stale = versioned(&name, "1.0.0", &[]);
    let stale_file = format!("{name}.js");
    let _second = WardenProcess::start_with_stack(
        &[(stale_file.as_str(), stale.as_str())],
        &[
            ("WARDEN_NODE_TIMEOUT_S", NODE_TIMEOUT_S),
            ("WARDEN_PLUGIN_MEMORY_MB", "4"),
        ],
        // `--load-all` is the default.
        &["--cluster", &cluster, "--node-id", "node-b"],
    );
    let replaced = wait_until(Duration::from_secs(5), || async {
        execute_on(&first, &name)
            .await
            .is_some_and(|result| result["version"] != "2.0.0")
    })
    .await;
    assert!(
        !replaced,
        "the first node was reloaded with the joining node's stale file: {:?}",
        execute_on(&first, &name).await
    );
}

/// Attacks the recorded load order: a reload keeps a plugin's place (`position`), so a plugin
/// loaded first and later reloaded with a dependency on a plugin loaded after it is recorded
/// before its dependency. A joining node applies the state in that order before it answers:
/// the dependent fails there with a missing dependency (logged as "does not run on this
/// node", reported `failed`) although nothing is wrong with it, until a later retry.
/// Correct: the desired state is applied in an order that respects dependencies, so a joining
/// node starts every plugin it can, the first time.
#[actix_rt::test]
async fn a_joining_node_applies_the_recorded_plugins_in_dependency_order() {
    let cluster = fresh("order");
    let top = fresh("top");
    let base = fresh("base");
    let first = start_node(&cluster, "node-a");
    first.write_plugin(&format!("{top}.js"), &versioned(&top, "1.0.0", &[]));
    assert_eq!(first.admin().load(&format!("{top}.js")).await.0, 201);
    first.write_plugin(&format!("{base}.js"), &versioned(&base, "1.0.0", &[]));
    assert_eq!(first.admin().load(&format!("{base}.js")).await.0, 201);
    first.write_plugin(
        &format!("{top}.js"),
        &versioned(&top, "2.0.0", &[base.as_str()]),
    );
    let (status, body) = first
        .admin()
        .post(&format!("/plugins/{top}/reload"), None)
        .await;
    assert_eq!(status, 200, "{body}");

    let third = start_node(&cluster, "node-c");
    let refused: Vec<String> = third
        .logs()
        .into_iter()
        .filter(|line| line.contains("does not run on this node"))
        .collect();
    assert!(
        refused.is_empty(),
        "the joining node could not start a plugin only because of the order it applied: {refused:?}"
    );
    assert!(converges(&third, &top, "2.0.0").await);
}

/// Attacks per-plugin S3 keys in a cluster: every node makes the plugin's key when it loads the
/// plugin, and first deletes every key of that name it did not make itself, that is the key
/// the first node's running instance signs with. Correct: a plugin keeps working on every node
/// that runs it.
#[actix_rt::test]
async fn a_node_that_loads_a_plugin_does_not_revoke_its_s3_key_on_the_others() {
    let (_, name, first, second) = two_nodes("s3key");
    first.write_plugin(
        &format!("{name}.js"),
        &format!(
            r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0", allowedBuckets: ["data"] }},
  async initialize(context) {{ this.s3 = context.s3; }},
  async execute(input) {{
    if (input === "hi") return {{ version: "1.0.0" }};
    await this.s3.upload(input.key, input.text, "text/plain; charset=utf-8", "data");
    return (await this.s3.download(input.key, "data")).toString();
  }},
}};
"#
        ),
    );
    let (status, body) = first.admin().load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{body}");
    assert!(converges(&second, &name, "1.0.0").await);
    let round_trip = |key: &str| json!({ "key": key, "text": "hello" });
    assert_eq!(
        second.admin().execute(&name, round_trip("b.txt")).await,
        (200, json!({ "result": "hello" })),
        "the second node's own key works"
    );
    let on_first = first.admin().execute(&name, round_trip("a.txt")).await;
    assert_eq!(
        on_first,
        (200, json!({ "result": "hello" })),
        "the first node's key must not have been deleted by the second node's load"
    );
}

/// Attacks the per-plugin PostgreSQL role in a cluster: each node gives the plugin's role
/// `CONNECTION LIMIT connections_per_plugin + 1` and opens up to `connections_per_plugin`
/// connections of it, but every node runs the plugin as the same role, so two nodes using
/// their share at once exceed the role's limit and PostgreSQL refuses connections (53300).
/// Correct (`ADMIN_API.md`: statements over a plugin's share wait for one of its connections):
/// each node's share is usable whatever the other nodes do.
#[actix_rt::test]
async fn every_node_can_use_a_plugins_share_of_connections_at_once() {
    let cluster = fresh("conns");
    let name = fresh("conns-plugin");
    let env = [
        ("WARDEN_DATABASE_CONNECTIONS_PER_PLUGIN", "2"),
        ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "15000"),
    ];
    let first = start_node_with(&cluster, "node-a", &env);
    let second = start_node_with(&cluster, "node-b", &env);
    first.write_plugin(
        &format!("{name}.js"),
        &format!(
            r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0", allowedTables: ["notes"] }},
  async initialize(context) {{ this.db = context.database; }},
  async execute(input) {{
    if (input === "hi") return {{ version: "1.0.0" }};
    // Two transactions at once, each holding its connection for 2 s: this node's whole share.
    const hold = () => this.db.transaction(async (tx) => {{
      await tx.executeQuery("SELECT 1 AS one");
      await new Promise((resolve) => setTimeout(resolve, 2000));
      return 1;
    }}).catch((error) => error.name + " " + error.code + " " + error.message);
    return Promise.all([hold(), hold()]);
  }},
}};
"#
        ),
    );
    let (status, body) = first.admin().load(&format!("{name}.js")).await;
    assert_eq!(status, 201, "{body}");
    assert!(converges(&second, &name, "1.0.0").await);
    let (first_admin, second_admin) = (first.admin(), second.admin());
    let (on_first, on_second) = futures::join!(
        first_admin.execute(&name, json!("hold")),
        second_admin.execute(&name, json!("hold"))
    );
    assert_eq!(on_first, (200, json!({ "result": [1, 1] })), "first node");
    assert_eq!(on_second, (200, json!({ "result": [1, 1] })), "second node");
}

/// Attacks the follower's retries: a reload that fails on one node only (its heap is too
/// small for v2's `initialize`) leaves v1 running there, and every retry of the follower
/// (200 ms doubling, and at every notification) stops that healthy v1 instance (`cleanup`,
/// dropped timers, transactions and calls) and initializes it again, forever. Correct
/// (`ARCHITECTURE.md`: a node that cannot apply part of the state "keeps what it can"): the
/// running version is left alone while the same recorded source keeps failing there.
#[actix_rt::test]
async fn a_reload_that_fails_on_one_node_does_not_keep_restarting_what_runs_there() {
    let cluster = fresh("bounce");
    let name = fresh("bounce-plugin");
    let first = start_node(&cluster, "node-a");
    let second = start_node_with(&cluster, "node-b", &[("WARDEN_PLUGIN_MEMORY_MB", "4")]);
    first.write_plugin(
        &format!("{name}.js"),
        &format!(
            r#"
let started;
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  async initialize() {{ started = Date.now() + ":" + Math.random(); }},
  async execute() {{ return {{ version: "1.0.0", started }}; }},
}};
"#
        ),
    );
    assert_eq!(first.admin().load(&format!("{name}.js")).await.0, 201);
    assert!(converges(&second, &name, "1.0.0").await);

    first.write_plugin(&format!("{name}.js"), &hungry(&name, "2.0.0"));
    let (status, body) = first
        .admin()
        .post(&format!("/plugins/{name}/reload"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let reported = wait_until(PATIENCE, || async {
        let info = first.admin().plugin(&name).await;
        info["nodes"]["node-b"]["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty())
    })
    .await;
    assert!(reported, "the second node reports that it cannot run v2");

    let before = answer_of(&second, &name).await;
    assert_eq!(before["version"], "1.0.0");
    // Later changes make the second node apply the state again, failed reload included.
    for index in 0..3 {
        let other = fresh(&format!("later{index}"));
        first.write_plugin(&format!("{other}.js"), &versioned(&other, "1.0.0", &[]));
        assert_eq!(first.admin().load(&format!("{other}.js")).await.0, 201);
        assert!(converges(&second, &other, "1.0.0").await);
    }
    let after = answer_of(&second, &name).await;
    assert_eq!(
        before["started"], after["started"],
        "the running v1 instance was torn down and initialized again by the retries"
    );
}

/// Attacks the recorded source's import list with TypeScript: the record lists the imports of
/// the TypeScript text, not of the JavaScript that runs, so an import that type stripping
/// removes (a value-style `import` of an interface from a `.d.ts` file) makes the cluster
/// refuse a plugin that a single node loads. Correct (`ADMIN_API.md`: a change is applied
/// "with the same answers as a single node"): the same answer, and then every node runs it.
#[actix_rt::test]
async fn a_typescript_plugin_loads_in_a_cluster_as_on_a_single_node() {
    let name = fresh("typed");
    let entry = format!(
        r#"
import {{ Shape }} from "./lib/{name}-shape.d.ts";
const shape: Shape = {{ sides: 4 }};
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  async execute(): Promise<{{ version: string; sides: number }}> {{
    return {{ version: "1.0.0", sides: shape.sides }};
  }},
}};
"#
    );
    let declaration = "export interface Shape { sides: number }\n";
    let write = |process: &WardenProcess| {
        process.write_plugin(&format!("{name}.ts"), &entry);
        process.write_plugin(&format!("lib/{name}-shape.d.ts"), declaration);
    };

    let single = WardenProcess::start(&[], &[], &["--no-load-all"]);
    write(&single);
    let (single_status, single_body) = single.admin().load(&format!("{name}.ts")).await;

    let cluster = fresh("typed-cluster");
    let first = start_node(&cluster, "node-a");
    let second = start_node(&cluster, "node-b");
    write(&first);
    let (status, body) = first.admin().load(&format!("{name}.ts")).await;
    assert_eq!(
        status, single_status,
        "a cluster answers as a single node: cluster {body}, single {single_body}"
    );
    if status == 201 {
        assert!(converges(&second, &name, "1.0.0").await);
    }
}
