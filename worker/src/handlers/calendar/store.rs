//! The calendar sync's records in Redis (layout in [`crate::keys`]): the per-employee
//! [`SyncState`] as three hashes, the Google event mirror, and run metadata.
//!
//! The state is written *per action*: [`CalendarStore::apply`] applies one planned
//! [`StateUpdate`] and writes exactly the hash fields it touched, in one `MULTI`, so a crash
//! loses at most the action in flight (which the next run plans again). The mirror and the sync
//! token that produced it are also written together, so the token never runs ahead of the
//! mirror.

use std::collections::{BTreeMap, BTreeSet};

use bitbylaw_core::ids::{FrNr, Kuerzel};
use redis::aio::ConnectionLike;
use redis::AsyncCommands as _;

use crate::keys;
use crate::sync::calendar::diff::GoogleEvent;
use crate::sync::calendar::scope::{apply_changes, EventChange};
use crate::sync::calendar::state::{Created, PairState, StateError, StateUpdate, SyncState};

/// Why the store failed. Redis errors are retryable for the queue; a corrupt record is skipped
/// with a warning instead (one bad field must not stop an employee's sync).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is unreachable or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A state update could not be applied (a missing created id).
    #[error(transparent)]
    State(#[from] StateError),
}

/// Run metadata of one employee's calendar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The employee's Google calendar.
    pub calendar_id: Option<String>,
    /// Token of the last incremental list (the mirror is current up to it).
    pub sync_token: Option<String>,
    /// Unix ms of the last successful sync.
    pub last_sync_ms: Option<i64>,
    /// The content mode of the last successful sync (`full` or `busy:{title}`).
    pub content_mode: Option<String>,
}

/// One employee's records. `C` is any async Redis connection.
#[derive(Debug, Clone)]
pub struct CalendarStore<C> {
    conn: C,
    kuerzel: Kuerzel,
}

impl<C: ConnectionLike + Send + Sync + Clone> CalendarStore<C> {
    /// The store of `kuerzel`'s calendar.
    pub fn new(conn: C, kuerzel: Kuerzel) -> Self {
        Self { conn, kuerzel }
    }

    fn key(&self, part: &str) -> String {
        keys::calendar(self.kuerzel.as_str(), part)
    }

    /// Loads the sync state (empty for a first sync). Corrupt entries are logged and dropped
    /// from the loaded copy only.
    pub async fn load_state(&mut self) -> Result<SyncState, StoreError> {
        let pairs: BTreeMap<String, String> = self.conn.hgetall(self.key("pairs")).await?;
        let tombstones: BTreeMap<String, String> =
            self.conn.hgetall(self.key("tombstones")).await?;
        let pending: BTreeMap<String, String> = self.conn.hgetall(self.key("pending")).await?;
        let mut state = SyncState::new(self.kuerzel.clone());
        for (field, json) in pairs {
            match serde_json::from_str::<PairState>(&json) {
                Ok(p) if p.frnr.to_string() == field => {
                    state.pairs.insert(p.frnr, p);
                }
                _ => {
                    tracing::warn!(kuerzel = %self.kuerzel, field, "corrupt calendar pair ignored")
                }
            }
        }
        for (field, hash) in tombstones {
            match field.parse::<FrNr>() {
                Ok(f) => {
                    state.tombstones.insert(f, hash);
                }
                Err(_) => {
                    tracing::warn!(kuerzel = %self.kuerzel, field, "corrupt tombstone ignored")
                }
            }
        }
        state.pending = pending;
        Ok(state)
    }

