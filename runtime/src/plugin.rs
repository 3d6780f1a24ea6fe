//! The `Plugin` trait every plugin instance implements, and the capabilities its context is made of.
//!
//! A plugin never holds a client, a pool or a credential. Its [`PluginContext`] holds capability
//! handles; the host (the actor system) implements each capability by sending messages to the
//! actor that owns the real resource. All futures here are `!Send`: a plugin instance lives on one
//! thread, inside its actor, and so do the futures it returns.

use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use crate::events::{DeliveryReceipt, EventPattern, ListenerReach};
use crate::manifest::PluginManifest;
use crate::migrations::Migration;
use crate::routes::PluginRoutes;
use crate::transactions::TransactionOptions;
use crate::Result;

/// A future returned by a plugin or a capability; it runs on the plugin's own thread.
pub type PluginFuture<T> = LocalBoxFuture<'static, Result<T>>;

/// One event as it travels from an emitter through the broker to listeners.
#[derive(Debug)]
pub struct Event {
    /// The event's name, `:`-separated segments (`user:created`).
    pub name: String,
    /// Who emitted it: a plugin name, `warden` or `admin`.
    pub source: String,
    /// The event's payload.
    pub data: Value,
    /// `data` serialized once, so that each of many JavaScript listeners parses it instead of the
    /// host re-serializing it per delivery.
    pub data_json: String,
    /// Which listeners hear it: `None` for an event of this node, heard by every listener; in a
    /// cluster, an event received from the cluster's topic is for one kind of listener.
    pub reach: Option<ListenerReach>,
    /// Marks the event handled when its last holder drops it (see [`DeliveryReceipt`]).
    pub receipt: Option<DeliveryReceipt>,
}

impl Event {
    /// Builds an event, serializing its payload once for every delivery that follows.
    pub fn new(name: impl Into<String>, source: impl Into<String>, data: Value) -> Arc<Self> {
        let data_json = data.to_string();
        Arc::new(Event {
            name: name.into(),
            source: source.into(),
            data,
            data_json,
            reach: None,
            receipt: None,
        })
    }
}

/// What a call into a plugin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    /// The plugin's `execute(input)` entry point; the arguments are `[input]`.
    Execute,
    /// An exported function, called by a dependent with any number of arguments.
    Method(String),
    /// The handler of route `index` (in the plugin's order); the arguments are `[request]`,
    /// the request object of the plugin API or its JSON text as a string, and the result is
    /// the response in the form the public listener reads (see `js/prelude.js`,
    /// `routeResponse`).
    Route(usize),
}

impl std::fmt::Display for CallTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallTarget::Execute => formatter.write_str("execute"),
            CallTarget::Method(method) => formatter.write_str(method),
            CallTarget::Route(index) => write!(formatter, "route #{index}"),
        }
    }
}

/// What a loaded plugin instance says about itself once its module has been evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    /// The validated manifest (`metadata`).
    pub manifest: PluginManifest,
    /// Functions dependents may call, sorted; excludes the lifecycle functions.
    pub exports: Vec<String>,
    /// Whether the plugin has an `execute` entry point.
    pub executable: bool,
    /// Whether `cleanup()` does anything; without it an unload need not wait on the plugin.
    pub has_cleanup: bool,
    /// Its HTTP routes, matched by the public listener; swapped with the plugin on reload.
    pub routes: Arc<PluginRoutes>,
    /// Its schema migrations in list order (empty without `migrations`).
    pub migrations: Arc<[Migration]>,
}

/// The functions a plugin object can have that are not exports callable by dependents.
pub const LIFECYCLE_FUNCTIONS: [&str; 3] = ["initialize", "cleanup", "execute"];

/// The lifecycle functions only Warden itself calls: a dependency handle asking for one is
/// refused (`MethodNotAllowedError`), so a dependent can neither re-run another plugin's
/// `initialize` with a context of its choosing nor tear it down with `cleanup`.
pub const HOST_ONLY_FUNCTIONS: [&str; 2] = ["initialize", "cleanup"];

