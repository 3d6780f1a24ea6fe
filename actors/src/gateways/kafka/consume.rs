//! The plugin's consumers: prefixed groups, granted topics, and delivery tasks that commit
//! after `eachMessage`.

use super::*;

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

/// One consumer of the plugin and its delivery task.
pub(super) struct PluginConsumer {
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
    pub(super) fn stop(self) -> impl Future<Output = ()> + 'static {
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
