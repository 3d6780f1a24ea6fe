//! What object keys and content types may be: what S3 accepts, and no `.`/`..` segments.

use super::*;

/// The path rust-s3 expects for `key`. It strips one leading `/` from the path it is given,
/// so a `/` is always put in front: a key that itself starts with `/` keeps it.
pub fn object_path(key: &str) -> String {
    format!("/{key}")
}

/// Refuses keys S3 refuses, and keys with `.` or `..` segments: the URL parser under rust-s3
/// resolves those, so `../other-bucket/x` would reach another bucket than the granted one.
pub(super) fn validate_key(key: &str) -> Result<()> {
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
pub(super) fn validate_content_type(content_type: &str) -> Result<()> {
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

pub(super) fn invalid_value(reason: impl Into<String>) -> Error {
    Error::InvalidValue {
        reason: reason.into(),
    }
}
