//! Attacks on plugins' HTTP routes (`PLUGIN_API.md`, "HTTP routes"; `ARCHITECTURE.md`, "HTTP
//! routes"), by a hostile plugin and by hostile clients: responses that break HTTP framing or
//! forge the wire form, thenables and throws that cannot be printed, routes that cannot be read,
//! header injection, requests across reloads, label cardinality, path tricks and heap pressure.
//! Each test asserts what the contract (or the architecture's stated reading) requires.

use std::cell::Cell;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use serde_json::{json, Value};
use warden_tests::{public_request, wait_until, PublicAnswer, WardenProcess, PATIENCE};

async fn get(warden: &WardenProcess, path: &str) -> PublicAnswer {
    public_request("GET", &warden.public_url(path), &[], None).await
}

fn public_port(warden: &WardenProcess) -> u16 {
    warden
        .public_url("")
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the public listener's port")
}

/// Opens a raw connection to the public listener (for what an HTTP client library would not
/// send, or would hide).
fn connect(warden: &WardenProcess) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", public_port(warden))).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads what the server sends until it closes the connection (or the read times out).
fn read_all(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    String::from_utf8_lossy(&received).into_owned()
}

/// Writes `bytes` (one or more requests, the last with `Connection: close`) on one connection
/// and returns everything the server answered on it.
fn raw_exchange(warden: &WardenProcess, bytes: &[u8]) -> String {
    let mut stream = connect(warden);
    stream.write_all(bytes).unwrap();
    read_all(&mut stream)
}

