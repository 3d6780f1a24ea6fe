//! PluginActor: one plugin instance under supervision; its mailbox orders every call into it.
//!
//! Calls start in mailbox order and their awaits overlap (a call's future runs on the arbiter,
//! not inside the actor's context), so a slow dependency call does not stall the plugin's
//! events. A fault — a native panic, a runaway loop past the time limit, heap exhaustion, a
//! broken engine — stops the actor; its `Supervisor` restarts it, and `restarting`/`started`
//! dispose the old instance and build a new one after an exponential backoff. Too many restarts
//! within the window mark the plugin `failed` until an operator reloads it.
//!
//! - this file: the actor, its supervision and its handlers;
//! - `messages`: its messages, states, policy and shared services;
//! - `guarded`: a call into plugin code with panics caught and the time limit applied.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext as _, ActorFutureExt as _, AsyncContext as _, Context, Handler, Message,
    Recipient, ResponseActFuture, ResponseFuture, Supervised, WrapFuture as _,
};
use futures::FutureExt as _;
use serde_json::Value;
use warden_runtime::manifest::DependencySpec;
use warden_runtime::resources::{ResourceGrants, ResourceKind};
use warden_runtime::{
    CallTarget, Database, Error, Kafka, Plugin, PluginContext, PluginDescription, PluginFactory,
    Result, Storage,
};

use crate::broker::{
    DeliverEvents, EmitterBacklog, EventBroker, EventsHandled, RemoveSubscriber, SubscriberKey,
};
use crate::capabilities::{
    ActorSupervision, BrokerEvents, DirectoryDependencies, GatewayDatabase, GatewayKafka,
    GatewayStorage, Liveness,
};
use crate::directory::PluginDirectory;
use crate::gateways::database::AbandonTransactions;
use crate::gateways::kafka::{ConsumeKafkaMessage, DisconnectAllConsumers};
use crate::gateways::PluginGateways;

mod call_metrics;
mod guarded;
mod in_flight;
mod messages;

use call_metrics::CallMetrics;
use guarded::{guarded, panic_message};
use in_flight::InFlightCalls;
pub use messages::{
    CallPlugin, CreateInstance, InitializeInstance, InstanceFailed, PluginServices, PluginState,
    PluginStateChanged, StopInstance, SupervisionPolicy, TerminatePlugin,
};

/// One plugin instance and its supervision state.
pub struct PluginActor {
    name: String,
    actor_id: u64,
    factory: Arc<dyn PluginFactory>,
    services: PluginServices,
    declared_dependencies: Vec<DependencySpec>,
    gateways: PluginGateways,
    grants: ResourceGrants,
    instance: Option<Rc<dyn Plugin>>,
    instance_alive: Rc<Cell<bool>>,
    generation: u64,
    state: PluginState,
    recent_restarts: VecDeque<Instant>,
    restarts: u32,
    queue: Arc<AtomicUsize>,
    backlog: Arc<EmitterBacklog>,
    /// Calls running now; an unload or reload waits for them before `cleanup()`.
    in_flight: Rc<InFlightCalls>,
    /// Registered once the instance says its name (the actor starts with its file's name).
    call_metrics: Option<Rc<CallMetrics>>,
    terminated: bool,
}

impl PluginActor {
    /// A plugin actor for `name` (the name its file was expected to declare, or its file name).
    pub fn new(
        name: String,
        actor_id: u64,
        factory: Arc<dyn PluginFactory>,
        services: PluginServices,
    ) -> Self {
        let backlog = Arc::new(EmitterBacklog::new(
            services.event_backlog_bytes,
            services.event_queue_capacity,
        ));
        PluginActor {
            name,
            actor_id,
            factory,
            services,
            declared_dependencies: Vec::new(),
            gateways: PluginGateways::default(),
            grants: ResourceGrants::default(),
            instance: None,
            instance_alive: Rc::new(Cell::new(false)),
            in_flight: Rc::default(),
            call_metrics: None,
            generation: 0,
            state: PluginState::Starting,
            recent_restarts: VecDeque::new(),
            restarts: 0,
            queue: Arc::new(AtomicUsize::new(0)),
            backlog,
            terminated: false,
        }
    }

