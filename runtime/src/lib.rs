//! What a Warden plugin is and the rules it lives by.
//!
//! - [`manifest`]: a plugin's `metadata` and the naming rules.
//! - [`graph`]: the dependency graph (validation, load and unload order).
//! - [`access`]: access levels per granted resource (`owner`/`write`/`read`, ...).
//! - [`resources`]: declared resources plus operator overrides become grants with physical
//!   names; the one place a physical name is computed.
//! - [`events`]: event names and `*`/`**` patterns.
//! - [`routes`]: a plugin's HTTP routes, validated at load and matched per request.
//! - [`sql_guard`] and [`ksql_guard`]: what a plugin's SQL and ksqlDB statements may do, and
//!   their rewriting to physical names.
//! - [`plugin`]: the [`Plugin`] trait and the capabilities a [`PluginContext`] is made of.
//! - [`js`]: the QuickJS host that turns a JavaScript/TypeScript module into a `Plugin`.
//!
//! This crate must not depend on actix, HTTP or any client library: the actor system
//! implements the capabilities, this crate only defines them.

pub mod access;
pub mod error;
pub mod events;
pub mod graph;
pub mod js;
pub mod ksql_guard;
pub mod manifest;
pub mod migrations;
pub mod plugin;
pub mod resources;
pub mod routes;
pub mod sql_guard;
pub mod transactions;

pub use error::{Error, Result};
pub use js::sha256_hex;
pub use plugin::{
    CallTarget, Database, Dependencies, DependencyInfo, Event, Events, HostLimit, Kafka,
    KafkaOutgoing, KafkaRecord, Plugin, PluginContext, PluginDescription, PluginFactory,
    PluginFuture, PluginLimits, SqlStatement, Storage, Supervision,
};
