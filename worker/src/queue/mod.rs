//! The durable job queue: one Redis stream per topic read through a consumer group.
//!
//! Life of a job: intake (or a schedule) *enqueues* it together with a coalescing marker; a
//! consumer *reads* it (the entry is now pending for that consumer), *unmarks* it as it starts,
//! runs the handler and then, in one atomic script each, *acks* it (entry deleted), *delays* it
//! (moved to the delayed set for a retry), or *dead-letters* it. Entries of a consumer that died
//! stay pending and are *reclaimed* (`XAUTOCLAIM`) by another once idle longer than the visibility
//! timeout; running handlers send heartbeats so long jobs are not reclaimed. Nothing is acked
//! before the handler succeeded, so delivery is at least once and handlers are idempotent.
//!
//! Ownership: heartbeats and outcomes are recorded only by the consumer that currently owns the
//! entry (checked atomically against `XPENDING`). A consumer that lost its entry to a reclaim
//! (it looked dead: a long GC-like stall, a network split) stops its handler and records nothing.
//!
//! Bounds: [`Queue::trim_acked`], [`Queue::trim_dlq`] and [`Queue::delete_idle_consumers`] keep
//! streams, the dead-letter stream and the consumer list from growing without end (see
//! [`crate::config::RetentionSettings`]); the consumers' retention pass calls them.

pub mod conn;
pub mod consumer;
pub mod retry;
mod scripts;

/// The lock release script lives with the other scripts; `locks` borrows it.
pub(crate) fn scripts_release_lock() -> &'static str {
    scripts::RELEASE_LOCK
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncCommands, FromRedisValue, Script, Value};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::topics;
pub use conn::Redis;

/// Errors at the queue boundary. Intake maps every variant to 503 (the sender retries).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}

impl QueueError {
    fn is_nogroup(&self) -> bool {
        matches!(self, QueueError::Redis(e) if e.code() == Some("NOGROUP"))
    }
}

/// One unit of work, stored as JSON in the `job` field of a stream entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub topic: String,
    /// Coalescing key within the topic (EspoCRM id, dedup key, Kürzel, schedule name…).
    pub entity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// When the job was first enqueued (unix ms); retries keep it.
    pub enqueued_at_ms: u64,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The schedule tick (unix s) that produced this job, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<i64>,
    pub payload: serde_json::Value,
}

impl Job {
    /// The entity is the event's dedup key (leads, call reports): the job stands for one exact
    /// event, so a later identical event is a duplicate rather than a newer state.
    pub fn is_content_keyed(&self) -> bool {
        self.dedup_key.as_deref() == Some(self.entity.as_str())
    }
}

/// What a producer asks for; the queue assigns id and timestamps.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub entity: String,
    pub payload: serde_json::Value,
    pub event_id: Option<String>,
    pub dedup_key: Option<String>,
    pub tick: Option<i64>,
}

impl NewJob {
    pub fn new(entity: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            entity: entity.into(),
            payload,
            event_id: None,
            dedup_key: None,
            tick: None,
        }
    }
}

/// Outcome of one enqueue: a new job, or absorbed into the entity's queued one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub job_id: String,
    pub entity: String,
    pub coalesced: bool,
}

/// A stream entry handed to this consumer. `job` is `Err(raw)` when the entry is unreadable.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub entry_id: String,
    /// The consumer it was handed to: only this one may record its outcome.
    pub consumer: String,
    pub job: Result<Job, String>,
    /// How often Redis has handed this entry out (1 for a fresh read; more after reclaims).
    pub deliveries: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicStats {
    pub topic: String,
    /// Entries in the stream: waiting plus in flight.
    pub stream_len: u64,
    /// Delivered to a consumer, not yet acked.
    pub in_flight: u64,
    pub delayed: u64,
    /// Age of the oldest job in the stream (since it was first enqueued; retries keep it).
    pub oldest_age_secs: Option<f64>,
    /// Age of the oldest stream entry (its id's time): what the retention limits apply to.
    pub oldest_entry_age_secs: Option<f64>,
}

