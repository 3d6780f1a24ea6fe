//! Harness for Warden's end-to-end tests: it runs the real `warden` binary and talks to it over
//! HTTP, exactly as an operator would.
//!
//! - [`WardenProcess`] writes plugin files into a fresh temporary directory, starts
//!   `warden serve` on a port chosen by the kernel, collects its log lines, and stops it;
//!   [`WardenProcess::start_with_stack`] points it at the local stack ([`local_stack_env`]) and
//!   [`WardenProcess::restart`] starts a new process on the same plugins directory.
//! - [`Admin`] is a small admin-API client (awc) answering `(status, JSON body)`.
//! - [`EventStream`] reads server-sent events from `GET /events/stream`.
//! - [`proxy::TcpProxy`] forwards to a service until a test cuts it (a node losing its
//!   database while the others keep it).
//! - [`wait_until`] polls a condition until it holds or a deadline passes, so tests wait for
//!   what they expect instead of sleeping.
//!
//! The harness depends only on the binary and the admin contract (`ADMIN_API.md`), never on
//! Warden's crates, so the tests check what operators see.

pub mod proxy;

use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use awc::http::Method;
use futures::StreamExt as _;
use serde_json::Value;

/// The admin token every test process is started with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// How long tests wait for something that should happen soon (generous: CI machines are busy).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long a process may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Lines the process wrote to stderr, and whether stderr has closed.
#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

type SharedLog = Arc<(Mutex<LogState>, Condvar)>;

/// A running `warden serve` with its own plugins directory and port.
pub struct WardenProcess {
    child: Child,
    port: u16,
    /// The public listener's port, when it is on.
    public_port: Option<u16>,
    /// Holds the plugins directory (`<root>/plugins`) and files that must lie outside it.
    /// Always `Some`, except while [`WardenProcess::restart`] hands it to the next process.
    root: Option<tempfile::TempDir>,
    plugins_dir: PathBuf,
    /// The environment given at start, which a restart gives again.
    env: Vec<(String, String)>,
    log: SharedLog,
    reader: Option<JoinHandle<()>>,
}

/// The binary under test: `$WARDEN_BIN` when set (the benchmarks' release build), else the
/// `warden` beside the running test binary. The end-to-end tests are an integration test of the
/// `warden` package, so cargo builds that binary, in the same profile directory
/// (`target/<profile>/warden` beside `target/<profile>/deps/end_to_end-…`), for every test run.
pub fn warden_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WARDEN_BIN") {
        return PathBuf::from(path);
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    profile_dir.join("warden")
}

impl WardenProcess {
    /// Writes `plugins` (file name, text) into a fresh plugins directory, then starts
    /// `warden serve --bind 127.0.0.1:0 --plugins-dir <dir> <args>` with `env` on top of
    /// `WARDEN_ADMIN_TOKEN`, and returns once it listens.
    pub fn start(plugins: &[(&str, &str)], env: &[(&str, &str)], args: &[&str]) -> WardenProcess {
        let env = env
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        WardenProcess::start_owned(plugins, env, args)
    }

