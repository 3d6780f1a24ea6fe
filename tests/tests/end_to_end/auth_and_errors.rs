//! The bearer token, and the error answers of refused requests (which must change nothing).

use awc::http::Method;
use serde_json::{json, Value};
use warden_tests::{assert_error, plugin_names, WardenProcess};

const KEEP: &str = r#"
export default {
  metadata: { name: "keep", version: "1.0.0" },
  async execute(input) { return input; },
};
"#;

const EXTRA: &str = r#"
export default {
  metadata: { name: "extra", version: "1.0.0" },
  async execute() { return "extra"; },
};
"#;

/// Every endpoint but `GET /health`, with a body where one is expected.
fn protected_endpoints() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/ready", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/openapi.json", None),
        (Method::GET, "/plugins", None),
        (
            Method::POST,
            "/plugins",
            Some(json!({ "path": "extra.js" })),
        ),
        (Method::POST, "/plugins/scan", None),
        (Method::GET, "/plugins/keep", None),
        (Method::DELETE, "/plugins/keep", None),
        (Method::POST, "/plugins/keep/reload", None),
        (
            Method::POST,
            "/plugins/keep/execute",
            Some(json!({ "a": 1 })),
        ),
        (Method::GET, "/plugins/keep/overrides", None),
        (
            Method::PUT,
            "/plugins/keep/overrides",
            Some(json!({ "allowedTables": ["t"] })),
        ),
        (Method::DELETE, "/plugins/keep/overrides", None),
        (
            Method::POST,
            "/events",
            Some(json!({ "event": "x:y", "data": 1 })),
        ),
        (Method::GET, "/events/stream?pattern=x", None),
    ]
}

