//! Events across nodes (`PLUGIN_API.md`, "Events in a cluster"), through one Kafka topic per
//! cluster, `warden.<cluster>.events`.
//!
//! - **Out**: the broker hands every event a plugin or the operator emits on this node to the
//!   [`KafkaEventRelay`], which produces it keyed by its source (one emitter's events share a
//!   partition, so they keep their order) with its name in a header and its data as the value.
//!   The emitter's backlog is released when Kafka has it, so a slow broker holds the emitter's
//!   calls, as slow listeners do on one node.
//! - **Once per plugin**: every node reads the topic in the cluster's one consumer group, so each
//!   partition is read by one node, which hands each event to every local listener plugin (every
//!   node runs every plugin). An event's offset is stored when its last local holder lets it go
//!   (its [`DeliveryReceipt`]: every listener has handled it) and the contiguous stored offsets
//!   are committed every 100 ms: a node that dies had its unhandled events redelivered by the
//!   node its partitions move to (at least once).
//! - **Every node**: each node also reads every partition itself, from the end and with no group
//!   and no commits, for `everyNode` listeners and the event streams (SSE), so a stream shows
//!   every event of the cluster once.
//!
//! Warden's own `plugin:*` events never enter the topic: each node emits its own, locally.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use warden_runtime::events::{validate_event_name, DeliveryReceipt, ListenerReach};
use warden_runtime::Event;

use crate::broker::{
    held_bytes, EmitterBacklog, EventBroker, EventRelay, EveryNodeInterest, PublishReceived,
};
use crate::gateways::kafka::{
    CONSUMER_CLOSE_TIMEOUT, CONSUMER_SESSION_TIMEOUT_MS, RECEIVE_ERROR_BACKOFF,
};
use crate::gateways::KafkaBackend;

/// The header that carries the event's name; the message key is its source.
const EVENT_NAME_HEADER: &str = "warden-event";

/// How long the relay keeps trying to hand an event to Kafka before it gives up on it: long,
/// because the emitter's calls wait for it anyway (its backlog) and an event given up is lost.
const RELAY_TIMEOUT_MS: &str = "30000";

/// How long the producer gathers events into one request: short, for cross-node latency.
const RELAY_LINGER_MS: &str = "1";

/// How many events may wait in the relay's queue: a burst of one call (100,000 events, say)
/// fits, and the emitters' backlogs bound what waits in all.
const RELAY_QUEUE_MESSAGES: &str = "1000000";

/// How long a fetch waits at the broker for new events: the floor of an idle node's latency.
const FETCH_WAIT_MS: &str = "5";

/// How often the group's stored offsets are committed.
const COMMIT_INTERVAL_MS: &str = "100";

/// The bound of the metadata request that finds the topic's partitions.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster's event topic, shared by every node's relay and readers.
#[derive(Clone)]
pub struct ClusterEventTopic {
    node: String,
    /// The topic's name, which is also the cluster's group id.
    topic: String,
    brokers: String,
    producer: Arc<ThreadedProducer<RelayContext>>,
    /// Events a reader may have handed to the broker and not yet seen leave its log.
    window: usize,
}

