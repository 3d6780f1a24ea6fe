//! The requests a plugin's engine leaves for the host: capability operations, parsed from the
//! prelude's payloads and started on the plugin's context.

use std::time::Duration;

use serde_json::{json, Value};

use crate::plugin::{CallTarget, KafkaOutgoing, PluginContext, PluginFuture, SqlStatement};
use crate::transactions::TransactionOptions;
use crate::{Error, Result};

/// Something the engine asked the host to do once control returns to it.
pub(crate) enum HostRequest {
    /// A call into the plugin finished.
    Complete { call_id: u64, result: Result<Value> },
    /// The plugin started an asynchronous host operation; settle `operation_id` with its result.
    Operation {
        operation_id: u64,
        operation: HostOperation,
    },
    /// `setTimeout`/`setInterval` armed timer `timer_id`; a repeating one fires every `delay`
    /// until it is cleared.
    StartTimer {
        timer_id: u64,
        delay: Duration,
        repeat: bool,
    },
    /// `clearTimeout` cancelled timer `timer_id`.
    ClearTimer { timer_id: u64 },
    /// A listener or timer callback threw.
    ListenerFailed { event: String, error: Error },
    /// The plugin's code caught a fault that leaves the engine unusable (heap exhaustion).
    Fault(Error),
}

/// An asynchronous operation a plugin asked its context for.
pub(crate) enum HostOperation {
    CallDependency {
        dependency: String,
        target: CallTarget,
        arguments: Vec<Value>,
    },
    DatabaseQuery(SqlStatement),
    DatabaseCommand(SqlStatement),
    DatabaseBegin(TransactionOptions),
    DatabaseEnd {
        transaction: u64,
        commit: bool,
    },
    KafkaSend {
        topic: String,
        messages: Vec<KafkaOutgoing>,
        producer_id: Option<String>,
    },
    KafkaCreateConsumer {
        consumer_id: String,
        group_id: String,
    },
    KafkaSubscribe {
        consumer_id: String,
        topics: Vec<String>,
    },
    KafkaDisconnect {
        consumer_id: String,
    },
    Ksql {
        statement: String,
    },
    S3Upload {
        key: String,
        body: Vec<u8>,
        content_type: String,
        bucket: String,
    },
    S3Download {
        key: String,
        bucket: String,
    },
    S3Delete {
        key: String,
        bucket: String,
    },
    S3Exists {
        key: String,
        bucket: String,
    },
    S3List {
        prefix: String,
        bucket: String,
    },
    S3Presign {
        key: String,
        expires_in_seconds: u32,
        bucket: String,
    },
}

fn text(payload: &Value, field: &str) -> String {
    payload[field].as_str().unwrap_or_default().to_string()
}

