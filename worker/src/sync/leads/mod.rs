//! Vermieterhelden leads, pure part (issue 13): no I/O, no client imports.
//!
//! - [`payload`]: the versioned payload contract (`docs/leads/`) — validation with errors naming
//!   the field, and enrichment (E.164 phone, normalised e-mail, split names, UTM, consent).
//! - [`mapping`]: the EspoCRM records a submission becomes (Lead, repeat-inquiry patch, Task),
//!   and the idempotency marker they carry.
//!
//! Phone and e-mail rules live in [`super::contact`], shared with the other syncs.

pub mod mapping;
pub mod payload;

pub use mapping::{marker, new_lead, repeat_inquiry_patch, task, Assignee, AssignmentRules};
pub use payload::{validate, Consent, Lead, LeadEvent, LeadType, ValidationError, SCHEMA_VERSION};
