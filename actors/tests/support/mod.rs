//! What the actors crate's integration tests share: where the local stack is, and names no
//! other test uses.
//!
//! The stack is found as the end-to-end tests find it: `WARDEN_TEST_DATABASE_URL` when set,
//! otherwise the machine's PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`), which the
//! superuser tests here need (they create databases of their own).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

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
