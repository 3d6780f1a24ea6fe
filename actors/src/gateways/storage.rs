//! The S3 gateway: objects in the plugin's granted buckets, path-style, signed with the plugin's own key where the server can scope one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::{ActorFutureExt, WrapFuture};
use actix::{Actor, AtomicResponse, Context, Handler, Message, ResponseFuture};
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::request::tokio_backend::ReqwestRequest;
use s3::request::Request;
use s3::{Bucket, BucketConfiguration, Region};
use warden_runtime::access::AccessLevel;
use warden_runtime::resources::{ResourceGrants, ResourceKind};
use warden_runtime::{Error, Result};

use super::garage_keys::{BucketAccess, GarageKeys, PluginKey};

/// How long [`StorageBackend::check`] waits for the server.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// S3 refuses object keys longer than 1,024 bytes.
const MAX_KEY_BYTES: usize = 1024;

/// S3 refuses presigned URLs that live longer than a week.
const MAX_PRESIGN_SECONDS: u32 = 604_800;

/// The content type of an upload whose caller gave none, as S3 itself assumes.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Where the S3 server is and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `http(s)://host:port`.
    pub endpoint: String,
    /// The region to sign for.
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

/// The shared S3 settings and credentials.
#[derive(Clone)]
pub struct StorageBackend {
    /// A path-style bucket handle with no name. Every bucket handle is a copy of it with the
    /// name set, so that all of them share its HTTP client and therefore one connection pool
    /// (building a client per bucket would also cost a TLS setup each).
    template: Arc<Bucket>,
    /// Garage's admin API, when configured: each plugin then signs with its own key.
    keys: Option<GarageKeys>,
}

