//! Actor tests: the manager, supervision and the broker driven with native and JS plugins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_runtime::events::EventPattern;
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
}

impl Plugin for TestPlugin {
    fn describe(&self) -> PluginDescription {
        self.description.clone()
    }

    fn initialize(&self, context: PluginContext) -> PluginFuture<()> {
        let subscribed = match &self.pattern {
            Some(pattern) => {
                EventPattern::parse(pattern).and_then(|pattern| context.events.subscribe(&pattern))
            }
            None => Ok(()),
        };
        // Emitting to itself must never come back.
        let emitted = context.events.emit("self:check", json!(null));
        Box::pin(async move { subscribed.and(emitted) })
    }

    fn call(&self, _: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value> {
        if arguments.first() == Some(&json!("panic")) {
            panic!("test panic");
        }
        let echoed = arguments.into_iter().next().unwrap_or(Value::Null);
        Box::pin(async move { Ok(echoed) })
    }

    fn deliver_events(&self, events: &[Arc<Event>]) {
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
}

impl TestFactory {
    fn new(manifest: Value, pattern: Option<&str>) -> Arc<Self> {
        Arc::new(TestFactory {
            manifest,
            pattern: pattern.map(str::to_string),
            received: Arc::default(),
            created: Arc::default(),
        })
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
            },
            pattern: self.pattern.clone(),
            received: self.received.clone(),
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

#[actix_rt::test]
async fn a_full_event_queue_drops_and_counts_without_blocking_the_emitter() {
    let directory = tempfile::tempdir().unwrap();
    let warden = Warden::start(ManagerConfig {
        plugins_dir: directory.path().to_path_buf(),
        limits: PluginLimits::default(),
        policy: SupervisionPolicy::default(),
        plugin_threads: 1,
        event_queue_capacity: 5,
        backends: Default::default(),
        store: None,
    });
    let listener = TestFactory::new(json!({"name": "slow", "version": "1.0.0"}), Some("tick"));
    warden.load_native(listener.clone()).await.unwrap();
    // One burst, without yielding: the broker gathers all 100 for one flush and has room for 5.
    let started = Instant::now();
    for n in 0..100 {
        warden.publish("tick", "admin", json!(n)).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "publishing never waits on listeners"
    );
    warden.publish("marker", "admin", json!(null)).unwrap();
    wait_until("the first batch arrives", async || {
        !listener.received.lock().unwrap().is_empty()
    })
    .await;
    let received: Vec<Value> = listener
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, data)| data.clone())
        .collect();
    assert_eq!(
        received,
        (0..5).map(|n| json!(n)).collect::<Vec<_>>(),
        "the queue's capacity, in order; the rest dropped"
    );
    // Once handled, the queue has room again.
    warden.publish("tick", "admin", json!("after")).unwrap();
    wait_until("a later event arrives", async || {
        listener.received.lock().unwrap().len() == 6
    })
    .await;
}
