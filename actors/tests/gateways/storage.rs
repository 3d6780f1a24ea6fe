//! S3 gateway tests against the real Garage of the local stack.

//! These tests run against a real S3 server: the local stack's Garage (`just infra-up`).
//! `garage_keys`' tests share their helpers.

use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use warden_actors::gateways::storage::*;
use warden_actors::gateways::{GarageAdminConfig, GarageKeys};
use warden_runtime::resources::ResourceGrants;
use warden_runtime::{Error, Result};

use super::support::stack_setting;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

pub const HOW_TO_START: &str =
    "the S3 gateway tests need the local stack's Garage: run `just infra-up` \
    (or `bash infra/up.sh`), which starts it and writes infra/local.env, or set \
    WARDEN_TEST_S3_ACCESS_KEY and WARDEN_TEST_S3_SECRET_KEY (and WARDEN_TEST_S3_ENDPOINT, \
    WARDEN_TEST_S3_REGION if not http://127.0.0.1:3900 and garage)";

/// The test server's settings: `WARDEN_TEST_S3_*`, else infra/local.env, else defaults
/// for the endpoint and region; the keys have no default.
fn test_config() -> StorageConfig {
    let (Some(access_key), Some(secret_key)) = (
        stack_setting("WARDEN_TEST_S3_ACCESS_KEY", "WARDEN_S3_ACCESS_KEY"),
        stack_setting("WARDEN_TEST_S3_SECRET_KEY", "WARDEN_S3_SECRET_KEY"),
    ) else {
        panic!("no S3 credentials: {HOW_TO_START}");
    };
    StorageConfig {
        endpoint: stack_setting("WARDEN_TEST_S3_ENDPOINT", "WARDEN_S3_ENDPOINT")
            .unwrap_or_else(|| "http://127.0.0.1:3900".into()),
        region: stack_setting("WARDEN_TEST_S3_REGION", "WARDEN_S3_REGION")
            .unwrap_or_else(|| "garage".into()),
        access_key,
        secret_key,
    }
}