/// A loaded plugin instance: JavaScript modules and native Rust plugins alike.
///
/// Methods take `&self` and return futures that do not borrow it, so several calls can be in
/// flight at once, the way Node interleaves a plugin's awaits. A call must *start* (enter the
/// plugin's code) before its method returns, so that calls start in mailbox order.
pub trait Plugin {
    /// The plugin's manifest, exports and entry points.
    fn describe(&self) -> PluginDescription;

    /// Runs once per (re)start, before any other call; the context is the plugin's only door.
    fn initialize(&self, context: PluginContext) -> PluginFuture<()>;

    /// Calls `execute` or an exported function.
    fn call(&self, target: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value>;

    /// Delivers a batch of events that matched at least one of the plugin's subscriptions.
    /// Listener errors are reported through [`Supervision::listener_failed`], never returned.
    fn deliver_events(&self, events: &[Arc<Event>]);

    /// Delivers a batch like [`Plugin::deliver_events`], and resolves once every promise its
    /// listeners returned has settled (within the call time limit): events received from
    /// another node count as handled only then. Plugins whose listeners finish when they
    /// return keep this default.
    fn deliver_events_and_wait(&self, events: &[Arc<Event>]) -> PluginFuture<()> {
        self.deliver_events(events);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Hands one Kafka message to the `eachMessage` handler of consumer `consumer_id`;
    /// resolves when the handler has, so the gateway can commit the offset (at least once).
    fn consume(&self, consumer_id: &str, message: KafkaRecord) -> PluginFuture<()> {
        let _ = (consumer_id, message);
        Box::pin(async { Ok(()) })
    }

    /// Runs on unload and before reload; the context stays usable until it resolves.
    fn cleanup(&self) -> PluginFuture<()>;

    /// Drops everything the instance holds (timers, listeners, pending calls) and makes every
    /// later use of its context fail with `PluginUnloadedError`. Called exactly once, last.
    fn dispose(&self);
}

/// Builds a fresh plugin instance; called at load and again on every supervised restart.
pub trait PluginFactory: Send + Sync {
    /// Creates the instance on the calling (plugin actor's) thread.
    fn create(&self) -> Result<Box<dyn Plugin>>;
    /// `js` or `native`, as the admin API reports it.
    fn kind(&self) -> &'static str;
    /// Lowercase hex SHA-256 of the entry file as it was read (`PluginInfo.sha256`); `None`
    /// for plugins that have no file.
    fn source_sha256(&self) -> Option<String> {
        None
    }
}

/// The event bus capability: `context.eventBus`.
pub trait Events {
    /// Publishes an event from this plugin; returns at once.
    fn emit(&self, event: &str, data: Value) -> Result<()>;
    /// Starts delivering events matching `pattern` to this plugin instance's listeners of
    /// `reach`.
    fn subscribe(&self, pattern: &EventPattern, reach: ListenerReach) -> Result<()>;
    /// Stops delivering events matching `pattern` for `reach` (one subscribe is undone per
    /// call).
    fn unsubscribe(&self, pattern: &EventPattern, reach: ListenerReach) -> Result<()>;
}

/// What a plugin may learn about one of its declared dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyInfo {
    /// The dependency's current manifest.
    pub manifest: PluginManifest,
    /// Its callable exports.
    pub exports: Vec<String>,
}

/// The dependency capability: `context.getDependency(name)`.
pub trait Dependencies {
    /// The declared dependencies' names, in declaration order.
    fn declared(&self) -> Vec<String>;
    /// Metadata and exports of a declared dependency (`UndeclaredDependency` otherwise).
    fn describe(&self, dependency: &str) -> Result<DependencyInfo>;
    /// Calls into a declared dependency's actor; resolves to its result.
    fn call(
        &self,
        dependency: &str,
        target: CallTarget,
        arguments: Vec<Value>,
    ) -> PluginFuture<Value>;
}

/// The PostgreSQL capability: `context.database`. Statements name the plugin's own tables;
/// the gateway checks and rewrites them before PostgreSQL sees them.
pub trait Database {
    /// Runs a query; resolves to its rows as JSON objects keyed by column name.
    fn execute_query(&self, statement: SqlStatement) -> PluginFuture<Vec<Value>>;
    /// Runs a command; resolves to the number of rows affected.
    fn execute_command(&self, statement: SqlStatement) -> PluginFuture<u64>;
    /// Opens a transaction on one of the plugin's connections; resolves to its id.
    fn begin_transaction(&self, options: TransactionOptions) -> PluginFuture<u64>;
    /// Commits (`commit`) or rolls back transaction `transaction`.
    fn end_transaction(&self, transaction: u64, commit: bool) -> PluginFuture<()>;
    /// The tables the plugin may name (unprefixed).
    fn allowed_tables(&self) -> Vec<String>;
}

/// One SQL statement as a plugin sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlStatement {
    /// The statement, naming the plugin's own tables.
    pub sql: String,
    /// `$1, $2, …` as JSON.
    pub parameters: Vec<Value>,
    /// The transaction it runs in (`tx.executeQuery`), or `None` for any pooled connection.
    pub transaction: Option<u64>,
}

