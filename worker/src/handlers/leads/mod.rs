//! The `leads.vermieterhelden.received` handler (issue 13): validate and enrich the form
//! submission ([`crate::sync::leads`]), then write it into EspoCRM exactly once ([`engine`]).
//!
//! - [`crm`]: EspoCRM behind a small trait (real client in production, fakes in tests).
//! - [`store`]: the per-submission steps in Redis.
//! - [`engine`]: the idempotent create/update, target list, follow-up.
//!
//! The idempotency key is the job's event id, which for this route is the sender's Standard
//! Webhooks `webhook-id` (the edge filter forwards it as `X-Event-Id`). An invalid payload is a
//! permanent error naming the field: the job goes to the dead-letter stream with that reason.
//! Personal data (name, e-mail, phone) is never logged above debug.

pub mod crm;
pub mod engine;
pub mod store;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{info, warn};

use super::{Handler, HandlerError, HandlerResult, JobContext, Registry};
use crate::clients::espocrm::{ClientSettings, EspoCrmClient};
use crate::config::Config;
use crate::queue::Job;
use crate::topics;
use engine::{Engine, EngineError};
use store::LeadStore;

/// Registered when EspoCRM is configured.
pub fn configured(config: &Config) -> bool {
    config.espocrm.api_base_url.is_some()
}

pub fn register(r: &mut Registry, config: &Config) {
    let crm = ClientSettings::from_settings(&config.espocrm)
        .and_then(EspoCrmClient::new)
        .map(Arc::new)
        .map_err(|e| e.to_string());
    r.register(topics::LEAD_RECEIVED, "leads", LeadsHandler { crm });
}

/// Holds the EspoCRM client (or why it could not be built: then every job fails permanently).
pub struct LeadsHandler {
    crm: Result<Arc<EspoCrmClient>, String>,
}

impl Handler for LeadsHandler {
    fn handle<'a>(&'a self, ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
        async move {
            let crm = self.crm.as_ref().map_err(|e| {
                HandlerError::Permanent(format!("EspoCRM client cannot be built: {e}"))
            })?;
            handle(ctx, job, crm.as_ref()).await
        }
        .boxed()
    }
}

/// The idempotency key of a job: its event id (`webhook-id`) when usable as a key, else the
/// content key (dedup key) the queue gave the job.
pub fn idempotency_key(job: &Job) -> &str {
    match job.event_id.as_deref() {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            id
        }
        _ => &job.entity,
    }
}

/// Validate, lock the submission, run the engine; errors mapped for the queue.
pub async fn handle(ctx: &JobContext, job: &Job, crm: &dyn crm::LeadsCrm) -> HandlerResult {
    let settings = &ctx.config.leads;
    let lead = crate::sync::leads::validate(&job.payload, settings.default_region)
        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
    let key = idempotency_key(job);
    let guard = ctx.lock("lead", key).await?;
    let store = LeadStore::new(ctx.redis().await?);
    let engine = Engine {
        crm,
        store: &store,
        settings,
    };
    // Kept alive while EspoCRM answers slowly: two runs of one submission never overlap.
    let result = guard
        .run_and_release(
            ctx.config.lock_ttl,
            engine.process(key, &lead, chrono::Utc::now()),
        )
        .await
        .map_err(|lost| {
            warn!(error = %lost, outcome = "lock_lost", "lead run stopped");
            HandlerError::retryable(lost.to_string())
        })?;
    match result {
        Ok(outcome) => {
            index_for_lookup(ctx, &lead, &outcome).await;
            info!(
                lead_type = lead.lead_type.as_str(),
                outcome = outcome.label(),
                entity = %outcome.entity,
                espo_id = %outcome.id,
                "lead written to EspoCRM"
            );
            Ok(())
        }
        Err(e) => Err(handler_error(e)),
    }
}

/// Puts the person just written under its number into the 3CX lookup index, so the lead's
/// first call back pops up without an EspoCRM search. Best effort: the lead is written already.
async fn index_for_lookup(
    ctx: &JobContext,
    lead: &crate::sync::leads::Lead,
    outcome: &engine::Outcome,
) {
    use crate::handlers::telephony::matching::{Match, PERSON_ENTITIES};
    let (Some(phone), Some(entity)) = (
        lead.phone.as_deref(),
        PERSON_ENTITIES.into_iter().find(|e| *e == outcome.entity),
    ) else {
        return;
    };
    let record = serde_json::json!({
        "id": outcome.id,
        "firstName": lead.name.first,
        "lastName": lead.name.last,
        "accountName": lead.company,
        "emailAddress": lead.email,
        "phoneNumber": phone,
    });
    if let Ok(conn) = ctx.redis().await {
        let m = Match { entity, record };
        let _ = crate::handlers::telephony::index::put_preferring(conn, phone, &m).await;
    }
}

pub fn handler_error(e: EngineError) -> HandlerError {
    match &e {
        EngineError::Crm(c) if e.is_retryable() => HandlerError::Retryable {
            retry_after: c.retry_after(),
            message: e.to_string(),
        },
        EngineError::Advoware(a) if e.is_retryable() => HandlerError::Retryable {
            retry_after: a.retry_after(),
            message: e.to_string(),
        },
        _ if e.is_retryable() => HandlerError::retryable(e.to_string()),
        _ => HandlerError::Permanent(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(event_id: Option<&str>) -> Job {
        Job {
            id: "j1".into(),
            topic: topics::LEAD_RECEIVED.into(),
            entity: "0123abcd".into(),
            event_id: event_id.map(str::to_owned),
            dedup_key: None,
            enqueued_at_ms: 0,
            attempts: 0,
            last_error: None,
            tick: None,
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_webhook_id_is_the_key_when_usable() {
        assert_eq!(
            idempotency_key(&job(Some("msg_2Xb:9.z-1"))),
            "msg_2Xb:9.z-1"
        );
        assert_eq!(idempotency_key(&job(Some("msg with space"))), "0123abcd");
        assert_eq!(idempotency_key(&job(Some(""))), "0123abcd");
        assert_eq!(idempotency_key(&job(None)), "0123abcd");
    }
}
