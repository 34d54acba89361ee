//! The shared Google request budget (issue #6): one token bucket in Redis for all workers. The
//! same bucket, under other keys ([`TokenBucket::with_keys`]), is the outbound-call budget of
//! `POST /3cx/call` (`threecx.calls_per_minute`).
//!
//! Google's Calendar quota is per user (the delegated subject), not per process, so every worker
//! instance draws from the same bucket, [`GOOGLE_BUCKET`]. One Lua script refills and takes a
//! token atomically, using Redis `TIME` so that all workers agree on one clock. After Google
//! answered a quota error, [`TokenBucket::back_off`] writes [`GOOGLE_BACKOFF`] (a ms timestamp);
//! until then nobody gets a token, whatever the bucket holds.
//!
//! # Sizing rule
//!
//! From `requests_per_minute` (rpm): capacity (burst) = max(1, rpm / 60) and refill =
//! (rpm − capacity) / 60 tokens per second. A full bucket plus 60 s of refill is then exactly rpm,
//! so no 60-second window — sliding, not just calendar minutes — ever sees more than the budget.
//! Only for rpm ≤ 1 is the refill raised to 1/60 per second (otherwise it would be 0 and the
//! bucket would never refill), so there one window may see two requests.

use std::time::Duration;

use rand::Rng;
use redis::aio::ConnectionLike;
use redis::Script;
use tracing::debug;

use crate::keys::{GOOGLE_BACKOFF, GOOGLE_BUCKET};

/// The longest single sleep of [`TokenBucket::acquire`]: a long backoff is waited out in steps,
/// so a shortened or cleared backoff is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(2);

/// The longest backoff [`TokenBucket::back_off`] sets (one hour); a longer `Retry-After` is
/// clamped so a bogus header cannot stop all Google traffic for days.
const MAX_BACKOFF_MS: u64 = 3_600_000;

/// Refill by elapsed time, honour the backoff, take a token.
/// KEYS: bucket hash, backoff key. ARGV: capacity, refill tokens per ms, bucket TTL ms.
/// Returns 0 when a token was taken, else the milliseconds to wait.
const ACQUIRE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local backoff = tonumber(redis.call('GET', KEYS[2]) or '')
if backoff and backoff > now then
  return backoff - now
end
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at_ms')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = cap
  at = now
end
if now > at then
  tokens = math.min(cap, tokens + (now - at) * rate)
  at = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
  if wait < 1 then wait = 1 end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at_ms', tostring(at))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return wait
";

/// Set the backoff to now + ARGV[1] ms unless a later one is already set.
/// KEYS: backoff key. Returns the remaining backoff in ms after the call.
const BACK_OFF_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '')
if current and current >= now + ms then
  return current - now
end
redis.call('SET', KEYS[1], tostring(now + ms), 'PX', ms)
return ms
";

/// The Redis part failed; callers treat it like any transient infrastructure error.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The script could not run (connection lost, Redis down, …).
    #[error("Redis (shared request budget): {0}")]
    Redis(#[from] redis::RedisError),
}

/// Capacity and refill of a bucket, derived from the per-minute budget by the module's rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSize {
    /// Tokens a full bucket holds: the burst.
    pub capacity: u32,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

impl BucketSize {
    /// Capacity max(1, rpm/60), refill (rpm − capacity)/60 per second, so that burst plus one
    /// minute of refill never exceeds rpm (see the module docs for rpm ≤ 1).
    pub fn from_requests_per_minute(rpm: u32) -> Self {
        let capacity = (rpm / 60).max(1);
        let per_minute = rpm.saturating_sub(capacity).max(1);
        Self {
            capacity,
            refill_per_sec: f64::from(per_minute) / 60.0,
        }
    }

