//! Consumer loops: one per topic with a registered handler (topics without one are never read,
//! so their jobs wait in their stream), plus a promoter that moves due retries back.
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
use crate::ops::metrics::Metrics;
use crate::shutdown::Shutdown;

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
            if deps
                .queue
                .dead_letter(&d, raw, "unreadable job entry")
                .await
                .is_ok()
            {
                deps.metrics.dead_lettered.get_or_create(&topic_label).inc();
            }
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
        if deps.queue.dead_letter(&d, &json, &error).await.is_ok() {
            deps.metrics.dead_lettered.get_or_create(&topic_label).inc();
        }
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

    let heartbeat = {
        let queue = deps.queue.clone();
        let (topic, consumer, entry) = (
            d.topic.clone(),
            deps.consumer_name.clone(),
            d.entry_id.clone(),
        );
        let every = (deps.config.queue.visibility_timeout / 3).max(Duration::from_millis(100));
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = queue.heartbeat(&topic, &consumer, &entry).await {
                    warn!(%topic, %entry, error = %e, "heartbeat failed");
                }
            }
        }))
    };
    let started = Instant::now();
    let outcome = AssertUnwindSafe(handler.handle(&ctx, &job))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    drop(heartbeat);
    deps.metrics
        .handler_duration
        .get_or_create(&topic_label)
        .observe(started.elapsed().as_secs_f64());
    let outcome = outcome.unwrap_or_else(|_| Err(HandlerError::retryable("handler panicked")));

    let _enter = span.enter();
    let result = match outcome {
        Ok(()) => {
            let r = deps.queue.ack(&d).await;
            if r.is_ok() {
                deps.metrics.processed.get_or_create(&topic_label).inc();
            }
            r
        }
        Err(HandlerError::LockBusy(key)) => {
            deps.metrics
                .lock_contention
                .get_or_create(&topic_label)
                .inc();
            let base = deps.config.queue.lock_busy_delay.as_millis() as u64;
            let wait = Duration::from_millis(base / 2 + rand::rng().random_range(0..=base.max(1)));
            info!(lock = %key, wait_ms = wait.as_millis() as u64, "entity lock busy; retrying later");
            deps.queue.delay(&d, &job, wait).await
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
                    if r.is_ok() {
                        deps.metrics.retried.get_or_create(&topic_label).inc();
                    }
                    r
                }
                RetryDecision::GiveUp => {
                    warn!(error = %e, attempts = job.attempts, "job failed for good; dead-lettering");
                    let json = serde_json::to_string(&job).unwrap_or_default();
                    let r = deps.queue.dead_letter(&d, &json, &e.to_string()).await;
                    if r.is_ok() {
                        deps.metrics.dead_lettered.get_or_create(&topic_label).inc();
                    }
                    r
                }
            }
        }
    };
    if let Err(e) = result {
        // Not acked: the entry stays pending and is redelivered after the visibility timeout.
        warn!(error = %e, "could not record the job's outcome; it will be redelivered");
    }
}
