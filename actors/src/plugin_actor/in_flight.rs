//! The calls a plugin instance is running, so that an unload or a reload lets them finish
//! (within the call time limit) before `cleanup()` runs and the instance is disposed.

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;

/// A count of running calls, shared by the actor and its call futures (one thread).
#[derive(Default)]
pub(super) struct InFlightCalls {
    running: Cell<usize>,
    idle: Notify,
}

/// Held by one running call; dropping it (the call finished or was dropped) ends the call.
pub(super) struct RunningCall(Rc<InFlightCalls>);

impl InFlightCalls {
    /// Counts a call until the returned guard drops.
    pub(super) fn start(self: &Rc<Self>) -> RunningCall {
        self.running.set(self.running.get() + 1);
        RunningCall(Rc::clone(self))
    }

    /// Resolves once no call runs.
    pub(super) async fn idle(&self) {
        loop {
            // Created before the check, so a call ending in between still wakes it.
            let notified = self.idle.notified();
            if self.running.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        let left = self.0.running.get().saturating_sub(1);
        self.0.running.set(left);
        if left == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    #[test]
    fn idle_waits_for_every_running_call() {
        let calls = Rc::new(InFlightCalls::default());
        assert!(calls.idle().now_or_never().is_some(), "idle with no call");
        let first = calls.start();
        let second = calls.start();
        let mut idle = Box::pin(calls.idle());
        assert!((&mut idle).now_or_never().is_none());
        drop(first);
        assert!((&mut idle).now_or_never().is_none(), "one call still runs");
        drop(second);
        assert!(idle.now_or_never().is_some());
    }
}
