//! S3 failures as typed errors, with the status, S3's code and message when it answered.

use super::*;

pub(super) fn s3_error(message: String) -> Error {
    Error::Backend {
        service: "s3".into(),
        message,
    }
}

/// `{action}: {what S3 said}`, as an S3 backend error.
pub(super) fn backend_error(action: String, error: &S3Error) -> Error {
    s3_error(format!("{action}: {}", describe(error)))
}

/// The HTTP status of a failure the server answered.
pub(super) fn status_of(error: &S3Error) -> Option<u16> {
    match error {
        S3Error::HttpFailWithBody(status, _) => Some(*status),
        _ => None,
    }
}

/// The `<Code>` of the S3 error document the server answered with, if any.
pub(super) fn error_code(error: &S3Error) -> Option<&str> {
    match error {
        S3Error::HttpFailWithBody(_, body) => xml_element(body, "Code"),
        _ => None,
    }
}

/// A short description of a failure: the status, S3's error code and message when the server
/// answered, the transport error otherwise.
pub(super) fn describe(error: &S3Error) -> String {
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
pub(super) fn xml_element<'a>(document: &'a str, element: &str) -> Option<&'a str> {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let start = document.find(&open)? + open.len();
    let length = document[start..].find(&close)?;
    Some(document[start..start + length].trim())
}