    fn unavailable(&self) -> Error {
        if self.terminated {
            return Error::PluginUnloaded {
                plugin: self.name.clone(),
            };
        }
        Error::Unavailable {
            plugin: self.name.clone(),
            state: self.state.to_string(),
        }
    }

    fn report_state(&self, reason: Option<String>) {
        self.services.state_changes.do_send(PluginStateChanged {
            plugin: self.name.clone(),
            actor_id: self.actor_id,
            state: self.state,
            restarts: self.restarts,
            reason,
        });
    }

    /// Creates a new instance, catching a native factory's panic.
    fn create_instance(&mut self) -> Result<PluginDescription> {
        // A stopped instance whose deferred dispose has not run yet goes first.
        if self.instance.is_some() {
            self.dispose_instance();
        }
        let factory = self.factory.clone();
        let created = std::panic::catch_unwind(AssertUnwindSafe(|| factory.create()))
            .unwrap_or_else(|panic| {
                Err(Error::Crashed {
                    plugin: self.name.clone(),
                    reason: panic_message(&panic),
                })
            })?;
        let description = created.describe();
        self.name = description.manifest.name.clone();
        if self
            .call_metrics
            .as_ref()
            .is_none_or(|metrics| metrics.plugin != self.name)
        {
            self.call_metrics = Some(Rc::new(CallMetrics::new(&self.name)));
        }
        self.declared_dependencies = description.manifest.dependencies.clone();
        self.generation += 1;
        self.instance_alive = Rc::new(Cell::new(true));
        self.instance = Some(Rc::from(created));
        Ok(description)
    }

    fn context(&self, context: &Context<Self>) -> PluginContext {
        let liveness = Liveness {
            plugin: self.name.clone(),
            alive: self.instance_alive.clone(),
        };
        let subscriber = SubscriberKey {
            plugin: self.name.clone(),
            generation: self.generation,
        };
        PluginContext {
            plugin: self.name.clone(),
            events: Rc::new(BrokerEvents {
                liveness: liveness.clone(),
                subscriber,
                broker: self.services.broker.clone(),
                deliver_to: context.address().recipient(),
                queue: self.queue.clone(),
                max_message_bytes: self.services.max_message_bytes,
                backlog: self.backlog.clone(),
            }),
            dependencies: Rc::new(DirectoryDependencies {
                liveness: liveness.clone(),
                declared: self.declared_dependencies.clone(),
                directory: self.services.directory.clone(),
            }),
            supervision: Rc::new(ActorSupervision {
                plugin: self.name.clone(),
                generation: self.generation,
                actor: context.address().downgrade(),
                last_refusal_warnings: Default::default(),
            }),
            database: self.gateways.database.clone().map(|gateway| {
                Rc::new(GatewayDatabase {
                    liveness: liveness.clone(),
                    gateway,
                    allowed: self.grants.names(ResourceKind::Table),
                }) as Rc<dyn Database>
            }),
            kafka: self.gateways.kafka.clone().map(|gateway| {
                Rc::new(GatewayKafka {
                    liveness: liveness.clone(),
                    gateway,
                    allowed: self.grants.names(ResourceKind::Topic),
                    deliver_to: context.address().recipient(),
                    generation: self.generation,
                }) as Rc<dyn Kafka>
            }),
            storage: self.gateways.storage.clone().map(|gateway| {
                Rc::new(GatewayStorage {
                    liveness: liveness.clone(),
                    gateway,
                    allowed: self.grants.names(ResourceKind::Bucket),
                }) as Rc<dyn Storage>
            }),
        }
    }

