//! The records kept in shared data (pure encoding and decisions).
//!
//! Two keys per configuration, shared by every worker VM of a node:
//!
//! - `{prefix}/token`: `v1 {refresh_at_ms} {expires_at_ms} {token}`, or empty
//!   when there is no usable token (shared data cannot be deleted, so an
//!   invalidated token is overwritten with an empty value).
//! - `{prefix}/lock`: `v1 {owner} {until_ms}` while one context fetches a
//!   token, empty when free. A lock past `until_ms` counts as free, so a
//!   fetch whose instance trapped or whose answer never came blocks nobody
//!   for longer than the dispatch timeout plus a second.
//!
//! Every write goes through a CAS loop in `shm.rs`; this module only decides.

/// A cached bearer token with its refresh point and expiry (host-clock ms).
#[derive(Clone, PartialEq, Eq)]
pub struct CachedToken {
    pub token: String,
    pub refresh_at_ms: u64,
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("refresh_at_ms", &self.refresh_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl CachedToken {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "v1 {} {} {}",
            self.refresh_at_ms, self.expires_at_ms, self.token
        )
        .into_bytes()
    }

    /// `None` for an empty (invalidated) or unreadable record.
    pub fn decode(bytes: &[u8]) -> Option<CachedToken> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(4, ' ');
        if parts.next()? != "v1" {
            return None;
        }
        let refresh_at_ms = parts.next()?.parse().ok()?;
        let expires_at_ms = parts.next()?.parse().ok()?;
        let token = parts.next()?;
        if token.is_empty() {
            return None;
        }
        Some(CachedToken {
            token: token.to_owned(),
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
            refresh_at_ms: 10,
            expires_at_ms: 20,
        };
        assert_eq!(CachedToken::decode(&t.encode()), Some(t.clone()));
        assert_eq!(CachedToken::decode(b""), None);
        assert_eq!(CachedToken::decode(b"v1 1 2 "), None);
        assert_eq!(CachedToken::decode(b"v2 1 2 x"), None);
        assert_eq!(CachedToken::decode(b"v1 x 2 t"), None);
        assert!(t.usable(19) && !t.usable(20));
        assert!(!t.due_for_refresh(9) && t.due_for_refresh(10));
        assert!(tick_needs_fetch(None, 0));
        assert!(!tick_needs_fetch(Some(&t), 9));
        assert!(tick_needs_fetch(Some(&t), 10));
        assert!(!format!("{t:?}").contains("abc"));
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