fn strings(payload: &Value, field: &str) -> Vec<String> {
    payload[field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn values(payload: &Value, field: &str) -> Vec<Value> {
    payload[field].as_array().cloned().unwrap_or_default()
}

fn sql_statement(payload: &Value) -> SqlStatement {
    SqlStatement {
        sql: text(payload, "sql"),
        parameters: values(payload, "params"),
        transaction: transaction_id(payload),
    }
}

fn transaction_id(payload: &Value) -> Option<u64> {
    payload["transaction"].as_u64()
}

impl HostOperation {
    /// Reads an operation from the prelude's `(kind, payload)`.
    pub(crate) fn parse(kind: &str, payload: &Value) -> Result<Self> {
        // Dependency calls come through `callDependency`, which checks their size before parsing.
        let operation = match kind {
            "db.query" => HostOperation::DatabaseQuery(sql_statement(payload)),
            "db.command" => HostOperation::DatabaseCommand(sql_statement(payload)),
            "db.begin" => {
                HostOperation::DatabaseBegin(TransactionOptions::from_json(&payload["options"])?)
            }
            "db.commit" | "db.rollback" => HostOperation::DatabaseEnd {
                transaction: transaction_id(payload).ok_or_else(|| Error::TransactionClosed {
                    reason: "the transaction id is not one Warden gave".into(),
                })?,
                commit: kind == "db.commit",
            },
            "kafka.send" => HostOperation::KafkaSend {
                topic: text(payload, "topic"),
                messages: payload["messages"]
                    .as_array()
                    .map(|messages| {
                        messages
                            .iter()
                            .map(|message| KafkaOutgoing {
                                key: message["key"].as_str().map(str::to_string),
                                value: text(message, "value"),
                                headers: message["headers"]
                                    .as_object()
                                    .map(|headers| {
                                        headers
                                            .iter()
                                            .map(|(name, value)| {
                                                let value = value.as_str().map_or_else(
                                                    || value.to_string(),
                                                    str::to_string,
                                                );
                                                (name.clone(), value)
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                producer_id: payload["producerId"].as_str().map(str::to_string),
            },
            "kafka.createConsumer" => HostOperation::KafkaCreateConsumer {
                consumer_id: text(payload, "consumerId"),
                group_id: text(payload, "groupId"),
            },
            "kafka.subscribe" => HostOperation::KafkaSubscribe {
                consumer_id: text(payload, "consumerId"),
                topics: strings(payload, "topics"),
            },
            "kafka.disconnect" => HostOperation::KafkaDisconnect {
                consumer_id: text(payload, "consumerId"),
            },
            "kafka.ksql" => HostOperation::Ksql {
                statement: text(payload, "statement"),
            },
            "s3.upload" => {
                let body = match (payload["text"].as_str(), payload["base64"].as_str()) {
                    (Some(text), _) => text.as_bytes().to_vec(),
                    (None, Some(encoded)) => {
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                            .map_err(|error| Error::InvalidValue {
                                reason: format!("body is not base64: {error}"),
                            })?
                    }
                    (None, None) => Vec::new(),
                };
                HostOperation::S3Upload {
                    key: text(payload, "key"),
                    body,
                    content_type: text(payload, "contentType"),
                    bucket: text(payload, "bucket"),
                }
            }
            "s3.download" => HostOperation::S3Download {
                key: text(payload, "key"),
                bucket: text(payload, "bucket"),
            },
            "s3.delete" => HostOperation::S3Delete {
                key: text(payload, "key"),
                bucket: text(payload, "bucket"),
            },
            "s3.exists" => HostOperation::S3Exists {
                key: text(payload, "key"),
                bucket: text(payload, "bucket"),
            },
            "s3.list" => HostOperation::S3List {
                prefix: text(payload, "prefix"),
                bucket: text(payload, "bucket"),
            },
            "s3.presign" => {
                let seconds = payload["expiresInSeconds"].as_f64().unwrap_or(0.0);
                if !(1.0..=604_800.0).contains(&seconds) {
                    return Err(Error::InvalidValue {
                        reason: "expiresInSeconds must be between 1 and 604800 (7 days)".into(),
                    });
                }
                HostOperation::S3Presign {
                    key: text(payload, "key"),
                    expires_in_seconds: seconds as u32,
                    bucket: text(payload, "bucket"),
                }
            }
            other => {
                return Err(Error::InvalidValue {
                    reason: format!("unknown host operation '{other}'"),
                })
            }
        };
        Ok(operation)
    }

    /// Starts the operation through the plugin's context; resolves to the JSON the prelude
    /// settles its promise with.
    pub(crate) fn start(self, context: &PluginContext) -> PluginFuture<Value> {
        fn absent(capability: &str) -> PluginFuture<Value> {
            let error = Error::Capability {
                name: "CapabilityUnavailableError".into(),
                message: format!("context.{capability} is not configured"),
            };
            Box::pin(async move { Err(error) })
        }
        fn to_json<T: Into<Value> + 'static>(future: PluginFuture<T>) -> PluginFuture<Value> {
            Box::pin(async move { future.await.map(Into::into) })
        }
        fn to_null(future: PluginFuture<()>) -> PluginFuture<Value> {
            Box::pin(async move { future.await.map(|()| Value::Null) })
        }
        match self {
            HostOperation::CallDependency {
                dependency,
                target,
                arguments,
            } => context.dependencies.call(&dependency, target, arguments),
            HostOperation::DatabaseQuery(statement) => match &context.database {
                Some(database) => to_json(database.execute_query(statement)),
                None => absent("database"),
            },
            HostOperation::DatabaseCommand(statement) => match &context.database {
                Some(database) => to_json(database.execute_command(statement)),
                None => absent("database"),
            },
            HostOperation::DatabaseBegin(options) => match &context.database {
                Some(database) => to_json(database.begin_transaction(options)),
                None => absent("database"),
            },
            HostOperation::DatabaseEnd {
                transaction,
                commit,
            } => match &context.database {
                Some(database) => to_null(database.end_transaction(transaction, commit)),
                None => absent("database"),
            },
            HostOperation::KafkaSend {
                topic,
                messages,
                producer_id,
            } => match &context.kafka {
                Some(kafka) => to_null(kafka.send_messages(&topic, messages, producer_id)),
                None => absent("kafka"),
            },
            HostOperation::KafkaCreateConsumer {
                consumer_id,
                group_id,
            } => match &context.kafka {
                Some(kafka) => to_null(kafka.create_consumer(&consumer_id, &group_id)),
                None => absent("kafka"),
            },
            HostOperation::KafkaSubscribe {
                consumer_id,
                topics,
            } => match &context.kafka {
                Some(kafka) => to_null(kafka.subscribe(&consumer_id, topics)),
                None => absent("kafka"),
            },
            HostOperation::KafkaDisconnect { consumer_id } => match &context.kafka {
                Some(kafka) => to_null(kafka.disconnect_consumer(&consumer_id)),
                None => absent("kafka"),
            },
            HostOperation::Ksql { statement } => match &context.kafka {
                Some(kafka) => kafka.execute_ksql(&statement),
                None => absent("kafka"),
            },
            HostOperation::S3Upload {
                key,
                body,
                content_type,
                bucket,
            } => match &context.storage {
                Some(storage) => to_null(storage.upload(&key, body, &content_type, &bucket)),
                None => absent("s3"),
            },
            HostOperation::S3Download { key, bucket } => match &context.storage {
                Some(storage) => {
                    let download = storage.download(&key, &bucket);
                    Box::pin(async move {
                        let bytes = download.await?;
                        Ok(json!({
                            "base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes),
                            "text": String::from_utf8_lossy(&bytes),
                        }))
                    })
                }
                None => absent("s3"),
            },
            HostOperation::S3Delete { key, bucket } => match &context.storage {
                Some(storage) => to_null(storage.delete(&key, &bucket)),
                None => absent("s3"),
            },
            HostOperation::S3Exists { key, bucket } => match &context.storage {
                Some(storage) => to_json(storage.exists(&key, &bucket)),
                None => absent("s3"),
            },
            HostOperation::S3List { prefix, bucket } => match &context.storage {
                Some(storage) => to_json(storage.list(&prefix, &bucket)),
                None => absent("s3"),
            },
            HostOperation::S3Presign {
                key,
                expires_in_seconds,
                bucket,
            } => match &context.storage {
                Some(storage) => to_json(storage.presigned_url(&key, expires_in_seconds, &bucket)),
                None => absent("s3"),
            },
        }
    }
}
