//! What the leads handler keeps in Redis per submission (`keys::lead`, 30 days): the steps of
//! one submission, each recorded right after it happened, so a retry resumes after the last
//! recorded step. `intent` is written before anything touches EspoCRM: a retry that finds it
//! without `record` searches EspoCRM for the submission's marker before creating anything.

use redis::aio::ConnectionLike;
use redis::AsyncCommands as _;

use crate::keys;

/// How long a submission's record is kept: far beyond any retry, short for personal data (it
/// holds EspoCRM ids only).
pub const TTL_SECS: i64 = 30 * 24 * 3600;

/// The recorded steps of one submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steps {
    pub intent: bool,
    /// `(entity, id)` of the Lead or Contact written.
    pub record: Option<(String, String)>,
    pub linked: bool,
    pub followup: bool,
    /// The 3CX journal's Advoware note: `note_intent` before its `POST`, `note` after it
    /// (`1`, or `uncertain` when an earlier attempt got no answer).
    pub note_intent: bool,
    pub note: bool,
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct LeadStore<C> {
    conn: C,
    /// The hash of one idempotency key (`keys::lead`; the 3CX journal uses `keys::call`).
    key: fn(&str) -> String,
}

impl<C: ConnectionLike + Clone + Send + Sync> LeadStore<C> {
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            key: keys::lead,
        }
    }

    /// The same steps under another key layout (the 3CX call journal: `keys::call`).
    pub fn with_keys(conn: C, key: fn(&str) -> String) -> Self {
        Self { conn, key }
    }

    pub async fn steps(&self, key: &str) -> redis::RedisResult<Steps> {
        let map: std::collections::HashMap<String, String> =
            self.conn.clone().hgetall((self.key)(key)).await?;
        Ok(Steps {
            intent: map.contains_key("intent"),
            record: map
                .get("record")
                .and_then(|r| r.split_once(':'))
                .map(|(e, i)| (e.to_owned(), i.to_owned())),
            linked: map.contains_key("linked"),
            followup: map.contains_key("followup"),
            note_intent: map.contains_key("note_intent"),
            note: map.contains_key("note"),
            done: map.contains_key("done"),
        })
    }

    /// Records the intent (first attempt only); true if this call wrote it.
    pub async fn set_intent(&self, key: &str, now_ms: i64) -> redis::RedisResult<bool> {
        self.set_once(key, "intent", now_ms).await
    }

    /// Records an intent step once (`intent`, `note_intent`); true if this call wrote it, false
    /// if an earlier attempt had (and may have written to the other system).
    pub async fn set_once(&self, key: &str, step: &str, now_ms: i64) -> redis::RedisResult<bool> {
        let k = (self.key)(key);
        let (fresh, _): (bool, bool) = redis::pipe()
            .atomic()
            .hset_nx(&k, step, now_ms)
            .expire(&k, TTL_SECS)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(fresh)
    }

    /// Forgets an intent whose write was refused (so nothing was written): the retry tries again.
    pub async fn clear(&self, key: &str, step: &str) -> redis::RedisResult<()> {
        self.conn.clone().hdel((self.key)(key), step).await
    }

    /// Records one step (`record`, `linked`, `followup`, `done`).
    pub async fn set(&self, key: &str, step: &str, value: &str) -> redis::RedisResult<()> {
        self.conn.clone().hset((self.key)(key), step, value).await
    }
}