/// A backend on the test server, once it answers (a freshly started Garage takes a moment).
pub async fn garage() -> StorageBackend {
    let config = test_config();
    let endpoint = config.endpoint.clone();
    let backend = StorageBackend::connect(config).expect("valid test config");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !backend.check().await {
        assert!(
            Instant::now() < deadline,
            "no S3 server answered at {endpoint} with the test credentials: {HOW_TO_START}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    backend
}

/// A backend on a loopback port where nothing listens: any request sent through it fails.
pub fn unreachable_backend() -> StorageBackend {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    StorageBackend::connect(StorageConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "garage".into(),
        access_key: "GKnothing".into(),
        secret_key: "nothing".into(),
    })
    .expect("valid config")
}

/// A plugin name no earlier run used, so that its buckets start out missing.
pub fn unique_plugin(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{tag}{:x}{}{}",
        nanos & 0xffff_ffff_ffff,
        std::process::id() % 1000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn grants(plugin: &str, buckets: &[&str]) -> ResourceGrants {
    let buckets: Vec<String> = buckets.iter().map(|name| name.to_string()).collect();
    ResourceGrants::resolve(plugin, &[], &[], &buckets, None).expect("valid grants")
}

fn start_gateway(plugin: &str, buckets: &[&str], backend: &StorageBackend) -> Addr<StorageGateway> {
    StorageGateway::new(plugin.to_string(), grants(plugin, buckets), backend.clone()).start()
}

pub async fn request(
    gateway: &Addr<StorageGateway>,
    bucket: &str,
    operation: StorageOperation,
) -> Result<StorageOutcome> {
    gateway
        .send(StorageRequest {
            bucket: bucket.to_string(),
            operation,
        })
        .await
        .expect("gateway alive")
}

async fn upload(
    gateway: &Addr<StorageGateway>,
    bucket: &str,
    key: &str,
    body: &[u8],
    content_type: &str,
) {
    let outcome = request(
        gateway,
        bucket,
        StorageOperation::Upload {
            key: key.into(),
            body: body.to_vec(),
            content_type: content_type.into(),
        },
    )
    .await;
    assert_eq!(outcome, Ok(StorageOutcome::Done), "upload of {key:?}");
}

async fn download(gateway: &Addr<StorageGateway>, bucket: &str, key: &str) -> Result<Vec<u8>> {
    match request(
        gateway,
        bucket,
        StorageOperation::Download { key: key.into() },
    )
    .await?
    {
        StorageOutcome::Bytes(bytes) => Ok(bytes),
        other => panic!("download answered {other:?}"),
    }
}

async fn exists(gateway: &Addr<StorageGateway>, bucket: &str, key: &str) -> bool {
    match request(
        gateway,
        bucket,
        StorageOperation::Exists { key: key.into() },
    )
    .await
    {
        Ok(StorageOutcome::Exists(exists)) => exists,
        other => panic!("exists answered {other:?}"),
    }
}

async fn list(gateway: &Addr<StorageGateway>, bucket: &str, prefix: &str) -> Vec<String> {
    match request(
        gateway,
        bucket,
        StorageOperation::List {
            prefix: prefix.into(),
        },
    )
    .await
    {
        Ok(StorageOutcome::Keys(keys)) => keys,
        other => panic!("list answered {other:?}"),
    }
}

async fn presign(gateway: &Addr<StorageGateway>, bucket: &str, key: &str) -> String {
    let operation = StorageOperation::Presign {
        key: key.into(),
        expires_in_seconds: 300,
    };
    match request(gateway, bucket, operation).await {
        Ok(StorageOutcome::Url(url)) => url,
        other => panic!("presign answered {other:?}"),
    }
}

/// Whether the server lists a bucket of that physical name.
async fn bucket_exists(backend: &StorageBackend, physical: &str) -> bool {
    backend
        .bucket(physical)
        .exists()
        .await
        .expect("list buckets")
}

/// Deletes the bucket and its objects, so that test runs do not pile up buckets.
pub async fn remove_bucket(backend: &StorageBackend, physical: &str) {
    let bucket = backend.bucket(physical);
    let keys = list_keys(&bucket, physical, "", None)
        .await
        .expect("list before removing");
    for key in keys {
        bucket
            .delete_object(object_path(&key))
            .await
            .expect("delete before removing");
    }
    bucket.delete().await.expect("delete bucket");
}

/// A plain HTTP/1.1 GET with no credentials of any kind: (status, body).
fn http_get(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http:// url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    let body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        (status, dechunk(&body))
    } else {
        (status, body)
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
}

pub async fn fetch_without_credentials(url: String) -> (u16, Vec<u8>) {
    tokio::task::spawn_blocking(move || http_get(&url))
        .await
        .expect("fetch thread")
}

#[actix_rt::test]
async fn ensure_buckets_creates_every_granted_bucket_and_is_idempotent() {
    let backend = garage().await;
    // An underscore in the plugin name becomes '-' in the bucket name.
    let plugin = unique_plugin("st_ens");
    let gateway = start_gateway(&plugin, &["data", "archive"], &backend);
    let physical: Vec<String> = grants(&plugin, &["data", "archive"])
        .buckets
        .into_iter()
        .map(|grant| grant.physical)
        .collect();
    assert!(physical[0].starts_with("st-ens") && physical[0].ends_with("-data"));
    for name in &physical {
        assert!(!bucket_exists(&backend, name).await, "{name} before");
    }

    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));
    for name in &physical {
        assert!(bucket_exists(&backend, name).await, "{name} after");
    }
    upload(&gateway, "data", "kept.txt", b"kept", "text/plain").await;
    // Running it again (every reload does) succeeds and keeps what the buckets hold.
    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));
    assert_eq!(
        download(&gateway, "data", "kept.txt").await,
        Ok(b"kept".to_vec())
    );

    for name in &physical {
        remove_bucket(&backend, name).await;
    }
}

