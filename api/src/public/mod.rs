//! The public listener: plugins' own HTTP routes under `/api/<plugin>`, on a second actix-web
//! server beside the admin one. It needs no admin token and serves no admin endpoint; the admin
//! server serves no plugin route.
//!
//! A request is matched against the plugin's routes as the directory holds them now (so a reload
//! swaps them at once), its body read within `WARDEN_HTTP_MAX_BODY_BYTES`, and its handler called
//! in the plugin's actor through the same call path as `execute` (`CallTarget::Route`).

mod body_budget;
mod request;
mod response;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt as _;
use warden_actors::system::{RoutedPlugin, Warden};
use warden_actors::Error as ActorError;
use warden_runtime::routes::RouteMatch;
use warden_runtime::Error as PluginError;

pub use body_budget::BodyBudget;
pub use response::error_response;

/// The request header that carries a request's id, and the response header that returns it.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest request id taken from a client; a longer one is replaced by a new id.
const MAX_REQUEST_ID_BYTES: usize = 128;
/// Seconds a client is told to wait while a plugin restarts (its backoff is at most 5 s).
const RETRY_AFTER_RESTARTING_S: &str = "1";
/// Seconds a client is told to wait for a plugin that failed (an operator must act).
const RETRY_AFTER_FAILED_S: &str = "30";

/// What the public listener's handler needs besides the actor system.
#[derive(Debug, Clone, Copy)]
pub struct PublicSettings {
    /// The largest request body; a larger one is answered 413 before the handler runs.
    pub max_body_bytes: usize,
    /// The most request-body bytes one plugin's calls may hold at once (see [`BodyBudget`]).
    pub body_budget_bytes: usize,
}

/// Every request of the public listener goes here.
pub fn configure(config: &mut web::ServiceConfig) {
    config.default_service(web::to(serve));
}

/// The labels a request is counted and logged under.
struct Served {
    /// The plugin's name when the path names a loaded plugin, else empty (unknown names are
    /// never labels: a client could make any number of them).
    plugin: String,
    /// The declared route (`GET /orders/:id`), empty when none matched.
    route: String,
}

async fn serve(
    request: HttpRequest,
    payload: web::Payload,
    warden: Data<Warden>,
    settings: Data<PublicSettings>,
    budget: Data<Arc<BodyBudget>>,
) -> HttpResponse {
    let started = Instant::now();
    let request_id = request_id(&request);
    let mut served = Served {
        plugin: String::new(),
        route: String::new(),
    };
    let mut response = answer(
        &request,
        payload,
        &warden,
        (&settings, &budget),
        &request_id,
        &mut served,
    )
    .await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    record(&request, &served, &request_id, response.status(), started);
    response
}

async fn answer(
    request: &HttpRequest,
    payload: web::Payload,
    warden: &Warden,
    (settings, budget): (&PublicSettings, &BodyBudget),
    request_id: &str,
    served: &mut Served,
) -> HttpResponse {
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no route serves this path",
        )
    };
    let Some((plugin_name, path)) = split_plugin_path(request.path()) else {
        return not_found();
    };
    let Some(plugin) = warden.routed_plugin(plugin_name) else {
        // A plugin of the cluster that failed to come up here runs on other nodes: a client
        // behind a load balancer is told to try again, not that the path does not exist.
        if warden.failed_here(plugin_name) {
            served.plugin = plugin_name.to_owned();
            return unavailable(plugin_name, RETRY_AFTER_FAILED_S);
        }
        return not_found();
    };
    served.plugin = plugin.name.clone();
    let method = request.method().as_str();
    let (route, params) = match plugin.routes.find(method, path) {
        RouteMatch::Found { route, params } => (route, params),
        RouteMatch::NotFound => return not_found(),
        RouteMatch::MethodNotAllowed { allow } => {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("this path answers {}", allow.join(", ")),
            );
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return response;
        }
    };
    let route_key = plugin.routes.specs()[route].key();
    route_key.clone_into(&mut served.route);
    let body = match read_body(request, payload, settings.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(_reservation) = budget.reserve(&plugin.name, body.len(), settings.body_budget_bytes)
    else {
        tracing::warn!(plugin = %plugin.name, route = %route_key, request_id, "request bodies in flight are over the plugin's share; answered 503");
        return unavailable(&plugin.name, RETRY_AFTER_RESTARTING_S);
    };
    let plugin_request = request::plugin_request(request, request_id, path, &params, &body);
    let outcome = call(warden, &plugin, route, route_key, plugin_request).await;
    match outcome {
        Ok(wire) => match response::from_wire(&wire) {
            Ok(response) => response,
            Err(reason) => {
                tracing::warn!(
                    plugin = %plugin.name, route = %route_key, request_id, %reason,
                    "route handler returned something that is not a response"
                );
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "invalid_response",
                    "the handler's response is not valid",
                )
            }
        },
        Err(error) => failure_response(&plugin.name, route_key, request_id, &error),
    }
}

