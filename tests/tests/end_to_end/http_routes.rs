//! Plugins' own HTTP routes on the public listener (`PLUGIN_API.md`, "HTTP routes"): matching,
//! the request and response objects, Warden's own answers (404, 405, 413, 503, 504), errors that
//! never leak, reload and unload, the listeners kept apart, metrics, and a JSON API over a table.

use serde_json::{json, Value};
use warden_tests::{public_request, wait_until, PublicAnswer, WardenProcess, PATIENCE};

/// A plugin with one route of each kind the contract describes.
const SHOP: &str = r#"
export default {
  metadata: { name: "shop", version: "1.0.0" },
  routes: {
    "GET /orders/:id": "getOrder",
    "POST /orders": async function (request) {
      return { status: 201, json: { created: request.json, by: this.metadata.name } };
    },
    "GET /files/*rest": (request) => ({ json: { rest: request.params.rest } }),
    "GET /echo": (request) => ({ json: {
      id: request.id, method: request.method, path: request.path, query: request.query,
      headers: request.headers, body: request.body, json: request.json === undefined ? "undefined" : request.json,
    } }),
    "PUT /echo": (request) => ({ json: { isBytes: request.body instanceof Uint8Array, length: request.body ? request.body.length : 0, body: typeof request.body === "string" ? request.body : null } }),
    "POST /bytes": (request) => ({ body: request.body }),
    "GET /html": () => ({ body: "<p>hi</p>", headers: { "content-type": "text/html", "x-shop": "1", "connection": "close" } }),
    "DELETE /orders/:id": () => null,
    "GET /row": () => ({ id: 1 }),
    "GET /teapot": () => { throw Object.assign(new Error("short and stout"), { status: 418, code: "teapot" }); },
    "GET /secret": () => { throw new Error("the password is hunter2"); },
    "GET /spin": () => { while (true) {} },
    "* /any": (request) => ({ json: { method: request.method } }),
    "GET /": () => ({ json: { root: true } }),
  },
  async getOrder(request) {
    return request.params.id === "404"
      ? { status: 404, json: { error: "no such order" } }
      : { json: { id: request.params.id, self: this.metadata.name } };
  },
};
"#;

async fn get(warden: &WardenProcess, path: &str) -> PublicAnswer {
    public_request("GET", &warden.public_url(path), &[], None).await
}

