//! Beteiligte sync (issue 11): EspoCRM `CBeteiligte` ↔ Advoware `Beteiligte`.
//!
//! - [`sides`]: both systems behind small traits, implemented by the real clients, so the engine
//!   runs against the fakes in tests and the real systems in production with the same code.
//! - [`store`]: the per-record Redis state (create intent, link, content hash of the last sync).
//! - [`engine`]: one run for one record — decide first, write only what changed, create once.
//! - [`details`]: Kommunikation and Adressen of the record (issue 12), inside the same run.
//! - [`check`]: the 15-minute `vmh.beteiligte.sync_check`.
//!
//! Topics: `vmh.beteiligte.create|update` run the engine for the entity of the job under the
//! entity lock (the event payload is never trusted: the engine reads both sides);
//! `vmh.beteiligte.delete` only unlinks — **Advoware records are never deleted by the sync** (a
//! law firm keeps the parties of closed files): the Redis link is dropped, the deletion logged
//! and notified. All three share one lock per entity (`bbl:lock:beteiligte:beteiligte:{id}`).

pub mod audit;
pub mod check;
pub mod details;
pub mod engine;
pub mod sides;
pub mod store;

use std::sync::Arc;

use bitbylaw_core::ids::EspoId;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use serde_json::Value;
use tracing::{warn, Instrument as _};

use self::engine::{Engine, EngineError, EngineSettings, Outcome};
use self::sides::{AdvowareSide, EspoSide};
use self::store::BeteiligteStore;
use super::{HandlerError, HandlerResult, JobContext, Registry};
use crate::clients::espocrm::NewNotification;
use crate::config::Config;
use crate::queue::Job;
use crate::sync::beteiligte::model::espo_fields;
use crate::topics;

pub use crate::topics::{
    BETEILIGTE_CREATE as TOPIC_CREATE, BETEILIGTE_DELETE as TOPIC_DELETE,
    BETEILIGTE_UPDATE as TOPIC_UPDATE,
};

/// Handler name of all Beteiligte topics: one entity lock whichever topic a job came on.
pub const HANDLER: &str = "beteiligte";
/// Entity type in the lock key.
pub const LOCK_TYPE: &str = "beteiligte";

/// Payload `trigger` of jobs that are not fresh webhook events (`sync_check`, `cli`): they run
/// even when the record only carries our own failure write.
pub const TRIGGER_KEY: &str = "trigger";

/// The two sides, shared by all jobs.
#[derive(Clone)]
pub struct BeteiligteSides {
    pub espo: Arc<dyn EspoSide>,
    pub advoware: Arc<dyn AdvowareSide>,
}

/// Whether the configuration has what the Beteiligte sync needs (EspoCRM and Advoware). Without
/// it the topics stay unhandled and their jobs wait.
pub fn configured(config: &Config) -> bool {
    config.advoware.api_base_url.is_some() && config.espocrm.api_base_url.is_some()
}

/// Registers the four Beteiligte topics.
pub fn register(r: &mut Registry) {
    r.register(TOPIC_CREATE, HANDLER, sync_boxed);
    r.register(TOPIC_UPDATE, HANDLER, sync_boxed);
    r.register(TOPIC_DELETE, HANDLER, delete_boxed);
    r.register(topics::BETEILIGTE_SYNC_CHECK, HANDLER, check_boxed);
}

fn sync_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    sync(ctx, job).boxed()
}

fn delete_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    delete(ctx, job).boxed()
}

fn check_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    check::run(ctx, job).boxed()
}

fn sides(ctx: &JobContext) -> Result<&BeteiligteSides, HandlerError> {
    super::built_clients(&ctx.clients.beteiligte, "Beteiligte sync")
}

pub use super::BuildError;

/// Builds both clients: EspoCRM with its key, Advoware with the token shared in Redis.
pub async fn build_sides(
    config: &Config,
    queue: &crate::queue::Queue,
) -> Result<BeteiligteSides, BuildError> {
    use crate::clients::espocrm::{ClientSettings as EspoSettings, EspoCrmClient};

    let espo = EspoCrmClient::new(EspoSettings::from_settings(&config.espocrm)?)?;
    Ok(BeteiligteSides {
        espo: Arc::new(espo),
        advoware: Arc::new(super::advoware_client(config, queue).await?),
    })
}

