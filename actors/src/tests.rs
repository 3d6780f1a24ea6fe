//! Actor tests: the manager, supervision and the broker driven with native and JS plugins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_runtime::events::{EventPattern, ListenerReach};
use warden_runtime::manifest::PluginManifest;
use warden_runtime::{
    CallTarget, Error as RuntimeError, Event, Plugin, PluginContext, PluginDescription,
    PluginFactory, PluginFuture, PluginLimits,
};

use crate::manager::ManagerConfig;
use crate::plugin_actor::{PluginState, SupervisionPolicy};
use crate::system::Warden;
use crate::Error;

/// A native test plugin: records events, panics on `"panic"`, echoes anything else.
struct TestPlugin {
    description: PluginDescription,
    pattern: Option<String>,
    received: Arc<Mutex<Vec<(String, String, Value)>>>,
    /// Blocks its thread this long in its first delivery: a listener that makes no progress.
    stall_first_delivery: Option<Duration>,
    stalled_once: std::cell::Cell<bool>,
    events: std::cell::RefCell<Option<std::rc::Rc<dyn warden_runtime::Events>>>,
}

impl Plugin for TestPlugin {
    fn describe(&self) -> PluginDescription {
        self.description.clone()
    }

    fn initialize(&self, context: PluginContext) -> PluginFuture<()> {
        let subscribed = match &self.pattern {
            Some(pattern) => EventPattern::parse(pattern).and_then(|pattern| {
                context
                    .events
                    .subscribe(&pattern, ListenerReach::OncePerPlugin)
            }),
            None => Ok(()),
        };
        // Emitting to itself must never come back.
        let emitted = context.events.emit("self:check", json!(null));
        *self.events.borrow_mut() = Some(context.events.clone());
        Box::pin(async move { subscribed.and(emitted) })
    }

    fn call(&self, _: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value> {
        if arguments.first() == Some(&json!("panic")) {
            panic!("test panic");
        }
        // `{"emit": n, "bytes": b}` emits `n` events of `b` bytes of data and answers how many
        // were emitted, or the name of the error that stopped it.
        if let Some(count) = arguments
            .first()
            .and_then(|argument| argument["emit"].as_u64())
        {
            let bytes = arguments[0]["bytes"].as_u64().unwrap_or(1) as usize;
            let events = self.events.borrow().clone().expect("initialized");
            let answer = (0..count)
                .find_map(|n| {
                    events
                        .emit("burst", json!({ "n": n, "pad": "x".repeat(bytes) }))
                        .err()
                        .map(|error| json!({ "emitted": n, "error": error.js_name() }))
                })
                .unwrap_or(json!({ "emitted": count }));
            return Box::pin(async move { Ok(answer) });
        }
        let echoed = arguments.into_iter().next().unwrap_or(Value::Null);
        Box::pin(async move { Ok(echoed) })
    }

    fn deliver_events(&self, events: &[Arc<Event>]) {
        if let Some(stall) = self.stall_first_delivery {
            if !self.stalled_once.replace(true) {
                std::thread::sleep(stall);
            }
        }
        let mut received = self.received.lock().unwrap();
        for event in events {
            received.push((event.name.clone(), event.source.clone(), event.data.clone()));
        }
    }

    fn cleanup(&self) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn dispose(&self) {}
}

struct TestFactory {
    manifest: Value,
    pattern: Option<String>,
    received: Arc<Mutex<Vec<(String, String, Value)>>>,
    created: Arc<AtomicUsize>,
    stall_first_delivery: Option<Duration>,
}

impl TestFactory {
    fn new(manifest: Value, pattern: Option<&str>) -> Arc<Self> {
        Arc::new(TestFactory {
            manifest,
            pattern: pattern.map(str::to_string),
            received: Arc::default(),
            created: Arc::default(),
            stall_first_delivery: None,
        })
    }

    /// A listener that blocks its thread for `stall` in its first delivery.
    fn stalling(manifest: Value, pattern: &str, stall: Duration) -> Arc<Self> {
        Arc::new(TestFactory {
            manifest,
            pattern: Some(pattern.to_string()),
            received: Arc::default(),
            created: Arc::default(),
            stall_first_delivery: Some(stall),
        })
    }

