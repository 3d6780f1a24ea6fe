//! JSON shapes of the admin API, and their conversions from the actor system's types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_actors::cluster::{ClusterView, PluginNodes};
use warden_actors::manager::{MigrationStatus, PluginInfo, ScanReport};
use warden_runtime::resources::{ResourceGrants, ResourceKind, ResourceOverrides};

use crate::error::{ApiError, ErrorDetail};

/// Operator overrides of a plugin's resources (field names of the system Warden grows out of).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tables: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_topics: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_buckets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub table_name_map: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_name_map: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bucket_name_map: BTreeMap<String, String>,
}

impl From<Overrides> for ResourceOverrides {
    fn from(overrides: Overrides) -> Self {
        ResourceOverrides {
            allowed_tables: overrides.allowed_tables,
            allowed_topics: overrides.allowed_topics,
            allowed_buckets: overrides.allowed_buckets,
            table_name_map: overrides.table_name_map,
            topic_name_map: overrides.topic_name_map,
            bucket_name_map: overrides.bucket_name_map,
        }
    }
}

impl From<ResourceOverrides> for Overrides {
    fn from(overrides: ResourceOverrides) -> Self {
        Overrides {
            allowed_tables: overrides.allowed_tables,
            allowed_topics: overrides.allowed_topics,
            allowed_buckets: overrides.allowed_buckets,
            table_name_map: overrides.table_name_map,
            topic_name_map: overrides.topic_name_map,
            bucket_name_map: overrides.bucket_name_map,
        }
    }
}

/// One resource: the name the plugin writes, the physical name it reaches, and its access level
/// (`owner`/`write`/`read` for tables, `all`/`produce`/`consume` for topics, `all`/`read` for
/// buckets).
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceDto {
    pub name: String,
    pub physical: String,
    pub access: &'static str,
}

/// A plugin's resources by kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourcesDto {
    pub tables: Vec<ResourceDto>,
    pub topics: Vec<ResourceDto>,
    pub buckets: Vec<ResourceDto>,
}

impl From<&ResourceGrants> for ResourcesDto {
    fn from(grants: &ResourceGrants) -> Self {
        let of = |kind| {
            grants
                .grants(kind)
                .iter()
                .map(|grant| ResourceDto {
                    name: grant.name.clone(),
                    physical: grant.physical.clone(),
                    access: grant.access.as_str(),
                })
                .collect()
        };
        ResourcesDto {
            tables: of(ResourceKind::Table),
            topics: of(ResourceKind::Topic),
            buckets: of(ResourceKind::Bucket),
        }
    }
}

/// A loaded plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginInfoDto {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// `js` or `native`.
    pub kind: String,
    /// The file relative to the plugins directory; null for native plugins.
    pub source: Option<String>,
    /// `starting`, `running`, `restarting`, `failed` or `stopping`.
    pub state: String,
    pub dependencies: Vec<String>,
    pub dependents: Vec<String>,
    pub restarts: u32,
    pub resources: ResourcesDto,
    pub overrides: Option<Overrides>,
    /// Functions dependents may call.
    pub exports: Vec<String>,
    /// The PostgreSQL role the plugin's statements run as; null when roles are off or no
    /// database is configured.
    #[serde(rename = "databaseRole")]
    pub database_role: Option<String>,
    /// Its HTTP routes on the public listener, in the plugin's order.
    pub routes: Vec<RouteDto>,
    /// Hex SHA-256 of the entry file as loaded; null for native plugins.
    pub sha256: Option<String>,
    /// In a cluster, its state on every up node, by node id (this node's is its live state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<BTreeMap<String, NodeStateDto>>,
}

/// A plugin's state on one node of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeStateDto {
    pub state: String,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PluginInfoDto {
    /// Adds `nodes` from the cluster's view, with this node's entry as it is now.
    pub fn with_nodes(mut self, view: &PluginNodes) -> Self {
        let mut nodes: BTreeMap<String, NodeStateDto> = view
            .plugins
            .get(&self.name)
            .into_iter()
            .flatten()
            .map(|(node, state)| {
                let dto = NodeStateDto {
                    state: state.state.clone(),
                    restarts: state.restarts,
                    error: state.error.clone(),
                };
                (node.clone(), dto)
            })
            .collect();
        let error = nodes.get(&view.node).and_then(|own| own.error.clone());
        nodes.insert(
            view.node.clone(),
            NodeStateDto {
                state: self.state.clone(),
                restarts: self.restarts,
                error,
            },
        );
        self.nodes = Some(nodes);
        self
    }
}

/// One route of a plugin, as declared (`{"method": "GET", "path": "/orders/:id"}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteDto {
    pub method: String,
    pub path: String,
}

