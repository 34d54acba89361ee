//! What the Beteiligte sync keeps in Redis per `CBeteiligte` (`keys::beteiligte`):
//!
//! - `created`: the `betNr` Advoware returned for our create, written right after the `POST`
//!   and removed once EspoCRM holds it. A retry after a failed write-back finds it and resumes
//!   instead of creating a second Beteiligter.
//! - `hash`: [`crate::sync::beteiligte::content_hash`] of the content both sides had after the
//!   last sync, the exact base of the next decision.

use bitbylaw_core::ids::{BetNr, EspoId};
use redis::aio::ConnectionLike;
use redis::AsyncCommands as _;

use crate::keys;

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

    pub async fn set_created(&self, id: &EspoId, bet_nr: BetNr) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hset(keys::beteiligte(id.as_str()), "created", bet_nr.to_string())
            .await
    }

    /// After a successful sync: store the content hash, drop the create intent.
    pub async fn synced(&self, id: &EspoId, hash: &str) -> redis::RedisResult<()> {
        let key = keys::beteiligte(id.as_str());
        redis::pipe()
            .atomic()
            .hset(&key, "hash", hash)
            .ignore()
            .hdel(&key, "created")
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
}
