//! The native functions a plugin's engine calls, and the requests they leave for the host.
//!
//! Native functions never re-enter the engine and never await: they answer at once from the
//! plugin's context (emit, subscribe, describe a dependency) or leave a [`HostRequest`] in the
//! outbox, which the plugin wrapper handles after the engine returns.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::{Ctx, Function, Object};
use serde_json::{json, Value};

use super::limits::{LogBudget, TimerBook};
use crate::events::EventPattern;
use crate::manifest::PluginManifest;
use crate::plugin::{
    CallTarget, HostLimit, KafkaOutgoing, PluginContext, PluginFuture, PluginLimits,
    HOST_ONLY_FUNCTIONS,
};
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
    DatabaseQuery {
        sql: String,
        parameters: Vec<Value>,
    },
    DatabaseCommand {
        sql: String,
        parameters: Vec<Value>,
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

impl HostOperation {
    /// Reads an operation from the prelude's `(kind, payload)`.
    fn parse(kind: &str, payload: &Value) -> Result<Self> {
        // Dependency calls come through `callDependency`, which checks their size before parsing.
        let operation = match kind {
            "db.query" => HostOperation::DatabaseQuery {
                sql: text(payload, "sql"),
                parameters: values(payload, "params"),
            },
            "db.command" => HostOperation::DatabaseCommand {
                sql: text(payload, "sql"),
                parameters: values(payload, "params"),
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
            HostOperation::DatabaseQuery { sql, parameters } => match &context.database {
                Some(database) => to_json(database.execute_query(&sql, parameters)),
                None => absent("database"),
            },
            HostOperation::DatabaseCommand { sql, parameters } => match &context.database {
                Some(database) => to_json(database.execute_command(&sql, parameters)),
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

/// State shared between the engine's native functions and the plugin wrapper.
pub(crate) struct HostShared {
    /// The plugin's name once its metadata is known (the file name before that).
    pub plugin: RefCell<String>,
    /// Requests left by native functions during the current entry into the engine.
    pub outbox: RefCell<Vec<HostRequest>>,
    /// The context given to `initialize`; `None` before it and after dispose.
    pub context: RefCell<Option<PluginContext>>,
    /// The heap, message, log and timer limits.
    pub limits: PluginLimits,
    /// Log output written in the current one-second window.
    pub log_budget: RefCell<LogBudget>,
    /// Pending timers, counted against the limit.
    pub timers: RefCell<TimerBook>,
    /// When a refusal was last logged without a context (during module evaluation), so a
    /// top-level loop of refused requests cannot flood the log either.
    last_uncounted_warning: Cell<Option<Instant>>,
}

impl HostShared {
    pub(crate) fn new(plugin: String, limits: PluginLimits) -> Rc<Self> {
        Rc::new(HostShared {
            plugin: RefCell::new(plugin),
            outbox: RefCell::new(Vec::new()),
            context: RefCell::new(None),
            limits,
            log_budget: RefCell::new(LogBudget::new(limits.log_bytes_per_second)),
            timers: RefCell::new(TimerBook::new(limits.max_timers)),
            last_uncounted_warning: Cell::new(None),
        })
    }

    /// Turns the prelude's `{name, message}` JSON into an error; heap exhaustion that the
    /// plugin's code caught is still fatal, since QuickJS may be unusable after it.
    fn plugin_error(&self, payload: &str) -> Error {
        let plugin = self.plugin.borrow().clone();
        let error = error_from_json(&plugin, payload);
        if matches!(&error, Error::Execution { message, .. } if message == "out of memory") {
            let exhausted = Error::HeapExhausted {
                plugin,
                limit_mb: self.limits.memory_limit_mb,
            };
            self.push(HostRequest::Fault(exhausted.clone()));
            return exhausted;
        }
        error
    }

    fn push(&self, request: HostRequest) {
        self.outbox.borrow_mut().push(request);
    }

    fn context(&self) -> Result<PluginContext> {
        self.context
            .borrow()
            .clone()
            .ok_or_else(|| Error::PluginUnloaded {
                plugin: self.plugin.borrow().clone(),
            })
    }

    /// Reports refusals at a host limit: through the context, which counts and logs them, or,
    /// before `initialize` gave one, to the log at most once a second.
    pub(crate) fn limit_refused(&self, limit: HostLimit, refusals: u64, detail: &str) {
        let context = self.context.borrow().clone();
        if let Some(context) = context {
            context.supervision.limit_refused(limit, refusals, detail);
            return;
        }
        let now = Instant::now();
        if self
            .last_uncounted_warning
            .get()
            .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1))
        {
            self.last_uncounted_warning.set(Some(now));
            let plugin = self.plugin.borrow();
            tracing::warn!(plugin = %plugin, limit = limit.as_str(), refusals, "{detail}");
        }
    }

    /// Refuses (and reports) a message over the size limit.
    pub(crate) fn check_message_size(&self, what: &str, bytes: usize) -> Result<()> {
        let plugin = self.plugin.borrow().clone();
        self.limits
            .check_message_size(&plugin, what, bytes)
            .inspect_err(|error| self.limit_refused(HostLimit::MessageBytes, 1, &error.to_string()))
    }

    /// Whether a log line of `bytes` fits this second's budget; reports what the previous
    /// window dropped when this line opens a new one.
    fn admit_log(&self, bytes: usize) -> bool {
        let (write, dropped) = self
            .log_budget
            .borrow_mut()
            .admit(bytes as u64, Instant::now());
        if let Some(dropped) = dropped {
            self.report_dropped_log(dropped);
        }
        write
    }

    /// Reports what the current log window dropped so far (at dispose, when no later line
    /// will open a new window).
    pub(crate) fn flush_dropped_log(&self) {
        let dropped = self.log_budget.borrow_mut().take_dropped();
        if let Some(dropped) = dropped {
            self.report_dropped_log(dropped);
        }
    }

    fn report_dropped_log(&self, dropped: super::limits::DroppedLog) {
        let limit = self.log_budget.borrow().bytes_per_second();
        self.limit_refused(
            HostLimit::LogBytes,
            dropped.lines,
            &format!(
                "dropped {} bytes of log output ({} lines) over the limit of {limit} bytes per second (WARDEN_PLUGIN_LOG_BYTES_PER_S)",
                dropped.bytes, dropped.lines
            ),
        );
    }

    /// Refuses (and reports) a dependency call that asks for a host-only lifecycle function.
    pub(crate) fn check_dependency_target(
        &self,
        dependency: &str,
        target: &CallTarget,
    ) -> Result<()> {
        match target {
            CallTarget::Method(method) if HOST_ONLY_FUNCTIONS.contains(&method.as_str()) => {
                let error = Error::MethodNotAllowed {
                    plugin: dependency.to_string(),
                    method: method.clone(),
                };
                self.limit_refused(HostLimit::HostOnlyFunction, 1, &error.to_string());
                Err(error)
            }
            _ => Ok(()),
        }
    }
}

/// The `{name, message}` JSON the prelude turns back into a JavaScript error.
pub(crate) fn error_json(error: &Error) -> String {
    json!({ "name": error.js_name(), "message": error.to_string() }).to_string()
}

/// Turns the prelude's `{name, message}` JSON into a host error, keeping the JavaScript name.
pub(crate) fn error_from_json(plugin: &str, payload: &str) -> Error {
    let parsed: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let name = parsed["name"].as_str().unwrap_or("Error").to_string();
    let message = parsed["message"].as_str().unwrap_or(payload).to_string();
    match name.as_str() {
        "NotExecutableError" => Error::NotExecutable {
            plugin: plugin.to_string(),
        },
        _ => Error::Execution { name, message },
    }
}

/// A manifest in the shape plugins declare it (`metadata`), as dependency handles show it.
pub(crate) fn metadata_json(manifest: &PluginManifest) -> Value {
    json!({
        "name": manifest.name,
        "version": manifest.version.to_string(),
        "description": manifest.description,
        "dependencies": manifest.dependencies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "allowedTables": manifest.allowed_tables,
        "allowedTopics": manifest.allowed_topics,
        "allowedBuckets": manifest.allowed_buckets,
    })
}

fn refusal(result: Result<()>) -> Option<String> {
    result.err().map(|error| error_json(&error))
}

/// Installs the native functions on the object handed to the prelude.
pub(crate) fn install_natives<'js>(
    ctx: &Ctx<'js>,
    natives: &Object<'js>,
    host: &Rc<HostShared>,
) -> rquickjs::Result<()> {
    natives.set("pluginName", host.plugin.borrow().clone())?;

    let shared = host.clone();
    natives.set(
        "log",
        Function::new(ctx.clone(), move |level: String, text: String| {
            // Over the budget, the line is dropped; console.* never throws.
            if !shared.admit_log(text.len()) {
                return;
            }
            let plugin = shared.plugin.borrow();
            match level.as_str() {
                "error" => tracing::error!(plugin = %plugin, "{text}"),
                "warn" => tracing::warn!(plugin = %plugin, "{text}"),
                "debug" => tracing::debug!(plugin = %plugin, "{text}"),
                _ => tracing::info!(plugin = %plugin, "{text}"),
            }
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "complete",
        Function::new(
            ctx.clone(),
            move |call_id: f64, ok: bool, payload: String| {
                let result = if ok {
                    serde_json::from_str(&payload).map_err(|error| Error::InvalidValue {
                        reason: error.to_string(),
                    })
                } else {
                    Err(shared.plugin_error(&payload))
                };
                shared.push(HostRequest::Complete {
                    call_id: call_id as u64,
                    result,
                });
            },
        )?,
    )?;

    let shared = host.clone();
    natives.set(
        "emit",
        Function::new(ctx.clone(), move |event: String, data: String| {
            refusal((|| {
                // Measured on the text before it is parsed, so a refused event costs no more.
                shared.check_message_size("event data", data.len())?;
                let data = serde_json::from_str(&data).map_err(|error| Error::InvalidValue {
                    reason: error.to_string(),
                })?;
                shared.context()?.events.emit(&event, data)
            })())
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "subscribe",
        Function::new(ctx.clone(), move |pattern: String| {
            refusal((|| {
                let pattern = EventPattern::parse(&pattern)?;
                shared.context()?.events.subscribe(&pattern)
            })())
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "unsubscribe",
        Function::new(ctx.clone(), move |pattern: String| {
            if let (Ok(pattern), Ok(context)) = (EventPattern::parse(&pattern), shared.context()) {
                // The pattern was accepted when the listener was added, so this cannot refuse.
                let _ = context.events.unsubscribe(&pattern);
            }
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "describeDependency",
        Function::new(ctx.clone(), move |name: String| {
            let described = shared
                .context()
                .and_then(|context| context.dependencies.describe(&name));
            match described {
                Ok(info) => json!({
                    "metadata": metadata_json(&info.manifest),
                    "exports": info.exports,
                })
                .to_string(),
                Err(error) => format!("{{\"error\":{}}}", error_json(&error)),
            }
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "declaredDependencies",
        Function::new(ctx.clone(), move || {
            let declared = shared
                .context()
                .map(|context| context.dependencies.declared())
                .unwrap_or_default();
            Value::from(declared).to_string()
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "startOperation",
        Function::new(
            ctx.clone(),
            move |operation_id: f64, kind: String, payload: String| {
                refusal((|| {
                    shared.context()?;
                    let payload: Value =
                        serde_json::from_str(&payload).map_err(|error| Error::InvalidValue {
                            reason: error.to_string(),
                        })?;
                    let operation = HostOperation::parse(&kind, &payload)?;
                    shared.push(HostRequest::Operation {
                        operation_id: operation_id as u64,
                        operation,
                    });
                    Ok(())
                })())
            },
        )?,
    )?;

    let shared = host.clone();
    natives.set(
        "callDependency",
        Function::new(
            ctx.clone(),
            move |operation_id: f64,
                  dependency: String,
                  method: Option<String>,
                  arguments: String| {
                refusal((|| {
                    shared.context()?;
                    let target = match method {
                        Some(method) => CallTarget::Method(method),
                        None => CallTarget::Execute,
                    };
                    shared.check_dependency_target(&dependency, &target)?;
                    shared.check_message_size("call arguments", arguments.len())?;
                    let arguments: Vec<Value> =
                        serde_json::from_str(&arguments).map_err(|error| Error::InvalidValue {
                            reason: error.to_string(),
                        })?;
                    shared.push(HostRequest::Operation {
                        operation_id: operation_id as u64,
                        operation: HostOperation::CallDependency {
                            dependency,
                            target,
                            arguments,
                        },
                    });
                    Ok(())
                })())
            },
        )?,
    )?;

    let shared = host.clone();
    natives.set(
        "capabilities",
        Function::new(ctx.clone(), move || {
            let context = shared.context.borrow();
            let context = context.as_ref();
            json!({
                "database": context.is_some_and(|context| context.database.is_some()),
                "kafka": context.is_some_and(|context| context.kafka.is_some()),
                "s3": context.is_some_and(|context| context.storage.is_some()),
            })
            .to_string()
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "allowed",
        Function::new(ctx.clone(), move |kind: String| {
            let context = shared.context.borrow();
            let names = context.as_ref().and_then(|context| match kind.as_str() {
                "tables" => context
                    .database
                    .as_ref()
                    .map(|database| database.allowed_tables()),
                "topics" => context.kafka.as_ref().map(|kafka| kafka.allowed_topics()),
                "buckets" => context
                    .storage
                    .as_ref()
                    .map(|storage| storage.allowed_buckets()),
                _ => None,
            });
            Value::from(names.unwrap_or_default()).to_string()
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "timerStart",
        Function::new(
            ctx.clone(),
            move |timer_id: f64, milliseconds: f64, repeat: bool| {
                let timer_id = timer_id as u64;
                let accepted = shared
                    .timers
                    .borrow_mut()
                    .start(timer_id, milliseconds, repeat);
                match accepted {
                    Some(timer) => {
                        shared.push(HostRequest::StartTimer {
                            timer_id,
                            delay: timer.delay,
                            repeat,
                        });
                        None
                    }
                    None => {
                        let error = Error::TimerLimit {
                            plugin: shared.plugin.borrow().clone(),
                            limit: shared.timers.borrow().max_timers(),
                        };
                        shared.limit_refused(HostLimit::Timers, 1, &error.to_string());
                        Some(error_json(&error))
                    }
                }
            },
        )?,
    )?;

    let shared = host.clone();
    natives.set(
        "timerClear",
        Function::new(ctx.clone(), move |timer_id: f64| {
            let timer_id = timer_id as u64;
            if shared.timers.borrow_mut().clear(timer_id) {
                shared.push(HostRequest::ClearTimer { timer_id });
            }
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "listenerError",
        Function::new(ctx.clone(), move |event: String, payload: String| {
            let error = shared.plugin_error(&payload);
            shared.push(HostRequest::ListenerFailed { event, error });
        })?,
    )?;
    Ok(())
}