/// The dead-letter stream's size and the age of its oldest entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DlqStats {
    pub len: u64,
    pub oldest_entry_age_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    pub dlq_id: String,
    pub job: Option<Job>,
    pub raw: String,
    pub error: String,
    pub failed_at: i64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone)]
struct Scripts {
    enqueue: Script,
    unmark: Script,
    heartbeat: Script,
    ack: Script,
    delay: Script,
    dead_letter: Script,
    promote: Script,
    replay: Script,
    trim_acked: Script,
    delete_idle_consumers: Script,
}

#[derive(Clone)]
pub struct Queue {
    redis: Arc<Redis>,
    group: String,
    coalesce_ttl: Duration,
    /// Cap of the dead-letter stream applied when a job is dead-lettered (0 = none).
    dlq_max_entries: u64,
    scripts: Scripts,
    /// Where each (topic, consumer)'s `XAUTOCLAIM` scan stopped: the next reclaim continues
    /// there, so idle entries behind many live ones are reached too.
    reclaim_cursors: Arc<std::sync::Mutex<BTreeMap<(String, String), String>>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// A string field of a stream entry ("" when missing or not a string).
fn entry_field(entry: &StreamId, field: &str) -> String {
    entry
        .map
        .get(field)
        .and_then(|v| String::from_redis_value(v).ok())
        .unwrap_or_default()
}

/// Age of a stream entry from the time in its id (`{ms}-{seq}`).
fn entry_age_secs(id: &str, now: u64) -> f64 {
    let at = id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(now);
    now.saturating_sub(at) as f64 / 1000.0
}

fn parse_entry(topic: &str, consumer: &str, entry: &StreamId) -> Delivery {
    let raw = entry_field(entry, "job");
    let job = serde_json::from_str::<Job>(&raw).map_err(|_| raw);
    Delivery {
        topic: topic.to_string(),
        entry_id: entry.id.clone(),
        consumer: consumer.to_string(),
        job,
        deliveries: 1,
    }
}

impl Queue {
    pub fn new(redis: Arc<Redis>, group: impl Into<String>, coalesce_ttl: Duration) -> Self {
        Self {
            redis,
            group: group.into(),
            coalesce_ttl,
            dlq_max_entries: 0,
            scripts: Scripts {
                enqueue: Script::new(scripts::ENQUEUE),
                unmark: Script::new(scripts::UNMARK),
                heartbeat: Script::new(scripts::HEARTBEAT),
                ack: Script::new(scripts::ACK),
                delay: Script::new(scripts::DELAY),
                dead_letter: Script::new(scripts::DEAD_LETTER),
                promote: Script::new(scripts::PROMOTE),
                replay: Script::new(scripts::REPLAY),
                trim_acked: Script::new(scripts::TRIM_ACKED),
                delete_idle_consumers: Script::new(scripts::DELETE_IDLE_CONSUMERS),
            },
            reclaim_cursors: Arc::default(),
        }
    }

