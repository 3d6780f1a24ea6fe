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
pub(crate) use super::operations::{HostOperation, HostRequest};
use crate::events::{EventPattern, ListenerReach};
use crate::manifest::PluginManifest;
use crate::plugin::{CallTarget, HostLimit, PluginContext, PluginLimits, HOST_ONLY_FUNCTIONS};
use crate::{Error, Result};

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

    /// Refuses (and reports) a dependency call that asks for a host-only lifecycle function or
    /// a route.
    pub(crate) fn check_dependency_target(
        &self,
        dependency: &str,
        target: &CallTarget,
    ) -> Result<()> {
        let refused = match target {
            CallTarget::Method(method) => HOST_ONLY_FUNCTIONS.contains(&method.as_str()),
            // Route handlers answer the public listener only, never a dependent.
            CallTarget::Route(_) => true,
            CallTarget::Execute => false,
        };
        if !refused {
            return Ok(());
        }
        let error = Error::MethodNotAllowed {
            plugin: dependency.to_string(),
            method: target.to_string(),
        };
        self.limit_refused(HostLimit::HostOnlyFunction, 1, &error.to_string());
        Err(error)
    }
}

/// The `{name, message, code?}` JSON the prelude turns back into a JavaScript error; `code` is
/// the SQLSTATE of a `DatabaseError`.
pub(crate) fn error_json(error: &Error) -> String {
    match error {
        Error::Database { sqlstate, .. } => {
            json!({ "name": error.js_name(), "message": error.to_string(), "code": sqlstate })
        }
        _ => json!({ "name": error.js_name(), "message": error.to_string() }),
    }
    .to_string()
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
        Function::new(ctx.clone(), move |pattern: String, every_node: bool| {
            refusal((|| {
                let pattern = EventPattern::parse(&pattern)?;
                shared
                    .context()?
                    .events
                    .subscribe(&pattern, listener_reach(every_node))
            })())
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "unsubscribe",
        Function::new(ctx.clone(), move |pattern: String, every_node: bool| {
            if let (Ok(pattern), Ok(context)) = (EventPattern::parse(&pattern), shared.context()) {
                // The pattern was accepted when the listener was added, so this cannot refuse.
                let _ = context
                    .events
                    .unsubscribe(&pattern, listener_reach(every_node));
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

/// The reach of a listener the prelude added with `everyNode` set or not.
fn listener_reach(every_node: bool) -> ListenerReach {
    if every_node {
        ListenerReach::EveryNode
    } else {
        ListenerReach::OncePerPlugin
    }
}