    /// Milliseconds an empty bucket needs to be full again: after that an absent key means the
    /// same as a full bucket, so the hash may expire.
    fn ttl_ms(&self) -> u64 {
        let secs = f64::from(self.capacity) / self.refill_per_sec;
        // Finite and positive by construction (capacity ≥ 1, refill ≥ 1/60); +1 s slack.
        (secs * 1000.0).ceil().clamp(1.0, 86_400_000.0) as u64 + 1000
    }
}

/// One Google request budget shared by all workers through Redis. Cheap to clone.
#[derive(Clone)]
pub struct TokenBucket<C> {
    conn: C,
    bucket_key: String,
    backoff_key: String,
    size: BucketSize,
    acquire_script: Script,
    back_off_script: Script,
    /// Counts granted tokens (Google requests) for `/metrics`, when set.
    granted: Option<prometheus_client::metrics::counter::Counter>,
}

impl<C> std::fmt::Debug for TokenBucket<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBucket")
            .field("bucket_key", &self.bucket_key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<C> TokenBucket<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// The bucket of all workers: keys [`GOOGLE_BUCKET`] and [`GOOGLE_BACKOFF`].
    pub fn new(conn: C, requests_per_minute: u32) -> Self {
        Self::with_keys(conn, requests_per_minute, GOOGLE_BUCKET, GOOGLE_BACKOFF)
    }

    /// A bucket under other keys (tests, or a second budget).
    pub fn with_keys(
        conn: C,
        requests_per_minute: u32,
        bucket_key: &str,
        backoff_key: &str,
    ) -> Self {
        Self {
            conn,
            bucket_key: bucket_key.to_owned(),
            backoff_key: backoff_key.to_owned(),
            size: BucketSize::from_requests_per_minute(requests_per_minute),
            acquire_script: Script::new(ACQUIRE_LUA),
            back_off_script: Script::new(BACK_OFF_LUA),
            granted: None,
        }
    }

    /// Counts every granted token in `granted` (this process's share of the budget use).
    pub fn counting(mut self, granted: prometheus_client::metrics::counter::Counter) -> Self {
        self.granted = Some(granted);
        self
    }

    /// Capacity and refill in use.
    pub fn size(&self) -> BucketSize {
        self.size
    }

    /// Takes a token if one is there (`None`), else says how long to wait (`Some`); also
    /// `Some(remaining)` while a backoff is in force.
    pub async fn try_acquire(&self) -> Result<Option<Duration>, RateLimitError> {
        let mut conn = self.conn.clone();
        let wait_ms: u64 = self
            .acquire_script
            .key(&self.bucket_key)
            .key(&self.backoff_key)
            .arg(self.size.capacity)
            .arg((self.size.refill_per_sec / 1000.0).to_string())
            .arg(self.size.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        if wait_ms == 0 {
            if let Some(granted) = &self.granted {
                granted.inc();
            }
            Ok(None)
        } else {
            debug!(wait_ms, "Google request budget exhausted or backing off");
            Ok(Some(Duration::from_millis(wait_ms)))
        }
    }

    /// Waits until a token is granted. Each sleep is capped at 2 s and slightly jittered so
    /// workers waiting together do not all wake in the same millisecond.
    pub async fn acquire(&self) -> Result<(), RateLimitError> {
        while let Some(wait) = self.try_acquire().await? {
            let wait = wait.min(MAX_SLEEP);
            let jitter_ms = rand::rng().random_range(0..=wait.as_millis().min(50) as u64 / 5);
            tokio::time::sleep(wait + Duration::from_millis(jitter_ms)).await;
        }
        Ok(())
    }

    /// Nobody calls Google for `d` from now (by Redis' clock); an existing later backoff is kept.
    /// The key carries a matching TTL, so it never outlives its purpose.
    pub async fn back_off(&self, d: Duration) -> Result<(), RateLimitError> {
        let ms = u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_BACKOFF_MS);
        let mut conn = self.conn.clone();
        let remaining_ms: u64 = self
            .back_off_script
            .key(&self.backoff_key)
            .arg(ms)
            .invoke_async(&mut conn)
            .await?;
        debug!(
            requested_ms = ms,
            remaining_ms, "Google backoff set for all workers"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;
    use bitbylaw_fakes::redis_server::RedisServer;
    use redis::AsyncCommands;

    #[test]
    fn sizing_keeps_every_minute_within_budget() {
        for rpm in [2u32, 59, 60, 61, 120, 600, 601, 10_000] {
            let s = BucketSize::from_requests_per_minute(rpm);
            assert!(s.capacity >= 1);
            let minute = f64::from(s.capacity) + s.refill_per_sec * 60.0;
            assert!(minute <= f64::from(rpm) + 1e-9, "rpm {rpm}: {minute}");
            assert!(s.refill_per_sec > 0.0);
        }
        let s = BucketSize::from_requests_per_minute(600);
        assert_eq!(s.capacity, 10);
        assert!((s.refill_per_sec - 9.833_333).abs() < 1e-3);
        let tiny = BucketSize::from_requests_per_minute(0);
        assert_eq!(tiny.capacity, 1);
        assert!(tiny.refill_per_sec > 0.0);
        assert!(tiny.ttl_ms() > 60_000);
    }

    #[tokio::test]
    async fn burst_then_wait() {
        let redis = RedisServer::start(false);
        let bucket = TokenBucket::new(redis.conn().await, 120);
        assert_eq!(bucket.size().capacity, 2);
        assert_eq!(bucket.try_acquire().await.unwrap(), None);
        assert_eq!(bucket.try_acquire().await.unwrap(), None);
        let wait = bucket.try_acquire().await.unwrap().expect("must wait");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(600),
            "{wait:?}"
        );
        let mut conn = redis.conn().await;
        let ttl: i64 = conn.pttl(GOOGLE_BUCKET).await.unwrap();
        assert!(ttl > 0, "bucket hash has a TTL");
    }

    #[tokio::test]
    async fn buckets_on_separate_connections_share_the_budget() {
        let redis = RedisServer::start(false);
        let a = TokenBucket::new(redis.conn().await, 120);
        let b = TokenBucket::new(redis.conn().await, 120);
        assert_eq!(a.try_acquire().await.unwrap(), None);
        assert_eq!(b.try_acquire().await.unwrap(), None);
        assert!(a.try_acquire().await.unwrap().is_some());
        assert!(b.try_acquire().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn back_off_blocks_and_is_never_shortened() {
        let redis = RedisServer::start(false);
        let bucket = TokenBucket::new(redis.conn().await, 600);
        bucket.back_off(Duration::from_secs(30)).await.unwrap();
        let wait = bucket.try_acquire().await.unwrap().expect("backing off");
        assert!(
            wait > Duration::from_secs(29) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        bucket.back_off(Duration::from_secs(5)).await.unwrap();
        let wait = bucket
            .try_acquire()
            .await
            .unwrap()
            .expect("still backing off");
        assert!(wait > Duration::from_secs(29), "shortened to {wait:?}");
        let mut conn = redis.conn().await;
        let ttl: i64 = conn.pttl(GOOGLE_BACKOFF).await.unwrap();
        assert!(ttl > 29_000 && ttl <= 30_000, "{ttl}");
        // A longer backoff replaces a shorter one.
        bucket.back_off(Duration::from_secs(60)).await.unwrap();
        let wait = bucket.try_acquire().await.unwrap().expect("backing off");
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        // The bucket itself was not drawn while backing off.
        conn.del::<_, ()>(GOOGLE_BACKOFF).await.unwrap();
        for _ in 0..10 {
            assert_eq!(bucket.try_acquire().await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn acquire_returns_once_granted() {
        let redis = RedisServer::start(false);
        let bucket = TokenBucket::new(redis.conn().await, 6000);
        for _ in 0..(bucket.size().capacity + 3) {
            bucket.acquire().await.unwrap();
        }
    }
}
