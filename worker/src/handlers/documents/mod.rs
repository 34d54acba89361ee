//! Documents → xAI collections (issue 15): EspoCRM `CDokumente` into one xAI collection per
//! owning entity (`Raeumungsklage`, `CBeteiligte`, `Account`).
//!
//! - [`engine`]: one document run ([`engine::DocumentSync`]) and one collection-manager run
//!   ([`engine::CollectionManager`]) against the real clients; the decision itself is the pure
//!   [`crate::sync::documents::decide()`].
//! - [`store`]: the Redis records that make the writes crash-safe (pending upload, created
//!   collection, last synced state).
//! - [`audit`]: `documents audit` (EspoCRM's view against the collections' document lists).
//!
//! Topics: `vmh.document.create|update|delete` run under the document's lock
//! (`bbl:lock:documents:CDokumente:{id}`); `vmh.entity.link|unlink` run the collection manager
//! under the entity's lock (`bbl:lock:documents:{entityType}:{id}`) and then enqueue a document
//! job for every document linked to the entity — the seeds' event storm, absorbed by coalescing
//! and by the idempotent document run. `vmh.entity.create` (an entity's create hook) runs the same
//! collection manager, so a new case, party or account gets its collection before any document
//! is linked; its own topic because the registry has one handler per topic (the Beteiligte sync
//! owns `vmh.beteiligte.create`).

pub mod audit;
pub mod engine;
pub mod store;

use bitbylaw_core::ids::EspoId;
use bitbylaw_core::topic::Topic;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use serde_json::{json, Value};
use tracing::{warn, Instrument as _};

use self::engine::{
    xai_gate, CollectionManager, DocError, DocumentSync, DocumentsSides, DOCUMENT_ENTITY,
};
use self::store::DocumentStore;
use super::{HandlerError, HandlerResult, JobContext, Registry};
use crate::config::Config;
use crate::queue::{Job, NewJob};
use crate::ratelimit::TokenBucket;
use crate::sync::documents::EntityType;
use redis::aio::ConnectionManager;

/// Handler name of every document topic (the lock key's first part).
pub const HANDLER: &str = "documents";
pub const TOPIC_CREATE: &str = Topic::DocumentCreate.as_str();
pub const TOPIC_UPDATE: &str = Topic::DocumentUpdate.as_str();
pub const TOPIC_DELETE: &str = Topic::DocumentDelete.as_str();
pub const TOPIC_LINK: &str = Topic::EntityLink.as_str();
pub const TOPIC_UNLINK: &str = Topic::EntityUnlink.as_str();
pub const TOPIC_ENTITY_CREATE: &str = Topic::EntityCreate.as_str();

/// Payload key of an entity job naming the entity type (`Raeumungsklage`, `CBeteiligte`,
/// `Account`, or `CDokumente` when the hook reports the document side).
pub const ENTITY_TYPE_KEY: &str = "entityType";

/// Whether EspoCRM and both xAI keys are configured; without them the topics stay unhandled.
pub fn configured(config: &Config) -> bool {
    let has = |k: &Option<crate::config::Secret>| k.as_ref().is_some_and(|k| !k.is_empty());
    config.espocrm.api_base_url.is_some()
        && has(&config.xai.api_key)
        && has(&config.xai.management_key)
}

/// Builds both clients (no Redis needed, so at start-up, synchronously).
pub fn build_sides(config: &Config) -> Result<DocumentsSides, String> {
    use crate::clients::espocrm::{ClientSettings as EspoSettings, EspoCrmClient};
    use crate::clients::xai::{ClientSettings as XaiSettings, XaiClient};
    let espo = EspoSettings::from_settings(&config.espocrm)
        .and_then(EspoCrmClient::new)
        .map_err(|e| format!("EspoCRM: {e}"))?;
    let xai = XaiSettings::from_settings(&config.xai)
        .and_then(XaiClient::new)
        .map_err(|e| format!("xAI: {e}"))?;
    Ok(DocumentsSides { espo, xai })
}

pub fn register(r: &mut Registry) {
    r.register(TOPIC_CREATE, HANDLER, sync_boxed);
    r.register(TOPIC_UPDATE, HANDLER, sync_boxed);
    r.register(TOPIC_DELETE, HANDLER, delete_boxed);
    r.register(TOPIC_LINK, HANDLER, entity_boxed);
    r.register(TOPIC_UNLINK, HANDLER, entity_boxed);
    r.register(TOPIC_ENTITY_CREATE, HANDLER, entity_boxed);
}

fn sync_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    document(ctx, job, false).boxed()
}

fn delete_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    document(ctx, job, true).boxed()
}

fn entity_boxed<'a>(ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
    entity(ctx, job).boxed()
}

fn sides(ctx: &JobContext) -> Result<&DocumentsSides, HandlerError> {
    super::built_clients(&ctx.clients.documents, "document sync")
}

fn espo_id(job: &Job) -> Result<EspoId, HandlerError> {
    EspoId::new(&job.entity)
        .map_err(|e| HandlerError::Permanent(format!("invalid EspoCRM id {:?}: {e}", job.entity)))
}

/// The queue's view of a failed run, counted.
fn settle(ctx: &JobContext, e: DocError) -> HandlerError {
    let class = if e.is_retryable() {
        "retryable"
    } else {
        "permanent"
    };
    ctx.metrics.documents_run(class);
    warn!(error = %e, outcome = class, "document sync failed");
    HandlerError::classified(e.is_retryable(), e.to_string(), e.retry_after())
}

/// A document job for each id (payload says why; the run reads the current state anyway).
pub fn document_jobs(ids: &[String], trigger: &str) -> Vec<NewJob> {
    ids.iter()
        .map(|d| NewJob::new(d.clone(), json!({"id": d, "trigger": trigger})))
        .collect()
}

