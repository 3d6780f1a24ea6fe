//! How many request-body bytes one plugin's calls hold at once.

use std::collections::HashMap;
use std::sync::Mutex;

/// Request bodies live in the plugin's heap while its handler runs (as a string or a
/// `Uint8Array`, beside the JSON text that carried them), so many concurrent uploads could
/// exhaust the heap and restart the plugin from outside. Each plugin's calls hold at most
/// `body_budget_bytes` of bodies (charged three times their size); a request over that waits for
/// nothing and is answered 503 with `Retry-After`. A body alone is always let in.
#[derive(Default)]
pub struct BodyBudget {
    held: Mutex<HashMap<String, usize>>,
}

/// A plugin's share of the budget, given back when the request is answered.
pub(super) struct BodyReservation<'a> {
    budget: &'a BodyBudget,
    plugin: &'a str,
    bytes: usize,
}

impl BodyBudget {
    pub(super) fn reserve<'a>(
        &'a self,
        plugin: &'a str,
        body_bytes: usize,
        limit: usize,
    ) -> Option<BodyReservation<'a>> {
        let bytes = body_bytes.saturating_mul(3);
        if bytes == 0 {
            return Some(BodyReservation {
                budget: self,
                plugin,
                bytes,
            });
        }
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let plugin_held = held.entry(plugin.to_owned()).or_default();
        if *plugin_held > 0 && plugin_held.saturating_add(bytes) > limit {
            return None;
        }
        *plugin_held = plugin_held.saturating_add(bytes);
        Some(BodyReservation {
            budget: self,
            plugin,
            bytes,
        })
    }
}

impl Drop for BodyReservation<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut held = self
            .budget
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(plugin_held) = held.get_mut(self.plugin) {
            *plugin_held = plugin_held.saturating_sub(self.bytes);
            if *plugin_held == 0 {
                held.remove(self.plugin);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_holds_at_most_its_share_and_gets_it_back() {
        let budget = BodyBudget::default();
        let first = budget.reserve("shop", 10, 60).expect("fits");
        assert!(
            budget.reserve("shop", 10, 60).is_some(),
            "30 + 30 fits in 60"
        );
        assert!(budget.reserve("shop", 20, 60).is_none(), "30 + 60 does not");
        assert!(
            budget.reserve("other", 20, 60).is_some(),
            "each plugin has its own share"
        );
        drop(first);
        assert!(
            budget.reserve("shop", 10, 60).is_some(),
            "a finished request gives its share back"
        );
    }

    #[test]
    fn a_body_alone_is_always_let_in_and_empty_bodies_are_free() {
        let budget = BodyBudget::default();
        let big = budget
            .reserve("shop", 1_000, 60)
            .expect("alone, over the share");
        assert!(
            budget.reserve("shop", 0, 60).is_some(),
            "no body, no charge"
        );
        assert!(budget.reserve("shop", 1, 60).is_none());
        drop(big);
        assert!(budget.reserve("shop", 1, 60).is_some());
    }
}
