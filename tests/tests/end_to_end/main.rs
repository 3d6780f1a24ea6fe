//! End-to-end tests: each test starts its own `warden serve` (a fresh plugins directory, a port
//! chosen by the kernel) through the `warden_tests` harness and drives it over the admin API, as
//! `ADMIN_API.md` and `PLUGIN_API.md` describe. Plugins are written inline in the tests.
//!
//! Put a new test in the module whose subject it shares; add a module (and a line here) only
//! for a new subject.

// A panic is how a test fails (the workspace denies both outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The bearer token on every endpoint, and refused requests: 400, 404 and 422 answers, and that a
/// refused request changes nothing.
mod auth_and_errors;
/// Warden as a cluster: `GET /cluster`, membership, nodes going down, the desired state
/// followed by every node, `PluginInfo.nodes`, Kafka groups across nodes.
mod cluster;
/// Attacks on the cluster: sources the record cannot hold, stale directories, load order,
/// credentials shared by nodes, retries that would disturb what runs.
mod cluster_attacks;
/// Events in a cluster: once per plugin, `everyNode`, order, no self-delivery, local `plugin:*`
/// events, the operator's events and the streams cluster-wide, a killed node losing nothing.
mod cluster_events;
/// Event bus: order, no self-delivery, `*`/`**` patterns, `once`/`off`, admin and lifecycle
/// events, and the SSE stream.
mod events;
/// Execute: results, `this`, thrown errors, dependencies between plugins, isolation from Node,
/// module imports, timers, and concurrent calls into one plugin.
mod execution;
/// PostgreSQL, Kafka and S3 gateways on the local stack, overrides, `/ready`, restart durability.
mod gateways;
mod gateways_kafka_s3;
/// `/health`, `/ready`, `/metrics` and `/openapi.json`.
mod http_extras;
/// Plugins' HTTP routes on the public listener: matching, requests and responses, Warden's own
/// answers, errors that never leak, reload and unload, the listeners kept apart, metrics.
mod http_routes;
/// Attacks on plugins' HTTP routes by hostile plugins and clients: framing, forged responses,
/// thenables and unprintable throws, header injection, reloads, labels, paths and heap pressure.
mod http_routes_attacks;
/// Load, list, unload (with dependents and cascade), reload, overrides, scan, `--watch` and
/// shutdown on SIGTERM.
mod lifecycle;
/// The local stack itself: its Kafka on SQLite storage keeps topics and messages across a
/// killed broker.
mod local_stack;
/// A plugin's data over time: migrations applied once, in order and in one transaction,
/// listed and planned; transactions committed, rolled back, and ended by Warden.
mod plugin_data;
/// Attacks on migrations and transactions by hostile plugins and careless clients.
mod plugin_data_attacks;
/// Attacks a hostile plugin would send, by family: each refused with a typed error, nothing read,
/// written or harmed, and the database role refusing the same SQL run without the guard.
mod red_team;
/// Limits and supervision: runaway loops, heap exhaustion, restarts, the failed state, failing
/// `initialize`, throwing listeners.
mod supervision;
mod transaction_attacks;
