//! EventBroker: subscriptions by pattern, fan-out in batches, per-pair FIFO, and bursts that
//! lose nothing (`PLUGIN_API.md`, "Events under load").
//!
//! Every event goes through this one actor, into one log in emission order, so events from one
//! emitter reach each listener in the order they were emitted. Each subscriber reads the log
//! from its own cursor and has at most `window` events in flight (sent, not yet handled):
//! batches go out as it handles the previous ones (`EventsHandled`), so a burst waits in the log
//! instead of being dropped, and the log holds each event once however many listen. An event
//! leaves the log when every subscriber's cursor has passed it.
//!
//! The emitter pays for its burst: every undelivered event is counted in its
//! [`EmitterBacklog`], which refuses emits past the emitter's byte budget and makes the
//! emitter's new calls wait while it holds more than `window` undelivered events. Only a
//! subscriber that handles nothing for longer than the stall limit (the plugin call time
//! limit) loses events: its cursor jumps to the end of the log, the skipped events are counted
//! (`warden_events_dropped_total{plugin}`) and logged, and it is told once per episode with a
//! `plugin:events-dropped` event.
//!
//! In a cluster the broker is given an [`EventRelay`]: events emitted on this node by plugins
//! and the operator go to the cluster's topic instead of the log, and come back from it as
//! [`PublishReceived`] (once per plugin, or on every node); Warden's own events stay local.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext as _, Context, Handler, Message, Recipient};

mod backlog;

pub use backlog::{held_bytes, EmitterBacklog};
use serde_json::json;
use tokio::sync::mpsc;
use warden_runtime::events::{EventPattern, ListenerReach};
use warden_runtime::Event;

/// The source of Warden's own events.
pub const WARDEN_SOURCE: &str = "warden";

/// Events a subscriber may have in flight (sent, not yet handled) at once.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// How long a subscriber may handle nothing while events wait for it before they are dropped
/// for it: the default plugin call time limit.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_millis(5_000);

/// Identifies one subscribing plugin instance; a restarted instance gets a new generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriberKey {
    /// The plugin's name; events it emitted are never delivered back to it.
    pub plugin: String,
    /// The instance's generation.
    pub generation: u64,
}

/// A batch of events for one subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverEvents {
    /// The instance generation the batch is for; a newer instance ignores older batches.
    pub generation: u64,
    /// Events in emission order.
    pub events: Vec<Arc<Event>>,
}

/// Publishes an event to every matching subscriber and stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishEvent {
    /// The event; its `source` decides who does not receive it.
    pub event: Arc<Event>,
    /// The emitting plugin's backlog, already charged with this event ([`EmitterBacklog::charge`]);
    /// `None` for Warden's own events.
    pub emitter: Option<Arc<EmitterBacklog>>,
}

/// An event received from the cluster's topic: delivered here only, to the listeners of its
/// reach (and to the event streams when it is for every node).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishReceived {
    /// The event, its `reach` set.
    pub event: Arc<Event>,
    /// The reader's backlog, already charged with this event, released when it leaves the log.
    pub backlog: Arc<EmitterBacklog>,
}

/// Where a cluster node's broker sends the events emitted on it (plugins' and the operator's).
pub trait EventRelay {
    /// Sends `event` on; releases `emitter` of it once sent (or given up).
    fn relay(&self, event: Arc<Event>, emitter: Option<Arc<EmitterBacklog>>);
}

/// A subscriber handled a batch: the broker sends it more, if more wait for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EventsHandled {
    /// The subscribing instance.
    pub subscriber: SubscriberKey,
}

/// Adds one subscription of a plugin instance to a pattern (counted: subscribe twice,
/// unsubscribe twice).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The subscribing instance.
    pub subscriber: SubscriberKey,
    /// The pattern to match.
    pub pattern: EventPattern,
    /// Which events of a cluster the subscription hears.
    pub reach: ListenerReach,
    /// Where batches go.
    pub deliver_to: Recipient<DeliverEvents>,
    /// Events sent to the subscriber and not yet handled; the subscriber decrements it.
    pub queue: Arc<AtomicUsize>,
}

