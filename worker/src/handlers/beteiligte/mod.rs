//! Beteiligte sync, I/O part. So far only [`sides`]: both systems behind small traits, so the
//! engine still to come (issue 11: lock, create intent in Redis, write-back, status machine,
//! notifications) runs against the fakes in tests and the real systems in production with the
//! same code. No topic is registered yet.

pub mod sides;
