//! `JsPlugin`: a JavaScript module behind the [`Plugin`] trait, with its own small event loop.
//!
//! The engine itself is synchronous. This wrapper is the loop around it: it starts calls, keeps
//! one channel per call in flight, arms timers and runs host operations as local tasks, and
//! re-enters the engine when one of them finishes — so a plugin's awaits overlap as in Node.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use futures::channel::oneshot;
use futures::FutureExt as _;
use rquickjs::{Function, Object};
use serde_json::Value;
use tokio::task::AbortHandle;

use super::bundle::ModuleFiles;
use super::engine::JsEngine;
use super::host::{error_json, HostRequest, HostShared};
use crate::events::ListenerReach;
use crate::manifest::PluginManifest;
use crate::migrations::migrations_from_description;
use crate::plugin::{
    CallTarget, Event, HostLimit, KafkaRecord, Plugin, PluginContext, PluginDescription,
    PluginFuture, PluginLimits, HOST_ONLY_FUNCTIONS,
};
use crate::routes::{DeclaredHandler, DeclaredRoute, PluginRoutes};
use crate::{Error, Result};

/// A loaded JavaScript plugin instance.
pub struct JsPlugin {
    inner: Rc<Inner>,
}

struct Inner {
    host: Rc<HostShared>,
    /// `None` once disposed.
    engine: RefCell<Option<JsEngine>>,
    description: PluginDescription,
    limits: PluginLimits,
    calls: RefCell<HashMap<u64, oneshot::Sender<Result<Value>>>>,
    next_call_id: Cell<u64>,
    timers: RefCell<HashMap<u64, AbortHandle>>,
    operations: RefCell<HashMap<u64, AbortHandle>>,
    /// Set when the engine broke; every later entry fails with it until the instance is replaced.
    failure: RefCell<Option<Error>>,
}