#[actix_rt::test]
async fn text_and_binary_objects_round_trip() {
    let backend = garage().await;
    let plugin = unique_plugin("strt");
    let gateway = start_gateway(&plugin, &["data"], &backend);
    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));

    let text = "héllo, wörld ✓\n";
    upload(
        &gateway,
        "data",
        "notes/hello.txt",
        text.as_bytes(),
        "text/plain; charset=utf-8",
    )
    .await;
    let binary: Vec<u8> = (0..=255u8).collect();
    upload(&gateway, "data", "blobs/all-bytes.bin", &binary, "").await;
    // Keys are sent as they are, special characters included.
    let odd_keys = [
        "with space & plus+sign?#.txt",
        "ünïcode/ключ.json",
        "a//double",
        "dots.../...x",
    ];
    for key in odd_keys {
        upload(&gateway, "data", key, key.as_bytes(), "application/json").await;
    }

    let downloaded = download(&gateway, "data", "notes/hello.txt")
        .await
        .expect("download text");
    assert_eq!(String::from_utf8(downloaded).expect("utf-8"), text);
    assert_eq!(
        download(&gateway, "data", "blobs/all-bytes.bin").await,
        Ok(binary)
    );
    for key in odd_keys {
        assert_eq!(
            download(&gateway, "data", key).await,
            Ok(key.as_bytes().to_vec()),
            "{key:?}"
        );
    }
    let mut expected: Vec<String> = odd_keys.iter().map(|key| key.to_string()).collect();
    expected.extend(["blobs/all-bytes.bin".into(), "notes/hello.txt".into()]);
    expected.sort();
    assert_eq!(list(&gateway, "data", "").await, expected);

    // A leading '/' is sent too (rust-s3 would drop it); Garage itself stores `/x` as `x`,
    // so only the round trip is the same on every server.
    upload(&gateway, "data", "/leading-slash", b"slash", "text/plain").await;
    assert_eq!(
        download(&gateway, "data", "/leading-slash").await,
        Ok(b"slash".to_vec())
    );

    // The content types reached S3: the given one, and S3's default when none was given.
    let physical = grants(&plugin, &["data"]).buckets[0].physical.clone();
    let bucket = backend.bucket(&physical);
    let (head, _) = bucket
        .head_object("/notes/hello.txt")
        .await
        .expect("head text");
    assert_eq!(
        head.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let (head, _) = bucket
        .head_object("/blobs/all-bytes.bin")
        .await
        .expect("head binary");
    assert_eq!(head.content_type.as_deref(), Some(DEFAULT_CONTENT_TYPE));

    remove_bucket(&backend, &physical).await;
}

#[actix_rt::test]
async fn exists_list_and_delete() {
    let backend = garage().await;
    let plugin = unique_plugin("stx");
    let gateway = start_gateway(&plugin, &["data"], &backend);
    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));

    assert!(!exists(&gateway, "data", "reports/a.csv").await);
    for key in [
        "reports/a.csv",
        "reports/b.csv",
        "reports-old/c.csv",
        "z.txt",
    ] {
        upload(&gateway, "data", key, key.as_bytes(), "text/csv").await;
    }
    assert!(exists(&gateway, "data", "reports/a.csv").await);
    assert!(!exists(&gateway, "data", "reports/").await);

    assert_eq!(
        list(&gateway, "data", "reports/").await,
        ["reports/a.csv", "reports/b.csv"]
    );
    assert_eq!(
        list(&gateway, "data", "reports").await,
        ["reports-old/c.csv", "reports/a.csv", "reports/b.csv"]
    );
    assert_eq!(
        list(&gateway, "data", "nothing/").await,
        Vec::<String>::new()
    );
    assert_eq!(list(&gateway, "data", "").await.len(), 4);

    assert_eq!(
        request(
            &gateway,
            "data",
            StorageOperation::Delete {
                key: "reports/a.csv".into()
            }
        )
        .await,
        Ok(StorageOutcome::Done)
    );
    assert!(!exists(&gateway, "data", "reports/a.csv").await);
    assert_eq!(list(&gateway, "data", "reports/").await, ["reports/b.csv"]);
    match download(&gateway, "data", "reports/a.csv").await {
        Err(Error::Backend { service, message }) => {
            assert_eq!(service, "s3");
            assert!(message.contains("not found"), "{message}");
            assert!(message.contains("'reports/a.csv'"), "{message}");
        }
        other => panic!("download of a deleted key answered {other:?}"),
    }
    // Deleting what is not there succeeds, as in S3.
    assert_eq!(
        request(
            &gateway,
            "data",
            StorageOperation::Delete {
                key: "reports/a.csv".into()
            }
        )
        .await,
        Ok(StorageOutcome::Done)
    );

    let physical = grants(&plugin, &["data"]).buckets[0].physical.clone();
    remove_bucket(&backend, &physical).await;
}