impl ClusterEventTopic {
    /// The topic of `cluster`, created with the configured partitions if it does not exist, for
    /// node `node`; each reader hands at most `window` events to the broker at once.
    pub async fn open(
        kafka: &KafkaBackend,
        cluster: &str,
        node: &str,
        window: usize,
    ) -> Result<Self, String> {
        // Cluster names follow the plugin naming rules, so they hold no `.`, and no plugin's
        // topic or group (`<plugin>_<name>`, `warden` reserved) can be this one.
        let topic = format!("warden.{cluster}.events");
        kafka
            .create_topics(std::slice::from_ref(&topic))
            .await
            .map_err(|error| format!("cannot create the cluster's event topic: {error}"))?;
        // One request in flight keeps one emitter's events in order through retries (see the
        // gateway's producer for why not idempotence).
        let producer: ThreadedProducer<RelayContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka.brokers())
            .set("message.timeout.ms", RELAY_TIMEOUT_MS)
            .set("linger.ms", RELAY_LINGER_MS)
            .set("queue.buffering.max.messages", RELAY_QUEUE_MESSAGES)
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "1")
            .create_with_context(RelayContext)
            .map_err(|error| format!("cannot create the cluster's event producer: {error}"))?;
        Ok(ClusterEventTopic {
            node: node.to_string(),
            topic,
            brokers: kafka.brokers().to_string(),
            producer: Arc::new(producer),
            window: window.max(1),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Where the broker sends the events emitted on this node.
    pub fn relay(&self) -> KafkaEventRelay {
        KafkaEventRelay {
            topic: self.topic.clone(),
            producer: Arc::clone(&self.producer),
        }
    }

    /// Starts reading every partition from its end for `everyNode` listeners and the streams.
    pub fn start_every_node_reader(
        &self,
        broker: Addr<EventBroker>,
        interest: EveryNodeInterest,
    ) -> ClusterEventReader {
        let topic = self.clone();
        ClusterEventReader::start(move |stopping| topic.read_every_node(broker, interest, stopping))
    }

    /// Starts reading this node's share of the partitions, in the cluster's group, for the
    /// once-per-plugin listeners. Started once the node runs the cluster's plugins, so that no
    /// event is handled (and committed) here before its listeners exist.
    pub fn start_group_reader(&self, broker: Addr<EventBroker>) -> ClusterEventReader {
        let topic = self.clone();
        let (joined, joined_receiver) = watch::channel(false);
        let mut reader = ClusterEventReader::start(move |stopping| {
            topic.read_in_group(broker, GroupContext { joined }, stopping)
        });
        reader.joined = Some(joined_receiver);
        reader
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", COMMIT_INTERVAL_MS)
            // Offsets are stored by hand, once an event is handled here.
            .set("enable.auto.offset.store", "false")
            // A new cluster's group starts at the beginning, so the events its first nodes
            // emitted before the group formed are not lost.
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", CONSUMER_SESSION_TIMEOUT_MS)
            .set("fetch.wait.max.ms", FETCH_WAIT_MS);
        config
    }

    async fn read_every_node(
        self,
        broker: Addr<EventBroker>,
        interest: EveryNodeInterest,
        stopping: Arc<Notify>,
    ) {
        // The group id is this node's own and nothing is committed under it; `assign` takes
        // every partition without joining a group.
        let Ok(consumer) = self
            .consumer_config(&format!("{}.{}", self.topic, self.node))
            .create::<StreamConsumer>()
            .inspect_err(|error| tracing::error!(%error, "cannot read the cluster's events"))
        else {
            return;
        };
        let consumer = Arc::new(consumer);
        let Some(assignment) = self
            .every_partition_from_the_end(&consumer, &stopping)
            .await
        else {
            return;
        };
        if let Err(error) = consumer.assign(&assignment) {
            tracing::error!(%error, "cannot read the cluster's events");
            return;
        }
        let backlog = Arc::new(EmitterBacklog::new(usize::MAX, self.window));
        loop {
            let message = tokio::select! {
                biased;
                _ = stopping.notified() => break,
                _ = backlog.wait_until_drained(), if backlog.holds_calls() => continue,
                message = consumer.recv(), if !backlog.holds_calls() => message,
            };
            let Some(message) = received(message).await else {
                continue;
            };
            if !interest.any() {
                continue;
            }
            if let Some(event) = event_of(&message, ListenerReach::EveryNode, None) {
                deliver(&broker, &backlog, event);
            }
        }
        close(consumer).await;
    }

    async fn every_partition_from_the_end(
        &self,
        consumer: &Arc<StreamConsumer>,
        stopping: &Notify,
    ) -> Option<TopicPartitionList> {
        loop {
            let client = Arc::clone(consumer);
            let topic = self.topic.clone();
            // librdkafka's metadata request blocks its caller.
            let partitions = tokio::task::spawn_blocking(move || {
                client
                    .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                    .map(|metadata| {
                        metadata
                            .topics()
                            .iter()
                            .flat_map(|topic| topic.partitions().iter().map(|p| p.id()))
                            .collect::<Vec<i32>>()
                    })
            })
            .await;
            match partitions {
                Ok(Ok(partitions)) if !partitions.is_empty() => {
                    let mut assignment = TopicPartitionList::new();
                    for partition in partitions {
                        if let Err(error) =
                            assignment.add_partition_offset(&self.topic, partition, Offset::End)
                        {
                            tracing::error!(%error, "cannot read the cluster's events");
                            return None;
                        }
                    }
                    return Some(assignment);
                }
                outcome => {
                    tracing::warn!(?outcome, "the cluster's event topic has no partitions yet");
                }
            }
            tokio::select! {
                _ = stopping.notified() => return None,
                _ = tokio::time::sleep(RECEIVE_ERROR_BACKOFF) => {}
            }
        }
    }

    async fn read_in_group(
        self,
        broker: Addr<EventBroker>,
        context: GroupContext,
        stopping: Arc<Notify>,
    ) {
        let Ok(consumer) = self
            .consumer_config(&self.topic)
            .create_with_context::<_, StreamConsumer<GroupContext>>(context)
            .inspect_err(|error| tracing::error!(%error, "cannot read the cluster's events"))
        else {
            return;
        };
        if let Err(error) = consumer.subscribe(&[&self.topic]) {
            tracing::error!(%error, "cannot read the cluster's events");
            return;
        }
        let consumer = Arc::new(consumer);
        let backlog = Arc::new(EmitterBacklog::new(usize::MAX, self.window));
        let (handled_sender, mut handled) = mpsc::unbounded_channel::<HandledEvent>();
        let mut offsets = HandledOffsets::default();
        loop {
            let message = tokio::select! {
                biased;
                _ = stopping.notified() => break,
                Some(event) = handled.recv() => {
                    // Every receipt waiting is taken at once, and each partition's offset is
                    // stored once for them all.
                    let mut moved = HashMap::new();
                    let mut next_event = Some(event);
                    while let Some(event) = next_event {
                        if let Some(offset) = offsets.handled(event) {
                            moved.insert(event.partition, offset);
                        }
                        next_event = handled.try_recv().ok();
                    }
                    for (partition, offset) in moved {
                        // A partition that moved to another node refuses; it reads from what
                        // was committed before.
                        let _ = consumer.store_offset(&self.topic, partition, offset);
                    }
                    continue;
                }
                _ = backlog.wait_until_drained(), if backlog.holds_calls() => continue,
                message = consumer.recv(), if !backlog.holds_calls() => message,
            };
            let Some(message) = received(message).await else {
                continue;
            };
            let position = offsets.received(message.partition(), message.offset());
            let sender = handled_sender.clone();
            let receipt = DeliveryReceipt::new(move || {
                let _ = sender.send(position);
            });
            match event_of(&message, ListenerReach::OncePerPlugin, Some(receipt)) {
                Some(event) => deliver(&broker, &backlog, event),
                // The receipt was dropped with the message it came with: marked handled.
                None => continue,
            }
        }
        close(consumer).await;
    }
}

/// Hands one received event to the broker, counted in the reader's backlog.
fn deliver(broker: &Addr<EventBroker>, backlog: &Arc<EmitterBacklog>, event: Arc<Event>) {
    backlog.charge(held_bytes(&event));
    let reach = match event.reach {
        Some(ListenerReach::EveryNode) => "everyNode",
        _ => "once",
    };
    metrics::counter!("warden_cluster_events_received_total", "reach" => reach).increment(1);
    broker.do_send(PublishReceived {
        event,
        backlog: Arc::clone(backlog),
    });
}

/// The message read, or `None` after logging the error and a pause (a broker that is down
/// must not make the reader spin).
async fn received<M>(outcome: Result<M, rdkafka::error::KafkaError>) -> Option<M> {
    match outcome {
        Ok(message) => Some(message),
        Err(error) => {
            tracing::warn!(%error, "cannot read the cluster's events");
            tokio::time::sleep(RECEIVE_ERROR_BACKOFF).await;
            None
        }
    }
}

/// Tells the node when the group first gave it its share of the partitions.
struct GroupContext {
    joined: watch::Sender<bool>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.joined.send_replace(true);
        }
    }
}