impl StorageBackend {
    /// A backend for `config` (path-style addressing).
    pub fn connect(config: StorageConfig) -> std::result::Result<Self, String> {
        let endpoint = config.endpoint.trim_end_matches('/');
        let host = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .ok_or_else(|| {
                format!(
                    "s3 endpoint '{}' must start with http:// or https://",
                    config.endpoint
                )
            })?;
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "s3 endpoint '{}' must be http(s)://host[:port] with no path",
                config.endpoint
            ));
        }
        if config.region.is_empty() {
            return Err("s3 region must not be empty".into());
        }
        if config.access_key.is_empty() || config.secret_key.is_empty() {
            return Err("s3 access key and secret key must not be empty".into());
        }
        let region = Region::Custom {
            region: config.region.clone(),
            endpoint: endpoint.to_string(),
        };
        let credentials = Credentials::new(
            Some(&config.access_key),
            Some(&config.secret_key),
            None,
            None,
            None,
        )
        .map_err(|error| format!("s3 credentials: {error}"))?;
        let template = Bucket::new("", region, credentials)
            .map_err(|error| format!("s3 client: {error}"))?
            .with_path_style();
        Ok(StorageBackend {
            template: Arc::from(template),
            keys: None,
        })
    }

    /// The same backend, giving each plugin its own key through Garage's admin API.
    pub fn with_plugin_keys(mut self, keys: GarageKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Whether each plugin signs with its own key.
    pub fn has_plugin_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether the server answers within a second.
    pub async fn check(&self) -> bool {
        // Listing the buckets is the cheapest signed request that needs no bucket; it also
        // proves the credentials work, which is what readiness is about.
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, self.template.exists()).await,
            Ok(Ok(_))
        )
    }

    /// A path-style handle on the bucket whose physical name is `physical`, sharing the
    /// backend's HTTP client (for benchmarks and tests; gateways hold their handles already).
    pub fn bucket(&self, physical: &str) -> Bucket {
        let mut bucket = Bucket::clone(&self.template);
        bucket.name = physical.to_string();
        bucket
    }

    /// [`StorageBackend::bucket`], signing with `credentials` instead of the shared key.
    fn bucket_signed_with(&self, physical: &str, credentials: Option<&Credentials>) -> Bucket {
        let mut bucket = self.bucket(physical);
        if let Some(credentials) = credentials {
            // This replaces the handle's credentials (it does not write through the ones it
            // shares with the template).
            bucket.set_credentials(credentials.clone());
        }
        bucket
    }

    /// Creates the bucket `physical` unless it exists and these credentials can use it (also
    /// for the key tests beside this module).
    pub(super) async fn ensure_bucket(&self, physical: &str) -> Result<()> {
        let bucket = self.bucket(physical);
        let mut configuration = BucketConfiguration::default();
        configuration.set_region(bucket.region.clone());
        // `Bucket::create_with_path_style` would build a new HTTP client per call; the request
        // type it uses is public, so the create goes through the shared client instead.
        let created = async {
            let command = s3::command::Command::CreateBucket {
                config: configuration,
            };
            ReqwestRequest::new(&bucket, "", command)
                .await?
                .response_data(false)
                .await
        }
        .await;
        let error = match created {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        // An existing bucket answers 409 (`BucketAlreadyOwnedByYou`, or `BucketAlreadyExists`
        // when another key created it), and a key without the right to create buckets answers
        // 403 even for one it may use. In those cases the bucket is fine if we can list it.
        let conflict_or_forbidden = matches!(status_of(&error), Some(409) | Some(403));
        if conflict_or_forbidden && error_code(&error) == Some("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        if conflict_or_forbidden
            && bucket
                .list_page(String::new(), None, None, None, Some(1))
                .await
                .is_ok()
        {
            return Ok(());
        }
        Err(backend_error(
            format!("creating bucket '{physical}' failed"),
            &error,
        ))
    }
}

/// Creates the plugin's declared buckets (at load).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct EnsureBuckets;

/// One S3 request for the plugin; `bucket` is always the plugin's own name for it.
#[derive(Message)]
#[rtype(result = "Result<StorageOutcome>")]
pub struct StorageRequest {
    /// The bucket as the plugin names it.
    pub bucket: String,
    /// What to do.
    pub operation: StorageOperation,
}

/// The S3 operations a plugin can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOperation {
    /// Store `body` under `key`.
    Upload {
        key: String,
        body: Vec<u8>,
        content_type: String,
    },
    /// Read `key`.
    Download { key: String },
    /// Delete `key`.
    Delete { key: String },
    /// Whether `key` exists.
    Exists { key: String },
    /// Keys starting with `prefix`.
    List { prefix: String },
    /// A presigned GET URL for `key`.
    Presign {
        key: String,
        expires_in_seconds: u32,
    },
}

impl StorageOperation {
    /// The level of a bucket the operation needs: `read` for reading, `all` for changing.
    fn level_needed(&self) -> AccessLevel {
        match self {
            StorageOperation::Upload { .. } | StorageOperation::Delete { .. } => AccessLevel::All,
            StorageOperation::Download { .. }
            | StorageOperation::Exists { .. }
            | StorageOperation::List { .. }
            | StorageOperation::Presign { .. } => AccessLevel::Read,
        }
    }

    /// The operation's name in metrics and logs.
    fn name(&self) -> &'static str {
        match self {
            StorageOperation::Upload { .. } => "upload",
            StorageOperation::Download { .. } => "download",
            StorageOperation::Delete { .. } => "delete",
            StorageOperation::Exists { .. } => "exists",
            StorageOperation::List { .. } => "list",
            StorageOperation::Presign { .. } => "presign",
        }
    }

    /// Refuses arguments S3 would refuse or that would not reach the object they name, before
    /// anything is sent.
    fn validate(&self) -> Result<()> {
        match self {
            StorageOperation::Upload {
                key, content_type, ..
            } => {
                validate_key(key)?;
                validate_content_type(content_type)
            }
            StorageOperation::Download { key }
            | StorageOperation::Delete { key }
            | StorageOperation::Exists { key } => validate_key(key),
            StorageOperation::List { .. } => Ok(()),
            StorageOperation::Presign {
                key,
                expires_in_seconds,
            } => {
                validate_key(key)?;
                if *expires_in_seconds == 0 || *expires_in_seconds > MAX_PRESIGN_SECONDS {
                    return Err(invalid_value(format!(
                        "presigned url expiry must be 1 to {MAX_PRESIGN_SECONDS} seconds, got {expires_in_seconds}"
                    )));
                }
                Ok(())
            }
        }
    }
}

