//! The actor system's error type: a runtime error, or a refusal of the manager itself.

use warden_runtime::Error as RuntimeError;

/// Why a request to the actor system failed. Nothing was changed when one is returned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The plugin, its manifest, its code or its limits refused.
    #[error(transparent)]
    Plugin(#[from] RuntimeError),

    /// No plugin of that name is loaded.
    #[error("plugin '{name}' is not loaded")]
    PluginNotFound { name: String },

    /// No such file in the plugins directory.
    #[error("no plugin file '{path}' in the plugins directory")]
    FileNotFound { path: String },

    /// A request was malformed (for example, a path outside the plugins directory).
    #[error("{reason}")]
    InvalidRequest { reason: String },

    /// A plugin of that name is loaded already.
    #[error("plugin '{name}' is already loaded; reload it instead")]
    AlreadyLoaded { name: String },

    /// Loaded plugins depend on the one to unload.
    #[error("plugin '{name}' cannot be unloaded: {} depend on it (unload with cascade to unload them first)", dependents.join(", "))]
    HasDependents {
        name: String,
        dependents: Vec<String>,
    },

    /// `initialize()` threw or timed out; the plugin was not loaded.
    #[error("plugin '{plugin}' failed to initialize: {source}")]
    InitializeFailed {
        plugin: String,
        #[source]
        source: RuntimeError,
    },

    /// A cluster-wide change could not be recorded: the database does not answer. Nothing
    /// changed.
    #[error("the cluster's state cannot be reached, so the change was not made: {reason}")]
    ClusterUnavailable { reason: String },

    /// The actor system is shutting down or an actor is gone.
    #[error("the actor system is unavailable: {reason}")]
    SystemUnavailable { reason: String },
}

/// The actors crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<actix::MailboxError> for Error {
    fn from(error: actix::MailboxError) -> Self {
        Error::SystemUnavailable {
            reason: error.to_string(),
        }
    }
}
