//! The plugin actor's messages, its states, its supervision policy and the services every
//! plugin actor shares.

use super::*;

/// A plugin's lifecycle state, as the admin API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginState {
    /// Loading: the module is evaluated and `initialize` runs.
    Starting,
    /// Serving calls and events.
    Running,
    /// Crashed; a new instance starts after the backoff.
    Restarting,
    /// Crashed too often within the window; calls fail until an operator reloads it.
    Failed,
    /// Unloading: `cleanup` runs, then the instance is disposed.
    Stopping,
}

impl PluginState {
    /// The lowercase name the admin API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Starting => "starting",
            PluginState::Running => "running",
            PluginState::Restarting => "restarting",
            PluginState::Failed => "failed",
            PluginState::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Restart intensity and backoff of every plugin actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisionPolicy {
    /// Restarts allowed within `window`; one more marks the plugin failed.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub window: Duration,
    /// Backoff before the first restart; doubled for each further restart within the window.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for SupervisionPolicy {
    fn default() -> Self {
        SupervisionPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl SupervisionPolicy {
    /// The backoff before restart number `attempt` (1-based) within the window.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Tells the manager that a plugin actor changed state.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PluginStateChanged {
    /// The plugin's name.
    pub plugin: String,
    /// Which actor sent it (a reload replaces the actor; stale reports are ignored).
    pub actor_id: u64,
    /// The new state.
    pub state: PluginState,
    /// Restarts since the plugin was loaded.
    pub restarts: u32,
    /// Why, for restarts and failures.
    pub reason: Option<String>,
}

/// What every plugin actor shares: the broker, the directory, the manager, the policy.
#[derive(Clone)]
pub struct PluginServices {
    /// The event broker.
    pub broker: actix::Addr<EventBroker>,
    /// Where dependencies are looked up.
    pub directory: PluginDirectory,
    /// Where state changes are reported.
    pub state_changes: Recipient<PluginStateChanged>,
    /// Restart intensity and backoff.
    pub policy: SupervisionPolicy,
    /// The time limit of one call, applied to every plugin kind.
    pub call_timeout: Duration,
    /// The largest event `data` a plugin may emit, applied to every plugin kind.
    pub max_message_bytes: usize,
    /// Events a plugin may have in flight as a listener; as an emitter, undelivered events past
    /// which its new calls wait.
    pub event_queue_capacity: usize,
    /// Bytes of undelivered events an emitter may hold (its heap limit).
    pub event_backlog_bytes: usize,
}

/// Creates the instance (evaluates the module) and describes it.
#[derive(Message)]
#[rtype(result = "Result<PluginDescription>")]
pub struct CreateInstance;

/// Runs `initialize` with a fresh context; the plugin is running once it resolves.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct InitializeInstance {
    /// The gateway actors this and every restarted instance's context use.
    pub gateways: PluginGateways,
    /// The grants those gateways hold (for `getAllowed*`).
    pub grants: ResourceGrants,
}

/// Calls `execute` or an exported function.
#[derive(Message)]
#[rtype(result = "Result<Value>")]
pub struct CallPlugin {
    /// What to call.
    pub target: CallTarget,
    /// Its arguments, as JSON.
    pub arguments: Vec<Value>,
}

/// Stops the instance: `cleanup()` when asked, then dispose. The actor stays, idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopInstance {
    /// Whether to call the plugin's `cleanup()` first.
    pub cleanup: bool,
}

/// Ends the actor for good (after `StopInstance`); it answers `PluginUnloadedError` until its
/// last address is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TerminatePlugin;

/// The instance of `generation` broke; restart it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InstanceFailed {
    /// Which instance broke; reports about older instances are ignored.
    pub generation: u64,
    /// What broke it.
    pub error: Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let policy = SupervisionPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        };
        let delays: Vec<u128> = (1..=9)
            .map(|attempt| policy.backoff(attempt).as_millis())
            .collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        assert_eq!(
            policy.backoff(0),
            Duration::from_millis(50),
            "attempt 0 is the first"
        );
        assert_eq!(
            policy.backoff(u32::MAX),
            Duration::from_secs(5),
            "never overflows"
        );
    }
}