#[actix_rt::test]
async fn every_endpoint_but_health_requires_the_bearer_token() {
    let warden = WardenProcess::start(
        &[("keep.js", KEEP), ("extra.js", EXTRA)],
        &[],
        &["--no-load-all"],
    );
    let api = warden.admin();
    assert_eq!(api.load("keep.js").await.0, 201);
    let before = api.get("/plugins").await;

    let anonymous = api.with_token(None);
    let wrong = api.with_token(Some("not-the-token"));
    let not_bearer = api.with_token(Some(""));
    for (method, path, body) in protected_endpoints() {
        for client in [&anonymous, &wrong, &not_bearer] {
            let answer = client.send(method.clone(), path, body.clone()).await;
            assert_error(&answer, 401, "unauthorized");
            assert_eq!(
                answer.1["error"].as_object().map(|error| error.len()),
                Some(2),
                "{method} {path}: an unauthorized answer has only code and message: {answer:?}"
            );
        }
    }

    // The refused requests changed nothing: `keep` is still loaded, `extra` is not.
    assert_eq!(api.get("/plugins").await, before);
    assert_eq!(plugin_names(&before.1), ["keep"]);
    let (status, _) = anonymous.get("/health").await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn malformed_json_and_unknown_fields_are_invalid_requests() {
    let warden = WardenProcess::start(
        &[("keep.js", KEEP), ("extra.js", EXTRA)],
        &[],
        &["--no-load-all"],
    );
    let api = warden.admin();
    assert_eq!(api.load("keep.js").await.0, 201);
    let before = api.get("/plugins").await;

    let malformed = [
        (Method::POST, "/plugins", r#"{"path": "extra.js""#),
        (Method::POST, "/plugins", "not json"),
        (
            Method::POST,
            "/plugins",
            r#"{"path": "extra.js", "force": true}"#,
        ),
        (Method::POST, "/plugins", r#"{"path": 7}"#),
        (
            Method::POST,
            "/plugins",
            r#"{"path": "extra.js", "overrides": {"allowedTabels": ["t"]}}"#,
        ),
        (Method::POST, "/plugins/keep/reload", r#"{"overrides": {}"#),
        (
            Method::POST,
            "/plugins/keep/reload",
            r#"{"overrides": {}, "now": true}"#,
        ),
        (Method::POST, "/plugins/keep/execute", r#"{"a": "#),
        (
            Method::PUT,
            "/plugins/keep/overrides",
            r#"{"allowedTables": ["#,
        ),
        (
            Method::PUT,
            "/plugins/keep/overrides",
            r#"{"allowedTabels": ["t"]}"#,
        ),
        (
            Method::PUT,
            "/plugins/keep/overrides",
            r#"{"tableNameMap": ["t"]}"#,
        ),
        (Method::POST, "/events", r#"{"event": "a:b", "data": "#),
    ];
    for (method, path, body) in malformed {
        let answer = api.send_raw(method.clone(), path, body).await;
        assert_error(&answer, 400, "invalid_request");
    }
    assert_eq!(api.get("/plugins").await, before);
    assert_eq!(api.get("/plugins/keep/overrides").await, (200, json!({})));
}

#[actix_rt::test]
async fn paths_outside_the_plugins_directory_are_invalid_requests() {
    let warden = WardenProcess::start(&[("keep.js", KEEP)], &[], &["--no-load-all"]);
    // A real plugin file just outside the directory, so only confinement can refuse it.
    warden.write_outside("outside.js", EXTRA);
    let api = warden.admin();

    for path in [
        "../outside.js",
        "./../outside.js",
        "sub/../../outside.js",
        "/etc/passwd",
    ] {
        let answer = api.load(path).await;
        assert_error(&answer, 400, "invalid_request");
    }
    let absolute = warden.plugins_dir().join("keep.js");
    let answer = api.load(absolute.to_str().unwrap()).await;
    assert_error(&answer, 400, "invalid_request");

    assert_eq!(api.get("/plugins").await, (200, json!({ "plugins": [] })));
}

#[actix_rt::test]
async fn a_missing_file_or_plugin_is_plugin_not_found() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();

    assert_error(&api.load("missing.js").await, 404, "plugin_not_found");
    assert_error(&api.get("/plugins/missing").await, 404, "plugin_not_found");
    assert_error(
        &api.delete("/plugins/missing").await,
        404,
        "plugin_not_found",
    );
    assert_error(
        &api.post("/plugins/missing/reload", None).await,
        404,
        "plugin_not_found",
    );
    assert_error(
        &api.execute("missing", json!({})).await,
        404,
        "plugin_not_found",
    );
}

#[actix_rt::test]
async fn modules_without_a_plugin_object_or_metadata_are_invalid_plugins() {
    let files = [
        ("keep.js", KEEP),
        ("no_export.js", "export const answer = 42;\n"),
        ("not_object.js", "export default function () { return 1; }\n"),
        (
            "no_metadata.js",
            "export default { async execute() { return 1; } };\n",
        ),
        (
            "no_version.js",
            "export default { metadata: { name: \"noversion\" } };\n",
        ),
        (
            "no_name.js",
            "export default { metadata: { version: \"1.0.0\" } };\n",
        ),
        (
            "bad_version.js",
            "export default { metadata: { name: \"badversion\", version: \"one\" } };\n",
        ),
        (
            "syntax_error.js",
            "export default { metadata: { name: \"broken\", version: \"1.0.0\" }\n",
        ),
        (
            "types_in_js.js",
            "const n: number = 1;\nexport default { metadata: { name: \"typed\", version: \"1.0.0\" } };\n",
        ),
    ];
    let warden = WardenProcess::start(&files, &[], &["--no-load-all"]);
    let api = warden.admin();
    assert_eq!(api.load("keep.js").await.0, 201);
    let before = api.get("/plugins").await;

    for (file, _) in &files[1..] {
        let answer = api.load(file).await;
        assert_error(&answer, 422, "invalid_plugin");
    }
    assert_eq!(api.get("/plugins").await, before);
}

#[actix_rt::test]
async fn names_that_break_the_naming_rules_are_invalid_names() {
    let plugin = |name: &str| {
        format!("export default {{ metadata: {{ name: \"{name}\", version: \"1.0.0\" }} }};\n")
    };
    let files: Vec<(String, String)> = [
        "Upper", "shared", "warden", "a--b", "a__b", "a-_b", "-lead", "trail-", "has space",
    ]
    .iter()
    .enumerate()
    .map(|(index, name)| (format!("bad{index}.js"), plugin(name)))
    .chain([
        (
            "bad_table.js".to_string(),
            "export default { metadata: { name: \"badtable\", version: \"1.0.0\", allowedTables: [\"Orders\"] } };\n"
                .to_string(),
        ),
        (
            "duplicate_topic.js".to_string(),
            "export default { metadata: { name: \"duptopic\", version: \"1.0.0\", allowedTopics: [\"t\", \"t\"] } };\n"
                .to_string(),
        ),
        (
            "ip_bucket.js".to_string(),
            "export default { metadata: { name: \"ipbucket\", version: \"1.0.0\", allowedBuckets: [\"192.168.1.1\"] } };\n"
                .to_string(),
        ),
    ])
    .collect();
    let mut all: Vec<(&str, &str)> = files
        .iter()
        .map(|(file, text)| (file.as_str(), text.as_str()))
        .collect();
    all.push(("keep.js", KEEP));
    let warden = WardenProcess::start(&all, &[], &["--no-load-all"]);
    let api = warden.admin();
    assert_eq!(api.load("keep.js").await.0, 201);
    let before = api.get("/plugins").await;

    for (file, _) in &files {
        let answer = api.load(file).await;
        assert_error(&answer, 422, "invalid_name");
    }
    assert_eq!(api.get("/plugins").await, before);

    // Overrides follow the same rules, for names loaded or not.
    for path in ["/plugins/Upper/overrides", "/plugins/a--b/overrides"] {
        assert_error(&api.get(path).await, 422, "invalid_name");
        assert_error(
            &api.put(path, Some(json!({ "allowedTables": ["t"] }))).await,
            422,
            "invalid_name",
        );
    }
    for overrides in [
        json!({ "allowedTables": ["Bad"] }),
        json!({ "allowedTopics": ["a..b"] }),
        json!({ "allowedBuckets": ["x"] }),
        json!({ "tableNameMap": { "orders": "Bad Name" } }),
    ] {
        assert_error(
            &api.put("/plugins/keep/overrides", Some(overrides)).await,
            422,
            "invalid_name",
        );
    }
    assert_eq!(api.get("/plugins").await, before);
    assert_eq!(api.get("/plugins/keep/overrides").await, (200, json!({})));
}

#[actix_rt::test]
async fn bad_event_bodies_are_invalid_requests() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();

    for body in [
        "",
        "{",
        "{}",
        r#"{"data": 1}"#,
        r#"{"event": 5, "data": 1}"#,
        r#"{"event": "user:created", "data": 1, "source": "me"}"#,
        r#"{"event": "", "data": 1}"#,
    ] {
        let answer = api.send_raw(Method::POST, "/events", body).await;
        assert_eq!(answer.0, 400, "POST /events {body:?}: {answer:?}");
        assert_error(&answer, 400, "invalid_request");
    }
    let accepted = api
        .post(
            "/events",
            Some(json!({ "event": "user:created", "data": { "id": 1 } })),
        )
        .await;
    assert_eq!(accepted.0, 202, "{accepted:?}");
}

#[actix_rt::test]
async fn bodies_that_are_not_json_objects_are_invalid_requests() {
    // Each endpoint takes a JSON object; an array in the fields' order is not one.
    let warden = WardenProcess::start(&[("keep.js", KEEP)], &[], &["--no-load-all"]);
    let api = warden.admin();

    for (method, path, body) in [
        (Method::POST, "/events", r#"["user:created", 1]"#),
        (Method::POST, "/plugins", r#"["keep.js", null]"#),
        (Method::PUT, "/plugins/keep/overrides", r#"[["t"]]"#),
    ] {
        let answer = api.send_raw(method.clone(), path, body).await;
        assert_eq!(answer.0, 400, "{method} {path} {body}: {answer:?}");
        assert_error(&answer, 400, "invalid_request");
    }
    assert_eq!(api.get("/plugins").await, (200, json!({ "plugins": [] })));
    assert_eq!(api.get("/plugins/keep/overrides").await, (200, json!({})));
}

#[actix_rt::test]
async fn unknown_routes_are_not_found() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();

    for path in ["/nope", "/plugins/a/b/c", "/events/nope"] {
        assert_error(&api.get(path).await, 404, "not_found");
    }
    assert_error(&api.post("/health/deep", None).await, 404, "not_found");
}
