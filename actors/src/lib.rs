//! Warden's actor system.
//!
//! - [`manager::PluginManager`]: the registry of loaded plugins; load, unload, reload, scan,
//!   watch, overrides; it starts one [`plugin_actor::PluginActor`] per plugin under an actix
//!   `Supervisor`.
//! - [`plugin_actor::PluginActor`]: one plugin instance, its supervision and backoff.
//! - [`broker::EventBroker`]: subscriptions by pattern, batched fan-out, bounded queues.
//! - [`directory::PluginDirectory`]: running plugins' addresses, for calls that must not wait
//!   on the manager.
//! - [`state_store::StateStore`]: Warden's own durable state in PostgreSQL, per node.
//! - [`cluster::Membership`]: this node's heartbeat in a cluster, and the node list.
//! - [`system::Warden`]: starts the whole system and is the one handle the binary holds.
//!
//! This crate knows nothing of HTTP or JSON-over-HTTP shapes: the binary maps its types.

pub mod broker;
mod capabilities;
pub mod cluster;
pub mod directory;
pub mod error;
pub mod gateways;
pub mod manager;
pub mod plugin_actor;
pub mod state_store;
pub mod system;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
