//! The capabilities of a plugin's context, implemented as messages to the actors that own them.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use actix::{Addr, Recipient, WeakAddr};
use futures::FutureExt as _;
use serde_json::Value;
use warden_runtime::events::{validate_event_name, EventPattern};
use warden_runtime::manifest::DependencySpec;
use warden_runtime::{
    CallTarget, Dependencies, DependencyInfo, Error, Event, Events, PluginFuture, Result,
    Supervision,
};

use crate::broker::{
    DeliverEvents, EventBroker, PublishEvent, Subscribe, SubscriberKey, Unsubscribe,
};
use crate::directory::PluginDirectory;
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
}

impl Events for BrokerEvents {
    fn emit(&self, event: &str, data: Value) -> Result<()> {
        self.liveness.check()?;
        validate_event_name(event)?;
        self.broker.do_send(PublishEvent {
            event: Event::new(event, self.subscriber.plugin.clone(), data),
        });
        Ok(())
    }

    fn subscribe(&self, pattern: &EventPattern) -> Result<()> {
        self.liveness.check()?;
        self.broker.do_send(Subscribe {
            subscriber: self.subscriber.clone(),
            pattern: pattern.clone(),
            deliver_to: self.deliver_to.clone(),
            queue: self.queue.clone(),
        });
        Ok(())
    }

    fn unsubscribe(&self, pattern: &EventPattern) -> Result<()> {
        self.liveness.check()?;
        self.broker.do_send(Unsubscribe {
            subscriber: self.subscriber.clone(),
            pattern: pattern.clone(),
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
        let Some(entry) = self.directory.get(dependency) else {
            let error = Error::DependencyNotFound {
                plugin: self.liveness.plugin.clone(),
                dependency: dependency.to_string(),
            };
            return futures::future::ready(Err(error)).boxed_local();
        };
        let dependency = dependency.to_string();
        // `send` queues the message now, so calls reach the dependency in the order they were made.
        let request = entry.address.send(CallPlugin { target, arguments });
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

/// Faults go to the plugin's own actor (weakly held, so a context never keeps an actor alive);
/// listener errors are logged and counted.
pub(crate) struct ActorSupervision {
    pub plugin: String,
    pub generation: u64,
    pub actor: WeakAddr<PluginActor>,
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
}