/// `GET path` on its own connection, written as is (no normalization by a client library).
fn raw_get(warden: &WardenProcess, path: &str) -> String {
    raw_exchange(
        warden,
        format!("GET {path} HTTP/1.1\r\nHost: warden\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

async fn restarts(warden: &WardenProcess, name: &str) -> Value {
    warden.admin().plugin(name).await["restarts"].clone()
}

/// A status and headers that HTTP/1.1 says carry no body, with a body that is a whole response.
const SMUGGLER: &str = r#"
const forged = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nSMUGGLED";
export default {
  metadata: { name: "smuggler", version: "1.0.0" },
  routes: {
    "GET /no-content": () => ({ status: 204, body: forged }),
    "GET /not-modified": () => ({ status: 304, body: forged }),
  },
};
"#;

const VICTIM: &str = r#"
export default {
  metadata: { name: "victim", version: "1.0.0" },
  routes: {
    "GET /hello": () => ({ json: "victim-answer" }),
    "GET /secret": () => ({ json: "victim-secret" }),
  },
};
"#;

/// HTTP/1.1 (RFC 9112, section 6.3) gives 204 and 304 responses no body whatever their headers
/// say; a body written after one is read by the client as the next response on the connection,
/// which a proxy may share between clients and plugins.
#[actix_rt::test]
async fn a_204_or_304_with_a_body_cannot_inject_a_response_into_the_connection() {
    let warden = WardenProcess::start(
        &[("smuggler.js", SMUGGLER), ("victim.js", VICTIM)],
        &[],
        &[],
    );
    let received = raw_exchange(
        &warden,
        b"GET /api/smuggler/no-content HTTP/1.1\r\nHost: warden\r\n\r\n\
          GET /api/smuggler/not-modified HTTP/1.1\r\nHost: warden\r\n\r\n\
          GET /api/victim/hello HTTP/1.1\r\nHost: warden\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !received.contains("SMUGGLED"),
        "a bodiless status went out with a body, read as the next response:\n{received}"
    );
    assert_eq!(
        received.matches("HTTP/1.1 ").count(),
        3,
        "three requests, three responses:\n{received}"
    );
    assert!(received.contains("victim-answer"), "{received}");
}

/// The prelude checks a response, then the host sends whatever wire form reaches it; a plugin
/// that replaces a global the prelude uses (here `JSON.stringify`, once) chooses that form.
/// `ARCHITECTURE.md`: `status` must be an integer from 200 to 599.
#[actix_rt::test]
async fn a_forged_wire_form_cannot_send_a_status_outside_200_to_599() {
    let forger = r#"
export default {
  metadata: { name: "forger", version: "1.0.0" },
  routes: {
    "GET /forged": () => {
      const original = JSON.stringify;
      JSON.stringify = function () {
        JSON.stringify = original;
        return '{"kind":"text","status":999,"headers":[["x-forged","1"]],"text":"forged"}';
      };
      return { json: "real" };
    },
  },
};
"#;
    let warden = WardenProcess::start(&[("forger.js", forger)], &[], &[]);
    let answer = get(&warden, "/api/forger/forged").await;
    assert!(
        (200..=599).contains(&answer.status),
        "status {} went out: {:?}",
        answer.status,
        answer.json()
    );
    assert!(
        (answer.status, answer.error_code()) == (500, "invalid_response".to_owned())
            || answer.json() == json!("real"),
        "{} {:?}",
        answer.status,
        answer.json()
    );
}

const THENABLES: &str = r#"
export default {
  metadata: { name: "thenables", version: "1.0.0" },
  routes: {
    "GET /resolves": () => ({ then(resolve) { resolve({ json: { real: true } }); } }),
    "GET /resolves-later": () => ({ then(resolve) { setTimeout(() => resolve({ status: 201, json: "later" }), 10); } }),
    "GET /throws-status": () => ({ then() { throw Object.assign(new Error("brewing"), { status: 418, code: "teapot" }); } }),
  },
};
"#;

/// "The handler returns (or resolves to) a response": a thenable resolves as `await` resolves it.
#[actix_rt::test]
async fn a_thenable_response_is_awaited_like_a_promise() {
    let warden = WardenProcess::start(&[("thenables.js", THENABLES)], &[], &[]);
    let resolves = get(&warden, "/api/thenables/resolves").await;
    assert_eq!(
        (resolves.status, resolves.json()),
        (200, json!({"real": true})),
        "{:?}",
        resolves.error_code()
    );
    let later = get(&warden, "/api/thenables/resolves-later").await;
    assert_eq!((later.status, later.json()), (201, json!("later")));
    let thrown = get(&warden, "/api/thenables/throws-status").await;
    assert_eq!(
        (thrown.status, thrown.json()),
        (
            418,
            json!({"error": {"code": "teapot", "message": "brewing"}})
        )
    );
}

const UNPRINTABLE: &str = r#"
export default {
  metadata: { name: "unprintable", version: "1.0.0" },
  routes: {
    "GET /throw": () => { throw Object.create(null); },
    "GET /throw-object": () => { throw { toString() { throw new Error("cannot print me"); } }; },
    "GET /reject": async () => { throw Object.create(null); },
    "GET /ok": () => ({ json: "ok" }),
  },
};
"#;

/// "A handler that throws answers 500 handler_failed": a thrown value without a `toString` (or
/// with one that throws) is still just a throw, not a crash of the plugin's engine.
#[actix_rt::test]
async fn a_thrown_value_that_cannot_be_printed_answers_500_without_a_restart() {
    let warden = WardenProcess::start(&[("unprintable.js", UNPRINTABLE)], &[], &[]);
    for path in ["/api/unprintable/throw", "/api/unprintable/throw-object"] {
        let thrown = get(&warden, path).await;
        assert_eq!(
            (thrown.status, thrown.error_code()),
            (500, "handler_failed".to_owned()),
            "{path}"
        );
        let next = get(&warden, "/api/unprintable/ok").await;
        assert_eq!(
            (next.status, next.json()),
            (200, json!("ok")),
            "{path}: the plugin serves the next request at once"
        );
    }
    assert_eq!(restarts(&warden, "unprintable").await, 0);
}

/// The same value rejected by an async handler: answered 500 at once, not left to the time limit.
#[actix_rt::test]
async fn a_rejection_that_cannot_be_printed_answers_500_not_504() {
    let warden = WardenProcess::start(
        &[("unprintable.js", UNPRINTABLE)],
        &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "1500")],
        &[],
    );
    let rejected = get(&warden, "/api/unprintable/reject").await;
    assert_eq!(
        (rejected.status, rejected.error_code()),
        (500, "handler_failed".to_owned())
    );
}

/// A `json` member that JSON cannot hold (a function, a symbol) serializes to nothing, like
/// `json: undefined`, which `ARCHITECTURE.md` answers `500 invalid_response`.
#[actix_rt::test]
async fn a_json_member_that_serializes_to_nothing_answers_invalid_response() {
    let plugin = r#"
export default {
  metadata: { name: "nothing", version: "1.0.0" },
  routes: {
    "GET /function": () => ({ json: () => 1 }),
    "GET /symbol": () => ({ json: Symbol("s") }),
  },
};
"#;
    let warden = WardenProcess::start(&[("nothing.js", plugin)], &[], &[]);
    for path in ["/api/nothing/function", "/api/nothing/symbol"] {
        let answer = get(&warden, path).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (500, "invalid_response".to_owned()),
            "{path}: answered {} {:?}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
}

/// A module whose `routes` cannot be read is a malformed plugin (`422 invalid_plugin`), not an
/// unavailable one.
#[actix_rt::test]
async fn routes_that_throw_when_read_refuse_the_load_as_an_invalid_plugin() {
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();
    for routes in [
        "get routes() { throw new Error('routes getter'); },",
        "routes: new Proxy({}, { ownKeys() { throw new Error('ownKeys trap'); } }),",
        "routes: { get 'GET /x'() { throw new Error('handler getter'); } },",
    ] {
        warden.write_plugin(
            "sneaky.js",
            &format!(
                r#"export default {{ metadata: {{ name: "sneaky", version: "1.0.0" }}, {routes} }};"#
            ),
        );
        let (status, body) = api.load("sneaky.js").await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (422, json!("invalid_plugin")),
            "{routes}: {body}"
        );
    }
    assert_eq!(api.get("/plugins").await.1["plugins"], json!([]));
}

/// Headers a handler sets cannot inject headers or break framing; hop-by-hop ones are dropped.
#[actix_rt::test]
async fn response_headers_cannot_inject_headers_or_break_framing() {
    let plugin = r#"
export default {
  metadata: { name: "headers", version: "1.0.0" },
  routes: {
    "GET /crlf": () => ({ json: 1, headers: { "x-a": "ok\r\nx-injected: yes" } }),
    "GET /lf": () => ({ json: 1, headers: { "x-a": "ok\nx-injected: yes" } }),
    "GET /cr": () => ({ json: 1, headers: { "x-a": "ok\rx-injected: yes" } }),
    "GET /nul": () => ({ json: 1, headers: { "x-a": "a\u0000b" } }),
    "GET /content-type-crlf": () => ({ body: "x", headers: { "content-type": "text/html\r\nx-injected: yes" } }),
    "GET /name-space": () => ({ json: 1, headers: { "x a": "1" } }),
    "GET /name-colon": () => ({ json: 1, headers: { "x-injected: yes\r\nx-b": "1" } }),
    "GET /name-empty": () => ({ json: 1, headers: { "": "1" } }),
    "GET /name-pseudo": () => ({ json: 1, headers: { ":status": "200" } }),
    "GET /non-ascii": () => ({ json: 1, headers: { "x-name": "caf\u00e9" } }),
    "GET /framing": () => ({ body: "intact", headers: {
      "Transfer-Encoding": "chunked", "Content-Length": "1", "Connection": "close",
      "Keep-Alive": "timeout=1", "Upgrade": "h2c", "X-Request-Id": "forged", "TE": "trailers",
      "Trailer": "x-t", "Proxy-Connection": "close" } }),
  },
};
"#;
    let warden = WardenProcess::start(&[("headers.js", plugin)], &[], &[]);
    for path in [
        "/crlf",
        "/lf",
        "/cr",
        "/nul",
        "/content-type-crlf",
        "/name-space",
        "/name-colon",
        "/name-empty",
        "/name-pseudo",
    ] {
        let answer = get(&warden, &format!("/api/headers{path}")).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (500, "invalid_response".to_owned()),
            "{path}"
        );
        assert!(answer.header("x-injected").is_none(), "{path}");
        // The raw bytes too: no line of the response is the injected header.
        let raw = raw_get(&warden, &format!("/api/headers{path}"));
        assert!(
            !raw.lines()
                .any(|line| line.to_ascii_lowercase().starts_with("x-injected")),
            "{path}:\n{raw}"
        );
    }
    // A value outside visible ASCII is refused or sent as it is; never a crash, never a split.
    let non_ascii = get(&warden, "/api/headers/non-ascii").await;
    assert!(
        [200, 500].contains(&non_ascii.status),
        "{}",
        non_ascii.status
    );
    let framing = get(&warden, "/api/headers/framing").await;
    assert_eq!(framing.status, 200);
    assert_eq!(framing.body, b"intact");
    assert_eq!(framing.header("content-length"), Some("6"));
    for dropped in [
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    ] {
        assert!(framing.header(dropped).is_none(), "{dropped} was sent");
    }
    assert_ne!(framing.header("x-request-id"), Some("forged"));
}

