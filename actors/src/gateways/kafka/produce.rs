//! `sendMessage`: every message of a call checked and enqueued in order, bounded per call.

use super::*;

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
pub(super) fn check_send_size(messages: &[KafkaOutgoing]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(value: &str) -> KafkaOutgoing {
        KafkaOutgoing {
            key: None,
            value: value.to_string(),
            headers: Vec::new(),
        }
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
}
