//! What the Beteiligte sync keeps in Redis per `CBeteiligte` (`keys::beteiligte`):
//!
//! - `created`: the `betNr` Advoware returned for our create, written right after the `POST`
//!   and removed once EspoCRM holds it. A retry after a failed write-back finds it and resumes
//!   instead of creating a second Beteiligter.
//! - `creating`: time (UTC) of a `POST` whose answer has not been recorded yet; a run that finds
//!   it without `created` does not `POST` again (engine docs).
//! - `betnr`: the linked Advoware `betNr` after the last sync (the delete handler names it; an
//!   EspoCRM delete event carries only the id).
//! - `hash`: [`crate::sync::beteiligte::content_hash`] of the content both sides had after the
//!   last sync, the exact base of the next decision.
//! - `echo`: EspoCRM's `modifiedAt` after our last status-only write (a failure, the check's
//!   refresh), so the webhook that write causes is recognised as our own (engine docs).
//! - `komm`: the Kommunikation base of the 3-way merge (JSON list of
//!   [`BaseEntry`]: Advoware entry id, kommKz, value) as both sides held it after the last run.
//! - `komm_intent`: set right before the first Kommunikation write of a run, removed with the new
//!   base after the last one. A run that finds it resumes: it diffs against the stored base
//!   only (not completed by the markers of entries the interrupted run wrote), see the engine.
//! - `adressen`: the Adressen base ([`AdressenBase`]: pairs, what each side held, notified tasks).

use bitbylaw_core::ids::{BetNr, EspoId};
use redis::aio::ConnectionLike;
use redis::AsyncCommands as _;

use crate::keys;
use crate::sync::beteiligte::adressen::AdressenBase;
use crate::sync::beteiligte::kommunikation::BaseEntry;

#[derive(Debug, Clone)]
pub struct BeteiligteStore<C> {
    conn: C,
}

impl<C: ConnectionLike + Clone + Send + Sync> BeteiligteStore<C> {
    pub fn new(conn: C) -> Self {
        Self { conn }
    }

    /// The `betNr` of a create whose write-back to EspoCRM is still outstanding.
    pub async fn created(&self, id: &EspoId) -> redis::RedisResult<Option<BetNr>> {
        let raw: Option<String> = self
            .conn
            .clone()
            .hget(keys::beteiligte(id.as_str()), "created")
            .await?;
        Ok(raw.and_then(|r| r.parse().ok()))
    }

    /// Records Advoware's answer to our `POST` (and ends the intent).
    pub async fn set_created(&self, id: &EspoId, bet_nr: BetNr) -> redis::RedisResult<()> {
        let key = keys::beteiligte(id.as_str());
        redis::pipe()
            .atomic()
            .hset(&key, "created", bet_nr.to_string())
            .ignore()
            .hdel(&key, "creating")
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    /// When a `POST` without recorded answer was started, if one was.
    pub async fn creating(&self, id: &EspoId) -> redis::RedisResult<Option<String>> {
        self.conn
            .clone()
            .hget(keys::beteiligte(id.as_str()), "creating")
            .await
    }

    /// Written right before the `POST`.
    pub async fn set_creating(&self, id: &EspoId, at: &str) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hset(keys::beteiligte(id.as_str()), "creating", at)
            .await
    }

    /// Advoware refused the `POST` (or a person checked): no record was created.
    pub async fn clear_creating(&self, id: &EspoId) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hdel(keys::beteiligte(id.as_str()), "creating")
            .await
    }

    /// After a successful sync: store the content hash, drop the create intent and the failure
    /// echo.
    pub async fn synced(&self, id: &EspoId, bet_nr: BetNr, hash: &str) -> redis::RedisResult<()> {
        let key = keys::beteiligte(id.as_str());
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[("hash", hash.to_owned()), ("betnr", bet_nr.to_string())],
            )
            .ignore()
            .hdel(&key, &["created", "creating", "echo"])
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    pub async fn hash(&self, id: &EspoId) -> redis::RedisResult<Option<String>> {
        self.conn
            .clone()
            .hget(keys::beteiligte(id.as_str()), "hash")
            .await
    }

    /// EspoCRM's `modifiedAt` after our last status-only write.
    pub async fn echo(&self, id: &EspoId) -> redis::RedisResult<Option<String>> {
        self.conn
            .clone()
            .hget(keys::beteiligte(id.as_str()), "echo")
            .await
    }

    pub async fn set_echo(&self, id: &EspoId, modified_at: &str) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hset(keys::beteiligte(id.as_str()), "echo", modified_at)
            .await
    }

    /// The Kommunikation base; `None` if never stored (or unreadable: then the markers rebuild it).
    pub async fn komm_base(&self, id: &EspoId) -> redis::RedisResult<Option<Vec<BaseEntry>>> {
        let raw: Option<String> = self
            .conn
            .clone()
            .hget(keys::beteiligte(id.as_str()), "komm")
            .await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Whether an earlier run started Kommunikation writes and did not finish them.
    pub async fn komm_intent(&self, id: &EspoId) -> redis::RedisResult<bool> {
        self.conn
            .clone()
            .hexists(keys::beteiligte(id.as_str()), "komm_intent")
            .await
    }

    /// Written before the first Kommunikation write of a run.
    pub async fn set_komm_intent(&self, id: &EspoId) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hset(keys::beteiligte(id.as_str()), "komm_intent", "1")
            .await
    }

    /// The new base after every write of the run; ends the intent in the same step.
    pub async fn set_komm_base(&self, id: &EspoId, base: &[BaseEntry]) -> redis::RedisResult<()> {
        let key = keys::beteiligte(id.as_str());
        let json = serde_json::to_string(base).unwrap_or_else(|_| "[]".into());
        redis::pipe()
            .atomic()
            .hset(&key, "komm", json)
            .ignore()
            .hdel(&key, "komm_intent")
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    /// The Adressen base (empty if never stored).
    pub async fn adressen_base(&self, id: &EspoId) -> redis::RedisResult<AdressenBase> {
        let raw: Option<String> = self
            .conn
            .clone()
            .hget(keys::beteiligte(id.as_str()), "adressen")
            .await?;
        Ok(raw
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default())
    }

    pub async fn set_adressen_base(
        &self,
        id: &EspoId,
        base: &AdressenBase,
    ) -> redis::RedisResult<()> {
        let json = serde_json::to_string(base).unwrap_or_else(|_| "{}".into());
        self.conn
            .clone()
            .hset(keys::beteiligte(id.as_str()), "adressen", json)
            .await
    }

    /// The `betNr` linked at the last sync.
    pub async fn linked(&self, id: &EspoId) -> redis::RedisResult<Option<BetNr>> {
        let raw: Option<String> = self
            .conn
            .clone()
            .hget(keys::beteiligte(id.as_str()), "betnr")
            .await?;
        Ok(raw.and_then(|r| r.parse().ok()))
    }

    /// The whole record, for `beteiligte audit` and the delete handler.
    pub async fn fields(
        &self,
        id: &EspoId,
    ) -> redis::RedisResult<std::collections::BTreeMap<String, String>> {
        self.conn
            .clone()
            .hgetall(keys::beteiligte(id.as_str()))
            .await
    }

    /// Forgets the record (EspoCRM deleted it; `beteiligte reset`).
    pub async fn forget(&self, id: &EspoId) -> redis::RedisResult<()> {
        self.conn.clone().del(keys::beteiligte(id.as_str())).await
    }
}
