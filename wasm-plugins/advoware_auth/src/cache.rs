//! The records kept in shared data (pure encoding and decisions).
//!
//! Three keys per configuration, shared by every worker VM of a node:
//!
//! - `{prefix}/token`: `v2 {fetched_at_ms} {refresh_at_ms} {expires_at_ms} {token}`,
//!   or empty when there is no usable token (shared data cannot be deleted, so an
//!   invalidated token is overwritten with an empty value). A `v1` record
//!   (no fetch time) reads as none, so it is simply fetched again.
//! - `{prefix}/lock`: `v1 {owner} {until_ms}` while one context fetches a
//!   token, empty when free. A lock past `until_ms` counts as free, so a
//!   fetch whose instance trapped or whose answer never came blocks nobody
//!   for longer than the dispatch timeout plus a second.
//! - `{prefix}/forced`: `v1 {at_ms}`, when an upstream 401 last forced a
//!   refresh (the rate limit of forced refreshes).
//!
//! Every write goes through a CAS loop in `shm.rs`; this module only decides.

/// A cached bearer token with its refresh point and expiry (host-clock ms).
#[derive(Clone, PartialEq, Eq)]
pub struct CachedToken {
    pub token: String,
    /// When the token endpoint answered (its age decides whether a 401 may discard it).
    pub fetched_at_ms: u64,
    pub refresh_at_ms: u64,
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("fetched_at_ms", &self.fetched_at_ms)
            .field("refresh_at_ms", &self.refresh_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl CachedToken {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "v2 {} {} {} {}",
            self.fetched_at_ms, self.refresh_at_ms, self.expires_at_ms, self.token
        )
        .into_bytes()
    }

    /// `None` for an empty (invalidated) or unreadable record.
    pub fn decode(bytes: &[u8]) -> Option<CachedToken> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(5, ' ');
        if parts.next()? != "v2" {
            return None;
        }
        let fetched_at_ms = parts.next()?.parse().ok()?;
        let refresh_at_ms = parts.next()?.parse().ok()?;
        let expires_at_ms = parts.next()?.parse().ok()?;
        let token = parts.next()?;
        if token.is_empty() {
            return None;
        }
        Some(CachedToken {
            token: token.to_owned(),
            fetched_at_ms,
            refresh_at_ms,
            expires_at_ms,
        })
    }

    /// May a request use it now?
    pub fn usable(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Should the tick fetch a new one now?
    pub fn due_for_refresh(&self, now_ms: u64) -> bool {
        now_ms >= self.refresh_at_ms
    }
}

/// What an upstream 401 for the token a request carried means for the shared token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The shared token is already another one (or none): someone refreshed
    /// or discarded it; the client's retry uses the current state.
    Replaced,
    /// The token is younger than the minimum age: a fresh token refused is
    /// not an expired one (e.g. the API user may not read that resource), so
    /// it is kept and the 401 goes to this client only.
    Young,
    /// Old enough to be expired or revoked: discard it, if the rate limit of
    /// forced refreshes allows.
    Old,
}

/// Judges a 401 for `used` against the current record.
pub fn judge_rejection(
    current: Option<&CachedToken>,
    used: &str,
    now_ms: u64,
    min_age_ms: u64,
) -> Rejection {
    match current {
        Some(t) if t.token == used => {
            if now_ms.saturating_sub(t.fetched_at_ms) < min_age_ms {
                Rejection::Young
            } else {
                Rejection::Old
            }
        }
        _ => Rejection::Replaced,
    }
}

/// A forced refresh was refused by the rate limit, and the blocking one
/// happened after `token_fetched_at_ms`: it was forced for this very token (by
/// a concurrent 401), which is being or has been discarded, so the client
/// should retry rather than see the 401. A blocking refresh from before the
/// token was fetched means the token is a fresh one and the 401 is passed on.
pub fn refresh_already_forced(last_forced_at_ms: u64, token_fetched_at_ms: u64) -> bool {
    last_forced_at_ms > token_fetched_at_ms
}

/// The record of the last 401-forced refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcedRefresh {
    pub at_ms: u64,
}

impl ForcedRefresh {
    pub fn encode(&self) -> Vec<u8> {
        format!("v1 {}", self.at_ms).into_bytes()
    }

    /// `None` for an empty or unreadable record (never forced).
    pub fn decode(bytes: &[u8]) -> Option<ForcedRefresh> {
        let text = std::str::from_utf8(bytes).ok()?;
        let at_ms = text.strip_prefix("v1 ")?.parse().ok()?;
        Some(ForcedRefresh { at_ms })
    }

