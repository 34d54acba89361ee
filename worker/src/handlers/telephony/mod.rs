//! 3CX telephony (issue 14): the `telephony.call.reported` handler (call journaling, [`journal`])
//! and the person matching the journal and the `/3cx/lookup` endpoint share ([`matching`]).
//!
//! The job's payload is the body of 3CX's `ReportCall` (the CRM template posts it at call end to
//! `/3cx/calls`; the edge checks the API key and forwards it signed). Invalid bodies are a
//! permanent error naming the field: dead-letter stream, nothing written. Personal data (name,
//! number) is never logged above debug.

pub mod index;
pub mod journal;
pub mod lookup;
pub mod matching;
pub mod outbound;
pub mod template;

pub use lookup::index_put as lookup_index_put;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::info;

use super::leads::store::LeadStore;
use super::{Handler, HandlerError, HandlerResult, JobContext, Registry};
use crate::clients::espocrm::{ClientSettings, EspoCrmClient};
use crate::config::Config;
use crate::keys;
use crate::queue::Job;
use crate::topics;

/// Registered when EspoCRM is configured.
pub fn configured(config: &Config) -> bool {
    config.espocrm.api_base_url.is_some()
}

pub fn register(r: &mut Registry, config: &Config) {
    let crm = ClientSettings::from_settings(&config.espocrm)
        .and_then(EspoCrmClient::new)
        .map(Arc::new)
        .map_err(|e| e.to_string());
    r.register(
        topics::CALL_REPORTED,
        "telephony",
        CallReportedHandler {
            crm: crm.clone(),
            notes: tokio::sync::OnceCell::new(),
        },
    );
    r.register(
        topics::PHONE_INDEX_REFRESH,
        "telephony",
        IndexRefreshHandler { crm },
    );
}

/// `telephony.index.refresh`: the lookup index's full refresh ([`index::refresh`]).
pub struct IndexRefreshHandler {
    crm: Result<Arc<EspoCrmClient>, String>,
}

impl Handler for IndexRefreshHandler {
    fn handle<'a>(&'a self, ctx: &'a JobContext, _job: &'a Job) -> BoxFuture<'a, HandlerResult> {
        async move {
            let crm = self.crm.as_ref().map_err(|e| {
                HandlerError::Permanent(format!("EspoCRM client cannot be built: {e}"))
            })?;
            let conn = ctx.redis().await?;
            let stats = index::refresh(crm, conn, ctx.config.threecx.default_region)
                .await
                .map_err(|e| match &e {
                    index::RefreshError::Crm(c) if c.is_retryable() => HandlerError::Retryable {
                        retry_after: c.retry_after(),
                        message: e.to_string(),
                    },
                    index::RefreshError::Crm(_) => HandlerError::Permanent(e.to_string()),
                    index::RefreshError::Redis(_) => HandlerError::retryable(e.to_string()),
                })?;
            info!(
                records = stats.records,
                indexed = stats.indexed,
                unusable = stats.unusable,
                "3CX lookup index refreshed"
            );
            Ok(())
        }
        .boxed()
    }
}

/// Holds the EspoCRM client (or why it could not be built: then every job fails permanently)
/// and, once a job needs it, the Advoware client of the optional call note.
pub struct CallReportedHandler {
    crm: Result<Arc<EspoCrmClient>, String>,
    notes: tokio::sync::OnceCell<journal::CallNotes>,
}

impl CallReportedHandler {
    /// The call-note side when configured; built on first use (it needs Redis for the shared
    /// Advoware token). A build failure is not kept: Redis may answer on the next job.
    async fn notes(&self, ctx: &JobContext) -> Result<Option<&journal::CallNotes>, HandlerError> {
        let Some(settings) = &ctx.config.threecx.advoware_note else {
            return Ok(None);
        };
        let notes = self
            .notes
            .get_or_try_init(|| async {
                let client = super::advoware_client(&ctx.config, &ctx.queue)
                    .await
                    .map_err(|e| match super::BuildAttempt::from(e) {
                        super::BuildAttempt::WaitForRedis(m) => HandlerError::retryable(m),
                        super::BuildAttempt::Failed(m) => HandlerError::Permanent(m),
                    })?;
                Ok::<_, HandlerError>(journal::CallNotes {
                    client,
                    settings: settings.clone(),
                })
            })
            .await?;
        Ok(Some(notes))
    }
}

impl Handler for CallReportedHandler {
    fn handle<'a>(&'a self, ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
        async move {
            let crm = self.crm.as_ref().map_err(|e| {
                HandlerError::Permanent(format!("EspoCRM client cannot be built: {e}"))
            })?;
            let notes = self.notes(ctx).await?;
            handle(ctx, job, crm.as_ref(), notes).await
        }
        .boxed()
    }
}

/// Validate, lock the call, journal it; errors mapped for the queue.
pub async fn handle(
    ctx: &JobContext,
    job: &Job,
    crm: &dyn super::leads::crm::LeadsCrm,
    notes: Option<&journal::CallNotes>,
) -> HandlerResult {
    let settings = &ctx.config.threecx;
    let report = crate::sync::telephony::parse(&job.payload, settings.default_region)
        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
    let key = report.key();
    let guard = ctx.lock("call", &key).await?;
    let conn = ctx.redis().await?;
    let store = LeadStore::with_keys(conn.clone(), keys::call);
    let journal = journal::Journal {
        crm,
        store: &store,
        index: Some(conn),
        settings,
        notes,
    };
    // Kept alive while EspoCRM answers slowly: two runs of one call never overlap.
    let outcome = guard
        .run_and_release(
            ctx.config.lock_ttl,
            journal.process(&key, &report, chrono::Utc::now()),
        )
        .await
        .map_err(|lost| {
            tracing::warn!(error = %lost, outcome = "lock_lost", "call journaling stopped");
            HandlerError::retryable(lost.to_string())
        })?
        .map_err(super::leads::handler_error)?;
    info!(
        call_key = %key,
        espo_id = %outcome.call_id,
        parent = outcome.parent_type.as_deref().unwrap_or("none"),
        task = outcome.task,
        advoware_note = outcome.advoware_note,
        already_done = outcome.already_done,
        "call journaled in EspoCRM"
    );
    Ok(())
}
