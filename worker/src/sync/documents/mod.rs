//! Documents → xAI collections, the pure part (issue 15): the seeds' status enums and the
//! decision what one document sync must do — upload or not, add to which collections, remove
//! from which — from the content hash and the document's recorded sync state. No I/O: the
//! (future) handler fetches the document and its attachment, hashes the bytes with
//! [`ContentHash`], asks [`decide()`] and carries the [`Plan`] out with `clients::xai`.

pub mod decide;
pub mod model;

pub use decide::{decide, plan_delete, Decision, LinkedEntity, Plan, SyncedState};
pub use model::{
    fields, CollectionId, ContentHash, ContentHasher, EntityType, FileStatus, UnknownValue,
    XaiFileId, XaiSyncStatus, DOCUMENTS_LINK,
};
