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
    //! Pure tests; the ones against Garage's admin API are in `actors/tests/gateways/garage_keys.rs`.

    use super::*;

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
}