impl From<PluginInfo> for PluginInfoDto {
    fn from(info: PluginInfo) -> Self {
        let manifest = &info.description.manifest;
        PluginInfoDto {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            description: manifest.description.clone(),
            kind: info.kind.to_string(),
            source: info.source.clone(),
            state: info.state.to_string(),
            dependencies: manifest
                .dependencies
                .iter()
                .map(ToString::to_string)
                .collect(),
            dependents: info.dependents.clone(),
            restarts: info.restarts,
            resources: ResourcesDto::from(&info.grants),
            overrides: info.overrides.clone().map(Overrides::from),
            exports: info.description.exports.clone(),
            database_role: info.database_role.clone(),
            sha256: info.sha256.clone(),
            routes: info
                .description
                .routes
                .specs()
                .iter()
                .map(|route| RouteDto {
                    method: route.method.as_str().to_owned(),
                    path: route.path.clone(),
                })
                .collect(),
            nodes: None,
        }
    }
}

/// `GET /plugins`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginInfoDto>,
}

/// `POST /plugins`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// The file, relative to the plugins directory.
    pub path: String,
    pub overrides: Option<Overrides>,
}

/// `POST /plugins/{name}/reload` (the body may also be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    pub overrides: Option<Overrides>,
}

/// One file a scan could not load.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanFailure {
    pub path: String,
    pub error: ErrorDetail,
}

/// `POST /plugins/scan`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanResponse {
    pub loaded: Vec<String>,
    pub failed: Vec<ScanFailure>,
}

impl From<ScanReport> for ScanResponse {
    fn from(report: ScanReport) -> Self {
        ScanResponse {
            loaded: report.loaded,
            failed: report
                .failed
                .into_iter()
                .map(|(path, error)| ScanFailure {
                    path,
                    error: ApiError::from(error).body().error,
                })
                .collect(),
        }
    }
}

/// `PUT /plugins/{name}/overrides`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverridesResponse {
    pub overrides: Overrides,
    pub plugin: Option<PluginInfoDto>,
}

/// `POST /plugins/{name}/execute`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResponse {
    pub result: serde_json::Value,
}

/// `POST /events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub event: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    pub status: &'static str,
}

/// `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// `ok`, `down` or `disabled` per backend.
    pub checks: BTreeMap<&'static str, &'static str>,
}

/// `GET /plugins/{name}/migrations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationsResponse {
    pub migrations: Vec<MigrationDto>,
}

/// One migration of a loaded plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationDto {
    pub id: String,
    /// Lowercase hex SHA-256 of its `sql` (as recorded, for an `unknown` one).
    pub checksum: String,
    /// `applied`, `pending` or `unknown`.
    pub state: &'static str,
    /// When it was applied (RFC 3339); null while pending.
    #[serde(rename = "appliedAt")]
    pub applied_at: Option<String>,
}

impl From<MigrationStatus> for MigrationDto {
    fn from(status: MigrationStatus) -> Self {
        MigrationDto {
            id: status.id,
            checksum: status.checksum,
            state: status.state.as_str(),
            applied_at: status.applied_at,
        }
    }
}

/// `POST /plugins/migrations/plan`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The file, relative to the plugins directory.
    pub path: String,
}

/// What loading the file would do to its plugin's schema; nothing was changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanResponse {
    pub plugin: String,
    /// Migrations a load would apply, in order.
    pub pending: Vec<String>,
    /// Recorded migrations the file no longer lists.
    pub unknown: Vec<String>,
    /// Whether the pending migrations would apply.
    pub ok: bool,
    /// Why not (`migration_changed` or `migration_failed`), when `ok` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PlanError>,
}

/// The refusal a load would meet.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanError {
    pub code: String,
    pub message: String,
}

/// `GET /cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterResponse {
    /// The cluster's name, null for a single node.
    pub cluster: Option<String>,
    /// The answering node's id.
    pub node: String,
    /// Sorted by id; a down node stays listed for an hour after it was last seen.
    pub nodes: Vec<NodeDto>,
}

/// One node of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeDto {
    pub id: String,
    /// `up` or `down`.
    pub state: &'static str,
    #[serde(rename = "adminAddress")]
    pub admin_address: String,
    #[serde(rename = "httpAddress")]
    pub http_address: Option<String>,
    /// RFC 3339.
    #[serde(rename = "lastSeen")]
    pub last_seen: String,
}

impl From<ClusterView> for ClusterResponse {
    fn from(view: ClusterView) -> Self {
        ClusterResponse {
            cluster: view.cluster,
            node: view.node,
            nodes: view
                .nodes
                .into_iter()
                .map(|node| NodeDto {
                    id: node.id,
                    state: if node.up { "up" } else { "down" },
                    admin_address: node.admin_address,
                    http_address: node.http_address,
                    last_seen: node.last_seen,
                })
                .collect(),
        }
    }
}
