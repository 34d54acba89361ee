//! Bankverbindungen sync (issue 12 item 3): EspoCRM `CBankverbindungen` → the bank accounts of
//! the linked Advoware Beteiligter (and Advoware's edits back, 3-way).
//!
//! - [`sides`]: both systems behind small traits; the Advoware paths ([`sides::BankPaths`]).
//! - [`store`]: the per-record Redis state (link, create intent, content hash).
//! - [`engine`]: one run — check IBAN/BIC first, wait for the Beteiligter's `betnr`, create once,
//!   write only what changed; delete.
//!
//! Topics `vmh.bankverbindungen.create|update|delete`. Every job runs under the **Beteiligter's**
//! entity lock (`bbl:lock:beteiligte:beteiligte:{beteiligteId}`, the Beteiligte sync's own), so a
//! Bankverbindung never races its Beteiligter's sync. IBANs appear in logs and messages masked
//! only (`DE89 **** **** **** **30 00`).

pub mod audit;
pub mod engine;
pub mod sides;
pub mod store;

use std::sync::Arc;

use bitbylaw_core::ids::EspoId;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use tracing::{warn, Instrument as _};

use self::engine::{BankSettings, Engine, EngineError, Outcome};
use self::sides::{AdvowareBank, BankAdvoware, BankEspo};
use self::store::BankStore;
use super::{HandlerError, HandlerResult, JobContext, Registry};
use crate::config::Config;
use crate::queue::Job;
use crate::sync::bankverbindungen::{espo_to_data, mask_ibans};

pub use bitbylaw_core::topic::Topic;

/// The Beteiligte sync's handler name and lock type: one lock per Beteiligter for both syncs.
pub use super::beteiligte::{HANDLER, LOCK_TYPE};

/// The two sides, shared by all jobs.
#[derive(Clone)]
pub struct BankSides {
    pub espo: Arc<dyn BankEspo>,
    pub advoware: Arc<dyn BankAdvoware>,
}

/// Whether the configuration has what the sync needs (EspoCRM and Advoware).
pub fn configured(config: &Config) -> bool {
    super::beteiligte::configured(config)
}

/// Registers the three topics (under the Beteiligte handler name, for the shared lock).
pub fn register(r: &mut Registry) {
    r.register(Topic::BankverbindungenCreate.as_str(), HANDLER, sync_boxed);
    r.register(Topic::BankverbindungenUpdate.as_str(), HANDLER, sync_boxed);
    r.register(
        Topic::BankverbindungenDelete.as_str(),
        HANDLER,
        delete_boxed,
    );
}

fn sync_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    sync(ctx, job).boxed()
}

fn delete_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    delete(ctx, job).boxed()
}

fn sides(ctx: &JobContext) -> Result<&BankSides, HandlerError> {
    super::built_clients(&ctx.clients.bankverbindungen, "Bankverbindungen sync")
}

/// Builds both clients (EspoCRM with its key; Advoware with the token shared in Redis).
pub async fn build_sides(
    config: &Config,
    queue: &crate::queue::Queue,
) -> Result<BankSides, super::BuildError> {
    use crate::clients::espocrm::{ClientSettings as EspoSettings, EspoCrmClient};

    let espo = EspoCrmClient::new(EspoSettings::from_settings(&config.espocrm)?)?;
    Ok(BankSides {
        espo: Arc::new(espo),
        advoware: Arc::new(AdvowareBank {
            client: super::advoware_client(config, queue).await?,
            paths: config.bankverbindungen.paths.clone(),
        }),
    })
}

/// Builds the clients in the background at start-up (the shared builder loop).
pub fn spawn_build(
    config: Arc<Config>,
    queue: crate::queue::Queue,
    slot: super::ClientSlot<BankSides>,
    health: Arc<crate::ops::health::Health>,
) {
    super::spawn_sides_build(
        "Bankverbindungen sync",
        "bankverbindungen",
        config,
        queue,
        slot,
        health,
        |config, queue| async move { build_sides(&config, &queue).await },
    );
}

