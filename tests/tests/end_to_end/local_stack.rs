//! The local stack's durable Kafka: Tansu on SQLite storage, as `infra/up.sh` starts it by
//! default, keeps topics and messages across a broker that is killed and started again. The test
//! runs a Tansu of its own, on its own port and database file, so the stack that the other tests
//! use (on memory storage under `just test`) is never restarted under them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use warden_tests::{wait_until, PATIENCE};

/// The broker `infra/up.sh` installs: on `PATH`, else cargo's bin directory.
fn tansu_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
        cargo_home.join("bin").join("tansu")
    })
}

/// One Tansu broker on `address`, storing in `tansu.db` of a directory, as `infra/up.sh` runs it
/// by default.
struct Broker {
    child: Child,
}

impl Broker {
    /// Tansu reads a `sqlite://` path relative to its working directory, as `up.sh` runs it.
    fn start(address: &str, directory: &Path) -> Broker {
        let child = Command::new(tansu_binary())
            .current_dir(directory)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{address}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{address}"))
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts: run `just infra-up` to install it");
        Broker { child }
    }

    /// SIGKILL: what a crash or a power cut leaves is what the next broker finds.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// More than one, so that a topic the broker made up on the fly would not pass for it.
const PARTITIONS: i32 = 3;

fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn client_config(address: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", address)
        .set("message.timeout.ms", "10000");
    config
}

/// Every message of partition 0 of `topic` from the beginning, once `expected` are there.
async fn read_all(address: &str, topic: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = client_config(address)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut read = Vec::new();
    let complete = wait_until(PATIENCE, || {
        while let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let payload = message.payload().unwrap_or_default();
            read.push(String::from_utf8_lossy(payload).into_owned());
        }
        let done = read.len() >= expected;
        async move { done }
    })
    .await;
    assert!(complete, "read {} of {expected} messages", read.len());
    read
}

#[actix_rt::test]
async fn the_local_kafka_keeps_topics_and_messages_across_a_killed_broker() {
    let directory = tempfile::tempdir().unwrap();
    let address = free_address();
    let topic = "durability-check";
    let sent: Vec<String> = (0..50).map(|index| format!("message {index}")).collect();

    let broker = Broker::start(&address, directory.path());
    let admin: AdminClient<DefaultClientContext> = client_config(&address).create().unwrap();
    let created = wait_until(PATIENCE, || {
        let admin = &admin;
        async move {
            let new_topic = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
            let outcome = admin
                .create_topics(&[new_topic], &AdminOptions::new())
                .await;
            matches!(outcome.as_deref(), Ok([Ok(_)]))
        }
    })
    .await;
    assert!(created, "the topic is created on the fresh broker");
    let producer: FutureProducer = client_config(&address).create().unwrap();
    for text in &sent {
        producer
            .send(
                FutureRecord::<(), _>::to(topic).partition(0).payload(text),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    drop(producer);
    assert_eq!(read_all(&address, topic, sent.len()).await, sent);
    broker.kill();
    assert!(
        directory.path().join("tansu.db").is_file(),
        "the broker stored its file"
    );

    let _broker = Broker::start(&address, directory.path());
    let metadata_admin: AdminClient<DefaultClientContext> =
        client_config(&address).create().unwrap();
    let topic_is_back = wait_until(PATIENCE, || {
        let found = metadata_admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(2))
            .is_ok_and(|metadata| {
                metadata.topics().iter().any(|listed| {
                    listed.name() == topic && listed.partitions().len() == PARTITIONS as usize
                })
            });
        async move { found }
    })
    .await;
    assert!(topic_is_back, "the topic survives the broker");
    assert_eq!(
        read_all(&address, topic, sent.len()).await,
        sent,
        "every message survives the broker, in order"
    );
}
