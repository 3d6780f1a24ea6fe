//! A call into plugin code with panics caught and the time limit applied.

use super::*;

/// Runs a plugin call with panics caught and the time limit applied.
pub(super) fn guarded<T: 'static>(
    plugin: &str,
    timeout: Duration,
    call: impl FnOnce() -> warden_runtime::PluginFuture<T>,
) -> futures::future::LocalBoxFuture<'static, Result<T>> {
    let plugin = plugin.to_string();
    let future = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(future) => future,
        Err(panic) => {
            let error = Error::Crashed {
                plugin,
                reason: panic_message(&panic),
            };
            return Box::pin(futures::future::ready(Err(error)));
        }
    };
    Box::pin(async move {
        match tokio::time::timeout(timeout, AssertUnwindSafe(future).catch_unwind()).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(Error::Crashed {
                plugin,
                reason: panic_message(&panic),
            }),
            Err(_elapsed) => Err(Error::Timeout {
                plugin,
                limit_ms: timeout.as_millis() as u64,
            }),
        }
    })
}

pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("panicked: {text}")
}
