//! Pure sync logic per domain (no I/O, no client imports): the handlers fetch, these decide.
//!
//! - [`calendar`]: Advoware Termine ↔ Google Calendar events.
//! - [`beteiligte`]: EspoCRM `CBeteiligte` ↔ Advoware Beteiligte (master data).

pub mod beteiligte;
pub mod calendar;