    fn received_data(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, data)| data.clone())
            .collect()
    }
}

impl PluginFactory for TestFactory {
    fn create(&self) -> warden_runtime::Result<Box<dyn Plugin>> {
        self.created.fetch_add(1, Ordering::SeqCst);
        let manifest = PluginManifest::from_json(&self.manifest)?;
        Ok(Box::new(TestPlugin {
            description: PluginDescription {
                manifest,
                exports: Vec::new(),
                executable: true,
                has_cleanup: true,
                routes: Default::default(),
                migrations: Default::default(),
            },
            pattern: self.pattern.clone(),
            received: self.received.clone(),
            stall_first_delivery: self.stall_first_delivery,
            stalled_once: std::cell::Cell::new(false),
            events: std::cell::RefCell::new(None),
        }))
    }

    fn kind(&self) -> &'static str {
        "native"
    }
}

fn start(max_restarts: u32, call_timeout_ms: u64) -> (Warden, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let warden = Warden::start(ManagerConfig {
        plugins_dir: directory.path().to_path_buf(),
        limits: PluginLimits {
            memory_limit_mb: 16,
            call_timeout_ms,
            ..PluginLimits::default()
        },
        policy: SupervisionPolicy {
            max_restarts,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        plugin_threads: 2,
        event_queue_capacity: 100_000,
        backends: Default::default(),
        store: None,
        cluster: None,
        node_states: None,
        cluster_events: None,
    });
    (warden, directory)
}

async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn dependencies_are_validated_and_unload_respects_dependents() {
    let (warden, _directory) = start(5, 1_000);
    let missing = warden
        .load_native(TestFactory::new(
            json!({"name": "b", "version": "1.0.0", "dependencies": ["a"]}),
            None,
        ))
        .await;
    assert!(
        matches!(
            missing,
            Err(Error::Plugin(RuntimeError::DependencyNotFound { .. }))
        ),
        "{missing:?}"
    );
    warden
        .load_native(TestFactory::new(
            json!({"name": "a", "version": "1.0.0"}),
            None,
        ))
        .await
        .unwrap();
    let pinned = warden
        .load_native(TestFactory::new(
            json!({"name": "b", "version": "1.0.0", "dependencies": ["a@2.0.0"]}),
            None,
        ))
        .await;
    assert!(
        matches!(
            pinned,
            Err(Error::Plugin(
                RuntimeError::DependencyVersionMismatch { .. }
            ))
        ),
        "{pinned:?}"
    );
    warden
        .load_native(TestFactory::new(
            json!({"name": "b", "version": "1.0.0", "dependencies": ["a@1.0.0"]}),
            None,
        ))
        .await
        .unwrap();
    let refused = warden.unload("a".into(), false).await;
    assert!(
        matches!(&refused, Err(Error::HasDependents { dependents, .. }) if dependents == &["b".to_string()]),
        "{refused:?}"
    );
    assert_eq!(
        warden.list().await.unwrap().len(),
        2,
        "a refused unload changes nothing"
    );
    warden.unload("a".into(), true).await.unwrap();
    assert!(warden.list().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_panicking_native_plugin_is_restarted_and_then_marked_failed() {
    let (warden, _directory) = start(1, 1_000);
    let factory = TestFactory::new(json!({"name": "fragile", "version": "1.0.0"}), None);
    warden.load_native(factory.clone()).await.unwrap();
    let crashed = warden.execute("fragile", json!("panic")).await;
    assert!(
        matches!(crashed, Err(Error::Plugin(RuntimeError::Crashed { .. }))),
        "{crashed:?}"
    );
    wait_until("the plugin serves again", async || {
        warden.execute("fragile", json!(1)).await.is_ok()
    })
    .await;
    let info = warden.get("fragile".into()).await.unwrap();
    assert_eq!((info.state, info.restarts), (PluginState::Running, 1));
    assert_eq!(
        factory.created.load(Ordering::SeqCst),
        2,
        "a fresh instance after the crash"
    );
    let _ = warden.execute("fragile", json!("panic")).await;
    wait_until("the plugin is marked failed", async || {
        warden.get("fragile".into()).await.unwrap().state == PluginState::Failed
    })
    .await;
    let unavailable = warden.execute("fragile", json!(1)).await;
    assert!(
        matches!(
            unavailable,
            Err(Error::Plugin(RuntimeError::Unavailable { .. }))
        ),
        "{unavailable:?}"
    );
    warden.reload("fragile".into(), None).await.unwrap();
    assert_eq!(warden.execute("fragile", json!(7)).await.unwrap(), json!(7));
}

#[actix_rt::test]
async fn events_arrive_in_order_matching_patterns_and_never_back_to_the_emitter() {
    let (warden, _directory) = start(5, 1_000);
    let listener = TestFactory::new(
        json!({"name": "listener", "version": "1.0.0"}),
        Some("order:*"),
    );
    let emitter = TestFactory::new(json!({"name": "emitter", "version": "1.0.0"}), Some("**"));
    warden.load_native(listener.clone()).await.unwrap();
    warden.load_native(emitter.clone()).await.unwrap();
    for n in 0..500 {
        warden
            .publish("order:created", "emitter", json!(n))
            .unwrap();
    }
    warden
        .publish("order:created:late", "admin", json!("deep"))
        .unwrap();
    warden
        .publish("user:created", "admin", json!("other"))
        .unwrap();
    wait_until("all 500 events arrive", async || {
        listener.received.lock().unwrap().len() >= 500
    })
    .await;
    let received = listener.received.lock().unwrap().clone();
    let numbers: Vec<Value> = received.iter().map(|(_, _, data)| data.clone()).collect();
    assert_eq!(
        numbers,
        (0..500).map(|n| json!(n)).collect::<Vec<_>>(),
        "in emission order, nothing else"
    );
    let emitter_saw = emitter.received.lock().unwrap().clone();
    assert!(
        emitter_saw.iter().all(|(_, source, _)| source != "emitter"),
        "no self-delivery"
    );
    assert!(
        emitter_saw
            .iter()
            .any(|(name, _, _)| name == "plugin:loaded"),
        "lifecycle events reach `**`"
    );
}

#[actix_rt::test]
async fn a_runaway_javascript_call_times_out_and_the_plugin_restarts() {
    let (warden, directory) = start(5, 200);
    std::fs::write(
        directory.path().join("spin.js"),
        "let starts = 0;\nexport default { metadata: { name: 'spin', version: '1.0.0' }, initialize() { starts++; },\n execute(input) { if (input === 'spin') { while (true) {} } return starts; } };",
    )
    .unwrap();
    warden.load("spin.js".into(), None).await.unwrap();
    let timed_out = warden.execute("spin", json!("spin")).await;
    assert!(
        matches!(timed_out, Err(Error::Plugin(RuntimeError::Timeout { .. }))),
        "{timed_out:?}"
    );
    wait_until("the plugin serves again", async || {
        warden.execute("spin", json!(0)).await.is_ok()
    })
    .await;
    // A fresh engine evaluated the module again, so its module state restarted from zero.
    assert_eq!(warden.execute("spin", json!(0)).await.unwrap(), json!(1));
    assert_eq!(warden.get("spin".into()).await.unwrap().restarts, 1);
}

fn start_with_window(
    window: usize,
    call_timeout_ms: u64,
    plugin_threads: usize,
) -> (Warden, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let warden = Warden::start(ManagerConfig {
        plugins_dir: directory.path().to_path_buf(),
        limits: PluginLimits {
            memory_limit_mb: 16,
            call_timeout_ms,
            ..PluginLimits::default()
        },
        policy: SupervisionPolicy::default(),
        plugin_threads,
        event_queue_capacity: window,
        backends: Default::default(),
        store: None,
        cluster: None,
        node_states: None,
        cluster_events: None,
    });
    (warden, directory)
}

#[actix_rt::test]
async fn a_burst_past_the_window_reaches_the_listener_whole_and_in_order_without_blocking_the_emitter(
) {
    let (warden, _directory) = start_with_window(5, 5_000, 1);
    let listener = TestFactory::new(json!({"name": "slow", "version": "1.0.0"}), Some("tick"));
    warden.load_native(listener.clone()).await.unwrap();
    // One burst, without yielding: twenty times the listener's window of events in flight.
    let started = Instant::now();
    for n in 0..100 {
        warden.publish("tick", "admin", json!(n)).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "publishing never waits on listeners"
    );
    warden.publish("tick", "admin", json!("after")).unwrap();
    wait_until("the whole burst arrives", async || {
        listener.received.lock().unwrap().len() == 101
    })
    .await;
    let mut expected: Vec<Value> = (0..100).map(|n| json!(n)).collect();
    expected.push(json!("after"));
    assert_eq!(listener.received_data(), expected, "every event, in order");
}

#[actix_rt::test]
async fn only_a_listener_stalled_past_the_call_limit_loses_events_and_it_is_told_once() {
    // Two threads: the stalled listener blocks one, the healthy one runs on the other.
    let (warden, _directory) = start_with_window(5, 100, 2);
    let stalled = TestFactory::stalling(
        json!({"name": "stuck", "version": "1.0.0"}),
        "tick",
        Duration::from_millis(600),
    );
    let healthy = TestFactory::new(json!({"name": "healthy", "version": "1.0.0"}), Some("tick"));
    warden.load_native(stalled.clone()).await.unwrap();
    warden.load_native(healthy.clone()).await.unwrap();
    for n in 0..100 {
        warden.publish("tick", "admin", json!(n)).unwrap();
    }
    wait_until("the healthy listener has the whole burst", async || {
        healthy.received.lock().unwrap().len() == 100
    })
    .await;
    assert_eq!(
        healthy.received_data(),
        (0..100).map(|n| json!(n)).collect::<Vec<_>>()
    );
    wait_until("the stalled listener is told", async || {
        stalled
            .received
            .lock()
            .unwrap()
            .iter()
            .any(|(name, _, _)| name == "plugin:events-dropped")
    })
    .await;
    let received = stalled.received.lock().unwrap().clone();
    let (delivered, notices): (Vec<_>, Vec<_>) =
        received.iter().partition(|(name, _, _)| name == "tick");
    let delivered: Vec<Value> = delivered.iter().map(|(_, _, data)| data.clone()).collect();
    assert_eq!(
        delivered,
        (0..delivered.len()).map(|n| json!(n)).collect::<Vec<_>>(),
        "what it got before stalling came in order"
    );
    assert!(
        delivered.len() <= 10,
        "at most its window before and after: {delivered:?}"
    );
    assert_eq!(notices.len(), 1, "told once per episode: {received:?}");
    let (_, source, data) = notices[0];
    assert_eq!(source, "warden");
    assert_eq!(data["name"], "stuck");
    assert_eq!(
        data["dropped"].as_u64().unwrap() as usize + delivered.len(),
        100,
        "every event was delivered or counted as dropped: {data}"
    );
    // Making progress again ends the episode: new events reach it.
    warden.publish("tick", "admin", json!("later")).unwrap();
    wait_until("a later event reaches the recovered listener", async || {
        stalled
            .received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, data)| *data == json!("later"))
    })
    .await;
}

#[actix_rt::test]
async fn an_emitter_whose_listeners_lag_pays_with_its_own_budget() {
    let (warden, _directory) = start_with_window(5, 2_000, 2);
    let stalled = TestFactory::stalling(
        json!({"name": "lagging", "version": "1.0.0"}),
        "burst",
        Duration::from_millis(1_500),
    );
    let emitter = TestFactory::new(json!({"name": "emitter", "version": "1.0.0"}), None);
    warden.load_native(stalled.clone()).await.unwrap();
    warden.load_native(emitter.clone()).await.unwrap();
    // 512 KiB events (about 1.5 MiB held each) against a 16 MiB heap budget: a call that emits
    // 1,000 of them stops with the typed error once its undelivered events fill the budget.
    let answer = warden
        .execute("emitter", json!({ "emit": 1000, "bytes": 512 * 1024 }))
        .await
        .unwrap();
    assert_eq!(answer["error"], "EventBacklogFullError", "{answer}");
    let emitted = answer["emitted"].as_u64().unwrap();
    assert!((5..100).contains(&emitted), "{answer}");
    // The listener recovers; what was emitted drains, and the emitter emits again.
    wait_until("the emitter's backlog drains", async || {
        warden
            .execute("emitter", json!({ "emit": 1, "bytes": 1 }))
            .await
            .is_ok_and(|answer| answer == json!({ "emitted": 1 }))
    })
    .await;
}

/// Writes a JavaScript plugin file into the plugins directory.
fn write_plugin(directory: &tempfile::TempDir, file: &str, code: &str) {
    let path = directory.path().join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, code).unwrap();
}