/// Statuses and thrown values outside the contract's shapes: a string `status` is not an
/// integer, a thrown `status` must be numeric and from 400 to 599, and nothing leaks.
#[actix_rt::test]
async fn statuses_that_are_not_integers_from_200_to_599_never_pass_and_never_leak() {
    let plugin = r#"
export default {
  metadata: { name: "statuses", version: "1.0.0" },
  routes: {
    "GET /string": () => ({ status: "201", json: {} }),
    "GET /fraction": () => ({ status: 200.5, json: {} }),
    "GET /low": () => ({ status: 199, json: {} }),
    "GET /high": () => ({ status: 600, json: {} }),
    "GET /object": () => ({ status: { valueOf: () => 201 }, json: {} }),
    "GET /thrown-string": () => { throw Object.assign(new Error("leak-string"), { status: "404" }); },
    "GET /thrown-200": () => { throw Object.assign(new Error("leak-200"), { status: 200 }); },
    "GET /thrown-600": () => { throw Object.assign(new Error("leak-600"), { status: 600 }); },
    "GET /thrown-code": () => { throw Object.assign(new Error("told"), { status: 409, code: { toString() { return "x"; } }, name: "SecretName" }); },
  },
};
"#;
    let warden = WardenProcess::start(&[("statuses.js", plugin)], &[], &[]);
    for path in ["/string", "/fraction", "/low", "/high", "/object"] {
        let answer = get(&warden, &format!("/api/statuses{path}")).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (500, "invalid_response".to_owned()),
            "{path}"
        );
    }
    for (path, secret) in [
        ("/thrown-string", "leak-string"),
        ("/thrown-200", "leak-200"),
        ("/thrown-600", "leak-600"),
    ] {
        let answer = get(&warden, &format!("/api/statuses{path}")).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (500, "handler_failed".to_owned()),
            "{path}"
        );
        assert!(
            !String::from_utf8_lossy(&answer.body).contains(secret),
            "{path}"
        );
    }
    // A code that is not a string is `handler_error`; the body never carries the name.
    let coded = get(&warden, "/api/statuses/thrown-code").await;
    assert_eq!(
        (coded.status, coded.json()),
        (
            409,
            json!({"error": {"code": "handler_error", "message": "told"}})
        )
    );
}

