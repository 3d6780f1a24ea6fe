//! Limits and supervision: a plugin's runaway loop, heap exhaustion, failing `initialize` or
//! throwing listener is contained, restarted with `initialize` called again, and marked `failed`
//! after too many restarts, while other plugins keep serving.

use serde_json::{json, Value};
use warden_tests::{assert_error, wait_until, Admin, WardenProcess, PATIENCE};

/// A plugin that spins forever on `{"spin": true}` and logs each `initialize`.
const SPINNER: &str = r#"
export default {
  metadata: { name: "spinner", version: "1.0.0" },
  async initialize() { console.log("INIT:spinner"); },
  async execute(input) {
    if (input && input.spin) { while (true) {} }
    return { alive: true };
  },
};
"#;

/// A plugin that is never at fault.
const CALM: &str = r#"
export default {
  metadata: { name: "calm", version: "1.0.0" },
  async execute(input) { return { calm: input }; },
};
"#;

/// Waits until `name` reports `state` with `restarts` restarts; answers its last info.
async fn wait_for_state(api: &Admin, name: &str, state: &str, restarts: u64) -> Value {
    let reached = wait_until(PATIENCE, || async move {
        let info = api.plugin(name).await;
        info["state"] == state && info["restarts"] == restarts
    })
    .await;
    let info = api.plugin(name).await;
    assert!(
        reached,
        "{name} did not reach state {state} with {restarts} restarts: {info}"
    );
    info
}

#[actix_rt::test]
async fn a_runaway_loop_times_out_and_the_plugin_restarts() {
    let warden = WardenProcess::start(
        &[("spinner.js", SPINNER), ("calm.js", CALM)],
        &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "300")],
        &[],
    );
    let api = &warden.admin();
    assert_eq!(warden.log_count("INIT:spinner"), 1);

    let answer = api.execute("spinner", json!({ "spin": true })).await;
    assert_error(&answer, 504, "timeout");

    wait_for_state(api, "spinner", "running", 1).await;
    assert_eq!(
        api.execute("spinner", json!({})).await,
        (200, json!({ "result": { "alive": true } }))
    );
    assert!(
        wait_until(PATIENCE, || async { warden.log_count("INIT:spinner") == 2 }).await,
        "initialize ran again on restart"
    );

    // The other plugin never noticed.
    assert_eq!(
        api.execute("calm", json!(1)).await,
        (200, json!({ "result": { "calm": 1 } }))
    );
    let calm = api.plugin("calm").await;
    assert_eq!(
        (&calm["state"], &calm["restarts"]),
        (&json!("running"), &json!(0))
    );
}

#[actix_rt::test]
async fn heap_exhaustion_restarts_the_plugin_and_spares_the_others() {
    let hog = r#"
export default {
  metadata: { name: "hog", version: "1.0.0" },
  async initialize() { console.log("INIT:hog"); },
  async execute(input) {
    if (!input || !input.hoard) return "modest";
    const hoard = [];
    while (true) hoard.push(new Array(100000).fill(hoard.length));
  },
};
"#;
    let warden = WardenProcess::start(
        &[("hog.js", hog), ("calm.js", CALM)],
        &[("WARDEN_PLUGIN_MEMORY_MB", "8")],
        &[],
    );
    let api = &warden.admin();

    let (status, body) = api.execute("hog", json!({ "hoard": true })).await;
    assert!(
        status >= 400 && body["error"]["code"].is_string(),
        "heap exhaustion is an error: {status} {body}"
    );
    assert_eq!(
        api.execute("calm", json!(2)).await,
        (200, json!({ "result": { "calm": 2 } }))
    );

    wait_for_state(api, "hog", "running", 1).await;
    assert_eq!(
        api.execute("hog", json!({})).await,
        (200, json!({ "result": "modest" }))
    );
    assert!(
        wait_until(PATIENCE, || async { warden.log_count("INIT:hog") == 2 }).await,
        "initialize ran again on restart"
    );
    let calm = api.plugin("calm").await;
    assert_eq!(
        (&calm["state"], &calm["restarts"]),
        (&json!("running"), &json!(0))
    );
}

#[actix_rt::test]
async fn too_many_restarts_mark_the_plugin_failed_until_it_is_reloaded() {
    let warden = WardenProcess::start(
        &[("spinner.js", SPINNER), ("calm.js", CALM)],
        &[
            ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "300"),
            ("WARDEN_PLUGIN_MAX_RESTARTS", "1"),
        ],
        &[],
    );
    let api = &warden.admin();

    assert_error(
        &api.execute("spinner", json!({ "spin": true })).await,
        504,
        "timeout",
    );
    wait_for_state(api, "spinner", "running", 1).await;

    // The second crash within the window is one restart too many.
    assert_error(
        &api.execute("spinner", json!({ "spin": true })).await,
        504,
        "timeout",
    );
    let failed = wait_until(PATIENCE, || async move {
        api.plugin("spinner").await["state"] == "failed"
    })
    .await;
    assert!(failed, "not failed: {}", api.plugin("spinner").await);
    assert_error(
        &api.execute("spinner", json!({})).await,
        503,
        "plugin_unavailable",
    );
    // It stays failed: no restart is scheduled.
    assert_eq!(api.plugin("spinner").await["state"], "failed");
    assert_eq!(
        api.execute("calm", json!(3)).await,
        (200, json!({ "result": { "calm": 3 } }))
    );

    let (status, reloaded) = api.post("/plugins/spinner/reload", None).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["state"], "running");
    assert_eq!(
        api.execute("spinner", json!({})).await,
        (200, json!({ "result": { "alive": true } }))
    );
}

