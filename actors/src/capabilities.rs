//! The capabilities of a plugin's context, implemented as messages to the actors that own them.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Recipient, WeakAddr};
use futures::FutureExt as _;
use serde_json::Value;
use warden_runtime::events::{validate_event_name, EventPattern, ListenerReach};
use warden_runtime::manifest::DependencySpec;
use warden_runtime::transactions::TransactionOptions;
use warden_runtime::{
    CallTarget, Database, Dependencies, DependencyInfo, Error, Event, Events, HostLimit, Kafka,
    KafkaOutgoing, PluginFuture, Result, SqlStatement, Storage, Supervision,
};

use crate::broker::{
    held_bytes, DeliverEvents, EmitterBacklog, EventBroker, PublishEvent, Subscribe, SubscriberKey,
    Unsubscribe,
};
use crate::directory::PluginDirectory;
use crate::gateways::database::{
    BeginTransaction, DatabaseGateway, EndTransaction, ExecuteSql, Expect, SqlOutcome,
};
use crate::gateways::kafka::{
    ConsumeKafkaMessage, CreateConsumer, DisconnectConsumer, ExecuteKsql, KafkaGateway,
    SendKafkaMessages, SubscribeConsumer,
};
use crate::gateways::storage::{StorageGateway, StorageOperation, StorageOutcome, StorageRequest};
use crate::plugin_actor::{CallPlugin, InstanceFailed, PluginActor};

/// Whether the instance a capability belongs to is still the live one; cleared on dispose and
/// restart, after which every call fails with `PluginUnloadedError`.
#[derive(Clone)]
pub(crate) struct Liveness {
    pub plugin: String,
    pub alive: Rc<Cell<bool>>,
}

impl Liveness {
    fn check(&self) -> Result<()> {
        if self.alive.get() {
            Ok(())
        } else {
            Err(Error::PluginUnloaded {
                plugin: self.plugin.clone(),
            })
        }
    }
}

/// `context.eventBus`: messages to the event broker.
pub(crate) struct BrokerEvents {
    pub liveness: Liveness,
    pub subscriber: SubscriberKey,
    pub broker: Addr<EventBroker>,
    pub deliver_to: Recipient<DeliverEvents>,
    pub queue: Arc<AtomicUsize>,
    pub max_message_bytes: usize,
    /// The plugin's emitted events not yet delivered to every listener.
    pub backlog: Arc<EmitterBacklog>,
}

impl Events for BrokerEvents {
    fn emit(&self, event: &str, data: Value) -> Result<()> {
        self.liveness.check()?;
        validate_event_name(event)?;
        let event = Event::new(event, self.subscriber.plugin.clone(), data);
        // The event is serialized once for its listeners anyway, so every plugin kind's emits
        // are measured here at no extra cost (JavaScript ones were measured before parsing too).
        check_event_size(&event, self.max_message_bytes)?;
        if !self.backlog.charge(held_bytes(&event)) {
            let error = Error::EventBacklogFull {
                plugin: event.source.clone(),
                budget_bytes: self.backlog.byte_budget(),
            };
            count_limit_refusal(&event.source, HostLimit::EventBacklog, 1);
            tracing::warn!(plugin = %event.source, limit = HostLimit::EventBacklog.as_str(), "{error}");
            return Err(error);
        }
        self.broker.do_send(PublishEvent {
            event,
            emitter: Some(self.backlog.clone()),
        });
        Ok(())
    }

    fn subscribe(&self, pattern: &EventPattern, reach: ListenerReach) -> Result<()> {
        self.liveness.check()?;
        self.broker.do_send(Subscribe {
            subscriber: self.subscriber.clone(),
            pattern: pattern.clone(),
            reach,
            deliver_to: self.deliver_to.clone(),
            queue: self.queue.clone(),
        });
        Ok(())
    }

    fn unsubscribe(&self, pattern: &EventPattern, reach: ListenerReach) -> Result<()> {
        self.liveness.check()?;
        self.broker.do_send(Unsubscribe {
            subscriber: self.subscriber.clone(),
            pattern: pattern.clone(),
            reach,
        });
        Ok(())
    }
}

/// `context.getDependency`: calls through the directory, so a handle follows its dependency
/// across restarts and reloads.
pub(crate) struct DirectoryDependencies {
    pub liveness: Liveness,
    pub declared: Vec<DependencySpec>,
    pub directory: PluginDirectory,
}