impl JsPlugin {
    /// Creates an engine, evaluates the entry module (`entry` is its file name inside `root`,
    /// `code` its JavaScript) and validates the plugin object and its metadata.
    pub fn load(
        files: ModuleFiles,
        entry: &str,
        code: String,
        limits: PluginLimits,
    ) -> Result<Self> {
        let host = HostShared::new(entry.to_string(), limits);
        let engine = JsEngine::new(files, limits, &host)?;
        let described = engine.load_module(entry, code)?;
        let described: Value = serde_json::from_str(&described).map_err(|error| {
            Error::invalid_format(format!("cannot read the plugin object: {error}"))
        })?;
        if let Some(reason) = described["error"].as_str() {
            return Err(Error::invalid_format(reason));
        }
        let manifest = PluginManifest::from_json(&described["metadata"])?;
        *host.plugin.borrow_mut() = manifest.name.clone();
        let name = manifest.name.clone();
        engine.enter_api(|_, api| api.get::<_, Function>("rename")?.call::<_, ()>((name,)))?;
        let exports: Vec<String> = described["exports"]
            .as_array()
            .map(|exports| {
                exports
                    .iter()
                    .filter_map(|name| name.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let routes = PluginRoutes::new(&declared_routes(&described["routes"]), &exports)?;
        let description = PluginDescription {
            manifest,
            exports,
            executable: described["executable"].as_bool().unwrap_or(false),
            has_cleanup: described["cleanup"].as_bool().unwrap_or(true),
            routes: Arc::new(routes),
            migrations: migrations_from_description(&described["migrations"])?.into(),
        };
        Ok(JsPlugin {
            inner: Rc::new(Inner {
                host,
                engine: RefCell::new(Some(engine)),
                description,
                limits,
                calls: RefCell::new(HashMap::new()),
                next_call_id: Cell::new(1),
                timers: RefCell::new(HashMap::new()),
                operations: RefCell::new(HashMap::new()),
                failure: RefCell::new(None),
            }),
        })
    }

    /// Bytes the plugin's heap holds now (0 once disposed).
    pub fn memory_used(&self) -> u64 {
        self.inner
            .engine
            .borrow()
            .as_ref()
            .map(JsEngine::memory_used)
            .unwrap_or(0)
    }
}

/// The prelude's description of the `routes` map: `[{key, handler: {function} | {name} | {}}]`.
fn declared_routes(described: &Value) -> Vec<DeclaredRoute> {
    let Some(routes) = described.as_array() else {
        return Vec::new();
    };
    routes
        .iter()
        .map(|route| DeclaredRoute {
            key: route["key"].as_str().unwrap_or_default().to_owned(),
            handler: match (&route["handler"]["function"], &route["handler"]["name"]) {
                (Value::Bool(true), _) => DeclaredHandler::Function,
                (_, Value::String(name)) => DeclaredHandler::Named(name.clone()),
                _ => DeclaredHandler::Invalid,
            },
        })
        .collect()
}

impl Inner {
    fn plugin(&self) -> String {
        self.description.manifest.name.clone()
    }

    fn unloaded(&self) -> Error {
        Error::PluginUnloaded {
            plugin: self.plugin(),
        }
    }

    /// Enters the engine, then handles what the entry left in the outbox.
    fn enter<R>(
        self: &Rc<Self>,
        entry: impl for<'js> FnOnce(&rquickjs::Ctx<'js>, &Object<'js>) -> rquickjs::Result<R>,
    ) -> Result<R> {
        if let Some(failure) = self.failure.borrow().clone() {
            return Err(failure);
        }
        let result = match self.engine.borrow().as_ref() {
            Some(engine) => engine.enter_api(entry),
            None => return Err(self.unloaded()),
        };
        self.process_outbox();
        if let Err(error) = &result {
            self.fail(error.clone());
        }
        result
    }

    /// Starts a call whose completion the prelude reports through `complete(callId, …)`.
    fn start_call(
        self: &Rc<Self>,
        entry: impl for<'js> FnOnce(&rquickjs::Ctx<'js>, &Object<'js>, f64) -> rquickjs::Result<()>,
    ) -> PluginFuture<Value> {
        let call_id = self.next_call_id.get();
        self.next_call_id.set(call_id + 1);
        let (sender, receiver) = oneshot::channel();
        self.calls.borrow_mut().insert(call_id, sender);
        // An engine fault fails every pending call, this one included, through its channel.
        let _ = self.enter(|ctx, api| entry(ctx, api, call_id as f64));
        let weak = Rc::downgrade(self);
        let limit = std::time::Duration::from_millis(self.limits.call_timeout_ms);
        let plugin = self.plugin();
        let limit_ms = self.limits.call_timeout_ms;
        async move {
            match tokio::time::timeout(limit, receiver).await {
                Ok(Ok(result)) => result,
                Ok(Err(_canceled)) => Err(Error::PluginUnloaded { plugin }),
                Err(_elapsed) => {
                    if let Some(inner) = weak.upgrade() {
                        inner.calls.borrow_mut().remove(&call_id);
                    }
                    Err(Error::Timeout { plugin, limit_ms })
                }
            }
        }
        .boxed_local()
    }

    fn process_outbox(self: &Rc<Self>) {
        loop {
            let requests = std::mem::take(&mut *self.host.outbox.borrow_mut());
            if requests.is_empty() {
                return;
            }
            for request in requests {
                self.handle(request);
            }
        }
    }

    fn handle(self: &Rc<Self>, request: HostRequest) {
        match request {
            HostRequest::Complete { call_id, result } => {
                if let Some(sender) = self.calls.borrow_mut().remove(&call_id) {
                    let _ = sender.send(result);
                }
            }
            HostRequest::Operation {
                operation_id,
                operation,
            } => {
                let context = self.host.context.borrow().clone();
                let Some(context) = context else {
                    return;
                };
                // The operation starts now (its message is queued in call order); only its
                // completion is awaited in the background.
                let operation = operation.start(&context);
                let weak = Rc::downgrade(self);
                let task = tokio::task::spawn_local(async move {
                    let result = operation.await;
                    if let Some(inner) = weak.upgrade() {
                        inner.operations.borrow_mut().remove(&operation_id);
                        inner.settle(operation_id, result);
                    }
                });
                self.operations
                    .borrow_mut()
                    .insert(operation_id, task.abort_handle());
            }
            HostRequest::StartTimer {
                timer_id,
                delay,
                repeat,
            } => {
                let weak: Weak<Inner> = Rc::downgrade(self);
                // A repeating timer waits its whole (clamped) period after each callback, so a
                // slow callback never makes its interval fire in a burst to catch up.
                let task = tokio::task::spawn_local(async move {
                    loop {
                        tokio::time::sleep(delay).await;
                        let Some(inner) = weak.upgrade() else {
                            return;
                        };
                        if !inner.fire_timer(timer_id, repeat) {
                            return;
                        }
                    }
                });
                if let Some(previous) = self
                    .timers
                    .borrow_mut()
                    .insert(timer_id, task.abort_handle())
                {
                    previous.abort();
                }
            }
            HostRequest::ClearTimer { timer_id } => {
                if let Some(timer) = self.timers.borrow_mut().remove(&timer_id) {
                    timer.abort();
                }
            }
            HostRequest::Fault(error) => self.fail(error),
            HostRequest::ListenerFailed { event, error } => {
                if let Some(context) = self.host.context.borrow().as_ref() {
                    context.supervision.listener_failed(&event, &error);
                }
            }
        }
    }

    /// Runs timer `timer_id`'s callback; whether a repeating timer should fire again.
    fn fire_timer(self: &Rc<Self>, timer_id: u64, repeat: bool) -> bool {
        if !self.host.timers.borrow_mut().begin_firing(timer_id, repeat) {
            return false;
        }
        if !repeat {
            self.timers.borrow_mut().remove(&timer_id);
        }
        let _ = self.enter(|_, api| {
            api.get::<_, Function>("fireTimer")?
                .call::<_, ()>((timer_id as f64,))
        });
        self.host.timers.borrow_mut().end_firing();
        repeat && self.failure.borrow().is_none() && self.host.timers.borrow().is_pending(timer_id)
    }

    /// Refuses what a call may not ask for before it reaches the plugin's code: a host-only
    /// lifecycle function or a function the plugin does not export (the prelude would find any
    /// property, `constructor` included), and arguments over the message limit.
    fn check_call(&self, target: &CallTarget, arguments: &str) -> Result<()> {
        match target {
            // The public listener bounds a request by its own limit (WARDEN_HTTP_MAX_BODY_BYTES).
            CallTarget::Route(index) if *index < self.description.routes.specs().len() => {
                return Ok(())
            }
            CallTarget::Route(_) => {
                return Err(Error::MethodNotFound {
                    plugin: self.plugin(),
                    method: target.to_string(),
                })
            }
            _ => {}
        }
        if let CallTarget::Method(method) = target {
            if HOST_ONLY_FUNCTIONS.contains(&method.as_str()) {
                let error = Error::MethodNotAllowed {
                    plugin: self.plugin(),
                    method: method.clone(),
                };
                self.host
                    .limit_refused(HostLimit::HostOnlyFunction, 1, &error.to_string());
                return Err(error);
            }
            if method != "execute" && !self.description.exports.contains(method) {
                return Err(Error::MethodNotFound {
                    plugin: self.plugin(),
                    method: method.clone(),
                });
            }
        }
        self.host
            .check_message_size("call arguments", arguments.len())
    }

    fn settle(self: &Rc<Self>, operation_id: u64, result: Result<Value>) {
        let (ok, payload) = match &result {
            Ok(value) => (true, value.to_string()),
            Err(error) => (false, error_json(error)),
        };
        let _ = self.enter(|_, api| {
            api.get::<_, Function>("settle")?
                .call::<_, ()>((operation_id as f64, ok, payload))
        });
    }

    /// The engine broke: fail what waits on it, stop its timers and tell the supervisor.
    fn fail(self: &Rc<Self>, error: Error) {
        if self.failure.borrow().is_some() {
            return;
        }
        *self.failure.borrow_mut() = Some(error.clone());
        self.stop_background_work(&error);
        let context = self.host.context.borrow().clone();
        if let Some(context) = context {
            context.supervision.instance_failed(error);
        }
    }

    fn stop_background_work(&self, error: &Error) {
        self.host.timers.borrow_mut().clear_all();
        for (_, timer) in self.timers.borrow_mut().drain() {
            timer.abort();
        }
        for (_, operation) in self.operations.borrow_mut().drain() {
            operation.abort();
        }
        for (_, call) in self.calls.borrow_mut().drain() {
            let _ = call.send(Err(error.clone()));
        }
    }
}

impl Plugin for JsPlugin {
    fn describe(&self) -> PluginDescription {
        self.inner.description.clone()
    }

    fn initialize(&self, context: PluginContext) -> PluginFuture<()> {
        *self.inner.host.context.borrow_mut() = Some(context);
        self.inner
            .start_call(|_, api, call_id| {
                api.get::<_, Function>("initialize")?
                    .call::<_, ()>((call_id,))
            })
            .map(|result| result.map(|_| ()))
            .boxed_local()
    }

    fn call(&self, target: CallTarget, arguments: Vec<Value>) -> PluginFuture<Value> {
        if let CallTarget::Route(index) = target {
            if let Err(error) = self.inner.check_call(&target, "") {
                return Box::pin(async move { Err(error) });
            }
            // The route entry takes the request object itself, not an argument list. The public
            // listener sends it as its JSON text already (a request object is never a string).
            let request = match arguments.into_iter().next() {
                Some(Value::String(text)) => text,
                Some(request) => request.to_string(),
                None => "null".to_owned(),
            };
            return self.inner.start_call(move |_, api, call_id| {
                api.get::<_, Function>("route")?
                    .call::<_, ()>((call_id, index as f64, request))
            });
        }
        // The arguments are serialized for the engine anyway; the limit is checked on that text.
        let arguments = Value::Array(arguments).to_string();
        // This plugin refuses by itself, whoever the caller is and however it built the call.
        if let Err(error) = self.inner.check_call(&target, &arguments) {
            return Box::pin(async move { Err(error) });
        }
        let method = match target {
            CallTarget::Execute | CallTarget::Route(_) => None,
            CallTarget::Method(method) => Some(method),
        };
        self.inner.start_call(move |_, api, call_id| {
            api.get::<_, Function>("invoke")?
                .call::<_, ()>((call_id, method, arguments))
        })
    }

    fn deliver_events(&self, events: &[Arc<Event>]) {
        let batch = batch_json(events);
        let _ = self
            .inner
            .enter(|_, api| api.get::<_, Function>("deliver")?.call::<_, ()>((batch,)));
    }

    fn deliver_events_and_wait(&self, events: &[Arc<Event>]) -> PluginFuture<()> {
        let batch = batch_json(events);
        self.inner
            .start_call(move |_, api, call_id| {
                api.get::<_, Function>("deliver")?
                    .call::<_, ()>((batch, call_id))
            })
            .map(|result| result.map(|_| ()))
            .boxed_local()
    }

    fn consume(&self, consumer_id: &str, message: KafkaRecord) -> PluginFuture<()> {
        let headers: serde_json::Map<String, Value> = message
            .headers
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        let payload = serde_json::json!({
            "topic": message.topic,
            "partition": message.partition,
            "message": {
                "key": message.key,
                "value": message.value,
                "headers": headers,
                "offset": message.offset.to_string(),
                "timestamp": message.timestamp.map(|timestamp| timestamp.to_string()),
            },
        })
        .to_string();
        let consumer_id = consumer_id.to_string();
        self.inner
            .start_call(move |_, api, call_id| {
                api.get::<_, Function>("consume")?
                    .call::<_, ()>((call_id, consumer_id, payload))
            })
            .map(|result| result.map(|_| ()))
            .boxed_local()
    }

    fn cleanup(&self) -> PluginFuture<()> {
        self.inner
            .start_call(|_, api, call_id| {
                api.get::<_, Function>("cleanup")?.call::<_, ()>((call_id,))
            })
            .map(|result| result.map(|_| ()))
            .boxed_local()
    }

    fn dispose(&self) {
        let inner = &self.inner;
        // No later line will open a new log window, so what this one dropped is said now.
        inner.host.flush_dropped_log();
        if inner.failure.borrow().is_none() {
            let _ = inner.enter(|_, api| api.get::<_, Function>("dispose")?.call::<_, ()>(()));
        }
        inner.stop_background_work(&inner.unloaded());
        *inner.failure.borrow_mut() = Some(inner.unloaded());
        *inner.host.context.borrow_mut() = None;
        inner.host.outbox.borrow_mut().clear();
        // Dropping the engine frees the heap and every callback in it.
        inner.engine.borrow_mut().take();
    }
}

/// A batch of events as the prelude's `deliver` reads it: `[[name, source, data, reach?], …]`.
fn batch_json(events: &[Arc<Event>]) -> String {
    let mut batch = String::with_capacity(events.len() * 64);
    batch.push('[');
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            batch.push(',');
        }
        // A fourth element says which listeners hear an event received from the cluster.
        let reach = match event.reach {
            None => "",
            Some(ListenerReach::OncePerPlugin) => ",1",
            Some(ListenerReach::EveryNode) => ",2",
        };
        // Names and sources are validated to need no escaping beyond what JSON gives them.
        let _ = write!(
            batch,
            "[{},{},{}{reach}]",
            Value::from(event.name.as_str()),
            Value::from(event.source.as_str()),
            event.data_json
        );
    }
    batch.push(']');
    batch
}