/// A response whose getters throw is a handler failure: 500, the text in the log only, and the
/// plugin keeps running.
#[actix_rt::test]
async fn response_getters_that_throw_answer_500_without_leaking_or_restarting() {
    let plugin = r#"
export default {
  metadata: { name: "getters", version: "1.0.0" },
  routes: {
    "GET /json": () => ({ get json() { throw new Error("getter-secret-1"); } }),
    "GET /status": async () => ({ get status() { throw new Error("getter-secret-2"); } }),
    "GET /header": () => ({ json: 1, headers: { get "x-a"() { throw new Error("getter-secret-3"); } } }),
    "GET /keys": () => new Proxy({}, { ownKeys() { throw new Error("getter-secret-4"); } }),
    "GET /ok": () => ({ json: "ok" }),
  },
};
"#;
    let warden = WardenProcess::start(&[("getters.js", plugin)], &[], &[]);
    for path in ["/json", "/status", "/header", "/keys"] {
        let answer = get(&warden, &format!("/api/getters{path}")).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (500, "handler_failed".to_owned()),
            "{path}"
        );
        assert!(
            !String::from_utf8_lossy(&answer.body).contains("getter-secret"),
            "{path}"
        );
        assert_eq!(get(&warden, "/api/getters/ok").await.json(), "ok", "{path}");
    }
    assert_eq!(restarts(&warden, "getters").await, 0);
}

