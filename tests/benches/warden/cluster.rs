//! The cluster's figures: how long a load through one node takes to reach another, and how
//! fast events cross from a plugin on one node to a listener on another.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{one_key_per_partition, WardenProcess};

use super::{percentile, report};

/// Two nodes of a cluster of their own, the release binary on the local stack; `None` (the
/// row reported as skipped) when either is missing.
fn two_release_nodes(
    what: &str,
    target: &str,
    env: &[(&str, &str)],
) -> Option<(WardenProcess, WardenProcess)> {
    let binary = std::env::var("WARDEN_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/warden").to_string()
    });
    let stack = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local.env"));
    if !std::path::Path::new(&binary).exists() || !stack.exists() {
        report(
            what,
            "skipped: needs the release build and `just infra-up`".into(),
            target,
        );
        return None;
    }
    std::env::set_var("WARDEN_BIN", &binary);
    let cluster = format!("bench-{}-{}", std::process::id(), what.len());
    let node = |id: &str| {
        WardenProcess::start_with_stack(
            &[],
            env,
            &["--cluster", &cluster, "--node-id", id, "--no-load-all"],
        )
    };
    Some((node("bench-a"), node("bench-b")))
}

/// Measures, for `samples` loads through node A, the time from A's `201` to the first `200` of
/// `GET /plugins/{name}` on node B (polled every millisecond). Both are the release binary on
/// the local stack, in one cluster of their own.
pub async fn load_convergence(samples: usize) {
    let what = "cluster: a load reaches another node";
    let target = "p50 ≤ 300 ms, p99 ≤ 1 s";
    let Some((mut first, mut second)) = two_release_nodes(what, target, &[]) else {
        return;
    };
    let (receiving, other) = (first.admin(), second.admin());
    let mut times = Vec::with_capacity(samples);
    for sample in 0..samples {
        let name = format!("converge-{sample}");
        first.write_plugin(
            &format!("{name}.js"),
            &format!("export default {{ metadata: {{ name: '{name}', version: '1.0.0' }} }};"),
        );
        let (status, body) = receiving.load(&format!("{name}.js")).await;
        assert_eq!(status, 201, "{body}");
        let answered = Instant::now();
        let path = format!("/plugins/{name}");
        loop {
            if other.get(&path).await.0 == 200 {
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(10),
                "{name} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(answered.elapsed());
    }
    for sample in 0..samples {
        receiving
            .delete(&format!("/plugins/converge-{sample}"))
            .await;
    }
    first.terminate();
    second.terminate();
    times.sort();
    report(
        &format!("cluster: a load through node A reaches node B ({samples} loads, from A's answer to B's first 200)"),
        format!(
            "p50 {:.1} ms, p99 {:.1} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        ),
        "p50 ≤ 300 ms, p99 ≤ 1 s",
    );
}

/// A listener of `bench:*` that answers how many events it heard and, for stamped ones,
/// `[emitter, milliseconds since the stamp]`.
fn hearer(name: &str) -> String {
    format!(
        r#"
let count = 0;
const latencies = [];
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  initialize(context) {{
    context.eventBus.on("bench:*", (data) => {{
      count += 1;
      if (data.sentAt !== undefined) latencies.push([data.emitter, Date.now() - data.sentAt]);
    }});
  }},
  execute() {{ return {{ count, latencies }}; }},
}};
"#
    )
}

/// An emitter of `count` `bench:tick` events per call, stamped with `Date.now()` when asked.
fn emitter(name: &str) -> String {
    format!(
        r#"
export default {{
  metadata: {{ name: "{name}", version: "1.0.0" }},
  initialize(context) {{ this.bus = context.eventBus; }},
  execute(input) {{
    for (let index = 0; index < input.count; index++) {{
      this.bus.emit("bench:tick", input.stamp ? {{ emitter: "{name}", sentAt: Date.now() }} : {{ index }});
    }}
    return input.count;
  }},
}};
"#
    )
}

/// What hearer `name` on `node` answers.
async fn heard(node: &WardenProcess, name: &str) -> Value {
    let (status, body) = node.admin().execute(name, json!(null)).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

/// Events from a plugin on node A to a listener plugin on node B, over the cluster's topic
/// (two partitions, one per node; an emitter per partition, so one of them is heard on B):
/// `samples` single events 5 ms apart for the latency (the plugins' clock, whole
/// milliseconds), then one burst of `burst` events to `listeners` listener plugins for the
/// deliveries per second, from the call that emits them to every listener's count on B
/// reaching them all.
pub async fn event_crossing(samples: usize, burst: u64, listeners: usize) {
    let what = format!(
        "cluster: events from a plugin on node A to {listeners} listener plugin(s) on node B"
    );
    let what = what.as_str();
    let target = "p50 ≤ 20 ms; ≥ 50,000 deliveries/s";
    let Some((mut first, mut second)) =
        two_release_nodes(what, target, &[("WARDEN_KAFKA_TOPIC_PARTITIONS", "2")])
    else {
        return;
    };
    let emitters = one_key_per_partition("bench-emitter", 2);
    let hearers: Vec<String> = (0..listeners)
        .map(|index| format!("bench-hearer-{index}"))
        .collect();
    for name in &hearers {
        first.write_plugin(&format!("{name}.js"), &hearer(name));
    }
    for name in &emitters {
        first.write_plugin(&format!("{name}.js"), &emitter(name));
    }
    for name in hearers.iter().chain(&emitters) {
        let (status, body) = first.admin().load(&format!("{name}.js")).await;
        assert_eq!(status, 201, "{body}");
    }
    for name in hearers.iter().chain(&emitters) {
        let path = format!("/plugins/{name}");
        while second.admin().get(&path).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    for sample in 0..samples {
        let name = &emitters[sample % 2];
        let (status, body) = first
            .admin()
            .execute(name, json!({ "count": 1, "stamp": true }))
            .await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let on_second = loop {
        let (on_first, on_second) = (
            heard(&first, &hearers[0]).await,
            heard(&second, &hearers[0]).await,
        );
        let total =
            on_first["count"].as_u64().unwrap_or(0) + on_second["count"].as_u64().unwrap_or(0);
        if total >= samples as u64 || started.elapsed() > Duration::from_secs(60) {
            break on_second;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let crossing: Vec<(String, u64)> = on_second["latencies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair[0].as_str()?.to_string(), pair[1].as_u64()?)))
        .collect();
    let Some(crossing_emitter) = crossing.first().map(|(name, _)| name.clone()) else {
        report(what, "failed: node B heard no event".into(), target);
        return;
    };
    let mut latencies: Vec<Duration> = crossing
        .iter()
        .map(|(_, milliseconds)| Duration::from_millis(*milliseconds))
        .collect();
    latencies.sort();

    let mut before = Vec::with_capacity(listeners);
    for name in &hearers {
        before.push(heard(&second, name).await["count"].as_u64().unwrap_or(0));
    }
    let emitting = Instant::now();
    let (status, body) = first
        .admin()
        .execute(&crossing_emitter, json!({ "count": burst, "stamp": false }))
        .await;
    assert_eq!(status, 200, "{body}");
    for (name, before) in hearers.iter().zip(before) {
        loop {
            let count = heard(&second, name).await["count"].as_u64().unwrap_or(0);
            if count >= before + burst || emitting.elapsed() > Duration::from_secs(120) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let elapsed = emitting.elapsed();
    first.terminate();
    second.terminate();
    report(
        &format!(
            "{what} ({} single events heard on B; a burst of {burst})",
            latencies.len()
        ),
        format!(
            "latency p50 {} ms, p99 {} ms; {:.0} deliveries/s ({:.0} events/s)",
            percentile(&latencies, 0.5).as_millis(),
            percentile(&latencies, 0.99).as_millis(),
            (burst * listeners as u64) as f64 / elapsed.as_secs_f64(),
            burst as f64 / elapsed.as_secs_f64()
        ),
        target,
    );
}
