//! The host's bookkeeping for a plugin's log budget and timers: pure state, no engine, no clock.
//!
//! Both are kept on the Rust side of the engine, so they hold whatever the plugin's JavaScript
//! does; callers pass the current time in, which keeps every rule here testable without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The shortest delay of a nested or repeating timer, as browsers clamp them.
pub(crate) const MINIMUM_TIMER_DELAY: Duration = Duration::from_millis(4);

/// From this nesting level on, a timer's delay is at least [`MINIMUM_TIMER_DELAY`] (Chrome and
/// Firefox use 5; the HTML standard's "greater than 5" counts from 0 and means the same chain).
pub(crate) const TIMER_NESTING_CLAMP_LEVEL: u32 = 5;

/// How long one window of the log budget lasts.
const LOG_WINDOW: Duration = Duration::from_secs(1);

/// The delay of a new timer. `requested_ms` is what the plugin passed (anything not a positive
/// finite number is 0); `nesting_level` is 1 for a timer created outside any timer callback and
/// one more than the running callback's level inside one. Repeating timers are always clamped,
/// so a zero-delay `setInterval` fires at most every 4 ms instead of holding a core.
pub(crate) fn timer_delay(requested_ms: f64, nesting_level: u32, repeat: bool) -> Duration {
    let milliseconds = if requested_ms.is_finite() && requested_ms > 0.0 {
        requested_ms.min(f64::from(u32::MAX)) as u64
    } else {
        0
    };
    let delay = Duration::from_millis(milliseconds);
    if repeat || nesting_level >= TIMER_NESTING_CLAMP_LEVEL {
        delay.max(MINIMUM_TIMER_DELAY)
    } else {
        delay
    }
}

/// What a closed log window dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct DroppedLog {
    pub bytes: u64,
    pub lines: u64,
}

/// Log output per plugin per one-second window: lines past the budget are dropped whole, and
/// what a window dropped is reported once, when the next line opens a new window (or when the
/// instance is disposed).
#[derive(Debug)]
pub(crate) struct LogBudget {
    bytes_per_second: u64,
    window_started: Option<Instant>,
    written: u64,
    dropped: DroppedLog,
}

impl LogBudget {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        LogBudget {
            bytes_per_second,
            window_started: None,
            written: 0,
            dropped: DroppedLog::default(),
        }
    }

    pub(crate) fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// Decides whether a line of `bytes` written at `now` goes to the log. Also returns what the
    /// previous window dropped when this line opens a new one, so it is reported first.
    pub(crate) fn admit(&mut self, bytes: u64, now: Instant) -> (bool, Option<DroppedLog>) {
        let mut closed = None;
        let window_over = self
            .window_started
            .is_none_or(|started| now.saturating_duration_since(started) >= LOG_WINDOW);
        if window_over {
            closed = self.take_dropped();
            self.window_started = Some(now);
            self.written = 0;
        }
        if self.written.saturating_add(bytes) <= self.bytes_per_second {
            self.written += bytes;
            (true, closed)
        } else {
            self.dropped.bytes = self.dropped.bytes.saturating_add(bytes);
            self.dropped.lines += 1;
            (false, closed)
        }
    }

    /// What the current window dropped so far, if anything; forgets it.
    pub(crate) fn take_dropped(&mut self) -> Option<DroppedLog> {
        let dropped = std::mem::take(&mut self.dropped);
        (dropped.lines > 0).then_some(dropped)
    }
}

/// A plugin's pending timers as the host knows them: the limit is counted here, never in the
/// plugin's own heap, and each timer keeps its nesting level for the browser clamp.
#[derive(Debug)]
pub(crate) struct TimerBook {
    max_timers: usize,
    /// Timer id → nesting level.
    pending: HashMap<u64, u32>,
    /// The nesting level of the timer callback running now; 0 when none is.
    running_level: u32,
}

/// A timer the book accepted: how long to wait before it fires (and between repeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptedTimer {
    pub delay: Duration,
}

impl TimerBook {
    pub(crate) fn new(max_timers: usize) -> Self {
        TimerBook {
            max_timers,
            pending: HashMap::new(),
            running_level: 0,
        }
    }

    pub(crate) fn max_timers(&self) -> usize {
        self.max_timers
    }

    /// Accepts timer `id`, or refuses it (`None`) when the limit of pending timers is reached
    /// or the id is already pending.
    pub(crate) fn start(
        &mut self,
        id: u64,
        requested_ms: f64,
        repeat: bool,
    ) -> Option<AcceptedTimer> {
        if self.pending.len() >= self.max_timers || self.pending.contains_key(&id) {
            return None;
        }
        let level = self.running_level.saturating_add(1);
        self.pending.insert(id, level);
        Some(AcceptedTimer {
            delay: timer_delay(requested_ms, level, repeat),
        })
    }

    /// Forgets a pending timer; whether it was pending.
    pub(crate) fn clear(&mut self, id: u64) -> bool {
        self.pending.remove(&id).is_some()
    }

    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    /// Timer `id` fires now: a one-shot timer stops being pending, and timers created by its
    /// callback nest under it. `false` when the timer is no longer pending (it was cleared).
    pub(crate) fn begin_firing(&mut self, id: u64, repeat: bool) -> bool {
        let level = if repeat {
            self.pending.get(&id).copied()
        } else {
            self.pending.remove(&id)
        };
        match level {
            Some(level) => {
                self.running_level = level;
                true
            }
            None => false,
        }
    }

