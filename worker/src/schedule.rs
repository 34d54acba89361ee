//! Cron schedules that fire once per tick across all instances.
//!
//! Every instance with the `schedules` role computes the same next tick; the first to
//! `SET NX bbl:schedule:{name}:{tick_epoch}` enqueues the job, the others see the key and skip.
//! The job's entity is the schedule name, so a tick that finds the previous tick's job still
//! queued is coalesced into it instead of piling up.

use std::str::FromStr;
use std::sync::Arc;

use chrono::Utc;
use tracing::{info, warn};

use crate::config::ScheduleSpec;
use crate::keys;
use crate::ops::metrics::{Metrics, ScheduleLabel};
use crate::queue::{NewJob, Queue};
use crate::shutdown::Shutdown;

/// Parses a cron expression with seconds; a classic 5-field expression gets second `0`.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, cron::error::Error> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full)
}

pub async fn run(
    specs: Vec<ScheduleSpec>,
    queue: Queue,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let mut set = tokio::task::JoinSet::new();
    for spec in specs {
        match parse_cron(&spec.cron) {
            Ok(sched) => {
                set.spawn(one(
                    spec,
                    sched,
                    queue.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => warn!(schedule = %spec.name, error = %e, "invalid cron; schedule disabled"),
        }
    }
    while set.join_next().await.is_some() {}
}

async fn one(
    spec: ScheduleSpec,
    sched: cron::Schedule,
    queue: Queue,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    info!(schedule = %spec.name, cron = %spec.cron, topic = %spec.topic, "schedule active");
    while !shutdown.is_triggered() {
        let Some(next) = sched.after(&Utc::now()).next() else {
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        if !shutdown.sleep(wait).await {
            return;
        }
        let tick = next.timestamp();
        match fire(&spec, tick, &queue).await {
            Ok(true) => {
                metrics
                    .schedule_fired
                    .get_or_create(&ScheduleLabel {
                        schedule: spec.name.clone(),
                    })
                    .inc();
                info!(schedule = %spec.name, tick, "schedule fired");
            }
            Ok(false) => {}
            Err(e) => {
                warn!(schedule = %spec.name, tick, error = %e, "schedule tick lost: redis unavailable")
            }
        }
    }
}

/// Claims the tick and enqueues its job; `false` if another instance claimed it first.
async fn fire(
    spec: &ScheduleSpec,
    tick: i64,
    queue: &Queue,
) -> Result<bool, crate::queue::QueueError> {
    let mut c = queue.redis().conn().await?;
    let claimed: Option<String> = redis::cmd("SET")
        .arg(keys::schedule_tick(&spec.name, tick))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(24 * 3600)
        .query_async(&mut c)
        .await?;
    if claimed.is_none() {
        return Ok(false);
    }
    let mut job = NewJob::new(
        spec.name.clone(),
        spec.payload
            .clone()
            .unwrap_or_else(|| serde_json::json!({})),
    );
    job.tick = Some(tick);
    queue.enqueue(&spec.topic, vec![job]).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_five_and_six_fields() {
        assert!(parse_cron("*/15 * * * *").is_ok());
        assert!(parse_cron("0 */15 * * * *").is_ok());
        assert!(parse_cron("every day").is_err());
    }
}
