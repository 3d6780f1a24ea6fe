//! The admin endpoints, each a thin translation between HTTP and the actor system.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data, Json, Path, Query};
use actix_web::{HttpResponse, Responder};
use futures::StreamExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio_stream_shim::ReceiverStream;
use utoipa::OpenApi;
use warden_actors::cluster::{ListNodes, ListPluginNodes, Membership, PluginNodes};
use warden_actors::system::Warden;

use crate::dto::{
    ClusterResponse, ExecuteResponse, HealthResponse, LoadRequest, MigrationDto,
    MigrationsResponse, Overrides, OverridesResponse, PlanError, PlanRequest, PlanResponse,
    PluginInfoDto, PluginList, PublishRequest, ReadyResponse, ReloadRequest, ScanResponse,
};
use crate::error::{ApiError, ErrorBody};

/// Events an SSE client may lag behind before further events are dropped for it.
const STREAM_CAPACITY: usize = 1_024;
/// How often an idle SSE stream sends a comment, so proxies keep it open.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

type ApiResult<T> = Result<T, ApiError>;

/// Registers every endpoint.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi))
        .route("/plugins", web::get().to(list_plugins))
        .route("/plugins", web::post().to(load_plugin))
        .route("/plugins/scan", web::post().to(scan_plugins))
        .route("/plugins/migrations/plan", web::post().to(plan_migrations))
        .route("/plugins/{name}", web::get().to(get_plugin))
        .route("/plugins/{name}", web::delete().to(unload_plugin))
        .route("/plugins/{name}/reload", web::post().to(reload_plugin))
        .route("/plugins/{name}/execute", web::post().to(execute_plugin))
        .route("/plugins/{name}/migrations", web::get().to(list_migrations))
        .route("/plugins/{name}/overrides", web::get().to(get_overrides))
        .route("/plugins/{name}/overrides", web::put().to(put_overrides))
        .route(
            "/plugins/{name}/overrides",
            web::delete().to(delete_overrides),
        )
        .route("/cluster", web::get().to(cluster))
        .route("/events", web::post().to(publish_event))
        .route("/events/stream", web::get().to(event_stream));
}

/// Parses an optional JSON body of any shape: empty means `None`; malformed JSON is 400.
fn optional_json(body: &Bytes) -> ApiResult<Option<serde_json::Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|error| ApiError::invalid_request(format!("invalid JSON body: {error}")))
}

/// Parses an optional JSON object body into `T`: empty means `None`; malformed JSON, another
/// JSON type (serde would otherwise read a struct from an array) or unknown fields are 400.
fn optional_object<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<Option<T>> {
    match optional_json(body)? {
        None => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value)
            .map(Some)
            .map_err(|error| ApiError::invalid_request(format!("invalid body: {error}"))),
        Some(_) => Err(ApiError::invalid_request("the body must be a JSON object")),
    }
}

#[utoipa::path(get, path = "/health", responses((status = 200, body = HealthResponse)))]
async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok" })
}