/// Bodies that are a `Uint8Array` in another shape: a subclass, a view on part of a buffer, an
/// `ArrayBuffer`; and a proxy that lies about being one, which must not harm the plugin.
#[actix_rt::test]
async fn uint8array_subclasses_views_and_liars_send_their_own_bytes_or_fail_cleanly() {
    let plugin = r#"
class Bytes extends Uint8Array {}
export default {
  metadata: { name: "bytes", version: "1.0.0" },
  routes: {
    "GET /subclass": () => ({ body: new Bytes([1, 2, 3]) }),
    "GET /view": () => ({ body: new Uint8Array([9, 1, 2, 3, 9]).subarray(1, 4) }),
    "GET /buffer": () => ({ body: new Uint8Array([1, 2, 3]).buffer }),
    "GET /liar": () => ({ body: new Proxy(new Uint8Array([1, 2, 3]), { get: (target, key) => key === "length" ? 3 : 300 }) }),
    "GET /huge-length": () => { class Long extends Uint8Array { get length() { return 2 ** 31; } } return { body: new Long(3) }; },
    "GET /ok": () => ({ json: "ok" }),
  },
};
"#;
    let warden = WardenProcess::start(
        &[("bytes.js", plugin)],
        &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "1000")],
        &[],
    );
    for path in ["/subclass", "/view", "/buffer"] {
        let answer = get(&warden, &format!("/api/bytes{path}")).await;
        assert_eq!(
            answer.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!((answer.status, answer.body), (200, vec![1, 2, 3]), "{path}");
    }
    for path in ["/liar", "/huge-length"] {
        let answer = get(&warden, &format!("/api/bytes{path}")).await;
        assert!(
            answer.status == 200 || answer.status >= 500,
            "{path}: {}",
            answer.status
        );
    }
    // Whatever those answered, the process still serves, and the plugin again once restarted.
    assert!(
        wait_until(PATIENCE, || async {
            get(&warden, "/api/bytes/ok").await.status == 200
        })
        .await
    );
}

/// A reload whose new version fails to initialize restores the old one; a request that arrived
/// while the old version drained its calls is then answered by it ("each request is answered by
/// the old or the new version, never lost"), not held for three call time limits and refused.
#[actix_rt::test]
async fn a_failed_reload_answers_the_requests_that_waited_for_it_with_the_old_version() {
    let v1 = r#"
export default {
  metadata: { name: "flaky", version: "1.0.0" },
  routes: {
    "GET /slow": () => {
      console.log("flaky-slow-started");
      return new Promise((resolve) => setTimeout(() => resolve({ json: "slow" }), 1500));
    },
    "GET /v": () => ({ json: "v1" }),
  },
};
"#;
    let v2 = r#"
export default {
  metadata: { name: "flaky", version: "2.0.0" },
  routes: { "GET /v": () => ({ json: "v2" }) },
  async initialize() { throw new Error("v2 cannot start"); },
};
"#;
    let warden = WardenProcess::start(
        &[("flaky.js", v1)],
        &[("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "3000")],
        &[],
    );
    let api = warden.admin();
    let version_url = warden.public_url("/api/flaky/v");
    let slow = get(&warden, "/api/flaky/slow");
    let reload_done = Cell::new(false);
    let scenario = async {
        assert!(warden.wait_for_log("flaky-slow-started", PATIENCE).await);
        warden.write_plugin("flaky.js", v2);
        let reload = async {
            let answer = api.post("/plugins/flaky/reload", None).await;
            reload_done.set(true);
            answer
        };
        // Ask again and again while the old version drains `/slow`, and until the reload ends.
        let probes = async {
            let mut answers = Vec::new();
            while !reload_done.get() && answers.len() < 10_000 {
                let started = std::time::Instant::now();
                let answer = public_request("GET", &version_url, &[], None).await;
                answers.push((answer.status, answer.json(), started.elapsed()));
            }
            answers
        };
        futures::join!(reload, probes)
    };
    let (slow, (reload, probes)) = futures::join!(slow, scenario);
    assert_eq!((slow.status, slow.json()), (200, json!("slow")), "drained");
    assert_eq!(reload.0, 422, "{}", reload.1);
    assert!(!probes.is_empty());
    for (status, body, took) in &probes {
        assert_eq!(
            (*status, body),
            (200, &json!("v1")),
            "a request during the failed reload answered {status} {body} after {took:?}"
        );
    }
    assert_eq!(get(&warden, "/api/flaky/v").await.json(), "v1");
}

/// The route is matched when the request's head arrives; a reload that completes while its body
/// is still arriving must not lose it: the old or the new version answers it.
#[actix_rt::test]
async fn a_request_whose_body_arrives_across_a_reload_is_answered_by_a_version() {
    let version = |number: &str| {
        format!(
            r#"export default {{ metadata: {{ name: "upload", version: "{number}.0.0" }},
               routes: {{ "POST /echo": (request) => ({{ json: {{ version: "{number}", body: request.body }} }}) }} }};"#
        )
    };
    let warden = WardenProcess::start(&[("upload.js", &version("1"))], &[], &[]);
    let api = warden.admin();
    let mut stream = connect(&warden);
    stream
        .write_all(
            b"POST /api/upload/echo HTTP/1.1\r\nHost: warden\r\nContent-Type: text/plain\r\n\
              Content-Length: 10\r\nConnection: close\r\n\r\nhello",
        )
        .unwrap();
    stream.flush().unwrap();
    warden.write_plugin("upload.js", &version("2"));
    let (status, body) = api.post("/plugins/upload/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let fresh = public_request(
        "POST",
        &warden.public_url("/api/upload/echo"),
        &[("content-type", "text/plain")],
        Some(b"new".to_vec()),
    )
    .await;
    assert_eq!(fresh.json()["version"], "2");
    stream.write_all(b"world").unwrap();
    let received = read_all(&mut stream);
    assert!(
        received.starts_with("HTTP/1.1 200"),
        "the request was lost across the reload:\n{received}"
    );
    assert!(received.contains("helloworld"), "{received}");
}

