//! Per-entity locks `{handler}:{entity_type}:{entity_id}` so two jobs never sync the same
//! Beteiligter (or the same employee's calendar) at once, even across instances.
//!
//! Acquire is `SET NX PX` with a random owner token; release deletes only if the token still
//! matches (Lua compare-and-delete), so a job whose lock expired cannot free a lock someone else
//! now holds. The TTL bounds how long a crashed holder blocks others. A busy lock is not a failure:
//! the handler returns [`crate::handlers::HandlerError::LockBusy`] and the job is retried later.

use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use crate::keys;
use crate::queue::{QueueError, Redis};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock {0} is held by another job")]
    Busy(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Why [`LockGuard::hold_while`] stopped the work before it finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockLost {
    /// The key expired, was deleted or now holds another owner's token.
    #[error("lock {0} was lost (expired, deleted or taken by another owner); the run was stopped")]
    TakenOver(String),
    /// Redis could not confirm the extension before the lock would expire.
    #[error("lock {0} could not be extended before it expires ({1}); the run was stopped")]
    Unconfirmed(String, String),
}

impl From<redis::RedisError> for LockError {
    fn from(e: redis::RedisError) -> Self {
        LockError::Queue(QueueError::Redis(e))
    }
}

#[derive(Clone)]
pub struct Locks {
    redis: Arc<Redis>,
    release: Script,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locks")
    }
}

/// A held lock. Release explicitly with [`LockGuard::release`]; if dropped, the TTL frees it.
#[derive(Debug)]
pub struct LockGuard {
    key: String,
    token: String,
    locks: Locks,
    released: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LockInfo {
    pub key: String,
    pub owner: String,
    pub ttl_ms: i64,
}

impl Locks {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            release: Script::new(crate::queue::scripts_release_lock()),
        }
    }

    pub async fn try_acquire(
        &self,
        handler: &str,
        entity_type: &str,
        entity_id: &str,
        ttl: Duration,
    ) -> Result<LockGuard, LockError> {
        let key = keys::lock(handler, entity_type, entity_id);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut c = self.redis.conn().await?;
        let ok: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await?;
        match ok {
            Some(_) => Ok(LockGuard {
                key,
                token,
                locks: self.clone(),
                released: false,
            }),
            None => Err(LockError::Busy(key)),
        }
    }

    async fn release_key(&self, key: &str, token: &str) -> Result<bool, LockError> {
        let mut c = self.redis.conn().await?;
        let n: i64 = self
            .release
            .key(key)
            .arg(token)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    pub async fn list(&self) -> Result<Vec<LockInfo>, LockError> {
        let mut c = self.redis.conn().await?;
        let mut found: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(keys::lock_pattern())
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await?;
            found.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.dedup();
        found.sort();
        let mut out = Vec::new();
        for key in found {
            let owner: Option<String> = c.get(&key).await?;
            let ttl_ms: i64 = c.pttl(&key).await?;
            if let Some(owner) = owner {
                out.push(LockInfo { key, owner, ttl_ms });
            }
        }
        Ok(out)
    }

    /// Force-deletes locks (operator action): the given full keys, or every lock when empty.
    pub async fn clear(&self, keys_to_clear: &[String]) -> Result<usize, LockError> {
        let targets: Vec<String> = if keys_to_clear.is_empty() {
            self.list().await?.into_iter().map(|l| l.key).collect()
        } else {
            keys_to_clear
                .iter()
                .map(|k| {
                    if k.starts_with(keys::LOCK_PREFIX) {
                        k.clone()
                    } else {
                        format!("{}{k}", keys::LOCK_PREFIX)
                    }
                })
                .collect()
        };
        if targets.is_empty() {
            return Ok(0);
        }
        let mut c = self.redis.conn().await?;
        let n: usize = c.del(&targets).await?;
        Ok(n)
    }
}

/// PEXPIRE only while the key still holds our token.
const EXTEND_LOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

impl LockGuard {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Extends the TTL if the lock is still ours; `false` means it was lost. Long runs (a first
    /// calendar sync paced by Google's rate limit) call this periodically.
    pub async fn extend(&self, ttl: Duration) -> Result<bool, LockError> {
        let mut c = self.locks.redis.conn().await?;
        let n: i64 = Script::new(EXTEND_LOCK)
            .key(&self.key)
            .arg(&self.token)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Runs `work` while keeping the lock: extends it to `ttl` every `ttl / 3`. If the lock is
    /// lost, or Redis cannot confirm an extension before the lock would expire, `work` is
    /// dropped (stopped at its next await) and the reason returned: past that point another
    /// worker may hold the lock, and two runs of one entity must never overlap.
    pub async fn hold_while<F: std::future::Future>(
        &self,
        ttl: Duration,
        work: F,
    ) -> Result<F::Output, LockLost> {
        let every = (ttl / 3).max(Duration::from_millis(1));
        let keep_alive = async {
            let mut confirmed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match self.extend(ttl).await {
                    Ok(true) => confirmed = tokio::time::Instant::now(),
                    Ok(false) => return LockLost::TakenOver(self.key.clone()),
                    // The next attempt would come after the lock expired: stop now.
                    Err(e) if confirmed.elapsed() + every >= ttl => {
                        return LockLost::Unconfirmed(self.key.clone(), e.to_string())
                    }
                    Err(e) => {
                        tracing::warn!(lock = %self.key, error = %e, "cannot extend the lock; trying again")
                    }
                }
            }
        };
        tokio::select! {
            out = work => Ok(out),
            lost = keep_alive => Err(lost),
        }
    }

    /// A handler's run under its entity lock: [`hold_while`](Self::hold_while), then release
    /// (a failed release is only logged: the TTL frees the lock). A lost lock is returned
    /// unreleased, as it may be another worker's by now.
    pub async fn run_and_release<F: std::future::Future>(
        self,
        ttl: Duration,
        work: F,
    ) -> Result<F::Output, LockLost> {
        let out = self.hold_while(ttl, work).await?;
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "entity lock release failed (its TTL frees it)");
        }
        Ok(out)
    }

    /// Releases if still ours; `false` means it had expired (and maybe been taken by another).
    pub async fn release(mut self) -> Result<bool, LockError> {
        self.released = true;
        self.locks.release_key(&self.key, &self.token).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            // Best effort: release in the background; the TTL covers a failure.
            let locks = self.locks.clone();
            let (key, token) = (
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
            );
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = locks.release_key(&key, &token).await;
                });
            }
        }
    }
}