/// Removes one subscription of a plugin instance to a pattern.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// The subscribing instance.
    pub subscriber: SubscriberKey,
    /// The pattern given to `Subscribe`.
    pub pattern: EventPattern,
    /// The reach given to `Subscribe`.
    pub reach: ListenerReach,
}

/// Removes every subscription of a plugin instance (unload, restart).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveSubscriber {
    /// The instance to forget.
    pub subscriber: SubscriberKey,
}

/// Opens a stream of every event matching `pattern` (the admin API's SSE endpoint).
#[derive(Message)]
#[rtype(result = "()")]
pub struct OpenEventStream {
    /// The pattern to match.
    pub pattern: EventPattern,
    /// Where events go; a full channel drops events for this stream, a closed one ends it.
    pub sender: mpsc::Sender<Arc<Event>>,
}

struct LoggedEvent {
    event: Arc<Event>,
    /// Charged with [`held_bytes`] of `event`, released when it leaves the log.
    emitter: Option<Arc<EmitterBacklog>>,
}

struct Subscriber {
    deliver_to: Recipient<DeliverEvents>,
    queue: Arc<AtomicUsize>,
    /// Each pattern and reach it subscribed with, and how many times.
    patterns: Vec<(EventPattern, ListenerReach, usize)>,
    /// The log position of the next event to consider for it.
    cursor: u64,
    /// When it last handled a batch, or was last idle.
    last_progress: Instant,
    /// Whether it lost events in the current stall and was told.
    stalled: bool,
}

impl Subscriber {
    fn wants(&self, key: &SubscriberKey, event: &Event) -> bool {
        key.plugin != event.source
            && self.patterns.iter().any(|(pattern, reach, _)| {
                event.reach.is_none_or(|wanted| wanted == *reach) && pattern.matches(&event.name)
            })
    }
}

struct EventStream {
    pattern: EventPattern,
    sender: mpsc::Sender<Arc<Event>>,
}

/// Whether anything on this node hears events for every node (an `everyNode` listener or an
/// event stream): while nothing does, the cluster's every-node reader skips each message
/// without decoding it, which is most of a node's work for events it does not want.
#[derive(Clone, Default)]
pub struct EveryNodeInterest(Arc<AtomicBool>);

impl EveryNodeInterest {
    /// Whether an event for every node would reach anything here now.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The event broker actor.
pub struct EventBroker {
    subscribers: HashMap<SubscriberKey, Subscriber>,
    streams: Vec<EventStream>,
    /// Events not yet past every subscriber's cursor, in emission order.
    log: VecDeque<LoggedEvent>,
    /// The log position of `log[0]`.
    log_start: u64,
    window: usize,
    stall_limit: Duration,
    flush_scheduled: bool,
    stall_check_scheduled: bool,
    /// In a cluster: where events emitted on this node go instead of the log.
    relay: Option<Box<dyn EventRelay>>,
    every_node_interest: EveryNodeInterest,
}

impl EventBroker {
    /// A broker whose subscribers may each have `window` events in flight, and lose waiting
    /// events after `stall_limit` without progress.
    pub fn new(window: usize, stall_limit: Duration) -> Self {
        EventBroker {
            subscribers: HashMap::new(),
            streams: Vec::new(),
            log: VecDeque::new(),
            log_start: 0,
            window: window.max(1),
            stall_limit,
            flush_scheduled: false,
            stall_check_scheduled: false,
            relay: None,
            every_node_interest: EveryNodeInterest::default(),
        }
    }

