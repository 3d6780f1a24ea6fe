//! The Kafka gateway: produce to granted topics, consumers in prefixed groups, ksqlDB forwarding.

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

/// Partitions of every topic the gateway creates: one partition keeps every topic totally
/// ordered, which is what plugins written for the original system expect.
const TOPIC_PARTITIONS: i32 = 1;

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
const CONSUMER_SESSION_TIMEOUT_MS: &str = "6000";

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
const RECEIVE_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// How long stopping a consumer waits for it to leave its group.
const CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

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
        })
    }

    /// The same backend, letting each plugin have at most `limit` consumers at once (at least
    /// one).
    pub fn with_max_consumers_per_plugin(mut self, limit: usize) -> Self {
        self.max_consumers_per_plugin = limit.max(1);
        self
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
        let admin = Arc::clone(&self.backend.admin);
        Box::pin(async move {
            if physical_names.is_empty() {
                return Ok(());
            }
            let new_topics: Vec<NewTopic<'_>> = physical_names
                .iter()
                .map(|name| {
                    NewTopic::new(
                        name,
                        TOPIC_PARTITIONS,
                        TopicReplication::Fixed(TOPIC_REPLICATION),
                    )
                })
                .collect();
            let options = AdminOptions::new()
                .request_timeout(Some(ADMIN_TIMEOUT))
                .operation_timeout(Some(ADMIN_TIMEOUT));
            let results = admin
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
        })
    }
}

impl Handler<SendKafkaMessages> for KafkaGateway {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, request: SendKafkaMessages, _: &mut Self::Context) -> Self::Result {
        let SendKafkaMessages {
            topic,
            messages,
            producer_id: _,
        } = request;
        let physical = match self
            .physical_topic(&topic, AccessLevel::Produce)
            .and_then(|physical| check_send_size(&messages).map(|()| physical))
        {
            Ok(physical) => physical.to_string(),
            Err(error) => return Box::pin(ready(Err(error))),
        };
        let producer = Arc::clone(&self.backend.producer);
        // Messages are enqueued here, inside the handler, rather than in the returned future:
        // the actor handles one message at a time, so calls reach the producer in the order the
        // plugin made them, and the messages of one call in their order. Only when the producer
        // queue is full does the rest of a call wait for room in the future.
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut messages = messages.into_iter();
        let mut waiting_for_room = None;
        for message in messages.by_ref() {
            match producer.send_result(outgoing_record(&physical, &message)) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    waiting_for_room = Some(message);
                    break;
                }
                Err((error, _)) => return Box::pin(ready(Err(kafka_error(error)))),
            }
        }
        Box::pin(async move {
            if let Some(first) = waiting_for_room {
                for message in std::iter::once(first).chain(messages) {
                    deliveries.push(enqueue_when_room(&producer, &physical, &message).await?);
                }
            }
            try_join_all(deliveries.into_iter().map(|delivery| async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(kafka_error(error)),
                    Err(_) => Err(kafka_error("the producer dropped the message")),
                }
            }))
            .await?;
            Ok(())
        })
    }
}

impl Handler<CreateConsumer> for KafkaGateway {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, request: CreateConsumer, _: &mut Self::Context) -> Self::Result {
        let group = match consumer_group_name(&self.plugin, &request.group_id) {
            Ok(group) => group,
            Err(error) => return Box::pin(ready(Err(error))),
        };
        // A consumer id that exists already is replaced below, so it adds no consumer.
        let limit = self.backend.max_consumers_per_plugin;
        if !self.consumers.contains_key(&request.consumer_id) && self.consumers.len() >= limit {
            tracing::warn!(
                plugin = %self.plugin,
                consumer = %request.consumer_id,
                limit,
                "kafka consumer refused: the plugin has as many consumers as it may"
            );
            metrics::counter!(
                "warden_kafka_consumers_refused_total",
                "plugin" => self.plugin.clone()
            )
            .increment(1);
            return Box::pin(ready(Err(Error::ConsumerLimit {
                plugin: self.plugin.clone(),
                limit,
            })));
        }
        let consumer: StreamConsumer = match ClientConfig::new()
            .set("bootstrap.servers", &self.backend.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", CONSUMER_SESSION_TIMEOUT_MS)
            .create()
        {
            Ok(consumer) => consumer,
            Err(error) => return Box::pin(ready(Err(kafka_error(error)))),
        };
        let replaced = self.consumers.insert(
            request.consumer_id,
            PluginConsumer {
                consumer: Arc::new(consumer),
                deliver_to: request.deliver_to,
                generation: request.generation,
                topics: Vec::new(),
                delivery: None,
            },
        );
        match replaced {
            Some(old) => {
                let stopping = old.stop();
                Box::pin(async move {
                    stopping.await;
                    Ok(())
                })
            }
            None => Box::pin(ready(Ok(()))),
        }
    }
}