#[actix_rt::test]
async fn a_plugin_whose_initialize_throws_is_not_loaded() {
    let fragile = r#"
class ConfigMissingError extends Error {
  constructor(message) { super(message); this.name = "ConfigMissingError"; }
}
export default {
  metadata: { name: "fragile", version: "1.0.0" },
  async initialize() { throw new ConfigMissingError("no configuration for fragile"); },
  async execute() { return "unreachable"; },
};
"#;
    let warden = WardenProcess::start(
        &[("fragile.js", fragile), ("calm.js", CALM)],
        &[],
        &["--no-load-all"],
    );
    let api = &warden.admin();
    assert_eq!(api.load("calm.js").await.0, 201);
    let before = api.get("/plugins").await;

    let answer = api.load("fragile.js").await;
    assert_error(&answer, 422, "initialize_failed");
    assert_eq!(answer.1["error"]["name"], "ConfigMissingError");
    assert_error(&api.get("/plugins/fragile").await, 404, "plugin_not_found");
    assert_error(
        &api.execute("fragile", json!({})).await,
        404,
        "plugin_not_found",
    );
    assert_eq!(api.get("/plugins").await, before);
}

#[actix_rt::test]
async fn an_initialize_that_never_finishes_times_out_as_initialize_failed() {
    let stuck = r#"
export default {
  metadata: { name: "stuck", version: "1.0.0" },
  async initialize() { await new Promise(() => {}); },
};
"#;
    let warden = WardenProcess::start(
        &[("stuck.js", stuck)],
        &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "300")],
        &["--no-load-all"],
    );
    let api = &warden.admin();
    assert_error(&api.load("stuck.js").await, 422, "initialize_failed");
    assert_eq!(api.get("/plugins").await, (200, json!({ "plugins": [] })));
}

#[actix_rt::test]
async fn a_throwing_listener_does_not_stop_the_plugin() {
    let listener = r#"
const received = [];
export default {
  metadata: { name: "listener", version: "1.0.0" },
  async initialize(context) {
    context.eventBus.on("job:*", (data, { event }) => {
      if (data.fail) throw new Error("listener failed on " + event);
      received.push(event);
    });
    context.eventBus.on("async:*", async (data, { event }) => {
      if (data.fail) throw new Error("async listener failed on " + event);
      received.push(event);
    });
  },
  async execute() { return received.slice(); },
};
"#;
    let warden = WardenProcess::start(&[("listener.js", listener)], &[], &[]);
    let api = &warden.admin();

    for (event, fail) in [
        ("job:first", true),
        ("async:first", true),
        ("job:second", false),
        ("async:second", false),
    ] {
        let (status, body) = api
            .post(
                "/events",
                Some(json!({ "event": event, "data": { "fail": fail } })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let delivered = wait_until(PATIENCE, || async move {
        api.execute("listener", json!(null)).await.1["result"]
            == json!(["job:second", "async:second"])
    })
    .await;
    assert!(
        delivered,
        "events after the failures were not delivered: {:?}",
        api.execute("listener", json!(null)).await
    );
    let info = api.plugin("listener").await;
    assert_eq!(
        (&info["state"], &info["restarts"]),
        (&json!("running"), &json!(0))
    );
    assert!(
        warden
            .wait_for_log("listener failed on job:first", PATIENCE)
            .await,
        "the listener's error is logged"
    );
}

#[actix_rt::test]
async fn warden_announces_restarts_and_failures() {
    let watcher = r#"
const seen = [];
export default {
  metadata: { name: "watcher", version: "1.0.0" },
  async initialize(context) {
    for (const pattern of ["plugin:restarted", "plugin:failed"]) {
      context.eventBus.on(pattern, (data, { event, source }) => seen.push({ event, source, data }));
    }
  },
  async execute() { return seen; },
};
"#;
    let warden = WardenProcess::start(
        &[("spinner.js", SPINNER), ("watcher.js", watcher)],
        &[
            ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "300"),
            ("WARDEN_PLUGIN_MAX_RESTARTS", "1"),
        ],
        &[],
    );
    let api = &warden.admin();
    let seen = || async move {
        let (status, body) = api.execute("watcher", Value::Null).await;
        assert_eq!(status, 200, "{body}");
        body["result"].as_array().cloned().unwrap_or_default()
    };

    assert_error(
        &api.execute("spinner", json!({ "spin": true })).await,
        504,
        "timeout",
    );
    assert!(
        wait_until(PATIENCE, || async move { !seen().await.is_empty() }).await,
        "no plugin:restarted event"
    );
    assert_eq!(
        seen().await,
        [json!({
            "event": "plugin:restarted", "source": "warden",
            "data": { "name": "spinner", "version": "1.0.0" }
        })]
    );
    wait_for_state(api, "spinner", "running", 1).await;

    assert_error(
        &api.execute("spinner", json!({ "spin": true })).await,
        504,
        "timeout",
    );
    assert!(
        wait_until(PATIENCE, || async move { seen().await.len() == 2 }).await,
        "no plugin:failed event: {:?}",
        seen().await
    );
    let failed = &seen().await[1];
    assert_eq!(failed["event"], "plugin:failed");
    assert_eq!(failed["source"], "warden");
    assert_eq!(failed["data"]["name"], "spinner");
    assert_eq!(failed["data"]["version"], "1.0.0");
    assert!(
        failed["data"]["reason"]
            .as_str()
            .is_none_or(|reason| !reason.is_empty()),
        "{failed}"
    );
}
