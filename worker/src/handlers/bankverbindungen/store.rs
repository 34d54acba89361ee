//! What the Bankverbindungen sync keeps in Redis per `CBankverbindungen` (`keys::bankverbindung`):
//!
//! - `beteiligte`, `betnr`: the Beteiligter (EspoCRM id, Advoware `betNr`) the entry lives
//!   under — a delete event carries only the record's id, and the delete needs both (and the
//!   Beteiligter's lock).
//! - `creating`: time (UTC) of a `POST` whose answer is not recorded yet. The next run lists the
//!   Beteiligter's entries first and adopts the one with the same IBAN, so a lost answer never
//!   leads to a second entry.
//! - `created`: the id Advoware returned for our `POST`, written right after it and before the
//!   write-back to EspoCRM; a retry after a failed write-back resumes with it.
//! - `konto`: the linked Advoware id after the last sync.
//! - `hash`: content hash after the last sync (the base of the 3-way decision; never the IBAN).
//!
//! And per Beteiligter (`keys::bank_waiting`): the ids of the records waiting for its `betnr`,
//! re-queued by the Beteiligte sync once it has one (so a waiting record never ends in the DLQ).

use std::collections::BTreeMap;

use bitbylaw_core::ids::{BetNr, EspoId};
use redis::aio::ConnectionLike;
use redis::AsyncCommands as _;

use crate::keys;
use crate::sync::bankverbindungen::KontoId;

#[derive(Debug, Clone)]
pub struct BankStore<C> {
    conn: C,
}

/// The stored link of one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub beteiligte: Option<EspoId>,
    pub bet_nr: Option<BetNr>,
    pub konto: Option<KontoId>,
    pub created: Option<KontoId>,
    pub creating: Option<String>,
    pub hash: Option<String>,
}

impl Link {
    /// The Advoware entry this record is (or was just created as).
    pub fn advoware_id(&self) -> Option<&KontoId> {
        self.konto.as_ref().or(self.created.as_ref())
    }
}

impl<C: ConnectionLike + Clone + Send + Sync> BankStore<C> {
    pub fn new(conn: C) -> Self {
        Self { conn }
    }

    pub async fn link(&self, id: &EspoId) -> redis::RedisResult<Link> {
        let f: BTreeMap<String, String> = self
            .conn
            .clone()
            .hgetall(keys::bankverbindung(id.as_str()))
            .await?;
        Ok(Link {
            beteiligte: f.get("beteiligte").and_then(|s| EspoId::new(s).ok()),
            bet_nr: f.get("betnr").and_then(|s| s.parse().ok()),
            konto: f.get("konto").and_then(|s| KontoId::new(s)),
            created: f.get("created").and_then(|s| KontoId::new(s)),
            creating: f.get("creating").cloned(),
            hash: f.get("hash").cloned(),
        })
    }

    /// Written right before the `POST`, with the Beteiligter it goes to.
    pub async fn set_creating(
        &self,
        id: &EspoId,
        beteiligte: &EspoId,
        bet_nr: BetNr,
        at: &str,
    ) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hset_multiple(
                keys::bankverbindung(id.as_str()),
                &[
                    ("creating", at.to_owned()),
                    ("beteiligte", beteiligte.to_string()),
                    ("betnr", bet_nr.to_string()),
                ],
            )
            .await
    }

    /// Advoware refused the `POST`: nothing was created.
    pub async fn clear_creating(&self, id: &EspoId) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .hdel(keys::bankverbindung(id.as_str()), "creating")
            .await
    }

    /// Advoware's answer to our `POST` (ends the intent), before the EspoCRM write-back.
    pub async fn set_created(&self, id: &EspoId, konto: &KontoId) -> redis::RedisResult<()> {
        let key = keys::bankverbindung(id.as_str());
        redis::pipe()
            .atomic()
            .hset(&key, "created", konto.as_str())
            .ignore()
            .hdel(&key, "creating")
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    /// After a successful sync: the link and the content hash; intent and `created` dropped.
    pub async fn synced(
        &self,
        id: &EspoId,
        beteiligte: &EspoId,
        bet_nr: BetNr,
        konto: &KontoId,
        hash: &str,
    ) -> redis::RedisResult<()> {
        let key = keys::bankverbindung(id.as_str());
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("beteiligte", beteiligte.to_string()),
                    ("betnr", bet_nr.to_string()),
                    ("konto", konto.to_string()),
                    ("hash", hash.to_owned()),
                ],
            )
            .ignore()
            .hdel(&key, &["created", "creating"])
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Forgets the record (deleted in EspoCRM and handled).
    pub async fn forget(&self, id: &EspoId) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .del(keys::bankverbindung(id.as_str()))
            .await
    }

    /// Record `id` waits for `beteiligte`'s `betnr`. The set expires when nobody creates the
    /// Beteiligter (a forgotten record must not be kept forever; its own retries go on).
    pub async fn add_waiting(&self, beteiligte: &EspoId, id: &EspoId) -> redis::RedisResult<()> {
        let key = keys::bank_waiting(beteiligte.as_str());
        redis::pipe()
            .atomic()
            .sadd(&key, id.as_str())
            .ignore()
            .expire(&key, WAITING_TTL_SECS)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    /// The records waiting for `beteiligte`.
    pub async fn waiting(&self, beteiligte: &EspoId) -> redis::RedisResult<Vec<String>> {
        self.conn
            .clone()
            .smembers(keys::bank_waiting(beteiligte.as_str()))
            .await
    }

    /// Drops `ids` (re-queued) from the waiting set; ids added meanwhile stay.
    pub async fn remove_waiting(
        &self,
        beteiligte: &EspoId,
        ids: &[String],
    ) -> redis::RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.conn
            .clone()
            .srem(keys::bank_waiting(beteiligte.as_str()), ids)
            .await
    }
}

/// How long a waiting set lives after its last addition (30 days).
pub const WAITING_TTL_SECS: i64 = 30 * 24 * 3600;