impl Handler<SubscribeConsumer> for KafkaGateway {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, request: SubscribeConsumer, _: &mut Self::Context) -> Self::Result {
        Box::pin(ready(self.subscribe(request)))
    }
}

impl KafkaGateway {
    /// Adds granted topics to a consumer's subscription and starts its delivery task if it has
    /// none yet. Subscribing again adds topics, as kafkajs' `subscribe` does.
    fn subscribe(&mut self, request: SubscribeConsumer) -> Result<()> {
        let mut requested = Vec::with_capacity(request.topics.len());
        for topic in &request.topics {
            requested.push(
                self.physical_topic(topic, AccessLevel::Consume)?
                    .to_string(),
            );
        }
        let Some(entry) = self.consumers.get_mut(&request.consumer_id) else {
            return Err(kafka_error(format!(
                "consumer '{}' does not exist; create it before subscribing",
                request.consumer_id
            )));
        };
        let mut topics = entry.topics.clone();
        for physical in requested {
            if !topics.contains(&physical) {
                topics.push(physical);
            }
        }
        if topics.is_empty() {
            return Ok(());
        }
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        entry.consumer.subscribe(&topic_refs).map_err(kafka_error)?;
        entry.topics = topics;
        if entry.delivery.is_none() {
            let topic_names = self
                .grants
                .grants(ResourceKind::Topic)
                .iter()
                .map(|grant| (grant.physical.clone(), grant.name.clone()))
                .collect();
            let delivery = ConsumerDelivery {
                plugin: self.plugin.clone(),
                consumer_id: request.consumer_id,
                consumer: Arc::clone(&entry.consumer),
                deliver_to: entry.deliver_to.clone(),
                generation: entry.generation,
                topic_names,
            };
            entry.delivery = Some(actix::spawn(delivery.run()));
        }
        Ok(())
    }
}

impl Handler<DisconnectConsumer> for KafkaGateway {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, request: DisconnectConsumer, _: &mut Self::Context) -> Self::Result {
        match self.consumers.remove(&request.consumer_id) {
            Some(consumer) => {
                let stopping = consumer.stop();
                Box::pin(async move {
                    stopping.await;
                    Ok(())
                })
            }
            None => Box::pin(ready(Ok(()))),
        }
    }
}

impl Handler<DisconnectAllConsumers> for KafkaGateway {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: DisconnectAllConsumers, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.stop_all_consumers())
    }
}

impl Handler<ExecuteKsql> for KafkaGateway {
    type Result = ResponseFuture<Result<Value>>;

    fn handle(&mut self, request: ExecuteKsql, _: &mut Self::Context) -> Self::Result {
        let Some(endpoint) = self.backend.ksqldb.clone() else {
            return Box::pin(ready(Err(Error::KsqlNotConfigured)));
        };
        let guarded = match guard_ksql_statement(&self.plugin, &request.statement, &self.grants) {
            Ok(guarded) => guarded,
            Err(error) => {
                // A refused statement can be up to any size; the log keeps its start.
                let statement = shortened(&request.statement, MAX_LOGGED_KSQL_BYTES);
                tracing::warn!(plugin = %self.plugin, statement, %error, "ksql statement refused");
                metrics::counter!("warden_ksql_denied_total", "plugin" => self.plugin.clone())
                    .increment(1);
                return Box::pin(ready(Err(error)));
            }
        };
        tracing::debug!(
            plugin = %self.plugin,
            kind = guarded.kind.as_str(),
            statement = %guarded.statement,
            "forwarding ksql statement"
        );
        Box::pin(async move { endpoint.execute(guarded).await })
    }
}

impl KsqlEndpoint {
    /// Posts one checked and rewritten statement to ksqlDB: pull queries to `/query`, which
    /// answers them once, everything else to `/ksql`.
    async fn execute(&self, guarded: GuardedKsql) -> Result<Value> {
        let url = if guarded.kind.is_query() {
            &self.queries_url
        } else {
            &self.statements_url
        };
        let statement = guarded.statement;
        let response = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, KSQL_MEDIA_TYPE)
            .json(&json!({ "ksql": statement, "streamsProperties": {} }))
            .send()
            .await
            .map_err(ksql_error)?;
        let status = response.status();
        let body = response.text().await.map_err(ksql_error)?;
        let parsed = serde_json::from_str::<Value>(&body);
        if !status.is_success() {
            // ksqlDB explains a refused statement in the `message` field of a JSON body.
            let reason = parsed
                .ok()
                .and_then(|value| value.get("message")?.as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(ksql_error(format!("HTTP {status}: {reason}")));
        }
        parsed.map_err(|error| ksql_error(format!("the response is not JSON: {error}")))
    }
}

