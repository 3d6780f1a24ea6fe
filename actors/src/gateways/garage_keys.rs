//! Per-plugin S3 keys on Garage: one key per plugin, allowed only on its buckets, through Garage's admin API (v2).
//!
//! With one shared key, a plugin's presigned URL carries Warden's own rights: whoever holds it
//! can re-sign nothing, but the key behind it may read every bucket. A key per plugin, allowed
//! only on that plugin's buckets (read-only where its grant is read), makes S3 itself refuse
//! anything beyond the grant, whatever a request or URL names.
//!
//! Calls used: `ListKeys`, `DeleteKey`, `CreateKey`, `GetBucketInfo` (by global alias, the
//! physical bucket name) and `AllowBucketKey`.

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use warden_runtime::{Error, Result};

/// The bound of one admin API request.
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The prefix of every plugin key's name; the plugin's name follows it.
const KEY_NAME_PREFIX: &str = "warden-plugin-";

/// Where Garage's admin API is and the token it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarageAdminConfig {
    /// `http(s)://host:port` of the admin API (Garage's `[admin] api_bind_addr`).
    pub url: String,
    /// A bearer token of the admin API (Garage's `admin_token`).
    pub token: String,
}

/// One bucket a plugin key is allowed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketAccess {
    /// The bucket's physical name (its global alias in Garage).
    pub physical: String,
    /// Read only (`read` level); otherwise read and write.
    pub read_only: bool,
}

/// A key made for one plugin.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginKey {
    /// The access key id.
    pub access_key_id: String,
    /// The secret; it never leaves the gateway.
    pub secret_access_key: String,
}

impl std::fmt::Debug for PluginKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PluginKey")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The admin API client, shared by every plugin's storage gateway.
#[derive(Clone)]
pub struct GarageKeys {
    base_url: String,
    token: String,
    http: reqwest::Client,
    /// Ids of the keys this process made and still uses. Keys of a plugin's name outside this
    /// set were left by an earlier process and are deleted; a reload's new gateway must not
    /// delete the key the old version still runs on.
    live: Arc<Mutex<HashSet<String>>>,
    /// In a cluster, this node's id: each node has its own key per plugin, so a node that
    /// replaces its stale keys never deletes the key another node's plugin runs on.
    node: Option<String>,
}