    /// The same broker on a cluster node: events emitted here go to `relay`.
    pub fn with_relay(mut self, relay: Box<dyn EventRelay>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Kept true by the broker while an `everyNode` listener or a stream exists here.
    pub fn every_node_interest(&self) -> EveryNodeInterest {
        self.every_node_interest.clone()
    }

    /// Recomputes the flag after something that may have ended the interest was removed;
    /// a flag already false cannot become true by a removal.
    fn note_every_node_interest(&self) {
        if !self.every_node_interest.any() {
            return;
        }
        let listening = self.subscribers.values().any(|subscriber| {
            subscriber
                .patterns
                .iter()
                .any(|(_, reach, _)| *reach == ListenerReach::EveryNode)
        });
        let interested = listening || !self.streams.is_empty();
        self.every_node_interest
            .0
            .store(interested, Ordering::Release);
    }

    fn log_end(&self) -> u64 {
        self.log_start + self.log.len() as u64
    }

    /// Sends each subscriber what waits for it, as far as its window allows, then forgets
    /// the events every subscriber has passed.
    fn flush(&mut self, context: &mut Context<Self>) {
        self.flush_scheduled = false;
        for (key, subscriber) in &mut self.subscribers {
            send_waiting(&self.log, self.log_start, self.window, key, subscriber);
        }
        self.trim_log();
        self.schedule_stall_check(context);
    }

    fn trim_log(&mut self) {
        let end = self.log_end();
        let passed_by_all = self
            .subscribers
            .values()
            .map(|subscriber| subscriber.cursor)
            .min()
            .unwrap_or(end);
        while self.log_start < passed_by_all {
            let Some(logged) = self.log.pop_front() else {
                break;
            };
            if let Some(emitter) = &logged.emitter {
                emitter.release(held_bytes(&logged.event));
            }
            self.log_start += 1;
        }
    }

    fn schedule_stall_check(&mut self, context: &mut Context<Self>) {
        if self.stall_check_scheduled {
            return;
        }
        let end = self.log_end();
        let waiting = self
            .subscribers
            .values()
            .any(|subscriber| subscriber.cursor < end);
        if waiting {
            self.stall_check_scheduled = true;
            let period = (self.stall_limit / 4).max(Duration::from_millis(1));
            context.run_later(period, |broker, context| {
                broker.stall_check_scheduled = false;
                broker.drop_for_stalled();
                broker.trim_log();
                broker.schedule_stall_check(context);
            });
        }
    }

    /// Skips the waiting events of every subscriber that handled nothing for longer than the
    /// stall limit.
    fn drop_for_stalled(&mut self) {
        let end = self.log_end();
        let now = Instant::now();
        for (key, subscriber) in &mut self.subscribers {
            if subscriber.cursor >= end
                || now.duration_since(subscriber.last_progress) < self.stall_limit
            {
                continue;
            }
            let mut dropped = 0u64;
            while subscriber.cursor < end {
                let logged = &self.log[(subscriber.cursor - self.log_start) as usize];
                if subscriber.wants(key, &logged.event) {
                    dropped += 1;
                }
                subscriber.cursor += 1;
            }
            if dropped == 0 {
                continue;
            }
            metrics::counter!("warden_events_dropped_total", "plugin" => key.plugin.clone())
                .increment(dropped);
            tracing::warn!(
                plugin = %key.plugin,
                dropped,
                stalled_for_ms = now.duration_since(subscriber.last_progress).as_millis() as u64,
                "a listener made no progress past the call time limit; events for it were dropped"
            );
            if !subscriber.stalled {
                subscriber.stalled = true;
                // Told once per episode, after the events already in flight to it.
                let notice = Event::new(
                    "plugin:events-dropped",
                    WARDEN_SOURCE,
                    json!({ "name": key.plugin, "dropped": dropped }),
                );
                subscriber.queue.fetch_add(1, Ordering::AcqRel);
                subscriber.deliver_to.do_send(DeliverEvents {
                    generation: key.generation,
                    events: vec![notice],
                });
            }
        }
    }
}

/// Sends `subscriber` what waits for it in the log, as far as its window allows.
fn send_waiting(
    log: &VecDeque<LoggedEvent>,
    log_start: u64,
    window: usize,
    key: &SubscriberKey,
    subscriber: &mut Subscriber,
) {
    let end = log_start + log.len() as u64;
    let in_flight = subscriber.queue.load(Ordering::Acquire);
    let room = window.saturating_sub(in_flight);
    if room == 0 || subscriber.cursor >= end {
        return;
    }
    let mut batch = Vec::new();
    while subscriber.cursor < end && batch.len() < room {
        let logged = &log[(subscriber.cursor - log_start) as usize];
        if subscriber.wants(key, &logged.event) {
            batch.push(logged.event.clone());
        }
        subscriber.cursor += 1;
    }
    if batch.is_empty() {
        return;
    }
    if in_flight == 0 {
        // It was idle: any stall starts now.
        subscriber.last_progress = Instant::now();
    }
    subscriber.queue.fetch_add(batch.len(), Ordering::AcqRel);
    metrics::counter!("warden_events_delivered_total").increment(batch.len() as u64);
    subscriber.deliver_to.do_send(DeliverEvents {
        generation: key.generation,
        events: batch,
    });
}

impl Default for EventBroker {
    fn default() -> Self {
        EventBroker::new(DEFAULT_QUEUE_CAPACITY, DEFAULT_STALL_LIMIT)
    }
}

impl Actor for EventBroker {
    // Emitters use `do_send`, which never waits on the mailbox's capacity.
    type Context = Context<Self>;
}

/// Flushes gathered deliveries; sent by the broker to itself after a run of publications.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushDeliveries;

impl Handler<FlushDeliveries> for EventBroker {
    type Result = ();

