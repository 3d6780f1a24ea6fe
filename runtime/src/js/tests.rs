//! Host limits of a JavaScript plugin, driven as a hostile plugin would, with a fake context.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{JsModule, JsPlugin};
use crate::events::{EventPattern, ListenerReach};
use crate::manifest::PluginManifest;
use crate::plugin::{
    CallTarget, Dependencies, DependencyInfo, Events, HostLimit, Plugin, PluginContext,
    PluginFuture, PluginLimits, Supervision,
};
use crate::{Error, Result};

/// What the fake context saw: emitted events, dependency calls and refusals.
#[derive(Default)]
struct Recorded {
    emitted: RefCell<Vec<(String, Value)>>,
    calls: RefCell<Vec<(CallTarget, Vec<Value>)>>,
    refusals: RefCell<Vec<(HostLimit, u64, String)>>,
    subscribed: RefCell<Vec<(String, ListenerReach)>>,
}

impl Recorded {
    fn refusals_of(&self, limit: HostLimit) -> Vec<(u64, String)> {
        self.refusals
            .borrow()
            .iter()
            .filter(|(refused, _, _)| *refused == limit)
            .map(|(_, count, detail)| (*count, detail.clone()))
            .collect()
    }
}

struct FakeEvents(Rc<Recorded>);

impl Events for FakeEvents {
    fn emit(&self, event: &str, data: Value) -> Result<()> {
        self.0.emitted.borrow_mut().push((event.to_string(), data));
        Ok(())
    }
    fn subscribe(&self, pattern: &EventPattern, reach: ListenerReach) -> Result<()> {
        self.0
            .subscribed
            .borrow_mut()
            .push((pattern.to_string(), reach));
        Ok(())
    }
    fn unsubscribe(&self, _: &EventPattern, _: ListenerReach) -> Result<()> {
        Ok(())
    }
}

/// One declared dependency, `dep`, exporting `lookup`.
struct FakeDependencies(Rc<Recorded>);

impl Dependencies for FakeDependencies {
    fn declared(&self) -> Vec<String> {
        vec!["dep".into()]
    }
    fn describe(&self, _: &str) -> Result<DependencyInfo> {
        Ok(DependencyInfo {
            manifest: PluginManifest::from_json(&json!({"name": "dep", "version": "1.0.0"}))?,
            exports: vec!["lookup".into()],
        })
    }
    fn call(&self, _: &str, target: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value> {
        self.0.calls.borrow_mut().push((target, arguments));
        Box::pin(async { Ok(json!("called")) })
    }
}

struct FakeSupervision(Rc<Recorded>);

impl Supervision for FakeSupervision {
    fn instance_failed(&self, _: Error) {}
    fn listener_failed(&self, _: &str, _: &Error) {}
    fn limit_refused(&self, limit: HostLimit, refusals: u64, detail: &str) {
        self.0
            .refusals
            .borrow_mut()
            .push((limit, refusals, detail.to_string()));
    }
}

fn context(recorded: &Rc<Recorded>) -> PluginContext {
    PluginContext {
        plugin: "hostile".into(),
        events: Rc::new(FakeEvents(recorded.clone())),
        dependencies: Rc::new(FakeDependencies(recorded.clone())),
        supervision: Rc::new(FakeSupervision(recorded.clone())),
        database: None,
        kafka: None,
        storage: None,
    }
}

/// Writes `hostile.js` (with `body` inside its plugin object) into a fresh plugins directory.
fn module(directory: &Path, body: &str) -> JsModule {
    let path = directory.join("hostile.js");
    std::fs::write(
        &path,
        format!(
            "export default {{ metadata: {{ name: 'hostile', version: '1.0.0', dependencies: ['dep'] }},\n\
             async initialize(context) {{ this.context = context; this.starts = (this.starts || 0) + 1; }},\n\
             {body} }};"
        ),
    )
    .unwrap();
    JsModule::read_in(directory, &path).unwrap()
}

/// Loads and initializes `body`'s plugin with `limits`; runs `test` on it inside a local set.
async fn with_plugin(
    body: &str,
    limits: PluginLimits,
    test: impl AsyncFnOnce(JsPlugin, Rc<Recorded>),
) {
    let directory = tempfile::tempdir().unwrap();
    let module = module(directory.path(), body);
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let plugin = JsPlugin::load(module.files, &module.entry, module.code, limits).unwrap();
            let recorded = Rc::new(Recorded::default());
            plugin.initialize(context(&recorded)).await.unwrap();
            test(plugin, recorded).await;
        })
        .await;
}

async fn execute(plugin: &JsPlugin, input: Value) -> Result<Value> {
    plugin.call(CallTarget::Execute, vec![input]).await
}

const TWO_MIB: usize = 2 * 1024 * 1024;

