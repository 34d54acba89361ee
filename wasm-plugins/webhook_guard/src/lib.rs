//! `webhook_guard`: a proxy-wasm filter (Kong 3.9 / ngx_wasm_module, also
//! Envoy-style hosts) in front of the bitbylaw worker's event intake.
//!
//! For each webhook route it verifies the sender (EspoCRM, Standard
//! Webhooks, generic HMAC-SHA256, shared token — constant time, secret
//! rotation), enforces body size, content type, JSON and payload shape,
//! answers exact re-deliveries at the edge from a bounded dedup memory in
//! shared data, and forwards accepted events to the worker with the gateway
//! headers (`X-Event-Topic`, `X-Event-Id`, `X-Dedup-Key`, `X-Received-At`,
//! `X-Gateway-Signature`). The pure logic it relies on lives in
//! `bitbylaw-core`; see README.md for the configuration reference.
//!
//! # Layout
//! - [`config`]: part 1 — the per-route configuration, parsed and validated
//!   once in `on_configure`.
//! - [`filter`]: part 2 — the root context (configuration, metrics) and
//!   part 3 — the HTTP context (one per request).
//! - [`verify`]: maps the configured scheme onto core's signature checks.
//! - [`payload`]: payload shape checks (EspoCRM batch, object).
//! - [`dedup`]: the edge dedup memory's key/value layout and its bound.
#![allow(unsafe_code)] // `proxy_wasm::main!` exports `#[no_mangle]` entry points.

pub mod config;
pub mod dedup;
pub mod filter;
pub mod payload;
pub mod verify;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Debug);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(filter::GuardRoot::default()) });
}}