#[actix_rt::test]
async fn routes_answer_under_api_and_the_plugin_name_with_decoded_params() {
    let warden = WardenProcess::start(&[("shop.js", SHOP)], &[], &[]);
    let order = get(&warden, "/api/shop/orders/42").await;
    assert_eq!(order.status, 200);
    assert_eq!(order.json(), json!({"id": "42", "self": "shop"}));
    assert_eq!(order.header("content-type"), Some("application/json"));
    let missing = get(&warden, "/api/shop/orders/404").await;
    assert_eq!(
        (missing.status, missing.json()),
        (404, json!({"error": "no such order"}))
    );
    // Percent-decoded after matching: an encoded `/` stays in its segment.
    assert_eq!(
        get(&warden, "/api/shop/orders/a%2Fb").await.json()["id"],
        "a/b"
    );
    assert_eq!(
        get(&warden, "/api/shop/orders/42/").await.json()["id"],
        "42",
        "a trailing / is ignored"
    );
    assert_eq!(
        get(&warden, "/api/shop/files/a/b%20c.txt").await.json(),
        json!({"rest": "a/b c.txt"})
    );
    assert_eq!(
        get(&warden, "/api/shop/files").await.json(),
        json!({"rest": ""})
    );
    assert_eq!(
        get(&warden, "/api/shop").await.json(),
        json!({"root": true})
    );
    let created = public_request(
        "POST",
        &warden.public_url("/api/shop/orders"),
        &[("content-type", "application/json")],
        Some(br#"{"total": 12.5}"#.to_vec()),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.json(),
        json!({"created": {"total": 12.5}, "by": "shop"})
    );
}

#[actix_rt::test]
async fn the_request_object_is_as_the_contract_says() {
    let warden = WardenProcess::start(&[("shop.js", SHOP)], &[], &[]);
    let echo = public_request(
        "GET",
        &warden.public_url("/api/shop/echo/?tag=a&tag=b&q=x+y&flag"),
        &[
            ("X-Trace", "one"),
            ("x-trace", "two"),
            ("x-request-id", "client-id-1"),
        ],
        None,
    )
    .await;
    assert_eq!(echo.status, 200);
    let seen = echo.json();
    assert_eq!(seen["id"], "client-id-1");
    assert_eq!(echo.header("x-request-id"), Some("client-id-1"));
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/echo");
    assert_eq!(
        seen["query"],
        json!({"tag": ["a", "b"], "q": "x y", "flag": ""})
    );
    assert_eq!(seen["headers"]["x-trace"], "one, two");
    assert_eq!(seen["body"], Value::Null);
    assert_eq!(seen["json"], "undefined");

    // Without an id, Warden makes one and sends it back.
    let fresh = get(&warden, "/api/shop/echo").await;
    let id = fresh.header("x-request-id").expect("an id").to_owned();
    assert!(!id.is_empty());
    assert_eq!(fresh.json()["id"], id.as_str());

    // Text types arrive as strings, others as a Uint8Array.
    let text = public_request(
        "PUT",
        &warden.public_url("/api/shop/echo"),
        &[("content-type", "text/csv")],
        Some(b"a,b".to_vec()),
    )
    .await;
    assert_eq!(
        text.json(),
        json!({"isBytes": false, "length": 3, "body": "a,b"})
    );
    let bytes = public_request(
        "PUT",
        &warden.public_url("/api/shop/echo"),
        &[("content-type", "image/png")],
        Some(vec![0, 1, 2, 255]),
    )
    .await;
    assert_eq!(
        bytes.json(),
        json!({"isBytes": true, "length": 4, "body": null})
    );
    let echoed = public_request(
        "POST",
        &warden.public_url("/api/shop/bytes"),
        &[("content-type", "application/octet-stream")],
        Some(vec![0, 159, 146, 150]),
    )
    .await;
    assert_eq!(echoed.body, vec![0, 159, 146, 150]);
    assert_eq!(
        echoed.header("content-type"),
        Some("application/octet-stream")
    );

    // A JSON body that does not parse never reaches the handler.
    let invalid = public_request(
        "POST",
        &warden.public_url("/api/shop/orders"),
        &[("content-type", "application/json")],
        Some(b"{nope".to_vec()),
    )
    .await;
    assert_eq!(
        (invalid.status, invalid.error_code()),
        (400, "invalid_json".to_owned())
    );
}

#[actix_rt::test]
async fn responses_statuses_and_headers_follow_the_handler() {
    let warden = WardenProcess::start(&[("shop.js", SHOP)], &[], &[]);
    let html = get(&warden, "/api/shop/html").await;
    assert_eq!(html.status, 200);
    assert_eq!(html.header("content-type"), Some("text/html"));
    assert_eq!(html.header("x-shop"), Some("1"));
    assert_eq!(html.body, b"<p>hi</p>");
    let deleted = public_request(
        "DELETE",
        &warden.public_url("/api/shop/orders/1"),
        &[],
        None,
    )
    .await;
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    // HEAD is answered by the GET route, without a body.
    let head = public_request("HEAD", &warden.public_url("/api/shop/orders/7"), &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), Some("application/json"));
    // `*` answers any method.
    let patched = public_request("PATCH", &warden.public_url("/api/shop/any"), &[], None).await;
    assert_eq!(patched.json(), json!({"method": "PATCH"}));
    // A path served for other methods only: 405 with Allow.
    let refused = public_request("PUT", &warden.public_url("/api/shop/orders/7"), &[], None).await;
    assert_eq!(
        (refused.status, refused.error_code()),
        (405, "method_not_allowed".to_owned())
    );
    assert_eq!(refused.header("allow"), Some("GET, HEAD, DELETE"));
    for path in ["/api/shop/nowhere", "/api/nobody/orders/1", "/plugins", "/"] {
        let answer = get(&warden, path).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (404, "not_found".to_owned()),
            "{path}"
        );
        assert!(
            answer.json()["error"].get("name").is_none(),
            "no name on the public listener"
        );
    }
}