#[tokio::test]
async fn an_emit_over_the_message_limit_is_refused_and_never_delivered() {
    let body = "execute(size) { try { this.context.eventBus.emit('big', 'x'.repeat(size)); return 'sent'; } catch (error) { return error.name + ': ' + error.message; } }";
    with_plugin(body, PluginLimits::default(), async |plugin, recorded| {
        let refused = execute(&plugin, json!(TWO_MIB)).await.unwrap();
        let refused = refused.as_str().unwrap();
        assert!(refused.starts_with("MessageTooLargeError"), "{refused}");
        assert!(
            refused.contains("WARDEN_PLUGIN_MAX_MESSAGE_BYTES"),
            "{refused}"
        );
        assert!(recorded.emitted.borrow().is_empty(), "never delivered");
        assert_eq!(recorded.refusals_of(HostLimit::MessageBytes).len(), 1);
        // The limit counts the serialized JSON: the string's two quotes count too.
        let exactly = PluginLimits::default().max_message_bytes - 2;
        assert_eq!(
            execute(&plugin, json!(exactly)).await.unwrap(),
            json!("sent")
        );
        let over = execute(&plugin, json!(exactly + 1)).await.unwrap();
        assert!(over.as_str().unwrap().starts_with("MessageTooLargeError"));
        assert_eq!(recorded.emitted.borrow().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn dependency_call_arguments_over_the_limit_are_refused_before_they_are_sent() {
    let body = "async execute(size) { try { await this.context.getDependency('dep').lookup('x'.repeat(size)); return 'sent'; } catch (error) { return error.name; } }";
    with_plugin(body, PluginLimits::default(), async |plugin, recorded| {
        assert_eq!(
            execute(&plugin, json!(TWO_MIB)).await.unwrap(),
            json!("MessageTooLargeError")
        );
        assert!(recorded.calls.borrow().is_empty(), "never sent");
        assert_eq!(recorded.refusals_of(HostLimit::MessageBytes).len(), 1);
        assert_eq!(execute(&plugin, json!(10)).await.unwrap(), json!("sent"));
        assert_eq!(recorded.calls.borrow().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_dependency_handle_never_reaches_the_dependencys_lifecycle() {
    let body = "async execute() {\n\
        const dep = this.context.getDependency('dep');\n\
        const names = [];\n\
        for (const attempt of [() => dep.call('initialize', { eventBus: null }), () => dep.call('cleanup'), () => dep.initialize({}), () => dep.cleanup()]) {\n\
          try { await attempt(); names.push('reached'); } catch (error) { names.push(error.name); }\n\
        }\n\
        let frozen; try { dep.metadata.version = '9.9.9'; frozen = dep.metadata.version; } catch (error) { frozen = error.name; }\n\
        return { names, frozen, keys: Object.keys(dep).sort() };\n\
      }";
    with_plugin(body, PluginLimits::default(), async |plugin, recorded| {
        let outcome = execute(&plugin, json!(null)).await.unwrap();
        assert_eq!(outcome["names"], json!(vec!["MethodNotAllowedError"; 4]));
        assert_ne!(
            outcome["frozen"],
            json!("9.9.9"),
            "metadata cannot be changed"
        );
        assert_eq!(
            outcome["keys"],
            json!(["call", "execute", "lookup", "metadata"])
        );
        assert!(
            recorded.calls.borrow().is_empty(),
            "nothing reached the dependency"
        );
        assert_eq!(recorded.refusals_of(HostLimit::HostOnlyFunction).len(), 4);
    })
    .await;
}

#[tokio::test]
async fn a_plugin_refuses_lifecycle_and_unexported_targets_whoever_sends_them() {
    let body = "execute(input) { return this.starts; }, helper() { return 'helped'; }";
    with_plugin(body, PluginLimits::default(), async |plugin, recorded| {
        let method = |name: &str| CallTarget::Method(name.to_string());
        for lifecycle in ["initialize", "cleanup"] {
            let refused = plugin.call(method(lifecycle), vec![json!({})]).await;
            assert!(
                matches!(&refused, Err(Error::MethodNotAllowed { method, .. }) if method == lifecycle),
                "{refused:?}"
            );
        }
        for inherited in ["constructor", "toString", "hasOwnProperty", "__proto__", "metadata"] {
            let refused = plugin.call(method(inherited), vec![]).await;
            assert!(
                matches!(refused, Err(Error::MethodNotFound { .. })),
                "{inherited}: {refused:?}"
            );
        }
        assert_eq!(plugin.call(method("helper"), vec![]).await.unwrap(), json!("helped"));
        assert_eq!(
            plugin.call(method("execute"), vec![json!(null)]).await.unwrap(),
            json!(1),
            "initialize ran once, by the host"
        );
        assert_eq!(recorded.refusals_of(HostLimit::HostOnlyFunction).len(), 2);
    })
    .await;
}

#[tokio::test]
async fn call_arguments_over_the_limit_never_reach_the_plugins_code() {
    let body = "execute(input) { this.calls = (this.calls || 0) + 1; return this.calls; }";
    with_plugin(body, PluginLimits::default(), async |plugin, recorded| {
        let refused = execute(&plugin, json!("x".repeat(TWO_MIB))).await;
        assert!(
            matches!(refused, Err(Error::MessageTooLarge { .. })),
            "{refused:?}"
        );
        assert_eq!(execute(&plugin, json!(null)).await.unwrap(), json!(1));
        assert_eq!(recorded.refusals_of(HostLimit::MessageBytes).len(), 1);
    })
    .await;
}

#[tokio::test]
async fn timers_past_the_limit_throw_timer_limit_error_until_one_is_cleared() {
    let body = "execute() {\n\
        const ids = []; let error = null;\n\
        for (let n = 0; n < 10001; n++) { try { ids.push(setTimeout(() => {}, 1e9)); } catch (caught) { error = caught.name; } }\n\
        const refusedInterval = (() => { try { setInterval(() => {}, 1e9); return 'armed'; } catch (caught) { return caught.name; } })();\n\
        clearTimeout(ids[0]);\n\
        const again = (() => { try { setTimeout(() => {}, 1e9); return 'armed'; } catch (caught) { return caught.name; } })();\n\
        return { created: ids.length, error, refusedInterval, again };\n\
      }";
    with_plugin(body, PluginLimits::default(), async |plugin, recorded| {
        let outcome = execute(&plugin, json!(null)).await.unwrap();
        assert_eq!(
            outcome,
            json!({"created": 1000, "error": "TimerLimitError", "refusedInterval": "TimerLimitError", "again": "armed"})
        );
        assert_eq!(recorded.refusals_of(HostLimit::Timers).len(), 9_002);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_delay_interval_fires_at_most_every_four_milliseconds() {
    // The loop stops itself after 1,000 firings, so without the clamp the test fails instead of
    // hanging: paused time only moves when the runtime is idle.
    let body = "execute(command) { if (command === 'start') { this.fired = 0; const id = setInterval(() => { if (++this.fired >= 1000) clearInterval(id); }, 0); } return this.fired; }";
    with_plugin(body, PluginLimits::default(), async |plugin, _| {
        execute(&plugin, json!("start")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fired = execute(&plugin, json!("count")).await.unwrap();
        let fired = fired.as_u64().unwrap();
        assert!((20..=25).contains(&fired), "fired {fired} times in 100 ms");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_zero_delay_timeouts_is_clamped_from_the_fifth_level() {
    let body = "execute(command) { if (command === 'start') { this.fired = 0; const tick = () => { if (++this.fired < 1000) setTimeout(tick, 0); }; setTimeout(tick, 0); } return this.fired; }";
    with_plugin(body, PluginLimits::default(), async |plugin, _| {
        execute(&plugin, json!("start")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fired = execute(&plugin, json!("count")).await.unwrap();
        let fired = fired.as_u64().unwrap();
        // Levels 1 to 4 fire at once, then one every 4 ms.
        assert!((24..=30).contains(&fired), "fired {fired} times in 100 ms");
    })
    .await;
}

#[tokio::test]
async fn a_log_flood_is_dropped_without_throwing_and_the_drop_is_reported() {
    let limits = PluginLimits {
        log_bytes_per_second: 1_000,
        ..PluginLimits::default()
    };
    let body =
        "execute() { for (let n = 0; n < 100; n++) console.log('x'.repeat(100)); return 'done'; }";
    with_plugin(body, limits, async |plugin, recorded| {
        assert_eq!(execute(&plugin, json!(null)).await.unwrap(), json!("done"));
        assert!(
            recorded.refusals_of(HostLimit::LogBytes).is_empty(),
            "reported once the window closes"
        );
        plugin.dispose();
        let reported = recorded.refusals_of(HostLimit::LogBytes);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!(
            reported[0].0, 90,
            "ten lines of 100 bytes fit, ninety were dropped"
        );
        assert!(
            reported[0].1.contains("dropped 9000 bytes"),
            "{}",
            reported[0].1
        );
    })
    .await;
}

/// A plugins directory where `hostile.js` imports `specifier`.
fn importing(specifier: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let outside = tempfile::tempdir().unwrap();
    let root = outside.path().join("plugins");
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::write(root.join("lib/util.js"), "export const value = 'util';").unwrap();
    std::fs::write(
        root.join("sibling.js"),
        "export const secret = 's'; export default { metadata: { name: 'sibling', version: '1.0.0' } };",
    )
    .unwrap();
    std::fs::write(
        root.join("hostile.js"),
        format!("import * as imported from '{specifier}';\nexport default {{ metadata: {{ name: 'hostile', version: '1.0.0' }}, execute() {{ return Object.keys(imported); }} }};"),
    )
    .unwrap();
    (outside, root)
}

fn load_importing(root: &Path) -> Result<JsPlugin> {
    let module = JsModule::read_in(root, &root.join("hostile.js"))?;
    JsPlugin::load(
        module.files,
        &module.entry,
        module.code,
        PluginLimits::default(),
    )
}

#[cfg(unix)]
#[tokio::test]
async fn imports_through_links_out_of_the_directory_or_of_entry_files_refuse_the_load() {
    let (outside, root) = importing("./lib/util.js");
    assert!(load_importing(&root).is_ok(), "a library file imports fine");
    drop(outside);
    let etc_passwd = Path::new("/etc/passwd");
    // (what the plugin imports, where a link of that name leads; `None`: the file itself)
    for (specifier, link_to) in [
        ("./lib/passwd.js", Some(etc_passwd.to_path_buf())),
        ("./lib/sibling.js", Some("sibling.js".into())),
        ("./sibling.js", None),
    ] {
        let (outside, root) = importing(specifier);
        if let Some(target) = link_to {
            let target = if target.is_absolute() {
                target
            } else {
                root.join(target)
            };
            std::os::unix::fs::symlink(target, root.join(specifier)).unwrap();
        }
        let refused = load_importing(&root);
        assert!(
            matches!(&refused, Err(Error::InvalidPluginFormat { reason }) if reason.contains("cannot import")),
            "{specifier}: {:?}",
            refused.err()
        );
        drop(outside);
    }
}

#[cfg(unix)]
#[test]
fn an_entry_file_linked_from_outside_the_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let root = outside.path().join("plugins");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(outside.path().join("elsewhere.js"), "export default {};").unwrap();
    std::os::unix::fs::symlink(outside.path().join("elsewhere.js"), root.join("linked.js"))
        .unwrap();
    let refused = JsModule::read_in(&root, &root.join("linked.js"));
    assert!(
        matches!(&refused, Err(Error::InvalidPluginFormat { reason }) if reason.contains("outside the plugins directory")),
        "{refused:?}"
    );
}

/// A request as the public listener sends it to a route.
fn route_request(method: &str, params: Value, body: Option<(&str, &str, bool)>) -> Value {
    let (body_kind, body, is_json) = body.unwrap_or(("none", "", false));
    json!({
        "id": "req-1", "method": method, "path": "/x", "params": params,
        "query": {"q": ["1", "2"]}, "headers": {"accept": "*/*"},
        "bodyKind": body_kind, "body": if body_kind == "none" { Value::Null } else { json!(body) },
        "isJson": is_json,
    })
}

async fn call_route(plugin: &JsPlugin, key: &str, request: Value) -> Result<Value> {
    let index = plugin
        .describe()
        .routes
        .specs()
        .iter()
        .position(|route| route.key() == key)
        .unwrap_or_else(|| panic!("no route {key}"));
    let mut wire = plugin.call(CallTarget::Route(index), vec![request]).await?;
    // A JSON answer carries its JSON as text; tests compare it as a value.
    if wire["kind"] == "json" {
        if let Some(text) = wire.as_object_mut().and_then(|wire| wire.remove("text")) {
            wire["json"] = serde_json::from_str(text.as_str().unwrap_or("null")).unwrap();
        }
    }
    Ok(wire)
}

const ROUTES: &str = r#"
    routes: {
        "GET /items/:id": "getItem",
        "POST /items": async function (request) { return { status: 201, json: { got: request.json, me: this.metadata.name } }; },
        "PUT /bytes": (request) => ({ body: request.body, headers: { "content-type": "application/x-echo" } }),
        "GET /request": (request) => ({ json: { ...request, body: request.body, json: request.json === undefined ? "undefined" : request.json } }),
        "GET /nothing": () => undefined,
        "GET /row": () => ({ id: 1 }),
        "GET /text": () => "just text",
        "GET /status-only": () => ({ status: 202 }),
        "GET /teapot": () => { const error = new Error("short and stout"); error.status = 418; error.code = "teapot"; throw error; },
        "GET /plain-status": async () => { throw Object.assign(new Error("gone"), { status: 410 }); },
        "GET /secret-failure": () => { throw new Error("password=hunter2"); },
        "GET /bad-status": () => ({ status: 99, json: {} }),
    },
    async getItem(request) { return { json: { id: request.params.id, self: this.metadata.name } }; },
"#;

#[tokio::test]
async fn routes_are_described_in_the_plugins_order() {
    with_plugin(ROUTES, PluginLimits::default(), async |plugin, _| {
        let description = plugin.describe();
        let keys: Vec<&str> = description
            .routes
            .specs()
            .iter()
            .map(|route| route.key())
            .collect();
        assert_eq!(keys[0], "GET /items/:id");
        assert_eq!(keys[1], "POST /items");
        assert_eq!(keys.len(), 12);
        assert_eq!(
            description.routes.specs()[0].handler.as_deref(),
            Some("getItem")
        );
    })
    .await;
}

#[tokio::test]
async fn a_route_handler_gets_the_request_and_this_and_its_response_is_read() {
    with_plugin(ROUTES, PluginLimits::default(), async |plugin, _| {
        let item = call_route(&plugin, "GET /items/:id", route_request("GET", json!({"id": "7"}), None))
            .await
            .unwrap();
        assert_eq!(
            item,
            json!({"kind": "json", "status": 200, "headers": [], "json": {"id": "7", "self": "hostile"}})
        );
        let created = call_route(
            &plugin,
            "POST /items",
            route_request("POST", json!({}), Some(("text", r#"{"total": 5}"#, true))),
        )
        .await
        .unwrap();
        assert_eq!(created["status"], 201);
        assert_eq!(created["json"], json!({"got": {"total": 5}, "me": "hostile"}));
        let seen = call_route(&plugin, "GET /request", route_request("HEAD", json!({}), None))
            .await
            .unwrap();
        assert_eq!(seen["json"]["method"], "HEAD");
        assert_eq!(seen["json"]["id"], "req-1");
        assert_eq!(seen["json"]["query"], json!({"q": ["1", "2"]}));
        assert_eq!(seen["json"]["body"], Value::Null, "an empty body is null");
        assert_eq!(seen["json"]["json"], "undefined");
    })
    .await;
}

#[tokio::test]
async fn a_binary_body_arrives_as_a_uint8array_and_goes_back_as_bytes() {
    with_plugin(ROUTES, PluginLimits::default(), async |plugin, _| {
        let echoed = call_route(
            &plugin,
            "PUT /bytes",
            route_request("PUT", json!({}), Some(("bytes", "AAEC/w==", false))),
        )
        .await
        .unwrap();
        assert_eq!(echoed["kind"], "bytes");
        assert_eq!(echoed["base64"], "AAEC/w==");
        assert_eq!(
            echoed["headers"],
            json!([["content-type", "application/x-echo"]])
        );
    })
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_answered_400_before_the_handler_runs() {
    with_plugin(ROUTES, PluginLimits::default(), async |plugin, _| {
        let refused = call_route(
            &plugin,
            "POST /items",
            route_request("POST", json!({}), Some(("text", "{not json", true))),
        )
        .await
        .unwrap();
        assert_eq!(refused["kind"], "error");
        assert_eq!(refused["status"], 400);
        assert_eq!(refused["code"], "invalid_json");
    })
    .await;
}

#[tokio::test]
async fn what_is_not_a_response_is_invalid_and_nothing_answers_204() {
    with_plugin(ROUTES, PluginLimits::default(), async |plugin, _| {
        let request = || route_request("GET", json!({}), None);
        let nothing = call_route(&plugin, "GET /nothing", request())
            .await
            .unwrap();
        assert_eq!(
            (nothing["kind"].clone(), nothing["status"].clone()),
            (json!("empty"), json!(204))
        );
        let status_only = call_route(&plugin, "GET /status-only", request())
            .await
            .unwrap();
        assert_eq!(
            (status_only["kind"].clone(), status_only["status"].clone()),
            (json!("empty"), json!(202))
        );
        for key in ["GET /row", "GET /text", "GET /bad-status"] {
            let invalid = call_route(&plugin, key, request()).await.unwrap();
            assert_eq!(invalid["kind"], "invalid", "{key}: {invalid}");
            assert!(
                invalid["message"]
                    .as_str()
                    .unwrap()
                    .contains("return { json: … }"),
                "{key}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_thrown_status_is_an_answer_and_any_other_throw_fails_the_call() {
    with_plugin(ROUTES, PluginLimits::default(), async |plugin, _| {
        let request = || route_request("GET", json!({}), None);
        let teapot = call_route(&plugin, "GET /teapot", request()).await.unwrap();
        assert_eq!(
            teapot,
            json!({"kind": "error", "status": 418, "code": "teapot", "message": "short and stout"})
        );
        let gone = call_route(&plugin, "GET /plain-status", request())
            .await
            .unwrap();
        assert_eq!(
            (gone["status"].clone(), gone["code"].clone()),
            (json!(410), json!("handler_error"))
        );
        let failed = call_route(&plugin, "GET /secret-failure", request())
            .await
            .unwrap_err();
        assert!(
            failed.to_string().contains("hunter2"),
            "the host keeps the error for the log: {failed}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_route_index_the_plugin_does_not_have_is_refused() {
    with_plugin(ROUTES, PluginLimits::default(), async |plugin, _| {
        let error = plugin
            .call(
                CallTarget::Route(999),
                vec![route_request("GET", json!({}), None)],
            )
            .await
            .unwrap_err();
        assert!(matches!(error, Error::MethodNotFound { .. }), "{error:?}");
    })
    .await;
}

/// The error loading a module whose plugin object has `body` gives (it must not load).
fn load_refusal(body: &str) -> Error {
    let directory = tempfile::tempdir().unwrap();
    let module = module(directory.path(), body);
    JsPlugin::load(
        module.files,
        &module.entry,
        module.code,
        PluginLimits::default(),
    )
    .err()
    .unwrap_or_else(|| panic!("{body} loaded"))
}

#[test]
fn a_module_with_malformed_routes_does_not_load() {
    for (routes, expected) in [
        ("routes: [],", "'routes' must be an object"),
        (
            "routes: { 'GET /x': 'missing' },",
            "'missing' is not a function",
        ),
        ("routes: { 'GET /x': 42 },", "must be a function"),
        (
            "routes: { 'BREW /x': () => null },",
            "unknown method 'BREW'",
        ),
        (
            "routes: { 'GET /a/:x': () => null, 'GET /a/:y': () => null },",
            "same method and shape",
        ),
        (
            "routes: { 'GET /x': 'initialize' },",
            "'initialize' is not a function",
        ),
    ] {
        let error = load_refusal(routes);
        assert!(
            matches!(error, Error::InvalidPluginFormat { .. }),
            "{routes}: {error:?}"
        );
        assert!(error.to_string().contains(expected), "{routes}: {error}");
    }
}

#[test]
fn a_dependency_call_to_a_route_is_refused_by_the_host() {
    let host = super::host::HostShared::new("caller.js".into(), PluginLimits::default());
    let error = host
        .check_dependency_target("dep", &CallTarget::Route(0))
        .unwrap_err();
    assert!(matches!(error, Error::MethodNotAllowed { .. }), "{error:?}");
}

// Attacks of the review of the HTTP routes feature: a hostile plugin's handlers, and what the
// route entry must still answer for them.

/// Routes whose handlers return or throw what a hostile (or careless) plugin would.
const HOSTILE_ROUTES: &str = r#"
    routes: {
        "GET /ok": () => ({ json: "ok" }),
        "GET /thenable": () => ({ then(resolve) { resolve({ json: { real: true } }); } }),
        "GET /forging-thenable": () => ({
            then(resolve) {
                resolve({ json: "real" });
                return { kind: "text", status: 999, headers: [["x-forged", "1"]], text: "forged" };
            },
        }),
        "GET /thenable-throws-status": () => ({
            then() { throw Object.assign(new Error("brewing"), { status: 418, code: "teapot" }); },
        }),
        "GET /null-prototype-throw": () => { throw Object.create(null); },
        "GET /null-prototype-reject": async () => { throw Object.create(null); },
        "GET /unprintable-throw": () => { throw { toString() { throw new Error("nope"); } }; },
        "GET /json-function": () => ({ json: () => 1 }),
        "GET /json-symbol": () => ({ json: Symbol("s") }),
        "GET /json-bigint": () => ({ json: 10n }),
        "GET /status-string": () => ({ status: "201", json: {} }),
        "GET /status-fraction": () => ({ status: 200.5, json: {} }),
        "GET /status-nan": () => ({ status: NaN, json: {} }),
        "GET /getter-throws": () => ({ get json() { throw new Error("getter-secret"); } }),
        "GET /async-getter-throws": async () => ({ get status() { throw new Error("async-getter-secret"); } }),
        "GET /headers-getter-throws": () => ({ json: 1, headers: { get "x-a"() { throw new Error("header-secret"); } } }),
        "GET /deep-json": () => { let value = 0; for (let i = 0; i < 200; i++) value = [value]; return { json: value }; },
        "GET /subclass": () => { class Bytes extends Uint8Array {} return { body: new Bytes([1, 2, 3]) }; },
        "GET /view": () => ({ body: new Uint8Array([9, 1, 2, 3, 9]).subarray(1, 4) }),
        "GET /lying-bytes": () => ({ body: new Proxy(new Uint8Array([1, 2, 3]), { get: (target, key) => key === "length" ? 3 : 300 }) }),
    },
"#;

/// The wire form of route `key` for a plain `GET`.
async fn hostile_call(plugin: &JsPlugin, key: &str) -> Result<Value> {
    call_route(plugin, key, route_request("GET", json!({}), None)).await
}

#[tokio::test]
async fn a_thenable_a_handler_returns_is_awaited_like_a_promise() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            let answer = hostile_call(&plugin, "GET /thenable").await;
            assert_eq!(
                answer.ok(),
                Some(json!({"kind": "json", "status": 200, "headers": [], "json": {"real": true}})),
                "a thenable resolves to its value, as `await` would"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_thenable_cannot_forge_the_wire_form_of_the_response() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            let answer = hostile_call(&plugin, "GET /forging-thenable")
                .await
                .unwrap();
            assert_ne!(answer["status"], 999, "forged: {answer}");
            assert_eq!(
                answer,
                json!({"kind": "json", "status": 200, "headers": [], "json": "real"})
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_thenable_whose_then_throws_a_status_answers_that_status() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            let answer = hostile_call(&plugin, "GET /thenable-throws-status").await;
            assert_eq!(
                answer.ok(),
                Some(
                    json!({"kind": "error", "status": 418, "code": "teapot", "message": "brewing"})
                )
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_thrown_value_that_cannot_be_printed_fails_the_call_not_the_instance() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            for key in ["GET /null-prototype-throw", "GET /unprintable-throw"] {
                let error = hostile_call(&plugin, key).await.unwrap_err();
                assert!(
                    matches!(error, Error::Execution { .. }),
                    "{key}: a throw is the handler's failure, not an engine crash: {error:?}"
                );
                assert_eq!(
                    hostile_call(&plugin, "GET /ok").await.ok(),
                    Some(json!({"kind": "json", "status": 200, "headers": [], "json": "ok"})),
                    "{key}: the instance still serves"
                );
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_rejection_that_cannot_be_printed_fails_the_call_at_once() {
    let limits = PluginLimits {
        call_timeout_ms: 1_000,
        ..PluginLimits::default()
    };
    with_plugin(HOSTILE_ROUTES, limits, async |plugin, _| {
        let error = hostile_call(&plugin, "GET /null-prototype-reject")
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Execution { .. }),
            "a rejected handler fails its call, it does not leave it hanging: {error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_json_member_that_json_cannot_hold_is_not_a_response() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            for key in ["GET /json-function", "GET /json-symbol"] {
                let answer = hostile_call(&plugin, key).await;
                assert!(
                matches!(&answer, Ok(wire) if wire["kind"] == "invalid"),
                "{key}: `json` that serializes to nothing is like `json: undefined`: {answer:?}"
            );
            }
            // A BigInt throws in JSON.stringify: the call fails, and nothing answers 200.
            let bigint = hostile_call(&plugin, "GET /json-bigint").await;
            assert!(
                !matches!(&bigint, Ok(wire) if wire["kind"] == "json"),
                "{bigint:?}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_status_that_is_not_an_integer_is_not_a_response() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            for key in [
                "GET /status-string",
                "GET /status-fraction",
                "GET /status-nan",
            ] {
                let answer = hostile_call(&plugin, key).await.unwrap();
                assert_eq!(answer["kind"], "invalid", "{key}: {answer}");
            }
        },
    )
    .await;
}

#[tokio::test]
async fn getters_that_throw_fail_the_call_and_the_instance_keeps_serving() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            for (key, secret) in [
                ("GET /getter-throws", "getter-secret"),
                ("GET /async-getter-throws", "async-getter-secret"),
                ("GET /headers-getter-throws", "header-secret"),
            ] {
                let error = hostile_call(&plugin, key).await.unwrap_err();
                assert!(
                    matches!(&error, Error::Execution { message, .. } if message.contains(secret)),
                    "{key}: the host keeps the error for the log: {error:?}"
                );
                assert_eq!(
                    hostile_call(&plugin, "GET /ok").await.unwrap()["json"],
                    "ok"
                );
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_deeply_nested_json_response_is_sent() {
    // The prelude serializes `json` itself, so the host never parses the handler's value and
    // no depth limit of its own applies.
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            let index = plugin
                .describe()
                .routes
                .specs()
                .iter()
                .position(|route| route.key() == "GET /deep-json")
                .unwrap();
            let wire = plugin
                .call(
                    CallTarget::Route(index),
                    vec![route_request("GET", json!({}), None)],
                )
                .await
                .unwrap();
            assert_eq!(wire["kind"], "json");
            let text = wire["text"].as_str().unwrap();
            assert_eq!(
                text.chars().take_while(|c| *c == '[').count(),
                200,
                "{text}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn uint8array_subclasses_and_views_are_sent_as_their_own_bytes() {
    with_plugin(
        HOSTILE_ROUTES,
        PluginLimits::default(),
        async |plugin, _| {
            let subclass = hostile_call(&plugin, "GET /subclass").await.unwrap();
            assert_eq!(
                (subclass["kind"].clone(), subclass["base64"].clone()),
                (json!("bytes"), json!("AQID"))
            );
            let view = hostile_call(&plugin, "GET /view").await.unwrap();
            assert_eq!(view["base64"], "AQID", "only the view's bytes: {view}");
            // A proxy that lies about its bytes fails or answers, and never breaks the instance.
            let _ = hostile_call(&plugin, "GET /lying-bytes").await;
            assert_eq!(
                hostile_call(&plugin, "GET /ok").await.unwrap()["json"],
                "ok"
            );
        },
    )
    .await;
}

#[test]
fn a_routes_map_that_throws_when_read_is_an_invalid_plugin() {
    for routes in [
        "get routes() { throw new Error('routes getter'); },",
        "routes: new Proxy({}, { ownKeys() { throw new Error('ownKeys trap'); } }),",
        "routes: { get 'GET /x'() { throw new Error('handler getter'); } },",
    ] {
        let error = load_refusal(routes);
        assert!(
            matches!(error, Error::InvalidPluginFormat { .. }),
            "{routes}: a module whose routes cannot be read is refused as invalid, not as a crash: {error:?}"
        );
    }
}

#[test]
fn a_route_naming_a_lifecycle_or_inherited_function_is_refused() {
    for name in [
        "cleanup",
        "initialize",
        "constructor",
        "toString",
        "hasOwnProperty",
        "__proto__",
        "metadata",
        "routes",
    ] {
        let directory = tempfile::tempdir().unwrap();
        let module = module(
            directory.path(),
            &format!(
                "routes: {{ 'GET /x': '{name}' }}, async cleanup() {{}}, async execute() {{}},"
            ),
        );
        let error = JsPlugin::load(
            module.files,
            &module.entry,
            module.code,
            PluginLimits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("a route naming '{name}' loaded"));
        assert!(
            matches!(error, Error::InvalidPluginFormat { .. }),
            "{name}: {error:?}"
        );
    }
}

/// An event received from the cluster (or a local one, for `None`).
fn cluster_event(name: &str, reach: Option<ListenerReach>) -> std::sync::Arc<crate::Event> {
    std::sync::Arc::new(crate::Event {
        name: name.into(),
        source: "other".into(),
        data: Value::Null,
        data_json: "null".into(),
        reach,
        receipt: None,
    })
}

#[tokio::test]
async fn every_node_listeners_hear_only_their_reach_of_a_clusters_events() {
    let body = r#"
      heard: { once: [], every: [] },
      execute(input) {
        if (input === "listen") {
          const bus = this.context.eventBus;
          bus.on("x:*", (data, meta) => { this.heard.once.push(meta.event); });
          bus.on("x:*", (data, meta) => { this.heard.every.push(meta.event); }, { everyNode: true });
          try { bus.on("x:*", () => {}, "everyNode"); return "accepted"; } catch (error) { return error.name; }
        }
        return this.heard;
      }"#;
    with_plugin(body, PluginLimits::default(), async |plugin, recorded| {
        assert_eq!(
            execute(&plugin, json!("listen")).await.unwrap(),
            json!("TypeError"),
            "options that are not an object are refused"
        );
        assert_eq!(
            *recorded.subscribed.borrow(),
            [
                ("x:*".to_string(), ListenerReach::OncePerPlugin),
                ("x:*".to_string(), ListenerReach::EveryNode)
            ]
        );
        plugin.deliver_events(&[
            cluster_event("x:local", None),
            cluster_event("x:once", Some(ListenerReach::OncePerPlugin)),
            cluster_event("x:every", Some(ListenerReach::EveryNode)),
        ]);
        assert_eq!(
            execute(&plugin, json!("heard")).await.unwrap(),
            json!({ "once": ["x:local", "x:once"], "every": ["x:local", "x:every"] })
        );
    })
    .await;
}

#[tokio::test]
async fn a_tracked_delivery_resolves_once_the_listeners_promises_settle() {
    let body = r#"
      execute(input) {
        if (input === "listen") {
          this.context.eventBus.on("x:*", async () => {
            await new Promise((resolve) => { this.release = resolve; });
            this.done = true;
          });
          return null;
        }
        if (input === "release") { this.release(); return null; }
        return this.done === true;
      }"#;
    with_plugin(body, PluginLimits::default(), async |plugin, _| {
        execute(&plugin, json!("listen")).await.unwrap();
        let mut settling = plugin
            .deliver_events_and_wait(&[cluster_event("x:job", Some(ListenerReach::OncePerPlugin))]);
        assert!(
            futures::poll!(&mut settling).is_pending(),
            "the listener's promise is pending"
        );
        execute(&plugin, json!("release")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), settling)
            .await
            .expect("settles once the listener is done")
            .unwrap();
        assert_eq!(execute(&plugin, json!("done")).await.unwrap(), json!(true));
    })
    .await;
}

#[tokio::test]
async fn a_listener_promise_that_never_settles_holds_its_events_no_longer_than_the_call_limit() {
    let body = r#"
      execute() {
        this.context.eventBus.on("x:*", () => new Promise(() => {}));
        return null;
      }"#;
    let limits = PluginLimits {
        call_timeout_ms: 200,
        ..PluginLimits::default()
    };
    with_plugin(body, limits, async |plugin, _| {
        execute(&plugin, json!(null)).await.unwrap();
        let settling = plugin
            .deliver_events_and_wait(&[cluster_event("x:job", Some(ListenerReach::OncePerPlugin))]);
        let outcome = tokio::time::timeout(Duration::from_secs(5), settling)
            .await
            .expect("the wait ends at the call limit");
        assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    })
    .await;
}