    /// Runs `initialize` on the current instance under the call time limit.
    fn initialize(
        &mut self,
        context: &mut Context<Self>,
    ) -> futures::future::LocalBoxFuture<'static, Result<()>> {
        let Some(instance) = self.instance.clone() else {
            return Box::pin(futures::future::ready(Err(self.unavailable())));
        };
        let plugin_context = self.context(context);
        let name = self.name.clone();
        let timeout = self.services.call_timeout;
        guarded(&name, timeout, || instance.initialize(plugin_context))
    }

    /// Drops the current instance and everything it subscribed to.
    fn dispose_instance(&mut self) {
        self.instance_alive.set(false);
        if let Some(instance) = self.instance.take() {
            if std::panic::catch_unwind(AssertUnwindSafe(|| instance.dispose())).is_err() {
                tracing::error!(plugin = %self.name, "dispose panicked");
            }
        }
        // Consumers belong to the instance: a restarted or unloaded plugin keeps none.
        if let Some(kafka) = &self.gateways.kafka {
            kafka.do_send(DisconnectAllConsumers);
        }
        // So are transactions: one begun from a timer ends with the instance that began it.
        if let Some(database) = &self.gateways.database {
            database.do_send(AbandonTransactions);
        }
        self.services.broker.do_send(RemoveSubscriber {
            subscriber: SubscriberKey {
                plugin: self.name.clone(),
                generation: self.generation,
            },
        });
        self.queue.store(0, Ordering::Release);
    }

    /// Builds and initializes a new instance after a crash.
    fn restart_instance(&mut self, context: &mut Context<Self>) {
        if self.terminated || self.state != PluginState::Restarting {
            return;
        }
        let started_at = Instant::now();
        if let Err(error) = self.create_instance() {
            tracing::error!(plugin = %self.name, %error, "restart failed: the module did not load");
            context.stop();
            return;
        }
        let generation = self.generation;
        let initialize = self.initialize(context);
        context.spawn(initialize.into_actor(self).map(move |result, actor, context| {
            if actor.generation != generation || actor.state != PluginState::Restarting {
                return;
            }
            match result {
                Ok(()) => {
                    actor.state = PluginState::Running;
                    tracing::info!(plugin = %actor.name, restarts = actor.restarts, elapsed_ms = started_at.elapsed().as_secs_f64() * 1e3, "plugin restarted");
                    actor.report_state(None);
                }
                Err(error) => {
                    tracing::error!(plugin = %actor.name, %error, "restart failed: initialize did not succeed");
                    context.stop();
                }
            }
        }));
    }
}

impl Actor for PluginActor {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        if self.state == PluginState::Restarting && !self.terminated {
            let attempt = self.recent_restarts.len() as u32;
            let backoff = self.services.policy.backoff(attempt);
            context.run_later(backoff, |actor, context| actor.restart_instance(context));
        }
    }
}

impl Supervised for PluginActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.dispose_instance();
        if self.terminated {
            return;
        }
        let now = Instant::now();
        let window = self.services.policy.window;
        self.recent_restarts.push_back(now);
        while self
            .recent_restarts
            .front()
            .is_some_and(|first| now.duration_since(*first) > window)
        {
            self.recent_restarts.pop_front();
        }
        self.restarts += 1;
        metrics::counter!("warden_plugin_restarts_total", "plugin" => self.name.clone())
            .increment(1);
        if self.recent_restarts.len() as u32 > self.services.policy.max_restarts {
            self.state = PluginState::Failed;
            tracing::error!(plugin = %self.name, restarts = self.restarts, "plugin failed: too many restarts within the window; reload it to try again");
            self.report_state(Some(format!(
                "more than {} restarts within {} s",
                self.services.policy.max_restarts,
                window.as_secs()
            )));
        } else {
            self.state = PluginState::Restarting;
            self.report_state(None);
        }
    }
}

