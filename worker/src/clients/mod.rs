//! Clients of the outside systems, one module per system. Handlers reach them through the job
//! context; the pure sync logic in [`crate::sync`] never imports a client.
//!
//! - [`advoware`]: the Advoware REST API — HMAC-minted bearer token shared in Redis, refreshed
//!   once on a 401, errors classified for the queue's retry policy.
//! - [`espocrm`]: the EspoCRM REST API — `X-Api-Key`, typed `where[]` filters, all pages,
//!   409 duplicates and 404 as their own errors, `X-Status-Reason` kept.
//! - [`google`]: Google Calendar through `google-calendar3`, service-account auth, the shared
//!   request budget of [`crate::ratelimit`].
//! - [`http`]: the production HTTP transport (reqwest + rustls).
//! - [`threecx`]: the 3CX Call Control API — client-credentials token cached and refreshed
//!   (one refresh + retry on a 401), makecall and participant state, refusals classified.
//! - [`xai`]: xAI Files (inference host and key) and Collections (management host and key) —
//!   multipart upload with a size limit, collection membership, 429 with `Retry-After`.

pub mod advoware;
pub mod espocrm;
pub mod google;
pub mod http;
pub mod threecx;
pub mod xai;
