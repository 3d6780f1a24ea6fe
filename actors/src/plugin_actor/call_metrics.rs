//! A plugin's call counters and duration histogram.

use std::time::Duration;

use warden_runtime::{Error, Result};

/// The call metrics of one plugin, registered once: a lookup by labels on every call cost the
/// plugin's thread more than the counting.
pub(super) struct CallMetrics {
    pub(super) plugin: String,
    ok: metrics::Counter,
    timeout: metrics::Counter,
    error: metrics::Counter,
    duration: metrics::Histogram,
}

impl CallMetrics {
    pub(super) fn new(plugin: &str) -> Self {
        let calls = |outcome: &'static str| metrics::counter!("warden_plugin_calls_total", "plugin" => plugin.to_owned(), "outcome" => outcome);
        CallMetrics {
            plugin: plugin.to_owned(),
            ok: calls("ok"),
            timeout: calls("timeout"),
            error: calls("error"),
            duration: metrics::histogram!("warden_plugin_call_duration_seconds", "plugin" => plugin.to_owned()),
        }
    }

    pub(super) fn record<T>(&self, result: &Result<T>, elapsed: Duration) {
        match result {
            Ok(_) => self.ok.increment(1),
            Err(Error::Timeout { .. }) => self.timeout.increment(1),
            Err(_) => self.error.increment(1),
        }
        self.duration.record(elapsed.as_secs_f64());
    }
}