/// Closes a consumer: librdkafka commits what is stored and leaves the group, which blocks.
async fn close<C: ConsumerContext + 'static>(consumer: Arc<StreamConsumer<C>>) {
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(CONSUMER_CLOSE_TIMEOUT, closing)
        .await
        .is_err()
    {
        tracing::warn!("the cluster's event reader took too long to leave its group");
    }
}

/// The event a message of the topic carries, or `None` (logged and counted) for a message that
/// is not one: no name header, no key, or data that is not JSON.
fn event_of(
    message: &BorrowedMessage<'_>,
    reach: ListenerReach,
    receipt: Option<DeliveryReceipt>,
) -> Option<Arc<Event>> {
    let name = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key == EVENT_NAME_HEADER)
            .and_then(|header| text(header.value))
    });
    let source = text(message.key());
    let data_json = text(message.payload());
    let parsed = match (name, source, data_json) {
        (Some(name), Some(source), Some(data_json)) if !source.is_empty() => {
            validate_event_name(name).ok().and_then(|()| {
                serde_json::from_str(data_json)
                    .ok()
                    .map(|data| (name, source, data, data_json))
            })
        }
        _ => None,
    };
    let Some((name, source, data, data_json)) = parsed else {
        tracing::warn!(
            partition = message.partition(),
            offset = message.offset(),
            "a message of the cluster's event topic is not an event; skipped"
        );
        metrics::counter!("warden_cluster_events_invalid_total").increment(1);
        return None;
    };
    Some(Arc::new(Event {
        name: name.to_string(),
        source: source.to_string(),
        data,
        data_json: data_json.to_string(),
        reach: Some(reach),
        receipt,
    }))
}