/// One consumer of the plugin and its delivery task.
struct PluginConsumer {
    consumer: Arc<StreamConsumer>,
    deliver_to: Recipient<ConsumeKafkaMessage>,
    generation: u64,
    /// The physical topics it is subscribed to.
    topics: Vec<String>,
    /// The task handing messages to the plugin, once subscribed.
    delivery: Option<JoinHandle<()>>,
}

impl PluginConsumer {
    /// Stops delivering at once (no message is handed over after this returns) and gives a
    /// future that resolves once the consumer has left its group, or after a bound.
    fn stop(self) -> impl Future<Output = ()> + 'static {
        if let Some(delivery) = &self.delivery {
            delivery.abort();
        }
        let PluginConsumer {
            consumer, delivery, ..
        } = self;
        async move {
            // The aborted task drops its handle on the consumer when it is polled next; wait for
            // that, so that the last handle is dropped below, off the arbiter thread.
            if let Some(delivery) = delivery {
                let _ = delivery.await;
            }
            // Dropping a consumer closes it: librdkafka leaves the group, which blocks.
            let closing = tokio::task::spawn_blocking(move || drop(consumer));
            if tokio::time::timeout(CONSUMER_CLOSE_TIMEOUT, closing)
                .await
                .is_err()
            {
                tracing::warn!("a kafka consumer took too long to leave its group");
            }
        }
    }
}

/// What a consumer's delivery task needs.
struct ConsumerDelivery {
    plugin: String,
    consumer_id: String,
    consumer: Arc<StreamConsumer>,
    deliver_to: Recipient<ConsumeKafkaMessage>,
    generation: u64,
    /// Physical topic name to the name the plugin writes.
    topic_names: HashMap<String, String>,
}

impl ConsumerDelivery {
    /// Hands messages to the plugin one at a time, in partition order, committing each offset
    /// after the plugin's handler resolved; ends when the plugin's actor is gone.
    ///
    /// An offset is committed even when the handler failed: the failure is logged and counted,
    /// and the message is not delivered again. Retrying it forever would let one poison message
    /// block its partition for every later message; a plugin that needs retries keeps them in
    /// its own handler.
    async fn run(self) {
        loop {
            let message = match self.consumer.recv().await {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(
                        plugin = %self.plugin,
                        consumer = %self.consumer_id,
                        %error,
                        "kafka consumer error"
                    );
                    tokio::time::sleep(RECEIVE_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let Some(record) = self.record_of(&message) else {
                continue;
            };
            let outcome = self
                .deliver_to
                .send(ConsumeKafkaMessage {
                    generation: self.generation,
                    consumer_id: self.consumer_id.clone(),
                    record,
                })
                .await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(
                        plugin = %self.plugin,
                        consumer = %self.consumer_id,
                        topic = message.topic(),
                        offset = message.offset(),
                        %error,
                        "kafka message handler failed; committing its offset anyway"
                    );
                    metrics::counter!(
                        "warden_kafka_handler_errors_total",
                        "plugin" => self.plugin.clone()
                    )
                    .increment(1);
                }
                Err(_) => {
                    tracing::debug!(
                        plugin = %self.plugin,
                        consumer = %self.consumer_id,
                        "the plugin instance is gone; its kafka consumer stops delivering"
                    );
                    return;
                }
            }
            if let Err(error) = self.consumer.commit_message(&message, CommitMode::Async) {
                tracing::warn!(
                    plugin = %self.plugin,
                    consumer = %self.consumer_id,
                    %error,
                    "kafka offset commit failed"
                );
            }
        }
    }

    /// The message as the plugin sees it, or `None` for a topic the plugin was not granted
    /// (which a consumer subscribed only to granted topics never receives).
    fn record_of(&self, message: &BorrowedMessage<'_>) -> Option<KafkaRecord> {
        let Some(topic) = self.topic_names.get(message.topic()) else {
            tracing::warn!(
                plugin = %self.plugin,
                topic = message.topic(),
                "kafka consumer received a message from a topic that is not granted"
            );
            return None;
        };
        let utf8 = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_string);
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|header| Some((header.key.to_string(), utf8(header.value?)?)))
                    .collect()
            })
            .unwrap_or_default();
        Some(KafkaRecord {
            topic: topic.clone(),
            partition: message.partition(),
            key: message.key().and_then(utf8),
            value: message.payload().and_then(utf8),
            headers,
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
        })
    }
}