impl DirectoryDependencies {
    fn check_declared(&self, dependency: &str) -> Result<()> {
        self.liveness.check()?;
        if self.declared.iter().any(|spec| spec.name == dependency) {
            Ok(())
        } else {
            Err(Error::UndeclaredDependency {
                plugin: self.liveness.plugin.clone(),
                dependency: dependency.to_string(),
            })
        }
    }
}

impl Dependencies for DirectoryDependencies {
    fn declared(&self) -> Vec<String> {
        self.declared.iter().map(|spec| spec.name.clone()).collect()
    }

    fn describe(&self, dependency: &str) -> Result<DependencyInfo> {
        self.check_declared(dependency)?;
        let entry = self
            .directory
            .get(dependency)
            .ok_or_else(|| Error::DependencyNotFound {
                plugin: self.liveness.plugin.clone(),
                dependency: dependency.to_string(),
            })?;
        Ok(DependencyInfo {
            manifest: entry.description.manifest,
            exports: entry.description.exports,
        })
    }

    fn call(
        &self,
        dependency: &str,
        target: CallTarget,
        arguments: Vec<Value>,
    ) -> PluginFuture<Value> {
        if let Err(error) = self.check_declared(dependency) {
            return futures::future::ready(Err(error)).boxed_local();
        }
        // Only the address: a call need not copy the dependency's whole description.
        let Some(address) = self
            .directory
            .read_entry(dependency, |entry| entry.address.clone())
        else {
            let error = Error::DependencyNotFound {
                plugin: self.liveness.plugin.clone(),
                dependency: dependency.to_string(),
            };
            return futures::future::ready(Err(error)).boxed_local();
        };
        let dependency = dependency.to_string();
        // `send` queues the message now, so calls reach the dependency in the order they were made.
        let request = address.send(CallPlugin { target, arguments });
        async move {
            match request.await {
                Ok(result) => result,
                Err(_) => Err(Error::Unavailable {
                    plugin: dependency,
                    state: "stopped".into(),
                }),
            }
        }
        .boxed_local()
    }
}

/// Refuses an event whose serialized `data` is over `max_message_bytes`, counted and logged
/// for its source.
pub(crate) fn check_event_size(event: &Event, max_message_bytes: usize) -> Result<()> {
    if event.data_json.len() <= max_message_bytes {
        return Ok(());
    }
    let error = Error::MessageTooLarge {
        plugin: event.source.clone(),
        what: "event data".into(),
        bytes: event.data_json.len(),
        limit: max_message_bytes,
    };
    count_limit_refusal(&event.source, HostLimit::MessageBytes, 1);
    tracing::warn!(plugin = %event.source, limit = HostLimit::MessageBytes.as_str(), "{error}");
    Err(error)
}

/// `warden_host_limit_refusals_total{plugin, limit}`.
fn count_limit_refusal(plugin: &str, limit: HostLimit, refusals: u64) {
    metrics::counter!(
        "warden_host_limit_refusals_total",
        "plugin" => plugin.to_string(),
        "limit" => limit.as_str()
    )
    .increment(refusals);
}

/// Faults go to the plugin's own actor (weakly held, so a context never keeps an actor alive);
/// listener errors and host-limit refusals are logged and counted.
pub(crate) struct ActorSupervision {
    pub plugin: String,
    pub generation: u64,
    pub actor: WeakAddr<PluginActor>,
    /// When each limit's refusal was last logged: one line per limit per second, so a plugin
    /// that catches its refusals and retries in a loop cannot flood the log through them.
    pub last_refusal_warnings: Cell<[Option<Instant>; HostLimit::ALL.len()]>,
}

impl Supervision for ActorSupervision {
    fn instance_failed(&self, error: Error) {
        if let Some(actor) = self.actor.upgrade() {
            actor.do_send(InstanceFailed {
                generation: self.generation,
                error,
            });
        }
    }

    fn listener_failed(&self, event: &str, error: &Error) {
        metrics::counter!("warden_listener_errors_total", "plugin" => self.plugin.clone())
            .increment(1);
        tracing::warn!(plugin = %self.plugin, event, error = %error, name = error.js_name(), "listener threw");
    }

