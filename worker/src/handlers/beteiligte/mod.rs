//! Beteiligte sync, I/O part (issue 11; the topic handler is not registered yet):
//!
//! - [`sides`]: both systems behind small traits, implemented by the real clients, so the engine
//!   runs against the fakes in tests and the real systems in production with the same code.
//! - [`store`]: the per-record Redis state (create intent, content hash of the last sync).
//! - [`engine`]: one run for one record — decide first, write only what changed, create once.

pub mod engine;
pub mod sides;
pub mod store;
