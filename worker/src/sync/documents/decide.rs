//! What one document sync must do (issue 15 item 4), decided from facts only.
//!
//! Inputs: the SHA-256 of the content just fetched, the entities the document is linked to
//! (each with its collection id, if created yet) and what the last sync recorded in EspoCRM
//! (`xaiId`, `xaiSyncedHash`, `xaiCollections[]`). Rules, as the seeds and the issue state them:
//! - no linked entity owns a collection → nothing to sync (`no_sync`);
//! - a linked entity's collection is not created yet → wait (a retryable outcome, not a
//!   failure: the entity's own job creates it and the event storm brings us back);
//! - same hash, a file id, and every required collection recorded → skip (cheap, idempotent);
//! - otherwise a [`Plan`]: upload only when there is no file or the content changed (a rename
//!   keeps the hash and so the file); add the file to each required collection that lacks it;
//!   remove it from collections no longer linked. After a content change the *old* file is
//!   removed from every collection it was in, and the new one added to every required one.
//!   Removing keeps files: xAI's collection `DELETE` only drops the membership.

use std::collections::BTreeSet;

use bitbylaw_core::ids::EspoId;

use super::model::{CollectionId, ContentHash, EntityType, XaiFileId};

/// An entity the document is linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedEntity {
    pub entity_type: EntityType,
    pub id: EspoId,
    /// The entity's `xaiCollectionId`; `None` while its collection is not created yet.
    pub collection: Option<CollectionId>,
}

/// What the last successful sync recorded on the `CDokumente` record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncedState {
    /// `xaiId`.
    pub file: Option<XaiFileId>,
    /// `xaiSyncedHash` (parsed; a non-SHA-256 value counts as none).
    pub hash: Option<ContentHash>,
    /// `xaiCollections[]`: the collections the file was added to.
    pub collections: BTreeSet<CollectionId>,
}

/// The calls one sync makes, in this order: upload, add, remove, then the EspoCRM write-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Upload the content (no file yet, or the content changed). The new id replaces `xaiId`.
    pub upload: bool,
    /// Collections to add the (new or kept) file to.
    pub add: BTreeSet<CollectionId>,
    /// `(collection, file)` memberships to drop: unlinked collections, or the old file after a
    /// content change.
    pub remove: Vec<(CollectionId, XaiFileId)>,
    /// The `xaiCollections[]` to write back once everything above succeeded.
    pub collections_after: BTreeSet<CollectionId>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No linked entity owns a collection: `xaiSyncStatus = no_sync`, nothing uploaded.
    NoCollections,
    /// These linked entities have no collection yet: retry later (not a failure).
    WaitForCollections(Vec<(EntityType, EspoId)>),
    /// Synced with this content in every required collection.
    UpToDate,
    /// Work to do.
    Sync(Plan),
}

/// Decides one document sync. Pure and total.
pub fn decide(current: &ContentHash, links: &[LinkedEntity], synced: &SyncedState) -> Decision {
    let owning: Vec<&LinkedEntity> = links
        .iter()
        .filter(|l| l.entity_type.owns_collection())
        .collect();
    let missing: Vec<(EntityType, EspoId)> = owning
        .iter()
        .filter(|l| l.collection.is_none())
        .map(|l| (l.entity_type, l.id.clone()))
        .collect();
    if !missing.is_empty() {
        return Decision::WaitForCollections(missing);
    }
    let required: BTreeSet<CollectionId> =
        owning.iter().filter_map(|l| l.collection.clone()).collect();
    if required.is_empty() && synced.collections.is_empty() {
        return Decision::NoCollections;
    }
    let content_changed = synced.hash.as_ref() != Some(current);
    let upload = synced.file.is_none() || content_changed;
    if !upload && synced.collections == required {
        return Decision::UpToDate;
    }
    let (add, remove) = match (&synced.file, upload) {
        // New content: the old file leaves every collection it was in.
        (Some(old), true) => (
            required.clone(),
            synced
                .collections
                .iter()
                .map(|c| (c.clone(), old.clone()))
                .collect(),
        ),
        (None, _) => (required.clone(), Vec::new()),
        (Some(file), false) => (
            required.difference(&synced.collections).cloned().collect(),
            synced
                .collections
                .difference(&required)
                .map(|c| (c.clone(), file.clone()))
                .collect(),
        ),
    };
    Decision::Sync(Plan {
        upload,
        add,
        remove,
        collections_after: required,
    })
}