    fn limit_refused(&self, limit: HostLimit, refusals: u64, detail: &str) {
        count_limit_refusal(&self.plugin, limit, refusals);
        let now = Instant::now();
        let mut last_warnings = self.last_refusal_warnings.get();
        let last = &mut last_warnings[limit.index()];
        // The dropped-log summary is already one line per window and is always written.
        let due = limit == HostLimit::LogBytes
            || last
                .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1));
        if due {
            *last = Some(now);
            self.last_refusal_warnings.set(last_warnings);
            tracing::warn!(plugin = %self.plugin, limit = limit.as_str(), refusals, "{detail}");
        }
    }
}

fn gateway_gone(plugin: &str) -> Error {
    Error::Unavailable {
        plugin: plugin.to_string(),
        state: "stopping".into(),
    }
}

fn refused<T: 'static>(error: Error) -> PluginFuture<T> {
    Box::pin(futures::future::ready(Err(error)))
}

/// `context.database`: messages to the plugin's database gateway.
pub(crate) struct GatewayDatabase {
    pub liveness: Liveness,
    pub gateway: Addr<DatabaseGateway>,
    pub allowed: Vec<String>,
}

impl GatewayDatabase {
    fn request<M>(&self, message: M) -> PluginFuture<M::Result>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        DatabaseGateway: actix::Handler<M>,
    {
        let request = self.gateway.send(message);
        let plugin = self.liveness.plugin.clone();
        Box::pin(async move { request.await.map_err(|_| gateway_gone(&plugin)) })
    }

    fn execute(&self, statement: SqlStatement, expect: Expect) -> PluginFuture<SqlOutcome> {
        if let Err(error) = self.liveness.check() {
            return refused(error);
        }
        let request = self.request(ExecuteSql {
            sql: statement.sql,
            parameters: statement.parameters,
            expect,
            transaction: statement.transaction,
        });
        Box::pin(async move { request.await? })
    }
}

impl Database for GatewayDatabase {
    fn execute_query(&self, statement: SqlStatement) -> PluginFuture<Vec<Value>> {
        let outcome = self.execute(statement, Expect::Rows);
        Box::pin(async move {
            match outcome.await? {
                SqlOutcome::Rows(rows) => Ok(rows),
                SqlOutcome::Affected(_) => Ok(Vec::new()),
            }
        })
    }

    fn execute_command(&self, statement: SqlStatement) -> PluginFuture<u64> {
        let outcome = self.execute(statement, Expect::Affected);
        Box::pin(async move {
            match outcome.await? {
                SqlOutcome::Affected(count) => Ok(count),
                SqlOutcome::Rows(rows) => Ok(rows.len() as u64),
            }
        })
    }

    fn begin_transaction(&self, options: TransactionOptions) -> PluginFuture<u64> {
        if let Err(error) = self.liveness.check() {
            return refused(error);
        }
        let request = self.request(BeginTransaction { options });
        Box::pin(async move { request.await? })
    }

    fn end_transaction(&self, transaction: u64, commit: bool) -> PluginFuture<()> {
        // No liveness check: a plugin being unloaded still ends what it began (and if it does
        // not, the gateway rolls it back).
        let request = self.request(EndTransaction {
            transaction,
            commit,
        });
        Box::pin(async move { request.await? })
    }

    fn allowed_tables(&self) -> Vec<String> {
        self.allowed.clone()
    }
}

/// `context.kafka`: messages to the plugin's Kafka gateway; consumed messages come back to the
/// plugin's own actor.
pub(crate) struct GatewayKafka {
    pub liveness: Liveness,
    pub gateway: Addr<KafkaGateway>,
    pub allowed: Vec<String>,
    pub deliver_to: Recipient<ConsumeKafkaMessage>,
    pub generation: u64,
}

impl GatewayKafka {
    fn request<M>(&self, message: M) -> PluginFuture<M::Result>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        KafkaGateway: actix::Handler<M>,
    {
        if let Err(error) = self.liveness.check() {
            return refused(error);
        }
        let request = self.gateway.send(message);
        let plugin = self.liveness.plugin.clone();
        Box::pin(async move { request.await.map_err(|_| gateway_gone(&plugin)) })
    }
}

fn flatten_unit(future: PluginFuture<Result<()>>) -> PluginFuture<()> {
    Box::pin(async move { future.await? })
}

impl Kafka for GatewayKafka {
    fn send_messages(
        &self,
        topic: &str,
        messages: Vec<KafkaOutgoing>,
        producer_id: Option<String>,
    ) -> PluginFuture<()> {
        flatten_unit(self.request(SendKafkaMessages {
            topic: topic.to_string(),
            messages,
            producer_id,
        }))
    }

