//! Warden as a cluster (`ADMIN_API.md`, "Cluster"): `GET /cluster` on a single node and on
//! several nodes of one cluster, each started with its own plugins directory.

use std::net::ToSocketAddrs as _;
use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::proxy::TcpProxy;
use warden_tests::{
    assert_error, local_stack_env, public_request, wait_until, WardenProcess, ADMIN_TOKEN, PATIENCE,
};

use crate::gateways::unique;

/// The nodes' timeout in these tests: short, so a killed node goes down quickly.
const NODE_TIMEOUT_S: &str = "2";

/// Starts one node of `cluster` on the local stack.
fn start_node(cluster: &str, node: &str) -> WardenProcess {
    WardenProcess::start_with_stack(
        &[],
        &[("WARDEN_NODE_TIMEOUT_S", NODE_TIMEOUT_S)],
        &["--cluster", cluster, "--node-id", node, "--no-load-all"],
    )
}

/// `GET /cluster` on `process`: the `nodes` array, after checking the answer's shape.
async fn cluster_nodes(process: &WardenProcess) -> (Value, Vec<Value>) {
    let (status, body) = process.admin().get("/cluster").await;
    assert_eq!(status, 200, "{body}");
    let nodes = body["nodes"].as_array().expect("nodes is an array").clone();
    (body, nodes)
}

fn state_of<'a>(nodes: &'a [Value], id: &str) -> Option<&'a str> {
    nodes
        .iter()
        .find(|node| node["id"] == id)
        .and_then(|node| node["state"].as_str())
}

#[actix_rt::test]
async fn a_single_node_lists_itself_with_its_addresses() {
    let node = WardenProcess::start(&[], &[], &["--node-id", "solo-1"]);
    let (body, nodes) = cluster_nodes(&node).await;
    assert_eq!(body["cluster"], Value::Null);
    assert_eq!(body["node"], "solo-1");
    assert_eq!(nodes.len(), 1, "{body}");
    let itself = &nodes[0];
    assert_eq!(itself["id"], "solo-1");
    assert_eq!(itself["state"], "up");
    assert_eq!(itself["adminAddress"], format!("127.0.0.1:{}", node.port()));
    assert_eq!(
        itself["httpAddress"],
        format!(
            "127.0.0.1:{}",
            node.public_port().expect("public listener on")
        )
    );
    let last_seen = itself["lastSeen"].as_str().expect("lastSeen is a string");
    let (date, time) = last_seen.split_once('T').expect("RFC 3339 date and time");
    assert_eq!(date.len(), 10, "{last_seen}");
    assert!(time.ends_with('Z'), "in UTC: {last_seen}");

    let closed = WardenProcess::start(&[], &[], &["--http-bind", "off"]);
    let (body, nodes) = cluster_nodes(&closed).await;
    assert_eq!(nodes[0]["httpAddress"], Value::Null, "{body}");
    assert_eq!(
        nodes[0]["id"], body["node"],
        "the default id names the node"
    );

    let (status, _) = node.admin().with_token(None).get("/cluster").await;
    assert_eq!(status, 401, "GET /cluster needs the admin token");
}

#[actix_rt::test]
async fn a_cluster_refuses_to_start_without_the_database_and_kafka() {
    let plugins = std::env::temp_dir().join(unique("refused"));
    std::fs::create_dir_all(&plugins).unwrap();
    let output = std::process::Command::new(warden_tests::warden_binary())
        .args(["serve", "--bind", "127.0.0.1:0", "--http-bind", "off"])
        .args(["--cluster", "shop", "--plugins-dir"])
        .arg(&plugins)
        .env_remove("WARDEN_DATABASE_URL")
        .env_remove("WARDEN_KAFKA_BROKERS")
        .env("WARDEN_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("warden runs");
    let _ = std::fs::remove_dir_all(&plugins);
    assert!(!output.status.success(), "it must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WARDEN_DATABASE_URL"), "{stderr}");
}