/// What an S3 operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOutcome {
    /// Upload or delete done.
    Done,
    /// Object bytes.
    Bytes(Vec<u8>),
    /// Exists or not.
    Exists(bool),
    /// Keys.
    Keys(Vec<String>),
    /// A URL.
    Url(String),
}

/// One plugin's S3 gateway.
pub struct StorageGateway {
    plugin: String,
    grants: ResourceGrants,
    backend: StorageBackend,
    /// A handle per granted bucket, by physical name, made once here so that a request only
    /// clones an `Arc` before it leaves the actor.
    buckets: HashMap<String, Arc<Bucket>>,
    /// The plugin's own key and the credentials made of it, once [`EnsureBuckets`] made them.
    plugin_key: Option<(PluginKey, Credentials)>,
}

impl StorageGateway {
    /// A gateway for `plugin` holding `grants`.
    pub fn new(plugin: String, grants: ResourceGrants, backend: StorageBackend) -> Self {
        let mut gateway = StorageGateway {
            plugin,
            grants,
            backend,
            buckets: HashMap::new(),
            plugin_key: None,
        };
        gateway.make_bucket_handles();
        gateway
    }

    /// A handle per granted bucket, signed with the plugin's key when it has one.
    fn make_bucket_handles(&mut self) {
        let credentials = self.plugin_key.as_ref().map(|(_, credentials)| credentials);
        self.buckets = self
            .grants
            .grants(ResourceKind::Bucket)
            .iter()
            .map(|grant| {
                let handle = self
                    .backend
                    .bucket_signed_with(&grant.physical, credentials);
                (grant.physical.clone(), Arc::new(handle))
            })
            .collect();
    }

    /// What the plugin's own key is allowed on: each granted bucket once (two names can be
    /// mapped to one shared bucket), read-only only when every name for it is.
    fn bucket_accesses(&self) -> Vec<BucketAccess> {
        let mut accesses: Vec<BucketAccess> = Vec::new();
        for grant in self.grants.grants(ResourceKind::Bucket) {
            let read_only = grant.access == AccessLevel::Read;
            match accesses
                .iter_mut()
                .find(|access| access.physical == grant.physical)
            {
                Some(access) => access.read_only &= read_only,
                None => accesses.push(BucketAccess {
                    physical: grant.physical.clone(),
                    read_only,
                }),
            }
        }
        accesses
    }

    /// Signs every later request with `key`; the key it replaces (an earlier `EnsureBuckets`)
    /// is deleted.
    fn use_plugin_key(&mut self, key: PluginKey) -> Result<()> {
        let credentials = Credentials::new(
            Some(&key.access_key_id),
            Some(&key.secret_access_key),
            None,
            None,
            None,
        )
        .map_err(|error| s3_error(format!("the plugin's s3 key is unusable: {error}")))?;
        if let Some((replaced, _)) = self.plugin_key.replace((key, credentials)) {
            self.delete_plugin_key(replaced);
        }
        self.make_bucket_handles();
        Ok(())
    }

    /// Deletes one of the plugin's keys in the background.
    fn delete_plugin_key(&self, key: PluginKey) {
        if let Some(keys) = self.backend.keys.clone() {
            actix::spawn(async move { keys.delete_plugin_key(&key.access_key_id).await });
        }
    }

