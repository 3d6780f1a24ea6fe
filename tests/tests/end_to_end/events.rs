//! The event bus: per-emitter order, no self-delivery, patterns, `once`/`off`, events from the
//! admin API and from Warden itself, and the SSE stream.

use serde_json::{json, Value};
use warden_tests::{wait_until, Admin, WardenProcess, PATIENCE};

/// A plugin named `name` that records every event matching each of `patterns` as
/// `{pattern, event, source, data}`; `execute` answers the records.
fn recorder(name: &str, patterns: &[&str]) -> String {
    format!(
        r#"
const records = [];
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  async initialize(context) {{
    for (const pattern of {patterns}) {{
      context.eventBus.on(pattern, (data, {{ event, source }}) => records.push({{ pattern, event, source, data }}));
    }}
  }},
  async execute() {{ return records; }},
}};
"#,
        patterns = serde_json::to_string(patterns).unwrap()
    )
}

/// The records of a [`recorder`] plugin.
async fn records(api: &Admin, name: &str) -> Vec<Value> {
    let (status, body) = api.execute(name, Value::Null).await;
    assert_eq!(status, 200, "{body}");
    body["result"].as_array().cloned().unwrap_or_default()
}

/// Publishes an event through the admin API.
async fn publish(api: &Admin, event: &str, data: Value) {
    let (status, body) = api
        .post("/events", Some(json!({ "event": event, "data": data })))
        .await;
    assert_eq!(status, 202, "POST /events {event}: {body}");
}

/// Waits until `name` has recorded an event called `event`.
async fn wait_for_event(api: &Admin, name: &str, event: &str) {
    let seen = wait_until(PATIENCE, || async move {
        records(api, name)
            .await
            .iter()
            .any(|record| record["event"] == event)
    })
    .await;
    assert!(
        seen,
        "{name} never received {event}: {:?}",
        records(api, name).await
    );
}

#[actix_rt::test]
async fn events_from_one_emitter_arrive_in_order_and_never_at_the_emitter() {
    let emitter = r#"
const ownEvents = [];
export default {
  metadata: { name: "a", version: "1.0.0" },
  async initialize(context) {
    this.context = context;
    context.eventBus.on("a:*", (data, meta) => ownEvents.push(meta));
    // Everything else that arrives comes from Warden (plugin:loaded), never from `a` itself.
    context.eventBus.on("**", (data, meta) => { if (meta.source !== "warden") ownEvents.push(meta); });
  },
  async execute(input) {
    if (input && input.report) return ownEvents;
    for (let i = 0; i < 200; i++) this.context.eventBus.emit("a:tick", { i });
    this.context.eventBus.emit("a:done", { i: 200 });
    return "emitted";
  },
};
"#;
    let listener = recorder("b", &["a:*"]);
    let warden = WardenProcess::start(&[("a.js", emitter), ("b.js", &listener)], &[], &[]);
    let api = &warden.admin();

    assert_eq!(
        api.execute("a", json!(null)).await,
        (200, json!({ "result": "emitted" }))
    );
    wait_for_event(api, "b", "a:done").await;
    let received = records(api, "b").await;
    assert_eq!(received.len(), 201);
    for (index, record) in received.iter().take(200).enumerate() {
        assert_eq!(
            record,
            &json!({ "pattern": "a:*", "event": "a:tick", "source": "a", "data": { "i": index } }),
            "event {index} out of order"
        );
    }

    // `a` listens to its own events (and to everything) but got none of them.
    assert_eq!(
        api.execute("a", json!({ "report": true })).await,
        (200, json!({ "result": [] }))
    );
}

#[actix_rt::test]
async fn a_star_matches_one_segment_and_a_double_star_the_rest() {
    let listener = recorder("patterns", &["data:*", "data:**", "*:created", "done"]);
    let warden = WardenProcess::start(&[("patterns.js", &listener)], &[], &[]);
    let api = &warden.admin();

    for event in [
        "data:processed",
        "data:a:b",
        "data:a:b:c",
        "other:processed",
        "user:created",
        "user:x:created",
        "datax:y",
    ] {
        publish(api, event, json!(event)).await;
    }
    publish(api, "done", Value::Null).await;
    wait_for_event(api, "patterns", "done").await;

    let matched = |pattern: &str, received: &[Value]| -> Vec<String> {
        received
            .iter()
            .filter(|record| record["pattern"] == pattern)
            .map(|record| record["event"].as_str().unwrap().to_string())
            .collect()
    };
    let received = records(api, "patterns").await;
    assert_eq!(matched("data:*", &received), ["data:processed"]);
    assert_eq!(
        matched("data:**", &received),
        ["data:processed", "data:a:b", "data:a:b:c"]
    );
    assert_eq!(matched("*:created", &received), ["user:created"]);
    assert_eq!(matched("done", &received), ["done"]);
    assert_eq!(received.len(), 6, "{received:?}");
}

