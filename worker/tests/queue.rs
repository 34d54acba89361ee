//! The queue's ownership and bounds against a real `redis-server` (issue 16, items 7 and 8):
//! two consumers racing for one entry, reclaim scans that reach idle entries behind live ones,
//! locks that stop a run when lost, retention of acked entries and dead jobs, idle consumers,
//! and the stream metrics and `queue stats` columns.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bitbylaw_worker::locks::{LockLost, Locks};
use bitbylaw_worker::queue::{Delivery, NewJob, Queue, Redis};
use common::{cli, job_ids, metric, metrics_text, post_event, wait_for, RedisServer, Worker};
use redis::AsyncCommands;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "test.record";
const STREAM: &str = "bbl:q:test.record";
const GROUP: &str = "workers";

fn queue(redis: &RedisServer) -> Queue {
    let r = Redis::open(&redis.url(), Duration::from_secs(2)).unwrap();
    Queue::new(Arc::new(r), GROUP, Duration::from_secs(60))
}

/// Enqueues `n` jobs of distinct entities; returns their stream entry ids in order.
async fn enqueue(q: &Queue, redis: &RedisServer, n: usize) -> Vec<String> {
    let jobs = (0..n)
        .map(|i| NewJob::new(format!("e{i}-{}", uuid::Uuid::new_v4()), json!({"i": i})))
        .collect();
    q.enqueue(TOPIC, jobs).await.unwrap();
    stream_ids(redis, STREAM).await
}

async fn stream_ids(redis: &RedisServer, key: &str) -> Vec<String> {
    let mut c = redis.conn().await;
    let r: redis::streams::StreamRangeReply = c.xrange_all(key).await.unwrap();
    r.ids.into_iter().map(|e| e.id).collect()
}

/// (entry id, owning consumer) of every pending entry.
async fn pending(redis: &RedisServer) -> Vec<(String, String)> {
    let mut c = redis.conn().await;
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(&mut c)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, owner, _, _)| (id, owner))
        .collect()
}

/// Marks a pending entry as idle for an hour without changing its owner: its consumer looks dead.
async fn make_idle(redis: &RedisServer, owner: &str, id: &str) {
    let mut c = redis.conn().await;
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(STREAM)
        .arg(GROUP)
        .arg(owner)
        .arg(0)
        .arg(id)
        .arg("IDLE")
        .arg(3_600_000)
        .arg("JUSTID")
        .query_async(&mut c)
        .await
        .unwrap();
}

async fn read(q: &Queue, consumer: &str, count: usize) -> Vec<Delivery> {
    let mut c = q
        .redis()
        .dedicated(Duration::from_millis(100))
        .await
        .unwrap();
    q.ensure_group(&mut c, TOPIC).await.unwrap();
    q.read(&mut c, TOPIC, consumer, count, Duration::from_millis(100))
        .await
        .unwrap()
}

async fn reclaim(q: &Queue, consumer: &str, count: usize) -> Vec<Delivery> {
    let mut c = q
        .redis()
        .dedicated(Duration::from_millis(100))
        .await
        .unwrap();
    q.reclaim(&mut c, TOPIC, consumer, Duration::from_secs(60), count)
        .await
        .unwrap()
}

// ---- item 7: ownership ----

#[tokio::test]
async fn a_heartbeat_after_another_consumer_reclaimed_the_entry_does_not_take_it_back() {
    let redis = RedisServer::start(false);
    let q = queue(&redis);
    let ids = enqueue(&q, &redis, 1).await;
    let a = read(&q, "A", 1).await;
    assert_eq!(a.len(), 1);
    // A stalls; B reclaims the entry legitimately.
    make_idle(&redis, "A", &ids[0]).await;
    let b = reclaim(&q, "B", 10).await;
    assert_eq!(b.len(), 1);
    assert_eq!(pending(&redis).await, vec![(ids[0].clone(), "B".into())]);

    // A wakes up: its heartbeat must not pull the entry back, and it learns it lost it.
    let owned = q.heartbeat(TOPIC, "A", &ids[0]).await.unwrap();
    assert_eq!(pending(&redis).await, vec![(ids[0].clone(), "B".into())]);
    assert!(!owned, "the heartbeat reports the loss");
    // Nor may A record an outcome for B's entry; B can.
    assert!(!q.ack(&a[0]).await.unwrap());
    assert!(!q.dead_letter(&a[0], "{}", "x").await.unwrap());
    assert_eq!(stream_ids(&redis, STREAM).await, ids);
    assert_eq!(stream_ids(&redis, "bbl:dlq").await.len(), 0);
    assert!(q.heartbeat(TOPIC, "B", &ids[0]).await.unwrap());
    assert!(q.ack(&b[0]).await.unwrap());
    assert!(stream_ids(&redis, STREAM).await.is_empty());
}