    /// The handle on the bucket the plugin calls `name`, or the refusal that names the buckets
    /// it may use, or the level it holds when the operation needs `all`.
    fn granted_bucket(&self, name: &str, needed: AccessLevel) -> Result<Arc<Bucket>> {
        let grant = self
            .grants
            .grant(ResourceKind::Bucket, name)
            .ok_or_else(|| Error::BucketAccessDenied {
                bucket: name.to_string(),
                allowed: self.grants.names(ResourceKind::Bucket),
            })?;
        grant.require(ResourceKind::Bucket, needed)?;
        let physical = grant.physical.as_str();
        // With per-plugin keys, nothing is signed with the shared key on the plugin's behalf.
        if self.backend.has_plugin_keys() && self.plugin_key.is_none() {
            return Err(s3_error(format!(
                "the s3 key of plugin '{}' is not ready (it is made when the plugin loads)",
                self.plugin
            )));
        }
        Ok(match self.buckets.get(physical) {
            Some(bucket) => Arc::clone(bucket),
            None => {
                let credentials = self.plugin_key.as_ref().map(|(_, credentials)| credentials);
                Arc::new(self.backend.bucket_signed_with(physical, credentials))
            }
        })
    }
}

impl Actor for StorageGateway {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        // The plugin is unloaded, replaced by a reload, or failed to load: its key goes.
        if let Some((key, _)) = self.plugin_key.take() {
            self.delete_plugin_key(key);
        }
    }
}

impl Handler<EnsureBuckets> for StorageGateway {
    // Atomic, because the plugin's new key replaces the bucket handles when the future ends:
    // no request may be handled in between, signed with a key that is about to change.
    type Result = AtomicResponse<Self, Result<()>>;

    fn handle(&mut self, _: EnsureBuckets, _: &mut Self::Context) -> Self::Result {
        let accesses = self.bucket_accesses();
        let backend = self.backend.clone();
        let plugin = self.plugin.clone();
        let creating = async move {
            // Buckets are made with Warden's own key, which may create them; the plugin's key
            // may not.
            for access in &accesses {
                backend
                    .ensure_bucket(&access.physical)
                    .await
                    .inspect_err(|error| {
                        tracing::warn!(%plugin, bucket = %access.physical, %error, "could not ensure bucket");
                    })?;
            }
            match &backend.keys {
                Some(keys) => keys
                    .create_plugin_key(&plugin, &accesses)
                    .await
                    .inspect_err(|error| {
                        tracing::warn!(%plugin, %error, "could not make the plugin's s3 key");
                    })
                    .map(Some),
                None => Ok(None),
            }
        };
        AtomicResponse::new(Box::pin(creating.into_actor(self).map(
            |created, gateway, _| match created? {
                Some(key) => gateway.use_plugin_key(key),
                None => Ok(()),
            },
        )))
    }
}

impl Handler<StorageRequest> for StorageGateway {
    type Result = ResponseFuture<Result<StorageOutcome>>;

    fn handle(&mut self, request: StorageRequest, _: &mut Self::Context) -> Self::Result {
        let operation_name = request.operation.name();
        let checked = self
            .granted_bucket(&request.bucket, request.operation.level_needed())
            .and_then(|bucket| request.operation.validate().map(|()| bucket));
        let bucket = match checked {
            Ok(bucket) => bucket,
            Err(error) => {
                record(self.plugin.clone(), operation_name, "refused", None);
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        // The future owns everything it uses, so that the gateway takes the plugin's next
        // request while this one waits on S3.
        let plugin = self.plugin.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = perform(&bucket, &request.bucket, request.operation).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(error) => {
                    tracing::debug!(
                        %plugin,
                        bucket = %bucket.name,
                        operation = operation_name,
                        %error,
                        "s3 request failed"
                    );
                    "error"
                }
            };
            record(plugin, operation_name, outcome, Some(started));
            result
        })
    }
}

