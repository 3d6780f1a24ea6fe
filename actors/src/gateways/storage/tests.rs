//! Pure tests of the S3 backend's settings and error mapping: no server. The tests against
//! Garage are in `actors/tests/gateways/storage.rs`.

use super::*;

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
