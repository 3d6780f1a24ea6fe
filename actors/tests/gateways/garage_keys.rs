//! Plugin keys against the local stack's Garage and its admin API.

use super::storage::{
    fetch_without_credentials, garage, grants, remove_bucket, request, unique_plugin,
    unreachable_backend, HOW_TO_START,
};
use super::support::stack_setting;
use actix::{Actor, Addr};
use s3::creds::Credentials;
use std::time::{Duration, Instant};
use warden_actors::gateways::garage_keys::*;
use warden_actors::gateways::storage::{
    EnsureBuckets, StorageBackend, StorageGateway, StorageOperation, StorageOutcome,
};
use warden_actors::gateways::GarageAdminConfig;
use warden_runtime::Error;

/// The local Garage's admin API: `WARDEN_TEST_S3_ADMIN_URL` and `WARDEN_TEST_S3_ADMIN_TOKEN`,
/// else `WARDEN_S3_ADMIN_URL` and `WARDEN_S3_ADMIN_TOKEN` of infra/local.env.
fn admin() -> GarageKeys {
    let (Some(url), Some(token)) = (
        stack_setting("WARDEN_TEST_S3_ADMIN_URL", "WARDEN_S3_ADMIN_URL"),
        stack_setting("WARDEN_TEST_S3_ADMIN_TOKEN", "WARDEN_S3_ADMIN_TOKEN"),
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