/// Counts one request and, when it was sent, how long it took.
fn record(
    plugin: String,
    operation: &'static str,
    outcome: &'static str,
    started: Option<Instant>,
) {
    metrics::counter!(
        "warden_s3_requests_total",
        "plugin" => plugin,
        "operation" => operation,
        "outcome" => outcome
    )
    .increment(1);
    if let Some(started) = started {
        metrics::histogram!("warden_s3_request_duration_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
    }
}

/// Runs one checked operation on `bucket`, which the plugin calls `name`.
async fn perform(
    bucket: &Bucket,
    name: &str,
    operation: StorageOperation,
) -> Result<StorageOutcome> {
    match operation {
        StorageOperation::Upload {
            key,
            body,
            content_type,
        } => {
            let content_type = if content_type.is_empty() {
                DEFAULT_CONTENT_TYPE
            } else {
                content_type.as_str()
            };
            bucket
                .put_object_with_content_type(object_path(&key), &body, content_type)
                .await
                .map_err(|error| {
                    backend_error(
                        format!("upload of '{key}' to bucket '{name}' failed"),
                        &error,
                    )
                })?;
            Ok(StorageOutcome::Done)
        }
        StorageOperation::Download { key } => match bucket.get_object(object_path(&key)).await {
            Ok(response) => Ok(StorageOutcome::Bytes(Vec::from(response.into_bytes()))),
            Err(error) if status_of(&error) == Some(404) => {
                Err(s3_error(if error_code(&error) == Some("NoSuchBucket") {
                    format!("bucket '{name}' not found (it is created when the plugin loads)")
                } else {
                    format!("object '{key}' not found in bucket '{name}'")
                }))
            }
            Err(error) => Err(backend_error(
                format!("download of '{key}' from bucket '{name}' failed"),
                &error,
            )),
        },
        StorageOperation::Delete { key } => {
            bucket
                .delete_object(object_path(&key))
                .await
                .map_err(|error| {
                    backend_error(
                        format!("delete of '{key}' from bucket '{name}' failed"),
                        &error,
                    )
                })?;
            Ok(StorageOutcome::Done)
        }
        StorageOperation::Exists { key } => {
            // `object_exists` answers false for a 404 and fails for every other error status.
            let exists = bucket
                .object_exists(object_path(&key))
                .await
                .map_err(|error| {
                    backend_error(
                        format!("exists check of '{key}' in bucket '{name}' failed"),
                        &error,
                    )
                })?;
            Ok(StorageOutcome::Exists(exists))
        }
        StorageOperation::List { prefix } => {
            let keys = list_keys(bucket, name, &prefix, None).await?;
            Ok(StorageOutcome::Keys(keys))
        }
        StorageOperation::Presign {
            key,
            expires_in_seconds,
        } => {
            let url = bucket
                .presign_get(object_path(&key), expires_in_seconds, None)
                .await
                .map_err(|error| {
                    backend_error(
                        format!("presigning '{key}' in bucket '{name}' failed"),
                        &error,
                    )
                })?;
            Ok(StorageOutcome::Url(url))
        }
    }
}

/// Every key under `prefix` in `bucket` (which the plugin calls `name`), following
/// continuation tokens; pages are the server's default size (1,000 keys) unless `page_size`
/// says otherwise.
async fn list_keys(
    bucket: &Bucket,
    name: &str,
    prefix: &str,
    page_size: Option<usize>,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let (page, _) = bucket
            .list_page(
                prefix.to_string(),
                None,
                continuation.clone(),
                None,
                page_size,
            )
            .await
            .map_err(|error| {
                backend_error(
                    format!("listing '{prefix}' in bucket '{name}' failed"),
                    &error,
                )
            })?;
        keys.extend(page.contents.into_iter().map(|object| object.key));
        if !page.is_truncated {
            return Ok(keys);
        }
        match page.next_continuation_token {
            // A token that does not move would make this loop forever.
            Some(next) if continuation.as_deref() != Some(next.as_str()) => {
                continuation = Some(next)
            }
            _ => {
                return Err(s3_error(format!(
                    "listing '{prefix}' in bucket '{name}' failed: the server gave a truncated page without a new continuation token"
                )))
            }
        }
    }
}

