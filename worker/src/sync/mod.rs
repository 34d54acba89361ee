//! Pure sync logic per domain (no I/O, no client imports): the handlers fetch, these decide.
//!
//! - [`calendar`]: Advoware Termine ↔ Google Calendar events.
//! - [`bankverbindungen`]: EspoCRM `CBankverbindungen` ↔ Advoware bank accounts (IBAN/BIC, masking).
//! - [`beteiligte`]: EspoCRM `CBeteiligte` ↔ Advoware Beteiligte (master data).
//! - [`leads`]: Vermieterhelden form submissions → EspoCRM leads (validation, enrichment).
//! - [`telephony`]: 3CX `ReportCall` bodies → EspoCRM `Call`/`Task` (validation, idempotency key).
//! - [`documents`]: EspoCRM `CDokumente` → xAI collections (statuses, content hash, the sync decision).
//! - [`contact`]: the phone (E.164) and e-mail normaliser every sync shares.

pub mod bankverbindungen;
pub mod beteiligte;
pub mod calendar;
pub mod contact;
pub mod documents;
pub mod leads;
pub mod telephony;
