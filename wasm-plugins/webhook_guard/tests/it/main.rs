//! Integration tests: the built `webhook_guard.wasm` driven by the
//! proxy-wasm test host exactly like Kong (and, with `BodyMode::Streamed`,
//! like an Envoy-style host delivering body chunks).
//!
//! Build the filter first:
//! `cargo build --release --target wasm32-wasip1 -p webhook-guard`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config;
mod dedup;
mod espocrm;
mod hmac_scheme;
mod props;
mod shared_token;
mod standard_webhooks;
mod utils;