    fn create_consumer(&self, consumer_id: &str, group_id: &str) -> PluginFuture<()> {
        flatten_unit(self.request(CreateConsumer {
            consumer_id: consumer_id.to_string(),
            group_id: group_id.to_string(),
            deliver_to: self.deliver_to.clone(),
            generation: self.generation,
        }))
    }

    fn subscribe(&self, consumer_id: &str, topics: Vec<String>) -> PluginFuture<()> {
        flatten_unit(self.request(SubscribeConsumer {
            consumer_id: consumer_id.to_string(),
            topics,
        }))
    }

    fn disconnect_consumer(&self, consumer_id: &str) -> PluginFuture<()> {
        flatten_unit(self.request(DisconnectConsumer {
            consumer_id: consumer_id.to_string(),
        }))
    }

    fn execute_ksql(&self, statement: &str) -> PluginFuture<Value> {
        let request = self.request(ExecuteKsql {
            statement: statement.to_string(),
        });
        Box::pin(async move { request.await? })
    }

    fn allowed_topics(&self) -> Vec<String> {
        self.allowed.clone()
    }
}

/// `context.s3`: messages to the plugin's S3 gateway.
pub(crate) struct GatewayStorage {
    pub liveness: Liveness,
    pub gateway: Addr<StorageGateway>,
    pub allowed: Vec<String>,
}

impl GatewayStorage {
    fn request(&self, bucket: &str, operation: StorageOperation) -> PluginFuture<StorageOutcome> {
        if let Err(error) = self.liveness.check() {
            return refused(error);
        }
        let request = self.gateway.send(StorageRequest {
            bucket: bucket.to_string(),
            operation,
        });
        let plugin = self.liveness.plugin.clone();
        Box::pin(async move { request.await.map_err(|_| gateway_gone(&plugin))? })
    }
}

fn unexpected(outcome: StorageOutcome) -> Error {
    Error::Backend {
        service: "s3".into(),
        message: format!("unexpected answer {outcome:?}"),
    }
}

impl Storage for GatewayStorage {
    fn upload(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        bucket: &str,
    ) -> PluginFuture<()> {
        let outcome = self.request(
            bucket,
            StorageOperation::Upload {
                key: key.to_string(),
                body,
                content_type: content_type.to_string(),
            },
        );
        Box::pin(async move { outcome.await.map(|_| ()) })
    }

    fn download(&self, key: &str, bucket: &str) -> PluginFuture<Vec<u8>> {
        let outcome = self.request(
            bucket,
            StorageOperation::Download {
                key: key.to_string(),
            },
        );
        Box::pin(async move {
            match outcome.await? {
                StorageOutcome::Bytes(bytes) => Ok(bytes),
                other => Err(unexpected(other)),
            }
        })
    }

    fn delete(&self, key: &str, bucket: &str) -> PluginFuture<()> {
        let outcome = self.request(
            bucket,
            StorageOperation::Delete {
                key: key.to_string(),
            },
        );
        Box::pin(async move { outcome.await.map(|_| ()) })
    }

    fn exists(&self, key: &str, bucket: &str) -> PluginFuture<bool> {
        let outcome = self.request(
            bucket,
            StorageOperation::Exists {
                key: key.to_string(),
            },
        );
        Box::pin(async move {
            match outcome.await? {
                StorageOutcome::Exists(exists) => Ok(exists),
                other => Err(unexpected(other)),
            }
        })
    }

    fn list(&self, prefix: &str, bucket: &str) -> PluginFuture<Vec<String>> {
        let outcome = self.request(
            bucket,
            StorageOperation::List {
                prefix: prefix.to_string(),
            },
        );
        Box::pin(async move {
            match outcome.await? {
                StorageOutcome::Keys(keys) => Ok(keys),
                other => Err(unexpected(other)),
            }
        })
    }

    fn presigned_url(
        &self,
        key: &str,
        expires_in_seconds: u32,
        bucket: &str,
    ) -> PluginFuture<String> {
        let outcome = self.request(
            bucket,
            StorageOperation::Presign {
                key: key.to_string(),
                expires_in_seconds,
            },
        );
        Box::pin(async move {
            match outcome.await? {
                StorageOutcome::Url(url) => Ok(url),
                other => Err(unexpected(other)),
            }
        })
    }

    fn allowed_buckets(&self) -> Vec<String> {
        self.allowed.clone()
    }
}
