//! What the document sync keeps in Redis (`keys::document`, `keys::document_collection`).
//!
//! - `upload` (per document): `{hash, file}` of an upload whose result EspoCRM does not hold
//!   yet. Written right after xAI answers the `POST /files`, before any collection add or the
//!   EspoCRM write-back, so a retry after a failure (or a crash) there reuses the file instead
//!   of uploading the same content again. Cleared by the write-back.
//! - `synced` (per document): `{file, hash, collections}` as last written back. A delete event
//!   carries only the id and the record is gone, so this is how the delete handler knows which
//!   collections to leave.
//! - the collection of an entity: written right after `POST /collections`, before EspoCRM gets
//!   `xaiCollectionId`, so a retry never creates a second collection for the same entity.

use redis::aio::ConnectionLike;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::sync::documents::{CollectionId, ContentHash, EntityType, SyncedState, XaiFileId};

/// An uploaded file not yet written back to EspoCRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    pub hash: String,
    pub file: String,
}

/// The sync state as last written back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedRecord {
    pub file: Option<String>,
    pub hash: Option<String>,
    pub collections: Vec<String>,
    /// The EspoCRM attachment id whose content was synced: EspoCRM stores a changed file as a
    /// new attachment, so an unchanged id lets a run skip the download.
    #[serde(default)]
    pub attachment: Option<String>,
}

impl SyncedRecord {
    pub fn from_state(s: &SyncedState) -> Self {
        Self {
            file: s.file.as_ref().map(|f| f.as_str().to_owned()),
            hash: s.hash.as_ref().map(|h| h.as_str().to_owned()),
            collections: s
                .collections
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            attachment: None,
        }
    }

    pub fn with_attachment(mut self, attachment: &str) -> Self {
        self.attachment = Some(attachment.to_owned());
        self
    }

    pub fn to_state(&self) -> SyncedState {
        SyncedState {
            file: self.file.clone().map(XaiFileId::new),
            hash: self.hash.as_deref().and_then(ContentHash::parse),
            collections: self
                .collections
                .iter()
                .cloned()
                .map(CollectionId::new)
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DocumentStore<C> {
    conn: C,
}

impl<C: ConnectionLike + Clone + Send + Sync> DocumentStore<C> {
    pub fn new(conn: C) -> Self {
        Self { conn }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        field: &str,
    ) -> redis::RedisResult<Option<T>> {
        let raw: Option<String> = self.conn.clone().hget(key, field).await?;
        // A value we cannot read is treated as absent: at worst one more upload.
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// The upload waiting for its write-back, if any.
    pub async fn pending_upload(&self, doc: &str) -> redis::RedisResult<Option<PendingUpload>> {
        self.get_json(&keys::document(doc), "upload").await
    }

    /// Records xAI's answer to an upload (before anything else happens with the file).
    pub async fn set_pending_upload(&self, doc: &str, p: &PendingUpload) -> redis::RedisResult<()> {
        let raw = serde_json::to_string(p).unwrap_or_default();
        self.conn
            .clone()
            .hset(keys::document(doc), "upload", raw)
            .await
    }

    /// The state as last written back to EspoCRM.
    pub async fn synced(&self, doc: &str) -> redis::RedisResult<Option<SyncedRecord>> {
        self.get_json(&keys::document(doc), "synced").await
    }

    /// After a successful write-back: the new state, no upload pending any more, and the file
    /// mapped back to the document.
    pub async fn set_synced(&self, doc: &str, s: &SyncedRecord) -> redis::RedisResult<()> {
        let key = keys::document(doc);
        let raw = serde_json::to_string(s).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "synced", raw)
            .ignore()
            .hdel(&key, "upload")
            .ignore();
        if let Some(file) = &s.file {
            pipe.set(keys::document_file(file), doc).ignore();
        }
        pipe.query_async(&mut self.conn.clone()).await
    }

    /// The documents the given files belong to, as far as this sync uploaded them.
    pub async fn documents_of(&self, files: &[String]) -> redis::RedisResult<Vec<String>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = files.iter().map(|f| keys::document_file(f)).collect();
        let found: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Forgets a deleted document.
    pub async fn forget(&self, doc: &str) -> redis::RedisResult<()> {
        self.conn.clone().del(keys::document(doc)).await
    }

    /// The collection created for an entity whose write-back may still be outstanding.
    pub async fn collection(
        &self,
        t: EntityType,
        id: &str,
    ) -> redis::RedisResult<Option<CollectionId>> {
        let raw: Option<String> = self
            .conn
            .clone()
            .get(keys::document_collection(t.as_str(), id))
            .await?;
        Ok(raw.filter(|r| !r.is_empty()).map(CollectionId::new))
    }

    pub async fn set_collection(
        &self,
        t: EntityType,
        id: &str,
        c: &CollectionId,
    ) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .set(keys::document_collection(t.as_str(), id), c.as_str())
            .await
    }

    pub async fn forget_collection(&self, t: EntityType, id: &str) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .del(keys::document_collection(t.as_str(), id))
            .await
    }
}