/// The producer record for one outgoing message; librdkafka copies key, value and headers.
fn outgoing_record<'a>(topic: &'a str, message: &'a KafkaOutgoing) -> FutureRecord<'a, str, str> {
    let mut record = FutureRecord::to(topic).payload(message.value.as_str());
    if let Some(key) = &message.key {
        record = record.key(key.as_str());
    }
    if !message.headers.is_empty() {
        let headers = message.headers.iter().fold(
            OwnedHeaders::new_with_capacity(message.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                })
            },
        );
        record = record.headers(headers);
    }
    record
}

/// Enqueues one message, waiting while the producer queue is full.
async fn enqueue_when_room(
    producer: &FutureProducer,
    topic: &str,
    message: &KafkaOutgoing,
) -> Result<DeliveryFuture> {
    let deadline = Instant::now() + QUEUE_FULL_TIMEOUT;
    loop {
        match producer.send_result(outgoing_record(topic, message)) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(QUEUE_FULL_RETRY).await;
            }
            Err((error, _)) => return Err(kafka_error(error)),
        }
    }
}

/// Refuses a `sendMessage` call over the gateway's bounds before anything is enqueued.
fn check_send_size(messages: &[KafkaOutgoing]) -> Result<()> {
    if messages.len() > MAX_MESSAGES_PER_SEND {
        return Err(kafka_error(format!(
            "sendMessage carries {} messages, over the {MAX_MESSAGES_PER_SEND}-message limit per call",
            messages.len()
        )));
    }
    let bytes: usize = messages
        .iter()
        .map(|message| {
            message.key.as_ref().map_or(0, String::len)
                + message.value.len()
                + message
                    .headers
                    .iter()
                    .map(|(key, value)| key.len() + value.len())
                    .sum::<usize>()
        })
        .sum();
    if bytes > MAX_BYTES_PER_SEND {
        return Err(kafka_error(format!(
            "sendMessage carries {bytes} bytes, over the {MAX_BYTES_PER_SEND}-byte limit per call"
        )));
    }
    Ok(())
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

fn ksql_error(error: impl Display) -> Error {
    Error::Backend {
        service: "ksqldb".to_string(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use actix::Addr;

    /// Waits for a condition with a deadline: consumer groups need a few seconds to form.
    const WAIT_DEADLINE: Duration = Duration::from_secs(60);

    static PLUGIN_COUNTER: AtomicUsize = AtomicUsize::new(0);

    fn brokers() -> String {
        std::env::var("WARDEN_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
    }

    /// A plugin name no other test (or earlier run against the same broker) uses.
    fn unique_plugin() -> String {
        format!(
            "kafka-test-{}-{}",
            std::process::id(),
            PLUGIN_COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn topic_grants(plugin: &str, topics: &[&str]) -> ResourceGrants {
        let topics: Vec<String> = topics.iter().map(|topic| topic.to_string()).collect();
        ResourceGrants::resolve(plugin, &[], &topics, &[], None).expect("valid grants")
    }

    fn backend(ksqldb_url: Option<String>) -> KafkaBackend {
        KafkaBackend::connect(&brokers(), ksqldb_url).expect("kafka backend")
    }

    fn gateway(plugin: &str, topics: &[&str]) -> Addr<KafkaGateway> {
        KafkaGateway::new(
            plugin.to_string(),
            topic_grants(plugin, topics),
            backend(None),
        )
        .start()
    }

    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT_DEADLINE;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the consumer group has `expected` members, as the broker reports them.
    async fn wait_for_group_members(plugin: &str, group: &str, expected: usize) {
        let producer = Arc::clone(&backend(None).producer);
        let group = consumer_group_name(plugin, group).expect("group name");
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            let producer = Arc::clone(&producer);
            let asked = group.clone();
            let members = tokio::task::spawn_blocking(move || {
                let list = producer
                    .client()
                    .fetch_group_list(Some(&asked), Duration::from_secs(5))
                    .expect("group list");
                list.groups()
                    .iter()
                    .filter(|info| info.name() == asked)
                    .map(|info| info.members().len())
                    .sum::<usize>()
            })
            .await
            .unwrap();
            if members == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {expected} members in group {group}; it has {members}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What a test plugin actor received.
    type Received = Arc<Mutex<Vec<ConsumeKafkaMessage>>>;

    /// Stands in for a plugin actor: records every message and answers `Ok`, except for values
    /// it was told to fail.
    struct Recorder {
        received: Received,
        fail_value: Option<String>,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<ConsumeKafkaMessage> for Recorder {
        type Result = Result<()>;

        fn handle(&mut self, message: ConsumeKafkaMessage, _: &mut Self::Context) -> Result<()> {
            let fail = message.record.value.is_some() && message.record.value == self.fail_value;
            self.received.lock().unwrap().push(message);
            if fail {
                return Err(Error::Execution {
                    name: "Error".to_string(),
                    message: "handler refused the message".to_string(),
                });
            }
            Ok(())
        }
    }

    fn recorder(fail_value: Option<&str>) -> (Addr<Recorder>, Received) {
        let received = Received::default();
        let address = Recorder {
            received: Arc::clone(&received),
            fail_value: fail_value.map(str::to_string),
        }
        .start();
        (address, received)
    }

    fn values(received: &Received) -> Vec<String> {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|message| message.record.value.clone().unwrap_or_default())
            .collect()
    }

    fn plain(value: &str) -> KafkaOutgoing {
        KafkaOutgoing {
            key: None,
            value: value.to_string(),
            headers: Vec::new(),
        }
    }

    async fn send(gateway: &Addr<KafkaGateway>, topic: &str, messages: Vec<KafkaOutgoing>) {
        gateway
            .send(SendKafkaMessages {
                topic: topic.to_string(),
                messages,
                producer_id: None,
            })
            .await
            .unwrap()
            .expect("messages sent");
    }

    async fn consume(
        gateway: &Addr<KafkaGateway>,
        consumer_id: &str,
        group_id: &str,
        topics: &[&str],
        deliver_to: &Addr<Recorder>,
    ) {
        gateway
            .send(CreateConsumer {
                consumer_id: consumer_id.to_string(),
                group_id: group_id.to_string(),
                deliver_to: deliver_to.clone().recipient(),
                generation: 7,
            })
            .await
            .unwrap()
            .expect("consumer created");
        gateway
            .send(SubscribeConsumer {
                consumer_id: consumer_id.to_string(),
                topics: topics.iter().map(|topic| topic.to_string()).collect(),
            })
            .await
            .unwrap()
            .expect("consumer subscribed");
    }

    fn assert_topic_denied<T: std::fmt::Debug>(result: Result<T>, topic: &str, allowed: &[&str]) {
        match result {
            Err(Error::TopicAccessDenied {
                topic: denied,
                allowed: listed,
            }) => {
                assert_eq!(denied, topic);
                assert_eq!(listed, allowed);
            }
            other => panic!("expected TopicAccessDenied for '{topic}', got {other:?}"),
        }
    }

    #[actix_rt::test]
    async fn ksql_needs_a_configured_endpoint_and_reports_its_failures() {
        let plugin = unique_plugin();
        let unconfigured = gateway(&plugin, &["events"]);
        let result = unconfigured
            .send(ExecuteKsql {
                statement: "SHOW STREAMS;".to_string(),
            })
            .await
            .unwrap();
        assert_eq!(result, Err(Error::KsqlNotConfigured));

        // Nothing listens on port 1, so the request fails at the network level.
        let unreachable = KafkaGateway::new(
            plugin.clone(),
            topic_grants(&plugin, &["events"]),
            backend(Some("http://127.0.0.1:1/".to_string())),
        )
        .start();
        let denied = unreachable
            .send(ExecuteKsql {
                statement: "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='other');".to_string(),
            })
            .await
            .unwrap();
        assert_topic_denied(denied, "other", &["events"]);
        // The guard refuses before anything is sent: a refusal, not a network error.
        for statement in [
            "SHOW STREAMS;",
            "TERMINATE ALL",
            "DROP STREAM s DELETE TOPIC",
        ] {
            let refused = unreachable
                .send(ExecuteKsql {
                    statement: statement.to_string(),
                })
                .await
                .unwrap();
            assert!(
                matches!(&refused, Err(error @ Error::SqlNotAllowed { .. }) if error.js_name() == "SqlNotAllowedError"),
                "{statement}: {refused:?}"
            );
        }
        // Statements and pull queries that pass reach the (unreachable) endpoint.
        for statement in [
            "CREATE STREAM s (v STRING) WITH (KAFKA_TOPIC='events');",
            "SELECT * FROM s WHERE v = 'x'",
        ] {
            match unreachable
                .send(ExecuteKsql {
                    statement: statement.to_string(),
                })
                .await
                .unwrap()
            {
                Err(error @ Error::Backend { .. }) => assert_eq!(error.js_name(), "KsqlError"),
                other => panic!("expected a ksqldb backend error for {statement}, got {other:?}"),
            }
        }
    }

    #[actix_rt::test]
    async fn consumers_beyond_the_plugins_limit_are_refused() {
        let plugin = unique_plugin();
        let gateway = KafkaGateway::new(
            plugin.clone(),
            topic_grants(&plugin, &["events"]),
            backend(None).with_max_consumers_per_plugin(2),
        )
        .start();
        let (plugin_actor, _received) = recorder(None);
        let create = |consumer_id: &str| {
            gateway.send(CreateConsumer {
                consumer_id: consumer_id.to_string(),
                group_id: "g1".to_string(),
                deliver_to: plugin_actor.clone().recipient(),
                generation: 1,
            })
        };
        create("first").await.unwrap().expect("first consumer");
        create("second").await.unwrap().expect("second consumer");
        let refused = create("third").await.unwrap();
        assert_eq!(
            refused,
            Err(Error::ConsumerLimit {
                plugin: plugin.clone(),
                limit: 2
            })
        );
        assert_eq!(
            refused.unwrap_err().js_name(),
            "ConsumerLimitError",
            "the plugin sees a typed error"
        );
        // Replacing a consumer adds none, and a disconnected one makes room.
        create("second")
            .await
            .unwrap()
            .expect("a replaced consumer");
        gateway
            .send(DisconnectConsumer {
                consumer_id: "first".to_string(),
            })
            .await
            .unwrap()
            .expect("disconnected");
        create("third")
            .await
            .unwrap()
            .expect("room after a disconnect");
        assert!(matches!(
            create("fourth").await.unwrap(),
            Err(Error::ConsumerLimit { limit: 2, .. })
        ));
        // The limit is at least one.
        assert_eq!(
            backend(None)
                .with_max_consumers_per_plugin(0)
                .max_consumers_per_plugin,
            1
        );
        assert_eq!(
            backend(None).max_consumers_per_plugin,
            DEFAULT_MAX_CONSUMERS_PER_PLUGIN
        );
        gateway.send(DisconnectAllConsumers).await.unwrap();
    }

    #[test]
    fn oversized_sends_are_refused_before_anything_is_enqueued() {
        let many = vec![plain("x"); MAX_MESSAGES_PER_SEND + 1];
        let refused = check_send_size(&many).unwrap_err();
        assert_eq!(refused.js_name(), "KafkaError");
        assert!(
            refused.to_string().contains("10000-message limit"),
            "{refused}"
        );
        assert_eq!(check_send_size(&many[..MAX_MESSAGES_PER_SEND]), Ok(()));

        // Keys and headers count too.
        let half = "v".repeat(MAX_BYTES_PER_SEND / 2);
        let at_limit = vec![plain(&half), plain(&half)];
        assert_eq!(check_send_size(&at_limit), Ok(()));
        let mut over = at_limit.clone();
        over[0].headers.push(("h".to_string(), String::new()));
        assert!(check_send_size(&over)
            .unwrap_err()
            .to_string()
            .contains("byte limit per call"));
        let mut over = at_limit;
        over[1].key = Some("k".to_string());
        assert!(check_send_size(&over).is_err());
    }

    #[test]
    fn refused_statements_are_logged_by_their_start() {
        assert_eq!(shortened("short", 10), "short");
        assert_eq!(shortened("ééé", 3), "é");
        assert_eq!(shortened("abc", 0), "");
    }

    #[actix_rt::test]
    async fn ensure_topics_creates_granted_topics_and_is_idempotent() {
        let plugin = unique_plugin();
        let gateway = gateway(&plugin, &["events", "audit.log"]);
        gateway
            .send(EnsureTopics)
            .await
            .unwrap()
            .expect("topics created");
        gateway
            .send(EnsureTopics)
            .await
            .unwrap()
            .expect("topics exist already");

        let kafka = backend(None);
        assert!(kafka.check().await, "the broker answers");
        let producer = Arc::clone(&kafka.producer);
        let listed = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .expect("metadata");
            metadata
                .topics()
                .iter()
                .map(|topic| topic.name().to_string())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for physical in [format!("{plugin}_events"), format!("{plugin}_audit.log")] {
            assert!(
                listed.contains(&physical),
                "{physical} missing from {listed:?}"
            );
        }
    }

    #[actix_rt::test]
    async fn sent_messages_are_consumed_in_order_with_unprefixed_topics() {
        let plugin = unique_plugin();
        let gateway = gateway(&plugin, &["events"]);
        gateway.send(EnsureTopics).await.unwrap().expect("topics");
        let (plugin_actor, received) = recorder(None);
        consume(&gateway, "reader", "g1", &["events"], &plugin_actor).await;

        let mut messages: Vec<KafkaOutgoing> = (0..20)
            .map(|index| KafkaOutgoing {
                key: Some(format!("key-{index}")),
                value: format!("value-{index}"),
                headers: vec![
                    ("trace".to_string(), format!("t{index}")),
                    ("source".to_string(), "test".to_string()),
                ],
            })
            .collect();
        messages.push(plain("no key"));
        send(&gateway, "events", messages).await;
        send(&gateway, "events", vec![plain("second call")]).await;

        wait_until("22 messages arrived", || {
            received.lock().unwrap().len() >= 22
        })
        .await;
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 22);
        let mut offsets = Vec::new();
        for (index, message) in received.iter().take(20).enumerate() {
            assert_eq!(message.generation, 7);
            assert_eq!(message.consumer_id, "reader");
            let record = &message.record;
            assert_eq!(record.topic, "events");
            assert_eq!(record.partition, 0);
            assert_eq!(record.key.as_deref(), Some(format!("key-{index}").as_str()));
            assert_eq!(
                record.value.as_deref(),
                Some(format!("value-{index}").as_str())
            );
            assert_eq!(
                record.headers,
                vec![
                    ("trace".to_string(), format!("t{index}")),
                    ("source".to_string(), "test".to_string()),
                ]
            );
            assert!(record.timestamp.is_some_and(|millis| millis > 0));
            offsets.push(record.offset);
        }
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "{offsets:?}"
        );
        assert_eq!(received[20].record.key, None);
        assert_eq!(received[20].record.value.as_deref(), Some("no key"));
        assert!(received[20].record.headers.is_empty());
        assert_eq!(received[21].record.value.as_deref(), Some("second call"));
    }

    #[actix_rt::test]
    async fn undeclared_topics_are_refused_and_nothing_is_sent() {
        let plugin = unique_plugin();
        let gateway = gateway(&plugin, &["events"]);
        let sent = gateway
            .send(SendKafkaMessages {
                topic: "payments".to_string(),
                messages: vec![plain("x")],
                producer_id: Some("p".to_string()),
            })
            .await
            .unwrap();
        assert_topic_denied(sent, "payments", &["events"]);
        // The physical name of a granted topic is not a name the plugin may write either.
        let physical = format!("{plugin}_events");
        let sent = gateway
            .send(SendKafkaMessages {
                topic: physical.clone(),
                messages: vec![plain("x")],
                producer_id: None,
            })
            .await
            .unwrap();
        assert_topic_denied(sent, &physical, &["events"]);

        let (plugin_actor, _received) = recorder(None);
        gateway
            .send(CreateConsumer {
                consumer_id: "reader".to_string(),
                group_id: "g1".to_string(),
                deliver_to: plugin_actor.recipient(),
                generation: 1,
            })
            .await
            .unwrap()
            .expect("consumer created");
        let subscribed = gateway
            .send(SubscribeConsumer {
                consumer_id: "reader".to_string(),
                topics: vec!["events".to_string(), "payments".to_string()],
            })
            .await
            .unwrap();
        assert_topic_denied(subscribed, "payments", &["events"]);
        let consumer = gateway
            .send(CreateConsumer {
                consumer_id: "other".to_string(),
                group_id: "Bad Group".to_string(),
                deliver_to: recorder(None).0.recipient(),
                generation: 1,
            })
            .await
            .unwrap();
        assert!(
            matches!(consumer, Err(Error::InvalidName { .. })),
            "{consumer:?}"
        );
        let unknown = gateway
            .send(SubscribeConsumer {
                consumer_id: "never-created".to_string(),
                topics: vec!["events".to_string()],
            })
            .await
            .unwrap();
        assert!(
            matches!(&unknown, Err(Error::Backend { service, .. }) if service == "kafka"),
            "{unknown:?}"
        );
    }

    #[actix_rt::test]
    async fn a_disconnected_consumer_receives_nothing_more() {
        let plugin = unique_plugin();
        let gateway = gateway(&plugin, &["events"]);
        gateway.send(EnsureTopics).await.unwrap().expect("topics");
        let (first_actor, first) = recorder(None);
        consume(&gateway, "first", "g1", &["events"], &first_actor).await;
        send(&gateway, "events", vec![plain("before")]).await;
        wait_until("the first consumer got a message", || {
            values(&first) == ["before"]
        })
        .await;
        wait_for_group_members(&plugin, "g1", 1).await;

        gateway
            .send(DisconnectConsumer {
                consumer_id: "first".to_string(),
            })
            .await
            .unwrap()
            .expect("disconnected");
        wait_for_group_members(&plugin, "g1", 0).await;
        gateway
            .send(DisconnectConsumer {
                consumer_id: "first".to_string(),
            })
            .await
            .unwrap()
            .expect("disconnecting an unknown consumer is fine");
        send(&gateway, "events", vec![plain("after")]).await;

        // A consumer in another group reads the topic from the start; once it has seen the
        // later message, the disconnected one would have too, had it still been running.
        let (second_actor, second) = recorder(None);
        consume(&gateway, "second", "g2", &["events"], &second_actor).await;
        wait_until("the second consumer got both messages", || {
            values(&second) == ["before", "after"]
        })
        .await;
        assert_eq!(values(&first), ["before"]);
    }

    #[actix_rt::test]
    async fn failed_handlers_still_commit_and_replaced_consumers_stop() {
        let plugin = unique_plugin();
        let gateway = gateway(&plugin, &["events"]);
        gateway.send(EnsureTopics).await.unwrap().expect("topics");
        let (replaced_actor, replaced) = recorder(None);
        consume(&gateway, "reader", "g1", &["events"], &replaced_actor).await;
        send(&gateway, "events", vec![plain("early")]).await;
        wait_until("the first consumer got a message", || {
            values(&replaced) == ["early"]
        })
        .await;
        // (The broker lists a group once it has committed offsets.)
        wait_for_group_members(&plugin, "g1", 1).await;
        // The same id again replaces the first consumer, which leaves the group and delivers
        // nothing more.
        let (failing_actor, failing) = recorder(Some("poison"));
        consume(&gateway, "reader", "g1", &["events"], &failing_actor).await;
        send(&gateway, "events", vec![plain("fine"), plain("poison")]).await;
        wait_until("both messages were handed over", || {
            values(&failing) == ["fine", "poison"]
        })
        .await;
        wait_for_group_members(&plugin, "g1", 1).await;
        assert_eq!(values(&replaced), ["early"]);
        gateway
            .send(DisconnectAllConsumers)
            .await
            .expect("all consumers stopped");

        // A new consumer in the same group starts after the committed offsets: neither the
        // failed message nor the one after it comes again.
        send(&gateway, "events", vec![plain("marker")]).await;
        let (next_actor, next) = recorder(None);
        consume(&gateway, "reader", "g1", &["events"], &next_actor).await;
        wait_until("the marker arrived", || {
            values(&next).contains(&"marker".to_string())
        })
        .await;
        assert_eq!(values(&next), ["marker"]);
    }

    #[actix_rt::test]
    async fn a_stopped_gateway_leaves_no_consumer_behind() {
        let plugin = unique_plugin();
        let grants = topic_grants(&plugin, &["events"]);
        let first_gateway =
            KafkaGateway::new(plugin.clone(), grants.clone(), backend(None)).start();
        first_gateway
            .send(EnsureTopics)
            .await
            .unwrap()
            .expect("topics");
        let (first_actor, first) = recorder(None);
        consume(&first_gateway, "reader", "g1", &["events"], &first_actor).await;
        send(&first_gateway, "events", vec![plain("before")]).await;
        wait_until("the consumer got a message", || {
            values(&first) == ["before"]
        })
        .await;
        wait_for_group_members(&plugin, "g1", 1).await;

        // The plugin drops its gateway, which stops once its mailbox is empty; its consumer
        // leaves the group.
        drop(first_gateway);
        wait_for_group_members(&plugin, "g1", 0).await;
        let second_gateway = KafkaGateway::new(plugin, grants, backend(None)).start();
        send(&second_gateway, "events", vec![plain("after")]).await;
        let (second_actor, second) = recorder(None);
        consume(&second_gateway, "other", "g2", &["events"], &second_actor).await;
        wait_until("the other group got both messages", || {
            values(&second) == ["before", "after"]
        })
        .await;
        assert_eq!(values(&first), ["before"]);
    }
}
