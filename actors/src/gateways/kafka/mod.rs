//! The Kafka gateway: produce to granted topics, consumers in prefixed groups, ksqlDB forwarding.
//!
//! - this file: the shared clients (`KafkaBackend`), the messages, the gateway actor and topic
//!   creation;
//! - `produce`: `sendMessage`, bounded per call, in order;
//! - `consume`: the plugin's consumers and their delivery tasks;
//! - `ksql`: ksqlDB statements, through the ksql guard.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::{ready, Future};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message, Recipient, ResponseFuture};
use futures::future::try_join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use warden_runtime::access::AccessLevel;
use warden_runtime::ksql_guard::{guard_ksql_statement, GuardedKsql};
use warden_runtime::resources::{consumer_group_name, ResourceGrants, ResourceKind};
use warden_runtime::{Error, KafkaOutgoing, KafkaRecord, Result};

mod consume;
mod ksql;
mod produce;

use consume::PluginConsumer;

/// Partitions of every topic the gateway creates unless the settings say otherwise
/// (`WARDEN_KAFKA_TOPIC_PARTITIONS`): several, so consumers of one group on several nodes share
/// a topic; Kafka orders messages within a partition (by key), not across partitions.
pub const DEFAULT_TOPIC_PARTITIONS: u32 = 3;

/// Replication factor of every topic the gateway creates (the local stack runs one broker).
const TOPIC_REPLICATION: i32 = 1;

/// How long the producer keeps trying to deliver a message before it reports a failure. Below
/// the default call time limit (5 s), so a plugin whose broker is down gets a typed
/// `KafkaError` it can handle, rather than its call timing out.
const MESSAGE_TIMEOUT_MS: &str = "4000";

/// How long the producer waits to batch messages; small, because every `sendMessage` call waits
/// for its delivery reports.
const PRODUCER_LINGER_MS: &str = "1";

/// The consumer session timeout: short, so that a consumer that went away without leaving its
/// group (a crashed process) hands its partitions over quickly.
pub(crate) const CONSUMER_SESSION_TIMEOUT_MS: &str = "6000";

/// The bound of the readiness probe.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The bound of the producer flush at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound of a topic creation request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a send waits for room in a full producer queue before it gives up.
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a send retries while the producer queue is full.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(10);

/// The pause after a consumer error, so that a broker that is down does not make the delivery
/// loop spin.
pub(crate) const RECEIVE_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// How long stopping a consumer waits for it to leave its group.
pub(crate) const CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound of one ksqlDB request; statements that create persistent queries can take a while.
const KSQL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The media type ksqlDB's REST API answers with.
const KSQL_MEDIA_TYPE: &str = "application/vnd.ksql.v1+json";

/// How many consumers one plugin may have at once unless the settings say otherwise
/// (`WARDEN_PLUGIN_MAX_CONSUMERS`): each is a librdkafka client with its own threads,
/// connections and buffers, so their number is what bounds a plugin's cost to the host.
pub const DEFAULT_MAX_CONSUMERS_PER_PLUGIN: usize = 8;

/// The most messages one `sendMessage` call may carry. librdkafka bounds each message
/// (`message.max.bytes`, 1 MB) and its own queue, but every message of a call is copied out of
/// the plugin's heap and waits in the gateway before that, so the call itself is bounded too.
const MAX_MESSAGES_PER_SEND: usize = 10_000;

/// The most bytes (keys, values and headers) one `sendMessage` call may carry.
const MAX_BYTES_PER_SEND: usize = 16 * 1024 * 1024;

/// The longest part of a refused ksqlDB statement the log keeps.
const MAX_LOGGED_KSQL_BYTES: usize = 512;

/// The shared Kafka producer and settings.
#[derive(Clone)]
pub struct KafkaBackend {
    brokers: String,
    ksqldb: Option<KsqlEndpoint>,
    producer: Arc<FutureProducer>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    max_consumers_per_plugin: usize,
    topic_partitions: u32,
}

