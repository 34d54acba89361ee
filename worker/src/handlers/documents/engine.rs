//! One document sync and one collection-manager run, against the real clients.
//!
//! Both read the current state (never the event payload) and are idempotent, so the event
//! storm the seeds ask for — a link fires a collection job, which fires a document job for every
//! linked document, while the document's own update events arrive too — converges to one upload
//! and one add per collection. The caller holds the entity's lock.
//!
//! Crash safety: an upload's file id is recorded in Redis ([`DocumentStore::set_pending_upload`])
//! before anything else happens with it; a retry after a failure anywhere later (an add, a
//! remove, the EspoCRM write-back, a crash) finds it and reuses the file. A created collection is
//! recorded the same way before EspoCRM learns its id.

use std::collections::BTreeSet;
use std::time::Duration;

use bitbylaw_core::ids::EspoId;
use redis::aio::ConnectionLike;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::store::{DocumentStore, PendingUpload, SyncedRecord};
use crate::clients::espocrm::{EspoCrmClient, EspoCrmError};
use crate::clients::xai::{NewCollection, UploadContent, XaiClient, XaiError};
use crate::config::{CollectionRemoval, DocumentsSettings};
use crate::ratelimit::TokenBucket;
use crate::sync::documents::{
    decide, fields, plan_delete, CollectionId, ContentHash, ContentHasher, Decision, EntityType,
    FileStatus, LinkedEntity, SyncedState, XaiFileId, XaiSyncStatus, DOCUMENTS_LINK,
};

/// The EspoCRM entity of documents.
pub const DOCUMENT_ENTITY: &str = "CDokumente";

/// The two systems of the document sync.
#[derive(Clone, Debug)]
pub struct DocumentsSides {
    pub espo: EspoCrmClient,
    pub xai: XaiClient,
}

/// Why a run failed. A concrete enum: the queue branches on [`DocError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("EspoCRM: {0}")]
    Espo(#[from] EspoCrmError),
    #[error("xAI: {0}")]
    Xai(#[from] XaiError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A linked entity's collection is not created yet: its collection job will bring us back.
    #[error("waiting for the collection of {0}")]
    WaitForCollections(String),
    /// The record cannot be synced as it is (no attachment, unknown entity type).
    #[error("{0}")]
    Invalid(String),
    /// xAI answered 429 to some worker: nobody calls it before the backoff ends.
    #[error("xAI backoff in force for another {0:?}")]
    Backoff(Duration),
    #[error(transparent)]
    Gate(#[from] crate::ratelimit::RateLimitError),
    /// The local spool file of an attachment (disk full, temp dir unwritable): worth a retry.
    #[error("spooling the attachment: {0}")]
    Spool(std::io::Error),
}

impl DocError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Espo(e) => e.is_retryable(),
            Self::Xai(e) => e.is_retryable(),
            Self::Redis(_)
            | Self::WaitForCollections(_)
            | Self::Backoff(_)
            | Self::Gate(_)
            | Self::Spool(_) => true,
            Self::Invalid(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Espo(e) => e.retry_after(),
            Self::Xai(e) => e.retry_after(),
            Self::Backoff(d) => Some(*d),
            _ => None,
        }
    }
}

/// An attachment read from EspoCRM into an anonymous temporary file (unlinked at once, so it
/// disappears with the process; in `TMPDIR`), hashed on the way: the worker's memory stays
/// bounded by one chunk, whatever the file's size.
struct Spooled {
    content_type: String,
    hash: ContentHash,
    len: u64,
    /// Positioned at the start, ready to be uploaded.
    file: tokio::fs::File,
}

async fn spool(espo: &EspoCrmClient, attachment: &EspoId, limit: u64) -> Result<Spooled, DocError> {
    use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
    let mut stream = espo.open_attachment(attachment, limit).await?;
    let std_file = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|e| DocError::Spool(std::io::Error::other(e)))?
        .map_err(DocError::Spool)?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut hasher = ContentHasher::default();
    let mut len = 0u64;
    while let Some(chunk) = stream.next_chunk().await? {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(DocError::Spool)?;
        len += chunk.len() as u64;
    }
    file.flush().await.map_err(DocError::Spool)?;
    file.rewind().await.map_err(DocError::Spool)?;
    Ok(Spooled {
        content_type: stream.content_type,
        hash: hasher.finish(),
        len,
        file,
    })
}