    fn handle(&mut self, _: FlushDeliveries, context: &mut Self::Context) {
        self.flush(context);
    }
}

impl EventBroker {
    /// Hands `event` to the streams and logs it for the subscribers that want it.
    fn publish_here(
        &mut self,
        event: Arc<Event>,
        emitter: Option<Arc<EmitterBacklog>>,
        context: &mut Context<Self>,
    ) {
        // A stream shows each event of the cluster once: those for every node, not the copies
        // for one listener plugin.
        let streamed = event.reach != Some(ListenerReach::OncePerPlugin);
        if streamed && !self.streams.is_empty() {
            self.streams.retain(|stream| {
                if !stream.pattern.matches(&event.name) {
                    return !stream.sender.is_closed();
                }
                match stream.sender.try_send(event.clone()) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            if self.streams.is_empty() {
                self.note_every_node_interest();
            }
        }
        let wanted = self
            .subscribers
            .iter()
            .any(|(key, subscriber)| subscriber.wants(key, &event));
        if !wanted {
            if let Some(emitter) = &emitter {
                emitter.release(held_bytes(&event));
            }
            return;
        }
        self.log.push_back(LoggedEvent { event, emitter });
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            context.notify(FlushDeliveries);
        }
    }
}

impl Handler<PublishEvent> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: PublishEvent, context: &mut Self::Context) {
        let PublishEvent { event, emitter } = message;
        match &self.relay {
            // Warden's own events are this node's (`plugin:*` carry its id); the rest is the
            // cluster's, and comes back from it.
            Some(relay) if event.source != WARDEN_SOURCE => relay.relay(event, emitter),
            _ => self.publish_here(event, emitter, context),
        }
    }
}

impl Handler<PublishReceived> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: PublishReceived, context: &mut Self::Context) {
        self.publish_here(message.event, Some(message.backlog), context);
    }
}

impl Handler<EventsHandled> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: EventsHandled, context: &mut Self::Context) {
        let Some(subscriber) = self.subscribers.get_mut(&message.subscriber) else {
            return;
        };
        subscriber.last_progress = Instant::now();
        subscriber.stalled = false;
        send_waiting(
            &self.log,
            self.log_start,
            self.window,
            &message.subscriber,
            subscriber,
        );
        self.trim_log();
        self.schedule_stall_check(context);
    }
}

impl Handler<Subscribe> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: Subscribe, _: &mut Self::Context) {
        // A new subscriber receives what is published from now on.
        let log_end = self.log_end();
        let subscriber = self
            .subscribers
            .entry(message.subscriber)
            .or_insert_with(|| Subscriber {
                deliver_to: message.deliver_to,
                queue: message.queue,
                patterns: Vec::new(),
                cursor: log_end,
                last_progress: Instant::now(),
                stalled: false,
            });
        match subscriber
            .patterns
            .iter_mut()
            .find(|(pattern, reach, _)| *pattern == message.pattern && *reach == message.reach)
        {
            Some((_, _, count)) => *count += 1,
            None => subscriber
                .patterns
                .push((message.pattern, message.reach, 1)),
        }
        // Only an `everyNode` listener starts the interest; nothing else is scanned for it.
        if message.reach == ListenerReach::EveryNode {
            self.every_node_interest.0.store(true, Ordering::Release);
        }
    }
}

