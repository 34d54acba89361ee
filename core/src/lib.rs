//! Pure logic shared by the bitbylaw gateway: the proxy-wasm filters inside Kong
//! (`wasm-plugins/*`) and the Rust worker both depend on this crate.
//!
//! Everything here is deterministic and host-free: no I/O, no clock reads, no
//! randomness. Callers pass the current time, nonces and random bytes in. That
//! keeps the crate compiling for native targets, `wasm32-wasip1` and
//! `wasm32-unknown-unknown`, and makes every function unit-testable.
//!
//! Errors are concrete enums (one per module) because callers branch on them:
//! filters map them to stable JSON error codes (`code()`) and log the variant,
//! while answering clients generically.
//!
//! # Layout
//! - [`advoware`]: Advoware token request signing (HMAC-SHA512), request
//!   timestamps, nonces, token response parsing and cache lifetime.
//! - [`endpoint`]: validation of the Advoware proxy's `endpoint` query parameter
//!   and mapping to an upstream path; query-string helpers.
//! - [`canonical`]: canonical JSON (RFC 8785, JCS) and the dedup key (SHA-256).
//! - [`webhook`]: verification of sender signatures (EspoCRM, Standard Webhooks,
//!   generic HMAC-SHA256, shared token), all constant time.
//! - [`gateway`]: the `X-Gateway-Signature` that `webhook_guard` adds when it
//!   forwards an accepted event to the worker, and its verification.
//! - [`ids`]: typed identifiers (`Kuerzel`, `FrNr`, `BetNr`, `EspoId`).
//! - [`topic`]: event topics and filling topic templates from request paths.
//! - [`civil`]: civil-date arithmetic, ISO 8601 formatting/parsing (no chrono).
//! - [`batch`]: which entries of an EspoCRM webhook batch are usable — one
//!   rule for the edge filter and the worker's intake.

pub mod advoware;
pub mod batch;
pub mod canonical;
pub mod civil;
pub mod endpoint;
pub mod gateway;
pub mod ids;
pub mod topic;
pub mod webhook;

mod mac;