/// How long all workers leave xAI alone after a 429 without `Retry-After`.
const DEFAULT_XAI_BACKOFF: Duration = Duration::from_secs(5);

/// The xAI gate of all workers: requests per minute of the bucket (generous: its job is the
/// shared backoff, not pacing).
pub const XAI_REQUESTS_PER_MINUTE: u32 = 6000;

/// The gate over Redis connection `conn`.
pub fn xai_gate<C: ConnectionLike + Clone + Send + Sync>(conn: C) -> TokenBucket<C> {
    TokenBucket::with_keys(
        conn,
        XAI_REQUESTS_PER_MINUTE,
        crate::keys::XAI_BUCKET,
        crate::keys::XAI_BACKOFF,
    )
}

/// Fails fast while a backoff is in force (the queue retries after it).
async fn pass_gate<C: ConnectionLike + Clone + Send + Sync>(
    gate: &TokenBucket<C>,
) -> Result<(), DocError> {
    match gate.try_acquire().await? {
        None => Ok(()),
        Some(wait) => Err(DocError::Backoff(wait)),
    }
}

/// After a 429 every worker backs off for xAI's `Retry-After` (or a default).
async fn note_rate_limit<C: ConnectionLike + Clone + Send + Sync, T>(
    gate: &TokenBucket<C>,
    result: Result<T, DocError>,
) -> Result<T, DocError> {
    if let Err(DocError::Xai(e @ XaiError::RateLimited { .. })) = &result {
        let d = e.retry_after().unwrap_or(DEFAULT_XAI_BACKOFF);
        if let Err(g) = gate.back_off(d).await {
            warn!(error = %g, "could not record the xAI backoff");
        }
    }
    result
}

/// What a document run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Uploaded (new or changed content) and placed in its collections.
    Uploaded,
    /// Reused a file uploaded by an earlier, interrupted attempt.
    Resumed,
    /// Same file; collections added or removed.
    Relinked,
    /// Nothing to do.
    UpToDate,
    /// No linked entity owns a collection.
    NoCollections,
    /// The document is gone: removed from its collections (the file stays).
    Removed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Resumed => "resumed",
            Self::Relinked => "relinked",
            Self::UpToDate => "up_to_date",
            Self::NoCollections => "no_collections",
            Self::Removed => "removed",
        }
    }
}

/// What a collection-manager run did, and the documents to sync next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRun {
    pub outcome: EntityOutcome,
    /// Every document linked to the entity, and every document whose file is in its collection
    /// (an unlinked one leaves it by its own run); each gets a document job.
    pub documents: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityOutcome {
    /// The collection existed.
    Exists,
    /// Created now (or found by name / in Redis) and written back as `xaiCollectionId`.
    Created,
    /// Removed: the entity is closed (per configuration).
    RemovedClosed,
    /// Removed: the entity is deleted (per configuration).
    RemovedDeleted,
    /// The entity is deleted or closed and the configuration keeps its collection.
    Kept,
}

impl EntityOutcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Exists => "collection_exists",
            Self::Created => "collection_created",
            Self::RemovedClosed => "collection_removed_closed",
            Self::RemovedDeleted => "collection_removed_deleted",
            Self::Kept => "collection_kept",
        }
    }
}