    /// [`WardenProcess::start`] pointed at the local stack: the settings of
    /// [`local_stack_env`], then `extra_env` on top of them.
    pub fn start_with_stack(
        plugins: &[(&str, &str)],
        extra_env: &[(&str, &str)],
        args: &[&str],
    ) -> WardenProcess {
        let mut env = local_stack_env();
        env.extend(
            extra_env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string())),
        );
        WardenProcess::start_owned(plugins, env, args)
    }

    fn start_owned(
        plugins: &[(&str, &str)],
        env: Vec<(String, String)>,
        args: &[&str],
    ) -> WardenProcess {
        let root = tempfile::tempdir().expect("cannot create a temporary directory");
        let plugins_dir = root.path().join("plugins");
        std::fs::create_dir(&plugins_dir).expect("cannot create the plugins directory");
        for (name, text) in plugins {
            write_file(&plugins_dir.join(name), text);
        }
        WardenProcess::spawn(root, env, args)
    }

    /// Starts a new `warden serve` on this process's plugins directory (its files as they are
    /// now) with the same environment and `args`. Call [`WardenProcess::terminate`] first: two
    /// processes would share the directory and the stored state.
    pub fn restart(mut self, args: &[&str]) -> WardenProcess {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let root = self.root.take().expect("the plugins directory is held");
        let env = std::mem::take(&mut self.env);
        WardenProcess::spawn(root, env, args)
    }

    /// Starts `warden serve` on `<root>/plugins`, and returns once it listens.
    fn spawn(root: tempfile::TempDir, env: Vec<(String, String)>, args: &[&str]) -> WardenProcess {
        let binary = warden_binary();
        assert!(
            binary.is_file(),
            "the warden binary is missing at {}: run the tests through cargo (`cargo test -p warden --test end_to_end`), which builds it, or set WARDEN_BIN",
            binary.display()
        );
        let plugins_dir = root.path().join("plugins");

        let mut command = Command::new(&binary);
        // Settings from the environment of whoever runs the tests must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WARDEN_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--plugins-dir")
            .arg(&plugins_dir);
        // The public listener on a port of its own, unless the test chose one (or `off`).
        let public_off = args
            .windows(2)
            .any(|pair| pair[0] == "--http-bind" && pair[1].eq_ignore_ascii_case("off"));
        if !args.contains(&"--http-bind") {
            command.arg("--http-bind").arg("127.0.0.1:0");
        }
        command
            .args(args)
            // The working directory has no `warden.toml`, so only these settings apply.
            .current_dir(root.path())
            .env("WARDEN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("WARDEN_LOG", "info")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));

        let log: SharedLog = Arc::default();
        let stderr = child.stderr.take().expect("stderr is piped");
        let reader_log = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (state, changed) = &*reader_log;
                state.lock().unwrap().lines.push(line);
                changed.notify_all();
            }
            let (state, changed) = &*reader_log;
            state.lock().unwrap().closed = true;
            changed.notify_all();
        });

        let mut process = WardenProcess {
            child,
            port: 0,
            public_port: None,
            root: Some(root),
            plugins_dir,
            env,
            log,
            reader: Some(reader),
        };
        process.port = process.wait_for_port("listening on 127.0.0.1:");
        if !public_off {
            process.public_port = Some(process.wait_for_port("public listener on 127.0.0.1:"));
        }
        process
    }

    /// Blocks until a line `<prefix>PORT` (`listening on 127.0.0.1:PORT`), and returns the port.
    fn wait_for_port(&mut self, prefix: &str) -> u16 {
        let deadline = Instant::now() + START_TIMEOUT;
        let (state, changed) = &*self.log;
        let mut guard = state.lock().unwrap();
        loop {
            let port = guard.lines.iter().find_map(|line| {
                let (_, rest) = line.split_once(prefix)?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u16>().ok()
            });
            if let Some(port) = port {
                return port;
            }
            let now = Instant::now();
            if guard.closed || now >= deadline {
                let lines = guard.lines.join("\n");
                drop(guard);
                let _ = self.child.kill();
                panic!(
                    "warden did not print '{prefix}' ({}); its log:\n{lines}",
                    if now >= deadline {
                        "timed out"
                    } else {
                        "it exited"
                    }
                );
            }
            guard = changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// The port the admin server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The public listener's port, when it is on.
    pub fn public_port(&self) -> Option<u16> {
        self.public_port
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:PUBLIC_PORT<path>` on the public listener (plugins' routes).
    pub fn public_url(&self, path: &str) -> String {
        let port = self.public_port.expect("the public listener is on");
        format!("http://127.0.0.1:{port}{path}")
    }

    /// An admin client that sends the process's token.
    pub fn admin(&self) -> Admin {
        Admin::new(self.url(""), Some(ADMIN_TOKEN.to_string()))
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// Writes (or replaces) a file in the plugins directory; `name` may contain `/`.
    pub fn write_plugin(&self, name: &str, text: &str) {
        write_file(&self.plugins_dir.join(name), text);
    }

    /// Writes a file next to the plugins directory (outside it), for confinement tests.
    pub fn write_outside(&self, name: &str, text: &str) {
        let root = self.root.as_ref().expect("the plugins directory is held");
        write_file(&root.path().join(name), text);
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    /// The index of the first log line containing `substring`.
    pub fn log_index(&self, substring: &str) -> Option<usize> {
        self.log
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .position(|line| line.contains(substring))
    }

    /// How many log lines contain `substring`.
    pub fn log_count(&self, substring: &str) -> usize {
        self.log
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|line| line.contains(substring))
            .count()
    }

    /// Waits until a log line contains `substring`; false if `timeout` passes first.
    pub async fn wait_for_log(&self, substring: &str, timeout: Duration) -> bool {
        wait_until(
            timeout,
            || async move { self.log_index(substring).is_some() },
        )
        .await
    }

    /// Kills the process with SIGKILL (a crash: nothing runs on the way out) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; every log line is collected
    /// when this returns.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("cannot wait for warden") {
                break exit;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "warden did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        exit
    }
}

/// The settings that point `warden serve` at the local stack: the `KEY=VALUE` lines of
/// `<repo>/infra/local.env`, which `just infra-up` writes (`#` lines and blank lines skipped).
pub fn local_stack_env() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("infra")
        .join("local.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {} ({error}): run `just infra-up` first to start the local stack",
            path.display()
        )
    });
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or_else(|| {
                panic!(
                    "{}: '{line}' is not KEY=VALUE: run `just infra-up` first to rewrite it",
                    path.display()
                )
            });
            (key.trim().to_string(), value.trim().to_string())
        })
        .collect()
}