#[actix_rt::test]
async fn nodes_of_one_cluster_list_each_other_and_a_lost_node_goes_down() {
    let cluster = unique("cl").replace('_', "-");
    let mut first = start_node(&cluster, "node-a");
    let mut second = start_node(&cluster, "node-b");
    let other_cluster = start_node(&unique("other").replace('_', "-"), "node-z");

    let (body, nodes) = cluster_nodes(&first).await;
    assert_eq!(body["cluster"], cluster.as_str());
    assert_eq!(body["node"], "node-a");
    let ids: Vec<&str> = nodes
        .iter()
        .filter_map(|node| node["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["node-a", "node-b"],
        "sorted by id, this cluster only: {body}"
    );
    assert!(nodes.iter().all(|node| node["state"] == "up"), "{body}");
    let second_entry = nodes.iter().find(|node| node["id"] == "node-b").unwrap();
    assert_eq!(
        second_entry["adminAddress"],
        format!("127.0.0.1:{}", second.port())
    );
    let (_, seen_by_second) = cluster_nodes(&second).await;
    assert_eq!(seen_by_second.len(), 2);
    assert_eq!(cluster_nodes(&other_cluster).await.1.len(), 1);

    // A crash: no goodbye; the node goes down once unseen for the timeout.
    second.kill();
    let went_down = wait_until(PATIENCE, || async {
        state_of(&cluster_nodes(&first).await.1, "node-b") == Some("down")
    })
    .await;
    assert!(went_down, "a killed node goes down");
    let (_, nodes) = cluster_nodes(&first).await;
    assert_eq!(state_of(&nodes, "node-b"), Some("down"), "and stays listed");
    assert_eq!(state_of(&nodes, "node-a"), Some("up"));

    // A stop: down at once, without waiting for the timeout.
    let mut third = start_node(&cluster, "node-c");
    assert!(
        wait_until(PATIENCE, || async {
            state_of(&cluster_nodes(&first).await.1, "node-c") == Some("up")
        })
        .await
    );
    third.terminate();
    let (_, nodes) = cluster_nodes(&first).await;
    assert_eq!(
        state_of(&nodes, "node-c"),
        Some("down"),
        "stopped is down at once"
    );

    // A restarted node is the same member, up again.
    let restarted = start_node(&cluster, "node-b");
    let (_, nodes) = cluster_nodes(&first).await;
    assert_eq!(state_of(&nodes, "node-b"), Some("up"));
    assert_eq!(
        nodes.len(),
        3,
        "one row per node id, restarts included: {nodes:?}"
    );
    drop(restarted);
    first.terminate();
}

/// A plugin that imports a library, so a node that never saw either file must get both.
fn greeter(name: &str, version: &str) -> String {
    format!(
        r#"
import {{ greeting }} from "./lib/greeting.js";
export default {{
  metadata: {{ name: "{name}", version: "{version}", allowedTables: ["notes"] }},
  async execute(input) {{ return {{ greeting, version: "{version}", input }}; }},
}};
"#
    )
}

/// What `name` answers on `process`, or `None` while it is not loaded there.
async fn execute_on(process: &WardenProcess, name: &str) -> Option<Value> {
    match process.admin().execute(name, json!("hi")).await {
        (200, body) => Some(body["result"].clone()),
        _ => None,
    }
}

/// Waits until `name` on `process` answers with `version` (or is gone, for `None`).
async fn converges(process: &WardenProcess, name: &str, version: Option<&str>) -> bool {
    wait_until(PATIENCE, || async {
        let answer = execute_on(process, name).await;
        match version {
            Some(version) => answer.is_some_and(|result| result["version"] == version),
            None => answer.is_none(),
        }
    })
    .await
}

#[actix_rt::test]
async fn a_change_through_one_node_reaches_every_node_with_its_imports() {
    let cluster = unique("conv").replace('_', "-");
    let name = unique("greeter").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let second = start_node(&cluster, "node-b");
    first.write_plugin("greeter.js", &greeter(&name, "1.0.0"));
    first.write_plugin("lib/greeting.js", "export const greeting = 'hello';");

    // A refused change changes nothing anywhere.
    first.write_plugin("broken.js", "export default {");
    let (status, _) = first.admin().load("broken.js").await;
    assert_eq!(status, 422);

    let (status, loaded) = first.admin().load("greeter.js").await;
    assert_eq!(status, 201, "{loaded}");
    assert_eq!(
        loaded["nodes"]["node-a"]["state"], "running",
        "a load's answer carries nodes, its own entry the new state: {loaded}"
    );
    assert!(
        converges(&second, &name, Some("1.0.0")).await,
        "the other node runs the plugin without having its files"
    );
    let on_second = execute_on(&second, &name).await.unwrap();
    assert_eq!(on_second["greeting"], "hello", "its import came along");
    let (_, info) = second.admin().get(&format!("/plugins/{name}")).await;
    assert_eq!(info["sha256"], loaded["sha256"], "the same source: {info}");
    assert!(second.plugins_dir().join("greeter.js").metadata().is_err());
    let (_, list) = second.admin().get("/plugins").await;
    assert_eq!(
        warden_tests::plugin_names(&list),
        vec![name.clone()],
        "{list}"
    );
    let both_running = wait_until(PATIENCE, || async {
        let (_, info) = first.admin().get(&format!("/plugins/{name}")).await;
        info["nodes"]["node-a"]["state"] == "running"
            && info["nodes"]["node-b"]["state"] == "running"
    })
    .await;
    assert!(both_running, "every up node's state is listed in nodes");
    assert_eq!(
        list["plugins"][0]["nodes"]["node-b"]["restarts"], 0,
        "{list}"
    );

    // A reload makes the receiving node's files the cluster's source, imports included.
    first.write_plugin("greeter.js", &greeter(&name, "2.0.0"));
    first.write_plugin("lib/greeting.js", "export const greeting = 'bonjour';");
    let (status, reloaded) = first
        .admin()
        .post(&format!("/plugins/{name}/reload"), None)
        .await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(
        reloaded["nodes"]["node-a"]["state"], "running",
        "{reloaded}"
    );
    assert!(converges(&second, &name, Some("2.0.0")).await);
    assert_eq!(
        execute_on(&second, &name).await.unwrap()["greeting"],
        "bonjour"
    );

    // Overrides set through the second node reach the first.
    let overrides = json!({ "tableNameMap": { "notes": "memos" } });
    let (status, answer) = second
        .admin()
        .put(
            &format!("/plugins/{name}/overrides"),
            Some(overrides.clone()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let applied = wait_until(PATIENCE, || async {
        let (_, info) = first.admin().get(&format!("/plugins/{name}")).await;
        info["overrides"] == overrides
    })
    .await;
    assert!(
        applied,
        "the first node reloaded the plugin with the overrides"
    );
    assert_eq!(
        first
            .admin()
            .get(&format!("/plugins/{name}/overrides"))
            .await,
        (200, overrides)
    );

    // A node that joins later, with an empty directory, runs the cluster's plugins before it
    // answers at all.
    let third = start_node(&cluster, "node-c");
    assert_eq!(execute_on(&third, &name).await.unwrap()["version"], "2.0.0");
    let (status, ready) = third.admin().get("/ready").await;
    assert_eq!(status, 200, "{ready}");

    // An unload through any node unloads everywhere.
    let (status, _) = third.admin().delete(&format!("/plugins/{name}")).await;
    assert_eq!(status, 204);
    assert!(converges(&first, &name, None).await);
    assert!(converges(&second, &name, None).await);
}

#[actix_rt::test]
async fn a_restarted_cluster_node_runs_the_recorded_state_not_its_directory() {
    let cluster = unique("rec").replace('_', "-");
    let name = unique("greeter").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    first.write_plugin("greeter.js", &greeter(&name, "1.0.0"));
    first.write_plugin("lib/greeting.js", "export const greeting = 'hello';");
    assert_eq!(first.admin().load("greeter.js").await.0, 201);

    // Its own file changes on disk, but nothing told the cluster: it keeps the recorded source.
    let mut second = start_node(&cluster, "node-b");
    second.write_plugin("greeter.js", &greeter(&name, "9.9.9"));
    second.write_plugin("lib/greeting.js", "export const greeting = 'other';");
    second.terminate();
    let second = second.restart(&["--cluster", &cluster, "--node-id", "node-b"]);
    let result = execute_on(&second, &name)
        .await
        .expect("restored from the cluster");
    assert_eq!(result["version"], "1.0.0");
    assert_eq!(result["greeting"], "hello");
}

/// The local stack's `WARDEN_DATABASE_URL` through a proxy of its own, so one node can lose the
/// database while the others keep it.
fn database_through_proxy() -> (TcpProxy, String) {
    let url = local_stack_env()
        .into_iter()
        .find_map(|(key, value)| (key == "WARDEN_DATABASE_URL").then_some(value))
        .expect("infra/local.env names the database");
    let (scheme_and_user, rest) = url.split_once('@').expect("postgres://user@host:port/db");
    let (host_and_port, database) = rest.split_once('/').expect("a database name");
    let target = host_and_port
        .to_socket_addrs()
        .expect("a host and port")
        .next()
        .expect("an address");
    let proxy = TcpProxy::start(target);
    let proxied = format!("{scheme_and_user}@{}/{database}", proxy.address());
    (proxy, proxied)
}

#[actix_rt::test]
async fn a_node_that_loses_the_database_keeps_running_refuses_changes_and_catches_up() {
    let cluster = unique("loss").replace('_', "-");
    let name = unique("greeter").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let (mut proxy, proxied_url) = database_through_proxy();
    let second = WardenProcess::start_with_stack(
        &[],
        &[
            ("WARDEN_NODE_TIMEOUT_S", NODE_TIMEOUT_S),
            ("WARDEN_DATABASE_URL", &proxied_url),
        ],
        &[
            "--cluster",
            &cluster,
            "--node-id",
            "node-b",
            "--no-load-all",
        ],
    );
    first.write_plugin("greeter.js", &greeter(&name, "1.0.0"));
    first.write_plugin("lib/greeting.js", "export const greeting = 'hello';");
    assert_eq!(first.admin().load("greeter.js").await.0, 201);
    assert!(converges(&second, &name, Some("1.0.0")).await);

    proxy.cut();
    assert_eq!(
        execute_on(&second, &name).await.unwrap()["version"],
        "1.0.0",
        "a node without the database keeps running what it has"
    );
    let other = unique("other").replace('_', "-");
    second.write_plugin("other.js", &greeter(&other, "1.0.0"));
    second.write_plugin("lib/greeting.js", "export const greeting = 'hello';");
    let refused = second.admin().load("other.js").await;
    assert_error(&refused, 503, "cluster_unavailable");
    assert!(
        execute_on(&second, &other).await.is_none(),
        "nothing changed here"
    );
    assert!(execute_on(&first, &other).await.is_none(), "nor anywhere");
    let (status, _) = second.admin().delete(&format!("/plugins/{name}")).await;
    assert_eq!(status, 503);
    assert!(execute_on(&second, &name).await.is_some());
    assert!(
        wait_until(PATIENCE, || async {
            state_of(&cluster_nodes(&first).await.1, "node-b") == Some("down")
        })
        .await,
        "the others see it down"
    );

    // Changes go on without it, and it catches up when the database is back.
    first.write_plugin("greeter.js", &greeter(&name, "2.0.0"));
    let (status, _) = first
        .admin()
        .post(&format!("/plugins/{name}/reload"), None)
        .await;
    assert_eq!(status, 200);
    proxy.restore();
    assert!(converges(&second, &name, Some("2.0.0")).await);
    assert!(
        wait_until(PATIENCE, || async {
            state_of(&cluster_nodes(&first).await.1, "node-b") == Some("up")
        })
        .await
    );
}

/// A node of `cluster` whose heap limit (4 MiB) is too small for a plugin whose `initialize`
/// keeps 200,000 objects: such a plugin fails there and runs on the other nodes.
fn start_small_heap_node(cluster: &str, node: &str, args: &[&str]) -> WardenProcess {
    let mut all = vec!["--cluster", cluster, "--node-id", node, "--no-load-all"];
    all.extend_from_slice(args);
    WardenProcess::start_with_stack(
        &[],
        &[
            ("WARDEN_NODE_TIMEOUT_S", NODE_TIMEOUT_S),
            ("WARDEN_PLUGIN_MEMORY_MB", "4"),
        ],
        &all,
    )
}

/// Waits until `process` lists `name` as failed.
async fn failed_on(process: &WardenProcess, name: &str) -> bool {
    wait_until(PATIENCE, || async {
        let (_, here) = process.admin().get(&format!("/plugins/{name}")).await;
        here["state"] == "failed"
    })
    .await
}

#[actix_rt::test]
async fn a_plugin_that_fails_on_one_node_is_failed_there_and_runs_on_the_others() {
    let cluster = unique("fail").replace('_', "-");
    let name = unique("hungry").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let second = start_small_heap_node(&cluster, "node-b", &[]);
    first.write_plugin(
        "hungry.js",
        &format!(
            r#"
let kept;
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  routes: {{ "GET /size": () => ({{ json: kept.length }}) }},
  async initialize() {{ kept = new Array(200000).fill(0).map((_, index) => ({{ index }})); }},
  async execute() {{ return kept.length; }},
}};
"#
        ),
    );
    let (status, loaded) = first.admin().load("hungry.js").await;
    assert_eq!(status, 201, "{loaded}");
    let reported = wait_until(PATIENCE, || async {
        let (_, info) = first.admin().get(&format!("/plugins/{name}")).await;
        info["nodes"]["node-b"]["state"] == "failed"
    })
    .await;
    assert!(
        reported,
        "the node that could not start it reports it failed"
    );
    let (_, info) = first.admin().get(&format!("/plugins/{name}")).await;
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["nodes"]["node-a"]["state"], "running", "{info}");
    let error = info["nodes"]["node-b"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(!error.is_empty(), "with the error: {info}");
    assert_eq!(
        first.admin().execute(&name, json!(null)).await,
        (200, json!({ "result": 200000 }))
    );
    // The node that could not start it lists it as failed, with what it knows of it, and
    // a call there is refused as for any failed plugin.
    let (status, here) = second.admin().get(&format!("/plugins/{name}")).await;
    assert_eq!(status, 200, "{here}");
    assert_eq!(here["state"], "failed", "{here}");
    assert_eq!(here["version"], "1.0.0", "{here}");
    assert_eq!(here["source"], "hungry.js", "{here}");
    assert_eq!(
        here["sha256"], info["sha256"],
        "the recorded source: {here}"
    );
    assert_eq!(here["nodes"]["node-b"]["state"], "failed", "{here}");
    assert_eq!(here["nodes"]["node-a"]["state"], "running", "{here}");
    let (status, list) = second.admin().get("/plugins").await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&Value> = list["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter(|plugin| plugin["name"] == name)
        .collect();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["state"], "failed", "{list}");
    assert_error(
        &second.admin().execute(&name, json!(null)).await,
        503,
        "plugin_unavailable",
    );
    let route = public_request(
        "GET",
        &second.public_url(&format!("/api/{name}/size")),
        &[],
        None,
    )
    .await;
    assert_eq!(
        route.status, 503,
        "its routes are unavailable there, not missing"
    );
    assert!(route.header("retry-after").is_some(), "{:?}", route.headers);
    let served = public_request(
        "GET",
        &first.public_url(&format!("/api/{name}/size")),
        &[],
        None,
    )
    .await;
    assert_eq!(served.status, 200, "and served where it runs");
    // Overrides through that node are checked against what the plugin declared, as where it
    // runs: a table whose physical name would be too long is refused on both, and not recorded.
    let too_long = json!({ "allowedTables": ["t".repeat(60)] });
    let path = format!("/plugins/{name}/overrides");
    assert_error(
        &second.admin().put(&path, Some(too_long.clone())).await,
        422,
        "invalid_name",
    );
    assert_error(
        &first.admin().put(&path, Some(too_long)).await,
        422,
        "invalid_name",
    );
    assert_eq!(first.admin().get(&path).await, (200, json!({})));
    // Loading it again through that node is refused as on any other node.
    second.write_plugin(
        "hungry.js",
        &format!(r#"export default {{ metadata: {{ name: "{name}", version: "1.0.0" }} }};"#),
    );
    assert_error(
        &second.admin().load("hungry.js").await,
        409,
        "already_loaded",
    );
    // A reload through it must find the same plugin in that node's file.
    second.write_plugin(
        "hungry.js",
        r#"export default { metadata: { name: "someone-else", version: "1.0.0" } };"#,
    );
    let (status, refused) = second
        .admin()
        .post(&format!("/plugins/{name}/reload"), None)
        .await;
    assert_eq!(status, 422, "{refused}");
    let (_, still) = second.admin().get(&format!("/plugins/{name}")).await;
    assert_eq!(still["state"], "failed", "nothing changed: {still}");
    assert_error(
        &first.admin().get("/plugins/someone-else").await,
        404,
        "plugin_not_found",
    );
    // And the operator can unload it through that node, for the whole cluster.
    let (status, body) = second.admin().delete(&format!("/plugins/{name}")).await;
    assert_eq!(status, 204, "{body}");
    assert!(converges(&first, &name, None).await, "unloaded everywhere");
    assert_error(
        &second.admin().get(&format!("/plugins/{name}")).await,
        404,
        "plugin_not_found",
    );

    // Loaded again, it fails there again; a reload through that node loads its own file,
    // which becomes the cluster's source and runs everywhere.
    let (status, loaded) = first.admin().load("hungry.js").await;
    assert_eq!(status, 201, "{loaded}");
    let failed_again = failed_on(&second, &name).await;
    assert!(failed_again, "failed there again");
    second.write_plugin(
        "hungry.js",
        &format!(
            r#"
export default {{
  metadata: {{ name: "{name}", version: "1.1.0" }},
  async execute() {{ return {{ version: "1.1.0" }}; }},
}};
"#
        ),
    );
    let (status, reloaded) = second
        .admin()
        .post(&format!("/plugins/{name}/reload"), None)
        .await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["state"], "running", "{reloaded}");
    assert_eq!(reloaded["version"], "1.1.0", "{reloaded}");
    assert!(
        converges(&first, &name, Some("1.1.0")).await,
        "the reloading node's file runs everywhere"
    );
}

#[actix_rt::test]
async fn a_dependent_that_failed_on_a_node_counts_when_its_dependency_is_unloaded_there() {
    let cluster = unique("deps").replace('_', "-");
    let base = unique("base").replace('_', "-");
    let needy = unique("needy").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let second = start_small_heap_node(&cluster, "node-b", &[]);
    first.write_plugin(
        "base.js",
        &format!(r#"export default {{ metadata: {{ name: "{base}", version: "1.0.0" }} }};"#),
    );
    first.write_plugin(
        "needy.js",
        &format!(
            r#"
let kept;
export default {{
  metadata: {{ name: "{needy}", version: "1.0.0", dependencies: ["{base}"] }},
  async initialize() {{ kept = new Array(200000).fill(0).map((_, index) => ({{ index }})); }},
}};
"#
        ),
    );
    for file in ["base.js", "needy.js"] {
        let (status, loaded) = first.admin().load(file).await;
        assert_eq!(status, 201, "{loaded}");
    }
    let failed_there = failed_on(&second, &needy).await;
    assert!(failed_there, "the dependent failed on the second node");
    // Its dependency runs there; the dependent that failed there still depends on it, as on
    // the node where both run.
    let refused = second.admin().delete(&format!("/plugins/{base}")).await;
    assert_error(&refused, 409, "has_dependents");
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains(&needy)),
        "{refused:?}"
    );
    assert_error(
        &first.admin().delete(&format!("/plugins/{base}")).await,
        409,
        "has_dependents",
    );
    let (status, body) = second
        .admin()
        .delete(&format!("/plugins/{base}?cascade=true"))
        .await;
    assert_eq!(status, 204, "{body}");
    for name in [&base, &needy] {
        let gone = wait_until(PATIENCE, || async {
            first.admin().get(&format!("/plugins/{name}")).await.0 == 404
        })
        .await;
        assert!(gone, "{name} is unloaded everywhere");
    }
}