impl GarageKeys {
    /// A client for `config`; nothing is sent yet.
    pub fn new(config: GarageAdminConfig) -> std::result::Result<Self, String> {
        let base_url = config.url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!(
                "s3 admin url '{}' must start with http:// or https://",
                config.url
            ));
        }
        if config.token.is_empty() {
            return Err("s3 admin token must not be empty".into());
        }
        let http = reqwest::Client::builder()
            .timeout(ADMIN_REQUEST_TIMEOUT)
            .build()
            .map_err(|error| format!("cannot create the s3 admin http client: {error}"))?;
        Ok(GarageKeys {
            base_url,
            token: config.token,
            http,
            live: Arc::default(),
            node: None,
        })
    }

    /// The same client for node `node` of a cluster: its keys are `warden-plugin-<plugin>@<node>`.
    pub fn for_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// The name of `plugin`'s key on a single node: `warden-plugin-<plugin>`.
    pub fn key_name(plugin: &str) -> String {
        format!("{KEY_NAME_PREFIX}{plugin}")
    }

    /// The name of `plugin`'s key here: on a node of a cluster, `warden-plugin-<plugin>@<node>`
    /// (neither plugin names nor node ids contain `@`).
    fn own_key_name(&self, plugin: &str) -> String {
        match &self.node {
            Some(node) => format!("{}@{node}", Self::key_name(plugin)),
            None => Self::key_name(plugin),
        }
    }

    /// Makes a new key for `plugin`, allowed on exactly `buckets` (which must exist). Keys of
    /// the same name that this process does not use are deleted first. On failure nothing is
    /// left: a key made here is deleted again.
    pub async fn create_plugin_key(
        &self,
        plugin: &str,
        buckets: &[BucketAccess],
    ) -> Result<PluginKey> {
        let name = self.own_key_name(plugin);
        self.delete_stale_keys(&name).await?;
        let created = self
            .call(
                reqwest::Method::POST,
                "CreateKey",
                &[],
                Some(json!({ "name": name })),
            )
            .await?;
        let key = match (
            created.get("accessKeyId").and_then(Value::as_str),
            created.get("secretAccessKey").and_then(Value::as_str),
        ) {
            (Some(id), Some(secret)) => PluginKey {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
            },
            _ => {
                return Err(admin_error(
                    "CreateKey answered without accessKeyId and secretAccessKey",
                ))
            }
        };
        self.live_keys().insert(key.access_key_id.clone());
        if let Err(error) = self.allow_on_buckets(&key, buckets).await {
            self.delete_plugin_key(&key.access_key_id).await;
            return Err(error);
        }
        Ok(key)
    }

    /// Deletes a key this process made (at unload); a failure is logged, since the next load of
    /// the plugin deletes a key left behind.
    pub async fn delete_plugin_key(&self, access_key_id: &str) {
        match self.delete_key(access_key_id).await {
            Ok(()) => {
                self.live_keys().remove(access_key_id);
            }
            Err(error) => tracing::warn!(
                key = access_key_id,
                %error,
                "could not delete a plugin's s3 key; the plugin's next load deletes it"
            ),
        }
    }

    /// The ids of the keys named `name`, as Garage lists them.
    pub async fn keys_named(&self, name: &str) -> Result<Vec<String>> {
        let listed = self
            .call(reqwest::Method::GET, "ListKeys", &[], None)
            .await?;
        let Some(keys) = listed.as_array() else {
            return Err(admin_error("ListKeys did not answer a list"));
        };
        Ok(keys
            .iter()
            .filter(|key| key.get("name").and_then(Value::as_str) == Some(name))
            .filter_map(|key| key.get("id").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    async fn delete_stale_keys(&self, name: &str) -> Result<()> {
        for id in self.keys_named(name).await? {
            if self.live_keys().contains(&id) {
                continue;
            }
            tracing::info!(key = %id, %name, "deleting an s3 key left by an earlier process");
            self.delete_key(&id).await?;
        }
        Ok(())
    }

    async fn allow_on_buckets(&self, key: &PluginKey, buckets: &[BucketAccess]) -> Result<()> {
        for bucket in buckets {
            let info = self.bucket_by_global_alias(&bucket.physical).await?;
            let Some(bucket_id) = info.get("id").and_then(Value::as_str) else {
                return Err(admin_error(format!(
                    "GetBucketInfo for bucket '{}' answered without an id",
                    bucket.physical
                )));
            };
            // `AllowBucketKey` only turns flags on, and a new key has none, so the key ends with
            // exactly these rights. `owner` (bucket settings, deletion) is never given.
            self.call(
                reqwest::Method::POST,
                "AllowBucketKey",
                &[],
                Some(json!({
                    "bucketId": bucket_id,
                    "accessKeyId": key.access_key_id,
                    "permissions": { "read": true, "write": !bucket.read_only, "owner": false },
                })),
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_key(&self, access_key_id: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "DeleteKey",
            &[("id", access_key_id)],
            None,
        )
        .await
        .map(drop)
    }

    /// The bucket whose global alias is `physical`. A bucket made through the S3 API has only
    /// a local alias in the namespace of the key that made it (Warden's own); it gets the
    /// global alias here, so that the plugin's key can name it too.
    async fn bucket_by_global_alias(&self, physical: &str) -> Result<Value> {
        let by_alias = [("globalAlias", physical)];
        if let Ok(info) = self
            .call(reqwest::Method::GET, "GetBucketInfo", &by_alias, None)
            .await
        {
            return Ok(info);
        }
        let buckets = self
            .call(reqwest::Method::GET, "ListBuckets", &[], None)
            .await?;
        let bucket_id = buckets
            .as_array()
            .into_iter()
            .flatten()
            .find(|bucket| {
                bucket["localAliases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|alias| alias["alias"].as_str() == Some(physical))
            })
            .and_then(|bucket| bucket["id"].as_str())
            .ok_or_else(|| admin_error(format!("no bucket is named '{physical}'")))?
            .to_string();
        self.call(
            reqwest::Method::POST,
            "AddBucketAlias",
            &[],
            Some(json!({ "bucketId": bucket_id, "globalAlias": physical })),
        )
        .await?;
        self.call(reqwest::Method::GET, "GetBucketInfo", &by_alias, None)
            .await
    }

    fn live_keys(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set is only inserted into and removed from; a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is still good.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One admin API call; the answer's JSON (null for an empty body).
    async fn call(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}/v2/{endpoint}", self.base_url))
            .bearer_auth(&self.token)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| admin_error(format!("{endpoint}: {error}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| admin_error(format!("{endpoint}: {error}")))?;
        if !status.is_success() {
            // Garage explains a refusal in the `message` field of a JSON body.
            let reason = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|value| value.get("message")?.as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(admin_error(format!("{endpoint}: HTTP {status}: {reason}")));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|error| admin_error(format!("{endpoint}: the answer is not JSON: {error}")))
    }
}

fn admin_error(message: impl Display) -> Error {
    Error::Backend {
        service: "s3".into(),
        message: format!("s3 admin api: {message}"),
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests, then tests against the local stack's Garage and its admin API.

    use super::*;
    use crate::gateways::storage::tests::{
        fetch_without_credentials, garage, grants, local_env, remove_bucket, request,
        unique_plugin, unreachable_backend, HOW_TO_START,
    };
    use crate::gateways::storage::{
        EnsureBuckets, StorageBackend, StorageGateway, StorageOperation, StorageOutcome,
    };
    use actix::{Actor, Addr};
    use s3::creds::Credentials;
    use std::time::Instant;

    /// The local Garage's admin API: `WARDEN_TEST_S3_ADMIN_URL` and `WARDEN_TEST_S3_ADMIN_TOKEN`,
    /// else `WARDEN_S3_ADMIN_URL` and `WARDEN_S3_ADMIN_TOKEN` of infra/local.env.
    fn admin() -> GarageKeys {
        let file = local_env();
        let setting = |test_variable: &str, file_variable: &str| {
            std::env::var(test_variable)
                .ok()
                .or_else(|| file.get(file_variable).cloned())
                .filter(|value| !value.is_empty())
        };
        let (Some(url), Some(token)) = (
            setting("WARDEN_TEST_S3_ADMIN_URL", "WARDEN_S3_ADMIN_URL"),
            setting("WARDEN_TEST_S3_ADMIN_TOKEN", "WARDEN_S3_ADMIN_TOKEN"),
        ) else {
            panic!(
                "no Garage admin api settings (WARDEN_S3_ADMIN_URL and WARDEN_S3_ADMIN_TOKEN in \
                 infra/local.env, which infra/up.sh writes since it gives Garage an admin token): \
                 {HOW_TO_START}"
            );
        };
        GarageKeys::new(GarageAdminConfig { url, token }).expect("valid admin settings")
    }

    fn physical(plugin: &str, bucket: &str) -> String {
        grants(plugin, &[bucket]).buckets[0].physical.clone()
    }

    /// A gateway of `plugin` on `backend` with its own key, its buckets ensured.
    async fn keyed_gateway(
        plugin: &str,
        buckets: &[&str],
        read_only: &[&str],
        backend: &StorageBackend,
    ) -> Addr<StorageGateway> {
        let entries: Vec<String> = buckets
            .iter()
            .map(|bucket| match read_only.contains(bucket) {
                true => format!("{bucket}:read"),
                false => bucket.to_string(),
            })
            .collect();
        let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
        let gateway = StorageGateway::new(
            plugin.to_string(),
            grants(plugin, &entries),
            backend.clone(),
        )
        .start();
        gateway
            .send(EnsureBuckets)
            .await
            .expect("alive")
            .expect("buckets and key made");
        gateway
    }

    fn upload(key: &str, text: &str) -> StorageOperation {
        StorageOperation::Upload {
            key: key.to_string(),
            body: text.as_bytes().to_vec(),
            content_type: "text/plain".to_string(),
        }
    }

    /// A bucket handle on `physical` signed with `key` instead of Warden's own.
    fn signed_with(backend: &StorageBackend, physical: &str, key: &PluginKey) -> s3::Bucket {
        let mut bucket = backend.bucket(physical);
        bucket.set_credentials(
            Credentials::new(
                Some(&key.access_key_id),
                Some(&key.secret_access_key),
                None,
                None,
                None,
            )
            .expect("credentials"),
        );
        bucket
    }

    fn status(result: std::result::Result<impl std::fmt::Debug, s3::error::S3Error>) -> u16 {
        match result {
            Ok(_) => 200,
            Err(s3::error::S3Error::HttpFailWithBody(status, _)) => status,
            Err(other) => panic!("expected an answer from the server, got {other}"),
        }
    }

    async fn wait_until_no_key_named(keys: &GarageKeys, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if keys.keys_named(name).await.expect("ListKeys").is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "key {name} is still there");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn settings_are_checked_and_keys_are_named_after_the_plugin() {
        assert_eq!(GarageKeys::key_name("orders"), "warden-plugin-orders");
        assert!(GarageKeys::new(GarageAdminConfig {
            url: "127.0.0.1:3903".into(),
            token: "t".into(),
        })
        .is_err());
        assert!(GarageKeys::new(GarageAdminConfig {
            url: "http://127.0.0.1:3903".into(),
            token: String::new(),
        })
        .is_err());
        let keys = GarageKeys::new(GarageAdminConfig {
            url: "http://127.0.0.1:3903/".into(),
            token: "t".into(),
        })
        .expect("valid settings");
        assert_eq!(keys.base_url, "http://127.0.0.1:3903");
    }

    #[test]
    fn a_plugin_keys_secret_is_never_printed() {
        let key = PluginKey {
            access_key_id: "GK1".into(),
            secret_access_key: "very-secret".into(),
        };
        let printed = format!("{key:?}");
        assert!(
            printed.contains("GK1") && !printed.contains("very-secret"),
            "{printed}"
        );
    }

    #[actix_rt::test]
    async fn a_gateway_with_plugin_keys_signs_nothing_before_its_key_exists() {
        let keys = GarageKeys::new(GarageAdminConfig {
            url: "http://127.0.0.1:1".into(),
            token: "t".into(),
        })
        .expect("valid settings");
        let backend = unreachable_backend().with_plugin_keys(keys);
        let gateway =
            StorageGateway::new("orders".into(), grants("orders", &["data"]), backend).start();
        let refused = request(
            &gateway,
            "data",
            StorageOperation::Presign {
                key: "a".into(),
                expires_in_seconds: 60,
            },
        )
        .await
        .unwrap_err();
        assert!(refused.to_string().contains("is not ready"), "{refused}");
        // A failed key creation fails the load, with the typed error.
        let failed = gateway
            .send(EnsureBuckets)
            .await
            .expect("alive")
            .unwrap_err();
        assert_eq!(failed.js_name(), "S3Error");
    }

    #[actix_rt::test]
    async fn a_plugins_key_reaches_only_its_own_buckets_at_its_level() {
        let backend = garage().await.with_plugin_keys(admin());
        let keys = admin();
        let (first, second) = (unique_plugin("kya"), unique_plugin("kyb"));
        let first_gateway = keyed_gateway(&first, &["data", "ref"], &["ref"], &backend).await;
        let second_gateway = keyed_gateway(&second, &["data"], &[], &backend).await;
        assert_eq!(
            keys.keys_named(&GarageKeys::key_name(&first))
                .await
                .unwrap()
                .len(),
            1
        );
        let (first_data, first_ref, second_data) = (
            physical(&first, "data"),
            physical(&first, "ref"),
            physical(&second, "data"),
        );

        // Read and write on `data`; read only on `ref`, whose object Warden's own key put there.
        assert_eq!(
            request(&first_gateway, "data", upload("a.txt", "first's")).await,
            Ok(StorageOutcome::Done)
        );
        assert_eq!(
            request(&second_gateway, "data", upload("a.txt", "second's")).await,
            Ok(StorageOutcome::Done)
        );
        backend
            .bucket(&first_ref)
            .put_object("/r.txt", b"reference")
            .await
            .expect("seeded");
        assert_eq!(
            request(
                &first_gateway,
                "ref",
                StorageOperation::Download {
                    key: "r.txt".into()
                }
            )
            .await,
            Ok(StorageOutcome::Bytes(b"reference".to_vec()))
        );
        let refused = request(&first_gateway, "ref", upload("w.txt", "x"))
            .await
            .unwrap_err();
        // The gateway refuses it first, by level; the key could not write either.
        assert!(
            matches!(&refused, Error::AccessLevelDenied { name, granted: "read", needed: "all", .. } if name == "ref"),
            "a read-only bucket took a write: {refused}"
        );

        // The presigned URL works, and editing its bucket to another plugin's does not.
        let Ok(StorageOutcome::Url(url)) = request(
            &first_gateway,
            "data",
            StorageOperation::Presign {
                key: "a.txt".into(),
                expires_in_seconds: 300,
            },
        )
        .await
        else {
            panic!("no presigned url");
        };
        assert_eq!(
            fetch_without_credentials(url.clone()).await,
            (200, b"first's".to_vec())
        );
        let edited = url.replacen(&format!("/{first_data}/"), &format!("/{second_data}/"), 1);
        assert_ne!(edited, url);
        assert_eq!(fetch_without_credentials(edited).await.0, 403);

        // A key made for the first plugin's bucket is refused on the second's by S3 itself,
        // for a request it signs and for a URL it presigns: its grant is all it carries.
        let attacker = keys
            .create_plugin_key(
                &unique_plugin("kyc"),
                &[BucketAccess {
                    physical: first_data.clone(),
                    read_only: false,
                }],
            )
            .await
            .expect("key");
        let own = signed_with(&backend, &first_data, &attacker);
        assert_eq!(status(own.get_object("/a.txt").await), 200);
        let other = signed_with(&backend, &second_data, &attacker);
        assert_eq!(status(other.get_object("/a.txt").await), 403);
        assert_eq!(status(other.put_object("/b.txt", b"x").await), 403);
        assert_eq!(
            status(other.list_page(String::new(), None, None, None, None).await),
            403
        );
        let forged = other
            .presign_get("/a.txt", 300, None)
            .await
            .expect("presigned locally");
        assert_eq!(fetch_without_credentials(forged).await.0, 403);
        keys.delete_plugin_key(&attacker.access_key_id).await;

        // Unloading (the gateway stops) deletes the plugin's key.
        drop(first_gateway);
        wait_until_no_key_named(&keys, &GarageKeys::key_name(&first)).await;
        drop(second_gateway);
        wait_until_no_key_named(&keys, &GarageKeys::key_name(&second)).await;
        let owner = garage().await;
        for bucket in [first_data, first_ref, second_data] {
            remove_bucket(&owner, &bucket).await;
        }
    }

    #[actix_rt::test]
    async fn keys_left_by_an_earlier_process_are_deleted_and_live_ones_kept() {
        let backend = garage().await;
        let plugin = unique_plugin("kys");
        let bucket = physical(&plugin, "data");
        backend.ensure_bucket(&bucket).await.expect("bucket");
        let access = [BucketAccess {
            physical: bucket.clone(),
            read_only: false,
        }];
        let name = GarageKeys::key_name(&plugin);

        let earlier_process = admin();
        let left_behind = earlier_process
            .create_plugin_key(&plugin, &access)
            .await
            .expect("key");
        let this_process = admin();
        let first = this_process
            .create_plugin_key(&plugin, &access)
            .await
            .expect("key");
        assert_eq!(
            this_process.keys_named(&name).await.unwrap(),
            std::slice::from_ref(&first.access_key_id)
        );
        assert_ne!(first.access_key_id, left_behind.access_key_id);
        // A reload makes a second key while the first is still in use: both stay.
        let second = this_process
            .create_plugin_key(&plugin, &access)
            .await
            .expect("key");
        let mut listed = this_process.keys_named(&name).await.unwrap();
        listed.sort();
        let mut expected = vec![first.access_key_id.clone(), second.access_key_id.clone()];
        expected.sort();
        assert_eq!(listed, expected);
        this_process.delete_plugin_key(&first.access_key_id).await;
        this_process.delete_plugin_key(&second.access_key_id).await;
        wait_until_no_key_named(&this_process, &name).await;
        remove_bucket(&backend, &bucket).await;
    }

    #[actix_rt::test]
    async fn an_unreachable_admin_api_is_a_typed_s3_error() {
        // Nothing listens on port 1.
        let keys = GarageKeys::new(GarageAdminConfig {
            url: "http://127.0.0.1:1".into(),
            token: "t".into(),
        })
        .expect("valid settings");
        let error = keys.create_plugin_key("orders", &[]).await.unwrap_err();
        assert_eq!(error.js_name(), "S3Error");
        assert!(error.to_string().contains("ListKeys"), "{error}");
    }
}