/// Where ksqlDB statements go, and the HTTP client that sends them.
#[derive(Clone)]
struct KsqlEndpoint {
    /// `/ksql`, for statements.
    statements_url: String,
    /// `/query`, for pull queries.
    queries_url: String,
    http: reqwest::Client,
}

impl KafkaBackend {
    /// A producer for `brokers` (comma-separated host:port), and the ksqlDB endpoint if any.
    pub fn connect(brokers: &str, ksqldb_url: Option<String>) -> std::result::Result<Self, String> {
        // One request in flight per broker keeps the messages of a call in order even when
        // librdkafka retries a batch. Idempotence would too, but an idempotent producer turns
        // fatal when a broker loses its producer state (a restart of a broker on memory
        // storage), and the shared producer must outlive a broker's outage.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
            .set("linger.ms", PRODUCER_LINGER_MS)
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "1")
            .create()
            .map_err(|error| format!("cannot create the kafka producer: {error}"))?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .map_err(|error| format!("cannot create the kafka admin client: {error}"))?;
        let ksqldb = match ksqldb_url {
            Some(url) => Some(KsqlEndpoint {
                statements_url: format!("{}/ksql", url.trim_end_matches('/')),
                queries_url: format!("{}/query", url.trim_end_matches('/')),
                http: reqwest::Client::builder()
                    .timeout(KSQL_REQUEST_TIMEOUT)
                    .build()
                    .map_err(|error| format!("cannot create the ksqldb http client: {error}"))?,
            }),
            None => None,
        };
        Ok(KafkaBackend {
            brokers: brokers.to_string(),
            ksqldb,
            producer: Arc::new(producer),
            admin: Arc::new(admin),
            max_consumers_per_plugin: DEFAULT_MAX_CONSUMERS_PER_PLUGIN,
            topic_partitions: DEFAULT_TOPIC_PARTITIONS,
        })
    }

    /// The same backend, letting each plugin have at most `limit` consumers at once (at least
    /// one).
    pub fn with_max_consumers_per_plugin(mut self, limit: usize) -> Self {
        self.max_consumers_per_plugin = limit.max(1);
        self
    }

    /// How many consumers a plugin may have at once.
    pub fn max_consumers_per_plugin(&self) -> usize {
        self.max_consumers_per_plugin
    }

    /// The same backend, creating plugins' topics with `partitions` partitions (at least one).
    pub fn with_topic_partitions(mut self, partitions: u32) -> Self {
        self.topic_partitions = partitions.max(1);
        self
    }

    /// The brokers (comma-separated host:port), for clients of Warden's own.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Creates the topics that do not exist yet, with the configured partitions.
    pub async fn create_topics(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let partitions = i32::try_from(self.topic_partitions).unwrap_or(i32::MAX);
        let new_topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(TOPIC_REPLICATION)))
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(kafka_error)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(kafka_error(format!(
                        "cannot create topic '{topic}': {code}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The shared producer, for benchmarks that compare the gateway with the bare client.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Whether the brokers answer a metadata request within a second.
    pub async fn check(&self) -> bool {
        let producer = Arc::clone(&self.producer);
        // librdkafka's metadata request blocks its caller, so it runs off the arbiter thread.
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, CHECK_TIMEOUT)
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Flushes the producer (at shutdown).
    ///
    /// This blocks for at most five seconds; it runs once, on the shutdown path, when no plugin
    /// call is waiting on the thread anymore.
    pub fn flush(&self) {
        if let Err(error) = self.producer.flush(FLUSH_TIMEOUT) {
            tracing::warn!(%error, "kafka producer flush did not finish");
        }
    }
}

/// Delivered to the plugin actor: one message for consumer `consumer_id`; resolves after the
/// plugin's `eachMessage` did, and then the gateway commits the offset.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct ConsumeKafkaMessage {
    /// The plugin instance generation that created the consumer.
    pub generation: u64,
    /// The consumer.
    pub consumer_id: String,
    /// The message (topic unprefixed).
    pub record: KafkaRecord,
}

/// Creates the plugin's declared topics (at load).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct EnsureTopics;

/// Produces messages to one granted topic.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct SendKafkaMessages {
    /// The topic as the plugin names it.
    pub topic: String,
    /// The messages, in order.
    pub messages: Vec<KafkaOutgoing>,
    /// The plugin's producer id (informational: one shared producer serves every plugin).
    pub producer_id: Option<String>,
}