    /// May a forced refresh happen at `now_ms`, given the last one?
    /// A record from the future (clock jump) does not block for longer than `interval_ms`.
    pub fn allowed(last: Option<&ForcedRefresh>, now_ms: u64, interval_ms: u64) -> bool {
        last.is_none_or(|l| {
            now_ms >= l.at_ms.saturating_add(interval_ms)
                || now_ms < l.at_ms.saturating_sub(interval_ms)
        })
    }
}

/// What the tick should do with the record it read.
pub fn tick_needs_fetch(current: Option<&CachedToken>, now_ms: u64) -> bool {
    current.is_none_or(|t| t.due_for_refresh(now_ms))
}

/// The fetch lock record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub owner: u64,
    pub until_ms: u64,
}

impl Lock {
    pub fn encode(&self) -> Vec<u8> {
        format!("v1 {} {}", self.owner, self.until_ms).into_bytes()
    }

    /// `None` for a free (empty) or unreadable record; an unreadable lock is
    /// treated as free so garbage can never block fetching forever.
    pub fn decode(bytes: &[u8]) -> Option<Lock> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let owner = parts.next()?.parse().ok()?;
        let until_ms = parts.next()?.parse().ok()?;
        Some(Lock { owner, until_ms })
    }

    /// Is the lock, as read, held by someone at `now_ms`?
    pub fn held(record: Option<&Lock>, now_ms: u64) -> bool {
        record.is_some_and(|l| now_ms < l.until_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn token_roundtrip_and_rules() {
        let t = CachedToken {
            token: "abc.def/ghi=".into(),
            fetched_at_ms: 5,
            refresh_at_ms: 10,
            expires_at_ms: 20,
        };
        assert_eq!(CachedToken::decode(&t.encode()), Some(t.clone()));
        assert_eq!(CachedToken::decode(b""), None);
        assert_eq!(CachedToken::decode(b"v2 0 1 2 "), None);
        assert_eq!(
            CachedToken::decode(b"v1 1 2 x"),
            None,
            "old records are refetched"
        );
        assert_eq!(CachedToken::decode(b"v2 x 1 2 t"), None);
        assert!(t.usable(19) && !t.usable(20));
        assert!(!t.due_for_refresh(9) && t.due_for_refresh(10));
        assert!(tick_needs_fetch(None, 0));
        assert!(!tick_needs_fetch(Some(&t), 9));
        assert!(tick_needs_fetch(Some(&t), 10));
        assert!(!format!("{t:?}").contains("abc"));
    }

    #[test]
    fn rejection_rules() {
        let t = CachedToken {
            token: "tok".into(),
            fetched_at_ms: 1_000,
            refresh_at_ms: 10_000,
            expires_at_ms: 20_000,
        };
        assert_eq!(judge_rejection(None, "tok", 5_000, 60), Rejection::Replaced);
        assert_eq!(
            judge_rejection(Some(&t), "old", 5_000, 60),
            Rejection::Replaced
        );
        assert_eq!(
            judge_rejection(Some(&t), "tok", 1_059, 60),
            Rejection::Young
        );
        assert_eq!(judge_rejection(Some(&t), "tok", 1_060, 60), Rejection::Old);
        assert_eq!(judge_rejection(Some(&t), "tok", 1_000, 0), Rejection::Old);

        let f = ForcedRefresh { at_ms: 1_000 };
        assert_eq!(ForcedRefresh::decode(&f.encode()), Some(f));
        assert_eq!(ForcedRefresh::decode(b""), None);
        assert_eq!(ForcedRefresh::decode(b"junk"), None);
        assert!(ForcedRefresh::allowed(None, 0, 300));
        assert!(!ForcedRefresh::allowed(Some(&f), 1_299, 300));
        assert!(ForcedRefresh::allowed(Some(&f), 1_300, 300));
        assert!(ForcedRefresh::allowed(Some(&f), 1_000, 0));
        assert!(ForcedRefresh::allowed(
            Some(&ForcedRefresh { at_ms: 10_000 }),
            1_000,
            300
        ));
        assert!(refresh_already_forced(1_061, 1_000));
        assert!(!refresh_already_forced(1_000, 1_000));
        assert!(!refresh_already_forced(900, 1_000));
    }

    #[test]
    fn lock_rules() {
        let l = Lock {
            owner: 42,
            until_ms: 100,
        };
        assert_eq!(Lock::decode(&l.encode()), Some(l));
        assert_eq!(Lock::decode(b""), None);
        assert_eq!(Lock::decode(b"junk"), None);
        assert!(Lock::held(Some(&l), 99));
        assert!(!Lock::held(Some(&l), 100));
        assert!(!Lock::held(None, 0));
    }
}