impl Drop for WardenProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- warden log ---\n{}", self.logs().join("\n"));
        }
    }
}

fn write_file(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", parent.display()));
    }
    std::fs::write(path, text)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}

/// Polls `condition` every 20 ms until it is true (then true) or `timeout` passes (then false).
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One answer of the public listener, headers with lowercase names.
#[derive(Debug)]
pub struct PublicAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl PublicAnswer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON (`Value::Null` when empty, a string when it is not JSON).
    pub fn json(&self) -> Value {
        parse_body(&self.body)
    }

    /// The `error.code` of a public-listener error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Sends one request to `url` (a plugin route on the public listener) and reads the answer.
pub async fn public_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> PublicAnswer {
    let method = Method::from_bytes(method.as_bytes()).expect("a valid method");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    let mut request = client.request(method.clone(), url);
    for (name, value) in headers {
        request = request.append_header((*name, *value));
    }
    let response = match body {
        Some(body) => request.send_body(body).await,
        None => request.send().await,
    };
    let mut response = response.unwrap_or_else(|error| panic!("{method} {url} failed: {error}"));
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .unwrap_or_else(|error| panic!("{method} {url}: cannot read the body: {error}"));
    PublicAnswer {
        status: response.status().as_u16(),
        headers,
        body: body.to_vec(),
    }
}

/// A client of the admin API. Every call answers `(status, body)`, the body parsed as JSON
/// (`Value::Null` when empty, a JSON string when it is not JSON).
#[derive(Clone)]
pub struct Admin {
    client: awc::Client,
    base: String,
    token: Option<String>,
}

impl Admin {
    /// A client of the server at `base` (`http://host:port`) sending `token`, if any.
    pub fn new(base: String, token: Option<String>) -> Admin {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        Admin {
            client,
            base,
            token,
        }
    }

    /// The same client with another token (`None`: no `Authorization` header).
    pub fn with_token(&self, token: Option<&str>) -> Admin {
        Admin {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    fn request(&self, method: Method, path: &str) -> awc::ClientRequest {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.insert_header(("Authorization", format!("Bearer {token}"))),
            None => request,
        }
    }

    /// Sends `body` as JSON (or no body).
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let request = self.request(method.clone(), path);
        let response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        let (status, bytes) = read(response, &method, path).await;
        (status, parse_body(&bytes))
    }