pub(crate) fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The sync state EspoCRM holds on a `CDokumente` record.
fn synced_state(doc: &Value) -> SyncedState {
    SyncedState {
        file: text(doc, fields::XAI_ID).map(XaiFileId::new),
        hash: text(doc, fields::XAI_SYNCED_HASH).and_then(|h| ContentHash::parse(&h)),
        collections: doc
            .get(fields::XAI_COLLECTIONS)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(CollectionId::new)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Whether the configuration treats the entity as closed (its collection is being removed).
pub(crate) fn is_closed(settings: &DocumentsSettings, entity: &Value) -> bool {
    settings.collection_removal == CollectionRemoval::DeletedOrClosed
        && text(entity, fields::STATUS).is_some_and(|s| settings.closed_statuses.contains(&s))
}

/// `GET {Entity}/{id}/{link}`, where an unknown link (404) means "no such relation here".
pub(crate) async fn related(
    espo: &EspoCrmClient,
    entity: &str,
    id: &EspoId,
    link: &str,
) -> Result<Vec<Value>, DocError> {
    match espo.list_related::<Value>(entity, id, link).await {
        Ok(list) => Ok(list),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// A remove that finds nothing to remove has nothing left to do.
fn gone_is_ok(r: Result<(), XaiError>) -> Result<(), XaiError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// The document sync: one run for one `CDokumente` record.
pub struct DocumentSync<'a, C> {
    pub sides: &'a DocumentsSides,
    pub store: &'a DocumentStore<C>,
    pub settings: &'a DocumentsSettings,
    pub gate: &'a TokenBucket<C>,
}

impl<C: ConnectionLike + Clone + Send + Sync> DocumentSync<'_, C> {
    /// The entities the document is linked to, with their collections. Closed entities (per
    /// configuration) are left out; a collection created but not written back yet is taken
    /// from Redis.
    pub async fn links(&self, doc: &EspoId) -> Result<Vec<LinkedEntity>, DocError> {
        let mut out = Vec::new();
        for t in EntityType::OWNING {
            let Some(link) = t.document_link() else {
                continue;
            };
            for rec in related(&self.sides.espo, DOCUMENT_ENTITY, doc, link).await? {
                let Some(id) = text(&rec, "id").and_then(|i| EspoId::new(&i).ok()) else {
                    continue;
                };
                if is_closed(self.settings, &rec) {
                    continue;
                }
                let collection = match text(&rec, fields::XAI_COLLECTION_ID) {
                    Some(c) => Some(CollectionId::new(c)),
                    None => self.store.collection(t, id.as_str()).await?,
                };
                out.push(LinkedEntity {
                    entity_type: t,
                    id,
                    collection,
                });
            }
        }
        Ok(out)
    }

    /// `vmh.document.create|update` (and link storms): bring the document's xAI state in line.
    /// `force` skips the cheap check and downloads the attachment (`documents resync`).
    pub async fn sync(&self, id: &EspoId, force: bool) -> Result<Outcome, DocError> {
        note_rate_limit(self.gate, self.sync_inner(id, force).await).await
    }

    async fn sync_inner(&self, id: &EspoId, force: bool) -> Result<Outcome, DocError> {
        let doc: Value = match self.sides.espo.get(DOCUMENT_ENTITY, id).await {
            Ok(d) => d,
            // Deleted since the event: what a delete does.
            Err(e) if e.is_not_found() => return self.delete(id).await,
            Err(e) => return Err(e.into()),
        };
        let synced = synced_state(&doc);
        let links = self.links(id).await?;
        if links.is_empty() && synced.collections.is_empty() {
            self.write_status(id, &doc, XaiSyncStatus::NoSync).await?;
            return Ok(Outcome::NoCollections);
        }
        let Some(attachment) = text(&doc, fields::ATTACHMENT_ID).and_then(|a| EspoId::new(&a).ok())
        else {
            return Err(self
                .fail(
                    id,
                    &doc,
                    DocError::Invalid(format!(
                        "{DOCUMENT_ENTITY} {id} has no attachment ({})",
                        fields::ATTACHMENT_ID
                    )),
                )
                .await);
        };
        if !force
            && self
                .unchanged(id, &doc, &synced, &links, &attachment)
                .await?
        {
            debug!("clean, same attachment, same collections: nothing to download");
            return Ok(Outcome::UpToDate);
        }
        let limit = self.sides.xai.settings().max_file_bytes;
        let content = match spool(&self.sides.espo, &attachment, limit).await {
            Ok(a) => a,
            Err(DocError::Espo(e)) if !e.is_retryable() => {
                return Err(self.fail(id, &doc, e.into()).await)
            }
            Err(e) => return Err(e),
        };
        let hash = content.hash.clone();
        debug!(hash = %hash, bytes = content.len, "document content hashed");
        let plan = match decide(&hash, &links, &synced) {
            Decision::NoCollections => {
                self.write_status(id, &doc, XaiSyncStatus::NoSync).await?;
                return Ok(Outcome::NoCollections);
            }
            Decision::WaitForCollections(missing) => {
                let names: Vec<String> = missing.iter().map(|(t, i)| format!("{t} {i}")).collect();
                return Err(DocError::WaitForCollections(names.join(", ")));
            }
            Decision::UpToDate => {
                self.mark_clean_if_needed(id, &doc, &synced, &attachment)
                    .await?;
                return Ok(Outcome::UpToDate);
            }
            Decision::Sync(plan) => plan,
        };

        pass_gate(self.gate).await?;
        // 1. The file: the synced one, one uploaded by an interrupted attempt, or a new upload.
        let pending = self.store.pending_upload(id.as_str()).await?;
        let mut remove = plan.remove.clone();
        let (file, outcome) = if !plan.upload {
            match &synced.file {
                Some(f) => (f.clone(), Outcome::Relinked),
                None => return Err(DocError::Invalid("plan without file".into())),
            }
        } else if let Some(p) = pending.as_ref().filter(|p| p.hash == hash.as_str()) {
            info!(file = %p.file, "reusing the file uploaded by an interrupted attempt");
            (XaiFileId::new(p.file.clone()), Outcome::Resumed)
        } else {
            if let Some(p) = &pending {
                // An interrupted attempt uploaded older content and may have added it.
                let old = XaiFileId::new(p.file.clone());
                for c in plan.add.iter().chain(synced.collections.iter()) {
                    remove.push((c.clone(), old.clone()));
                }
            }
            let name = text(&doc, "name").unwrap_or_else(|| format!("{id}"));
            let uploaded = self
                .sides
                .xai
                .upload_file(
                    &name,
                    &content.content_type,
                    UploadContent::File {
                        file: content.file,
                        len: content.len,
                    },
                    None,
                )
                .await;
            let uploaded = match uploaded {
                Ok(u) => u,
                Err(e) if !e.is_retryable() => return Err(self.fail(id, &doc, e.into()).await),
                Err(e) => return Err(e.into()),
            };
            self.store
                .set_pending_upload(
                    id.as_str(),
                    &PendingUpload {
                        hash: hash.as_str().to_owned(),
                        file: uploaded.id.clone(),
                    },
                )
                .await?;
            info!(file = %uploaded.id, "document uploaded to xAI");
            (XaiFileId::new(uploaded.id), Outcome::Uploaded)
        };

        // 2. Add to each required collection; 3. remove what is no longer linked. Any failure
        // here takes back this run's adds (the uploaded file stays, recorded for the retry).
        let mut added: Vec<CollectionId> = Vec::new();
        let mut step: Result<(), XaiError> = Ok(());
        for c in &plan.add {
            step = self.sides.xai.add_document(c.as_str(), file.as_str()).await;
            if step.is_err() {
                break;
            }
            added.push(c.clone());
        }
        if step.is_ok() {
            for (c, f) in &remove {
                step = gone_is_ok(self.sides.xai.remove_document(c.as_str(), f.as_str()).await);
                if step.is_err() {
                    break;
                }
            }
        }
        if let Err(e) = step {
            for c in &added {
                if let Err(undo) = gone_is_ok(
                    self.sides
                        .xai
                        .remove_document(c.as_str(), file.as_str())
                        .await,
                ) {
                    warn!(collection = %c, error = %undo, "compensation: remove failed");
                }
            }
            return Err(self.fail(id, &doc, e.into()).await);
        }

        // 4. Write back; the pending upload is cleared only once EspoCRM holds the file id.
        let collections: Vec<&str> = plan.collections_after.iter().map(|c| c.as_str()).collect();
        let patch = json!({
            fields::XAI_ID: file.as_str(),
            fields::XAI_COLLECTIONS: collections,
            fields::XAI_SYNCED_HASH: hash.as_str(),
            fields::FILE_STATUS: FileStatus::Synced.as_str(),
            fields::XAI_SYNC_STATUS: XaiSyncStatus::Clean.as_str(),
            fields::XAI_SYNC_ERROR: Value::Null,
        });
        let _: Value = self.sides.espo.update(DOCUMENT_ENTITY, id, &patch).await?;
        let after = SyncedState {
            file: Some(file),
            hash: Some(hash),
            collections: plan.collections_after.clone(),
        };
        self.store
            .set_synced(
                id.as_str(),
                &SyncedRecord::from_state(&after).with_attachment(attachment.as_str()),
            )
            .await?;
        Ok(outcome)
    }

    /// `vmh.document.delete`: the document leaves every collection; the file stays (it may be
    /// referenced elsewhere, seeds 002). The state comes from the record if it still exists,
    /// else from Redis.
    pub async fn delete(&self, id: &EspoId) -> Result<Outcome, DocError> {
        note_rate_limit(self.gate, self.delete_inner(id).await).await
    }

    async fn delete_inner(&self, id: &EspoId) -> Result<Outcome, DocError> {
        pass_gate(self.gate).await?;
        let from_record = match self.sides.espo.get::<Value>(DOCUMENT_ENTITY, id).await {
            Ok(d) => Some(synced_state(&d)),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let state = match from_record {
            Some(s) => s,
            None => self
                .store
                .synced(id.as_str())
                .await?
                .map(|r| r.to_state())
                .unwrap_or_default(),
        };
        for (c, f) in plan_delete(&state) {
            gone_is_ok(self.sides.xai.remove_document(c.as_str(), f.as_str()).await)?;
        }
        self.store.forget(id.as_str()).await?;
        Ok(Outcome::Removed)
    }

    /// `xaiSyncStatus` (and `fileStatus` for clean) written only when it differs: every write
    /// causes an EspoCRM update event, so a write that changes nothing would loop.
    async fn write_status(
        &self,
        id: &EspoId,
        doc: &Value,
        status: XaiSyncStatus,
    ) -> Result<(), DocError> {
        if text(doc, fields::XAI_SYNC_STATUS).as_deref() == Some(status.as_str()) {
            return Ok(());
        }
        self.patch(id, &json!({ fields::XAI_SYNC_STATUS: status.as_str() }))
            .await
    }

    /// `PUT CDokumente/{id}` with only the given attributes.
    async fn patch(&self, id: &EspoId, patch: &Value) -> Result<(), DocError> {
        let _: Value = self.sides.espo.update(DOCUMENT_ENTITY, id, patch).await?;
        Ok(())
    }

    /// The seeds' "check cheap": the record is clean, every linked entity's collection exists
    /// and is recorded, and the attachment is the one the last sync hashed — no download.
    async fn unchanged(
        &self,
        id: &EspoId,
        doc: &Value,
        synced: &SyncedState,
        links: &[LinkedEntity],
        attachment: &EspoId,
    ) -> Result<bool, DocError> {
        let clean = text(doc, fields::XAI_SYNC_STATUS).as_deref()
            == Some(XaiSyncStatus::Clean.as_str())
            && text(doc, fields::FILE_STATUS).as_deref() == Some(FileStatus::Synced.as_str());
        let waiting = links
            .iter()
            .any(|l| l.entity_type.owns_collection() && l.collection.is_none());
        if !clean
            || waiting
            || synced.file.is_none()
            || required_collections(links) != synced.collections
        {
            return Ok(false);
        }
        let last = self.store.synced(id.as_str()).await?;
        Ok(last.is_some_and(|r| {
            r.attachment.as_deref() == Some(attachment.as_str())
                && r.hash.as_deref() == synced.hash.as_ref().map(ContentHash::as_str)
                && r.file.as_deref() == synced.file.as_ref().map(XaiFileId::as_str)
        }))
    }

    async fn mark_clean_if_needed(
        &self,
        id: &EspoId,
        doc: &Value,
        synced: &SyncedState,
        attachment: &EspoId,
    ) -> Result<(), DocError> {
        let clean = text(doc, fields::XAI_SYNC_STATUS).as_deref()
            == Some(XaiSyncStatus::Clean.as_str())
            && text(doc, fields::FILE_STATUS).as_deref() == Some(FileStatus::Synced.as_str());
        if !clean {
            self.patch(
                id,
                &json!({
                    fields::FILE_STATUS: FileStatus::Synced.as_str(),
                    fields::XAI_SYNC_STATUS: XaiSyncStatus::Clean.as_str(),
                    fields::XAI_SYNC_ERROR: Value::Null,
                }),
            )
            .await?;
        }
        let record = SyncedRecord::from_state(synced).with_attachment(attachment.as_str());
        if self.store.synced(id.as_str()).await?.as_ref() != Some(&record) {
            self.store.set_synced(id.as_str(), &record).await?;
        }
        Ok(())
    }

    /// Records the failure on the document (`xaiSyncStatus=failed`, `xaiSyncError`), unless
    /// it already says exactly that; returns the error for the queue. Best effort: the queue
    /// still learns the real error when this write fails.
    async fn fail(&self, id: &EspoId, doc: &Value, e: DocError) -> DocError {
        let message: String = e.to_string().chars().take(500).collect();
        let same = text(doc, fields::XAI_SYNC_STATUS).as_deref()
            == Some(XaiSyncStatus::Failed.as_str())
            && text(doc, fields::XAI_SYNC_ERROR).as_deref() == Some(message.as_str());
        if !same {
            let patch = json!({
                fields::XAI_SYNC_STATUS: XaiSyncStatus::Failed.as_str(),
                fields::XAI_SYNC_ERROR: message,
            });
            if let Err(w) = self.patch(id, &patch).await {
                warn!(error = %w, "could not record the failure on the document");
            }
        }
        e
    }
}

/// The collection manager: one run for one owning entity.
pub struct CollectionManager<'a, C> {
    pub sides: &'a DocumentsSides,
    pub store: &'a DocumentStore<C>,
    pub settings: &'a DocumentsSettings,
    pub gate: &'a TokenBucket<C>,
}

/// The name an entity's collection gets (and is found by).
pub fn collection_name(t: EntityType, id: &EspoId) -> String {
    format!("{t} {id}")
}

impl<C: ConnectionLike + Clone + Send + Sync> CollectionManager<'_, C> {
    pub async fn run(&self, t: EntityType, id: &EspoId) -> Result<EntityRun, DocError> {
        note_rate_limit(self.gate, self.run_inner(t, id).await).await
    }

    async fn run_inner(&self, t: EntityType, id: &EspoId) -> Result<EntityRun, DocError> {
        pass_gate(self.gate).await?;
        let espo = &self.sides.espo;
        let entity: Value = match espo.get(t.as_str(), id).await {
            Ok(e) => e,
            Err(e) if e.is_not_found() => return self.deleted(t, id).await,
            Err(e) => return Err(e.into()),
        };
        let mut documents: Vec<String> = related(espo, t.as_str(), id, DOCUMENTS_LINK)
            .await?
            .iter()
            .filter_map(|d| text(d, "id"))
            .collect();
        let recorded = text(&entity, fields::XAI_COLLECTION_ID).map(CollectionId::new);
        if let Some(c) = &recorded {
            // Documents unlinked since their last sync are only found through the collection.
            for d in self.members(c).await? {
                if !documents.contains(&d) {
                    documents.push(d);
                }
            }
        }
        if is_closed(self.settings, &entity) {
            let known = match recorded {
                Some(c) => Some(c),
                None => self.store.collection(t, id.as_str()).await?,
            };
            if let Some(c) = known {
                gone_is_ok(self.sides.xai.delete_collection(c.as_str()).await)?;
                let _: Value = espo
                    .update(
                        t.as_str(),
                        id,
                        &json!({ fields::XAI_COLLECTION_ID: Value::Null }),
                    )
                    .await?;
                self.store.forget_collection(t, id.as_str()).await?;
                info!(collection = %c, "entity closed: collection removed");
            }
            return Ok(EntityRun {
                outcome: EntityOutcome::RemovedClosed,
                documents,
            });
        }
        if let Some(c) = &recorded {
            match self.sides.xai.get_collection(c.as_str()).await {
                Ok(_) => {
                    if self.store.collection(t, id.as_str()).await?.as_ref() != Some(c) {
                        self.store.set_collection(t, id.as_str(), c).await?;
                    }
                    return Ok(EntityRun {
                        outcome: EntityOutcome::Exists,
                        documents,
                    });
                }
                Err(e) if e.is_not_found() => {
                    warn!(collection = %c, "recorded collection is gone in xAI; creating a new one");
                    self.store.forget_collection(t, id.as_str()).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let c = self.find_or_create(t, id, recorded.as_ref()).await?;
        let _: Value = espo
            .update(
                t.as_str(),
                id,
                &json!({ fields::XAI_COLLECTION_ID: c.as_str() }),
            )
            .await?;
        info!(collection = %c, "collection ready and written back");
        Ok(EntityRun {
            outcome: EntityOutcome::Created,
            documents,
        })
    }

    /// The entity's collection from Redis (created by an interrupted run), by name in xAI, or
    /// newly created — recorded in Redis before EspoCRM learns it.
    async fn find_or_create(
        &self,
        t: EntityType,
        id: &EspoId,
        gone: Option<&CollectionId>,
    ) -> Result<CollectionId, DocError> {
        let xai = &self.sides.xai;
        if let Some(c) = self.store.collection(t, id.as_str()).await? {
            match xai.get_collection(c.as_str()).await {
                Ok(_) => return Ok(c),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let name = collection_name(t, id);
        let found = xai.list_collections().await?.into_iter().find(|c| {
            c.collection_name == name && Some(c.collection_id.as_str()) != gone.map(|g| g.as_str())
        });
        let c = match found {
            Some(c) => CollectionId::new(c.collection_id),
            None => {
                let created = xai
                    .create_collection(&NewCollection {
                        collection_name: name,
                        collection_description: Some(
                            json!({"entityType": t.as_str(), "entityId": id.as_str()}).to_string(),
                        ),
                        field_definitions: Vec::new(),
                    })
                    .await?;
                CollectionId::new(created.collection_id)
            }
        };
        self.store.set_collection(t, id.as_str(), &c).await?;
        Ok(c)
    }

    /// The entity is gone from EspoCRM: its collection (known from Redis) is removed unless the
    /// configuration keeps collections.
    async fn deleted(&self, t: EntityType, id: &EspoId) -> Result<EntityRun, DocError> {
        if self.settings.collection_removal == CollectionRemoval::Never {
            return Ok(EntityRun {
                outcome: EntityOutcome::Kept,
                documents: Vec::new(),
            });
        }
        let mut documents = Vec::new();
        if let Some(c) = self.store.collection(t, id.as_str()).await? {
            // Its documents re-sync afterwards and drop the collection from `xaiCollections`.
            documents = self.members(&c).await?;
            gone_is_ok(self.sides.xai.delete_collection(c.as_str()).await)?;
            self.store.forget_collection(t, id.as_str()).await?;
            info!(collection = %c, "entity deleted: collection removed");
        }
        Ok(EntityRun {
            outcome: EntityOutcome::RemovedDeleted,
            documents,
        })
    }

    /// The documents whose files are in collection `c` (as far as this sync uploaded them).
    async fn members(&self, c: &CollectionId) -> Result<Vec<String>, DocError> {
        match self.sides.xai.list_documents(c.as_str()).await {
            Ok(members) => {
                let files: Vec<String> = members.iter().map(|m| m.file_id().to_owned()).collect();
                Ok(self.store.documents_of(&files).await?)
            }
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The collections a document is expected in (audit and resync use the same rule as the sync).
pub fn required_collections(links: &[LinkedEntity]) -> BTreeSet<CollectionId> {
    links
        .iter()
        .filter(|l| l.entity_type.owns_collection())
        .filter_map(|l| l.collection.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_state_reads_the_record_and_ignores_junk() {
        let h = ContentHash::of(b"x");
        let doc = json!({
            "xaiId": "file_1",
            "xaiSyncedHash": h.as_str(),
            "xaiCollections": ["c1", "", 7, "c2"],
        });
        let s = synced_state(&doc);
        assert_eq!(s.file, Some(XaiFileId::new("file_1")));
        assert_eq!(s.hash, Some(h));
        assert_eq!(s.collections.len(), 2);
        // The seeds' MD5 values and empty fields count as "never synced".
        let old = synced_state(
            &json!({"xaiId": " ", "xaiSyncedHash": "900150983cd24fb0d6963f7d28e17f72"}),
        );
        assert_eq!(old, SyncedState::default());
    }

    #[test]
    fn closed_only_counts_when_configured() {
        let closed = json!({"status": "Abgeschlossen"});
        let mut s = DocumentsSettings::default();
        assert!(!is_closed(&s, &closed), "default removes on delete only");
        s.collection_removal = CollectionRemoval::DeletedOrClosed;
        assert!(is_closed(&s, &closed));
        assert!(!is_closed(&s, &json!({"status": "Offen"})));
        assert!(!is_closed(&s, &json!({})));
    }

    #[test]
    fn errors_classify_for_the_queue() {
        assert!(DocError::WaitForCollections("x".into()).is_retryable());
        assert!(!DocError::Invalid("x".into()).is_retryable());
        let b = DocError::Backoff(Duration::from_secs(3));
        assert!(b.is_retryable());
        assert_eq!(b.retry_after(), Some(Duration::from_secs(3)));
        let too_large = DocError::Espo(EspoCrmError::TooLarge {
            path: "Attachment/file/a".into(),
            size: 5000,
            limit: 1000,
        });
        assert!(!too_large.is_retryable());
        let text = too_large.to_string();
        assert!(text.contains("5000") && text.contains("1000"), "{text}");
    }
}
