//! Errors as the admin API answers them: every status and code is decided here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use warden_actors::Error as ActorError;
use warden_runtime::Error as RuntimeError;

/// An error answered as `{"error": {"code", "message", "name"?}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The JavaScript `error.name` when a plugin's own error caused it.
    pub name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            name: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                name: self.name.clone(),
            },
        }
    }

    fn from_runtime(error: &RuntimeError) -> Self {
        use RuntimeError as E;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let (status, code) = match error {
            E::InvalidPluginFormat { .. } => (unprocessable, "invalid_plugin"),
            E::InvalidName { .. } => (unprocessable, "invalid_name"),
            E::DependencyNotFound { .. } => (unprocessable, "dependency_not_found"),
            E::DependencyVersionMismatch { .. } => (unprocessable, "dependency_version_mismatch"),
            E::SelfDependency { .. } => (unprocessable, "self_dependency"),
            E::CircularDependency { .. } => (unprocessable, "circular_dependency"),
            E::NotExecutable { .. } => (unprocessable, "not_executable"),
            E::MigrationChanged { .. } => (unprocessable, "migration_changed"),
            E::MigrationFailed { .. } => (unprocessable, "migration_failed"),
            E::InvalidEvent { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            E::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            E::MessageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            E::Unavailable { .. }
            | E::PluginUnloaded { .. }
            | E::Crashed { .. }
            | E::HeapExhausted { .. } => (StatusCode::SERVICE_UNAVAILABLE, "plugin_unavailable"),
            E::Execution { .. }
            | E::UndeclaredDependency { .. }
            | E::MethodNotFound { .. }
            | E::InvalidValue { .. }
            | E::TableAccessDenied { .. }
            | E::AccessLevelDenied { .. }
            | E::ResultTooLarge { .. }
            | E::SqlNotAllowed { .. }
            | E::Database { .. }
            | E::TopicAccessDenied { .. }
            | E::BucketAccessDenied { .. }
            | E::ConsumerLimit { .. }
            | E::KsqlNotConfigured
            | E::Backend { .. }
            | E::Capability { .. }
            | E::TimerLimit { .. }
            | E::EventBacklogFull { .. }
            | E::MethodNotAllowed { .. }
            | E::TransactionClosed { .. } => (unprocessable, "execution_failed"),
        };
        let name = match code {
            "execution_failed" => Some(error.js_name().to_string()),
            _ => None,
        };
        ApiError {
            status,
            code,
            message: error.to_string(),
            name,
        }
    }
}

impl From<ActorError> for ApiError {
    fn from(error: ActorError) -> Self {
        let message = error.to_string();
        match &error {
            ActorError::Plugin(runtime) => ApiError::from_runtime(runtime),
            ActorError::PluginNotFound { .. } | ActorError::FileNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", message)
            }
            ActorError::InvalidRequest { .. } => ApiError::invalid_request(message),
            ActorError::AlreadyLoaded { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_loaded", message)
            }
            ActorError::HasDependents { .. } => {
                ApiError::new(StatusCode::CONFLICT, "has_dependents", message)
            }
            ActorError::InitializeFailed { source, .. } => {
                let mut api_error = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "initialize_failed",
                    message,
                );
                if let RuntimeError::Execution { name, .. } = source {
                    api_error.name = Some(name.clone());
                }
                api_error
            }
            ActorError::ClusterUnavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                message,
            ),
            ActorError::SystemUnavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin_unavailable",
                message,
            ),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(self.body())
    }
}