#[tokio::test]
async fn reclaim_reaches_an_idle_entry_behind_more_than_a_page_of_live_ones() {
    let redis = RedisServer::start(false);
    let q = queue(&redis);
    // 25 entries A is working on (live), then one A abandoned (idle).
    let ids = enqueue(&q, &redis, 26).await;
    assert_eq!(read(&q, "A", 26).await.len(), 26);
    let idle = ids[25].clone();
    make_idle(&redis, "A", &idle).await;

    // COUNT 1 lets Redis scan ten pending entries per call.
    let mut claimed = Vec::new();
    for _ in 0..5 {
        claimed.extend(reclaim(&q, "B", 1).await.into_iter().map(|d| d.entry_id));
    }
    assert_eq!(claimed, vec![idle.clone()]);
    let owners = pending(&redis).await;
    assert_eq!(owners.iter().filter(|(_, o)| o == "A").count(), 25);
    assert!(owners.contains(&(idle, "B".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_job_was_reclaimed_stops_its_handler_and_records_nothing() {
    let redis = RedisServer::start(false);
    // Heartbeats every ~0.7 s (visibility timeout 2 s).
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let (_, v) = post_event(
        &w.base,
        TOPIC,
        br#"{"id":"own1","sleep_ms":60000,"lock":true}"#,
    )
    .await;
    let job = job_ids(&v)[0].clone();
    let lock = "bbl:lock:test_record:test:own1";
    let mut c = redis.conn().await;
    wait_for("handler holds its lock", WAIT, || {
        let mut c = c.clone();
        async move { c.exists::<_, bool>(lock).await.unwrap().then_some(()) }
    })
    .await;
    let (entry, worker_a) = pending(&redis).await.remove(0);

    // A second consumer B takes the job over as if A had died.
    let q = queue(&redis);
    let b = wait_for("B reclaimed the job", WAIT, || async {
        make_idle(&redis, &worker_a, &entry).await;
        reclaim(&q, "B", 1).await.pop()
    })
    .await;

    // A's next heartbeat finds the job gone: its handler is stopped (dropping its lock guard
    // releases the entity lock) and the entry stays B's.
    wait_for("A's handler stopped", WAIT, || {
        let mut c = c.clone();
        async move { (!c.exists::<_, bool>(lock).await.unwrap()).then_some(()) }
    })
    .await;
    let m = metrics_text(&w.base).await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_jobs_ownership_lost_total",
            "topic=\"test.record\""
        ),
        1.0,
        "{m}"
    );
    assert_eq!(pending(&redis).await, vec![(entry.clone(), "B".into())]);
    let completed: Option<i64> = c.hget("bbl:test:completed", &job).await.unwrap();
    assert_eq!(completed, None, "A never finished the job");
    assert!(
        q.ack(&b).await.unwrap(),
        "the new owner records the outcome"
    );
}

#[tokio::test]
async fn a_run_under_a_lock_stops_when_the_lock_is_lost_or_cannot_be_extended() {
    let mut redis = Some(RedisServer::start(false));
    let url = redis.as_ref().unwrap().url();
    let locks = Locks::new(Arc::new(
        Redis::open(&url, Duration::from_millis(300)).unwrap(),
    ));
    let ttl = Duration::from_millis(300);
    let mut c = redis.as_ref().unwrap().conn().await;

    // Overwritten by another owner mid-run: stopped, and the other owner's lock stays.
    let guard = locks
        .try_acquire("calendar", "employee", "SB", ttl)
        .await
        .unwrap();
    let key = guard.key().to_string();
    let work = async {
        let _: () = c.set(&key, "someone-else").await.unwrap();
        std::future::pending::<()>().await
    };
    let lost = guard.hold_while(ttl, work).await.unwrap_err();
    assert_eq!(lost, LockLost::TakenOver(key.clone()));
    assert!(!guard.release().await.unwrap());
    let owner: Option<String> = c.get(&key).await.unwrap();
    assert_eq!(owner.as_deref(), Some("someone-else"));

    // Deleted mid-run: stopped.
    let guard = locks
        .try_acquire("calendar", "employee", "AB", ttl)
        .await
        .unwrap();
    let key = guard.key().to_string();
    let work = async {
        let _: () = c.del(&key).await.unwrap();
        std::future::pending::<()>().await
    };
    assert!(matches!(
        guard.hold_while(ttl, work).await,
        Err(LockLost::TakenOver(_))
    ));

    // Work that finishes keeps its lock until released.
    let guard = locks
        .try_acquire("calendar", "employee", "CD", ttl)
        .await
        .unwrap();
    assert_eq!(guard.hold_while(ttl, async { 7 }).await, Ok(7));
    assert!(guard.release().await.unwrap());

    // Redis gone: the extension cannot be confirmed before the lock expires → stopped.
    let guard = locks
        .try_acquire("calendar", "employee", "EF", ttl)
        .await
        .unwrap();
    let work = async {
        redis.take();
        std::future::pending::<()>().await
    };
    assert!(matches!(
        guard.hold_while(ttl, work).await,
        Err(LockLost::Unconfirmed(..))
    ));
}

// ---- item 8: bounds ----

#[tokio::test]
async fn retention_trims_acked_entries_only() {
    let redis = RedisServer::start(false);
    let q = queue(&redis);
    let mut c = redis.conn().await;
    let ids = enqueue(&q, &redis, 6).await;
    // e0, e1 and e3 acked but left in the stream, e2 pending, e4 and e5 never delivered.
    read(&q, "A", 4).await;
    let _: i64 = c
        .xack(STREAM, GROUP, &[&ids[0], &ids[1], &ids[3]])
        .await
        .unwrap();

    // No limits: nothing goes.
    assert_eq!(q.trim_acked(TOPIC, None, None).await.unwrap(), 0);
    // Max length 1: only the acked entries before the first pending one can go.
    assert_eq!(q.trim_acked(TOPIC, None, Some(1)).await.unwrap(), 2);
    assert_eq!(stream_ids(&redis, STREAM).await, ids[2..].to_vec());
    assert_eq!(pending(&redis).await, vec![(ids[2].clone(), "A".into())]);

    // Once e2 is acked, e3 may go; e4 and e5 (not delivered) stay whatever the limit.
    let _: i64 = c.xack(STREAM, GROUP, &[&ids[2]]).await.unwrap();
    assert_eq!(q.trim_acked(TOPIC, None, Some(1)).await.unwrap(), 2);
    assert_eq!(stream_ids(&redis, STREAM).await, ids[4..].to_vec());

    // By age: acked entries older than the limit go, young ones stay.
    let old = "bbl:q:test.old";
    for id in ["1000-1", "1000-2", "*"] {
        let _: String = c.xadd(old, id, &[("job", "{}")]).await.unwrap();
    }
    // A stream no group has read holds nothing acked.
    assert_eq!(
        q.trim_acked("test.old", Some(Duration::from_secs(60)), None)
            .await
            .unwrap(),
        0
    );
    let _: () = c.xgroup_create(old, GROUP, "0").await.unwrap();
    let read_all: redis::streams::StreamReadReply = c
        .xread_options(
            &[old],
            &[">"],
            &redis::streams::StreamReadOptions::default().group(GROUP, "A"),
        )
        .await
        .unwrap();
    let all: Vec<String> = read_all.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    let _: i64 = c.xack(old, GROUP, &[&all[0], &all[2]]).await.unwrap();
    let hour = Some(Duration::from_secs(3600));
    assert_eq!(q.trim_acked("test.old", hour, None).await.unwrap(), 1);
    assert_eq!(stream_ids(&redis, old).await, all[1..].to_vec());
    let _: i64 = c.xack(old, GROUP, &[&all[1]]).await.unwrap();
    assert_eq!(q.trim_acked("test.old", hour, None).await.unwrap(), 1);
    assert_eq!(stream_ids(&redis, old).await, all[2..].to_vec());
}

#[tokio::test]
async fn retention_bounds_the_dead_letter_stream_by_count_and_age() {
    let redis = RedisServer::start(false);
    let q = queue(&redis);
    let mut c = redis.conn().await;
    let mut ids = Vec::new();
    for id in ["1000-0", "2000-0", "*", "*", "*", "*"] {
        let new: String = c
            .xadd(
                "bbl:dlq",
                id,
                &[("job", "{}"), ("error", "x"), ("failed_at", "0")],
            )
            .await
            .unwrap();
        ids.push(new);
    }
    // A month old at most: the two from 1970 go.
    let month = Some(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(q.trim_dlq(None, month).await.unwrap(), 2);
    assert_eq!(stream_ids(&redis, "bbl:dlq").await, ids[2..].to_vec());
    // At most three: the oldest of the rest goes.
    assert_eq!(q.trim_dlq(Some(3), month).await.unwrap(), 1);
    assert_eq!(stream_ids(&redis, "bbl:dlq").await, ids[3..].to_vec());
    let stats = q.dlq_stats().await.unwrap();
    assert_eq!(stats.len, 3);
    assert!(stats.oldest_entry_age_secs.is_some());
}

#[tokio::test]
async fn idle_consumers_without_pending_jobs_are_deleted() {
    let redis = RedisServer::start(false);
    let q = queue(&redis);
    let ids = enqueue(&q, &redis, 3).await;
    // "gone" read and acked its job; "busy" still holds one; "me" is the caller.
    let gone = read(&q, "gone", 1).await;
    assert!(q.ack(&gone[0]).await.unwrap());
    assert_eq!(read(&q, "busy", 1).await.len(), 1);
    let me = read(&q, "me", 1).await;
    assert!(q.ack(&me[0]).await.unwrap());
    let names = || async {
        let mut c = redis.conn().await;
        let info: redis::streams::StreamInfoConsumersReply =
            c.xinfo_consumers(STREAM, GROUP).await.unwrap();
        let mut n: Vec<String> = info.consumers.into_iter().map(|c| c.name).collect();
        n.sort();
        n
    };
    assert_eq!(names().await, ["busy", "gone", "me"]);

    // Nobody was idle for an hour.
    let deleted = q
        .delete_idle_consumers(TOPIC, Duration::from_secs(3600), "me")
        .await
        .unwrap();
    assert!(deleted.is_empty());
    // Idle for more than 10 ms: only the one without pending jobs goes, never the caller.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let deleted = q
        .delete_idle_consumers(TOPIC, Duration::from_millis(10), "me")
        .await
        .unwrap();
    assert_eq!(deleted, ["gone"]);
    assert_eq!(names().await, ["busy", "me"]);
    assert_eq!(pending(&redis).await, vec![(ids[1].clone(), "busy".into())]);
}

#[tokio::test]
async fn stream_length_and_oldest_entry_age_are_reported() {
    let redis = RedisServer::start(false);
    let mut c = redis.conn().await;
    let _: String = c
        .xadd(
            "bbl:dlq",
            "1000-0",
            &[("job", "{}"), ("error", "x"), ("failed_at", "0")],
        )
        .await
        .unwrap();
    let w = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    for id in ["m1", "m2"] {
        let (s, _) = post_event(&w.base, TOPIC, format!(r#"{{"id":"{id}"}}"#).as_bytes()).await;
        assert_eq!(s, 202);
    }
    let m = metrics_text(&w.base).await;
    let t = "topic=\"test.record\"";
    assert_eq!(metric(&m, "bitbylaw_worker_stream_length", t), 2.0, "{m}");
    assert!(
        m.contains("bitbylaw_worker_stream_oldest_entry_age_seconds{topic=\"test.record\"}"),
        "{m}"
    );
    assert!(
        metric(&m, "bitbylaw_worker_dlq_oldest_entry_age_seconds", "") > 365.0 * 24.0 * 3600.0,
        "{m}"
    );

    let (ok, out, err) = cli(&redis.url(), &["queue", "stats"]);
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains("LENGTH"), "{out}");
    assert!(out.lines().next().unwrap().contains("ENTRY_AGE"), "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("test.record "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[5], "2", "{out}");
    assert!(row[6].ends_with('s'), "{out}");
    assert!(out.contains("dead-lettered: 1 (oldest entry age"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_pass_runs_when_consumers_start() {
    let redis = RedisServer::start(false);
    let mut c = redis.conn().await;
    // A dead job from 1970, far beyond the default 30 days.
    let _: String = c
        .xadd(
            "bbl:dlq",
            "1000-0",
            &[("job", "{}"), ("error", "x"), ("failed_at", "0")],
        )
        .await
        .unwrap();
    let w = Worker::spawn(&redis.url(), &[], &[]);
    wait_for("old dead job dropped", WAIT, || {
        let mut c = c.clone();
        async move { (c.xlen::<_, u64>("bbl:dlq").await.unwrap() == 0).then_some(()) }
    })
    .await;
    let m = metrics_text(&w.base).await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_retention_trimmed_total",
            "stream=\"bbl:dlq\""
        ),
        1.0,
        "{m}"
    );
}
