//! Events in a cluster (`PLUGIN_API.md`, "Events in a cluster"): once per listening plugin in
//! the cluster, `{ everyNode: true }` on every node, order per emitter, no self-delivery from
//! any node, node-local `plugin:*` events with `node`, `POST /events` and the streams
//! cluster-wide, and no event lost when a node is killed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::{one_key_per_partition, wait_until, EventStream, WardenProcess, PATIENCE};

use crate::gateways::unique;

/// How long events may take to cross once nodes have formed the group (a rebalance included).
const CROSSING: Duration = Duration::from_secs(60);

fn start_node(cluster: &str, node: &str) -> WardenProcess {
    start_node_with(cluster, node, &[])
}

fn start_node_with(cluster: &str, node: &str, env: &[(&str, &str)]) -> WardenProcess {
    let mut env = env.to_vec();
    env.push(("WARDEN_NODE_TIMEOUT_S", "2"));
    WardenProcess::start_with_stack(
        &[],
        &env,
        &["--cluster", cluster, "--node-id", node, "--no-load-all"],
    )
}

/// A plugin that listens to `tick:*` both ways and emits `tick:<name>` with `{ tag, seq }` on
/// `execute({ emit, tag })`; `execute(null)` answers what it heard on its node.
fn listener(name: &str) -> String {
    format!(
        r#"
const heard = {{ once: [], everyNode: [] }};
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  initialize(context) {{
    this.bus = context.eventBus;
    this.bus.on("tick:*", (data, meta) => {{ heard.once.push({{ ...data, source: meta.source }}); }});
    this.bus.on("tick:*", (data) => {{ heard.everyNode.push(data); }}, {{ everyNode: true }});
  }},
  execute(input) {{
    if (input && input.emit) {{
      for (let seq = 0; seq < input.emit; seq++) this.bus.emit("tick:{name}", {{ tag: input.tag, seq }});
      return input.emit;
    }}
    return heard;
  }},
}};
"#
    )
}

/// What `name` heard on `process`: `once` and `everyNode`, as `(tag, seq)` lists.
async fn heard_on(process: &WardenProcess, name: &str) -> (Vec<(String, u64)>, Vec<(String, u64)>) {
    let (status, body) = process.admin().execute(name, json!(null)).await;
    assert_eq!(status, 200, "{body}");
    let pairs = |list: &Value| -> Vec<(String, u64)> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                (
                    entry["tag"].as_str().unwrap_or("").to_string(),
                    entry["seq"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };
    (
        pairs(&body["result"]["once"]),
        pairs(&body["result"]["everyNode"]),
    )
}

/// Loads `file` through `first` and waits until `second` runs plugin `name` too.
async fn load_on_both(first: &WardenProcess, second: &WardenProcess, file: &str, name: &str) {
    let (status, body) = first.admin().load(file).await;
    assert_eq!(status, 201, "{body}");
    let running = wait_until(PATIENCE, || async {
        second.admin().plugin(name).await["state"] == "running"
    })
    .await;
    assert!(running, "{name} runs on the second node");
}

/// Per tag, whether the sequence numbers ascend (the order of one emitter to one listener).
fn ascending_per_tag(heard: &[(String, u64)]) -> bool {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    heard.iter().all(|(tag, seq)| {
        let ascending = last.get(tag.as_str()).is_none_or(|previous| previous < seq);
        last.insert(tag, *seq);
        ascending
    })
}

fn expected(tags: &[&str], count: u64) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = tags
        .iter()
        .flat_map(|tag| (0..count).map(move |seq| (tag.to_string(), seq)))
        .collect();
    all.sort();
    all
}