impl Handler<CreateInstance> for PluginActor {
    type Result = Result<PluginDescription>;

    fn handle(&mut self, _: CreateInstance, _: &mut Self::Context) -> Self::Result {
        self.create_instance()
    }
}

impl Handler<InitializeInstance> for PluginActor {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, message: InitializeInstance, context: &mut Self::Context) -> Self::Result {
        self.state = PluginState::Starting;
        self.gateways = message.gateways;
        self.grants = message.grants;
        let generation = self.generation;
        Box::pin(
            self.initialize(context)
                .into_actor(self)
                .map(move |result, actor, _| {
                    if result.is_ok() && actor.generation == generation {
                        actor.state = PluginState::Running;
                    }
                    result
                }),
        )
    }
}

impl Handler<CallPlugin> for PluginActor {
    type Result = ResponseFuture<Result<Value>>;

    fn handle(&mut self, message: CallPlugin, context: &mut Self::Context) -> Self::Result {
        let instance = match (&self.instance, self.state) {
            (Some(instance), PluginState::Running | PluginState::Starting) => instance.clone(),
            _ => {
                let error = self.unavailable();
                return Box::pin(async move { Err(error) });
            }
        };
        let plugin = self.name.clone();
        let started_at = Instant::now();
        let call_timeout = self.services.call_timeout;
        // An emitter whose earlier events have not reached their listeners takes no new call
        // until they drain (`PLUGIN_API.md`, "Events under load"); otherwise the call starts
        // now, in the order calls arrived.
        let start = if self.backlog.holds_calls() {
            Err((self.backlog.clone(), message))
        } else {
            Ok(guarded(&plugin, call_timeout, || {
                instance.call(message.target, message.arguments)
            }))
        };
        let generation = self.generation;
        let actor = context.address().downgrade();
        let running = self.in_flight.start();
        let call_metrics = self.call_metrics.clone();
        // The call's future runs on the arbiter, outside this actor's context, so later messages
        // start while it awaits; a crash reported through it restarts the instance it ran on.
        Box::pin(async move {
            let _running = running;
            let call = match start {
                Ok(call) => call,
                Err((backlog, message)) => {
                    let deadline = tokio::time::Instant::now() + call_timeout;
                    if tokio::time::timeout_at(deadline, backlog.wait_until_drained())
                        .await
                        .is_err()
                    {
                        return Err(Error::Timeout {
                            plugin,
                            limit_ms: call_timeout.as_millis() as u64,
                        });
                    }
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    guarded(&plugin, left, || {
                        instance.call(message.target, message.arguments)
                    })
                }
            };
            let result = call.await;
            if let Some(call_metrics) = call_metrics {
                call_metrics.record(&result, started_at.elapsed());
            }
            if let Err(error @ Error::Crashed { .. }) = &result {
                if let Some(actor) = actor.upgrade() {
                    actor.do_send(InstanceFailed {
                        generation,
                        error: error.clone(),
                    });
                }
            }
            result
        })
    }
}

impl Handler<ConsumeKafkaMessage> for PluginActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, message: ConsumeKafkaMessage, _: &mut Self::Context) -> Self::Result {
        let instance = match (&self.instance, self.state) {
            (Some(instance), PluginState::Running) if message.generation == self.generation => {
                instance.clone()
            }
            _ => {
                let error = self.unavailable();
                return Box::pin(async move { Err(error) });
            }
        };
        Box::pin(guarded(&self.name, self.services.call_timeout, || {
            instance.consume(&message.consumer_id, message.record)
        }))
    }
}

impl Handler<DeliverEvents> for PluginActor {
    type Result = ();

