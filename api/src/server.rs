//! The process: settings in, actor system and admin server up, one shutdown path out.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::web::{self, Data};
use actix_web::{App, HttpResponse, HttpServer, ResponseError as _};
use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusBuilder;
use warden_actors::cluster::{
    ClusterEventTopic, DesiredStateStore, LeaveCluster, Membership, MembershipConfig,
    NodeAddresses, PluginStateReporter, PluginStateTable,
};
use warden_actors::gateways::{
    Backends, DatabaseBackend, GarageAdminConfig, GarageKeys, KafkaBackend, StorageBackend,
    StorageConfig,
};
use warden_actors::manager::ManagerConfig;
use warden_actors::plugin_actor::SupervisionPolicy;
use warden_actors::state_store::StateStore;
use warden_actors::system::Warden;

use crate::config::Settings;
use crate::error::ApiError;
use crate::public::{self, BodyBudget, PublicSettings};
use crate::routes;

/// The admin token every request but `GET /health` must carry.
#[derive(Clone)]
struct AdminToken(String);

/// Room an admin request body has beyond the message it carries (`{"event": …, "data": …}`).
const ADMIN_BODY_ENVELOPE_BYTES: usize = 64 * 1024;
/// actix-web's own body limit, kept as the floor for a small message limit.
const DEFAULT_ADMIN_BODY_BYTES: usize = 256 * 1024;

