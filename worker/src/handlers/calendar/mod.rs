//! Calendar sync handlers (issue #6):
//!
//! - `calendar.sync.all` lists the employees in Advoware (optionally narrowed by
//!   `CALENDAR_EMPLOYEES`) and enqueues one `calendar.sync.employee` job each, least recently
//!   synced first. Each employee is its own job, so one employee's failure is retried on its own
//!   and never stops the others.
//! - `calendar.sync.employee` (`{"kuerzel": "SB", "full_content"?: bool, "force"?: bool}`) runs
//!   [`engine::Engine::sync_employee`] under the employee's lock, which it keeps extending while
//!   the run lasts ([`crate::locks::LockGuard::hold_while`]); a lost lock, or one Redis cannot
//!   confirm before it expires, stops the run (outcome `lock_lost`, retried later).

pub mod engine;
pub mod sides;
pub mod store;

use std::sync::Arc;

use bitbylaw_core::ids::Kuerzel;
use chrono_tz::Europe::Berlin;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use serde_json::{json, Value};
use tracing::{warn, Instrument as _};

use self::engine::{AdvowareApi, Engine, GoogleApi, RunOptions, SyncError};
use self::store::{least_recently_synced, CalendarStore};
use super::{HandlerError, HandlerResult, JobContext, Registry};
use crate::config::{CalendarSettings, Config};
use crate::ops::metrics::CalendarLabel;
use crate::queue::{Job, NewJob};
use crate::sync::calendar::diff::PlanError;
use crate::sync::calendar::mapping::ContentMode;
use crate::topics;

/// The two sides of the calendar sync, shared by all jobs.
#[derive(Clone)]
pub struct CalendarSides {
    /// Advoware.
    pub advoware: Arc<dyn AdvowareApi>,
    /// Google Calendar.
    pub google: Arc<dyn GoogleApi>,
}

/// Whether the configuration has what the calendar sync needs (Advoware credentials and a
/// Google service account). Without it the topics stay unhandled and their jobs wait.
pub fn configured(config: &Config) -> bool {
    config.advoware.api_base_url.is_some() && config.google.service_account_path.is_some()
}

/// Registers both calendar topics.
pub fn register(r: &mut Registry) {
    r.register(topics::CALENDAR_SYNC_EMPLOYEE, "calendar", employee_boxed);
    r.register(topics::CALENDAR_SYNC_ALL, "calendar_all", all_boxed);
}

fn employee_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    employee(ctx, job).boxed()
}

fn all_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    all(ctx, job).boxed()
}

fn sides(ctx: &JobContext) -> Result<&CalendarSides, HandlerError> {
    super::built_clients(&ctx.clients.calendar, "calendar sync")
}

pub use super::BuildError;

/// Builds both clients from the configuration: Advoware over reqwest+rustls with the token in
/// Redis, Google with the service account and the shared request budget in Redis (its granted
/// requests counted in `metrics` when given).
pub async fn build_sides(
    config: &Config,
    queue: &crate::queue::Queue,
    metrics: Option<&crate::ops::metrics::Metrics>,
) -> Result<CalendarSides, BuildError> {
    use crate::clients::google::GoogleCalendarClient;
    use crate::ratelimit::TokenBucket;

    let advoware = super::advoware_client(config, queue).await?;
    let conn = queue
        .redis()
        .conn()
        .await
        .map_err(|e| BuildError::Redis(e.to_string()))?;
    let mut bucket = TokenBucket::new(conn, config.google.requests_per_minute);
    if let Some(m) = metrics {
        m.google_budget_per_minute
            .set(i64::from(config.google.requests_per_minute));
        bucket = bucket.counting(m.google_requests_granted.clone());
    }
    let google = GoogleCalendarClient::from_settings(&config.google, bucket).await?;
    Ok(CalendarSides {
        advoware: Arc::new(advoware),
        google: Arc::new(google),
    })
}

/// Builds the clients in the background at start-up: waits for Redis, gives up (and fails the
/// calendar jobs permanently, with the reason) on configuration problems.
pub fn spawn_build(
    config: Arc<Config>,
    queue: crate::queue::Queue,
    slot: super::ClientSlot<CalendarSides>,
    health: Arc<crate::ops::health::Health>,
    metrics: Arc<crate::ops::metrics::Metrics>,
) {
    super::spawn_sides_build(
        "calendar sync",
        "calendar",
        config,
        queue,
        slot,
        health,
        move |config, queue| {
            let metrics = metrics.clone();
            async move { build_sides(&config, &queue, Some(&metrics)).await }
        },
    );
}

/// Today in Europe/Berlin.
pub fn berlin_today() -> chrono::NaiveDate {
    chrono::Utc::now().with_timezone(&Berlin).date_naive()
}

