//! The native functions a plugin's engine calls, and the requests they leave for the host.
//!
//! Native functions never re-enter the engine and never await: they answer at once from the
//! plugin's context (emit, subscribe, describe a dependency) or leave a [`HostRequest`] in the
//! outbox, which the plugin wrapper handles after the engine returns.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rquickjs::{Ctx, Function, Object};
use serde_json::{json, Value};

use crate::events::EventPattern;
use crate::manifest::PluginManifest;
use crate::plugin::{CallTarget, PluginContext};
use crate::{Error, Result};

/// Something the engine asked the host to do once control returns to it.
pub(crate) enum HostRequest {
    /// A call into the plugin finished.
    Complete { call_id: u64, result: Result<Value> },
    /// The plugin called a dependency; settle operation `operation_id` with its result.
    CallDependency {
        operation_id: u64,
        dependency: String,
        target: CallTarget,
        arguments: Vec<Value>,
    },
    /// `setTimeout`/`setInterval` armed timer `timer_id`.
    StartTimer { timer_id: u64, delay: Duration },
    /// `clearTimeout` cancelled timer `timer_id`.
    ClearTimer { timer_id: u64 },
    /// A listener or timer callback threw.
    ListenerFailed { event: String, error: Error },
}

/// State shared between the engine's native functions and the plugin wrapper.
pub(crate) struct HostShared {
    /// The plugin's name once its metadata is known (the file name before that).
    pub plugin: RefCell<String>,
    /// Requests left by native functions during the current entry into the engine.
    pub outbox: RefCell<Vec<HostRequest>>,
    /// The context given to `initialize`; `None` before it and after dispose.
    pub context: RefCell<Option<PluginContext>>,
}

impl HostShared {
    pub(crate) fn new(plugin: String) -> Rc<Self> {
        Rc::new(HostShared {
            plugin: RefCell::new(plugin),
            outbox: RefCell::new(Vec::new()),
            context: RefCell::new(None),
        })
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
        "MethodNotFoundError" => Error::Execution { name, message },
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
                    Err(error_from_json(&shared.plugin.borrow(), &payload))
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
                    match kind.as_str() {
                        "call" => {
                            let target = match payload["method"].as_str() {
                                Some(method) => CallTarget::Method(method.to_string()),
                                None => CallTarget::Execute,
                            };
                            let arguments = match &payload["args"] {
                                Value::Array(arguments) => arguments.clone(),
                                _ => Vec::new(),
                            };
                            shared.push(HostRequest::CallDependency {
                                operation_id: operation_id as u64,
                                dependency: payload["dependency"]
                                    .as_str()
                                    .unwrap_or("")
                                    .to_string(),
                                target,
                                arguments,
                            });
                            Ok(())
                        }
                        other => Err(Error::InvalidValue {
                            reason: format!("unknown host operation '{other}'"),
                        }),
                    }
                })())
            },
        )?,
    )?;

    let shared = host.clone();
    natives.set(
        "timerStart",
        Function::new(ctx.clone(), move |timer_id: f64, milliseconds: f64| {
            let milliseconds = if milliseconds.is_finite() && milliseconds > 0.0 {
                milliseconds.min(u32::MAX as f64) as u64
            } else {
                0
            };
            shared.push(HostRequest::StartTimer {
                timer_id: timer_id as u64,
                delay: Duration::from_millis(milliseconds),
            });
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "timerClear",
        Function::new(ctx.clone(), move |timer_id: f64| {
            shared.push(HostRequest::ClearTimer {
                timer_id: timer_id as u64,
            });
        })?,
    )?;

    let shared = host.clone();
    natives.set(
        "listenerError",
        Function::new(ctx.clone(), move |event: String, payload: String| {
            let error = error_from_json(&shared.plugin.borrow(), &payload);
            shared.push(HostRequest::ListenerFailed { event, error });
        })?,
    )?;
    Ok(())
}