/// Runs Warden until `shutdown` resolves, then unloads every plugin and returns.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let plugins_dir = settings.plugins_dir.clone();
    anyhow::ensure!(
        plugins_dir.is_dir(),
        "the plugins directory '{}' does not exist",
        plugins_dir.display()
    );
    let plugin_threads = settings
        .plugin_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |cores| cores.get()));
    let node_id = settings.node_id()?;
    let backends = connect_backends(&settings, &node_id)?;
    let membership_database = backends.database.clone();
    tracing::info!(node = %node_id, "node id");
    let store = match &backends.database {
        Some(database) => Some(StateStore::open(database.clone(), &node_id).await.map_err(
            |error| anyhow::anyhow!("cannot open Warden's state in PostgreSQL: {error}"),
        )?),
        None => None,
    };
    let (cluster_store, plugin_states) = match (&settings.cluster, &backends.database) {
        (Some(cluster), Some(database)) => {
            let opened = async {
                let desired = DesiredStateStore::open(database.clone(), cluster).await?;
                let states = PluginStateTable::open(database.clone(), cluster).await?;
                states.clear_node(&node_id).await?;
                Ok::<_, warden_actors::state_store::StoreError>((desired, states))
            };
            let (desired, states) = opened
                .await
                .map_err(|error| anyhow::anyhow!("cannot open the cluster's state: {error}"))?;
            (Some(desired), Some(states))
        }
        _ => (None, None),
    };
    let cluster_events = match (&settings.cluster, &backends.kafka) {
        (Some(cluster), Some(kafka)) => Some(
            ClusterEventTopic::open(kafka, cluster, &node_id, settings.event_queue_capacity)
                .await
                .map_err(|error| anyhow::anyhow!("cannot join the cluster's events: {error}"))?,
        ),
        _ => None,
    };
    let node_states = plugin_states
        .clone()
        .map(|table| PluginStateReporter::start(table, node_id.clone()));
    let mut warden = Warden::start(ManagerConfig {
        plugins_dir: plugins_dir.clone(),
        limits: settings.plugin_limits(),
        policy: SupervisionPolicy {
            max_restarts: settings.plugin_max_restarts,
            window: Duration::from_secs(settings.plugin_restart_window_s),
            ..SupervisionPolicy::default()
        },
        plugin_threads,
        event_queue_capacity: settings.event_queue_capacity,
        backends,
        store: store.clone(),
        cluster: cluster_store.clone(),
        node_states,
        cluster_events,
    });
    if let Some(store) = &store {
        restore_state(&mut warden, store, cluster_store).await?;
    }
    if settings.load_all {
        let report = warden.scan().await?;
        for (path, error) in &report.failed {
            tracing::error!(%path, %error, "plugin not loaded");
        }
        tracing::info!(
            loaded = report.loaded.len(),
            failed = report.failed.len(),
            "plugins directory loaded"
        );
    }
    if settings.watch {
        warden.watch(plugins_dir)?;
        tracing::info!("watching the plugins directory for changes");
    }

    // Both listeners are bound before the node's first heartbeat, which carries their addresses.
    let admin_listener = std::net::TcpListener::bind(settings.bind_address()?)
        .with_context(|| format!("cannot listen on {}", settings.bind))?;
    let public_listener = match settings.http_bind_address()? {
        Some(address) => Some(
            std::net::TcpListener::bind(address)
                .with_context(|| format!("cannot listen on {address} (WARDEN_HTTP_BIND)"))?,
        ),
        None => None,
    };
    let membership = Membership::start(
        MembershipConfig {
            cluster: settings.cluster.clone(),
            node: node_id,
            addresses: NodeAddresses {
                admin_address: admin_listener.local_addr()?.to_string(),
                http_address: match &public_listener {
                    Some(listener) => Some(listener.local_addr()?.to_string()),
                    None => None,
                },
            },
            node_timeout: Duration::from_secs(settings.node_timeout_s),
        },
        membership_database,
        plugin_states,
    )
    .await
    .map_err(|error| anyhow::anyhow!("cannot join the cluster: {error}"))?;

    let token = AdminToken(settings.admin_token.clone().unwrap_or_default());
    let app_warden = warden.clone();
    let app_membership = membership.clone();
    // Bodies may carry an execute input or event data of up to the message limit, plus the
    // request's own envelope; Warden then measures the message itself exactly.
    let max_body_bytes = settings
        .plugin_max_message_bytes
        .saturating_add(ADMIN_BODY_ENVELOPE_BYTES)
        .max(DEFAULT_ADMIN_BODY_BYTES);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(Data::new(app_warden.clone()))
            .app_data(web::PayloadConfig::new(max_body_bytes))
            .app_data(Data::new(prometheus.clone()))
            .app_data(Data::new(token.clone()))
            .app_data(Data::new(app_membership.clone()))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|error, _| ApiError::invalid_request(error.to_string()).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|error, _| ApiError::invalid_request(error.to_string()).into()),
            )
            .wrap(from_fn(authorize))
            .wrap(
                ErrorHandlers::new()
                    .handler(StatusCode::PAYLOAD_TOO_LARGE, payload_too_large_as_json),
            )
            .configure(routes::configure)
            .default_service(web::to(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
                    .error_response()
            }))
    })
    .disable_signals()
    .shutdown_timeout(5)
    .listen(admin_listener)
    .with_context(|| format!("cannot listen on {}", settings.bind))?;
    for address in server.addrs() {
        tracing::info!("listening on {address}");
    }
    let server = server.run();
    let handle = server.handle();
    let serving = actix_web::rt::spawn(server);
    let public = match public_listener {
        Some(listener) => Some(start_public_listener(&settings, &warden, listener)?),
        None => None,
    };

    shutdown.await;
    tracing::info!("shutting down: unloading plugins in reverse dependency order");
    // Both listeners stop taking requests and finish the ones in flight; then plugins clean up.
    let public_stopped = async {
        if let Some((handle, _)) = &public {
            handle.stop(true).await;
        }
    };
    futures::join!(handle.stop(true), public_stopped);
    // Nobody can reach the node any more: the others see it down at once, not after the
    // timeout, while its plugins clean up.
    let _ = membership.send(LeaveCluster).await;
    warden.shutdown().await;
    let _ = serving.await;
    if let Some((_, serving)) = public {
        let _ = serving.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Brings a starting node to its durable state: a single node restores what it ran; a cluster
/// node applies the cluster's desired state (every recorded plugin running or failed here),
/// then follows it. Prefix claims belong to the whole database either way.
async fn restore_state(
    warden: &mut Warden,
    store: &StateStore,
    cluster_store: Option<DesiredStateStore>,
) -> anyhow::Result<()> {
    let mut state = store
        .load()
        .await
        .map_err(|error| anyhow::anyhow!("cannot read Warden's state from PostgreSQL: {error}"))?;
    let Some(cluster_store) = cluster_store else {
        let report = warden.restore(state).await?;
        for (path, error) in &report.failed {
            tracing::error!(%path, %error, "previously loaded plugin not restored");
        }
        tracing::info!(
            restored = report.loaded.len(),
            "plugins restored from the state store"
        );
        return Ok(());
    };
    state.loaded_sources.clear();
    state.overrides.clear();
    warden.restore(state).await?;
    let desired = cluster_store
        .read()
        .await
        .map_err(|error| anyhow::anyhow!("cannot read the cluster's state: {error}"))?;
    let generation = desired.generation;
    let plugins = desired.plugins.len();
    let failed = warden.apply_desired_state(desired).await?;
    for (plugin, error) in &failed {
        tracing::error!(%plugin, %error, "the cluster's plugin does not run on this node");
    }
    tracing::info!(
        generation,
        plugins,
        failed = failed.len(),
        "the cluster's state applied"
    );
    warden
        .follow_cluster(cluster_store, failed.is_empty().then_some(generation))
        .await;
    Ok(())
}

/// Starts the public listener (plugins' routes only; no admin endpoint, no token).
fn start_public_listener(
    settings: &Settings,
    warden: &Warden,
    listener: std::net::TcpListener,
) -> anyhow::Result<(
    actix_web::dev::ServerHandle,
    actix_web::rt::task::JoinHandle<std::io::Result<()>>,
)> {
    let public_warden = warden.clone();
    let public_settings = PublicSettings {
        max_body_bytes: settings.http_max_body_bytes,
        // Half the plugin's heap for request bodies in flight, the rest for its own work.
        body_budget_bytes: usize::try_from(
            settings.plugin_memory_mb.saturating_mul(1024 * 1024) / 2,
        )
        .unwrap_or(usize::MAX),
    };
    let budget = Data::new(Arc::new(BodyBudget::default()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(Data::new(public_warden.clone()))
            .app_data(Data::new(public_settings))
            .app_data(budget.clone())
            .configure(public::configure)
    })
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)
    .context("cannot listen on WARDEN_HTTP_BIND")?;
    for address in server.addrs() {
        tracing::info!("public listener on {address}");
    }
    let server = server.run();
    let handle = server.handle();
    Ok((handle, actix_web::rt::spawn(server)))
}

