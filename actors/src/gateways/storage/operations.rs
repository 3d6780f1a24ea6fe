//! Running one checked S3 operation on a granted bucket, and listing keys page by page.

use super::*;

/// Counts one request and, when it was sent, how long it took.
pub(super) fn record(
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
pub(super) async fn perform(
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
pub async fn list_keys(
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