#[actix_rt::test]
async fn each_listening_plugin_hears_an_event_once_in_the_cluster_and_every_node_listeners_everywhere(
) {
    let cluster = unique("ev").replace('_', "-");
    let emitter = unique("emitter").replace('_', "-");
    let hearer = unique("hearer").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let second = start_node(&cluster, "node-b");
    first.write_plugin("emitter.js", &listener(&emitter));
    first.write_plugin("hearer.js", &listener(&hearer));
    load_on_both(&first, &second, "hearer.js", &hearer).await;
    load_on_both(&first, &second, "emitter.js", &emitter).await;

    // The same emitter plugin emits on both nodes.
    for (node, tag) in [(&first, "a"), (&second, "b")] {
        let (status, body) = node
            .admin()
            .execute(&emitter, json!({ "emit": 40, "tag": tag }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let everything = expected(&["a", "b"], 40);
    let arrived = wait_until(CROSSING, || async {
        let (mut once, _) = heard_on(&first, &hearer).await;
        once.extend(heard_on(&second, &hearer).await.0);
        once.sort();
        once == everything
    })
    .await;
    let (first_once, first_every) = heard_on(&first, &hearer).await;
    let (second_once, second_every) = heard_on(&second, &hearer).await;
    assert!(
        arrived,
        "every event once in the cluster: {first_once:?} + {second_once:?}"
    );
    assert!(ascending_per_tag(&first_once) && ascending_per_tag(&second_once));

    // everyNode listeners hear every event on every node, in order.
    let everywhere = wait_until(CROSSING, || async {
        let (_, first_every) = heard_on(&first, &hearer).await;
        let (_, second_every) = heard_on(&second, &hearer).await;
        let sorted = |mut list: Vec<(String, u64)>| {
            list.sort();
            list
        };
        sorted(first_every) == everything && sorted(second_every) == everything
    })
    .await;
    assert!(everywhere, "{first_every:?} / {second_every:?}");
    let (_, first_every) = heard_on(&first, &hearer).await;
    let (_, second_every) = heard_on(&second, &hearer).await;
    assert!(ascending_per_tag(&first_every) && ascending_per_tag(&second_every));

    // The hearer's own events reach the emitter, never the hearer itself, on either node.
    let (status, _) = second
        .admin()
        .execute(&hearer, json!({ "emit": 5, "tag": "h" }))
        .await;
    assert_eq!(status, 200);
    let back = wait_until(CROSSING, || async {
        let (mut once, _) = heard_on(&first, &emitter).await;
        once.extend(heard_on(&second, &emitter).await.0);
        once.iter().filter(|(tag, _)| tag == "h").count() == 5
    })
    .await;
    assert!(back, "the emitter hears the hearer's events");
    for node in [&first, &second] {
        let (once, every) = heard_on(node, &emitter).await;
        assert!(
            once.iter().chain(every.iter()).all(|(tag, _)| tag == "h"),
            "a plugin never hears its own events, from any node: {once:?} {every:?}"
        );
        let (once, every) = heard_on(node, &hearer).await;
        assert!(
            once.iter().chain(every.iter()).all(|(tag, _)| tag != "h"),
            "{once:?} {every:?}"
        );
    }
}

/// The `(event, data)` of the next message on `stream`, `None` after `timeout`.
async fn next_on(stream: &mut EventStream, timeout: Duration) -> Option<(String, Value)> {
    let message = stream.next_event(timeout).await?;
    let mut lines = message.lines();
    let event = lines.next()?.strip_prefix("event: ")?.to_string();
    let data = serde_json::from_str(lines.next()?.strip_prefix("data: ")?).ok()?;
    Some((event, data))
}

/// Every message on `stream` until each of `names` has been seen.
async fn read_until(stream: &mut EventStream, names: &[&str]) -> Vec<(String, Value)> {
    let mut seen: Vec<(String, Value)> = Vec::new();
    while let Some((event, data)) = next_on(stream, CROSSING).await {
        seen.push((event, data));
        if names
            .iter()
            .all(|name| seen.iter().any(|(event, _)| event == name))
        {
            return seen;
        }
    }
    panic!("not all of {names:?} arrived; saw {seen:?}");
}

#[actix_rt::test]
async fn the_operators_events_enter_the_cluster_and_each_stream_shows_every_event_once() {
    let cluster = unique("sse").replace('_', "-");
    let hearer = unique("hearer").replace('_', "-");
    let first = start_node(&cluster, "node-a");
    let second = start_node(&cluster, "node-b");
    let mut first_stream = first.admin().event_stream("**").await;
    let mut second_stream = second.admin().event_stream("**").await;
    assert_eq!(first_stream.status, 200);
    assert_eq!(second_stream.status, 200);

    first.write_plugin("hearer.js", &listener(&hearer));
    load_on_both(&first, &second, "hearer.js", &hearer).await;
    // `plugin:*` events are each node's own, with its id.
    for (stream, node) in [
        (&mut first_stream, "node-a"),
        (&mut second_stream, "node-b"),
    ] {
        let seen = read_until(stream, &["plugin:loaded"]).await;
        let (_, loaded) = seen.last().unwrap();
        assert_eq!(loaded["source"], "warden");
        assert_eq!(loaded["data"]["name"], hearer.as_str());
        assert_eq!(loaded["data"]["node"], node, "{seen:?}");
    }

    // The operator's event and a plugin's, through either node, on both streams once.
    let (status, _) = second
        .admin()
        .post(
            "/events",
            Some(json!({ "event": "tick:admin", "data": { "tag": "admin", "seq": 0 } })),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = first
        .admin()
        .execute(&hearer, json!({ "emit": 1, "tag": "plugin" }))
        .await;
    assert_eq!(status, 200);
    let (status, _) = second
        .admin()
        .post(
            "/events",
            Some(json!({ "event": "done:now", "data": null })),
        )
        .await;
    assert_eq!(status, 202);
    for (stream, node) in [
        (&mut first_stream, "node-a"),
        (&mut second_stream, "node-b"),
    ] {
        // One emitter's events keep their order; the operator's and the plugin's need not.
        let plugin_tick = format!("tick:{hearer}");
        let seen = read_until(stream, &["tick:admin", &plugin_tick, "done:now"]).await;
        let ticks: Vec<&(String, Value)> = seen
            .iter()
            .filter(|(event, _)| event.starts_with("tick:"))
            .collect();
        assert_eq!(ticks.len(), 2, "each event once on each stream: {seen:?}");
        assert!(ticks.iter().any(|(event, data)| event == "tick:admin"
            && data["source"] == "admin"
            && data["data"]["tag"] == "admin"));
        assert!(ticks
            .iter()
            .any(|(event, data)| *event == format!("tick:{hearer}")
                && data["source"] == hearer.as_str()));
        assert!(
            seen.iter()
                .filter(|(event, _)| event.starts_with("plugin:"))
                .all(|(_, data)| data["data"]["node"] == node),
            "no other node's plugin:* events: {seen:?}"
        );
    }
    // The listening plugin heard the operator's event once in the cluster.
    let heard = wait_until(CROSSING, || async {
        let (mut once, _) = heard_on(&first, &hearer).await;
        once.extend(heard_on(&second, &hearer).await.0);
        once == vec![("admin".to_string(), 0)]
    })
    .await;
    assert!(heard, "the hearer heard the operator's event once");
}

/// A plugin that records every `job:*` event it hears in its table with the node it heard it
/// on (learnt from its own `plugin:loaded`), and answers what the table holds. Its listener
/// takes three seconds (one shared timer), so a node killed a second after a burst reached it
/// dies with the burst's events received but not handled.
fn recorder(name: &str) -> String {
    format!(
        r#"
let node = "unknown";
let gate = null;
function slowly() {{
  if (gate === null) gate = new Promise((resolve) => setTimeout(() => {{ gate = null; resolve(); }}, 3000));
  return gate;
}}
export default {{
  metadata: {{ name: "{name}", version: "1.0.0", allowedTables: ["heard"] }},
  migrations: [{{ id: "001_heard", sql: "CREATE TABLE heard (seq INT NOT NULL, node TEXT NOT NULL)" }}],
  initialize(context) {{
    this.database = context.database;
    context.eventBus.on("plugin:loaded", (data) => {{ if (data.name === "{name}") node = data.node; }});
    context.eventBus.on("job:*", async (data) => {{
      await slowly();
      await this.database.executeCommand("INSERT INTO heard (seq, node) VALUES ($1, $2)", [data.seq, node]);
    }});
  }},
  async execute() {{
    return this.database.executeQuery("SELECT seq, node FROM heard ORDER BY seq");
  }},
}};
"#
    )
}

/// A plugin that emits `job:run` with `{ seq }` for `execute({ from, to })`.
fn producer(name: &str) -> String {
    format!(
        r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  initialize(context) {{ this.bus = context.eventBus; }},
  execute(input) {{
    for (let seq = input.from; seq < input.to; seq++) this.bus.emit("job:run", {{ seq }});
    return input.to - input.from;
  }},
}};
"#
    )
}

/// The events `process` has received from the cluster's topic for once-per-plugin listeners.
async fn received_once(process: &WardenProcess) -> f64 {
    let (status, text) = process.admin().get_text("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| {
            line.strip_prefix("warden_cluster_events_received_total{reach=\"once\"} ")
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// `lastSeen` of node `id` in `process`'s `GET /cluster`.
async fn last_seen(process: &WardenProcess, id: &str) -> String {
    let (_, body) = process.admin().get("/cluster").await;
    body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|node| node["id"] == id)
        .and_then(|node| node["lastSeen"].as_str())
        .unwrap_or("")
        .to_string()
}

#[actix_rt::test]
async fn a_killed_node_loses_no_event() {
    let cluster = unique("kill").replace('_', "-");
    let recorder_name = unique("recorder").replace('_', "-");
    // Two partitions, one per node, and an emitter on each (events are keyed by their source).
    let env = [("WARDEN_KAFKA_TOPIC_PARTITIONS", "2")];
    let base = unique("producer").replace('_', "-");
    let producers = one_key_per_partition(&base, 2);
    assert_eq!(producers.len(), 2);
    let first = start_node_with(&cluster, "node-a", &env);
    let mut second = start_node_with(&cluster, "node-b", &env);
    first.write_plugin("recorder.js", &recorder(&recorder_name));
    load_on_both(&first, &second, "recorder.js", &recorder_name).await;
    for (index, name) in producers.iter().enumerate() {
        let file = format!("producer{index}.js");
        first.write_plugin(&file, &producer(name));
        load_on_both(&first, &second, &file, name).await;
    }
    let recorded = || async {
        let (status, body) = first.admin().execute(&recorder_name, json!(null)).await;
        assert_eq!(status, 200, "{body}");
        body["result"].as_array().cloned().unwrap_or_default()
    };
    let mut sent = 0u64;
    let mut emit_round = || {
        let (from, to) = (sent, sent + 400);
        sent = to;
        let (admin, producers) = (first.admin(), producers.clone());
        async move {
            for (index, name) in producers.iter().enumerate() {
                let from = from + 200 * index as u64;
                let (status, body) = admin
                    .execute(name, json!({ "from": from, "to": from + 200 }))
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        }
    };

    // The second node hears its share, then dies with events in flight; more follow.
    emit_round().await;
    emit_round().await;
    let second_heard = wait_until(CROSSING, || async {
        recorded().await.iter().any(|row| row["node"] == "node-b")
    })
    .await;
    assert!(second_heard, "the second node took a share of the events");
    let before = received_once(&second).await;
    emit_round().await;
    // The second node has its share of this burst in hand, and keeps it for a second (two of
    // its heartbeats): long past its offset commits, well before its listener is done.
    let in_hand = wait_until(CROSSING, || async {
        received_once(&second).await >= before + 200.0
    })
    .await;
    assert!(in_hand, "the second node received its share of the burst");
    let seen_at = last_seen(&first, "node-b").await;
    let beating = wait_until(CROSSING, || async {
        let now = last_seen(&first, "node-b").await;
        now != seen_at && !now.is_empty()
    })
    .await;
    let seen_at = last_seen(&first, "node-b").await;
    let beating = beating
        && wait_until(CROSSING, || async {
            last_seen(&first, "node-b").await != seen_at
        })
        .await;
    assert!(beating, "the second node heartbeats");
    second.kill();
    emit_round().await;
    emit_round().await;

    let seqs = |rows: Vec<Value>| {
        let mut seqs: Vec<u64> = rows.iter().filter_map(|row| row["seq"].as_u64()).collect();
        seqs.dedup();
        seqs
    };
    let complete = wait_until(CROSSING, || async {
        seqs(recorded().await) == (0..sent).collect::<Vec<u64>>()
    })
    .await;
    let seen = seqs(recorded().await);
    let missing: Vec<u64> = (0..sent).filter(|seq| !seen.contains(seq)).collect();
    assert!(complete, "events lost across the kill: {missing:?}");
}