    /// Caps the dead-letter stream at about `max_entries` whenever a job is dead-lettered
    /// (0 = no cap); the retention pass trims it exactly.
    pub fn with_dlq_max_entries(mut self, max_entries: u64) -> Self {
        self.dlq_max_entries = max_entries;
        self
    }

    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        tokio::time::timeout(self.redis.timeout(), fut)
            .await
            .unwrap_or(Err(QueueError::Timeout))
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut c = self.redis.conn().await?;
        self.timed(async {
            Ok(redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())?)
        })
        .await
    }

    /// Enqueues jobs of one topic atomically with their coalescing markers; returns after Redis
    /// has them (durable as far as Redis' persistence settings go).
    pub async fn enqueue(
        &self,
        topic: &str,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(keys::stream(topic))
            .key(keys::TOPICS)
            .arg(topic)
            .arg(self.coalesce_ttl.as_secs().max(1));
        let mut entities = Vec::with_capacity(jobs.len());
        for j in jobs {
            let job = Job {
                id: uuid::Uuid::new_v4().simple().to_string(),
                topic: topic.to_string(),
                entity: j.entity,
                event_id: j.event_id,
                dedup_key: j.dedup_key,
                enqueued_at_ms: now,
                attempts: 0,
                last_error: None,
                tick: j.tick,
                payload: j.payload,
            };
            let json =
                serde_json::to_string(&job).map_err(|e| QueueError::Protocol(e.to_string()))?;
            inv.key(keys::coalesce(topic, &job.entity))
                .arg(&job.id)
                .arg(json);
            entities.push(job.entity);
        }
        let mut c = self.redis.conn().await?;
        let reply: Vec<(i64, String)> = self
            .timed(async { Ok(inv.invoke_async(&mut c).await?) })
            .await?;
        if reply.len() != entities.len() {
            return Err(QueueError::Protocol(format!(
                "enqueue returned {} results",
                reply.len()
            )));
        }
        Ok(reply
            .into_iter()
            .zip(entities)
            .map(|((coalesced, job_id), entity)| Enqueued {
                job_id,
                entity,
                coalesced: coalesced == 1,
            })
            .collect())
    }

    /// Creates the consumer group (reading from the start, so jobs queued before any consumer
    /// existed are delivered too). Idempotent.
    pub async fn ensure_group(
        &self,
        conn: &mut ConnectionManager,
        topic: &str,
    ) -> Result<(), QueueError> {
        let r: Result<(), redis::RedisError> = conn
            .xgroup_create_mkstream(keys::stream(topic), &self.group, "0")
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads new entries, blocking up to `block`. Recreates a lost group (Redis restarted empty).
    pub async fn read(
        &self,
        conn: &mut ConnectionManager,
        topic: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let stream = keys::stream(topic);
        let res: Result<Option<StreamReadReply>, QueueError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(conn)
            .await
            .map_err(QueueError::from);
        let reply = match res {
            Err(e) if e.is_nogroup() => {
                self.ensure_group(conn, topic).await?;
                return Ok(Vec::new());
            }
            other => other?,
        };
        Ok(reply
            .map(|r| {
                r.keys
                    .iter()
                    .flat_map(|k| k.ids.iter().map(|e| parse_entry(topic, consumer, e)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Claims entries idle longer than `min_idle` (their consumer died) for `consumer`.
    ///
    /// One call scans a bounded part of the pending list (Redis looks at up to ten times `count`
    /// entries); the scan continues where the previous call of this consumer stopped and wraps
    /// to the start at the end, so an idle entry behind many live ones is reached after a few
    /// calls instead of never.
    pub async fn reclaim(
        &self,
        conn: &mut ConnectionManager,
        topic: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let cursor_key = (topic.to_string(), consumer.to_string());
        let start = self
            .reclaim_cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cursor_key)
            .cloned()
            .unwrap_or_else(|| "0-0".to_string());
        let res: Result<StreamAutoClaimReply, QueueError> = redis::cmd("XAUTOCLAIM")
            .arg(keys::stream(topic))
            .arg(&self.group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(&start)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(conn)
            .await
            .map_err(QueueError::from);
        match res {
            Err(e) if e.is_nogroup() => {
                self.ensure_group(conn, topic).await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e),
            Ok(reply) => {
                // "0-0" when the scan reached the end: the next call starts over.
                self.reclaim_cursors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(cursor_key, reply.next_stream_id.clone());
                let mut out = Vec::with_capacity(reply.claimed.len());
                for e in &reply.claimed {
                    let mut d = parse_entry(topic, consumer, e);
                    d.deliveries = self
                        .delivery_count(conn, topic, &d.entry_id)
                        .await
                        .unwrap_or(1);
                    out.push(d);
                }
                Ok(out)
            }
        }
    }

    /// Redis' delivery counter of a pending entry (a crash loop shows up here, not in `attempts`).
    async fn delivery_count(
        &self,
        conn: &mut ConnectionManager,
        topic: &str,
        entry_id: &str,
    ) -> Result<u64, QueueError> {
        let v: Value = redis::cmd("XPENDING")
            .arg(keys::stream(topic))
            .arg(&self.group)
            .arg(entry_id)
            .arg(entry_id)
            .arg(1)
            .query_async(conn)
            .await?;
        let count = match v {
            Value::Array(rows) => rows.first().and_then(|row| match row {
                Value::Array(fields) => fields.get(3).and_then(|f| u64::from_redis_value(f).ok()),
                _ => None,
            }),
            _ => None,
        };
        Ok(count.unwrap_or(1))
    }

    /// Resets the idle time of an in-flight entry so it is not reclaimed while its handler runs,
    /// if `consumer` still owns it. `Ok(false)`: another consumer reclaimed it (this one looked
    /// dead); the caller must stop the job and record no outcome.
    pub async fn heartbeat(
        &self,
        topic: &str,
        consumer: &str,
        entry_id: &str,
    ) -> Result<bool, QueueError> {
        let mut c = self.redis.conn().await?;
        let owned: i64 = self
            .scripts
            .heartbeat
            .key(keys::stream(topic))
            .arg(&self.group)
            .arg(entry_id)
            .arg(consumer)
            .invoke_async(&mut c)
            .await?;
        Ok(owned == 1)
    }

    /// The job has started: later events for its entity queue a new job.
    pub async fn unmark(&self, job: &Job) -> Result<(), QueueError> {
        let mut c = self.redis.conn().await?;
        let _: i64 = self
            .scripts
            .unmark
            .key(keys::coalesce(&job.topic, &job.entity))
            .arg(&job.id)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Acks and drops the entry. `Ok(false)`: the entry is no longer this delivery's consumer's
    /// (reclaimed by another), nothing was recorded. The same holds for `delay` and `dead_letter`.
    pub async fn ack(&self, d: &Delivery) -> Result<bool, QueueError> {
        let mut c = self.redis.conn().await?;
        let n: i64 = self
            .scripts
            .ack
            .key(keys::stream(&d.topic))
            .arg(&self.group)
            .arg(&d.entry_id)
            .arg(&d.consumer)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Acks the entry and parks `job` (already updated by the caller) in the delayed set.
    pub async fn delay(
        &self,
        d: &Delivery,
        job: &Job,
        after: Duration,
    ) -> Result<bool, QueueError> {
        let json = serde_json::to_string(job).map_err(|e| QueueError::Protocol(e.to_string()))?;
        let due = now_ms() + after.as_millis() as u64;
        let mut c = self.redis.conn().await?;
        let n: i64 = self
            .scripts
            .delay
            .key(keys::stream(&d.topic))
            .key(keys::DELAYED)
            .arg(&self.group)
            .arg(&d.entry_id)
            .arg(&d.consumer)
            .arg(due)
            .arg(json)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Acks the entry and moves the job with its last error to the dead-letter stream.
    pub async fn dead_letter(
        &self,
        d: &Delivery,
        job_json: &str,
        error: &str,
    ) -> Result<bool, QueueError> {
        let mut c = self.redis.conn().await?;
        let n: i64 = self
            .scripts
            .dead_letter
            .key(keys::stream(&d.topic))
            .key(keys::DLQ)
            .arg(&self.group)
            .arg(&d.entry_id)
            .arg(&d.consumer)
            .arg(job_json)
            .arg(error)
            .arg((now_ms() / 1000) as i64)
            .arg(self.dlq_max_entries)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Moves due delayed jobs back to their streams; returns how many.
    pub async fn promote_due(&self, limit: usize) -> Result<usize, QueueError> {
        let mut c = self.redis.conn().await?;
        let n: usize = self
            .scripts
            .promote
            .key(keys::DELAYED)
            .key(keys::TOPICS)
            .arg(now_ms())
            .arg(limit)
            .arg(keys::STREAM_PREFIX)
            .invoke_async(&mut c)
            .await?;
        Ok(n)
    }

    /// Every known topic, then every other topic that ever had a stream.
    pub async fn topic_names(&self) -> Result<Vec<String>, QueueError> {
        let mut c = self.redis.conn().await?;
        let mut names: Vec<String> = topics::KNOWN_TOPICS.iter().map(|s| s.to_string()).collect();
        let seen: Vec<String> = c.smembers(keys::TOPICS).await?;
        let mut extra: Vec<String> = seen.into_iter().filter(|t| !names.contains(t)).collect();
        extra.sort();
        names.extend(extra);
        Ok(names)
    }

    /// Per-topic depth for every known topic and every topic that ever had a stream.
    pub async fn stats(&self) -> Result<Vec<TopicStats>, QueueError> {
        let names = self.topic_names().await?;
        let mut c = self.redis.conn().await?;

        let mut delayed_by_topic: BTreeMap<String, u64> = BTreeMap::new();
        let delayed: Vec<String> = c.zrange(keys::DELAYED, 0, 9_999).await?;
        for member in delayed {
            let topic = serde_json::from_str::<Job>(&member)
                .map(|j| j.topic)
                .unwrap_or_else(|_| "invalid".into());
            *delayed_by_topic.entry(topic).or_default() += 1;
        }

        let now = now_ms();
        let mut out = Vec::with_capacity(names.len());
        for topic in names {
            let stream = keys::stream(&topic);
            let mut pipe = redis::pipe();
            pipe.cmd("XLEN")
                .arg(&stream)
                .cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
            let (len, first): (u64, Vec<StreamId>) = {
                let v: (u64, Value) = pipe.query_async(&mut c).await?;
                let first = redis::streams::StreamRangeReply::from_redis_value(&v.1)
                    .map(|r| r.ids)
                    .unwrap_or_default();
                (v.0, first)
            };
            let in_flight = if len == 0 {
                0
            } else {
                let r: Result<Value, _> = redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg(&self.group)
                    .query_async(&mut c)
                    .await;
                match r {
                    Ok(Value::Array(items)) => items
                        .first()
                        .and_then(|v| u64::from_redis_value(v).ok())
                        .unwrap_or(0),
                    _ => 0,
                }
            };
            let oldest_entry_age_secs = first.first().map(|e| entry_age_secs(&e.id, now));
            let oldest_age_secs =
                first.first().map(
                    |e| match serde_json::from_str::<Job>(&entry_field(e, "job")) {
                        Ok(j) => now.saturating_sub(j.enqueued_at_ms) as f64 / 1000.0,
                        Err(_) => entry_age_secs(&e.id, now),
                    },
                );
            let delayed = delayed_by_topic.remove(&topic).unwrap_or(0);
            out.push(TopicStats {
                topic,
                stream_len: len,
                in_flight,
                delayed,
                oldest_age_secs,
                oldest_entry_age_secs,
            });
        }
        Ok(out)
    }

    pub async fn dlq_len(&self) -> Result<u64, QueueError> {
        let mut c = self.redis.conn().await?;
        Ok(c.xlen(keys::DLQ).await?)
    }

    /// Length of the dead-letter stream and the age of its oldest entry.
    pub async fn dlq_stats(&self) -> Result<DlqStats, QueueError> {
        let mut c = self.redis.conn().await?;
        let len: u64 = c.xlen(keys::DLQ).await?;
        let first: redis::streams::StreamRangeReply =
            c.xrange_count(keys::DLQ, "-", "+", 1).await?;
        Ok(DlqStats {
            len,
            oldest_entry_age_secs: first.ids.first().map(|e| entry_age_secs(&e.id, now_ms())),
        })
    }

    /// Removes acked entries of `topic`'s stream: those older than `max_age` and, while the
    /// stream is longer than `max_len`, the oldest ones (`None` = no such limit). Never an entry
    /// that is pending or not yet delivered to every group. Returns how many went.
    pub async fn trim_acked(
        &self,
        topic: &str,
        max_age: Option<Duration>,
        max_len: Option<u64>,
    ) -> Result<u64, QueueError> {
        let mut c = self.redis.conn().await?;
        let n: u64 = self
            .timed(async {
                Ok(self
                    .scripts
                    .trim_acked
                    .key(keys::stream(topic))
                    .arg(now_ms())
                    .arg(max_age.map_or(0, |a| a.as_millis().max(1) as u64))
                    .arg(max_len.unwrap_or(0))
                    .invoke_async(&mut c)
                    .await?)
            })
            .await?;
        Ok(n)
    }

    /// Drops dead jobs beyond `max_entries` (the oldest first) and those older than `max_age`.
    /// Returns how many went.
    pub async fn trim_dlq(
        &self,
        max_entries: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<u64, QueueError> {
        let mut c = self.redis.conn().await?;
        let mut removed = 0;
        if let Some(max) = max_entries {
            let n: u64 = redis::cmd("XTRIM")
                .arg(keys::DLQ)
                .arg("MAXLEN")
                .arg("=")
                .arg(max)
                .query_async(&mut c)
                .await?;
            removed += n;
        }
        if let Some(age) = max_age {
            let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
            let n: u64 = redis::cmd("XTRIM")
                .arg(keys::DLQ)
                .arg("MINID")
                .arg("=")
                .arg(format!("{cutoff}-0"))
                .query_async(&mut c)
                .await?;
            removed += n;
        }
        Ok(removed)
    }

    /// Deletes `topic`'s consumers (of this queue's group) that hold no pending entry and were
    /// idle longer than `max_idle`, except `keep` (the caller). Returns their names.
    pub async fn delete_idle_consumers(
        &self,
        topic: &str,
        max_idle: Duration,
        keep: &str,
    ) -> Result<Vec<String>, QueueError> {
        let mut c = self.redis.conn().await?;
        let deleted: Vec<String> = self
            .scripts
            .delete_idle_consumers
            .key(keys::stream(topic))
            .arg(&self.group)
            .arg(max_idle.as_millis() as u64)
            .arg(keep)
            .invoke_async(&mut c)
            .await?;
        Ok(deleted)
    }

    pub async fn dlq_list(&self, limit: usize) -> Result<Vec<DeadJob>, QueueError> {
        let mut c = self.redis.conn().await?;
        let reply: redis::streams::StreamRangeReply =
            c.xrange_count(keys::DLQ, "-", "+", limit).await?;
        Ok(reply
            .ids
            .iter()
            .map(|e| {
                let get = |k: &str| entry_field(e, k);
                let raw = get("job");
                DeadJob {
                    dlq_id: e.id.clone(),
                    job: serde_json::from_str(&raw).ok(),
                    raw,
                    error: get("error"),
                    failed_at: get("failed_at").parse().unwrap_or(0),
                }
            })
            .collect())
    }

    /// Puts dead jobs back on their topic's stream with a fresh attempt count. `ids` empty = all.
    pub async fn dlq_replay(&self, ids: &[String]) -> Result<Vec<String>, QueueError> {
        let all = self.dlq_list(100_000).await?;
        let mut c = self.redis.conn().await?;
        let mut replayed = Vec::new();
        for dead in all
            .into_iter()
            .filter(|d| ids.is_empty() || ids.contains(&d.dlq_id))
        {
            let Some(mut job) = dead.job else { continue };
            job.attempts = 0;
            let json =
                serde_json::to_string(&job).map_err(|e| QueueError::Protocol(e.to_string()))?;
            let r: Option<String> = self
                .scripts
                .replay
                .key(keys::DLQ)
                .key(keys::stream(&job.topic))
                .key(keys::TOPICS)
                .arg(&dead.dlq_id)
                .arg(json)
                .arg(&job.topic)
                .invoke_async(&mut c)
                .await?;
            if r.is_some() {
                replayed.push(job.id);
            }
        }
        Ok(replayed)
    }

    pub async fn dlq_purge(&self) -> Result<u64, QueueError> {
        let n = self.dlq_len().await?;
        let mut c = self.redis.conn().await?;
        let _: i64 = c.del(keys::DLQ).await?;
        Ok(n)
    }
}
