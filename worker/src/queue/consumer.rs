//! Consumer loops: one per topic with a registered handler (topics without one are never read,
//! so their jobs wait in their stream), plus a promoter that moves due retries back and a
//! retention pass that keeps streams, the dead-letter stream and the consumer list bounded.
//!
//! Each topic loop owns a dedicated connection for blocking reads and a semaphore that caps the
//! topic's concurrency; it reads only as many entries as it has free permits, and now and then
//! reclaims entries a dead consumer left behind.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, info_span, warn, Instrument};

use super::retry::RetryDecision;
use super::{Delivery, Queue};
use crate::config::Config;
use crate::handlers::{Clients, HandlerError, JobContext, Registry};
use crate::locks::Locks;
use crate::ops::health::Health;
use crate::ops::metrics::{Metrics, TopicLabel};
use crate::shutdown::Shutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// What the consumer side needs; shared by all loops and job tasks.
pub struct ConsumerDeps {
    pub config: Arc<Config>,
    pub queue: Queue,
    pub locks: Locks,
    pub registry: Arc<Registry>,
    pub clients: Arc<Clients>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Unique per process, so pending entries show which instance holds them.
    pub consumer_name: String,
}

/// Runs until shutdown, then drains in-flight jobs within the deadline.
pub async fn run(deps: Arc<ConsumerDeps>, shutdown: Shutdown) {
    let topics = deps.registry.topics();
    deps.health.expect_consumers(topics.len());
    info!(topics = ?topics, consumer = %deps.consumer_name, "consumers starting");
    let mut set = JoinSet::new();
    for topic in topics {
        set.spawn(topic_loop(deps.clone(), topic, shutdown.clone()));
    }
    set.spawn(promoter(deps.clone(), shutdown.clone()));
    set.spawn(retention(deps.clone(), shutdown.clone()));
    while set.join_next().await.is_some() {}
    info!("consumers stopped");
}

async fn promoter(deps: Arc<ConsumerDeps>, shutdown: Shutdown) {
    const BATCH: usize = 500;
    while !shutdown.is_triggered() {
        match deps.queue.promote_due(BATCH).await {
            Ok(n) if n >= BATCH => continue,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "promoting delayed jobs failed"),
        }
        shutdown.sleep(deps.config.queue.promote_interval).await;
    }
}

/// At start and every `retention.interval`: trims acked entries of every topic's stream and the
/// dead-letter stream to the configured limits and deletes consumers that left nothing pending
/// (one name is created per process start). Every instance may run it; each step is idempotent.
async fn retention(deps: Arc<ConsumerDeps>, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        if let Err(e) = retention_pass(&deps).await {
            warn!(error = %e, "retention pass failed; trying again later");
        }
        shutdown.sleep(deps.config.retention.interval).await;
    }
}

/// One retention pass (see [`retention`]).
async fn retention_pass(deps: &ConsumerDeps) -> Result<(), super::QueueError> {
    let r = &deps.config.retention;
    let queue = &deps.queue;
    for topic in queue.topic_names().await? {
        let trimmed = queue
            .trim_acked(&topic, r.stream_acked_max_age, r.stream_max_len)
            .await?;
        if trimmed > 0 {
            info!(%topic, trimmed, "trimmed acked stream entries");
            deps.metrics
                .retention_trimmed
                .get_or_create(&Metrics::stream(&crate::keys::stream(&topic)))
                .inc_by(trimmed);
        }
        let deleted = queue
            .delete_idle_consumers(&topic, r.consumer_max_idle, &deps.consumer_name)
            .await?;
        if !deleted.is_empty() {
            info!(%topic, consumers = ?deleted, "deleted idle consumers without pending jobs");
            deps.metrics.consumers_deleted.inc_by(deleted.len() as u64);
        }
    }
    let trimmed = queue.trim_dlq(r.dlq_max_entries, r.dlq_max_age).await?;
    if trimmed > 0 {
        info!(trimmed, "trimmed the dead-letter stream");
        deps.metrics
            .retention_trimmed
            .get_or_create(&Metrics::stream(crate::keys::DLQ))
            .inc_by(trimmed);
    }
    Ok(())
}

