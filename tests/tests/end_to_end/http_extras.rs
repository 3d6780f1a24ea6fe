//! The operational endpoints: health, readiness, metrics and the OpenAPI document.

use serde_json::json;
use warden_tests::WardenProcess;

#[actix_rt::test]
async fn health_needs_no_token() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();
    for client in [
        api.with_token(None),
        api.with_token(Some("wrong")),
        api.clone(),
    ] {
        assert_eq!(
            client.get("/health").await,
            (200, json!({ "status": "ok" }))
        );
    }
}

#[actix_rt::test]
async fn ready_reports_every_backend_disabled_when_none_is_configured() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();
    assert_eq!(
        api.get("/ready").await,
        (
            200,
            json!({
                "status": "ok",
                "checks": { "database": "disabled", "kafka": "disabled", "s3": "disabled" }
            })
        )
    );
}

#[actix_rt::test]
async fn metrics_count_plugins_and_calls() {
    let counted = r#"export default { metadata: { name: "counted", version: "1.0.0" }, execute() { return 1; } };"#;
    let warden = WardenProcess::start(&[("counted.js", counted)], &[], &[]);
    let api = warden.admin();
    assert_eq!(api.execute("counted", json!(null)).await.0, 200);

    let (status, text) = api.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|line| line.starts_with("warden_plugins{")
            && line.contains("state=\"running\"")
            && line.ends_with(" 1")),
        "no running-plugins gauge of 1:\n{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("warden_plugin_calls_total{")
                && line.contains("plugin=\"counted\"")
                && line.contains("outcome=\"ok\"")
                && line.ends_with(" 1")),
        "no call counter for 'counted':\n{text}"
    );
}

#[actix_rt::test]
async fn the_openapi_document_covers_every_endpoint() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();
    let (status, document) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with('3')),
        "{}",
        document["openapi"]
    );
    let endpoints = [
        ("/health", "get"),
        ("/ready", "get"),
        ("/plugins", "get"),
        ("/plugins", "post"),
        ("/plugins/scan", "post"),
        ("/plugins/{name}", "get"),
        ("/plugins/{name}", "delete"),
        ("/plugins/{name}/reload", "post"),
        ("/plugins/{name}/execute", "post"),
        ("/plugins/{name}/overrides", "get"),
        ("/plugins/{name}/overrides", "put"),
        ("/plugins/{name}/overrides", "delete"),
        ("/events", "post"),
        ("/events/stream", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    let missing: Vec<String> = endpoints
        .iter()
        .filter(|(path, method)| document["paths"][path][method].is_null())
        .map(|(path, method)| format!("{method} {path}"))
        .collect();
    assert!(missing.is_empty(), "missing from the document: {missing:?}");
}
