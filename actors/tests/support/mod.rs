//! What the actors crate's integration tests share: where the local stack is, and names no
//! other test uses.
//!
//! The stack is found as the end-to-end tests find it: a `WARDEN_TEST_*` variable when set,
//! otherwise what `infra/up.sh` wrote to `infra/local.env`, otherwise the local stack's
//! defaults. PostgreSQL defaults to the machine's server on 127.0.0.1:5432 (trust auth, database
//! `test`), which the superuser tests here need (they create databases of their own).

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

/// `KEY=VALUE` lines of infra/local.env, when the file exists.
pub fn local_env() -> HashMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local.env");
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("export ").unwrap_or(line).split_once('='))
        .map(|(key, value)| {
            let value = value.trim().trim_matches('"').trim_matches('\'');
            (key.trim().to_string(), value.to_string())
        })
        .collect()
}

/// The Kafka brokers of the local stack: `WARDEN_TEST_KAFKA_BROKERS`, else
/// `WARDEN_KAFKA_BROKERS` of infra/local.env, else Tansu's default address.
pub fn kafka_brokers() -> String {
    stack_setting("WARDEN_TEST_KAFKA_BROKERS", "WARDEN_KAFKA_BROKERS")
        .unwrap_or_else(|| "127.0.0.1:9092".to_string())
}

/// A setting of the stack: the test variable when set and not empty, else the variable of
/// infra/local.env when not empty.
pub fn stack_setting(test_variable: &str, file_variable: &str) -> Option<String> {
    std::env::var(test_variable)
        .ok()
        .filter(|value| !value.is_empty())
        .or_else(|| local_env().remove(file_variable))
        .filter(|value| !value.is_empty())
}

const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of a database the tests may create tables and databases in.
pub fn database_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// `url` pointing at another database on the same server.
pub fn url_of_database(url: &str, database: &str) -> String {
    let (server, _) = url
        .rsplit_once('/')
        .expect("a database URL ends in /<database>");
    format!("{server}/{database}")
}

/// A name no other test (in this process or another) uses: lowercase letters, digits and `_`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
