//! What one emitter's undelivered events cost, and the wait its calls make while they drain
//! (`PLUGIN_API.md`, "Events under load": the emitter pays for its own burst).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use warden_runtime::Event;

/// One plugin instance's emitted events that have not reached every listener yet: charged at
/// `emit`, released when the event leaves the broker's log.
#[derive(Debug)]
pub struct EmitterBacklog {
    events: AtomicUsize,
    bytes: AtomicUsize,
    /// Most bytes of undelivered events; an emit past it is refused.
    byte_budget: usize,
    /// Most undelivered events before the emitter's new calls wait.
    call_threshold: usize,
    drained: Notify,
}

impl EmitterBacklog {
    /// A backlog refusing emits past `byte_budget` bytes and holding calls past
    /// `call_threshold` events.
    pub fn new(byte_budget: usize, call_threshold: usize) -> Self {
        EmitterBacklog {
            events: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            byte_budget,
            call_threshold: call_threshold.max(1),
            drained: Notify::new(),
        }
    }

    /// Counts one event of `bytes` as undelivered, or answers `false` (counting nothing) when
    /// it would take the backlog past its byte budget.
    pub fn charge(&self, bytes: usize) -> bool {
        let charged = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes)
                    .filter(|total| *total <= self.byte_budget || held == 0)
            })
            .is_ok();
        if charged {
            self.events.fetch_add(1, Ordering::AcqRel);
        }
        charged
    }

    pub(crate) fn release(&self, bytes: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
        let before = self
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(1))
            })
            .unwrap_or(0);
        if before == self.call_threshold + 1 {
            self.drained.notify_waiters();
        }
    }

    /// Whether the emitter holds more undelivered events than its new calls may start with.
    pub fn holds_calls(&self) -> bool {
        self.events() > self.call_threshold
    }

    /// Undelivered events.
    pub fn events(&self) -> usize {
        self.events.load(Ordering::Acquire)
    }

    /// The byte budget, for refusal messages.
    pub fn byte_budget(&self) -> usize {
        self.byte_budget
    }

    /// Waits until the emitter holds at most its call threshold of undelivered events.
    pub async fn wait_until_drained(&self) {
        loop {
            let drained = self.drained.notified();
            if self.events() <= self.call_threshold {
                return;
            }
            drained.await;
        }
    }
}

/// What an event holds in memory, roughly: its serialized data, the parsed data beside it
/// (counted as twice the text), its name and source, and the allocation overheads.
pub fn held_bytes(event: &Event) -> usize {
    const OVERHEAD: usize = 128;
    event.data_json.len() * 3 + event.name.len() + event.source.len() + OVERHEAD
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_backlog_refuses_past_its_byte_budget_but_always_takes_one_event() {
        let backlog = EmitterBacklog::new(1_000, 10);
        assert!(
            backlog.charge(2_000),
            "an empty backlog takes one event of any size"
        );
        assert!(!backlog.charge(1), "then it is over budget");
        assert_eq!(backlog.events(), 1, "a refused charge counts nothing");
        backlog.release(2_000);
        assert!(backlog.charge(600));
        assert!(!backlog.charge(600), "600 + 600 is over 1,000");
        assert!(backlog.charge(400));
        assert_eq!(backlog.events(), 2);
    }

    #[actix_rt::test]
    async fn calls_are_held_past_the_threshold_and_released_when_it_drains() {
        let backlog = Arc::new(EmitterBacklog::new(usize::MAX, 2));
        for _ in 0..3 {
            assert!(backlog.charge(1));
        }
        assert!(backlog.holds_calls());
        let waiter = {
            let backlog = backlog.clone();
            actix_rt::spawn(async move { backlog.wait_until_drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "held while over the threshold");
        backlog.release(1);
        assert!(!backlog.holds_calls());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released once drained")
            .expect("the waiter ran");
    }
}