/// The value of label `name` in a Prometheus text line.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + line[start..].find('"')?;
    Some(&line[start..end])
}

const LABELS: &str = r#"
export default {
  metadata: { name: "labels", version: "1.0.0" },
  routes: {
    "GET /items/:id": (request) => ({ json: request.params.id }),
    "* /any": (request) => ({ json: request.method }),
  },
};
"#;

/// Clients choose methods, plugin names and paths; none of them may become a label value.
#[actix_rt::test]
async fn clients_cannot_grow_the_metric_label_set() {
    let warden = WardenProcess::start(&[("labels.js", LABELS)], &[], &[]);
    let long_method = "X".repeat(60);
    for method in ["BREW", "get", "M-SEARCH", "PROPFIND", long_method.as_str()] {
        for path in [
            "/api/labels/any",
            "/api/labels/items/1",
            "/api/labels/nowhere",
        ] {
            public_request(method, &warden.public_url(path), &[], None).await;
        }
    }
    for index in 0..5 {
        get(&warden, &format!("/api/nobody-{index}/x")).await;
        get(&warden, &format!("/api/labels/random-{index}")).await;
        get(&warden, &format!("/elsewhere-{index}")).await;
        get(&warden, &format!("/api/labels/items/{index}")).await;
    }
    let (_, metrics) = warden.admin().get_text("/metrics").await;
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("warden_http_request"))
        .collect();
    assert!(!lines.is_empty(), "{metrics}");
    for line in lines {
        assert!(
            matches!(label(line, "plugin"), Some("" | "labels")),
            "{line}"
        );
        assert!(
            matches!(label(line, "route"), Some("" | "GET /items/:id" | "* /any")),
            "{line}"
        );
        if let Some(method) = label(line, "method") {
            assert!(
                ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"]
                    .contains(&method),
                "{line}"
            );
        }
    }
}

/// `ARCHITECTURE.md`: `plugin` is empty when the path names no loaded plugin, `route` when no
/// route matched.
#[actix_rt::test]
async fn a_request_no_route_matched_is_counted_with_an_empty_route() {
    let warden = WardenProcess::start(&[("labels.js", LABELS)], &[], &[]);
    assert_eq!(get(&warden, "/api/labels/nowhere").await.status, 404);
    assert_eq!(get(&warden, "/api/nobody-loaded/x").await.status, 404);
    assert_eq!(
        public_request("POST", &warden.public_url("/api/labels/items/1"), &[], None)
            .await
            .status,
        405
    );
    let (_, metrics) = warden.admin().get_text("/metrics").await;
    for status in ["404", "405"] {
        let counted: Vec<&str> = metrics
            .lines()
            .filter(|line| {
                line.starts_with("warden_http_requests_total")
                    && label(line, "status") == Some(status)
            })
            .collect();
        assert!(!counted.is_empty(), "{status}: {metrics}");
        for line in counted {
            // `plugin` is set only for a loaded plugin, so no client can make up label values.
            assert!(
                matches!(label(line, "plugin"), Some("" | "labels")),
                "{line}"
            );
            assert_eq!(label(line, "route"), Some(""), "{line}");
        }
    }
    assert!(!metrics.contains("nobody-loaded"), "{metrics}");
}

