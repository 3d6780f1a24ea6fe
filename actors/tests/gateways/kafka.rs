//! Kafka gateway tests against the real Tansu of the local stack.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::Producer;
use warden_actors::gateways::kafka::*;
use warden_runtime::resources::{consumer_group_name, physical_name, ResourceGrants, ResourceKind};
use warden_runtime::{Error, KafkaOutgoing, Result};

use super::support::{kafka_brokers as brokers, unique_name};

/// Waits for a condition with a deadline: consumer groups need a few seconds to form.
const WAIT_DEADLINE: Duration = Duration::from_secs(60);

/// A plugin name no other test (or earlier run against the same broker) uses.
fn unique_plugin() -> String {
    unique_name("kafka_test")
}

fn topic_grants(plugin: &str, topics: &[&str]) -> ResourceGrants {
    let topics: Vec<String> = topics.iter().map(|topic| topic.to_string()).collect();
    ResourceGrants::resolve(plugin, &[], &topics, &[], None).expect("valid grants")
}

/// A backend whose topics have one partition: Kafka orders a partition, and these tests check
/// the order of whole topics (the default of three is checked on its own).
fn backend(ksqldb_url: Option<String>) -> KafkaBackend {
    KafkaBackend::connect(&brokers(), ksqldb_url)
        .expect("kafka backend")
        .with_topic_partitions(1)
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

/// Partitions of the topics of the tests that read a group's membership.
const PROBED_PARTITIONS: usize = 2;

/// Waits until the plugin's consumer group holds no consumer of the plugin any more, as the
/// broker assigns partitions: a probe that joins the group and subscribes to `topic`
/// (of [`PROBED_PARTITIONS`] partitions) is given them all only while it is the group's one
/// member. A consumer that still runs keeps its share for good (it heartbeats), so the wait
/// fails. Membership is read from an assignment because Tansu on SQLite storage cannot
/// describe groups (it drops the connection on `DescribeGroups`).
async fn wait_until_the_group_is_left(plugin: &str, group: &str, topic: &str) {
    let group = consumer_group_name(plugin, group).expect("group name");
    let topic = physical_name(ResourceKind::Topic, plugin, topic).expect("topic name");
    let probe: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("probe consumer");
    probe.subscribe(&[&topic]).expect("probe subscribes");
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        // Polling is what lets the probe join and take its assignment; what it reads stays
        // uncommitted.
        let _ = tokio::time::timeout(Duration::from_millis(100), probe.recv()).await;
        let assigned = probe.assignment().map(|list| list.count()).unwrap_or(0);
        if assigned == PROBED_PARTITIONS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "another member still holds partitions of {topic} in group {group}"
        );
    }
    // Closing the probe leaves the group before the test goes on.
    tokio::task::spawn_blocking(move || drop(probe))
        .await
        .expect("probe closed");
}

/// A backend whose topics have [`PROBED_PARTITIONS`] partitions, for the tests that read a
/// group's membership; their messages share one key, so one partition keeps their order.
fn probed_backend() -> KafkaBackend {
    KafkaBackend::connect(&brokers(), None)
        .expect("kafka backend")
        .with_topic_partitions(PROBED_PARTITIONS as u32)
}

fn keyed(value: &str) -> KafkaOutgoing {
    KafkaOutgoing {
        key: Some("one-partition".to_string()),
        ..plain(value)
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
            .max_consumers_per_plugin(),
        1
    );
    assert_eq!(
        backend(None).max_consumers_per_plugin(),
        DEFAULT_MAX_CONSUMERS_PER_PLUGIN
    );
    gateway.send(DisconnectAllConsumers).await.unwrap();
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
    let producer = kafka.producer().clone();
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
async fn declared_topics_are_made_with_the_default_partitions() {
    let plugin = unique_plugin();
    let defaults = KafkaBackend::connect(&brokers(), None).expect("kafka backend");
    let gateway =
        KafkaGateway::new(plugin.clone(), topic_grants(&plugin, &["spread"]), defaults).start();
    gateway.send(EnsureTopics).await.unwrap().expect("topics");
    let producer = backend(None).producer().clone();
    let topic = format!("{plugin}_spread");
    let partitions = tokio::task::spawn_blocking(move || {
        let metadata = producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .expect("metadata");
        metadata
            .topics()
            .first()
            .map_or(0, |topic| topic.partitions().len())
    })
    .await
    .unwrap();
    assert_eq!(
        partitions, DEFAULT_TOPIC_PARTITIONS as usize,
        "the contract's default"
    );
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
    let grants = topic_grants(&plugin, &["events"]);
    let gateway = KafkaGateway::new(plugin.clone(), grants, probed_backend()).start();
    gateway.send(EnsureTopics).await.unwrap().expect("topics");
    let (first_actor, first) = recorder(None);
    consume(&gateway, "first", "g1", &["events"], &first_actor).await;
    send(&gateway, "events", vec![keyed("before")]).await;
    wait_until("the first consumer got a message", || {
        values(&first) == ["before"]
    })
    .await;

    gateway
        .send(DisconnectConsumer {
            consumer_id: "first".to_string(),
        })
        .await
        .unwrap()
        .expect("disconnected");
    wait_until_the_group_is_left(&plugin, "g1", "events").await;
    gateway
        .send(DisconnectConsumer {
            consumer_id: "first".to_string(),
        })
        .await
        .unwrap()
        .expect("disconnecting an unknown consumer is fine");
    send(&gateway, "events", vec![keyed("after")]).await;

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
    // The same id again replaces the first consumer, which leaves the group and delivers
    // nothing more.
    let (failing_actor, failing) = recorder(Some("poison"));
    consume(&gateway, "reader", "g1", &["events"], &failing_actor).await;
    send(&gateway, "events", vec![plain("fine"), plain("poison")]).await;
    wait_until("both messages were handed over", || {
        values(&failing) == ["fine", "poison"]
    })
    .await;
    // Had the first consumer stayed in the group, it would hold the one partition or
    // share it: the new one got both messages, so the first one got nothing more.
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
    let first_gateway = KafkaGateway::new(plugin.clone(), grants.clone(), probed_backend()).start();
    first_gateway
        .send(EnsureTopics)
        .await
        .unwrap()
        .expect("topics");
    let (first_actor, first) = recorder(None);
    consume(&first_gateway, "reader", "g1", &["events"], &first_actor).await;
    send(&first_gateway, "events", vec![keyed("before")]).await;
    wait_until("the consumer got a message", || {
        values(&first) == ["before"]
    })
    .await;

    // The plugin drops its gateway, which stops once its mailbox is empty; its consumer
    // leaves the group.
    drop(first_gateway);
    wait_until_the_group_is_left(&plugin, "g1", "events").await;
    let second_gateway = KafkaGateway::new(plugin, grants, probed_backend()).start();
    send(&second_gateway, "events", vec![keyed("after")]).await;
    let (second_actor, second) = recorder(None);
    consume(&second_gateway, "other", "g2", &["events"], &second_actor).await;
    wait_until("the other group got both messages", || {
        values(&second) == ["before", "after"]
    })
    .await;
    assert_eq!(values(&first), ["before"]);
}
