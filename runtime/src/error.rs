//! The one error type of the runtime crate, with the JavaScript error name each variant carries.

/// Everything that can go wrong while loading, validating or calling a plugin.
///
/// Messages are lowercase without a trailing period; they are shown to operators and plugin
/// authors as they are, so each one names the plugin, resource or rule it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The module has no plugin object, or its `metadata` is missing or malformed.
    #[error("invalid plugin format: {reason}")]
    InvalidPluginFormat { reason: String },

    /// A naming rule failed, or a physical name would pass its store's limit.
    #[error("invalid name: {reason}")]
    InvalidName { reason: String },

    /// A declared dependency is not loaded.
    #[error("plugin '{plugin}' depends on '{dependency}', which is not loaded")]
    DependencyNotFound { plugin: String, dependency: String },

    /// A declared dependency is loaded at another version than the exact one required.
    #[error("plugin '{plugin}' requires '{dependency}@{required}', but version {found} is loaded")]
    DependencyVersionMismatch {
        plugin: String,
        dependency: String,
        required: String,
        found: String,
    },

    /// A plugin lists itself as a dependency.
    #[error("plugin '{plugin}' depends on itself")]
    SelfDependency { plugin: String },

    /// Dependencies form a cycle; `path` starts and ends with the same plugin.
    #[error("circular dependency: {}", path.join(" -> "))]
    CircularDependency { path: Vec<String> },

    /// A plugin asked for a dependency it did not declare.
    #[error("plugin '{plugin}' did not declare a dependency on '{dependency}'")]
    UndeclaredDependency { plugin: String, dependency: String },

    /// `execute` was called on a plugin that exports no `execute` function.
    #[error("plugin '{plugin}' has no execute function")]
    NotExecutable { plugin: String },

    /// A dependency method was called that the plugin does not export.
    #[error("plugin '{plugin}' exports no function '{method}'")]
    MethodNotFound { plugin: String, method: String },

    /// The plugin's own code threw; `name` is the JavaScript `error.name` (or `Error`).
    #[error("{message}")]
    Execution { name: String, message: String },

    /// A call ran past the plugin's time limit.
    #[error("plugin '{plugin}' ran past its time limit of {limit_ms} ms")]
    Timeout { plugin: String, limit_ms: u64 },

    /// The plugin's engine ran out of its heap limit.
    #[error("plugin '{plugin}' exhausted its heap limit of {limit_mb} MiB")]
    HeapExhausted { plugin: String, limit_mb: u64 },

    /// The plugin's engine broke (a native panic, an engine fault) and must be restarted.
    #[error("plugin '{plugin}' crashed: {reason}")]
    Crashed { plugin: String, reason: String },

    /// The plugin is restarting or has failed, so it cannot take calls now.
    #[error("plugin '{plugin}' is unavailable ({state})")]
    Unavailable { plugin: String, state: String },

    /// A call went through a context whose plugin instance has been unloaded or restarted.
    #[error("plugin '{plugin}' has been unloaded")]
    PluginUnloaded { plugin: String },

    /// An event name or pattern breaks the event naming rules.
    #[error("invalid event: {reason}")]
    InvalidEvent { reason: String },

    /// A value could not cross between the host and the plugin (for example, not JSON-serializable).
    #[error("invalid value: {reason}")]
    InvalidValue { reason: String },

    /// A statement touches a table the plugin was not granted.
    #[error("table '{table}' is not allowed; allowed tables: [{}]", allowed.join(", "))]
    TableAccessDenied { table: String, allowed: Vec<String> },

    /// An operation on a granted table, topic or bucket needs a wider level than the plugin holds
    /// on it (`kind` is `table`, `topic` or `bucket`; levels as in `PLUGIN_API.md`).
    #[error("{kind} '{name}' is granted '{granted}' access, and this needs '{needed}'")]
    AccessLevelDenied {
        kind: &'static str,
        name: String,
        granted: &'static str,
        needed: &'static str,
    },

    /// A statement could reach outside the plugin's tables, or is of a refused kind.
    #[error("sql not allowed: {reason}")]
    SqlNotAllowed { reason: String },

    /// A query's result passed the rows or bytes one query may return (`limit` names it); the
    /// result is refused whole, never truncated.
    #[error("query result is larger than the limit of {limit}; select fewer rows or columns")]
    ResultTooLarge { limit: String },

    /// PostgreSQL refused or failed the statement; `sqlstate` is its five-character code.
    #[error("database error {sqlstate}: {message}")]
    Database { sqlstate: String, message: String },

    /// A Kafka call named a topic the plugin was not granted.
    #[error("topic '{topic}' is not allowed; allowed topics: [{}]", allowed.join(", "))]
    TopicAccessDenied { topic: String, allowed: Vec<String> },

    /// An S3 call named a bucket the plugin was not granted.
    #[error("bucket '{bucket}' is not allowed; allowed buckets: [{}]", allowed.join(", "))]
    BucketAccessDenied {
        bucket: String,
        allowed: Vec<String>,
    },

    /// `createConsumer` would give the plugin more Kafka consumers than it may have at once.
    #[error("plugin '{plugin}' already has {limit} kafka consumers, the most it may have at once (WARDEN_PLUGIN_MAX_CONSUMERS); disconnect one first")]
    ConsumerLimit { plugin: String, limit: usize },

    /// `executeKsqlStatement` was called but no ksqlDB endpoint is configured.
    #[error("no ksqlDB endpoint is configured (WARDEN_KSQLDB_URL)")]
    KsqlNotConfigured,

    /// A backing service (Kafka, S3, ksqlDB) failed the request.
    #[error("{service} error: {message}")]
    Backend { service: String, message: String },

    /// A capability the plugin used is not available to it (the backing service is not configured).
    #[error("{message}")]
    Capability { name: String, message: String },

    /// Event data or call arguments over the message limit; refused before anyone receives them.
    #[error("{what} of {bytes} bytes from '{plugin}' is over the limit of {limit} bytes (WARDEN_PLUGIN_MAX_MESSAGE_BYTES)")]
    MessageTooLarge {
        plugin: String,
        what: String,
        bytes: usize,
        limit: usize,
    },

    /// A plugin emitted while its events that have not reached every listener yet hold its whole
    /// budget (its heap limit); nothing was emitted.
    #[error("plugin '{plugin}' has {budget_bytes} bytes of events its listeners have not received yet, its limit (WARDEN_PLUGIN_MEMORY_MB); the event was not emitted")]
    EventBacklogFull { plugin: String, budget_bytes: usize },

    /// A plugin asked for one more timer while its limit of pending timers was reached.
    #[error("plugin '{plugin}' already has {limit} timers pending, its limit (WARDEN_PLUGIN_MAX_TIMERS)")]
    TimerLimit { plugin: String, limit: usize },

    /// A dependency handle asked for a function dependents may not call (`initialize`, `cleanup`).
    #[error("plugin '{plugin}' does not let dependents call '{method}': a dependency handle reaches only its exported functions and execute")]
    MethodNotAllowed { plugin: String, method: String },

    /// A migration recorded as applied has different SQL now; the load is refused.
    #[error("migration '{id}' of plugin '{plugin}' was applied with different SQL (recorded checksum {recorded}, now {listed}); never edit an applied migration, add a new one instead")]
    MigrationChanged {
        plugin: String,
        id: String,
        recorded: Box<str>,
        listed: Box<str>,
    },

    /// A pending migration was refused by the SQL guard or failed in PostgreSQL; nothing of its
    /// batch stays applied. `sqlstate` is PostgreSQL's code (42501, … for the guard's refusals
    /// the code of the error it maps to, `None` for refusals without one).
    #[error("migration '{id}' of plugin '{plugin}' failed: {message}{}", sqlstate.as_ref().map(|code| format!(" (SQLSTATE {code})")).unwrap_or_default())]
    MigrationFailed {
        plugin: String,
        id: String,
        message: String,
        sqlstate: Option<Box<str>>,
    },

    /// A transaction handle was used after its transaction ended (committed, rolled back, or
    /// rolled back by Warden at the time limit or at unload).
    #[error("the transaction has ended ({reason}); use tx only inside its callback")]
    TransactionClosed { reason: String },
}