impl Handler<Unsubscribe> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: Unsubscribe, _: &mut Self::Context) {
        let end = self.log_end();
        let Some(subscriber) = self.subscribers.get_mut(&message.subscriber) else {
            return;
        };
        if let Some(index) = subscriber
            .patterns
            .iter()
            .position(|(pattern, reach, _)| *pattern == message.pattern && *reach == message.reach)
        {
            subscriber.patterns[index].2 -= 1;
            if subscriber.patterns[index].2 == 0 {
                subscriber.patterns.remove(index);
            }
        }
        if subscriber.patterns.is_empty() && subscriber.cursor >= end {
            self.subscribers.remove(&message.subscriber);
            self.trim_log();
        }
        self.note_every_node_interest();
    }
}

impl Handler<RemoveSubscriber> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: RemoveSubscriber, _: &mut Self::Context) {
        self.subscribers.remove(&message.subscriber);
        self.trim_log();
        self.note_every_node_interest();
    }
}

impl Handler<OpenEventStream> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: OpenEventStream, _: &mut Self::Context) {
        self.streams.push(EventStream {
            pattern: message.pattern,
            sender: message.sender,
        });
        self.every_node_interest.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::Addr;
    use std::sync::Mutex;

    /// Records the names of the events delivered to it.
    struct Collector(Arc<Mutex<Vec<String>>>);

    impl Actor for Collector {
        type Context = Context<Self>;
    }

    impl Handler<DeliverEvents> for Collector {
        type Result = ();

        fn handle(&mut self, message: DeliverEvents, _: &mut Self::Context) {
            let mut names = self.0.lock().unwrap();
            names.extend(message.events.iter().map(|event| event.name.clone()));
        }
    }

    fn subscribe(
        broker: &Addr<EventBroker>,
        plugin: &str,
        reach: ListenerReach,
    ) -> Arc<Mutex<Vec<String>>> {
        let names = Arc::new(Mutex::new(Vec::new()));
        let collector = Collector(names.clone()).start();
        broker.do_send(Subscribe {
            subscriber: SubscriberKey {
                plugin: plugin.into(),
                generation: 1,
            },
            pattern: EventPattern::parse("x:*").unwrap(),
            reach,
            deliver_to: collector.recipient(),
            queue: Arc::new(AtomicUsize::new(0)),
        });
        names
    }

    fn received(name: &str, reach: ListenerReach) -> PublishReceived {
        PublishReceived {
            event: Arc::new(Event {
                name: name.into(),
                source: "emitter".into(),
                data: serde_json::Value::Null,
                data_json: "null".into(),
                reach: Some(reach),
                receipt: None,
            }),
            backlog: Arc::new(EmitterBacklog::new(usize::MAX, 100)),
        }
    }

