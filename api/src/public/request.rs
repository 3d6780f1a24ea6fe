//! An HTTP request → the request object a route handler receives, as the JSON text the
//! engine's prelude reads (`{id, method, path, params, query, headers, bodyKind, body, isJson}`);
//! the prelude turns a binary body into a `Uint8Array` and parses a JSON one. The text is
//! written straight from the request, on the HTTP worker, with no JSON tree in between.

use std::borrow::Cow;
use std::collections::HashMap;

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::Engine as _;
use serde::ser::{SerializeMap as _, Serializer};
use serde::Serialize;
use warden_runtime::routes::normalized_path;

/// The request object as the prelude reads it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    id: &'a str,
    method: &'a str,
    path: &'a str,
    #[serde(serialize_with = "pairs")]
    params: &'a [(String, String)],
    query: Query<'a>,
    #[serde(serialize_with = "joined_headers")]
    headers: &'a HttpRequest,
    body_kind: &'static str,
    body: Option<Cow<'a, str>>,
    is_json: bool,
}

/// Builds the handler's request as JSON text. `path` is the raw path after `/api/<plugin>`;
/// `params` are the route's parameters, already percent-decoded.
pub fn plugin_request(
    request: &HttpRequest,
    id: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
) -> String {
    let essence = request.headers().get(header::CONTENT_TYPE).map(|value| {
        String::from_utf8_lossy(value.as_bytes())
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let (body_kind, body) = if body.is_empty() {
        ("none", None)
    } else if essence.as_deref().is_none_or(is_text_type) {
        ("text", Some(String::from_utf8_lossy(body)))
    } else {
        (
            "bytes",
            Some(Cow::Owned(
                base64::engine::general_purpose::STANDARD.encode(body),
            )),
        )
    };
    let wire = WireRequest {
        id,
        method: request.method().as_str(),
        path: normalized_path(path),
        params,
        query: Query::parse(request.query_string()),
        headers: request,
        body_kind,
        body,
        is_json: essence.as_deref() == Some("application/json"),
    };
    // Strings and maps of strings always serialize.
    serde_json::to_string(&wire).unwrap_or_else(|_| "null".to_owned())
}

/// Content types whose body a handler gets as a string (an absent one is text too).
fn is_text_type(essence: &str) -> bool {
    essence.starts_with("text/")
        || essence == "application/json"
        || essence == "application/x-www-form-urlencoded"
}

fn pairs<S: Serializer>(pairs: &&[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(pairs.len()))?;
    for (name, value) in pairs.iter() {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

/// Headers with lowercase names (actix keeps them so); a repeated header's values are joined
/// with `, `.
fn joined_headers<S: Serializer>(request: &&HttpRequest, serializer: S) -> Result<S::Ok, S::Error> {
    let headers = request.headers();
    let mut map = serializer.serialize_map(None)?;
    for name in headers.keys() {
        let mut values = headers.get_all(name);
        let first = values
            .next()
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .unwrap_or_default();
        let rest: Vec<_> = values.collect();
        if rest.is_empty() {
            map.serialize_entry(name.as_str(), &first)?;
        } else {
            let mut joined = first.into_owned();
            for value in rest {
                joined.push_str(", ");
                joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
            map.serialize_entry(name.as_str(), &joined)?;
        }
    }
    map.end()
}

/// The query string decoded as a form: `+` is a space, a name without `=` is `""`, and a name
/// given more than once maps to an array of its values in order.
struct Query<'a> {
    names: Vec<(Cow<'a, str>, Vec<Cow<'a, str>>)>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Self {
        let mut names: Vec<(Cow<'a, str>, Vec<Cow<'a, str>>)> = Vec::new();
        let mut positions: HashMap<Cow<'a, str>, usize> = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match positions.get(&name) {
                Some(&position) => names[position].1.push(value),
                None => {
                    positions.insert(name.clone(), names.len());
                    names.push((name, vec![value]));
                }
            }
        }
        Query { names }
    }
}

impl Serialize for Query<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.names.len()))?;
        for (name, values) in &self.names {
            match values.as_slice() {
                [one] => map.serialize_entry(name, one)?,
                many => map.serialize_entry(name, many)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use serde_json::{json, Value};

    use super::*;

    fn query_object(query: &str) -> Value {
        serde_json::to_value(Query::parse(query)).unwrap()
    }

    fn built(request: &HttpRequest, path: &str, params: &[(String, String)], body: &[u8]) -> Value {
        serde_json::from_str(&plugin_request(request, "id", path, params, body)).unwrap()
    }

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
        let headers = built(&request, "/", &[], b"")["headers"].clone();
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
            let built = built(&request.to_http_request(), "/", &[], body);
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
        let built = built(&request, "/items/7/", &[("id".into(), "7".into())], b"");
        assert_eq!(built["path"], "/items/7");
        assert_eq!(built["params"], json!({"id": "7"}));
        assert_eq!(built["query"], json!({"x": "1"}));
        assert_eq!(built["method"], "GET");
        assert_eq!(built["id"], "id");
    }
}
