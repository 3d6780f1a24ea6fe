//! The gateways against the real PostgreSQL, Tansu and Garage of the local stack
//! (`just infra-up`): one test binary, a module per gateway.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod database;
mod garage_keys;
mod kafka;
mod storage;