#[actix_rt::test]
async fn handler_errors_never_reach_the_client_unless_they_carry_a_status() {
    let warden = WardenProcess::start(&[("shop.js", SHOP)], &[("WARDEN_LOG", "info")], &[]);
    let teapot = get(&warden, "/api/shop/teapot").await;
    assert_eq!(teapot.status, 418);
    assert_eq!(
        teapot.json(),
        json!({"error": {"code": "teapot", "message": "short and stout"}})
    );

    let secret = public_request(
        "GET",
        &warden.public_url("/api/shop/secret"),
        &[("x-request-id", "req-secret")],
        None,
    )
    .await;
    assert_eq!(
        (secret.status, secret.error_code()),
        (500, "handler_failed".to_owned())
    );
    assert!(
        !String::from_utf8_lossy(&secret.body).contains("hunter2"),
        "the error text stays in the log"
    );
    assert!(warden.wait_for_log("hunter2", PATIENCE).await);
    let line = warden
        .logs()
        .into_iter()
        .find(|line| line.contains("hunter2"))
        .unwrap();
    for tag in ["shop", "GET /secret", "req-secret"] {
        assert!(line.contains(tag), "the log line names {tag}: {line}");
    }

    let row = get(&warden, "/api/shop/row").await;
    assert_eq!(
        (row.status, row.error_code()),
        (500, "invalid_response".to_owned())
    );
    assert!(warden.wait_for_log("return { json: … }", PATIENCE).await);
}

#[actix_rt::test]
async fn a_body_over_the_limit_is_refused_before_the_handler_runs() {
    let counter = r#"
export default {
  metadata: { name: "counter", version: "1.0.0" },
  calls: 0,
  routes: {
    "POST /count": function (request) { this.calls += 1; return { json: { size: request.body.length } }; },
    "GET /count": function () { return { json: { calls: this.calls } }; },
  },
};
"#;
    let warden = WardenProcess::start(
        &[("counter.js", counter)],
        &[("WARDEN_HTTP_MAX_BODY_BYTES", "1024")],
        &[],
    );
    let url = warden.public_url("/api/counter/count");
    let fits = public_request(
        "POST",
        &url,
        &[("content-type", "text/plain")],
        Some(vec![b'a'; 1024]),
    )
    .await;
    assert_eq!(fits.json(), json!({"size": 1024}));
    let over = public_request(
        "POST",
        &url,
        &[("content-type", "text/plain")],
        Some(vec![b'a'; 1025]),
    )
    .await;
    assert_eq!(
        (over.status, over.error_code()),
        (413, "payload_too_large".to_owned())
    );
    assert_eq!(
        get(&warden, "/api/counter/count").await.json(),
        json!({"calls": 1})
    );
}

#[actix_rt::test]
async fn a_runaway_handler_answers_504_and_requests_during_the_restart_503() {
    let warden = WardenProcess::start(
        &[("shop.js", SHOP)],
        &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "300")],
        &[],
    );
    let spin = get(&warden, "/api/shop/spin").await;
    assert_eq!(
        (spin.status, spin.error_code()),
        (504, "timeout".to_owned())
    );
    // Until the restart's backoff ends, requests are answered 503 with Retry-After; then the
    // plugin serves again.
    let saw_unavailable = std::cell::Cell::new(false);
    let served_again = wait_until(PATIENCE, || async {
        let answer = get(&warden, "/api/shop/orders/1").await;
        if answer.status == 503 {
            assert_eq!(answer.error_code(), "plugin_unavailable");
            assert!(answer.header("retry-after").is_some());
            saw_unavailable.set(true);
        }
        answer.status == 200
    })
    .await;
    assert!(served_again, "the plugin serves again after its restart");
    let restarts = warden.admin().plugin("shop").await["restarts"].clone();
    assert_eq!(
        restarts,
        1,
        "one restart, saw 503 on the way: {}",
        saw_unavailable.get()
    );
}