/// What intake stores of a `vmh.bankverbindungen.*` event: every string masked by
/// [`mask_ibans`], so neither the queue nor the DLQ (`dlq list`) ever holds an IBAN. The
/// handler reads the record from EspoCRM and uses only the entity id. Other topics: unchanged.
pub fn queued_payload(topic: &str, payload: serde_json::Value) -> serde_json::Value {
    fn mask(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(mask_ibans(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(mask).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, mask(v))).collect()),
            other => other,
        }
    }
    if topic.starts_with("vmh.bankverbindungen.") {
        mask(payload)
    } else {
        payload
    }
}

/// Called by the Beteiligte sync after each run of `beteiligte`: once the run has left the
/// Beteiligter with a `betnr` (created, or linked before), every Bankverbindung that answered
/// `waiting_for_betnr` is queued again (`vmh.bankverbindungen.update`), so none ends in the DLQ
/// because the Beteiligter came late. Ids leave the waiting set only after the enqueue; a crash
/// in between queues a job twice, which the idempotent sync absorbs. Failures are logged: the
/// Beteiligte run itself succeeded, and its next run tries again.
pub async fn requeue_waiting(
    ctx: &JobContext,
    beteiligte: &EspoId,
    run: &Result<super::beteiligte::engine::Outcome, super::beteiligte::engine::EngineError>,
) {
    use super::beteiligte::engine::Outcome as Bet;
    let has_betnr = matches!(
        run,
        Ok(Bet::Created(_)
            | Bet::WroteAdvoware { .. }
            | Bet::WroteEspocrm { .. }
            | Bet::NoChange { .. }
            | Bet::ConflictLeft(_))
    );
    if !has_betnr {
        return;
    }
    let result = async {
        let store = BankStore::new(ctx.redis().await?);
        let ids = store.waiting(beteiligte).await?;
        if ids.is_empty() {
            return Ok::<usize, HandlerError>(0);
        }
        let jobs = ids
            .iter()
            .map(|id| crate::queue::NewJob::new(id, serde_json::json!({"trigger": "betnr"})))
            .collect();
        ctx.enqueue(Topic::BankverbindungenUpdate.as_str(), jobs)
            .await?;
        store.remove_waiting(beteiligte, &ids).await?;
        Ok(ids.len())
    };
    match result.await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(beteiligte = %beteiligte, requeued = n, "waiting Bankverbindungen queued again")
        }
        Err(e) => {
            warn!(beteiligte = %beteiligte, error = %e, "could not re-queue the waiting Bankverbindungen (the next Beteiligte run tries again)")
        }
    }
}

fn espo_id(job: &Job) -> Result<EspoId, HandlerError> {
    EspoId::new(&job.entity)
        .map_err(|e| HandlerError::Permanent(format!("invalid EspoCRM id {:?}: {e}", job.entity)))
}

fn settings(config: &Config) -> BankSettings {
    BankSettings {
        fields: config.bankverbindungen.fields.clone(),
        notify_user_id: config.beteiligte.notify_user_id.clone(),
    }
}

/// Maps an engine result to the job's result and counts it. Messages are masked again (they
/// already are; this is the last line before the log and the DLQ).
pub fn settle(
    metrics: &crate::ops::metrics::Metrics,
    result: Result<Outcome, EngineError>,
) -> HandlerResult {
    match result {
        Ok(Outcome::InvalidData(reason)) => {
            metrics.bankverbindungen_run("invalid_data");
            warn!(outcome = "invalid_data", reason = %mask_ibans(&reason), "Bankverbindung cannot be synced");
            // Retrying cannot fix data; the record says why (`syncErrorMessage`).
            Err(HandlerError::Permanent(format!(
                "invalid data: {}",
                mask_ibans(&reason)
            )))
        }
        Ok(outcome) => {
            metrics.bankverbindungen_run(outcome.label());
            tracing::info!(outcome = outcome.label(), "Bankverbindungen sync done");
            Ok(())
        }
        Err(e) => {
            let message = mask_ibans(&e.to_string());
            let class = match &e {
                EngineError::NoBetnr(_) => "waiting_for_betnr",
                e if e.is_retryable() => "retryable",
                _ => "permanent",
            };
            metrics.bankverbindungen_run(class);
            warn!(error = %message, outcome = class, "Bankverbindungen sync failed");
            if e.is_retryable() {
                Err(HandlerError::Retryable {
                    message,
                    retry_after: e.retry_after(),
                })
            } else {
                Err(HandlerError::Permanent(message))
            }
        }
    }
}