fn text(bytes: Option<&[u8]>) -> Option<&str> {
    bytes.and_then(|bytes| std::str::from_utf8(bytes).ok())
}

/// Sends the events emitted on this node to the cluster's topic.
pub struct KafkaEventRelay {
    topic: String,
    producer: Arc<ThreadedProducer<RelayContext>>,
}

/// An event on its way to Kafka, with the backlog its delivery report releases.
struct RelayedEvent {
    event: Arc<Event>,
    emitter: Option<Arc<EmitterBacklog>>,
}

impl RelayedEvent {
    /// Counts the outcome and releases the emitter of the event.
    fn settle(self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => metrics::counter!("warden_cluster_events_sent_total").increment(1),
            Err(error) => {
                tracing::error!(
                    source = %self.event.source,
                    event = %self.event.name,
                    %error,
                    "an event could not be sent to the cluster; it is lost"
                );
                metrics::counter!(
                    "warden_cluster_events_unsent_total",
                    "plugin" => self.event.source.clone()
                )
                .increment(1);
            }
        }
        if let Some(emitter) = &self.emitter {
            emitter.release(held_bytes(&self.event));
        }
    }
}

/// Settles each relayed event in librdkafka's delivery report, on the producer's own thread:
/// no task per event.
struct RelayContext;

impl ClientContext for RelayContext {}

impl ProducerContext for RelayContext {
    type DeliveryOpaque = Box<RelayedEvent>;

    fn delivery(&self, result: &DeliveryResult<'_>, relayed: Self::DeliveryOpaque) {
        relayed.settle(match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.to_string()),
        });
    }
}

impl EventRelay for KafkaEventRelay {
    fn relay(&self, event: Arc<Event>, emitter: Option<Arc<EmitterBacklog>>) {
        let relayed = Box::new(RelayedEvent {
            event: Arc::clone(&event),
            emitter,
        });
        let record = BaseRecord::with_opaque_to(&self.topic, relayed)
            .key(&event.source)
            .payload(&event.data_json)
            .headers(OwnedHeaders::new().insert(Header {
                key: EVENT_NAME_HEADER,
                value: Some(&event.name),
            }));
        if let Err((error, record)) = self.producer.send(record) {
            record.delivery_opaque.settle(Err(error.to_string()));
        }
    }
}

/// A reader's task and the signal that stops it.
pub struct ClusterEventReader {
    stopping: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// For the group's reader: whether the group has given this node its share yet.
    joined: Option<watch::Receiver<bool>>,
}

impl ClusterEventReader {
    fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(Arc<Notify>) -> Fut,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let stopping = Arc::new(Notify::new());
        let task = actix::spawn(run(Arc::clone(&stopping)));
        ClusterEventReader {
            stopping,
            task: Mutex::new(Some(task)),
            joined: None,
        }
    }

    /// Waits until the group has given this node its share of the partitions (the first
    /// rebalance after it joined), at most `patience`; answers whether it has.
    pub async fn joined(&self, patience: Duration) -> bool {
        let Some(mut joined) = self.joined.clone() else {
            return true;
        };
        tokio::time::timeout(patience, joined.wait_for(|joined| *joined))
            .await
            .is_ok_and(|outcome| outcome.is_ok())
    }

    /// Stops reading: what was handled is committed, the group is left (its partitions move to
    /// the other nodes), and what was received but not handled is read again there.
    pub async fn stop(&self) {
        self.stopping.notify_one();
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// One received event's place: its partition, the partition's assignment it was read in, and
/// its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HandledEvent {
    partition: i32,
    session: u64,
    offset: i64,
}

