//! A route handler's response, in the form the prelude gives it (`routeResponse` in
//! `js/prelude.js`), → an HTTP response; and the public listener's own error bodies.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use base64::Engine as _;
use serde_json::{json, Value};

/// Headers a handler may not set: hop-by-hop ones, the length Warden computes, and the request
/// id Warden sends back itself.
const IGNORED_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "x-request-id",
];

/// The public listener's error body: `{"error": {"code", "message"}}`, never a `name`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}

/// Builds the HTTP response; `Err` says why the value is not a response (answered 500
/// `invalid_response`, the reason logged). For a `HEAD` request actix-web sends the headers
/// (with the length of the body a `GET` gets) and leaves the body out.
pub fn from_wire(wire: &Value) -> Result<HttpResponse, String> {
    let kind = wire["kind"].as_str().unwrap_or_default();
    if kind == "invalid" {
        return Err(wire["message"]
            .as_str()
            .unwrap_or("not a response")
            .to_owned());
    }
    // The prelude checks these too; the host does not trust the plugin's heap to have done so.
    let allowed = if kind == "error" {
        400..=599
    } else {
        200..=599
    };
    let status = wire["status"]
        .as_u64()
        .and_then(|status| u16::try_from(status).ok())
        .filter(|status| allowed.contains(status))
        .and_then(|status| StatusCode::from_u16(status).ok())
        .ok_or_else(|| format!("status {} is not one a handler may answer", wire["status"]))?;
    if kind == "error" {
        return Ok(error_response(
            status,
            wire["code"].as_str().unwrap_or("handler_error"),
            wire["message"].as_str().unwrap_or_default(),
        ));
    }
    let mut builder = HttpResponse::build(status);
    let mut has_content_type = false;
    for pair in wire["headers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) else {
            return Err("a header is not a name and a string".into());
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("'{name}' is not a valid header name"))?;
        if IGNORED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header '{name}' is not a valid header value"))?;
        has_content_type |= name == header::CONTENT_TYPE;
        builder.append_header((name, value));
    }
    let (body, default_type): (Vec<u8>, &str) = match kind {
        // The prelude serialized the handler's `json` already.
        "json" => (
            wire["text"].as_str().unwrap_or("null").as_bytes().to_vec(),
            "application/json",
        ),
        "text" => (
            wire["text"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            "text/plain; charset=utf-8",
        ),
        "bytes" => (
            base64::engine::general_purpose::STANDARD
                .decode(wire["base64"].as_str().unwrap_or_default())
                .map_err(|error| format!("the binary body does not decode: {error}"))?,
            "application/octet-stream",
        ),
        "empty" => return Ok(builder.finish()),
        other => return Err(format!("unknown response kind '{other}'")),
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        // These have no body in HTTP/1.1: bytes after them would be read as the next response
        // on the connection.
        return Ok(builder.finish());
    }
    if !has_content_type {
        builder.insert_header((header::CONTENT_TYPE, default_type));
    }
    Ok(builder.body(body))
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody as _;

    use super::*;

    fn header_of<'a>(response: &'a HttpResponse, name: &str) -> &'a str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    fn body_of(response: HttpResponse) -> Vec<u8> {
        response
            .into_body()
            .try_into_bytes()
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn json_text_and_bytes_get_their_content_types() {
        let json =
            from_wire(&json!({"kind": "json", "status": 201, "headers": [], "text": "{\"id\":1}"}))
                .unwrap();
        assert_eq!(json.status(), 201);
        assert_eq!(header_of(&json, "content-type"), "application/json");
        assert_eq!(body_of(json), br#"{"id":1}"#);
        let text = from_wire(&json!({"kind": "text", "status": 200, "headers": [], "text": "hi"}))
            .unwrap();
        assert_eq!(
            header_of(&text, "content-type"),
            "text/plain; charset=utf-8"
        );
        let bytes =
            from_wire(&json!({"kind": "bytes", "status": 200, "headers": [], "base64": "AP8="}))
                .unwrap();
        assert_eq!(
            header_of(&bytes, "content-type"),
            "application/octet-stream"
        );
        assert_eq!(body_of(bytes), vec![0, 255]);
    }

    #[test]
    fn the_handlers_content_type_wins_and_hop_by_hop_headers_are_dropped() {
        let response = from_wire(
            &json!({"kind": "text", "status": 200, "text": "<p>", "headers": [
                ["Content-Type", "text/html"], ["Connection", "close"], ["content-length", "1"],
                ["x-request-id", "forged"], ["x-custom", "yes"]]}),
        )
        .unwrap();
        let headers = response.headers();
        assert_eq!(headers.get("content-type").unwrap(), "text/html");
        assert_eq!(headers.get("x-custom").unwrap(), "yes");
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-request-id").is_none());
        assert_eq!(body_of(response), b"<p>");
    }

    #[test]
    fn errors_and_invalid_values_are_told_apart() {
        let error = from_wire(
            &json!({"kind": "error", "status": 404, "code": "no_order", "message": "no such order"}),
        )
        .unwrap();
        assert_eq!(error.status(), 404);
        assert_eq!(
            serde_json::from_slice::<Value>(&body_of(error)).unwrap(),
            json!({"error": {"code": "no_order", "message": "no such order"}})
        );
        assert!(
            from_wire(&json!({"kind": "invalid", "message": "the handler returned a string"}))
                .unwrap_err()
                .contains("a string")
        );
        assert!(from_wire(
            &json!({"kind": "text", "status": 200, "text": "", "headers": [["bad name", "x"]]}),
        )
        .is_err());
        assert!(from_wire(
            &json!({"kind": "text", "status": 200, "text": "", "headers": [["x", "line\nbreak"]]}),
        )
        .is_err());
    }

    #[test]
    fn statuses_outside_what_a_handler_may_answer_are_refused() {
        for (kind, status) in [
            ("json", 999),
            ("json", 101),
            ("json", 199),
            ("error", 302),
            ("error", 200),
        ] {
            let wire = json!({"kind": kind, "status": status, "headers": [], "json": 1, "code": "x", "message": "m"});
            assert!(from_wire(&wire).is_err(), "{kind} {status}");
        }
    }

    #[test]
    fn no_content_and_not_modified_never_carry_a_body() {
        for status in [204, 304] {
            let response = from_wire(&json!({"kind": "text", "status": status, "headers": [], "text": "HTTP/1.1 200 OK"})).unwrap();
            assert!(body_of(response).is_empty(), "{status}");
        }
    }

    #[test]
    fn an_empty_response_has_no_body() {
        let empty = from_wire(&json!({"kind": "empty", "status": 204, "headers": []})).unwrap();
        assert_eq!(empty.status(), 204);
        assert!(body_of(empty).is_empty());
    }
}