/// The entity lock was lost mid-run: the run stopped; a retry reads the state again.
fn lock_lost(ctx: &JobContext, lost: &crate::locks::LockLost) -> HandlerError {
    ctx.metrics.bankverbindungen_run("lock_lost");
    warn!(error = %lost, outcome = "lock_lost", "Bankverbindungen sync stopped");
    HandlerError::retryable(lost.to_string())
}

async fn sync(ctx: &JobContext, job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let id = espo_id(job)?;
    let span = tracing::info_span!(parent: &ctx.span, "bankverbindung_sync", espo_id = %id);
    async {
        let settings = settings(&ctx.config);
        // Which Beteiligter's lock: read the record (again under the lock, by the engine). A
        // record that fails its IBAN/BIC check never reaches Advoware: it does not wait for the
        // Beteiligter's lock.
        let beteiligte = match sides.espo.get_bank(&id).await {
            Ok(Some(rec)) if espo_to_data(&rec, &settings.fields).is_ok() => {
                rec.beteiligte_id.and_then(|b| EspoId::new(b).ok())
            }
            Ok(Some(_)) => None,
            Ok(None) => {
                ctx.metrics.bankverbindungen_run("skipped");
                tracing::info!(outcome = "skipped", "Bankverbindung gone in EspoCRM");
                return Ok(());
            }
            Err(e) => return settle(&ctx.metrics, Err(e.into())),
        };
        // Without a (valid record's) Beteiligter the engine only marks the record: its own lock.
        let (lock_type, lock_id) = match &beteiligte {
            Some(b) => (LOCK_TYPE, b.to_string()),
            None => ("bankverbindung", id.to_string()),
        };
        let guard = ctx.lock(lock_type, &lock_id).await?;
        let store = BankStore::new(ctx.redis().await?);
        let engine = Engine {
            espo: sides.espo.as_ref(),
            advoware: sides.advoware.as_ref(),
            store: &store,
            settings: &settings,
        };
        let run = engine.sync(&id, chrono::Utc::now());
        let result = guard
            .run_and_release(ctx.config.lock_ttl, run)
            .await
            .map_err(|lost| lock_lost(ctx, &lost))?;
        settle(&ctx.metrics, result)
    }
    .instrument(span)
    .await
}

async fn delete(ctx: &JobContext, job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let id = espo_id(job)?;
    let span = tracing::info_span!(parent: &ctx.span, "bankverbindung_delete", espo_id = %id);
    async {
        let store = BankStore::new(ctx.redis().await?);
        let link = store.link(&id).await?;
        let (lock_type, lock_id) = match &link.beteiligte {
            Some(b) => (LOCK_TYPE, b.to_string()),
            None => ("bankverbindung", id.to_string()),
        };
        let guard = ctx.lock(lock_type, &lock_id).await?;
        // Read again under the lock: a create may have linked it meanwhile.
        let link = store.link(&id).await?;
        let settings = settings(&ctx.config);
        let engine = Engine {
            espo: sides.espo.as_ref(),
            advoware: sides.advoware.as_ref(),
            store: &store,
            settings: &settings,
        };
        let result = guard
            .run_and_release(ctx.config.lock_ttl, engine.delete(&id, &link))
            .await
            .map_err(|lost| lock_lost(ctx, &lost))?;
        settle(&ctx.metrics, result)
    }
    .instrument(span)
    .await
}