/// One message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOutgoing {
    /// Optional key.
    pub key: Option<String>,
    /// The value.
    pub value: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
}

/// One consumed message, as `eachMessage` receives it (topic unprefixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The topic as the plugin names it.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Key, when present and valid UTF-8.
    pub key: Option<String>,
    /// Value, when present and valid UTF-8.
    pub value: Option<String>,
    /// Headers with UTF-8 values.
    pub headers: Vec<(String, String)>,
    /// The offset.
    pub offset: i64,
    /// Milliseconds since the epoch, when the broker gave one.
    pub timestamp: Option<i64>,
}

/// The Kafka capability: `context.kafka`.
pub trait Kafka {
    /// Produces messages to one of the plugin's topics.
    fn send_messages(
        &self,
        topic: &str,
        messages: Vec<KafkaOutgoing>,
        producer_id: Option<String>,
    ) -> PluginFuture<()>;
    /// Creates a consumer in a (prefixed) group.
    fn create_consumer(&self, consumer_id: &str, group_id: &str) -> PluginFuture<()>;
    /// Subscribes a consumer to topics; messages arrive through [`Plugin::consume`].
    fn subscribe(&self, consumer_id: &str, topics: Vec<String>) -> PluginFuture<()>;
    /// Stops a consumer.
    fn disconnect_consumer(&self, consumer_id: &str) -> PluginFuture<()>;
    /// Checks, rewrites and forwards a ksqlDB statement.
    fn execute_ksql(&self, statement: &str) -> PluginFuture<Value>;
    /// The topics the plugin may name (unprefixed).
    fn allowed_topics(&self) -> Vec<String>;
}

/// The S3 capability: `context.s3`. The bucket is always the plugin's own name for it.
pub trait Storage {
    /// Stores an object.
    fn upload(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        bucket: &str,
    ) -> PluginFuture<()>;
    /// Reads an object.
    fn download(&self, key: &str, bucket: &str) -> PluginFuture<Vec<u8>>;
    /// Deletes an object.
    fn delete(&self, key: &str, bucket: &str) -> PluginFuture<()>;
    /// Whether an object exists.
    fn exists(&self, key: &str, bucket: &str) -> PluginFuture<bool>;
    /// Keys starting with `prefix`.
    fn list(&self, prefix: &str, bucket: &str) -> PluginFuture<Vec<String>>;
    /// A GET URL that works without credentials for `expires_in_seconds`.
    fn presigned_url(
        &self,
        key: &str,
        expires_in_seconds: u32,
        bucket: &str,
    ) -> PluginFuture<String>;
    /// The buckets the plugin may name (unprefixed).
    fn allowed_buckets(&self) -> Vec<String>;
}

