//! Fake servers of the systems the bitbylaw gateway integrates, for tests and the local sandbox.
//!
//! # Layout
//! - [`clock`]: [`FakeClock`], the movable "now" used for token expiry and timestamp staleness.
//! - [`server`]: what all fakes share — binding/stopping ([`RunningServer`]), the raw request log
//!   ([`RecordedRequest`]), injected failures and latency ([`Controls`]).
//! - [`advoware`]: security-gateway token endpoint (HMAC-SHA512, nonce, skew) and the `advonet`
//!   resources (Mitarbeiter, Termine, Beteiligte, Kommunikationen, Bankverbindungen), with write counters.
//! - [`google_calendar`]: Calendar API v3 as `google-calendar3` uses it (calendars, events, sync
//!   tokens, `singleEvents` expansion in `google_calendar::recurrence`, quota errors) and a
//!   service-account token endpoint.
//! - [`espocrm`]: REST entity store with `X-Api-Key`, duplicate detection, a webhook registry, and
//!   [`espocrm::send_webhook`], which signs like EspoCRM's webhook sender.
//! - [`vermieterhelden`]: a Standard Webhooks lead sender (with tampering options).
//! - [`threecx`]: the requests 3CX's CRM template makes (`ReportCall`, contact lookup) and a
//!   stateful Call Control API (token endpoint, makecall, participants, busy/401 injection).
//! - [`xai`]: xAI Files (inference host) and Collections (management host), each checking its own
//!   key; multipart order, files, collection membership, PROCESSING → PROCESSED, write counters.
//! - [`receiver`]: a catch-all server that records requests (a webhook target in sender tests).
//! - [`redis_server`]: a real `redis-server` on a free port for one test (not a fake: Redis is always real).
//!
//! Every server binds `127.0.0.1:0` unless given an address, answers errors in the real system's
//! shape instead of panicking, and stops when its handle is dropped. Signatures are checked with
//! this crate's own HMAC code, never the gateway's, so a bug in ours cannot hide in both.

// Handlers return finished error responses through `Result<_, Response>`; the error path is cold
// and boxing every response would only add noise.
#![allow(clippy::result_large_err)]

pub mod advoware;
pub mod clock;
pub mod espocrm;
pub mod google_calendar;
pub mod receiver;
pub mod redis_server;
pub mod server;
pub mod threecx;
pub mod vermieterhelden;
pub mod xai;

pub use clock::FakeClock;
pub use server::{Controls, InjectedFailure, RecordedRequest, RunningServer, StartError};