/// Creates a consumer in the (prefixed) group.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct CreateConsumer {
    /// The plugin's consumer id.
    pub consumer_id: String,
    /// The group as the plugin names it.
    pub group_id: String,
    /// Where messages go.
    pub deliver_to: Recipient<ConsumeKafkaMessage>,
    /// The instance generation messages are for.
    pub generation: u64,
}

/// Subscribes a consumer to granted topics and starts delivering.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct SubscribeConsumer {
    /// The consumer.
    pub consumer_id: String,
    /// Topics as the plugin names them.
    pub topics: Vec<String>,
}

/// Stops one consumer.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct DisconnectConsumer {
    /// The consumer.
    pub consumer_id: String,
}

/// Stops every consumer (the plugin restarted or is unloading).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DisconnectAllConsumers;

/// Runs the ksqlDB guard (allowed statement kinds; streams, tables and topics checked and
/// prefixed), then forwards the checked statement to ksqlDB.
#[derive(Message)]
#[rtype(result = "Result<Value>")]
pub struct ExecuteKsql {
    /// The statement.
    pub statement: String,
}

/// One plugin's Kafka gateway.
pub struct KafkaGateway {
    plugin: String,
    grants: ResourceGrants,
    backend: KafkaBackend,
    consumers: HashMap<String, PluginConsumer>,
}

impl KafkaGateway {
    /// A gateway for `plugin` holding `grants`.
    pub fn new(plugin: String, grants: ResourceGrants, backend: KafkaBackend) -> Self {
        KafkaGateway {
            plugin,
            grants,
            backend,
            consumers: HashMap::new(),
        }
    }

    /// The physical name of a topic the plugin names, or the refusal it gets: not granted, or
    /// granted at a level that does not allow `needed` (`produce` or `consume`).
    fn physical_topic(&self, topic: &str, needed: AccessLevel) -> Result<&str> {
        let grant = self
            .grants
            .grant(ResourceKind::Topic, topic)
            .ok_or_else(|| topic_access_denied(&self.grants, topic))?;
        grant.require(ResourceKind::Topic, needed)?;
        Ok(&grant.physical)
    }

    /// Stops every consumer; the returned future resolves once all of them left their groups.
    fn stop_all_consumers(&mut self) -> impl Future<Output = ()> + 'static {
        let stopping: Vec<_> = self
            .consumers
            .drain()
            .map(|(_, consumer)| consumer.stop())
            .collect();
        async move {
            futures::future::join_all(stopping).await;
        }
    }
}

impl Actor for KafkaGateway {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        // Delivery stops at once (the tasks are aborted here); leaving the groups finishes in
        // the background, so that an unloaded plugin leaves no consumer behind.
        if !self.consumers.is_empty() {
            actix::spawn(self.stop_all_consumers());
        }
    }
}

impl Handler<EnsureTopics> for KafkaGateway {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, _: EnsureTopics, _: &mut Self::Context) -> Self::Result {
        let physical_names: Vec<String> = self
            .grants
            .grants(ResourceKind::Topic)
            .iter()
            .map(|grant| grant.physical.clone())
            .collect();
        let backend = self.backend.clone();
        Box::pin(async move { backend.create_topics(&physical_names).await })
    }
}

fn topic_access_denied(grants: &ResourceGrants, topic: &str) -> Error {
    Error::TopicAccessDenied {
        topic: topic.to_string(),
        allowed: grants.names(ResourceKind::Topic),
    }
}

fn kafka_error(error: impl Display) -> Error {
    Error::Backend {
        service: "kafka".to_string(),
        message: error.to_string(),
    }
}

/// The start of `text`, at most `limit` bytes cut at a character boundary.
fn shortened(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_statements_are_logged_by_their_start() {
        assert_eq!(shortened("short", 10), "short");
        assert_eq!(shortened("ééé", 3), "é");
        assert_eq!(shortened("abc", 0), "");
    }
}
