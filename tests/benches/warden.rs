//! `just bench`: Warden's speed against DESIGN.md's targets, printed as a table.
//!
//! Everything runs in process on the real actor system (`Warden`), except the HTTP number, which
//! drives the release `warden` binary over loopback. Results are copied into BENCHMARKS.md.

use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{json, Value};
use warden_actors::manager::ManagerConfig;
use warden_actors::plugin_actor::SupervisionPolicy;
use warden_actors::system::Warden;
use warden_runtime::events::{EventPattern, ListenerReach};
use warden_runtime::manifest::PluginManifest;
use warden_runtime::{
    CallTarget, Error, Event, Plugin, PluginContext, PluginDescription, PluginFactory,
    PluginFuture, PluginLimits,
};

// Not `benches/cluster.rs`: cargo would take that for a bench target of its own.
#[path = "warden/cluster.rs"]
mod cluster;
#[path = "warden/gateways.rs"]
mod gateways;

fn main() {
    let system = actix_rt::System::new();
    system.block_on(async {
        println!("| measurement | result | target |");
        println!("| --- | --- | --- |");
        // `WARDEN_BENCH_ONLY=guard,gateways` runs only those groups (a quick look at one
        // change); the recorded runs in BENCHMARKS.md run everything.
        let only = std::env::var("WARDEN_BENCH_ONLY").unwrap_or_default();
        let runs = |group: &str| only.is_empty() || only.split(',').any(|name| name == group);
        if runs("core") {
            engine_creation(1_000);
            load_and_unload(1_000).await;
            execute_in_process(200_000, 64).await;
        }
        // `load` and `execute` run one row set of `core` alone (a profile of one path).
        if runs("load") {
            engine_creation(1_000);
            load_and_unload(1_000).await;
            idle_arbiter_round_trip(10_000).await;
        }
        if runs("execute") {
            execute_in_process(400_000, 64).await;
        }
        if runs("core") {
            for listeners in [1, 10, 100] {
                js_event_deliveries(listeners, 1_000_000, false).await;
            }
        }
        if runs("core") || runs("events") {
            js_event_deliveries(100, 10_000_000, true).await;
        }
        if runs("core") {
            native_event_deliveries(100, 5_000_000).await;
            restart_to_serving(10).await;
            execute_over_http(100_000, 32).await;
        }
        if runs("guard") {
            sql_guard_timing();
        }
        if runs("cluster") {
            cluster::load_convergence(200).await;
            for listeners in [1, 10] {
                cluster::event_crossing(400, 100_000, listeners).await;
            }
        }
        // `database` runs the PostgreSQL rows of `gateways` alone (a profile of one gateway).
        let (all_gateways, database) = (runs("gateways"), runs("database"));
        if !all_gateways && !database {
            return;
        }
        match gateways::stack() {
            Some(backends) => {
                for concurrency in [1, 32] {
                    gateways::postgres_point_query(&backends, concurrency).await;
                    if all_gateways {
                        gateways::kafka_produce(&backends, concurrency).await;
                        gateways::s3_put_get(&backends, concurrency).await;
                    }
                }
                gateways::postgres_transaction(&backends, 32).await;
            }
            None => report(
                "gateways vs bare clients",
                "skipped: run `just infra-up` first".into(),
                "≥ 0.90",
            ),
        }
    });
}

fn sql_guard_timing() {
    use warden_runtime::resources::ResourceGrants;
    use warden_runtime::sql_guard::guard_statement;
    let tables = ["users".to_string(), "orders".to_string()];
    let grants = ResourceGrants::resolve("shop", &tables, &[], &[], None).expect("grants");
    let statements = [
        ("point select", "SELECT id, name, email FROM users WHERE id = $1"),
        ("insert returning", "INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id"),
        (
            "join + CTE",
            "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
             SELECT u.name, count(*) AS n FROM recent r JOIN users u ON u.id = r.user_id GROUP BY u.name ORDER BY n DESC LIMIT 10",
        ),
    ];
    for (name, sql) in statements {
        let iterations = 20_000;
        let started = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(
                guard_statement("shop", std::hint::black_box(sql), &grants).expect("allowed"),
            );
        }
        report(
            &format!("SQL guard parse + check + rewrite, {name}"),
            format!(
                "{:.1} µs",
                started.elapsed().as_secs_f64() * 1e6 / iterations as f64
            ),
            "< 20 µs",
        );
    }
}