/// The path rust-s3 expects for `key`. It strips one leading `/` from the path it is given,
/// so a `/` is always put in front: a key that itself starts with `/` keeps it.
fn object_path(key: &str) -> String {
    format!("/{key}")
}

/// Refuses keys S3 refuses, and keys with `.` or `..` segments: the URL parser under rust-s3
/// resolves those, so `../other-bucket/x` would reach another bucket than the granted one.
fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid_value("object key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid_value(format!(
            "object key is {} bytes, over the {MAX_KEY_BYTES}-byte limit of S3",
            key.len()
        )));
    }
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(invalid_value(format!(
            "object key '{key}' must not have '.' or '..' path segments"
        )));
    }
    Ok(())
}

/// A content type must be a valid HTTP header value (visible ASCII, spaces and tabs).
fn validate_content_type(content_type: &str) -> Result<()> {
    let valid = content_type
        .bytes()
        .all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(invalid_value(format!(
            "content type '{}' must be printable ASCII",
            content_type.escape_debug()
        )))
    }
}

fn invalid_value(reason: impl Into<String>) -> Error {
    Error::InvalidValue {
        reason: reason.into(),
    }
}

fn s3_error(message: String) -> Error {
    Error::Backend {
        service: "s3".into(),
        message,
    }
}

/// `{action}: {what S3 said}`, as an S3 backend error.
fn backend_error(action: String, error: &S3Error) -> Error {
    s3_error(format!("{action}: {}", describe(error)))
}

/// The HTTP status of a failure the server answered.
fn status_of(error: &S3Error) -> Option<u16> {
    match error {
        S3Error::HttpFailWithBody(status, _) => Some(*status),
        _ => None,
    }
}

/// The `<Code>` of the S3 error document the server answered with, if any.
fn error_code(error: &S3Error) -> Option<&str> {
    match error {
        S3Error::HttpFailWithBody(_, body) => xml_element(body, "Code"),
        _ => None,
    }
}

/// A short description of a failure: the status, S3's error code and message when the server
/// answered, the transport error otherwise.
fn describe(error: &S3Error) -> String {
    match error {
        S3Error::HttpFailWithBody(status, body) => {
            match (xml_element(body, "Code"), xml_element(body, "Message")) {
                (Some(code), Some(message)) => format!("http {status} {code}: {message}"),
                (Some(code), None) => format!("http {status} {code}"),
                _ => format!("http {status}"),
            }
        }
        other => other.to_string(),
    }
}

/// The text of the first `<element>` in an S3 error document (which has no attributes on
/// these elements, so a plain search is exact).
fn xml_element<'a>(document: &'a str, element: &str) -> Option<&'a str> {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let start = document.find(&open)? + open.len();
    let length = document[start..].find(&close)?;
    Some(document[start..start + length].trim())
}

#[cfg(test)]
pub(crate) mod tests {
    //! These tests run against a real S3 server: the local stack's Garage (`just infra-up`).
    //! `garage_keys`' tests share their helpers.

    use super::*;
    use actix::Addr;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::SystemTime;

    pub(crate) const HOW_TO_START: &str =
        "the S3 gateway tests need the local stack's Garage: run `just infra-up` \
        (or `bash infra/up.sh`), which starts it and writes infra/local.env, or set \
        WARDEN_TEST_S3_ACCESS_KEY and WARDEN_TEST_S3_SECRET_KEY (and WARDEN_TEST_S3_ENDPOINT, \
        WARDEN_TEST_S3_REGION if not http://127.0.0.1:3900 and garage)";