async fn topic_loop(deps: Arc<ConsumerDeps>, topic: String, shutdown: Shutdown) {
    let q = &deps.config.queue;
    let sem = Arc::new(Semaphore::new(q.concurrency_for(&topic)));
    let reclaim_every = (q.visibility_timeout / 2).max(Duration::from_millis(250));
    let mut last_reclaim: Option<Instant> = None;
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut conn = None;
    let mut up = false;

    while !shutdown.is_triggered() {
        while tasks.try_join_next().is_some() {}
        if conn.is_none() {
            let attempt = async {
                let mut c = deps.queue.redis().dedicated(q.block).await?;
                deps.queue.ensure_group(&mut c, &topic).await?;
                Ok::<_, super::QueueError>(c)
            };
            match attempt.await {
                Ok(c) => {
                    conn = Some(c);
                    if !up {
                        deps.health.consumer_up();
                        up = true;
                    }
                }
                Err(e) => {
                    warn!(%topic, error = %e, "consumer cannot reach redis");
                    if up {
                        deps.health.consumer_down();
                        up = false;
                    }
                    shutdown.sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let first = tokio::select! {
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.wait() => break,
        };
        let mut permits: Vec<OwnedSemaphorePermit> = vec![first];
        while let Ok(p) = sem.clone().try_acquire_owned() {
            permits.push(p);
        }
        let Some(c) = conn.as_mut() else { continue };
        let reclaim = last_reclaim.is_none_or(|t| t.elapsed() >= reclaim_every);
        let res = if reclaim {
            last_reclaim = Some(Instant::now());
            deps.queue
                .reclaim(
                    c,
                    &topic,
                    &deps.consumer_name,
                    q.visibility_timeout,
                    permits.len(),
                )
                .await
        } else {
            // Not cancelled on shutdown: entries Redis hands us must reach a task (or stay pending).
            deps.queue
                .read(c, &topic, &deps.consumer_name, permits.len(), q.block)
                .await
        };
        match res {
            Ok(deliveries) => {
                for d in deliveries {
                    let Some(permit) = permits.pop() else { break };
                    if reclaim {
                        deps.metrics
                            .reclaimed
                            .get_or_create(&Metrics::topic(&topic))
                            .inc();
                    }
                    tasks.spawn(process(deps.clone(), d, permit));
                }
            }
            Err(e) => {
                warn!(%topic, error = %e, "reading the queue failed");
                conn = None;
                if up {
                    deps.health.consumer_down();
                    up = false;
                }
                shutdown.sleep(Duration::from_millis(500)).await;
            }
        }
    }

    if !tasks.is_empty() {
        info!(%topic, in_flight = tasks.len(), "waiting for in-flight jobs");
        let drained = tokio::time::timeout(q.shutdown_deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(%topic, abandoned = tasks.len(), "shutdown deadline passed; leaving unfinished jobs pending (unacked) for reclaim");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
    if up {
        deps.health.consumer_down();
    }
}

/// Stops the heartbeat however `process` ends, including when shutdown aborts it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one delivery to completion: handler, then ack / delay / dead-letter.
async fn process(deps: Arc<ConsumerDeps>, d: Delivery, _permit: OwnedSemaphorePermit) {
    let topic_label = Metrics::topic(&d.topic);
    let mut job = match &d.job {
        Ok(j) => j.clone(),
        Err(raw) => {
            warn!(topic = %d.topic, entry = %d.entry_id, "unreadable job entry; dead-lettering");
            let r = deps
                .queue
                .dead_letter(&d, raw, "unreadable job entry")
                .await;
            record_outcome(&deps, &d, r, Some(&deps.metrics.dead_lettered));
            return;
        }
    };
    let Some((handler_name, handler)) = deps.registry.get(&d.topic) else {
        return;
    };
    if d.deliveries > deps.config.queue.max_deliveries {
        let error = format!(
            "delivered {} times without finishing (worker crashed or handler outlived the visibility timeout)",
            d.deliveries
        );
        warn!(topic = %d.topic, job_id = %job.id, %error, "dead-lettering");
        job.last_error = Some(error.clone());
        let json = serde_json::to_string(&job).unwrap_or_default();
        let r = deps.queue.dead_letter(&d, &json, &error).await;
        record_outcome(&deps, &d, r, Some(&deps.metrics.dead_lettered));
        return;
    }
    // The job starts now: later events for the entity must queue a new job. If Redis cannot be
    // told, do not run; the entry stays pending and is reclaimed. Jobs keyed by their content
    // (leads, call reports) keep the marker: a later identical event is a duplicate, not an update,
    // and is absorbed for the marker's TTL (`coalesce_ttl_secs`, the dedup window).
    if !job.is_content_keyed() {
        if let Err(e) = deps.queue.unmark(&job).await {
            warn!(topic = %d.topic, job_id = %job.id, error = %e, "cannot start job");
            return;
        }
    }
    let span = info_span!("job", topic = %job.topic, job_id = %job.id, entity = %job.entity, attempt = job.attempts + 1);
    let ctx = JobContext {
        config: deps.config.clone(),
        clients: deps.clients.clone(),
        queue: deps.queue.clone(),
        locks: deps.locks.clone(),
        handler_name: handler_name.to_string(),
        metrics: deps.metrics.clone(),
        span: span.clone(),
    };

    // Heartbeats keep the entry ours; when one finds it reclaimed by another consumer (this one
    // looked dead to it), `lost` fires and the handler is stopped: the new owner runs the job.
    let (lost_tx, lost) = tokio::sync::oneshot::channel::<()>();
    let heartbeat = {
        let queue = deps.queue.clone();
        let (topic, consumer, entry) = (d.topic.clone(), d.consumer.clone(), d.entry_id.clone());
        let every = (deps.config.queue.visibility_timeout / 3).max(Duration::from_millis(100));
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match queue.heartbeat(&topic, &consumer, &entry).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = lost_tx.send(());
                        return;
                    }
                    Err(e) => warn!(%topic, %entry, error = %e, "heartbeat failed"),
                }
            }
        }))
    };
    let started = Instant::now();
    let run = AssertUnwindSafe(handler.handle(&ctx, &job))
        .catch_unwind()
        .instrument(span.clone());
    let outcome = tokio::select! {
        outcome = run => outcome,
        Ok(()) = lost => {
            drop(heartbeat);
            let _enter = span.enter();
            warn!(entry = %d.entry_id, "another consumer reclaimed the job; handler stopped, outcome left to the new owner");
            deps.metrics.ownership_lost.get_or_create(&topic_label).inc();
            return;
        }
    };
    drop(heartbeat);
    deps.metrics
        .handler_duration
        .get_or_create(&topic_label)
        .observe(started.elapsed().as_secs_f64());
    let outcome = outcome.unwrap_or_else(|_| Err(HandlerError::retryable("handler panicked")));

    let _enter = span.enter();
    match outcome {
        Ok(()) => {
            let r = deps.queue.ack(&d).await;
            record_outcome(&deps, &d, r, Some(&deps.metrics.processed));
        }
        Err(HandlerError::LockBusy(key)) => {
            deps.metrics
                .lock_contention
                .get_or_create(&topic_label)
                .inc();
            let base = deps.config.queue.lock_busy_delay.as_millis() as u64;
            let wait = Duration::from_millis(base / 2 + rand::rng().random_range(0..=base.max(1)));
            info!(lock = %key, wait_ms = wait.as_millis() as u64, "entity lock busy; retrying later");
            let r = deps.queue.delay(&d, &job, wait).await;
            record_outcome(&deps, &d, r, None);
        }
        Err(e) => {
            deps.metrics.failed.get_or_create(&topic_label).inc();
            job.attempts += 1;
            job.last_error = Some(e.to_string());
            let decision = match &e {
                HandlerError::Retryable { retry_after, .. } => deps
                    .config
                    .retry
                    .for_topic(&job.topic)
                    .decide(job.attempts, *retry_after),
                _ => RetryDecision::GiveUp,
            };
            match decision {
                RetryDecision::RetryAfter(wait) => {
                    warn!(error = %e, wait_ms = wait.as_millis() as u64, "job failed; retrying");
                    let r = deps.queue.delay(&d, &job, wait).await;
                    record_outcome(&deps, &d, r, Some(&deps.metrics.retried));
                }
                RetryDecision::GiveUp => {
                    warn!(error = %e, attempts = job.attempts, "job failed for good; dead-lettering");
                    let json = serde_json::to_string(&job).unwrap_or_default();
                    let r = deps.queue.dead_letter(&d, &json, &e.to_string()).await;
                    record_outcome(&deps, &d, r, Some(&deps.metrics.dead_lettered));
                }
            }
        }
    }
}

/// Counts a recorded outcome in `counter` (if any), or says why none was recorded.
fn record_outcome(
    deps: &ConsumerDeps,
    d: &Delivery,
    recorded: Result<bool, super::QueueError>,
    counter: Option<&Family<TopicLabel, Counter>>,
) {
    let topic = Metrics::topic(&d.topic);
    match recorded {
        Ok(true) => {
            if let Some(c) = counter {
                c.get_or_create(&topic).inc();
            }
        }
        Ok(false) => {
            // Reclaimed by another consumer meanwhile: the new owner's run decides.
            warn!(entry = %d.entry_id, "job was reclaimed by another consumer; its outcome here is not recorded");
            deps.metrics.ownership_lost.get_or_create(&topic).inc();
        }
        // Not acked: the entry stays pending and is redelivered after the visibility timeout.
        Err(e) => warn!(error = %e, "could not record the job's outcome; it will be redelivered"),
    }
}