/// The received events of each partition not yet handled, in offset order, so that only the
/// offset below which every event is handled is stored.
#[derive(Default)]
struct HandledOffsets {
    partitions: HashMap<i32, PartitionOffsets>,
    sessions: u64,
}

#[derive(Default)]
struct PartitionOffsets {
    session: u64,
    /// Offset and whether it is handled, ascending.
    waiting: VecDeque<(i64, bool)>,
}

impl HandledOffsets {
    /// Notes a received event. An offset at or below the last one received means the partition
    /// was assigned again (read again from its commit): what waited from before is forgotten.
    fn received(&mut self, partition: i32, offset: i64) -> HandledEvent {
        let sessions = &mut self.sessions;
        let entry = self.partitions.entry(partition).or_insert_with(|| {
            *sessions += 1;
            PartitionOffsets {
                session: *sessions,
                waiting: VecDeque::new(),
            }
        });
        if entry
            .waiting
            .back()
            .is_some_and(|(last, _)| *last >= offset)
        {
            *sessions += 1;
            entry.session = *sessions;
            entry.waiting.clear();
        }
        entry.waiting.push_back((offset, false));
        HandledEvent {
            partition,
            session: entry.session,
            offset,
        }
    }

    /// Marks an event handled; answers the offset of the last event of its partition below
    /// which all are handled, when that moved.
    fn handled(&mut self, event: HandledEvent) -> Option<i64> {
        let entry = self.partitions.get_mut(&event.partition)?;
        if entry.session != event.session {
            return None;
        }
        let index = entry
            .waiting
            .binary_search_by_key(&event.offset, |(offset, _)| *offset)
            .ok()?;
        entry.waiting[index].1 = true;
        let mut last_handled = None;
        while let Some((offset, true)) = entry.waiting.front().copied() {
            last_handled = Some(offset);
            entry.waiting.pop_front();
        }
        last_handled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_offset_below_which_every_event_is_handled_moves() {
        let mut offsets = HandledOffsets::default();
        let first = offsets.received(0, 10);
        let second = offsets.received(0, 11);
        let third = offsets.received(0, 12);
        assert_eq!(offsets.handled(second), None, "10 is not handled yet");
        assert_eq!(offsets.handled(first), Some(11), "10 and 11 are");
        assert_eq!(offsets.handled(third), Some(12));
        assert_eq!(
            offsets.handled(third),
            None,
            "a second receipt moves nothing"
        );
    }

    #[test]
    fn partitions_are_counted_apart() {
        let mut offsets = HandledOffsets::default();
        let zero = offsets.received(0, 5);
        let one = offsets.received(1, 5);
        assert_eq!(offsets.handled(one), Some(5));
        assert_eq!(offsets.handled(zero), Some(5));
    }

    #[test]
    fn a_partition_read_again_forgets_what_waited_from_before() {
        let mut offsets = HandledOffsets::default();
        let old = offsets.received(0, 7);
        let _ = offsets.received(0, 8);
        // Assigned again, read from the last commit.
        let again = offsets.received(0, 7);
        assert_eq!(
            offsets.handled(old),
            None,
            "the earlier reading's receipt does not mark the new one"
        );
        assert_eq!(offsets.handled(again), Some(7));
    }

    #[test]
    fn a_receipt_runs_once_when_the_event_is_let_go() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let event = Arc::new(Event {
            name: "a:b".into(),
            source: "emitter".into(),
            data: serde_json::Value::Null,
            data_json: "null".into(),
            reach: Some(ListenerReach::OncePerPlugin),
            receipt: Some(DeliveryReceipt::new(move || {
                let _ = sender.send(());
            })),
        });
        let held_by_a_listener = Arc::clone(&event);
        drop(event);
        assert!(receiver.try_recv().is_err(), "a listener still holds it");
        drop(held_by_a_listener);
        assert!(receiver.try_recv().is_ok());
        assert!(receiver.try_recv().is_err(), "once");
    }
}