#[actix_rt::test]
async fn a_watched_file_on_the_node_where_the_plugin_failed_becomes_the_clusters_source() {
    let cluster = unique("watch").replace('_', "-");
    let name = unique("heavy").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let second = start_small_heap_node(&cluster, "node-b", &["--watch"]);
    first.write_plugin(
        "heavy.js",
        &format!(
            r#"
let kept;
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  async initialize() {{ kept = new Array(200000).fill(0).map((_, index) => ({{ index }})); }},
  async execute() {{ return {{ version: "1.0.0" }}; }},
}};
"#
        ),
    );
    let (status, loaded) = first.admin().load("heavy.js").await;
    assert_eq!(status, 201, "{loaded}");
    let failed_there = failed_on(&second, &name).await;
    assert!(failed_there, "failed on the second node");
    second.write_plugin(
        "heavy.js",
        &format!(
            r#"export default {{ metadata: {{ name: "{name}", version: "1.1.0" }}, async execute() {{ return {{ version: "1.1.0" }}; }} }};"#
        ),
    );
    assert!(
        converges(&second, &name, Some("1.1.0")).await,
        "the watched file runs where it changed"
    );
    assert!(
        converges(&first, &name, Some("1.1.0")).await,
        "and everywhere"
    );
}

/// A plugin whose consumer in group `workers` records what it received on its node.
fn worker(name: &str) -> String {
    format!(
        r#"
const received = [];
export default {{
  metadata: {{ name: "{name}", version: "1.0.0", allowedTopics: ["jobs"] }},
  async initialize(context) {{
    this.kafka = context.kafka;
    await this.kafka.createConsumer("worker", "workers");
    await this.kafka.subscribe("worker", ["jobs"], async (payload) => {{
      received.push(payload.message.value);
    }});
  }},
  async execute(input) {{
    if (input && input.send) {{
      await this.kafka.sendMessage("jobs", input.send.map((value) => ({{ key: value, value }})));
      return input.send.length;
    }}
    return received;
  }},
}};
"#
    )
}

