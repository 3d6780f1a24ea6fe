//! EventBroker: subscriptions by pattern, fan-out in batches, per-pair FIFO, bounded queues.
//!
//! Every event goes through this one actor, so events from one emitter reach each listener in
//! the order they were emitted. Deliveries are gathered per subscriber and flushed as one
//! message per subscriber, so a plugin actor handles a whole batch per mailbox turn. Each
//! subscriber has a bounded queue (events sent but not yet handled): past its capacity, events
//! for that subscriber are dropped and counted, and the emitter is never blocked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext as _, Context, Handler, Message, Recipient};
use tokio::sync::mpsc;
use warden_runtime::events::EventPattern;
use warden_runtime::Event;

/// Events a subscriber may have queued before further events for it are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

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

struct Subscriber {
    deliver_to: Recipient<DeliverEvents>,
    queue: Arc<AtomicUsize>,
    patterns: Vec<(EventPattern, usize)>,
    pending: Vec<Arc<Event>>,
    dropped_since_warning: u64,
    last_warning: Option<Instant>,
}

impl Subscriber {
    fn matches(&self, event: &Event) -> bool {
        self.patterns
            .iter()
            .any(|(pattern, _)| pattern.matches(&event.name))
    }
}

struct EventStream {
    pattern: EventPattern,
    sender: mpsc::Sender<Arc<Event>>,
}

/// The event broker actor.
pub struct EventBroker {
    subscribers: HashMap<SubscriberKey, Subscriber>,
    streams: Vec<EventStream>,
    queue_capacity: usize,
    flush_scheduled: bool,
}

impl EventBroker {
    /// A broker whose subscribers may each have `queue_capacity` events in flight.
    pub fn new(queue_capacity: usize) -> Self {
        EventBroker {
            subscribers: HashMap::new(),
            streams: Vec::new(),
            queue_capacity: queue_capacity.max(1),
            flush_scheduled: false,
        }
    }

    fn flush(&mut self) {
        self.flush_scheduled = false;
        let capacity = self.queue_capacity;
        for (key, subscriber) in &mut self.subscribers {
            if subscriber.pending.is_empty() {
                continue;
            }
            let mut events = std::mem::take(&mut subscriber.pending);
            let queued = subscriber.queue.load(Ordering::Acquire);
            let room = capacity.saturating_sub(queued);
            if events.len() > room {
                let dropped = (events.len() - room) as u64;
                events.truncate(room);
                metrics::counter!("warden_events_dropped_total", "plugin" => key.plugin.clone())
                    .increment(dropped);
                subscriber.dropped_since_warning += dropped;
                // One warning per subscriber per second, so a flood does not flood the log too.
                let now = Instant::now();
                if subscriber
                    .last_warning
                    .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1))
                {
                    tracing::warn!(
                        plugin = %key.plugin,
                        dropped = subscriber.dropped_since_warning,
                        capacity,
                        "event queue full; events for this plugin were dropped"
                    );
                    subscriber.dropped_since_warning = 0;
                    subscriber.last_warning = Some(now);
                }
            }
            if events.is_empty() {
                continue;
            }
            subscriber.queue.fetch_add(events.len(), Ordering::AcqRel);
            metrics::counter!("warden_events_delivered_total").increment(events.len() as u64);
            subscriber.deliver_to.do_send(DeliverEvents {
                generation: key.generation,
                events,
            });
        }
    }
}

impl Default for EventBroker {
    fn default() -> Self {
        EventBroker::new(DEFAULT_QUEUE_CAPACITY)
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

    fn handle(&mut self, _: FlushDeliveries, _: &mut Self::Context) {
        self.flush();
    }
}

impl Handler<PublishEvent> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: PublishEvent, context: &mut Self::Context) {
        let event = message.event;
        let mut gathered = false;
        for (key, subscriber) in &mut self.subscribers {
            if key.plugin != event.source && subscriber.matches(&event) {
                subscriber.pending.push(event.clone());
                gathered = true;
            }
        }
        if !self.streams.is_empty() {
            self.streams.retain(|stream| {
                if !stream.pattern.matches(&event.name) {
                    return !stream.sender.is_closed();
                }
                match stream.sender.try_send(event.clone()) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        if gathered && !self.flush_scheduled {
            self.flush_scheduled = true;
            context.notify(FlushDeliveries);
        }
    }
}

impl Handler<Subscribe> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: Subscribe, _: &mut Self::Context) {
        let subscriber = self
            .subscribers
            .entry(message.subscriber)
            .or_insert_with(|| Subscriber {
                deliver_to: message.deliver_to,
                queue: message.queue,
                patterns: Vec::new(),
                pending: Vec::new(),
                dropped_since_warning: 0,
                last_warning: None,
            });
        match subscriber
            .patterns
            .iter_mut()
            .find(|(pattern, _)| *pattern == message.pattern)
        {
            Some((_, count)) => *count += 1,
            None => subscriber.patterns.push((message.pattern, 1)),
        }
    }
}

impl Handler<Unsubscribe> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: Unsubscribe, _: &mut Self::Context) {
        let Some(subscriber) = self.subscribers.get_mut(&message.subscriber) else {
            return;
        };
        if let Some(index) = subscriber
            .patterns
            .iter()
            .position(|(pattern, _)| *pattern == message.pattern)
        {
            subscriber.patterns[index].1 -= 1;
            if subscriber.patterns[index].1 == 0 {
                subscriber.patterns.remove(index);
            }
        }
        if subscriber.patterns.is_empty() && subscriber.pending.is_empty() {
            self.subscribers.remove(&message.subscriber);
        }
    }
}

impl Handler<RemoveSubscriber> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: RemoveSubscriber, _: &mut Self::Context) {
        self.subscribers.remove(&message.subscriber);
    }
}

impl Handler<OpenEventStream> for EventBroker {
    type Result = ();

    fn handle(&mut self, message: OpenEventStream, _: &mut Self::Context) {
        self.streams.push(EventStream {
            pattern: message.pattern,
            sender: message.sender,
        });
    }
}