/// The shared clients of every backing service the settings configure.
fn connect_backends(settings: &Settings, node_id: &str) -> anyhow::Result<Backends> {
    let database = match &settings.database_url {
        Some(url) => Some(
            DatabaseBackend::connect_with(url, settings.database_settings())
                .map_err(|error| anyhow::anyhow!("invalid WARDEN_DATABASE_URL: {error}"))?,
        ),
        None => None,
    };
    let kafka = match &settings.kafka_brokers {
        Some(brokers) => Some(
            KafkaBackend::connect(brokers, settings.ksqldb_url.clone())
                .map_err(|error| anyhow::anyhow!("invalid WARDEN_KAFKA_BROKERS: {error}"))?
                .with_max_consumers_per_plugin(settings.plugin_max_consumers)
                .with_topic_partitions(settings.kafka_topic_partitions),
        ),
        None => None,
    };
    let storage = match &settings.s3_endpoint {
        Some(endpoint) => {
            let (Some(access_key), Some(secret_key)) =
                (&settings.s3_access_key, &settings.s3_secret_key)
            else {
                anyhow::bail!("WARDEN_S3_ENDPOINT is set, but WARDEN_S3_ACCESS_KEY or WARDEN_S3_SECRET_KEY is not");
            };
            let backend = StorageBackend::connect(StorageConfig {
                endpoint: endpoint.clone(),
                region: settings.s3_region.clone(),
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
            })
            .map_err(|error| anyhow::anyhow!("invalid S3 settings: {error}"))?;
            Some(with_plugin_keys(backend, settings, node_id)?)
        }
        None => None,
    };
    Ok(Backends {
        database,
        kafka,
        storage,
    })
}

/// actix-web answers a body over the limit in plain text; the admin API answers every error
/// with its JSON body. Warden's own `payload_too_large` answers are JSON already.
fn payload_too_large_as_json<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let (request, _) = response.into_parts();
    let answer = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is over the admin API's limit (WARDEN_PLUGIN_MAX_MESSAGE_BYTES plus 64 KiB)",
    )
    .error_response();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, answer).map_into_right_body(),
    ))
}

/// The S3 backend giving each plugin its own key when Garage's admin API is configured.
fn with_plugin_keys(
    backend: StorageBackend,
    settings: &Settings,
    node_id: &str,
) -> anyhow::Result<StorageBackend> {
    match (&settings.s3_admin_url, &settings.s3_admin_token) {
        (Some(url), Some(token)) => {
            let keys = GarageKeys::new(GarageAdminConfig {
                url: url.clone(),
                token: token.clone(),
            })
            .map_err(|error| anyhow::anyhow!("invalid S3 admin settings: {error}"))?;
            let keys = match &settings.cluster {
                Some(_) => keys.for_node(node_id),
                None => keys,
            };
            Ok(backend.with_plugin_keys(keys))
        }
        (None, None) => {
            tracing::warn!(
                "every plugin's S3 requests and presigned URLs are signed with Warden's one S3 key, \
                 which reaches every bucket; set WARDEN_S3_ADMIN_URL and WARDEN_S3_ADMIN_TOKEN \
                 (Garage's admin API) to give each plugin its own key"
            );
            Ok(backend)
        }
        _ => anyhow::bail!("set both WARDEN_S3_ADMIN_URL and WARDEN_S3_ADMIN_TOKEN, or neither"),
    }
}

/// Checks `Authorization: Bearer <token>` on every endpoint except `GET /health`.
async fn authorize(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if request.path() == "/health" {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let expected = request
        .app_data::<Data<AdminToken>>()
        .map(|token| token.0.clone())
        .unwrap_or_default();
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if expected.is_empty() || !constant_time_equal(presented.as_bytes(), expected.as_bytes()) {
        let response: HttpResponse = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        )
        .error_response();
        return Ok(request.into_response(response));
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_equal;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_equal(b"secret", b"secret"));
        assert!(!constant_time_equal(b"secret", b"secreT"));
        assert!(!constant_time_equal(b"secret", b"secret2"));
        assert!(!constant_time_equal(b"", b"x"));
    }
}