/// What `name`'s consumer received on `process`.
async fn received_on(process: &WardenProcess, name: &str) -> Vec<String> {
    let (status, body) = process.admin().execute(name, json!(null)).await;
    assert_eq!(status, 200, "{body}");
    body["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect()
}

#[actix_rt::test]
async fn a_plugins_consumers_on_several_nodes_share_their_group() {
    let cluster = unique("group").replace('_', "-");
    let name = unique("worker").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let mut second = start_node(&cluster, "node-b");
    first.write_plugin("worker.js", &worker(&name));
    let (status, loaded) = first.admin().load("worker.js").await;
    assert_eq!(status, 201, "{loaded}");
    assert!(
        wait_until(PATIENCE, || async {
            second.admin().get(&format!("/plugins/{name}")).await.0 == 200
        })
        .await
    );

    // Rounds of messages with many keys, until both nodes' consumers have had some: the group
    // split the topic's partitions between them.
    let mut sent: Vec<String> = Vec::new();
    let split = wait_until(Duration::from_secs(60), || {
        let batch: Vec<String> = (0..30)
            .map(|index| format!("m{}-{index}", sent.len()))
            .collect();
        sent.extend(batch.iter().cloned());
        let (first, second, name) = (&first, &second, &name);
        async move {
            let (status, _) = first.admin().execute(name, json!({ "send": batch })).await;
            assert_eq!(status, 200);
            // A round every 200 ms at most: the split takes a rebalance, seconds.
            actix_rt::time::sleep(Duration::from_millis(200)).await;
            !received_on(first, name).await.is_empty()
                && !received_on(second, name).await.is_empty()
        }
    })
    .await;
    assert!(split, "both nodes' consumers got a share of the partitions");
    let everything = wait_until(Duration::from_secs(60), || async {
        let mut all = received_on(&first, &name).await;
        all.extend(received_on(&second, &name).await);
        sent.iter().all(|message| all.contains(message))
    })
    .await;
    assert!(
        everything,
        "every message reached one of the group's consumers"
    );

    // The lost node's partitions move to the one left.
    second.kill();
    let after: Vec<String> = (0..30).map(|index| format!("after-{index}")).collect();
    let (status, _) = first.admin().execute(&name, json!({ "send": after })).await;
    assert_eq!(status, 200);
    let moved = wait_until(Duration::from_secs(60), || async {
        let all = received_on(&first, &name).await;
        after.iter().all(|message| all.contains(message))
    })
    .await;
    assert!(
        moved,
        "after the rebalance the first node receives every partition"
    );
}