/// A client's `x-request-id` is kept only when it is 1–128 visible ASCII characters; otherwise
/// the handler and the response get a new id (no log or header injection through it).
#[actix_rt::test]
async fn a_client_request_id_that_is_not_a_plain_token_is_replaced() {
    let plugin = r#"
export default {
  metadata: { name: "ids", version: "1.0.0" },
  routes: { "GET /id": (request) => ({ json: request.id }) },
};
"#;
    let warden = WardenProcess::start(&[("ids.js", plugin)], &[], &[]);
    let url = warden.public_url("/api/ids/id");
    let too_long = "a".repeat(129);
    for id in ["with space", too_long.as_str(), "tab\there", "caf\u{e9}"] {
        let answer = public_request("GET", &url, &[("x-request-id", id)], None).await;
        assert_eq!(answer.status, 200, "{id:?}");
        let sent = answer.header("x-request-id").expect("an id").to_owned();
        assert_ne!(sent, id, "{id:?} was kept");
        assert_eq!(
            answer.json(),
            json!(sent),
            "the handler saw the id sent back"
        );
    }
    let longest = "b".repeat(128);
    let kept = public_request("GET", &url, &[("x-request-id", longest.as_str())], None).await;
    assert_eq!(kept.header("x-request-id"), Some(longest.as_str()));
}

/// A JSON body nested far deeper than the engine's stack allows: refused as `400 invalid_json`
/// before the handler runs (or parsed), and neither the plugin nor the process is harmed.
#[actix_rt::test]
async fn a_deeply_nested_json_body_is_400_and_harms_nothing() {
    let plugin = r#"
export default {
  metadata: { name: "deep", version: "1.0.0" },
  calls: 0,
  routes: {
    "POST /parse": function (request) { this.calls += 1; return { json: typeof request.json }; },
    "GET /calls": function () { return { json: this.calls }; },
  },
};
"#;
    let warden = WardenProcess::start(&[("deep.js", plugin)], &[], &[]);
    let depth = 200_000;
    let mut body = "[".repeat(depth).into_bytes();
    body.extend("]".repeat(depth).into_bytes());
    let answer = public_request(
        "POST",
        &warden.public_url("/api/deep/parse"),
        &[("content-type", "application/json")],
        Some(body),
    )
    .await;
    // Refused as not JSON before the handler runs, or parsed and handed to it: either way the
    // plugin answers, is not restarted, and keeps serving.
    let calls = get(&warden, "/api/deep/calls").await.json();
    assert!(
        ((answer.status, answer.error_code()) == (400, "invalid_json".to_owned())
            && calls == json!(0))
            || ((answer.status, answer.json()) == (200, json!("object")) && calls == json!(1)),
        "{} {:?}, calls {calls}",
        answer.status,
        answer.json()
    );
    assert_eq!(restarts(&warden, "deep").await, 0);
}

/// `MAX_ROUTES` routes load (named and `*` ones, which every method's router holds), one more
/// is refused at load, and so is an oversized key.
#[actix_rt::test]
async fn a_thousand_routes_load_and_more_or_oversized_keys_are_refused() {
    let routes = |count: usize| {
        (0..count)
            .map(|index| {
                if index % 2 == 0 {
                    format!(r#""* /any{index}/:id": (request) => ({{ json: request.params.id }}),"#)
                } else {
                    format!(r#""GET /get{index}": () => ({{ json: {index} }}),"#)
                }
            })
            .collect::<String>()
    };
    let plugin = |routes: &str| {
        format!(
            r#"export default {{ metadata: {{ name: "many", version: "1.0.0" }}, routes: {{ {routes} }} }};"#
        )
    };
    let warden = WardenProcess::start(&[], &[], &[]);
    let api = warden.admin();
    warden.write_plugin("many.js", &plugin(&routes(1000)));
    let (status, body) = api.load("many.js").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        api.plugin("many").await["routes"].as_array().map(Vec::len),
        Some(1000)
    );
    assert_eq!(get(&warden, "/api/many/get999").await.json(), json!(999));
    let deleted = public_request(
        "DELETE",
        &warden.public_url("/api/many/any998/x"),
        &[],
        None,
    )
    .await;
    assert_eq!(deleted.json(), "x");
    assert_eq!(api.delete("/plugins/many").await.0, 204);

    warden.write_plugin("many.js", &plugin(&routes(1001)));
    let (status, body) = api.load("many.js").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_plugin")),
        "{body}"
    );
    let long = format!(r#""GET /{}": () => null,"#, "a".repeat(5000));
    warden.write_plugin("many.js", &plugin(&long));
    let (status, body) = api.load("many.js").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_plugin")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().len() < 4096,
        "the refusal stays short"
    );
}