#[utoipa::path(get, path = "/ready", responses((status = 200, body = ReadyResponse), (status = 503, body = ReadyResponse)), security(("bearer" = [])))]
async fn ready(warden: Data<Warden>) -> HttpResponse {
    let checks: BTreeMap<&'static str, &'static str> = warden
        .readiness()
        .await
        .into_iter()
        .map(|(backend, readiness)| (backend, readiness.as_str()))
        .collect();
    let healthy = checks.values().all(|check| *check != "down");
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(ReadyResponse {
        status: if healthy { "ok" } else { "degraded" },
        checks,
    })
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")), security(("bearer" = [])))]
async fn metrics(handle: Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This OpenAPI 3 document")), security(("bearer" = [])))]
async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[utoipa::path(get, path = "/plugins", responses((status = 200, body = PluginList)), security(("bearer" = [])))]
async fn list_plugins(
    warden: Data<Warden>,
    membership: Data<actix::Addr<Membership>>,
) -> ApiResult<Json<PluginList>> {
    let plugins: Vec<PluginInfoDto> = warden
        .list()
        .await?
        .into_iter()
        .map(PluginInfoDto::from)
        .collect();
    let names = plugins.iter().map(|plugin| plugin.name.clone()).collect();
    let plugins = match plugin_nodes(&membership, names).await {
        Some(view) => plugins
            .into_iter()
            .map(|plugin| plugin.with_nodes(&view))
            .collect(),
        None => plugins,
    };
    Ok(Json(PluginList { plugins }))
}

/// In a cluster, the named plugins' states on every up node (`PluginInfo.nodes`).
async fn plugin_nodes(
    membership: &actix::Addr<Membership>,
    plugins: Vec<String>,
) -> Option<PluginNodes> {
    membership
        .send(ListPluginNodes { plugins })
        .await
        .ok()
        .flatten()
}

#[utoipa::path(post, path = "/plugins", request_body = LoadRequest,
    responses((status = 201, body = PluginInfoDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn load_plugin(
    warden: Data<Warden>,
    membership: Data<actix::Addr<Membership>>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let request: LoadRequest = optional_object(&body)?
        .ok_or_else(|| ApiError::invalid_request("the body must be {\"path\": …}"))?;
    let info = warden
        .load(request.path, request.overrides.map(Into::into))
        .await?;
    let plugin = with_cluster_nodes(&membership, PluginInfoDto::from(info)).await;
    Ok(HttpResponse::Created().json(plugin))
}

#[utoipa::path(post, path = "/plugins/scan", responses((status = 200, body = ScanResponse)), security(("bearer" = [])))]
async fn scan_plugins(warden: Data<Warden>) -> ApiResult<Json<ScanResponse>> {
    Ok(Json(ScanResponse::from(warden.scan().await?)))
}

#[utoipa::path(get, path = "/plugins/{name}", params(("name" = String, Path)),
    responses((status = 200, body = PluginInfoDto), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn get_plugin(
    warden: Data<Warden>,
    membership: Data<actix::Addr<Membership>>,
    name: Path<String>,
) -> ApiResult<Json<PluginInfoDto>> {
    let plugin = PluginInfoDto::from(warden.get(name.into_inner()).await?);
    Ok(Json(with_cluster_nodes(&membership, plugin).await))
}

/// One plugin's answer with `nodes` in a cluster (load, reload and get answer alike).
async fn with_cluster_nodes(
    membership: &actix::Addr<Membership>,
    plugin: PluginInfoDto,
) -> PluginInfoDto {
    match plugin_nodes(membership, vec![plugin.name.clone()]).await {
        Some(view) => plugin.with_nodes(&view),
        None => plugin,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
struct UnloadQuery {
    /// Unload dependents first, in reverse dependency order.
    cascade: Option<bool>,
}

#[utoipa::path(delete, path = "/plugins/{name}", params(("name" = String, Path), UnloadQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn unload_plugin(
    warden: Data<Warden>,
    name: Path<String>,
    query: Query<UnloadQuery>,
) -> ApiResult<HttpResponse> {
    warden
        .unload(name.into_inner(), query.cascade.unwrap_or(false))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/plugins/{name}/reload", params(("name" = String, Path)), request_body(content = ReloadRequest, description = "optional"),
    responses((status = 200, body = PluginInfoDto), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
async fn reload_plugin(
    warden: Data<Warden>,
    membership: Data<actix::Addr<Membership>>,
    name: Path<String>,
    body: Bytes,
) -> ApiResult<Json<PluginInfoDto>> {
    let request: ReloadRequest = optional_object(&body)?.unwrap_or_default();
    let info = warden
        .reload(name.into_inner(), request.overrides.map(Into::into))
        .await?;
    Ok(Json(with_cluster_nodes(&membership, info.into()).await))
}

#[utoipa::path(post, path = "/plugins/{name}/execute", params(("name" = String, Path)), request_body(content = serde_json::Value, description = "the input, any JSON"),
    responses((status = 200, body = ExecuteResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("bearer" = [])))]
async fn execute_plugin(
    warden: Data<Warden>,
    name: Path<String>,
    body: Bytes,
) -> ApiResult<Json<ExecuteResponse>> {
    let input = optional_json(&body)?.unwrap_or(serde_json::Value::Null);
    let result = warden.execute(&name, input).await?;
    Ok(Json(ExecuteResponse { result }))
}

#[utoipa::path(get, path = "/plugins/{name}/migrations", params(("name" = String, Path)),
    responses((status = 200, body = MigrationsResponse), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn list_migrations(
    warden: Data<Warden>,
    name: Path<String>,
) -> ApiResult<Json<MigrationsResponse>> {
    let migrations = warden
        .migrations(name.into_inner())
        .await?
        .into_iter()
        .map(MigrationDto::from)
        .collect();
    Ok(Json(MigrationsResponse { migrations }))
}

#[utoipa::path(get, path = "/cluster", responses((status = 200, body = ClusterResponse)), security(("bearer" = [])))]
async fn cluster(membership: Data<actix::Addr<Membership>>) -> ApiResult<Json<ClusterResponse>> {
    let view = membership.send(ListNodes).await.map_err(|_| {
        ApiError::from(warden_actors::Error::SystemUnavailable {
            reason: "the membership actor stopped".to_owned(),
        })
    })?;
    Ok(Json(view.into()))
}

#[utoipa::path(post, path = "/plugins/migrations/plan", request_body = PlanRequest,
    responses((status = 200, body = PlanResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn plan_migrations(warden: Data<Warden>, body: Bytes) -> ApiResult<Json<PlanResponse>> {
    let request: PlanRequest = optional_object(&body)?
        .ok_or_else(|| ApiError::invalid_request("the body must be {\"path\": …}"))?;
    let plan = warden.plan_migrations(request.path).await?;
    let error = plan.error.map(|error| {
        let error = ApiError::from(warden_actors::Error::Plugin(error));
        PlanError {
            code: error.code.to_owned(),
            message: error.message,
        }
    });
    Ok(Json(PlanResponse {
        plugin: plan.plugin,
        pending: plan.pending,
        unknown: plan.unknown,
        ok: error.is_none(),
        error,
    }))
}

#[utoipa::path(get, path = "/plugins/{name}/overrides", params(("name" = String, Path)),
    responses((status = 200, body = Overrides), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
async fn get_overrides(warden: Data<Warden>, name: Path<String>) -> ApiResult<Json<Overrides>> {
    Ok(Json(warden.overrides(name.into_inner()).await?.into()))
}

#[utoipa::path(put, path = "/plugins/{name}/overrides", params(("name" = String, Path)), request_body = Overrides,
    responses((status = 200, body = OverridesResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
async fn put_overrides(
    warden: Data<Warden>,
    name: Path<String>,
    body: Bytes,
) -> ApiResult<Json<OverridesResponse>> {
    let overrides: Overrides = optional_object(&body)?
        .ok_or_else(|| ApiError::invalid_request("the body must be an Overrides object"))?;
    let (stored, plugin) = warden
        .set_overrides(name.into_inner(), overrides.into())
        .await?;
    Ok(Json(OverridesResponse {
        overrides: stored.into(),
        plugin: plugin.map(Into::into),
    }))
}

#[utoipa::path(delete, path = "/plugins/{name}/overrides", params(("name" = String, Path)),
    responses((status = 204), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
async fn delete_overrides(warden: Data<Warden>, name: Path<String>) -> ApiResult<HttpResponse> {
    warden.clear_overrides(name.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/events", request_body = PublishRequest,
    responses((status = 202), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn publish_event(warden: Data<Warden>, body: Bytes) -> ApiResult<HttpResponse> {
    let request: PublishRequest = optional_object(&body)?
        .ok_or_else(|| ApiError::invalid_request("the body must be {\"event\": …, \"data\": …}"))?;
    warden
        .publish(&request.event, "admin", request.data)
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Accepted().finish())
}

#[derive(Deserialize, utoipa::IntoParams)]
struct StreamQuery {
    /// Event name or pattern (`*` one segment, `**` the rest); every event when absent.
    pattern: Option<String>,
}

#[utoipa::path(get, path = "/events/stream", params(StreamQuery),
    responses((status = 200, description = "Server-sent events: `event: <name>`, `data: {\"source\", \"data\"}`", content_type = "text/event-stream"), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
async fn event_stream(
    warden: Data<Warden>,
    query: Query<StreamQuery>,
) -> ApiResult<impl Responder> {
    let pattern = query.pattern.clone().unwrap_or_else(|| "**".into());
    let receiver = warden
        .stream(&pattern, STREAM_CAPACITY)
        .map_err(ApiError::from)?;
    let events = ReceiverStream::new(receiver).map(|event| {
        let data = serde_json::json!({ "source": event.source, "data": event.data });
        Ok::<_, std::convert::Infallible>(Bytes::from(format!(
            "event: {}\ndata: {}\n\n",
            event.name, data
        )))
    });
    let keep_alive = futures::stream::unfold((), |()| async {
        tokio::time::sleep(STREAM_KEEP_ALIVE).await;
        Some((Ok(Bytes::from_static(b": keep-alive\n\n")), ()))
    });
    // The opening comment flushes the response headers at once, so clients see the stream open.
    let opening = futures::stream::once(async { Ok(Bytes::from_static(b": stream open\n\n")) });
    let body = opening.chain(futures::stream::select(events, keep_alive));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}

/// Minimal adapter from a tokio receiver to a `Stream`, to avoid a dependency for one type.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

    impl<T> ReceiverStream<T> {
        pub fn new(receiver: tokio::sync::mpsc::Receiver<T>) -> Self {
            ReceiverStream(receiver)
        }
    }

    impl<T> futures::Stream for ReceiverStream<T> {
        type Item = T;

        fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(context)
        }
    }
}

struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of every endpoint.
#[derive(OpenApi)]
#[openapi(
    info(title = "Warden admin API", description = "Load, supervise and call Warden plugins; publish and stream events."),
    paths(health, ready, metrics, openapi, list_plugins, load_plugin, scan_plugins, get_plugin, unload_plugin,
        reload_plugin, execute_plugin, list_migrations, plan_migrations, cluster, get_overrides, put_overrides, delete_overrides, publish_event, event_stream),
    modifiers(&BearerSecurity)
)]
pub struct ApiDoc;