/// How often a request refused by a stopping version looks again whether the plugin serves
/// (a failed reload restores the old version in place, which changes no directory entry).
const REFUSED_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Calls the route. A call the plugin refused before running it because a reload is stopping
/// the old version (or has stopped it) is sent again, to the version the directory holds then,
/// if it still has that route, until the reload is done (at most three call time limits: the
/// drain, `cleanup()` and the new `initialize`). A reload loses no request, and a call that
/// started is never sent twice.
async fn call(
    warden: &Warden,
    plugin: &RoutedPlugin,
    route: usize,
    route_key: &str,
    request: String,
) -> Result<serde_json::Value, ActorError> {
    let deadline = Instant::now() + warden.call_timeout() * 3;
    let mut current = (plugin.clone(), route);
    loop {
        let mut changes = warden.directory_changes();
        let outcome = current
            .0
            .call(current.1, serde_json::Value::String(request.clone()))
            .await;
        // `PluginUnloaded` is how a terminated version refuses a call. A call that had started
        // is not cut off by a reload: the old version drains its calls (each within its time
        // limit, past which it answers `Timeout`) before it is disposed.
        let refused_by_a_reload = match &outcome {
            Err(ActorError::Plugin(PluginError::Unavailable { state, .. })) => {
                state == "stopping" || state == "stopped"
            }
            Err(ActorError::Plugin(PluginError::PluginUnloaded { .. })) => true,
            _ => false,
        };
        if !refused_by_a_reload || Instant::now() >= deadline {
            return outcome;
        }
        let _ = tokio::time::timeout(REFUSED_RETRY_INTERVAL, changes.changed()).await;
        let Some(next) = warden.routed_plugin(&plugin.name) else {
            return outcome;
        };
        let Some(index) = next
            .routes
            .specs()
            .iter()
            .position(|spec| spec.key() == route_key)
        else {
            return outcome;
        };
        current = (next, index);
    }
}

/// What a failed call answers; the client never sees the error's own text.
fn failure_response(
    plugin: &str,
    route: &str,
    request_id: &str,
    error: &ActorError,
) -> HttpResponse {
    match error {
        ActorError::Plugin(PluginError::Timeout { limit_ms, .. }) => {
            tracing::warn!(plugin, route, request_id, %error, "route handler timed out");
            error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                &format!("the handler ran past its time limit of {limit_ms} ms"),
            )
        }
        ActorError::Plugin(PluginError::Unavailable { state, .. }) => unavailable(
            plugin,
            if state == "failed" {
                RETRY_AFTER_FAILED_S
            } else {
                RETRY_AFTER_RESTARTING_S
            },
        ),
        ActorError::Plugin(PluginError::PluginUnloaded { .. }) => {
            unavailable(plugin, RETRY_AFTER_RESTARTING_S)
        }
        _ => {
            tracing::error!(plugin, route, request_id, %error, "route handler failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "handler_failed",
                "the handler failed; the server's log has the details",
            )
        }
    }
}

fn unavailable(plugin: &str, retry_after: &'static str) -> HttpResponse {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "plugin_unavailable",
        &format!("plugin '{plugin}' is not running; try again later"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
    response
}

/// `/api/<plugin>/<rest>` → (plugin, `/<rest>`); `/api/<plugin>` alone is the plugin's `/`.
fn split_plugin_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/")?;
    let (plugin, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    (!plugin.is_empty()).then_some((plugin, path))
}

/// The client's `x-request-id` when it is a plain token, else a new one.
fn request_id(request: &HttpRequest) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_BYTES
                && id.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// A new request id: a random prefix drawn once per process, then a counter, so ids are unique
/// across restarts without drawing randomness for every request.
fn new_request_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    format!("{prefix}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The body, at most `limit` bytes; a larger one is answered 413 without reading it all.
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, HttpResponse> {
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the request body is larger than {limit} bytes (WARDEN_HTTP_MAX_BODY_BYTES)"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("cannot read the request body: {error}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Counts the request and writes its access-log line.
fn record(
    request: &HttpRequest,
    served: &Served,
    request_id: &str,
    status: StatusCode,
    started: Instant,
) {
    let elapsed = started.elapsed();
    // Methods beyond the standard ones are one label, so no client can grow the label set.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    metrics::counter!(
        "warden_http_requests_total",
        "plugin" => served.plugin.clone(),
        "route" => served.route.clone(),
        "method" => method,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(
        "warden_http_request_duration_seconds",
        "plugin" => served.plugin.clone(),
        "route" => served.route.clone()
    )
    .record(elapsed.as_secs_f64());
    tracing::debug!(
        plugin = %served.plugin,
        route = %served.route,
        method = %request.method(),
        path = %request.path(),
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        request_id,
        "http request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_the_first_segment_after_api() {
        assert_eq!(
            split_plugin_path("/api/orders/orders/42"),
            Some(("orders", "/orders/42"))
        );
        assert_eq!(split_plugin_path("/api/orders"), Some(("orders", "/")));
        assert_eq!(split_plugin_path("/api/orders/"), Some(("orders", "/")));
        assert_eq!(split_plugin_path("/api/"), None);
        assert_eq!(split_plugin_path("/api"), None);
        assert_eq!(split_plugin_path("/plugins"), None);
    }
}