impl Error {
    /// The JavaScript `error.name` a plugin sees when this error reaches its code.
    pub fn js_name(&self) -> &str {
        match self {
            Error::InvalidPluginFormat { .. } => "InvalidPluginFormatError",
            Error::InvalidName { .. } => "InvalidNameError",
            Error::DependencyNotFound { .. } => "DependencyNotFoundError",
            Error::DependencyVersionMismatch { .. } => "DependencyVersionMismatchError",
            Error::SelfDependency { .. } => "SelfDependencyError",
            Error::CircularDependency { .. } => "CircularDependencyError",
            Error::UndeclaredDependency { .. } => "UndeclaredDependencyError",
            Error::NotExecutable { .. } => "NotExecutableError",
            Error::MethodNotFound { .. } => "MethodNotFoundError",
            Error::Execution { name, .. } => name,
            Error::Timeout { .. } => "TimeoutError",
            Error::HeapExhausted { .. } => "HeapExhaustedError",
            Error::Crashed { .. } => "PluginCrashedError",
            Error::Unavailable { .. } => "PluginUnavailableError",
            Error::PluginUnloaded { .. } => "PluginUnloadedError",
            Error::InvalidEvent { .. } => "InvalidEventError",
            Error::InvalidValue { .. } => "TypeError",
            Error::TableAccessDenied { .. } => "TableAccessDeniedError",
            Error::AccessLevelDenied { kind, .. } => match *kind {
                "topic" => "TopicAccessDeniedError",
                "bucket" => "BucketAccessDeniedError",
                _ => "TableAccessDeniedError",
            },
            Error::SqlNotAllowed { .. } => "SqlNotAllowedError",
            Error::ResultTooLarge { .. } => "ResultTooLargeError",
            Error::Database { .. } => "DatabaseError",
            Error::TopicAccessDenied { .. } => "TopicAccessDeniedError",
            Error::BucketAccessDenied { .. } => "BucketAccessDeniedError",
            Error::ConsumerLimit { .. } => "ConsumerLimitError",
            Error::KsqlNotConfigured => "KsqlNotConfiguredError",
            Error::Backend { service, .. } => match service.as_str() {
                "kafka" => "KafkaError",
                "s3" => "S3Error",
                "ksqldb" => "KsqlError",
                _ => "BackendError",
            },
            Error::Capability { name, .. } => name,
            Error::MessageTooLarge { .. } => "MessageTooLargeError",
            Error::TimerLimit { .. } => "TimerLimitError",
            Error::EventBacklogFull { .. } => "EventBacklogFullError",
            Error::MethodNotAllowed { .. } => "MethodNotAllowedError",
            Error::MigrationChanged { .. } => "MigrationChangedError",
            Error::MigrationFailed { .. } => "MigrationFailedError",
            Error::TransactionClosed { .. } => "TransactionClosedError",
        }
    }

    /// Shorthand for the naming-rule failure every validator returns.
    pub fn invalid_name(reason: impl Into<String>) -> Self {
        Error::InvalidName {
            reason: reason.into(),
        }
    }

    /// Shorthand for a malformed module or manifest.
    pub fn invalid_format(reason: impl Into<String>) -> Self {
        Error::InvalidPluginFormat {
            reason: reason.into(),
        }
    }
}

/// The runtime crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
