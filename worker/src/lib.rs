//! bitbylaw worker: takes signed events from the edge, queues them durably in Redis and runs sync
//! handlers against Advoware, EspoCRM, Google Calendar and 3CX.
//!
//! # Layout
//!
//! - [`config`]: defaults → TOML file → environment, validated once; secrets redacted.
//! - [`error`]: the JSON error responses of the HTTP API.
//! - [`topics`]: the topic catalogue and payload shapes.
//! - [`keys`]: the one place that knows the Redis key layout.
//! - [`intake`]: HTTP in — `POST /events` (gateway signature, validation, batch split,
//!   coalescing), `POST /calendar/sync`, the 3CX lookup and outbound calls (`/3cx/call`), and
//!   the ops routes.
//! - [`queue`]: Redis streams with a consumer group — enqueue, consume, retry (policy as data),
//!   dead-letter, reclaim; [`queue::consumer`] runs the per-topic loops.
//! - [`locks`]: per-entity locks with owner token and safe release.
//! - [`schedule`]: cron schedules firing once per tick across instances.
//! - [`handlers`]: the topic → handler registry and the job context; `test.*` handlers;
//!   [`handlers::calendar`]: the calendar sync run (engine, Redis store, fan-out, audit).
//!   [`handlers::leads`]: Vermieterhelden leads into EspoCRM, exactly once per `webhook-id`.
//!   [`handlers::telephony`]: 3CX call journal, lookup matching and index, outbound calls.
//!   [`handlers::documents`]: `CDokumente` → xAI collections (collection manager, document run,
//!   crash-safe Redis records, audit).
//! - [`clients`]: one module per outside system — [`clients::advoware`]: token, REST calls;
//!   [`clients::google`]: Google Calendar via `google-calendar3`; [`clients::espocrm`]: EspoCRM
//!   REST (filters, paging, typed errors, attachments); [`clients::xai`]: xAI Files and
//!   Collections (two hosts, two keys); [`clients::threecx`]: 3CX Call Control (cached token,
//!   makecall, participants); [`clients::http`]: reqwest.
//! - [`ratelimit`]: request budgets shared by all workers (Redis token bucket): Google, the
//!   outbound 3CX calls, and the xAI gate whose backoff honours a 429's `Retry-After`.
//! - [`sync`]: pure mapping/diffing per domain — [`sync::calendar`]: Advoware Termine ↔ Google events;
//!   [`sync::beteiligte`]: `CBeteiligte` ↔ Advoware Beteiligte mapping and sync decision (no handler yet).
//!   [`sync::leads`]: lead payload contract, validation, enrichment; [`sync::contact`]: the shared
//!   E.164 phone and e-mail normaliser; [`sync::documents`]: `CDokumente` → xAI statuses, content
//!   hash and sync decision.
//! - [`ops`]: readiness state and Prometheus metrics.
//! - [`cli`]: the command line (`serve`, `config check`, `queue`, `dlq`, `locks`, `sync`,
//!   `calendar audit|run`, `documents audit|resync`).
//! - [`shutdown`]: graceful shutdown signalling.
//! - [`app`]: wires it all together for `serve`.

pub mod app;
pub mod cli;
pub mod clients;
pub mod config;
pub mod error;
pub mod handlers;
pub mod intake;
pub mod keys;
pub mod locks;
pub mod ops;
pub mod queue;
pub mod ratelimit;
pub mod schedule;
pub mod shutdown;
pub mod sync;
pub mod topics;