    /// Sends raw bytes as `application/json`, for malformed bodies.
    pub async fn send_raw(&self, method: Method, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .request(method.clone(), path)
            .insert_header(("Content-Type", "application/json"))
            .send_body(body.to_string())
            .await;
        let (status, bytes) = read(response, &method, path).await;
        (status, parse_body(&bytes))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None).await
    }

    /// `GET path`, the body as text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.request(Method::GET, path).send().await;
        let (status, bytes) = read(response, &Method::GET, path).await;
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `POST path` with a JSON body, or none.
    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(Method::POST, path, body).await
    }

    /// `PUT path` with a JSON body, or none.
    pub async fn put(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(Method::PUT, path, body).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(Method::DELETE, path, None).await
    }

    /// `POST /plugins` with `{"path": path}`.
    pub async fn load(&self, path: &str) -> (u16, Value) {
        self.post("/plugins", Some(serde_json::json!({ "path": path })))
            .await
    }

    /// `POST /plugins/{name}/execute` with `input`.
    pub async fn execute(&self, name: &str, input: Value) -> (u16, Value) {
        self.post(&format!("/plugins/{name}/execute"), Some(input))
            .await
    }

    /// `GET /plugins/{name}`'s body, or `Value::Null` when it is not 200.
    pub async fn plugin(&self, name: &str) -> Value {
        match self.get(&format!("/plugins/{name}")).await {
            (200, info) => info,
            _ => Value::Null,
        }
    }

    /// Opens `GET /events/stream?pattern=<pattern>`.
    pub async fn event_stream(&self, pattern: &str) -> EventStream {
        let path = format!("/events/stream?pattern={}", percent_encode(pattern));
        let response = self
            .request(Method::GET, &path)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} failed: {error}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        EventStream {
            status,
            content_type,
            body: Box::pin(response.map(|chunk| chunk.map(|bytes| bytes.to_vec()))),
            buffer: String::new(),
        }
    }
}

async fn read(
    response: Result<awc::ClientResponse, awc::error::SendRequestError>,
    method: &Method,
    path: &str,
) -> (u16, Vec<u8>) {
    let mut response = response.unwrap_or_else(|error| panic!("{method} {path} failed: {error}"));
    let status = response.status().as_u16();
    let bytes = response
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: cannot read the body: {error}"));
    (status, bytes.to_vec())
}

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Percent-encodes a query value (patterns hold `:` and `*`).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

type ChunkStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, awc::error::PayloadError>>>>;

/// An open `text/event-stream` response, read one message (up to a blank line) at a time.
pub struct EventStream {
    /// The response status.
    pub status: u16,
    /// The response `Content-Type`.
    pub content_type: String,
    body: ChunkStream,
    buffer: String,
}

impl EventStream {
    /// The next message or comment block, without its final blank line; `None` if the stream
    /// ends or `timeout` passes first.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let message = self.buffer[..end].to_string();
                self.buffer.drain(..end + 2);
                return Some(message);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }

    /// The next message that is not a comment (comments start with `:`).
    pub async fn next_event(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.next_message(left).await?;
            if !message.starts_with(':') {
                return Some(message);
            }
        }
    }
}

/// The `error.code` of an error body (empty when there is none).
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Asserts an error answer: its status, its `error.code`, and a non-empty `error.message`.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(
        (answer.0, error_code(&answer.1)),
        (status, code),
        "unexpected answer: {answer:?}"
    );
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "the error has no message: {answer:?}"
    );
}

/// The names in a `GET /plugins` body, in the order given.
pub fn plugin_names(list: &Value) -> Vec<String> {
    list["plugins"]
        .as_array()
        .map(|plugins| {
            plugins
                .iter()
                .filter_map(|plugin| plugin["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One name per partition of a topic of `partitions`, each `<base>-<n>`, so that messages keyed
/// by them land one on each partition.
pub fn one_key_per_partition(base: &str, partitions: u32) -> Vec<String> {
    (0..partitions)
        .filter_map(|partition| {
            (0u32..)
                .map(|index| format!("{base}-{index}"))
                .find(|name| partition_of(name, partitions) == partition)
        })
        .collect()
}

/// librdkafka's partition of a keyed message (its default partitioner: CRC-32 of the key).
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in key.as_bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc % partitions
}
