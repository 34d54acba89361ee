//! `vmh.beteiligte.sync_check`, fired every 15 minutes by the `beteiligte-sync-check` schedule
//! (once across instances): finds the records that need a run and enqueues one
//! `vmh.beteiligte.update` job each (coalesced with a webhook job already queued for the record).
//!
//! 1. unclean records (`pending_sync`, `dirty`, `failed`), oldest change first, at most
//!    `check_unclean_limit`;
//! 2. clean records whose `advowareLastSync` is older than `check_clean_age` (catches edits in
//!    Advoware, which sends no webhooks), least recently synced first, at most `check_clean_limit`;
//! 3. `permanently_failed` records unchanged for `reset_after`: reset to `failed` with count 0
//!    (the seeds' 24 h auto-reset) and enqueued;
//! 4. records left in `syncing` for longer than an hour (a run that died and whose job is gone),
//!    at most `check_unclean_limit`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::engine::EngineError;
use super::sides::{EspoSide, SideError};
use super::{handler_error, sides, TOPIC_UPDATE, TRIGGER_KEY};
use crate::clients::espocrm::{espo_datetime, ListQuery, Order, Where};
use crate::config::BeteiligteSettings;
use crate::handlers::{HandlerResult, JobContext};
use crate::queue::{Job, NewJob};
use crate::sync::beteiligte::model::espo_fields as f;
use crate::sync::beteiligte::{due_for_reset, parse_espo_datetime, StatusUpdate, SyncStatus};

/// What one check found (ids only: no personal data in logs).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CheckPlan {
    pub unclean: Vec<String>,
    pub stale: Vec<String>,
    pub reset: Vec<String>,
    pub stuck: Vec<String>,
}

impl CheckPlan {
    /// Every id once, in the order found.
    pub fn ids(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.unclean
            .iter()
            .chain(&self.stale)
            .chain(&self.reset)
            .chain(&self.stuck)
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect()
    }
}

/// A run holds its record at most the lock TTL (minutes); `syncing` this old is left over.
const STUCK_AFTER_HOURS: i64 = 1;

const SELECT: [&str; 4] = [
    f::SYNC_STATUS,
    f::MODIFIED_AT,
    f::ADVOWARE_LAST_SYNC,
    f::SYNC_RETRY_COUNT,
];

async fn ids(
    espo: &dyn EspoSide,
    query: ListQuery,
    limit: usize,
    keep: impl Fn(&crate::sync::beteiligte::EspoBeteiligte) -> bool,
) -> Result<Vec<String>, SideError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let list = espo.list(&query.select(SELECT).limit(limit)).await?;
    Ok(list
        .into_iter()
        .filter(|b| keep(b))
        .filter_map(|b| b.id.map(|id| id.to_string()))
        .collect())
}

/// Queries EspoCRM and resets the due `permanently_failed` records.
pub async fn plan_and_reset(
    espo: &dyn EspoSide,
    s: &BeteiligteSettings,
    now: DateTime<Utc>,
) -> Result<CheckPlan, SideError> {
    let ago = |d: std::time::Duration| {
        now - chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::hours(24))
    };
    let unclean = ListQuery::new()
        .filter(Where::is_in(
            f::SYNC_STATUS,
            [
                SyncStatus::PendingSync,
                SyncStatus::Dirty,
                SyncStatus::Failed,
            ]
            .map(|s| s.as_str()),
        ))
        .order_by(f::MODIFIED_AT, Order::Asc);
    let stale = ListQuery::new()
        .filter(Where::equals(f::SYNC_STATUS, SyncStatus::Clean.as_str()))
        .filter(Where::before(
            f::ADVOWARE_LAST_SYNC,
            espo_datetime(ago(s.check_clean_age)),
        ))
        .order_by(f::ADVOWARE_LAST_SYNC, Order::Asc);
    let failed = ListQuery::new()
        .filter(Where::equals(
            f::SYNC_STATUS,
            SyncStatus::PermanentlyFailed.as_str(),
        ))
        .filter(Where::before(
            f::MODIFIED_AT,
            espo_datetime(ago(s.reset_after)),
        ))
        .order_by(f::MODIFIED_AT, Order::Asc);
    let stuck = ListQuery::new()
        .filter(Where::equals(f::SYNC_STATUS, SyncStatus::Syncing.as_str()))
        .filter(Where::before(
            f::MODIFIED_AT,
            espo_datetime(now - chrono::Duration::hours(STUCK_AFTER_HOURS)),
        ))
        .order_by(f::MODIFIED_AT, Order::Asc);
    let reset_after = chrono::Duration::from_std(s.reset_after).unwrap_or(chrono::Duration::MAX);
    let plan = CheckPlan {
        unclean: ids(espo, unclean, s.check_unclean_limit, |_| true).await?,
        stale: ids(espo, stale, s.check_clean_limit, |_| true).await?,
        // The status filter of the list is re-checked here, so a record edited meanwhile is left.
        reset: ids(espo, failed, s.check_unclean_limit, |b| {
            due_for_reset(
                b.sync_status,
                parse_espo_datetime(b.modified_at.as_deref()),
                now,
                reset_after,
            )
        })
        .await?,
        stuck: ids(espo, stuck, s.check_unclean_limit, |_| true).await?,
    };
    let reset = serde_json::to_value(StatusUpdate::reset()).unwrap_or_default();
    for id in &plan.reset {
        if let Ok(id) = bitbylaw_core::ids::EspoId::new(id) {
            espo.update(&id, &reset).await?;
        }
    }
    Ok(plan)
}

pub async fn run(ctx: &JobContext, _job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let plan = plan_and_reset(sides.espo.as_ref(), &ctx.config.beteiligte, Utc::now())
        .await
        .map_err(|e| handler_error(&EngineError::from(e)))?;
    let jobs: Vec<NewJob> = plan
        .ids()
        .into_iter()
        .map(|id| NewJob::new(id, json!({ TRIGGER_KEY: "sync_check" })))
        .collect();
    let n = jobs.len();
    if n > 0 {
        ctx.enqueue(TOPIC_UPDATE, jobs).await?;
    }
    tracing::info!(
        unclean = plan.unclean.len(),
        stale = plan.stale.len(),
        reset = plan.reset.len(),
        stuck = plan.stuck.len(),
        enqueued = n,
        "Beteiligte sync check"
    );
    Ok(())
}
