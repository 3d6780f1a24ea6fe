//! An HTTP request → the request object a route handler receives, as the JSON the engine's
//! prelude reads (`{id, method, path, params, query, headers, bodyKind, body, isJson}`); the
//! prelude turns a binary body into a `Uint8Array` and parses a JSON one.

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::Engine as _;
use serde_json::{Map, Value};
use warden_runtime::routes::normalized_path;

/// Builds the handler's request. `path` is the raw path after `/api/<plugin>`; `params` are the
/// route's parameters, already percent-decoded.
pub fn plugin_request(
    request: &HttpRequest,
    id: &str,
    path: &str,
    params: Vec<(String, String)>,
    body: &[u8],
) -> Value {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let essence = content_type.as_deref().map(|value| {
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let (body_kind, body_value) = if body.is_empty() {
        ("none", Value::Null)
    } else if essence.as_deref().is_none_or(is_text_type) {
        (
            "text",
            Value::String(String::from_utf8_lossy(body).into_owned()),
        )
    } else {
        (
            "bytes",
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        )
    };
    let mut object = Map::new();
    object.insert("id".into(), id.into());
    object.insert("method".into(), request.method().as_str().into());
    object.insert("path".into(), normalized_path(path).into());
    object.insert(
        "params".into(),
        Value::Object(
            params
                .into_iter()
                .map(|(name, value)| (name, Value::String(value)))
                .collect(),
        ),
    );
    object.insert("query".into(), query_object(request.query_string()));
    object.insert("headers".into(), headers_object(request));
    object.insert("bodyKind".into(), body_kind.into());
    object.insert("body".into(), body_value);
    object.insert(
        "isJson".into(),
        Value::Bool(essence.as_deref() == Some("application/json")),
    );
    Value::Object(object)
}

/// Content types whose body a handler gets as a string (an absent one is text too).
fn is_text_type(essence: &str) -> bool {
    essence.starts_with("text/")
        || essence == "application/json"
        || essence == "application/x-www-form-urlencoded"
}

/// The query string decoded as a form: `+` is a space, a name without `=` is `""`, and a name
/// given more than once maps to an array of its values in order.
fn query_object(query: &str) -> Value {
    let mut object = Map::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = Value::String(value.into_owned());
        match object.get_mut(name.as_ref()) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => {
                let first = first.take();
                object.insert(name.into_owned(), Value::Array(vec![first, value]));
            }
            None => {
                object.insert(name.into_owned(), value);
            }
        }
    }
    Value::Object(object)
}

/// Headers with lowercase names; a repeated header's values are joined with `, `.
fn headers_object(request: &HttpRequest) -> Value {
    let mut object = Map::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match object.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                object.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_query_is_a_form_with_repeated_names_as_arrays() {
        assert_eq!(
            query_object("a=1&b=x+y&a=2&flag&c=%26&a=3"),
            json!({"a": ["1", "2", "3"], "b": "x y", "flag": "", "c": "&"})
        );
        assert_eq!(query_object(""), json!({}));
    }

    #[test]
    fn headers_are_lowercase_and_repeated_ones_joined() {
        let request = TestRequest::default()
            .insert_header(("X-Trace", "one"))
            .append_header(("x-trace", "two"))
            .insert_header(("Accept", "text/plain"))
            .to_http_request();
        let headers = headers_object(&request);
        assert_eq!(headers["x-trace"], "one, two");
        assert_eq!(headers["accept"], "text/plain");
    }

    #[test]
    fn bodies_are_text_for_text_types_and_bytes_otherwise() {
        let kind = |content_type: Option<&str>, body: &[u8]| {
            let mut request = TestRequest::post();
            if let Some(content_type) = content_type {
                request = request.insert_header(("content-type", content_type));
            }
            let built = plugin_request(&request.to_http_request(), "id", "/", Vec::new(), body);
            (
                built["bodyKind"].clone(),
                built["body"].clone(),
                built["isJson"].clone(),
            )
        };
        assert_eq!(
            kind(None, b"hi"),
            (json!("text"), json!("hi"), json!(false))
        );
        assert_eq!(
            kind(Some("Application/JSON; charset=utf-8"), b"{}"),
            (json!("text"), json!("{}"), json!(true))
        );
        assert_eq!(kind(Some("text/csv"), b"a,b").0, json!("text"));
        assert_eq!(
            kind(Some("application/x-www-form-urlencoded"), b"a=1").0,
            json!("text")
        );
        assert_eq!(
            kind(Some("application/octet-stream"), &[0, 255]),
            (json!("bytes"), json!("AP8="), json!(false))
        );
        assert_eq!(
            kind(Some("application/json"), b""),
            (json!("none"), json!(null), json!(true)),
            "an empty body is null, whatever its type"
        );
    }

    #[test]
    fn the_path_loses_its_trailing_slash_and_params_are_kept() {
        let request = TestRequest::get()
            .uri("/api/shop/items/7/?x=1")
            .to_http_request();
        let built = plugin_request(
            &request,
            "abc",
            "/items/7/",
            vec![("id".into(), "7".into())],
            b"",
        );
        assert_eq!(built["path"], "/items/7");
        assert_eq!(built["params"], json!({"id": "7"}));
        assert_eq!(built["query"], json!({"x": "1"}));
        assert_eq!(built["method"], "GET");
        assert_eq!(built["id"], "abc");
    }
}