/// Concurrent uploads within `WARDEN_HTTP_MAX_BODY_BYTES` to a handler that awaits: each request
/// object lives in the plugin's heap until its handler answers, so an anonymous client can
/// exhaust that heap and restart the plugin (then mark it `failed`) with traffic alone.
#[actix_rt::test]
async fn concurrent_uploads_within_the_body_limit_cannot_exhaust_the_plugin_heap() {
    let plugin = r#"
export default {
  metadata: { name: "uploads", version: "1.0.0" },
  routes: {
    "POST /upload": async (request) => {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      return { json: request.body.length };
    },
  },
};
"#;
    let warden = WardenProcess::start(
        &[("uploads.js", plugin)],
        &[("WARDEN_PLUGIN_MEMORY_MB", "16")],
        &[],
    );
    let url = warden.public_url("/api/uploads/upload");
    let answers = futures::future::join_all((0..24).map(|_| {
        public_request(
            "POST",
            &url,
            &[("content-type", "application/octet-stream")],
            Some(vec![7; 1 << 20]),
        )
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    // Served, or shed with 503; never failed with the heap (500) and a restart.
    assert!(
        statuses.iter().all(|status| [200, 503].contains(status)),
        "{statuses:?}"
    );
    assert_eq!(
        restarts(&warden, "uploads").await,
        0,
        "client traffic alone restarted the plugin; statuses {statuses:?}"
    );
}

/// `ARCHITECTURE.md`: `Retry-After` is 30 s once the plugin has failed.
#[actix_rt::test]
async fn a_failed_plugin_answers_503_with_retry_after_30() {
    let plugin = r#"
export default {
  metadata: { name: "spinner", version: "1.0.0" },
  routes: {
    "GET /spin": () => { while (true) {} },
    "GET /ok": () => ({ json: "ok" }),
  },
};
"#;
    let warden = WardenProcess::start(
        &[("spinner.js", plugin)],
        &[
            ("WARDEN_PLUGIN_CALL_TIMEOUT_MS", "300"),
            ("WARDEN_PLUGIN_MAX_RESTARTS", "1"),
        ],
        &[],
    );
    let api = warden.admin();
    assert_eq!(get(&warden, "/api/spinner/spin").await.status, 504);
    assert!(
        wait_until(PATIENCE, || async {
            let info = api.plugin("spinner").await;
            info["state"] == "running" && info["restarts"] == 1
        })
        .await
    );
    assert_eq!(get(&warden, "/api/spinner/spin").await.status, 504);
    assert!(
        wait_until(PATIENCE, || async {
            api.plugin("spinner").await["state"] == "failed"
        })
        .await
    );
    let refused = get(&warden, "/api/spinner/ok").await;
    assert_eq!(
        (refused.status, refused.error_code()),
        (503, "plugin_unavailable".to_owned())
    );
    assert_eq!(refused.header("retry-after"), Some("30"));
}

/// Dot segments, encoded slashes and empty segments never send a request to a plugin other than
/// the one its first segment after `/api/` names.
#[actix_rt::test]
async fn path_tricks_never_reach_another_plugin() {
    let evil = r#"
export default {
  metadata: { name: "evil", version: "1.0.0" },
  routes: { "* /*rest": (request) => ({ json: { evil: request.params.rest, path: request.path } }) },
};
"#;
    let warden = WardenProcess::start(&[("evil.js", evil), ("victim.js", VICTIM)], &[], &[]);
    for path in [
        "/api/evil/../victim/secret",
        "/api/evil/%2e%2e/victim/secret",
        "/api/evil/..%2Fvictim/secret",
        "/api/evil%2F..%2Fvictim/secret",
    ] {
        let answer = raw_get(&warden, path);
        assert!(!answer.contains("victim-secret"), "{path}:\n{answer}");
    }
    for path in [
        "/api/victim/../evil/x",
        "/api/victim/%2e%2e/evil/x",
        "/api/victim%2F..%2Fevil/x",
        "/api//evil/x",
        "/api/./evil/x",
        "/api/%65vil/x",
        "/API/evil/x",
        "/api/evil%00/x",
    ] {
        let answer = raw_get(&warden, path);
        assert!(!answer.contains("\"evil\""), "{path}:\n{answer}");
    }
    // The raw path reaches the plugin its first segment names, undecoded.
    let seen = raw_get(&warden, "/api/evil/a/../b%2Fc");
    assert!(seen.contains(r#""path":"/a/../b%2Fc""#), "{seen}");
}

/// Helper check for the raw-connection helpers: a plain request answers as `public_request` does.
#[actix_rt::test]
async fn the_raw_connection_helper_reads_a_whole_answer() {
    let warden = WardenProcess::start(&[("victim.js", VICTIM)], &[], &[]);
    let answer = raw_get(&warden, "/api/victim/hello");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\"victim-answer\""), "{answer}");
}