/// A deleted document leaves every collection it was in; the file itself is kept.
pub fn plan_delete(synced: &SyncedState) -> Vec<(CollectionId, XaiFileId)> {
    match &synced.file {
        Some(file) => synced
            .collections
            .iter()
            .map(|c| (c.clone(), file.clone()))
            .collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EspoId {
        s.parse().unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn col(s: &str) -> CollectionId {
        CollectionId::new(s)
    }

    fn link(t: EntityType, eid: &str, c: Option<&str>) -> LinkedEntity {
        LinkedEntity {
            entity_type: t,
            id: id(eid),
            collection: c.map(col),
        }
    }

    fn synced(file: &str, hash: &ContentHash, cols: &[&str]) -> SyncedState {
        SyncedState {
            file: Some(XaiFileId::new(file)),
            hash: Some(hash.clone()),
            collections: cols.iter().map(|c| col(c)).collect(),
        }
    }

    fn set(cols: &[&str]) -> BTreeSet<CollectionId> {
        cols.iter().map(|c| col(c)).collect()
    }

    #[test]
    fn first_sync_uploads_once_and_adds_to_each_collection() {
        let h = ContentHash::of(b"v1");
        let links = [
            link(EntityType::Raeumungsklage, "case1", Some("c_case")),
            link(EntityType::Beteiligte, "bet1", Some("c_bet")),
        ];
        let Decision::Sync(plan) = decide(&h, &links, &SyncedState::default()) else {
            panic!("expected a plan");
        };
        assert!(plan.upload);
        assert_eq!(plan.add, set(&["c_bet", "c_case"]));
        assert!(plan.remove.is_empty());
        assert_eq!(plan.collections_after, set(&["c_bet", "c_case"]));
    }

    #[test]
    fn unchanged_content_in_every_collection_is_skipped() {
        let h = ContentHash::of(b"v1");
        let links = [link(EntityType::Raeumungsklage, "case1", Some("c_case"))];
        // A rename changes nothing the decision sees: same hash, same links.
        assert_eq!(
            decide(&h, &links, &synced("file_1", &h, &["c_case"])),
            Decision::UpToDate
        );
    }

    #[test]
    fn content_change_uploads_and_moves_collections_to_the_new_file() {
        let old = ContentHash::of(b"v1");
        let new = ContentHash::of(b"v2");
        let links = [link(EntityType::Raeumungsklage, "case1", Some("c_case"))];
        let Decision::Sync(plan) = decide(&new, &links, &synced("file_1", &old, &["c_case"]))
        else {
            panic!("expected a plan");
        };
        assert!(plan.upload);
        assert_eq!(plan.add, set(&["c_case"]));
        assert_eq!(plan.remove, vec![(col("c_case"), XaiFileId::new("file_1"))]);
    }

    #[test]
    fn link_changes_add_and_remove_without_upload() {
        let h = ContentHash::of(b"v1");
        let links = [
            link(EntityType::Raeumungsklage, "case1", Some("c_case")),
            link(EntityType::Account, "acc1", Some("c_acc")),
        ];
        let Decision::Sync(plan) = decide(&h, &links, &synced("file_1", &h, &["c_case", "c_old"]))
        else {
            panic!("expected a plan");
        };
        assert!(!plan.upload);
        assert_eq!(plan.add, set(&["c_acc"]));
        assert_eq!(plan.remove, vec![(col("c_old"), XaiFileId::new("file_1"))]);
        assert_eq!(plan.collections_after, set(&["c_acc", "c_case"]));
    }

    #[test]
    fn a_collection_not_created_yet_means_wait() {
        let h = ContentHash::of(b"v1");
        let links = [
            link(EntityType::Raeumungsklage, "case1", None),
            link(EntityType::Beteiligte, "bet1", Some("c_bet")),
        ];
        assert_eq!(
            decide(&h, &links, &SyncedState::default()),
            Decision::WaitForCollections(vec![(EntityType::Raeumungsklage, id("case1"))])
        );
    }

    #[test]
    fn no_owning_entity_is_no_sync_and_unlinking_the_last_removes() {
        let h = ContentHash::of(b"v1");
        let docs_only = [link(EntityType::Dokumente, "doc2", None)];
        assert_eq!(
            decide(&h, &docs_only, &SyncedState::default()),
            Decision::NoCollections
        );
        let Decision::Sync(plan) = decide(&h, &[], &synced("file_1", &h, &["c_case"])) else {
            panic!("expected a plan");
        };
        assert!(!plan.upload && plan.add.is_empty());
        assert_eq!(plan.remove, vec![(col("c_case"), XaiFileId::new("file_1"))]);
        assert!(plan.collections_after.is_empty());
    }

    #[test]
    fn delete_removes_from_all_collections_and_keeps_the_file() {
        let h = ContentHash::of(b"v1");
        let s = synced("file_1", &h, &["a", "b"]);
        assert_eq!(
            plan_delete(&s),
            vec![
                (col("a"), XaiFileId::new("file_1")),
                (col("b"), XaiFileId::new("file_1"))
            ]
        );
        assert!(plan_delete(&SyncedState::default()).is_empty());
    }
}