#[actix_rt::test]
async fn reload_swaps_the_routes_and_unload_removes_them() {
    let version = |answer: &str| {
        format!(
            r#"export default {{ metadata: {{ name: "swap", version: "1.0.0" }},
               routes: {{ "GET /v": () => ({{ json: "{answer}" }}) }} }};"#
        )
    };
    let warden = WardenProcess::start(&[("swap.js", &version("one"))], &[], &[]);
    let api = warden.admin();
    assert_eq!(get(&warden, "/api/swap/v").await.json(), "one");
    assert_eq!(
        api.plugin("swap").await["routes"],
        json!([{"method": "GET", "path": "/v"}])
    );
    warden.write_plugin(
        "swap.js",
        r#"export default { metadata: { name: "swap", version: "1.0.1" },
           routes: { "GET /v": () => ({ json: "two" }), "POST /w/:id": () => null } };"#,
    );
    assert_eq!(api.post("/plugins/swap/reload", None).await.0, 200);
    assert_eq!(get(&warden, "/api/swap/v").await.json(), "two");
    assert_eq!(
        api.plugin("swap").await["routes"],
        json!([{"method": "GET", "path": "/v"}, {"method": "POST", "path": "/w/:id"}])
    );
    assert_eq!(api.delete("/plugins/swap").await.0, 204);
    assert_eq!(get(&warden, "/api/swap/v").await.status, 404);
}

#[actix_rt::test]
async fn requests_in_flight_during_a_reload_are_answered() {
    let slow = |version: &str| {
        format!(
            r#"export default {{ metadata: {{ name: "slow", version: "{version}" }},
               routes: {{ "GET /wait": () => new Promise((resolve) => setTimeout(() => resolve({{ json: "{version}" }}), 200)) }} }};"#
        )
    };
    let warden = WardenProcess::start(&[("slow.js", &slow("1.0.0"))], &[], &[]);
    let api = warden.admin();
    let url = warden.public_url("/api/slow/wait");
    let requests =
        futures::future::join_all((0..8).map(|_| public_request("GET", &url, &[], None)));
    warden.write_plugin("slow.js", &slow("2.0.0"));
    let (answers, reload) = futures::join!(requests, api.post("/plugins/slow/reload", None));
    assert_eq!(reload.0, 200);
    for answer in answers {
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        assert!(["1.0.0", "2.0.0"].contains(&answer.json().as_str().unwrap_or_default()));
    }
}

#[actix_rt::test]
async fn the_listeners_are_kept_apart() {
    let warden = WardenProcess::start(&[("shop.js", SHOP)], &[], &[]);
    // No admin endpoint on the public listener, token or not.
    for path in ["/plugins", "/health", "/metrics", "/plugins/shop/execute"] {
        let answer = public_request(
            "GET",
            &warden.public_url(path),
            &[("authorization", "Bearer test-admin-token")],
            None,
        )
        .await;
        assert_eq!(answer.status, 404, "{path}");
    }
    // No plugin route on the admin listener.
    let (status, _) = warden.admin().get("/api/shop/orders/1").await;
    assert_eq!(status, 404);
    // `off` turns the public listener off.
    let off = WardenProcess::start(&[("shop.js", SHOP)], &[], &["--http-bind", "off"]);
    assert!(off.log_index("public listener on").is_none());
}

