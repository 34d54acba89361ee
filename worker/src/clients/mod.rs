//! Clients of the outside systems, one module per system. Handlers reach them through the job
//! context; the pure sync logic in [`crate::sync`] never imports a client.
//!
//! - [`advoware`]: the Advoware REST API — HMAC-minted bearer token shared in Redis, refreshed
//!   once on a 401, errors classified for the queue's retry policy.

pub mod advoware;
