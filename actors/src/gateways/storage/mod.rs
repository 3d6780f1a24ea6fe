//! The S3 gateway: objects in the plugin's granted buckets, path-style, signed with the plugin's own key where the server can scope one.
//!
//! - this file: the backend, the messages and the gateway actor;
//! - `operations`: running one checked operation, and listing;
//! - `keys`: what object keys and content types may be;
//! - `errors`: S3 failures as typed errors.

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

mod errors;
mod keys;
mod operations;
#[cfg(test)]
mod tests;

use errors::*;
pub use keys::object_path;
use keys::*;
pub use operations::list_keys;
use operations::*;

/// How long [`StorageBackend::check`] waits for the server.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// S3 refuses object keys longer than 1,024 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// S3 refuses presigned URLs that live longer than a week.
pub const MAX_PRESIGN_SECONDS: u32 = 604_800;

/// The content type of an upload whose caller gave none, as S3 itself assumes.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

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

    /// Creates the bucket `physical` unless it exists and these credentials can use it.
    pub async fn ensure_bucket(&self, physical: &str) -> Result<()> {
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
        if accesses.is_empty() {
            // A plugin without buckets never signs a request: it needs no key, and neither S3
            // nor its admin API is asked for anything (so an outage of either does not stop
            // plugins that do not use S3 from loading).
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(()))));
        }
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
