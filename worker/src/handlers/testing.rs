//! `test.*` handlers, registered only with `WORKER_TEST_HANDLERS=1`: they let the integration
//! tests and the benchmark drive the real binary through success, slowness, failure and locks.
//!
//! - `test.echo`: does nothing (benchmarks).
//! - `test.record`: records its start and completion in Redis. Payload options:
//!   `sleep_ms` (hold the job), `fail_times` (fail while fewer attempts have failed),
//!   `fail_permanent`, `retry_after_ms` (hint on failure), `lock` (hold the entity lock while running).
//!   While the key `bbl:test:fail:{entity}` exists, every attempt fails (retryable).
//!   `track`: count running jobs, keeping the peak in `bbl:test:max_running` (concurrency tests).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use redis::AsyncCommands;

use super::{HandlerError, HandlerResult, JobContext, Registry};
use crate::keys;
use crate::queue::Job;

pub fn register(r: &mut Registry) {
    r.register("test.echo", "test_echo", echo);
    r.register("test.record", "test_record", record_boxed);
}

fn echo<'a>(_ctx: &'a JobContext, _job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    async { Ok(()) }.boxed()
}

fn record_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    record(ctx, job).boxed()
}

/// Raises `bbl:test:max_running` to the current number of running `track` jobs.
const TRACK_MAX: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"#;

async fn record(ctx: &JobContext, job: &Job) -> HandlerResult {
    let mut redis = ctx.redis().await?;
    let track = job
        .payload
        .get("track")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if track {
        let _: i64 = redis::Script::new(TRACK_MAX)
            .key(keys::test("running"))
            .key(keys::test("max_running"))
            .invoke_async(&mut redis)
            .await?;
    }
    let result = record_inner(ctx, job, &mut redis).await;
    if track {
        let _: i64 = redis.decr(keys::test("running"), 1).await?;
    }
    result
}

async fn record_inner(
    ctx: &JobContext,
    job: &Job,
    redis: &mut redis::aio::ConnectionManager,
) -> HandlerResult {
    let p = &job.payload;
    let _: i64 = redis.rpush(keys::test("started"), &job.id).await?;
    let guard = if p.get("lock").and_then(|v| v.as_bool()).unwrap_or(false) {
        Some(ctx.lock("test", &job.entity).await?)
    } else {
        None
    };
    if let Some(ms) = p.get("sleep_ms").and_then(|v| v.as_u64()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if p.get("fail_permanent")
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
    {
        return Err(HandlerError::Permanent("told to fail permanently".into()));
    }
    let fail_switch: bool = redis
        .exists(keys::test(&format!("fail:{}", job.entity)))
        .await?;
    if fail_switch {
        return Err(HandlerError::retryable(format!(
            "told to fail by switch (attempt {})",
            job.attempts + 1
        )));
    }
    let fail_times = p.get("fail_times").and_then(|v| v.as_u64()).unwrap_or(0);
    if u64::from(job.attempts) < fail_times {
        return Err(HandlerError::Retryable {
            message: format!("told to fail (attempt {})", job.attempts + 1),
            retry_after: p
                .get("retry_after_ms")
                .and_then(|v| v.as_u64())
                .map(Duration::from_millis),
        });
    }
    if let Some(g) = guard {
        let _ = g.release().await;
    }
    let _: i64 = redis.hincr(keys::test("completed"), &job.id, 1).await?;
    let _: i64 = redis
        .rpush(
            keys::test("completed_entities"),
            format!("{}:{}", job.topic, job.entity),
        )
        .await?;
    if let Some(tick) = job.tick {
        let _: i64 = redis
            .rpush(keys::test("ticks"), format!("{}:{tick}", job.entity))
            .await?;
    }
    Ok(())
}