#[actix_rt::test]
async fn listing_follows_continuation_tokens() {
    let backend = garage().await;
    let plugin = unique_plugin("stpage");
    let gateway = start_gateway(&plugin, &["data"], &backend);
    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));
    let keys: Vec<String> = (0..7).map(|index| format!("page/{index:02}")).collect();
    for key in &keys {
        upload(&gateway, "data", key, b"x", "text/plain").await;
    }
    upload(&gateway, "data", "other", b"x", "text/plain").await;

    // Pages of two keys need four requests for seven keys.
    let physical = grants(&plugin, &["data"]).buckets[0].physical.clone();
    let bucket = backend.bucket(&physical);
    assert_eq!(list_keys(&bucket, "data", "page/", Some(2)).await, Ok(keys));

    remove_bucket(&backend, &physical).await;
}

#[actix_rt::test]
async fn presigned_get_works_without_credentials() {
    let backend = garage().await;
    let plugin = unique_plugin("stsign");
    let gateway = start_gateway(&plugin, &["data"], &backend);
    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));
    let body = b"shared with a link \x00\xff".to_vec();
    upload(
        &gateway,
        "data",
        "links/file one.bin",
        &body,
        "application/octet-stream",
    )
    .await;

    let url = presign(&gateway, "data", "links/file one.bin").await;
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert_eq!(fetch_without_credentials(url.clone()).await, (200, body));
    // Without its signature the same address is refused: the URL is what grants access.
    let unsigned = url.split('?').next().expect("url").to_string();
    let (status, _) = fetch_without_credentials(unsigned).await;
    assert_eq!(status, 403);
    // A presigned URL for a missing key is valid but finds nothing.
    let missing = presign(&gateway, "data", "links/missing").await;
    let (status, _) = fetch_without_credentials(missing).await;
    assert_eq!(status, 404);

    let physical = grants(&plugin, &["data"]).buckets[0].physical.clone();
    remove_bucket(&backend, &physical).await;
}

#[actix_rt::test]
async fn undeclared_buckets_are_refused() {
    let backend = garage().await;
    let plugin = unique_plugin("stdeny");
    let other = unique_plugin("stother");
    let gateway = start_gateway(&plugin, &["data"], &backend);
    let other_gateway = start_gateway(&other, &["data"], &backend);
    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));
    assert_eq!(
        other_gateway.send(EnsureBuckets).await.expect("alive"),
        Ok(())
    );
    upload(&other_gateway, "data", "secret", b"theirs", "text/plain").await;

    let other_physical = grants(&other, &["data"]).buckets[0].physical.clone();
    // Neither an undeclared name nor another plugin's physical bucket name gets through.
    for bucket in ["archive", other_physical.as_str()] {
        let outcome = request(
            &gateway,
            bucket,
            StorageOperation::Download {
                key: "secret".into(),
            },
        )
        .await;
        assert_eq!(
            outcome,
            Err(Error::BucketAccessDenied {
                bucket: bucket.to_string(),
                allowed: vec!["data".into()],
            })
        );
    }
    // And the plugin's own bucket of the same name is a different one.
    assert!(!exists(&gateway, "data", "secret").await);

    let physical = grants(&plugin, &["data"]).buckets[0].physical.clone();
    remove_bucket(&backend, &physical).await;
    remove_bucket(&backend, &other_physical).await;
}

#[actix_rt::test]
async fn overlapping_requests_all_complete() {
    let backend = garage().await;
    let plugin = unique_plugin("stconc");
    let gateway = start_gateway(&plugin, &["data"], &backend);
    assert_eq!(gateway.send(EnsureBuckets).await.expect("alive"), Ok(()));

    let uploads = (0..32).map(|index| {
        request(
            &gateway,
            "data",
            StorageOperation::Upload {
                key: format!("c/{index}"),
                body: vec![index as u8; 4096],
                content_type: "application/octet-stream".into(),
            },
        )
    });
    for outcome in futures::future::join_all(uploads).await {
        assert_eq!(outcome, Ok(StorageOutcome::Done));
    }
    let keys: Vec<String> = (0..32).map(|index| format!("c/{index}")).collect();
    let downloads = keys.iter().map(|key| download(&gateway, "data", key));
    for (index, body) in futures::future::join_all(downloads)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(body, Ok(vec![index as u8; 4096]));
    }

    let physical = grants(&plugin, &["data"]).buckets[0].physical.clone();
    remove_bucket(&backend, &physical).await;
}