#[actix_rt::test]
async fn once_fires_once_and_off_removes_listeners() {
    let listener = r#"
const counts = { once: 0, on: 0, pong: 0, done: 0 };
const onPing = () => { counts.on += 1; };
export default {
  metadata: { name: "counter", version: "1.0.0" },
  async initialize(context) {
    this.context = context;
    context.eventBus.once("ping", () => { counts.once += 1; });
    context.eventBus.on("ping", onPing);
    context.eventBus.on("pong", () => { counts.pong += 1; });
    context.eventBus.on("pong", () => { counts.pong += 1; });
    context.eventBus.on("done", () => { counts.done += 1; });
  },
  async execute(input) {
    if (input && input.off) {
      this.context.eventBus.off("ping", onPing);
      this.context.eventBus.off("pong");
    }
    return counts;
  },
};
"#;
    let warden = WardenProcess::start(&[("counter.js", listener)], &[], &[]);
    let api = &warden.admin();
    let counts = || async move { api.execute("counter", Value::Null).await.1["result"].clone() };

    for event in ["ping", "ping", "pong", "done"] {
        publish(api, event, Value::Null).await;
    }
    assert!(wait_until(PATIENCE, || async move { counts().await["done"] == 1 }).await);
    assert_eq!(
        counts().await,
        json!({ "once": 1, "on": 2, "pong": 2, "done": 1 })
    );

    let (status, _) = api.execute("counter", json!({ "off": true })).await;
    assert_eq!(status, 200);
    for event in ["ping", "pong", "done"] {
        publish(api, event, Value::Null).await;
    }
    assert!(wait_until(PATIENCE, || async move { counts().await["done"] == 2 }).await);
    assert_eq!(
        counts().await,
        json!({ "once": 1, "on": 2, "pong": 2, "done": 2 })
    );
}

#[actix_rt::test]
async fn events_posted_by_the_operator_arrive_with_source_admin() {
    let listener = recorder("inbox", &["user:created"]);
    let warden = WardenProcess::start(&[("inbox.js", &listener)], &[], &[]);
    let api = &warden.admin();

    publish(api, "user:created", json!({ "id": 1, "tags": ["a"] })).await;
    wait_for_event(api, "inbox", "user:created").await;
    assert_eq!(
        records(api, "inbox").await,
        [json!({
            "pattern": "user:created", "event": "user:created", "source": "admin",
            "data": { "id": 1, "tags": ["a"] }
        })]
    );
}

#[actix_rt::test]
async fn warden_announces_loads_and_unloads_with_source_warden() {
    let watcher = recorder("watcher", &["plugin:*"]);
    let guest = r#"export default { metadata: { name: "guest", version: "2.3.4" } };"#;
    let warden = WardenProcess::start(
        &[("watcher.js", &watcher), ("guest.js", guest)],
        &[],
        &["--no-load-all"],
    );
    let api = &warden.admin();
    assert_eq!(api.load("watcher.js").await.0, 201);

    assert_eq!(api.load("guest.js").await.0, 201);
    assert_eq!(api.delete("/plugins/guest").await.0, 204);
    wait_for_event(api, "watcher", "plugin:unloaded").await;

    let about_guest: Vec<Value> = records(api, "watcher")
        .await
        .into_iter()
        .filter(|record| record["data"]["name"] == "guest")
        .collect();
    assert_eq!(
        about_guest,
        [
            json!({
                "pattern": "plugin:*", "event": "plugin:loaded", "source": "warden",
                "data": { "name": "guest", "version": "2.3.4" }
            }),
            json!({
                "pattern": "plugin:*", "event": "plugin:unloaded", "source": "warden",
                "data": { "name": "guest", "version": "2.3.4" }
            }),
        ]
    );
}

#[actix_rt::test]
async fn the_event_stream_sends_matching_events_as_server_sent_events() {
    let emitter = r#"
export default {
  metadata: { name: "emitter", version: "1.0.0" },
  async initialize(context) { this.context = context; },
  async execute(input) { this.context.eventBus.emit("greet:plugin", input); return null; },
};
"#;
    let warden = WardenProcess::start(&[("emitter.js", emitter)], &[], &[]);
    let api = &warden.admin();

    let mut stream = api.event_stream("greet:*").await;
    assert_eq!(stream.status, 200);
    assert!(
        stream.content_type.starts_with("text/event-stream"),
        "{}",
        stream.content_type
    );
    assert_eq!(
        stream.next_message(PATIENCE).await.as_deref(),
        Some(": stream open")
    );

    publish(api, "other:hello", json!({ "n": 0 })).await;
    publish(api, "greet:hello", json!({ "n": 1 })).await;
    let message = stream.next_event(PATIENCE).await.expect("no event arrived");
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "{message:?}");
    assert_eq!(lines[0], "event: greet:hello");
    let data: Value = serde_json::from_str(
        lines[1]
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not a data line: {message:?}")),
    )
    .unwrap();
    assert_eq!(data, json!({ "source": "admin", "data": { "n": 1 } }));

    assert_eq!(api.execute("emitter", json!([1, 2])).await.0, 200);
    let message = stream.next_event(PATIENCE).await.expect("no event arrived");
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.first(), Some(&"event: greet:plugin"), "{message:?}");
    let data: Value = serde_json::from_str(lines[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data, json!({ "source": "emitter", "data": [1, 2] }));
}