    async fn wait_for(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::task::yield_now().await;
        }
        true
    }

    #[actix_rt::test]
    async fn an_event_from_the_cluster_reaches_only_the_listeners_of_its_reach() {
        let broker = EventBroker::default().start();
        let once = subscribe(&broker, "once", ListenerReach::OncePerPlugin);
        let every = subscribe(&broker, "every", ListenerReach::EveryNode);
        let (sender, mut stream) = mpsc::channel(10);
        broker.do_send(OpenEventStream {
            pattern: EventPattern::parse("x:*").unwrap(),
            sender,
        });
        broker.do_send(received("x:for-one-node", ListenerReach::OncePerPlugin));
        broker.do_send(received("x:for-every-node", ListenerReach::EveryNode));
        broker.do_send(PublishEvent {
            event: Event::new("x:local", "warden", serde_json::Value::Null),
            emitter: None,
        });
        assert!(
            wait_for(|| once.lock().unwrap().len() == 2 && every.lock().unwrap().len() == 2).await
        );
        assert_eq!(*once.lock().unwrap(), ["x:for-one-node", "x:local"]);
        assert_eq!(*every.lock().unwrap(), ["x:for-every-node", "x:local"]);
        // A stream shows each event of the cluster once: not the copy for one listener plugin.
        let streamed: Vec<String> = [stream.recv().await, stream.recv().await]
            .into_iter()
            .map(|event| event.unwrap().name.clone())
            .collect();
        assert_eq!(streamed, ["x:for-every-node", "x:local"]);
        assert!(stream.try_recv().is_err());
    }

    /// Records what the broker relays.
    struct RecordingRelay(Arc<Mutex<Vec<String>>>);

    impl EventRelay for RecordingRelay {
        fn relay(&self, event: Arc<Event>, emitter: Option<Arc<EmitterBacklog>>) {
            self.0.lock().unwrap().push(event.name.clone());
            if let Some(emitter) = emitter {
                emitter.release(held_bytes(&event));
            }
        }
    }

    #[actix_rt::test]
    async fn a_cluster_node_relays_what_plugins_and_the_operator_emit_and_keeps_its_own_events() {
        let relayed = Arc::new(Mutex::new(Vec::new()));
        let broker = EventBroker::default()
            .with_relay(Box::new(RecordingRelay(relayed.clone())))
            .start();
        let listener = subscribe(&broker, "listener", ListenerReach::OncePerPlugin);
        let backlog = Arc::new(EmitterBacklog::new(usize::MAX, 100));
        let event = Event::new("x:plugin", "emitter", serde_json::Value::Null);
        assert!(backlog.charge(held_bytes(&event)));
        broker.do_send(PublishEvent {
            event,
            emitter: Some(backlog.clone()),
        });
        broker.do_send(PublishEvent {
            event: Event::new("x:operator", "admin", serde_json::Value::Null),
            emitter: None,
        });
        broker.do_send(PublishEvent {
            event: Event::new("x:loaded", WARDEN_SOURCE, serde_json::Value::Null),
            emitter: None,
        });
        assert!(wait_for(|| listener.lock().unwrap().len() == 1).await);
        assert_eq!(
            *listener.lock().unwrap(),
            ["x:loaded"],
            "only Warden's own stay here"
        );
        assert_eq!(*relayed.lock().unwrap(), ["x:plugin", "x:operator"]);
        assert_eq!(backlog.events(), 0, "the emitter is released once relayed");
    }

    #[actix_rt::test]
    async fn the_every_node_interest_follows_every_node_listeners_and_streams() {
        let broker = EventBroker::default();
        let interest = broker.every_node_interest();
        let broker = broker.start();
        let _once = subscribe(&broker, "once", ListenerReach::OncePerPlugin);
        broker.send(Ping).await.unwrap();
        assert!(
            !interest.any(),
            "a listener once per plugin needs no every-node events"
        );
        let _every = subscribe(&broker, "every", ListenerReach::EveryNode);
        broker.send(Ping).await.unwrap();
        assert!(interest.any());
        broker.do_send(RemoveSubscriber {
            subscriber: SubscriberKey {
                plugin: "every".into(),
                generation: 1,
            },
        });
        broker.send(Ping).await.unwrap();
        assert!(!interest.any());
        let (sender, stream) = mpsc::channel(10);
        broker.do_send(OpenEventStream {
            pattern: EventPattern::parse("x:*").unwrap(),
            sender,
        });
        broker.send(Ping).await.unwrap();
        assert!(interest.any(), "an open stream shows events for every node");
        drop(stream);
        broker.do_send(received("x:after-close", ListenerReach::EveryNode));
        broker.send(Ping).await.unwrap();
        assert!(
            !interest.any(),
            "a closed stream is let go with its interest"
        );
    }

    /// Answers once the broker handled everything sent before it.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Ping;

    impl Handler<Ping> for EventBroker {
        type Result = ();

        fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
    }
}
