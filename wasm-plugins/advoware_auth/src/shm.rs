//! Shared data (ngx_wasm_module `shm_kv`) access for the token cache and the
//! fetch lock, in bounded CAS loops.
//!
//! ngx_wasm_module semantics (FACTS §6): `set(k, v, cas 0)` succeeds only
//! when the key does not exist yet; otherwise the cas from the last `get`
//! must match. Every write therefore reads first and retries on
//! `CasMismatch` at most [`CAS_ATTEMPTS`] times. Host errors are returned,
//! never unwrapped.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::cache::{CachedToken, ForcedRefresh, Lock};

/// Bound of every CAS retry loop.
pub const CAS_ATTEMPTS: usize = 8;

/// Result of [`try_lock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired,
    /// Someone else's fetch is in flight (lock not expired).
    Held,
}

fn get(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    hostcalls::get_shared_data(key)
}

/// `Ok(true)` written, `Ok(false)` lost the race (CasMismatch).
fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, Status> {
    match hostcalls::set_shared_data(key, Some(value), cas) {
        Ok(()) => Ok(true),
        Err(Status::CasMismatch) => Ok(false),
        Err(other) => Err(other),
    }
}

/// The cached token, if any (empty or unreadable records count as none).
pub fn read_token(key: &str) -> Result<Option<CachedToken>, Status> {
    let (value, _) = get(key)?;
    Ok(value.as_deref().and_then(CachedToken::decode))
}

/// Stores `token`, overwriting whatever is there.
pub fn store_token(key: &str, token: &CachedToken) -> Result<(), Status> {
    let bytes = token.encode();
    for _ in 0..CAS_ATTEMPTS {
        let (_, cas) = get(key)?;
        if set(key, &bytes, cas)? {
            return Ok(());
        }
    }
    Err(Status::CasMismatch)
}

/// Empties the cached token, but only while it is still `used` (a request
/// that got a 401 for an old token must not throw away a fresh one).
/// `Ok(true)` when this call invalidated it.
pub fn invalidate_token(key: &str, used: &str) -> Result<bool, Status> {
    for _ in 0..CAS_ATTEMPTS {
        let (value, cas) = get(key)?;
        let current = value.as_deref().and_then(CachedToken::decode);
        if current.as_ref().map(|t| t.token.as_str()) != Some(used) {
            return Ok(false);
        }
        if set(key, b"", cas)? {
            return Ok(true);
        }
    }
    Err(Status::CasMismatch)
}

/// Claims the right to force a token refresh now: `Ok(None)` when the last
/// forced refresh is at least `interval_ms` ago (or there was none) and this
/// call recorded `now_ms`; `Ok(Some(last_at_ms))` when the rate limit says no
/// (`last_at_ms` is the refresh that blocks it; under constant contention
/// another context is claiming right now, reported as `now_ms`).
pub fn claim_forced_refresh(
    key: &str,
    now_ms: u64,
    interval_ms: u64,
) -> Result<Option<u64>, Status> {
    let record = ForcedRefresh { at_ms: now_ms }.encode();
    for _ in 0..CAS_ATTEMPTS {
        let (value, cas) = get(key)?;
        let last = value.as_deref().and_then(ForcedRefresh::decode);
        if !ForcedRefresh::allowed(last.as_ref(), now_ms, interval_ms) {
            return Ok(Some(last.map_or(now_ms, |l| l.at_ms)));
        }
        if set(key, &record, cas)? {
            return Ok(None);
        }
    }
    Ok(Some(now_ms))
}

/// Takes the fetch lock for `owner` unless someone else holds an unexpired one.
pub fn try_lock(key: &str, owner: u64, now_ms: u64, ttl_ms: u64) -> Result<LockOutcome, Status> {
    let record = Lock {
        owner,
        until_ms: now_ms.saturating_add(ttl_ms),
    }
    .encode();
    for _ in 0..CAS_ATTEMPTS {
        let (value, cas) = get(key)?;
        let current = value.as_deref().and_then(Lock::decode);
        if Lock::held(current.as_ref(), now_ms) {
            return Ok(LockOutcome::Held);
        }
        if set(key, &record, cas)? {
            return Ok(LockOutcome::Acquired);
        }
    }
    // Constant contention: someone else is winning, which is what "held" means.
    Ok(LockOutcome::Held)
}

/// Releases the lock if `owner` still holds it (an expired lock someone else
/// took over is left alone).
pub fn unlock(key: &str, owner: u64) -> Result<(), Status> {
    for _ in 0..CAS_ATTEMPTS {
        let (value, cas) = get(key)?;
        let current = value.as_deref().and_then(Lock::decode);
        if current.map(|l| l.owner) != Some(owner) {
            return Ok(());
        }
        if set(key, b"", cas)? {
            return Ok(());
        }
    }
    Err(Status::CasMismatch)
}