#[actix_rt::test]
async fn malformed_routes_refuse_the_load_naming_the_route() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();
    for (routes, expected) in [
        (r#"{ "FETCH /x": () => null }"#, "unknown method 'FETCH'"),
        (
            r#"{ "GET /a/:x": () => null, "GET /a/:y": () => null }"#,
            "'GET /a/:y'",
        ),
        (r#"{ "GET /x": "nothing" }"#, "'nothing'"),
    ] {
        warden.write_plugin(
            "bad.js",
            &format!(r#"export default {{ metadata: {{ name: "bad", version: "1.0.0" }}, routes: {routes} }};"#),
        );
        let (status, body) = api.load("bad.js").await;
        assert_eq!(status, 422, "{routes}: {body}");
        assert_eq!(body["error"]["code"], "invalid_plugin", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{body}"
        );
    }
    assert_eq!(api.get("/plugins").await.1["plugins"], json!([]));
}

#[actix_rt::test]
async fn requests_are_counted_by_plugin_route_method_and_status() {
    let warden = WardenProcess::start(&[("shop.js", SHOP)], &[], &[]);
    get(&warden, "/api/shop/orders/1").await;
    get(&warden, "/api/shop/orders/404").await;
    let (_, metrics) = warden.admin().get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("warden_http_requests_total")
                && line.contains(r#"plugin="shop""#)
                && line.contains(r#"route="GET /orders/:id""#)
                && line.contains(r#"method="GET""#)
                && line.contains(r#"status="404""#)),
        "{metrics}"
    );
    assert!(
        metrics.contains("warden_http_request_duration_seconds"),
        "{metrics}"
    );
}

/// The example plugin of `plugins/`: a JSON API over its own table.
#[actix_rt::test]
async fn the_example_todo_api_lists_creates_gets_and_deletes_over_its_table() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/todos.js"))
            .unwrap();
    let warden = WardenProcess::start_with_stack(&[("todos.js", &example)], &[], &[]);
    let url = |path: &str| warden.public_url(&format!("/api/todos{path}"));
    let created = public_request(
        "POST",
        &url("/todos"),
        &[("content-type", "application/json")],
        Some(br#"{"title": "write the docs"}"#.to_vec()),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let id = created.json()["id"].clone();
    // `bigserial` ids come back as JSON numbers or, past 2^53, strings; either prints bare.
    let id_text = id.to_string().trim_matches('"').to_owned();
    assert_eq!(created.json()["title"], "write the docs");
    let listed = public_request("GET", &url("/todos"), &[], None).await;
    assert!(listed.json()["todos"]
        .as_array()
        .unwrap()
        .iter()
        .any(|todo| todo["id"] == id));
    let one = public_request("GET", &url(&format!("/todos/{id_text}")), &[], None).await;
    assert_eq!(
        (one.status, one.json()["title"].clone()),
        (200, json!("write the docs"))
    );
    let untitled = public_request(
        "POST",
        &url("/todos"),
        &[("content-type", "application/json")],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(
        (untitled.status, untitled.error_code()),
        (400, "title_required".to_owned())
    );
    // Marking several done is all or nothing: one missing id rolls back the others.
    let json_header = [("content-type", "application/json")];
    let partly_missing = public_request(
        "POST",
        &url("/todos/done"),
        &json_header,
        Some(format!(r#"{{"ids": [{id_text}, 999999999]}}"#).into_bytes()),
    )
    .await;
    assert_eq!(
        (partly_missing.status, partly_missing.error_code()),
        (404, "todo_not_found".to_owned())
    );
    let one = public_request("GET", &url(&format!("/todos/{id_text}")), &[], None).await;
    assert_eq!(one.json()["done"], false);
    let done = public_request(
        "POST",
        &url("/todos/done"),
        &json_header,
        Some(format!(r#"{{"ids": [{id_text}]}}"#).into_bytes()),
    )
    .await;
    assert_eq!(
        (done.status, done.json()["todos"][0]["done"].clone()),
        (200, json!(true))
    );
    // Its schema came from its migrations, recorded once.
    let (status, migrations) = warden.admin().get("/plugins/todos/migrations").await;
    assert_eq!(status, 200);
    let states: Vec<(&str, &str)> = migrations["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("001_todos", "applied"), ("002_todos_by_done", "applied")]
    );
    let deleted = public_request("DELETE", &url(&format!("/todos/{id_text}")), &[], None).await;
    assert_eq!(deleted.status, 204);
    let gone = public_request("GET", &url(&format!("/todos/{id_text}")), &[], None).await;
    assert_eq!(
        (gone.status, gone.error_code()),
        (404, "todo_not_found".to_owned())
    );
}