/// The Redis state and the xAI gate of one run.
struct RunState {
    store: DocumentStore<ConnectionManager>,
    gate: TokenBucket<ConnectionManager>,
}

async fn run_state(ctx: &JobContext) -> Result<RunState, HandlerError> {
    let conn = ctx.redis().await?;
    Ok(RunState {
        store: DocumentStore::new(conn.clone()),
        gate: xai_gate(conn),
    })
}

/// Runs `work` holding the lock `documents:{entity_type}:{id}` (busy → a later retry; lost →
/// the run is stopped and retried).
async fn under_lock<T>(
    ctx: &JobContext,
    entity_type: &str,
    id: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<T, HandlerError> {
    let guard = ctx.lock(entity_type, id).await?;
    guard
        .run_and_release(ctx.config.lock_ttl, work)
        .await
        .map_err(|lost| {
            ctx.metrics.documents_run("lock_lost");
            HandlerError::retryable(lost.to_string())
        })
}

async fn document(ctx: &JobContext, job: &Job, delete: bool) -> HandlerResult {
    let sides = sides(ctx)?;
    let id = espo_id(job)?;
    let span = tracing::info_span!(parent: &ctx.span, "document_sync", document_id = %id);
    async {
        let state = run_state(ctx).await?;
        let run = DocumentSync {
            sides,
            store: &state.store,
            settings: &ctx.config.documents,
            gate: &state.gate,
        };
        // `documents resync` downloads and hashes even a record that looks clean.
        let force = job.payload.get("trigger").and_then(Value::as_str) == Some("cli");
        let work = async {
            if delete {
                run.delete(&id).await
            } else {
                run.sync(&id, force).await
            }
        };
        match under_lock(ctx, DOCUMENT_ENTITY, id.as_str(), work).await? {
            Ok(outcome) => {
                ctx.metrics.documents_run(outcome.label());
                tracing::info!(outcome = outcome.label(), "document sync done");
                Ok(())
            }
            Err(e) => Err(settle(ctx, e)),
        }
    }
    .instrument(span)
    .await
}

async fn entity(ctx: &JobContext, job: &Job) -> HandlerResult {
    let sides = sides(ctx)?;
    let id = espo_id(job)?;
    let raw_type = job.payload.get(ENTITY_TYPE_KEY).and_then(Value::as_str);
    let mut known = raw_type.and_then(|t| t.parse::<EntityType>().ok());
    if known.is_none() && raw_type.is_none() && job.topic == TOPIC_ENTITY_CREATE {
        // EspoCRM's own `<Entity>.create` webhook sends the record without its type.
        known = owning_type_of(&sides.espo, &id)
            .await
            .map_err(|e| settle(ctx, e))?;
    }
    let Some(t) = known else {
        ctx.metrics.documents_run("permanent");
        if raw_type.is_none() && job.topic == TOPIC_ENTITY_CREATE {
            return Err(HandlerError::Permanent(format!(
                "entity create event: no Raeumungsklage, CBeteiligte or Account {id} in EspoCRM"
            )));
        }
        return Err(HandlerError::Permanent(format!(
            "entity event without a known {ENTITY_TYPE_KEY} (got {raw_type:?}; expected Raeumungsklage, CBeteiligte, Account or CDokumente)"
        )));
    };
    let span = tracing::info_span!(parent: &ctx.span, "document_collection", entity_type = %t, entity_id = %id);
    async {
        let state = run_state(ctx).await?;
        if t == EntityType::Dokumente {
            return document_side_link(ctx, sides, &state, &id).await;
        }
        let manager = CollectionManager {
            sides,
            store: &state.store,
            settings: &ctx.config.documents,
            gate: &state.gate,
        };
        let result = under_lock(ctx, t.as_str(), id.as_str(), manager.run(t, &id)).await?;
        let run = result.map_err(|e| settle(ctx, e))?;
        ctx.metrics.documents_run(run.outcome.label());
        tracing::info!(
            outcome = run.outcome.label(),
            documents = run.documents.len(),
            "collection manager done"
        );
        if !run.documents.is_empty() {
            ctx.enqueue(TOPIC_UPDATE, document_jobs(&run.documents, "entity"))
                .await?;
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Which owning entity type has record `id` (EspoCRM ids are unique across entity types).
async fn owning_type_of(
    espo: &crate::clients::espocrm::EspoCrmClient,
    id: &EspoId,
) -> Result<Option<EntityType>, DocError> {
    for t in EntityType::OWNING {
        match espo.get::<Value>(t.as_str(), id).await {
            Ok(_) => return Ok(Some(t)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// A link reported from the document's side: the document syncs, and every entity it is
/// linked to gets its collection job (which brings the document back once ready).
async fn document_side_link(
    ctx: &JobContext,
    sides: &DocumentsSides,
    state: &RunState,
    id: &EspoId,
) -> HandlerResult {
    let run = DocumentSync {
        sides,
        store: &state.store,
        settings: &ctx.config.documents,
        gate: &state.gate,
    };
    let links = run.links(id).await.map_err(|e| settle(ctx, e))?;
    let jobs: Vec<NewJob> = links
        .iter()
        .map(|l| {
            NewJob::new(
                l.id.as_str(),
                json!({"id": l.id.as_str(), ENTITY_TYPE_KEY: l.entity_type.as_str()}),
            )
        })
        .collect();
    if !jobs.is_empty() {
        ctx.enqueue(TOPIC_LINK, jobs).await?;
    }
    ctx.enqueue(TOPIC_UPDATE, document_jobs(&[id.to_string()], "link"))
        .await?;
    Ok(())
}