const TWO_MIB: usize = 2 * 1024 * 1024;

#[actix_rt::test]
async fn plugins_named_admin_warden_or_shared_are_refused_at_load() {
    let (warden, directory) = start(5, 1_000);
    for name in ["admin", "warden", "shared"] {
        write_plugin(
            &directory,
            &format!("{name}.js"),
            &format!("export default {{ metadata: {{ name: '{name}', version: '1.0.0' }} }};"),
        );
        let refused = warden.load(format!("{name}.js"), None).await;
        assert!(
            matches!(&refused, Err(Error::Plugin(RuntimeError::InvalidName { reason })) if reason.contains("reserved")),
            "{name}: {refused:?}"
        );
    }
    assert!(warden.list().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_two_mebibyte_emit_is_refused_and_never_reaches_a_listener() {
    let (warden, directory) = start(5, 2_000);
    write_plugin(
        &directory,
        "listener.js",
        "const seen = []; export default { metadata: { name: 'listener', version: '1.0.0' },\n\
         initialize(context) { context.eventBus.on('blob:*', (data, { event }) => seen.push(event)); },\n\
         execute() { return seen; } };",
    );
    write_plugin(
        &directory,
        "emitter.js",
        "export default { metadata: { name: 'emitter', version: '1.0.0' },\n\
         initialize(context) { this.context = context; },\n\
         execute(size) {\n\
           let refused = null;\n\
           try { this.context.eventBus.emit('blob:big', 'x'.repeat(size)); } catch (error) { refused = error.name; }\n\
           this.context.eventBus.emit('blob:marker', 'small');\n\
           return refused; } };",
    );
    warden.load("listener.js".into(), None).await.unwrap();
    warden.load("emitter.js".into(), None).await.unwrap();
    assert_eq!(
        warden.execute("emitter", json!(TWO_MIB)).await.unwrap(),
        json!("MessageTooLargeError")
    );
    wait_until("the marker after the refused event arrives", async || {
        warden.execute("listener", json!(null)).await.unwrap() != json!([])
    })
    .await;
    assert_eq!(
        warden.execute("listener", json!(null)).await.unwrap(),
        json!(["blob:marker"]),
        "the big event was never delivered"
    );
    // The admin API's own messages meet the same limit.
    let published = warden.publish("blob:admin", "admin", json!("x".repeat(TWO_MIB)));
    assert!(
        matches!(
            published,
            Err(Error::Plugin(RuntimeError::MessageTooLarge { .. }))
        ),
        "{published:?}"
    );
    let executed = warden.execute("listener", json!("x".repeat(TWO_MIB))).await;
    assert!(
        matches!(
            executed,
            Err(Error::Plugin(RuntimeError::MessageTooLarge { .. }))
        ),
        "{executed:?}"
    );
}

const VICTIM: &str = "let starts = 0; let cleanups = 0;\n\
    export default { metadata: { name: 'victim', version: '1.0.0' },\n\
    initialize() { starts++; }, cleanup() { cleanups++; },\n\
    execute(input) { return input; },\n\
    counts() { return { starts, cleanups }; } };";

#[actix_rt::test]
async fn a_dependency_handle_cannot_reach_initialize_or_cleanup() {
    let (warden, directory) = start(5, 1_000);
    write_plugin(&directory, "victim.js", VICTIM);
    write_plugin(
        &directory,
        "attacker.js",
        "export default { metadata: { name: 'attacker', version: '1.0.0', dependencies: ['victim'] },\n\
         initialize(context) { this.context = context; },\n\
         async execute() {\n\
           const victim = this.context.getDependency('victim');\n\
           const names = [];\n\
           for (const attempt of [() => victim.call('initialize', {}), () => victim.call('cleanup'), () => victim.initialize({}), () => victim.cleanup(), () => victim.call('constructor')]) {\n\
             try { await attempt(); names.push('reached'); } catch (error) { names.push(error.name); }\n\
           }\n\
           return { names, counts: await victim.counts(), echoed: await victim.execute('ok') }; } };",
    );
    warden.load("victim.js".into(), None).await.unwrap();
    warden.load("attacker.js".into(), None).await.unwrap();
    assert_eq!(
        warden.execute("attacker", json!(null)).await.unwrap(),
        json!({
            "names": ["MethodNotAllowedError", "MethodNotAllowedError", "MethodNotAllowedError", "MethodNotAllowedError", "MethodNotFoundError"],
            "counts": {"starts": 1, "cleanups": 0},
            "echoed": "ok",
        })
    );
}

/// A native plugin that calls its dependency `victim` directly through its context, with no
/// prelude in between: `execute("initialize")` asks for the victim's `initialize`.
struct HostilePlugin {
    description: PluginDescription,
    context: std::cell::RefCell<Option<PluginContext>>,
}

impl Plugin for HostilePlugin {
    fn describe(&self) -> PluginDescription {
        self.description.clone()
    }

    fn initialize(&self, context: PluginContext) -> PluginFuture<()> {
        *self.context.borrow_mut() = Some(context);
        Box::pin(async { Ok(()) })
    }

    fn call(&self, _: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value> {
        let method = arguments
            .first()
            .and_then(Value::as_str)
            .unwrap_or("initialize")
            .to_string();
        match self.context.borrow().as_ref() {
            Some(context) => {
                context
                    .dependencies
                    .call("victim", CallTarget::Method(method), vec![json!({})])
            }
            None => Box::pin(async { Ok(Value::Null) }),
        }
    }

    fn deliver_events(&self, _: &[Arc<Event>]) {}

    fn cleanup(&self) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn dispose(&self) {}
}

struct HostileFactory;

impl PluginFactory for HostileFactory {
    fn create(&self) -> warden_runtime::Result<Box<dyn Plugin>> {
        let manifest = PluginManifest::from_json(
            &json!({"name": "hostile", "version": "1.0.0", "dependencies": ["victim"]}),
        )?;
        Ok(Box::new(HostilePlugin {
            description: PluginDescription {
                manifest,
                exports: Vec::new(),
                executable: true,
                has_cleanup: false,
                routes: Default::default(),
                migrations: Default::default(),
            },
            context: Default::default(),
        }))
    }

    fn kind(&self) -> &'static str {
        "native"
    }
}

#[actix_rt::test]
async fn a_javascript_plugin_refuses_its_lifecycle_to_a_caller_that_bypasses_the_prelude() {
    let (warden, directory) = start(5, 1_000);
    write_plugin(&directory, "victim.js", VICTIM);
    warden.load("victim.js".into(), None).await.unwrap();
    warden.load_native(Arc::new(HostileFactory)).await.unwrap();
    for method in ["initialize", "cleanup"] {
        let refused = warden.execute("hostile", json!(method)).await;
        assert!(
            matches!(&refused, Err(Error::Plugin(RuntimeError::MethodNotAllowed { method: refused, .. })) if refused == method),
            "{method}: {refused:?}"
        );
    }
    let refused = warden.execute("hostile", json!("hasOwnProperty")).await;
    assert!(
        matches!(
            refused,
            Err(Error::Plugin(RuntimeError::MethodNotFound { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(
        warden.execute("hostile", json!("counts")).await.unwrap(),
        json!({"starts": 1, "cleanups": 0})
    );
}

#[actix_rt::test]
async fn ten_thousand_and_one_timers_stop_at_the_limit_with_timer_limit_error() {
    let (warden, directory) = start(5, 2_000);
    write_plugin(
        &directory,
        "timers.js",
        "export default { metadata: { name: 'timers', version: '1.0.0' },\n\
         execute() {\n\
           let created = 0, refused = null;\n\
           for (let n = 0; n < 10001; n++) { try { setTimeout(() => {}, 1e9); created++; } catch (error) { refused = error.name; } }\n\
           return { created, refused }; } };",
    );
    warden.load("timers.js".into(), None).await.unwrap();
    assert_eq!(
        warden.execute("timers", json!(null)).await.unwrap(),
        json!({"created": PluginLimits::default().max_timers, "refused": "TimerLimitError"})
    );
    assert_eq!(
        warden.get("timers".into()).await.unwrap().state,
        PluginState::Running
    );
}

#[actix_rt::test]
async fn a_zero_delay_interval_fires_at_most_every_four_milliseconds_and_calls_still_answer() {
    let (warden, directory) = start(5, 1_000);
    write_plugin(
        &directory,
        "spinner.js",
        "let fired = 0; export default { metadata: { name: 'spinner', version: '1.0.0' },\n\
         execute(command) { if (command === 'start') setInterval(() => { fired++; }, 0); return fired; } };",
    );
    warden.load("spinner.js".into(), None).await.unwrap();
    let started = Instant::now();
    warden.execute("spinner", json!("start")).await.unwrap();
    wait_until("the interval fired ten times", async || {
        warden
            .execute("spinner", json!(null))
            .await
            .unwrap()
            .as_u64()
            >= Some(10)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(36),
        "ten firings took only {:?}",
        started.elapsed()
    );
}

#[actix_rt::test]
async fn a_log_flood_is_dropped_and_console_log_never_throws() {
    let (warden, directory) = start(5, 2_000);
    write_plugin(
        &directory,
        "chatty.js",
        "export default { metadata: { name: 'chatty', version: '1.0.0' },\n\
         execute() { const line = 'x'.repeat(100000); for (let n = 0; n < 100; n++) { console.log(line); console.error(line); } return 'done'; } };",
    );
    warden.load("chatty.js".into(), None).await.unwrap();
    assert_eq!(
        warden.execute("chatty", json!(null)).await.unwrap(),
        json!("done")
    );
    assert_eq!(
        warden.get("chatty".into()).await.unwrap().state,
        PluginState::Running
    );
}

#[cfg(unix)]
#[actix_rt::test]
async fn imports_through_links_to_etc_passwd_or_to_a_sibling_plugin_refuse_the_load() {
    let (warden, directory) = start(5, 1_000);
    let root = directory.path();
    write_plugin(
        &directory,
        "sibling.js",
        "export const secret = 's'; export default { metadata: { name: 'sibling', version: '1.0.0' } };",
    );
    write_plugin(&directory, "lib/util.js", "export const value = 'util';");
    std::os::unix::fs::symlink("/etc/passwd", root.join("lib/passwd.js")).unwrap();
    std::os::unix::fs::symlink(root.join("sibling.js"), root.join("lib/sibling.js")).unwrap();
    for (file, specifier) in [
        ("passwd.js", "./lib/passwd.js"),
        ("direct.js", "./sibling.js"),
        ("linked.js", "./lib/sibling.js"),
    ] {
        let name = file.trim_end_matches(".js");
        write_plugin(
            &directory,
            file,
            &format!("import * as stolen from '{specifier}';\nexport default {{ metadata: {{ name: '{name}', version: '1.0.0' }}, execute() {{ return Object.keys(stolen); }} }};"),
        );
        let refused = warden.load(file.into(), None).await;
        assert!(
            matches!(&refused, Err(Error::Plugin(RuntimeError::InvalidPluginFormat { reason })) if reason.contains("cannot import")),
            "{file}: {refused:?}"
        );
    }
    // An entry file that is a link out of the directory is refused as well.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("elsewhere.js"),
        "export default { metadata: { name: 'elsewhere', version: '1.0.0' } };",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("elsewhere.js"),
        root.join("elsewhere.js"),
    )
    .unwrap();
    let refused = warden.load("elsewhere.js".into(), None).await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest { .. })),
        "{refused:?}"
    );
    // Library files import fine, at the top too when they declare no plugin.
    write_plugin(&directory, "shared-code.js", "export const top = 'top';");
    write_plugin(
        &directory,
        "fine.js",
        "import { value } from './lib/util.js'; import { top } from './shared-code.js';\nexport default { metadata: { name: 'fine', version: '1.0.0' }, execute() { return [value, top]; } };",
    );
    warden.load("fine.js".into(), None).await.unwrap();
    assert_eq!(
        warden.execute("fine", json!(null)).await.unwrap(),
        json!(["util", "top"])
    );
}

#[actix_rt::test]
async fn a_name_prefix_that_held_resources_stays_claimed_after_unload() {
    let (warden, _directory) = start(5, 1_000);
    let load = |manifest: Value| warden.load_native(TestFactory::new(manifest, None));
    load(json!({"name": "shop", "version": "1.0.0", "allowedTables": ["users"]}))
        .await
        .unwrap();
    load(json!({"name": "notes", "version": "1.0.0"}))
        .await
        .unwrap();
    let overlapping = load(json!({"name": "shop_x", "version": "1.0.0"})).await;
    assert!(
        matches!(&overlapping, Err(Error::Plugin(RuntimeError::InvalidName { reason })) if reason.contains("loaded plugin 'shop'")),
        "{overlapping:?}"
    );
    let names = |list: Vec<crate::manager::PluginInfo>| -> Vec<String> {
        list.into_iter()
            .map(|info| info.description.manifest.name)
            .collect()
    };
    assert_eq!(
        names(warden.list().await.unwrap()),
        ["notes", "shop"],
        "a refused load changes nothing"
    );

    warden.unload("shop".into(), false).await.unwrap();
    warden.unload("notes".into(), false).await.unwrap();
    let still_claimed = load(json!({"name": "shop_x", "version": "1.0.0"})).await;
    assert!(
        matches!(&still_claimed, Err(Error::Plugin(RuntimeError::InvalidName { reason })) if reason.contains("stays claimed")),
        "{still_claimed:?}"
    );
    // A plugin that held nothing claims nothing.
    load(json!({"name": "notes_v2", "version": "1.0.0"}))
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_refused_second_load_of_a_name_keeps_the_running_version() {
    let (warden, _directory) = start(5, 1_000);
    let first = TestFactory::new(json!({"name": "a", "version": "1.0.0"}), None);
    warden.load_native(first.clone()).await.unwrap();
    warden
        .load_native(TestFactory::new(
            json!({"name": "b", "version": "1.0.0", "dependencies": ["a@1.0.0"]}),
            None,
        ))
        .await
        .unwrap();
    // Loading another `a` is refused (a reload is how a version is replaced), and `a` keeps
    // running as it was, its dependent with it.
    let incompatible = TestFactory::new(json!({"name": "a", "version": "2.0.0"}), None);
    let refused = warden.load_native(incompatible).await;
    assert!(
        matches!(refused, Err(Error::AlreadyLoaded { .. })),
        "{refused:?}"
    );
    let info = warden.get("a".into()).await.unwrap();
    assert_eq!(info.description.manifest.version.to_string(), "1.0.0");
    assert_eq!(info.state, PluginState::Running);
    assert_eq!(
        warden.execute("a", json!("still here")).await.unwrap(),
        json!("still here")
    );
    assert_eq!(warden.get("a".into()).await.unwrap().dependents, ["b"]);
}