    /// The callback returned (and the jobs it queued ran).
    pub(crate) fn end_firing(&mut self) {
        self.running_level = 0;
    }

    /// Forgets every timer (dispose, engine failure).
    pub(crate) fn clear_all(&mut self) {
        self.pending.clear();
        self.running_level = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_level_timers_keep_their_delay_and_nested_ones_are_clamped_from_level_five() {
        assert_eq!(timer_delay(0.0, 1, false), Duration::ZERO);
        assert_eq!(timer_delay(2.0, 4, false), Duration::from_millis(2));
        assert_eq!(timer_delay(0.0, 5, false), MINIMUM_TIMER_DELAY);
        assert_eq!(timer_delay(1.0, 50, false), MINIMUM_TIMER_DELAY);
        assert_eq!(timer_delay(10.0, 50, false), Duration::from_millis(10));
    }

    #[test]
    fn repeating_timers_are_always_clamped() {
        assert_eq!(timer_delay(0.0, 1, true), MINIMUM_TIMER_DELAY);
        assert_eq!(timer_delay(-5.0, 1, true), MINIMUM_TIMER_DELAY);
        assert_eq!(timer_delay(f64::NAN, 1, true), MINIMUM_TIMER_DELAY);
        assert_eq!(timer_delay(100.0, 1, true), Duration::from_millis(100));
    }

    #[test]
    fn hostile_delays_become_zero_or_the_largest_delay() {
        assert_eq!(timer_delay(f64::INFINITY, 1, false), Duration::ZERO);
        assert_eq!(timer_delay(-1.0, 1, false), Duration::ZERO);
        assert_eq!(
            timer_delay(1e300, 1, false),
            Duration::from_millis(u64::from(u32::MAX))
        );
    }

    #[test]
    fn the_timer_book_refuses_past_its_limit_until_one_is_cleared() {
        let mut book = TimerBook::new(3);
        for id in 1..=3 {
            assert!(book.start(id, 1_000.0, false).is_some());
        }
        assert_eq!(book.start(4, 1_000.0, false), None, "a fourth is refused");
        assert!(book.clear(2));
        assert!(!book.clear(2), "clearing twice frees one slot only");
        assert!(book.start(4, 1_000.0, false).is_some());
        assert_eq!(book.start(5, 1_000.0, false), None);
    }

    #[test]
    fn a_fired_one_shot_timer_frees_its_slot_and_an_interval_keeps_it() {
        let mut book = TimerBook::new(2);
        book.start(1, 0.0, false);
        book.start(2, 0.0, true);
        assert!(book.begin_firing(1, false));
        book.end_firing();
        assert!(book.begin_firing(2, true));
        book.end_firing();
        assert!(!book.is_pending(1));
        assert!(book.is_pending(2));
        assert!(
            !book.begin_firing(1, false),
            "a fired timer does not fire again"
        );
        assert!(book.start(3, 0.0, false).is_some());
        assert_eq!(book.start(4, 0.0, false), None);
    }

    #[test]
    fn timers_created_by_timer_callbacks_nest_and_a_chain_is_clamped_at_level_five() {
        let mut book = TimerBook::new(100);
        let mut delays = Vec::new();
        let mut id = 1;
        delays.push(book.start(id, 0.0, false).map(|timer| timer.delay));
        for _ in 0..6 {
            assert!(book.begin_firing(id, false));
            id += 1;
            delays.push(book.start(id, 0.0, false).map(|timer| timer.delay));
            book.end_firing();
        }
        let zero = Some(Duration::ZERO);
        let clamped = Some(MINIMUM_TIMER_DELAY);
        assert_eq!(
            delays,
            [zero, zero, zero, zero, clamped, clamped, clamped],
            "levels 1 to 4 run at once, level 5 on wait 4 ms"
        );
        assert_eq!(
            book.start(99, 0.0, false).map(|timer| timer.delay),
            zero,
            "outside a callback a timer is level 1 again"
        );
    }

    #[test]
    fn the_log_budget_drops_whole_lines_past_the_budget_and_reports_them_when_the_next_window_opens(
    ) {
        let start = Instant::now();
        let mut budget = LogBudget::new(100);
        assert_eq!(budget.admit(60, start), (true, None));
        assert_eq!(budget.admit(40, start), (true, None), "exactly the budget");
        assert_eq!(budget.admit(1, start), (false, None));
        assert_eq!(
            budget.admit(500, start + Duration::from_millis(999)),
            (false, None)
        );
        let next_window = start + Duration::from_secs(1);
        assert_eq!(
            budget.admit(10, next_window),
            (
                true,
                Some(DroppedLog {
                    bytes: 501,
                    lines: 2
                })
            ),
            "the new window reports what the old one dropped, once"
        );
        assert_eq!(budget.admit(10, next_window), (true, None));
        assert_eq!(budget.take_dropped(), None);
    }

    #[test]
    fn a_line_larger_than_the_whole_budget_is_dropped() {
        let now = Instant::now();
        let mut budget = LogBudget::new(10);
        assert_eq!(budget.admit(11, now), (false, None));
        assert_eq!(
            budget.take_dropped(),
            Some(DroppedLog {
                bytes: 11,
                lines: 1
            })
        );
    }
}