/// The run options a job payload asks for: `full_content: false` narrows this run to busy
/// blocks, `force` lifts the empty-side guard for this run.
///
/// The configured busy-only list is a privacy setting and always wins: a request (HTTP trigger,
/// CLI, fan-out) may narrow full → busy, never widen busy → full, so no payload can push a
/// protected employee's titles, notes and places to Google.
pub fn run_options(settings: &CalendarSettings, kuerzel: &Kuerzel, payload: &Value) -> RunOptions {
    let configured_busy = settings
        .busy_only
        .iter()
        .any(|k| k.eq_ignore_ascii_case(kuerzel.as_str()));
    let requested_busy = payload.get("full_content").and_then(Value::as_bool) == Some(false);
    let busy_only = configured_busy || requested_busy;
    RunOptions {
        today: berlin_today(),
        content_mode: if busy_only {
            ContentMode::BusyOnly {
                title: settings.busy_title.clone(),
            }
        } else {
            ContentMode::Full
        },
        force: payload
            .get("force")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// The queue's view of a failed run.
pub fn handler_error(e: SyncError) -> HandlerError {
    if e.is_retryable() {
        HandlerError::Retryable {
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        HandlerError::Permanent(e.to_string())
    }
}

async fn employee(ctx: &JobContext, job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let raw = job
        .payload
        .get("kuerzel")
        .and_then(Value::as_str)
        .unwrap_or(&job.entity);
    let kuerzel = Kuerzel::new(raw)
        .map_err(|e| HandlerError::Permanent(format!("invalid kuerzel {raw:?}: {e}")))?;
    let span = tracing::info_span!(parent: &ctx.span, "calendar_sync", kuerzel = %kuerzel);
    async {
        let opts = run_options(&ctx.config.calendar, &kuerzel, &job.payload);
        let guard = ctx.lock("employee", kuerzel.as_str()).await?;
        let mut store = CalendarStore::new(ctx.redis().await?, kuerzel.clone());
        let engine = Engine {
            advoware: sides.advoware.as_ref(),
            google: sides.google.as_ref(),
            settings: &ctx.config.calendar,
        };
        let mut no_progress = |_: &engine::Progress| {};
        let run = engine.sync_employee(&mut store, &kuerzel, &opts, &mut no_progress);
        let label = |k: &str| CalendarLabel { kind: k.to_owned() };
        let result = match guard.run_and_release(ctx.config.lock_ttl, run).await {
            Ok(result) => result,
            Err(lost) => {
                // Dropping the guard releases only a key still holding our token, never the
                // lock of whoever holds it now.
                ctx.metrics
                    .calendar_runs
                    .get_or_create(&label("lock_lost"))
                    .inc();
                warn!(error = %lost, outcome = "lock_lost", "calendar sync stopped");
                return Err(HandlerError::retryable(lost.to_string()));
            }
        };
        match result {
            Ok(report) => {
                ctx.metrics.calendar_runs.get_or_create(&label("ok")).inc();
                for (kind, n) in &report.writes {
                    ctx.metrics
                        .calendar_writes
                        .get_or_create(&label(kind))
                        .inc_by(*n as u64);
                }
                ctx.metrics
                    .calendar_conflicts
                    .inc_by(report.conflicts as u64);
                ctx.metrics.calendar_skipped.inc_by(report.skipped as u64);
                Ok(())
            }
            Err(e) => {
                let outcome = match &e {
                    SyncError::Plan(PlanError::SideLooksEmpty { .. }) => "outage",
                    e if e.is_retryable() => "retryable",
                    _ => "permanent",
                };
                ctx.metrics
                    .calendar_runs
                    .get_or_create(&label(outcome))
                    .inc();
                if let Err(store_error) = store.mark_failed().await {
                    warn!(error = %store_error, "cannot count the failed run");
                }
                warn!(error = %e, outcome, "calendar sync failed");
                Err(handler_error(e))
            }
        }
    }
    .instrument(span)
    .await
}

async fn all(ctx: &JobContext, job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let mut employees = sides
        .advoware
        .list_employees()
        .await
        .map_err(|e| handler_error(e.into()))?;
    let only = &ctx.config.calendar.employees;
    if !only.is_empty() {
        employees.retain(|k| only.iter().any(|o| o.eq_ignore_ascii_case(k.as_str())));
    }
    let mut conn = ctx.redis().await?;
    let ordered = least_recently_synced(&mut conn, employees)
        .await
        .map_err(|e| HandlerError::retryable(e.to_string()))?;
    let jobs: Vec<NewJob> = ordered
        .iter()
        .map(|k| {
            let mut payload = json!({"kuerzel": k.as_str(), "trigger": "calendar.sync.all"});
            if let (Some(fc), Some(o)) = (job.payload.get("full_content"), payload.as_object_mut())
            {
                o.insert("full_content".into(), fc.clone());
            }
            NewJob::new(k.as_str(), payload)
        })
        .collect();
    let n = jobs.len();
    ctx.enqueue(topics::CALENDAR_SYNC_EMPLOYEE, jobs).await?;
    tracing::info!(employees = n, "calendar sync fanned out");
    Ok(())
}