    /// Applies `update` to `state` and persists exactly what changed.
    pub async fn apply(
        &mut self,
        state: &mut SyncState,
        update: &StateUpdate,
        created: Option<&Created>,
    ) -> Result<(), StoreError> {
        let (frnrs, events) = touched(state, update, created);
        state.apply(update, created)?;
        if frnrs.is_empty() && events.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let (pk, tk, ek) = (
            self.key("pairs"),
            self.key("tombstones"),
            self.key("pending"),
        );
        for f in &frnrs {
            let field = f.to_string();
            match state.pairs.get(f) {
                Some(p) => {
                    let json = serde_json::to_string(p).unwrap_or_default();
                    pipe.hset(&pk, &field, json).ignore();
                }
                None => {
                    pipe.hdel(&pk, &field).ignore();
                }
            }
            match state.tombstones.get(f) {
                Some(h) => {
                    pipe.hset(&tk, &field, h).ignore();
                }
                None => {
                    pipe.hdel(&tk, &field).ignore();
                }
            }
        }
        for id in &events {
            match state.pending.get(id) {
                Some(h) => {
                    pipe.hset(&ek, id, h).ignore();
                }
                None => {
                    pipe.hdel(&ek, id).ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// Run metadata.
    pub async fn meta(&mut self) -> Result<Meta, StoreError> {
        let m: BTreeMap<String, String> = self.conn.hgetall(self.key("meta")).await?;
        Ok(Meta {
            calendar_id: m.get("calendar_id").cloned(),
            sync_token: m.get("sync_token").cloned(),
            last_sync_ms: m.get("last_sync_ms").and_then(|v| v.parse().ok()),
            content_mode: m.get("content_mode").cloned(),
        })
    }

    /// Remembers the employee's calendar.
    pub async fn set_calendar_id(&mut self, id: &str) -> Result<(), StoreError> {
        let _: () = self.conn.hset(self.key("meta"), "calendar_id", id).await?;
        Ok(())
    }

    /// Forgets the calendar, the mirror and the token (the calendar itself is gone).
    pub async fn forget_calendar(&mut self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(self.key("meta"), &["calendar_id", "sync_token"])
            .ignore()
            .del(self.key("mirror"))
            .ignore();
        pipe.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// The mirrored Google events. Corrupt entries are dropped from the loaded copy (and will be
    /// rewritten by the next full list).
    pub async fn load_mirror(&mut self) -> Result<BTreeMap<String, GoogleEvent>, StoreError> {
        let raw: BTreeMap<String, String> = self.conn.hgetall(self.key("mirror")).await?;
        let mut out = BTreeMap::new();
        for (id, json) in raw {
            match serde_json::from_str::<GoogleEvent>(&json) {
                Ok(e) if e.id == id => {
                    out.insert(id, e);
                }
                _ => {
                    tracing::warn!(kuerzel = %self.kuerzel, event_id = id, "corrupt mirror entry ignored")
                }
            }
        }
        Ok(out)
    }

    /// Applies a list result to `mirror` and persists it together with its sync token.
    pub async fn record_list(
        &mut self,
        mirror: &mut BTreeMap<String, GoogleEvent>,
        changes: &[EventChange],
        next_sync_token: &str,
        full: bool,
    ) -> Result<(), StoreError> {
        apply_changes(mirror, changes, full);
        let key = self.key("mirror");
        let mut pipe = redis::pipe();
        pipe.atomic();
        if full {
            pipe.del(&key).ignore();
            let items: Vec<(String, String)> = mirror
                .values()
                .map(|e| (e.id.clone(), serde_json::to_string(e).unwrap_or_default()))
                .collect();
            for chunk in items.chunks(500) {
                pipe.hset_multiple(&key, chunk).ignore();
            }
        } else {
            for c in changes {
                match c {
                    EventChange::Live(e) => {
                        pipe.hset(&key, &e.id, serde_json::to_string(e).unwrap_or_default())
                            .ignore();
                    }
                    EventChange::Cancelled(id) | EventChange::Unreadable { id, .. } => {
                        pipe.hdel(&key, id).ignore();
                    }
                }
            }
        }
        pipe.hset(self.key("meta"), "sync_token", next_sync_token)
            .ignore();
        pipe.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// Writes one event we just created or updated into the mirror.
    pub async fn mirror_put(&mut self, event: &GoogleEvent) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).unwrap_or_default();
        let _: () = self.conn.hset(self.key("mirror"), &event.id, json).await?;
        Ok(())
    }

    /// Removes an event we just deleted from the mirror.
    pub async fn mirror_delete(&mut self, event_id: &str) -> Result<(), StoreError> {
        let _: () = self.conn.hdel(self.key("mirror"), event_id).await?;
        Ok(())
    }

    /// Marks a successful run (orders the next `calendar.sync.all`) and the content mode it
    /// wrote Google events in.
    pub async fn mark_synced(
        &mut self,
        now_ms: i64,
        summary: &str,
        content_mode: &str,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(self.key("meta"), "last_sync_ms", now_ms)
            .ignore()
            .hset(self.key("meta"), "content_mode", content_mode)
            .ignore()
            .hset(self.key("meta"), "last_result", summary)
            .ignore()
            .zadd(keys::CALENDAR_LAST_SYNC, self.kuerzel.as_str(), now_ms)
            .ignore()
            .zrem(keys::CALENDAR_FAILURES, self.kuerzel.as_str())
            .ignore();
        pipe.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// Counts a failed run; [`Self::mark_synced`] ends the streak. Feeds the "calendar sync of
    /// an employee failing N times in a row" alert.
    pub async fn mark_failed(&mut self) -> Result<(), StoreError> {
        let _: f64 = self
            .conn
            .zincr(keys::CALENDAR_FAILURES, self.kuerzel.as_str(), 1)
            .await?;
        Ok(())
    }
}

/// The `frNr`s and event ids whose hash fields `update` changes (computed before applying it,
/// because a `Put` also drops any other pair of the same event).
fn touched(
    state: &SyncState,
    update: &StateUpdate,
    created: Option<&Created>,
) -> (BTreeSet<FrNr>, BTreeSet<String>) {
    let mut frnrs = BTreeSet::new();
    let mut events = BTreeSet::new();
    let mut put = |frnr: FrNr, event_id: &str| {
        frnrs.insert(frnr);
        frnrs.extend(
            state
                .pairs
                .values()
                .filter(|p| p.event_id == event_id)
                .map(|p| p.frnr),
        );
        events.insert(event_id.to_owned());
    };
    match (update, created) {
        (StateUpdate::Nothing, _) => {}
        (StateUpdate::Put(p), _) => put(p.frnr, &p.event_id),
        (StateUpdate::PutCreatedEvent { frnr, .. }, Some(Created::EventId(id))) => put(*frnr, id),
        (StateUpdate::PutCreatedTermin { event_id, .. }, Some(Created::FrNr(f))) => {
            put(*f, event_id)
        }
        // Without the created id `apply` fails; nothing to write.
        (StateUpdate::PutCreatedEvent { .. } | StateUpdate::PutCreatedTermin { .. }, _) => {}
        (StateUpdate::Forget { frnr, .. }, _) => {
            frnrs.insert(*frnr);
        }
        (StateUpdate::Pending { event_id, .. }, _) => {
            events.insert(event_id.clone());
        }
    }
    (frnrs, events)
}

/// Orders Kürzel least recently synced first (never synced first of all, then by name).
pub async fn least_recently_synced<C: ConnectionLike + Send>(
    conn: &mut C,
    kuerzel: Vec<Kuerzel>,
) -> Result<Vec<Kuerzel>, StoreError> {
    // One round trip for all employees.
    let mut pipe = redis::pipe();
    for k in &kuerzel {
        pipe.zscore(keys::CALENDAR_LAST_SYNC, k.as_str());
    }
    let scores: Vec<Option<i64>> = if kuerzel.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let mut scored: Vec<(i64, Kuerzel)> = scores
        .into_iter()
        .map(|s| s.unwrap_or(i64::MIN))
        .zip(kuerzel)
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_str().cmp(b.1.as_str())));
    Ok(scored.into_iter().map(|(_, k)| k).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::sync::calendar::state::Origin;

    #[test]
    fn touched_covers_the_pair_replaced_by_a_put() {
        let mut s = SyncState::new(Kuerzel::new("SB").unwrap());
        let pair = |f: u64, id: &str| PairState {
            frnr: FrNr(f),
            event_id: id.into(),
            advoware_hash: "a".into(),
            google_hash: "g".into(),
            origin: Origin::Advoware,
        };
        s.apply(&StateUpdate::Put(pair(1, "e")), None).unwrap();
        let (f, e) = touched(&s, &StateUpdate::Put(pair(2, "e")), None);
        assert_eq!(f.into_iter().collect::<Vec<_>>(), [FrNr(1), FrNr(2)]);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), ["e"]);
        let created = StateUpdate::PutCreatedTermin {
            event_id: "x".into(),
            advoware_hash: "a".into(),
            google_hash: "g".into(),
            origin: Origin::Google,
        };
        assert!(touched(&s, &created, None).0.is_empty());
        let (f, e) = touched(&s, &created, Some(&Created::FrNr(FrNr(9))));
        assert_eq!(f.into_iter().collect::<Vec<_>>(), [FrNr(9)]);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), ["x"]);
    }
}