    fn handle(&mut self, message: DeliverEvents, context: &mut Self::Context) {
        let _ = self
            .queue
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(message.events.len()))
            });
        // Handled or not, the broker may send what waits: it counts progress, not success. The
        // request waits behind every task already ready on this thread: actix handles a
        // mailbox until it is empty, so a batch refilled at once would let a busy listener keep
        // the thread from the other plugins on it.
        let broker = self.services.broker.clone();
        let handled = EventsHandled {
            subscriber: SubscriberKey {
                plugin: self.name.clone(),
                generation: message.generation,
            },
        };
        actix::spawn(async move {
            tokio::task::yield_now().await;
            broker.do_send(handled);
        });
        if message.generation != self.generation || self.state != PluginState::Running {
            return;
        }
        let Some(instance) = self.instance.clone() else {
            return;
        };
        // Events received from another node carry receipts: they are held until the
        // listeners' promises settle, so that dropping them marks them handled only then.
        let tracked = message.events.iter().any(|event| event.receipt.is_some());
        let delivered = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if tracked {
                Some(instance.deliver_events_and_wait(&message.events))
            } else {
                instance.deliver_events(&message.events);
                None
            }
        }));
        match delivered {
            Ok(Some(settling)) => {
                let events = message.events;
                actix::spawn(async move {
                    let _ = settling.await;
                    drop(events);
                });
            }
            Ok(None) => {}
            Err(panic) => {
                let error = Error::Crashed {
                    plugin: self.name.clone(),
                    reason: panic_message(&panic),
                };
                context.notify(InstanceFailed {
                    generation: self.generation,
                    error,
                });
            }
        }
    }
}

impl Handler<InstanceFailed> for PluginActor {
    type Result = ();

    fn handle(&mut self, message: InstanceFailed, context: &mut Self::Context) {
        if message.generation != self.generation
            || self.terminated
            || self.state != PluginState::Running
        {
            return;
        }
        tracing::error!(plugin = %self.name, error = %message.error, "plugin crashed; restarting it");
        context.stop();
    }
}

impl Handler<StopInstance> for PluginActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, message: StopInstance, _: &mut Self::Context) -> Self::Result {
        let running = self.state == PluginState::Running;
        self.state = PluginState::Stopping;
        // Calls already running finish first (within the call time limit): a request in flight
        // during a reload or an unload is answered, not cut off. New calls are refused from now.
        let in_flight = Rc::clone(&self.in_flight);
        let limit = self.services.call_timeout;
        let drained = async move {
            let _ = tokio::time::timeout(limit, in_flight.idle()).await;
        };
        let name = self.name.clone();
        let cleanup = match (&self.instance, message.cleanup && running) {
            (Some(instance), true) => {
                let instance = instance.clone();
                async move {
                    drained.await;
                    guarded(&name, limit, || instance.cleanup()).await
                }
                .boxed_local()
            }
            _ => async move {
                drained.await;
                Ok(())
            }
            .boxed_local(),
        };
        Box::pin(cleanup.into_actor(self).map(|result, actor, context| {
            if let Err(error) = result {
                tracing::warn!(plugin = %actor.name, %error, "cleanup failed");
            }
            // The old context is dead from here on; freeing the heap can follow the reply.
            actor.instance_alive.set(false);
            context.notify(DisposeInstance {
                generation: actor.generation,
            });
        }))
    }
}

/// Frees a stopped instance; sent by the actor to itself after answering `StopInstance`.
#[derive(Message)]
#[rtype(result = "()")]
struct DisposeInstance {
    /// The stopped instance; a newer one (a reload restored the previous version) stays.
    generation: u64,
}

impl Handler<DisposeInstance> for PluginActor {
    type Result = ();

    fn handle(&mut self, message: DisposeInstance, _: &mut Self::Context) {
        if message.generation == self.generation && self.state == PluginState::Stopping {
            self.dispose_instance();
        }
    }
}

impl Handler<TerminatePlugin> for PluginActor {
    type Result = ();

    fn handle(&mut self, _: TerminatePlugin, context: &mut Self::Context) {
        self.terminated = true;
        self.dispose_instance();
        context.stop();
    }
}
