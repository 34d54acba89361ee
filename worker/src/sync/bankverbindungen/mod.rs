//! Bankverbindungen sync, pure part (issue 12 item 3): EspoCRM `CBankverbindungen` ↔ the bank
//! accounts of the linked Advoware Beteiligter. No I/O here; the handler
//! (`handlers::bankverbindungen`) fetches, locks and writes.
//!
//! - [`iban`]: IBAN (ISO 13616: per-country length, mod 97) and BIC (ISO 9362) checks, and the
//!   IBAN mask used in every log line and error message.
//! - [`mapping`]: both sides' records ↔ the normalised [`BankData`], Advoware's configurable
//!   field names, the content hash and the 3-way [`decide`].

pub mod iban;
pub mod mapping;

pub use iban::{mask, mask_ibans, parse_bic, Iban, IbanError};
pub use mapping::{
    advoware_id, advoware_to_data, content_hash, decide, espo_fields, espo_to_data, find_by_iban,
    find_by_id, to_advoware, to_espo_patch, BankData, BankDataError, Decision, EspoBankverbindung,
    FieldNames, KontoId,
};

pub mod audit;