fn start(plugins_dir: &std::path::Path, event_queue_capacity: usize) -> Warden {
    Warden::start(ManagerConfig {
        plugins_dir: plugins_dir.to_path_buf(),
        limits: PluginLimits::default(),
        policy: SupervisionPolicy::default(),
        plugin_threads: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        event_queue_capacity,
        backends: Default::default(),
        store: None,
        cluster: None,
        node_states: None,
        cluster_events: None,
    })
}

fn report(what: &str, result: String, target: &str) {
    println!("| {what} | {result} | {target} |");
    let _ = std::io::stdout().flush();
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn mean(durations: &[Duration]) -> Duration {
    durations.iter().sum::<Duration>() / durations.len().max(1) as u32
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The engine's share of a load: a QuickJS runtime and context, the prelude, the module.
fn engine_creation(count: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("small.js");
    std::fs::write(
        &path,
        "export default { metadata: { name: 'small', version: '1.0.0' }, async execute(input) { return input; } };",
    )
    .expect("write plugin");
    let module = warden_runtime::js::JsModule::read(&path).expect("read");
    let started = Instant::now();
    let mut heap = 0;
    for _ in 0..count {
        let plugin = warden_runtime::js::JsPlugin::load(
            module.files.clone(),
            &module.entry,
            module.code.clone(),
            PluginLimits::default(),
        )
        .expect("load");
        heap += plugin.memory_used();
    }
    report(
        "of which engine: QuickJS runtime + context + prelude + module evaluation, no actors",
        format!(
            "{:.3} ms, heap {:.0} KiB",
            started.elapsed().as_secs_f64() * 1e3 / count as f64,
            heap as f64 / 1024.0 / count as f64
        ),
        "—",
    );
}

/// What an unload with a `cleanup()` waits for at the least: a message to an actor on an idle
/// arbiter thread and its answer, one at a time, so that each wakes the sleeping thread.
async fn idle_arbiter_round_trip(count: usize) {
    struct Echo;
    impl actix::Actor for Echo {
        type Context = actix::Context<Self>;
    }
    struct Ping;
    impl actix::Message for Ping {
        type Result = ();
    }
    impl actix::Handler<Ping> for Echo {
        type Result = ();
        fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
    }
    let arbiter = actix::Arbiter::new();
    let echo = <Echo as actix::Actor>::start_in_arbiter(&arbiter.handle(), |_| Echo);
    let started = Instant::now();
    for _ in 0..count {
        echo.send(Ping).await.expect("the echo actor answers");
    }
    report(
        "message to an actor on an idle arbiter and its answer, one at a time (the floor of an unload that waits for cleanup())",
        format!("{:.1} µs", started.elapsed().as_secs_f64() * 1e6 / count as f64),
        "—",
    );
    arbiter.stop();
}

async fn load_and_unload(count: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    for index in 0..count {
        std::fs::write(
            directory.path().join(format!("p{index:04}.js")),
            format!(
                "export default {{ metadata: {{ name: \"p{index:04}\", version: \"1.0.0\" }},\n\
                 async initialize(context) {{ this.context = context; this.calls = 0; }},\n\
                 async execute(input) {{ this.calls++; return input; }}{} }};\n",
                // The second half has a cleanup(), which an unload must wait for.
                if index >= count / 2 {
                    ",\n async cleanup() { this.calls = 0; }"
                } else {
                    ""
                }
            ),
        )
        .expect("write plugin");
    }
    let warden = start(directory.path(), 10_000);
    let before = resident_bytes();
    let mut loads = Vec::with_capacity(count);
    for index in 0..count {
        let started = Instant::now();
        warden
            .load(format!("p{index:04}.js"), None)
            .await
            .expect("load");
        loads.push(started.elapsed());
    }
    let after = resident_bytes();
    loads.sort();
    report(
        &format!("load + initialize, {count} small JS plugins, mean per plugin"),
        format!(
            "{:.3} ms (p50 {:.3} ms, p99 {:.3} ms)",
            mean(&loads).as_secs_f64() * 1e3,
            percentile(&loads, 0.5).as_secs_f64() * 1e3,
            percentile(&loads, 0.99).as_secs_f64() * 1e3
        ),
        "≤ 0.20 ms mean, p99 ≤ 1 ms",
    );
    report(
        "memory per idle JS plugin (process RSS growth / plugins)",
        format!(
            "{:.0} KiB",
            after.saturating_sub(before) as f64 / 1024.0 / count as f64
        ),
        "≤ 256 KiB",
    );
    let mut unloads = Vec::with_capacity(count);
    for index in 0..count {
        let started = Instant::now();
        warden
            .unload(format!("p{index:04}"), false)
            .await
            .expect("unload");
        unloads.push(started.elapsed());
    }
    let (without_cleanup, with_cleanup) = unloads.split_at(count / 2);
    for (what, unloads) in [("without", without_cleanup), ("with", with_cleanup)] {
        report(
            &format!("unload, mean per plugin, {what} a cleanup()"),
            format!("{:.1} µs", mean(unloads).as_secs_f64() * 1e6),
            "≤ 50 µs",
        );
    }
    // The same files again through a scan (`POST /plugins/scan`), the path the load target
    // names: the engines start in parallel on the plugin arbiters, admission is in order.
    let started = Instant::now();
    let scanned = warden.scan().await.expect("scan");
    let took = started.elapsed();
    assert_eq!(scanned.loaded.len(), count, "{:?}", scanned.failed);
    let scan_ms = took.as_secs_f64() * 1e3 / count as f64;
    report(
        &format!("scan (`POST /plugins/scan`) of the same {count} plugins, mean per plugin"),
        format!("{scan_ms:.3} ms"),
        "≤ 0.20 ms mean",
    );
    // Spaced apart, no earlier unload's work (the disposal that follows its answer) is still
    // running on the plugin threads, as for an operator's single unload.
    let mut spaced = Vec::new();
    for index in (count / 2..count).take(200) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        warden
            .unload(format!("p{index:04}"), false)
            .await
            .expect("unload");
        spaced.push(started.elapsed());
    }
    spaced.sort();
    report(
        "unload with a cleanup(), one at a time, 2 ms apart (plugin threads idle), mean",
        format!(
            "{:.1} µs (p99 {:.1} µs)",
            mean(&spaced).as_secs_f64() * 1e6,
            percentile(&spaced, 0.99).as_secs_f64() * 1e6
        ),
        "≤ 100 µs",
    );
    warden.shutdown().await;
    node_load_baseline(count, scan_ms);
}

/// The NestJS system's load path on Node 20 (`load/node_load.mjs`), run beside the scan on the
/// same machine when `node` is installed.
fn node_load_baseline(count: usize, scan_ms: f64) {
    let what = format!(
        "NestJS-style load on Node 20: `import()` + `initialize` with an EventEmitter, {count} plugins, mean per plugin"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/load/node_load.mjs");
    let output = std::process::Command::new("node")
        .arg(script)
        .arg(count.to_string())
        .output();
    let answer = match output {
        Ok(output) if output.status.success() => {
            serde_json::from_slice::<Value>(&output.stdout).ok()
        }
        _ => None,
    };
    let Some(node_ms) = answer.as_ref().and_then(|answer| answer["meanMs"].as_f64()) else {
        report(&what, "skipped: `node` is not installed".into(), "—");
        return;
    };
    report(
        &what,
        format!(
            "{node_ms:.3} ms (p99 {:.3} ms); Warden's scan is {:.2}× faster",
            answer
                .as_ref()
                .and_then(|answer| answer["p99Ms"].as_f64())
                .unwrap_or_default(),
            node_ms / scan_ms
        ),
        "Warden ≥ 2.75× faster",
    );
}

async fn execute_in_process(calls: usize, concurrency: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        directory.path().join("echo.js"),
        "export default { metadata: { name: 'echo', version: '1.0.0' }, async execute(input) { return { ok: true, n: input.n }; } };",
    )
    .expect("write plugin");
    let warden = start(directory.path(), 10_000);
    warden.load("echo.js".into(), None).await.expect("load");
    let started = Instant::now();
    let failures = futures::stream::iter(0..calls)
        .map(|n| {
            let warden = warden.clone();
            async move { warden.execute("echo", json!({ "n": n })).await.is_err() }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(failures, 0, "every call succeeds");
    report(
        &format!("`execute` round trip in process, JS plugin, small JSON, {concurrency} in flight"),
        format!("{:.0} calls/s", calls as f64 / elapsed.as_secs_f64()),
        "≥ 150,000/s",
    );
    warden.shutdown().await;
}

/// `burst`: one emitter publishes everything without yielding, against the default window of
/// 10,000 events in flight per listener (the rest waits in the broker's log); otherwise the
/// window holds every event and the emitter yields now and then (the steady state).
async fn js_event_deliveries(listeners: usize, deliveries: usize, burst: bool) {
    let events = deliveries / listeners;
    let directory = tempfile::tempdir().expect("tempdir");
    for index in 0..listeners {
        std::fs::write(
            directory.path().join(format!("l{index:03}.js")),
            format!(
                "let seen = 0;\nexport default {{ metadata: {{ name: 'l{index:03}', version: '1.0.0' }},\n\
                 async initialize(context) {{ context.eventBus.on('bench:tick', () => {{ seen++; if (seen === {events}) context.eventBus.emit('bench:done', {{}}); }}); }} }};\n"
            ),
        )
        .expect("write plugin");
    }
    let window = if burst {
        warden_actors::broker::DEFAULT_QUEUE_CAPACITY
    } else {
        events + 1
    };
    let warden = start(directory.path(), window);
    let report_loaded = warden.scan().await.expect("scan");
    assert_eq!(report_loaded.loaded.len(), listeners);
    let mut done = warden.stream("bench:done", listeners + 1).expect("stream");
    let started = Instant::now();
    for n in 0..events {
        warden
            .publish("bench:tick", "bench", json!(n))
            .expect("publish");
        // Yield now and then so the broker drains while we publish, as a real emitter would.
        if !burst && n % 4_096 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for _ in 0..listeners {
        tokio::time::timeout(Duration::from_secs(120), done.recv())
            .await
            .expect("every listener sees every event")
            .expect("stream open");
    }
    let elapsed = started.elapsed();
    report(
        &format!(
            "event deliveries into JS listeners, 1 emitter → {listeners}{}",
            if burst {
                format!(", one burst of {events} events, none dropped")
            } else {
                String::new()
            }
        ),
        format!(
            "{:.0} deliveries/s",
            (events * listeners) as f64 / elapsed.as_secs_f64()
        ),
        if listeners == 100 {
            "≥ 1,000,000/s"
        } else {
            "—"
        },
    );
    warden.shutdown().await;
}

/// A native listener that counts what it receives.
struct CountingListener {
    description: PluginDescription,
    seen: Arc<AtomicUsize>,
}

impl Plugin for CountingListener {
    fn describe(&self) -> PluginDescription {
        self.description.clone()
    }

    fn initialize(&self, context: PluginContext) -> PluginFuture<()> {
        let subscribed = EventPattern::parse("bench:tick").and_then(|pattern| {
            context
                .events
                .subscribe(&pattern, ListenerReach::OncePerPlugin)
        });
        Box::pin(async move { subscribed })
    }

    fn call(&self, _: CallTarget, _: Vec<Value>) -> PluginFuture<Value> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn deliver_events(&self, events: &[Arc<Event>]) {
        self.seen.fetch_add(events.len(), Ordering::Relaxed);
    }

    fn cleanup(&self) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn dispose(&self) {}
}

struct CountingFactory {
    name: String,
    seen: Arc<AtomicUsize>,
    crash_on_call: bool,
}

impl PluginFactory for CountingFactory {
    fn create(&self) -> warden_runtime::Result<Box<dyn Plugin>> {
        let manifest =
            PluginManifest::from_json(&json!({ "name": self.name, "version": "1.0.0" }))?;
        let description = PluginDescription {
            manifest,
            exports: Vec::new(),
            executable: true,
            has_cleanup: false,
            routes: Default::default(),
            migrations: Default::default(),
        };
        if self.crash_on_call {
            return Ok(Box::new(CrashingPlugin {
                description,
                crashed: Rc::new(std::cell::Cell::new(false)),
            }));
        }
        Ok(Box::new(CountingListener {
            description,
            seen: self.seen.clone(),
        }))
    }

    fn kind(&self) -> &'static str {
        "native"
    }
}

async fn native_event_deliveries(listeners: usize, deliveries: usize) {
    let events = deliveries / listeners;
    let directory = tempfile::tempdir().expect("tempdir");
    let warden = start(directory.path(), events + 1);
    let seen = Arc::new(AtomicUsize::new(0));
    for index in 0..listeners {
        let factory = CountingFactory {
            name: format!("n{index:03}"),
            seen: seen.clone(),
            crash_on_call: false,
        };
        warden
            .load_native(Arc::new(factory))
            .await
            .expect("load native");
    }
    let started = Instant::now();
    for n in 0..events {
        warden
            .publish("bench:tick", "bench", json!(n))
            .expect("publish");
        if n % 4_096 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let total = events * listeners;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(
        seen.load(Ordering::Relaxed),
        total,
        "every native listener sees every event"
    );
    report(
        &format!("event deliveries into native listeners, 1 emitter → {listeners}"),
        format!("{:.0} deliveries/s", total as f64 / elapsed.as_secs_f64()),
        "≥ 5,000,000/s",
    );
    warden.shutdown().await;
}

/// A native plugin whose first call panics; its restarted instance serves normally.
struct CrashingPlugin {
    description: PluginDescription,
    crashed: Rc<std::cell::Cell<bool>>,
}

impl Plugin for CrashingPlugin {
    fn describe(&self) -> PluginDescription {
        self.description.clone()
    }

    fn initialize(&self, _: PluginContext) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn call(&self, _: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value> {
        if arguments.first() == Some(&json!("crash")) {
            self.crashed.set(true);
            panic!("crash requested by the benchmark");
        }
        Box::pin(async { Ok(json!("ok")) })
    }

    fn deliver_events(&self, _: &[Arc<Event>]) {}

    fn cleanup(&self) -> PluginFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn dispose(&self) {}
}

async fn restart_to_serving(samples: usize) {
    let directory = tempfile::tempdir().expect("tempdir");
    let warden = start(directory.path(), 10_000);
    let backoff = SupervisionPolicy::default().initial_backoff;
    let mut times = Vec::with_capacity(samples);
    // Panics are expected here; keep their messages out of the table.
    std::panic::set_hook(Box::new(|_| {}));
    for index in 0..samples {
        let name = format!("crash{index:02}");
        let factory = CountingFactory {
            name: name.clone(),
            seen: Arc::new(AtomicUsize::new(0)),
            crash_on_call: true,
        };
        warden.load_native(Arc::new(factory)).await.expect("load");
        let started = Instant::now();
        let crashed = warden.execute(&name, json!("crash")).await;
        assert!(
            matches!(
                crashed,
                Err(warden_actors::Error::Plugin(Error::Crashed { .. }))
            ),
            "{crashed:?}"
        );
        loop {
            if warden.execute(&name, json!("ping")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(started.elapsed().saturating_sub(backoff));
    }
    let _ = std::panic::take_hook();
    times.sort();
    report(
        "restart after a crash to serving again, minus the 50 ms backoff (median of 10)",
        format!("{:.2} ms", percentile(&times, 0.5).as_secs_f64() * 1e3),
        "< 50 ms",
    );
    warden.shutdown().await;
}

async fn execute_over_http(calls: usize, concurrency: usize) {
    let binary = std::env::var("WARDEN_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/warden").to_string()
    });
    if !std::path::Path::new(&binary).exists() {
        report(
            "`execute` over HTTP",
            format!("skipped: build {binary} first (`just bench` does)"),
            "≥ 20,000/s",
        );
        return;
    }
    // The harness starts the binary `WARDEN_BIN` names: the release build here.
    std::env::set_var("WARDEN_BIN", &binary);
    let mut server = warden_tests::WardenProcess::start(
        &[(
            "echo.js",
            "export default { metadata: { name: 'echo', version: '1.0.0' }, async execute(input) { return { ok: true, n: input.n }; } };",
        )],
        &[],
        &[],
    );
    let url = server.url("/plugins/echo/execute");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let started = Instant::now();
    let failures = futures::stream::iter(0..calls)
        .map(|n| {
            let request = client
                .post(&url)
                .insert_header((
                    "Authorization",
                    format!("Bearer {}", warden_tests::ADMIN_TOKEN),
                ))
                .send_json(&json!({ "n": n }));
            async move {
                match request.await {
                    Ok(mut response) => {
                        !response.status().is_success() || response.body().await.is_err()
                    }
                    Err(_) => true,
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let elapsed = started.elapsed();
    server.terminate();
    assert_eq!(failures, 0, "every HTTP call succeeds");
    report(
        &format!("`execute` over HTTP (loopback, keep-alive, {concurrency} in flight, client in the same 2 cores)"),
        format!("{:.0} calls/s", calls as f64 / elapsed.as_secs_f64()),
        "≥ 20,000/s",
    );
}