/// Builds the clients in the background at start-up: waits for Redis, gives up (and fails the
/// Beteiligte jobs permanently, with the reason) on configuration problems.
pub fn spawn_build(
    config: Arc<Config>,
    queue: crate::queue::Queue,
    slot: super::ClientSlot<BeteiligteSides>,
    health: Arc<crate::ops::health::Health>,
) {
    super::spawn_sides_build(
        "Beteiligte sync",
        "beteiligte",
        config,
        queue,
        slot,
        health,
        |config, queue| async move { build_sides(&config, &queue).await },
    );
}

/// The queue's view of a failed run.
pub fn handler_error(e: &EngineError) -> HandlerError {
    if e.is_retryable() {
        HandlerError::Retryable {
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        HandlerError::Permanent(e.to_string())
    }
}

/// The entity id of a job (EspoCRM batches are split per entity by intake).
fn espo_id(job: &Job) -> Result<EspoId, HandlerError> {
    EspoId::new(&job.entity)
        .map_err(|e| HandlerError::Permanent(format!("invalid EspoCRM id {:?}: {e}", job.entity)))
}

/// Attributes an update webhook may carry when only our own status write changed the record.
const STATUS_ONLY: [&str; 12] = [
    "id",
    "modifiedAt",
    "modifiedById",
    "modifiedByName",
    "versionNumber",
    espo_fields::SYNC_STATUS,
    espo_fields::SYNC_ERROR_MESSAGE,
    espo_fields::SYNC_RETRY_COUNT,
    espo_fields::ADVOWARE_ROW_ID,
    espo_fields::ADVOWARE_LAST_SYNC,
    espo_fields::ADVOWARE_DELETED_AT,
    espo_fields::BETNR,
];

/// How the engine should run this job: the check refreshes unchanged records; a first-attempt
/// webhook event that changed only sync fields may be the echo of our own status write (the
/// payload only ever lets a job do *more*: a master-data change always runs in full).
enum Trigger {
    Check,
    StatusEcho,
    Other,
}

fn trigger(job: &Job) -> Trigger {
    match job.payload.get(TRIGGER_KEY).and_then(Value::as_str) {
        Some("sync_check") => return Trigger::Check,
        Some(_) => return Trigger::Other,
        None => {}
    }
    let status_only = job
        .payload
        .as_object()
        .is_some_and(|o| o.keys().all(|k| STATUS_ONLY.contains(&k.as_str())));
    if job.attempts == 0 && status_only {
        Trigger::StatusEcho
    } else {
        Trigger::Other
    }
}

/// Maps an engine result to the job's result and counts it.
pub fn settle(
    metrics: &crate::ops::metrics::Metrics,
    result: Result<Outcome, EngineError>,
) -> HandlerResult {
    match result {
        Ok(Outcome::InvalidData(reason)) => {
            metrics.beteiligte_run("invalid_data");
            // The reason may quote a value (a malformed date of birth): debug only, and not in
            // the DLQ entry. The record itself says why (`syncErrorMessage`).
            tracing::debug!(%reason, "Beteiligte sync: record cannot be mapped");
            warn!(
                outcome = "invalid_data",
                "Beteiligte sync: record cannot be mapped"
            );
            // Retrying cannot fix data.
            Err(HandlerError::Permanent(
                "invalid data: the reason is in the record's syncErrorMessage".into(),
            ))
        }
        Ok(Outcome::CreateUncertain) => {
            metrics.beteiligte_run("create_uncertain");
            warn!(
                outcome = "create_uncertain",
                "Beteiligte sync: an earlier Advoware create got no answer; a person must check"
            );
            Err(HandlerError::Permanent(
                "create uncertain: an earlier Advoware POST got no answer; check Advoware, then set betnr or run `beteiligte reset`".into(),
            ))
        }
        Ok(outcome) => {
            metrics.beteiligte_run(outcome.label());
            tracing::info!(outcome = outcome.label(), "Beteiligte sync done");
            tracing::debug!(?outcome, "Beteiligte sync outcome");
            Ok(())
        }
        Err(e) => {
            let class = if e.is_retryable() {
                "retryable"
            } else {
                "permanent"
            };
            metrics.beteiligte_run(class);
            warn!(error = %e, outcome = class, "Beteiligte sync failed");
            Err(handler_error(&e))
        }
    }
}

async fn sync(ctx: &JobContext, job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let id = espo_id(job)?;
    let span = tracing::info_span!(parent: &ctx.span, "beteiligte_sync", espo_id = %id);
    async {
        let guard = ctx.lock(LOCK_TYPE, id.as_str()).await?;
        let store = BeteiligteStore::new(ctx.redis().await?);
        let settings = EngineSettings::from_config(&ctx.config.beteiligte);
        // The run's reads feed the 3CX lookup index (both sides' numbers, no extra request).
        let indexed = crate::handlers::telephony::index::beteiligte_sides(
            sides.espo.as_ref(),
            sides.advoware.as_ref(),
            ctx.redis().await.ok(),
            ctx.config.threecx.default_region,
            &id,
        );
        let engine = Engine {
            espo: &indexed.espo,
            advoware: &indexed.advoware,
            store: &store,
            settings: &settings,
        };
        let now = chrono::Utc::now();
        let run = async {
            match trigger(job) {
                Trigger::Check => engine.sync_checked(&id, now).await,
                Trigger::StatusEcho => engine.sync_webhook(&id, now).await,
                Trigger::Other => engine.sync_one(&id, now).await,
            }
        };
        let result = guard
            .run_and_release(ctx.config.lock_ttl, run)
            .await
            .map_err(|lost| lock_lost(ctx, &lost))?;
        super::bankverbindungen::requeue_waiting(ctx, &id, &result).await;
        settle(&ctx.metrics, result)
    }
    .instrument(span)
    .await
}

/// `vmh.beteiligte.delete`: the record is gone in EspoCRM. Unlink (drop the Redis link), log and
/// notify; the Advoware Beteiligter stays.
async fn delete(ctx: &JobContext, job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let id = espo_id(job)?;
    let span = tracing::info_span!(parent: &ctx.span, "beteiligte_delete", espo_id = %id);
    async {
        ctx.lock(LOCK_TYPE, id.as_str())
            .await?
            .run_and_release(ctx.config.lock_ttl, unlink(ctx, sides, &id))
            .await
            .map_err(|lost| lock_lost(ctx, &lost))?
    }
    .instrument(span)
    .await
}

/// The entity lock was lost mid-run: the run stopped; a retry reads the state again.
fn lock_lost(ctx: &JobContext, lost: &crate::locks::LockLost) -> HandlerError {
    ctx.metrics.beteiligte_run("lock_lost");
    warn!(error = %lost, outcome = "lock_lost", "Beteiligte run stopped");
    HandlerError::retryable(lost.to_string())
}

async fn unlink(ctx: &JobContext, sides: &BeteiligteSides, id: &EspoId) -> HandlerResult {
    // Never trust the event: a record that still exists was not deleted (restored, or a replay).
    match sides.espo.get(id).await {
        Ok(Some(_)) => {
            ctx.metrics.beteiligte_run("skipped");
            tracing::info!(
                outcome = "skipped",
                "delete event, but the record exists in EspoCRM"
            );
            return Ok(());
        }
        Ok(None) => {}
        Err(e) => return settle(&ctx.metrics, Err(e.into())),
    }
    let store = BeteiligteStore::new(ctx.redis().await?);
    let bet_nr = match store.linked(id).await? {
        Some(b) => Some(b),
        None => store.created(id).await?,
    };
    let message = match bet_nr {
        Some(b) => format!(
            "Beteiligter in EspoCRM gelöscht; Advoware-Beteiligter {b} bleibt bestehen (die Synchronisation löscht in Advoware nie)."
        ),
        None => "Beteiligter in EspoCRM gelöscht; er war nicht mit Advoware verknüpft.".to_owned(),
    };
    tracing::info!(bet_nr = ?bet_nr.map(|b| b.get()), outcome = "unlinked", "Beteiligter deleted in EspoCRM; Advoware record kept");
    if let Some(user_id) = &ctx.config.beteiligte.notify_user_id {
        let n = NewNotification {
            kind: "Message".into(),
            message,
            user_id: user_id.clone(),
            related_type: Some(espo_fields::ENTITY.into()),
            related_id: Some(id.to_string()),
            data: None,
        };
        if let Err(e) = sides.espo.notify(&n).await {
            warn!(error = %e, "notification failed");
        }
    }
    store.forget(id).await?;
    ctx.metrics.beteiligte_run("unlinked");
    Ok(())
}