    /// `KEY=VALUE` lines of infra/local.env, when the file exists.
    pub(crate) fn local_env() -> HashMap<String, String> {
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

    /// The test server's settings: `WARDEN_TEST_S3_*`, else infra/local.env, else defaults
    /// for the endpoint and region; the keys have no default.
    fn test_config() -> StorageConfig {
        let file = local_env();
        let setting = |test_variable: &str, file_variable: &str| {
            std::env::var(test_variable)
                .ok()
                .filter(|value| !value.is_empty())
                .or_else(|| file.get(file_variable).cloned())
                .filter(|value| !value.is_empty())
        };
        let (Some(access_key), Some(secret_key)) = (
            setting("WARDEN_TEST_S3_ACCESS_KEY", "WARDEN_S3_ACCESS_KEY"),
            setting("WARDEN_TEST_S3_SECRET_KEY", "WARDEN_S3_SECRET_KEY"),
        ) else {
            panic!("no S3 credentials: {HOW_TO_START}");
        };
        StorageConfig {
            endpoint: setting("WARDEN_TEST_S3_ENDPOINT", "WARDEN_S3_ENDPOINT")
                .unwrap_or_else(|| "http://127.0.0.1:3900".into()),
            region: setting("WARDEN_TEST_S3_REGION", "WARDEN_S3_REGION")
                .unwrap_or_else(|| "garage".into()),
            access_key,
            secret_key,
        }
    }

    /// A backend on the test server, once it answers (a freshly started Garage takes a moment).
    pub(crate) async fn garage() -> StorageBackend {
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
    pub(crate) fn unreachable_backend() -> StorageBackend {
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
    pub(crate) fn unique_plugin(tag: &str) -> String {
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

    pub(crate) fn grants(plugin: &str, buckets: &[&str]) -> ResourceGrants {
        let buckets: Vec<String> = buckets.iter().map(|name| name.to_string()).collect();
        ResourceGrants::resolve(plugin, &[], &[], &buckets, None).expect("valid grants")
    }

    fn start_gateway(
        plugin: &str,
        buckets: &[&str],
        backend: &StorageBackend,
    ) -> Addr<StorageGateway> {
        StorageGateway::new(plugin.to_string(), grants(plugin, buckets), backend.clone()).start()
    }

    pub(crate) async fn request(
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
    pub(crate) async fn remove_bucket(backend: &StorageBackend, physical: &str) {
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

    pub(crate) async fn fetch_without_credentials(url: String) -> (u16, Vec<u8>) {
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

    #[test]
    fn connect_refuses_unusable_settings() {
        let config = StorageConfig {
            endpoint: "http://127.0.0.1:3900/".into(),
            region: "garage".into(),
            access_key: "GKkey".into(),
            secret_key: "secret".into(),
        };
        assert!(StorageBackend::connect(config.clone()).is_ok());
        let refused = [
            StorageConfig {
                endpoint: "127.0.0.1:3900".into(),
                ..config.clone()
            },
            StorageConfig {
                endpoint: "http://127.0.0.1:3900/s3".into(),
                ..config.clone()
            },
            StorageConfig {
                region: "".into(),
                ..config.clone()
            },
            StorageConfig {
                access_key: "".into(),
                ..config.clone()
            },
        ];
        for config in refused {
            assert!(
                StorageBackend::connect(config.clone()).is_err(),
                "{config:?}"
            );
        }
    }

    #[test]
    fn s3_error_documents_become_short_messages() {
        let error = S3Error::HttpFailWithBody(
            403,
            "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Forbidden: no access</Message></Error>".into(),
        );
        assert_eq!(status_of(&error), Some(403));
        assert_eq!(error_code(&error), Some("AccessDenied"));
        assert_eq!(
            backend_error("upload of 'k' to bucket 'data' failed".into(), &error).to_string(),
            "s3 error: upload of 'k' to bucket 'data' failed: http 403 AccessDenied: Forbidden: no access"
        );
        assert_eq!(
            describe(&S3Error::HttpFailWithBody(500, "".into())),
            "http 500"
        );
        assert_eq!(object_path("/a"), "//a");
    }
}