/// How a plugin instance reports what its supervisor must know.
pub trait Supervision {
    /// The instance broke outside of any call (for example a timer callback ran past its time
    /// limit); the supervisor restarts it.
    fn instance_failed(&self, error: crate::Error);
    /// A listener threw or rejected; logged and counted, never fatal.
    fn listener_failed(&self, event: &str, error: &crate::Error);
    /// The host refused `refusals` requests of the plugin at `limit` (dropped log lines, a
    /// too-large message, one timer too many); counted, and logged with `detail`.
    fn limit_refused(&self, limit: HostLimit, refusals: u64, detail: &str);
}

/// A host limit a plugin ran into, as the refusal counter's `limit` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostLimit {
    /// Event data or call arguments over [`PluginLimits::max_message_bytes`].
    MessageBytes,
    /// Log output over [`PluginLimits::log_bytes_per_second`].
    LogBytes,
    /// More than [`PluginLimits::max_timers`] timers pending.
    Timers,
    /// A dependency handle asked for one of the [`HOST_ONLY_FUNCTIONS`].
    HostOnlyFunction,
    /// An emit while the plugin's undelivered events held its whole budget.
    EventBacklog,
}

impl HostLimit {
    /// Every limit, for code that keeps per-limit state in an array.
    pub const ALL: [HostLimit; 5] = [
        HostLimit::MessageBytes,
        HostLimit::LogBytes,
        HostLimit::Timers,
        HostLimit::HostOnlyFunction,
        HostLimit::EventBacklog,
    ];

    /// The label value (`message_bytes`, `log_bytes`, `timers`, `host_only_function`,
    /// `event_backlog`).
    pub fn as_str(self) -> &'static str {
        match self {
            HostLimit::MessageBytes => "message_bytes",
            HostLimit::LogBytes => "log_bytes",
            HostLimit::Timers => "timers",
            HostLimit::HostOnlyFunction => "host_only_function",
            HostLimit::EventBacklog => "event_backlog",
        }
    }

    /// The position of this limit in [`HostLimit::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Per-plugin limits applied to every entry into the plugin's code and to what the host does
/// for it. The defaults here are the contract's defaults; the binary's settings start from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Heap limit of the plugin's JavaScript engine, in MiB.
    pub memory_limit_mb: u64,
    /// Time limit of one call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Largest event `data` or list of call arguments, in bytes of serialized JSON.
    pub max_message_bytes: usize,
    /// Log output (`console.*`) one plugin may write per second, in bytes; the rest is dropped.
    pub log_bytes_per_second: u64,
    /// Timers (`setTimeout`, `setInterval`) one plugin may have pending at once.
    pub max_timers: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_limit_mb: 64,
            call_timeout_ms: 5_000,
            max_message_bytes: 1_048_576,
            log_bytes_per_second: 65_536,
            max_timers: 1_000,
        }
    }
}

impl PluginLimits {
    /// Refuses a message (`what`: "event data", "call arguments") of `bytes` serialized bytes
    /// over [`PluginLimits::max_message_bytes`].
    pub fn check_message_size(&self, plugin: &str, what: &str, bytes: usize) -> Result<()> {
        if bytes > self.max_message_bytes {
            return Err(crate::Error::MessageTooLarge {
                plugin: plugin.to_string(),
                what: what.to_string(),
                bytes,
                limit: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

/// Everything a plugin instance may reach: its only door to the outside.
#[derive(Clone)]
pub struct PluginContext {
    /// The plugin's name, for logs and error messages.
    pub plugin: String,
    /// `context.eventBus`.
    pub events: Rc<dyn Events>,
    /// `context.getDependency` / `getDependencies`.
    pub dependencies: Rc<dyn Dependencies>,
    /// Where faults and listener errors go.
    pub supervision: Rc<dyn Supervision>,
    /// `context.database`, absent when PostgreSQL is not configured.
    pub database: Option<Rc<dyn Database>>,
    /// `context.kafka`, absent when Kafka is not configured.
    pub kafka: Option<Rc<dyn Kafka>>,
    /// `context.s3`, absent when S3 is not configured.
    pub storage: Option<Rc<dyn Storage>>,
}