/// These refusals happen before anything is sent: the backend points at a closed port, so
/// a request that went out would fail with an S3 error instead.
#[actix_rt::test]
async fn refused_requests_send_nothing() {
    let gateway = start_gateway("orders", &["data"], &unreachable_backend());
    let denied = request(
        &gateway,
        "archive",
        StorageOperation::List { prefix: "".into() },
    )
    .await;
    assert_eq!(
        denied,
        Err(Error::BucketAccessDenied {
            bucket: "archive".into(),
            allowed: vec!["data".into()],
        })
    );
    // The physical name is not a name the plugin can use either.
    let physical = request(
        &gateway,
        "orders-data",
        StorageOperation::Exists { key: "x".into() },
    )
    .await;
    assert!(
        matches!(physical, Err(Error::BucketAccessDenied { .. })),
        "{physical:?}"
    );

    let invalid_operations = [
        StorageOperation::Download { key: "".into() },
        StorageOperation::Delete { key: "".into() },
        StorageOperation::Exists { key: "".into() },
        StorageOperation::Download {
            key: "../other-data/x".into(),
        },
        StorageOperation::Delete {
            key: "a/./b".into(),
        },
        StorageOperation::Exists { key: "a/..".into() },
        StorageOperation::Download {
            key: "k".repeat(MAX_KEY_BYTES + 1),
        },
        StorageOperation::Upload {
            key: "".into(),
            body: b"x".to_vec(),
            content_type: "text/plain".into(),
        },
        StorageOperation::Upload {
            key: "x".into(),
            body: b"x".to_vec(),
            content_type: "text/plain\r\nx-injected: 1".into(),
        },
        StorageOperation::Presign {
            key: "".into(),
            expires_in_seconds: 60,
        },
        StorageOperation::Presign {
            key: "x".into(),
            expires_in_seconds: 0,
        },
        StorageOperation::Presign {
            key: "x".into(),
            expires_in_seconds: MAX_PRESIGN_SECONDS + 1,
        },
    ];
    for operation in invalid_operations {
        let outcome = request(&gateway, "data", operation.clone()).await;
        assert!(
            matches!(outcome, Err(Error::InvalidValue { .. })),
            "{operation:?} answered {outcome:?}"
        );
    }
    match request(
        &gateway,
        "data",
        StorageOperation::Exists { key: "".into() },
    )
    .await
    {
        Err(error) => assert_eq!(error.js_name(), "TypeError"),
        other => panic!("{other:?}"),
    }

    // A valid request does go out, and fails as an S3 error.
    let sent = request(
        &gateway,
        "data",
        StorageOperation::Exists { key: "x".into() },
    )
    .await;
    assert!(
        matches!(&sent, Err(Error::Backend { service, .. }) if service == "s3"),
        "{sent:?}"
    );
}

#[actix_rt::test]
async fn check_reports_whether_the_server_answers() {
    assert!(garage().await.check().await);
    assert!(!unreachable_backend().check().await);

    // A server that accepts connections and never answers is down after the bound.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let backend = StorageBackend::connect(StorageConfig {
        endpoint: format!("http://{}", silent.local_addr().expect("address")),
        region: "garage".into(),
        access_key: "GKnothing".into(),
        secret_key: "nothing".into(),
    })
    .expect("valid config");
    assert!(!backend.check().await);
    drop(silent);
}

#[actix_rt::test]
async fn a_plugin_without_buckets_needs_neither_s3_nor_its_admin_api() {
    // Nothing listens on port 1: any request to S3 or to Garage's admin API would fail.
    let keys = GarageKeys::new(GarageAdminConfig {
        url: "http://127.0.0.1:1".into(),
        token: "t".into(),
    })
    .expect("valid settings");
    let gateway = StorageGateway::new(
        "nobuckets".into(),
        ResourceGrants::default(),
        unreachable_backend().with_plugin_keys(keys),
    )
    .start();
    assert!(
        matches!(gateway.send(EnsureBuckets).await, Ok(Ok(()))),
        "a plugin that declares no bucket loads whatever S3 does"
    );
}
