//! The cluster's figures: how long a load through one node takes to reach another.

use std::time::{Duration, Instant};

use super::{percentile, report};

/// Measures, for `samples` loads through node A, the time from A's `201` to the first `200` of
/// `GET /plugins/{name}` on node B (polled every millisecond). Both are the release binary on
/// the local stack, in one cluster of their own.
pub async fn load_convergence(samples: usize) {
    let binary = std::env::var("WARDEN_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/warden").to_string()
    });
    let stack = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local.env"));
    if !std::path::Path::new(&binary).exists() || !stack.exists() {
        report(
            "cluster: a load reaches another node",
            "skipped: needs the release build and `just infra-up`".into(),
            "p50 ≤ 300 ms, p99 ≤ 1 s",
        );
        return;
    }
    std::env::set_var("WARDEN_BIN", &binary);
    let cluster = format!("bench-{}", std::process::id());
    let node = |id: &str| {
        warden_tests::WardenProcess::start_with_stack(
            &[],
            &[],
            &["--cluster", &cluster, "--node-id", id, "--no-load-all"],
        )
    };
    let (mut first, mut second) = (node("bench-a"), node("bench-b"));
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
