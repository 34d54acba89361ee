//! One reported call into EspoCRM, exactly once per call key.
//!
//! Steps (recorded in Redis under `keys::call`, like the leads handler's, see
//! [`crate::handlers::leads::store`]): `intent` before EspoCRM is touched; `record` = the `Call`
//! created; `followup` = the call-back `Task` of a missed inbound call; `done`. Everything written
//! carries the call's marker ([`marker`]); a retry that finds `intent` without `record` (a crash
//! between create and record) searches for the marker first: no second Call, no second Task.

use bitbylaw_core::ids::EspoId;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionLike, ConnectionManager};
use serde_json::Value;

use super::matching::{find_person, Match};
use crate::clients::espocrm::{ListQuery, Where};
use crate::config::ThreeCxSettings;
use crate::handlers::leads::crm::LeadsCrm;
use crate::handlers::leads::engine::EngineError;
use crate::handlers::leads::store::LeadStore;
use crate::sync::telephony::{call_body, marker, task_body, CallReport, Links};

/// What a run did (ids only: safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub call_id: String,
    pub parent_type: Option<String>,
    /// A call-back task exists for this call.
    pub task: bool,
    pub already_done: bool,
}

pub struct Journal<'a, C> {
    pub crm: &'a dyn LeadsCrm,
    pub store: &'a LeadStore<C>,
    /// Where a matched person goes into the lookup index (none in unit tests).
    pub index: Option<ConnectionManager>,
    pub settings: &'a ThreeCxSettings,
}

fn record_id(v: &Value) -> Result<EspoId, EngineError> {
    v.get("id")
        .and_then(Value::as_str)
        .and_then(|s| EspoId::new(s).ok())
        .ok_or_else(|| EngineError::Permanent("EspoCRM answer without a usable id".into()))
}

impl<C: ConnectionLike + Clone + Send + Sync> Journal<'_, C> {
    pub async fn process(
        &self,
        key: &str,
        report: &CallReport,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let steps = self.store.steps(key).await?;
        if steps.done {
            return Ok(Outcome {
                call_id: steps.record.map(|(_, id)| id).unwrap_or_default(),
                parent_type: None,
                task: steps.followup,
                already_done: true,
            });
        }
        let found = match &report.number {
            Some(n) => {
                find_person(
                    self.crm,
                    n,
                    self.settings.default_region,
                    report.entity_id.as_deref(),
                )
                .await?
            }
            None => Default::default(),
        };
        if let (Some(best), Some(n), Some(conn)) = (&found.best, &report.number, &self.index) {
            // Warm the lookup index for the next call from this number (best effort), with the
            // record the lookup's priority picks, not necessarily the one 3CX named.
            let _ = super::lookup_index_put(conn.clone(), n, best).await;
        }
        let links = Links {
            parent: found
                .chosen()
                .map(|m: &Match| (m.entity.to_owned(), m.id().to_owned())),
            user_id: self
                .settings
                .user_for(report.agent.as_deref(), report.agent_email.as_deref())
                .map(str::to_owned),
        };
        let call_id = match steps.record {
            Some((_, id)) => id,
            None => {
                let fresh = self.store.set_intent(key, now.timestamp_millis()).await?;
                let earlier = if fresh {
                    None
                } else {
                    self.find_marked("Call", key).await?
                };
                let rec = match earlier {
                    Some(rec) => rec,
                    None => {
                        self.crm
                            .create("Call", &call_body(report, key, &links), true)
                            .await?
                    }
                };
                let id = record_id(&rec)?.to_string();
                self.store.set(key, "record", &format!("Call:{id}")).await?;
                id
            }
        };
        let task = report.needs_task();
        if task && !steps.followup {
            if self.find_marked("Task", key).await?.is_none() {
                let due = now + chrono::Duration::hours(i64::from(self.settings.task_due_hours));
                self.crm
                    .create("Task", &task_body(report, key, &links, due), true)
                    .await?;
            }
            self.store.set(key, "followup", "1").await?;
        }
        self.store.set(key, "done", "1").await?;
        Ok(Outcome {
            call_id,
            parent_type: links.parent.map(|(t, _)| t),
            task,
            already_done: false,
        })
    }

    /// A record of `entity` whose description carries the marker of `key`.
    async fn find_marked(&self, entity: &str, key: &str) -> Result<Option<Value>, EngineError> {
        let m = marker(key);
        let q = ListQuery::new()
            .filter(Where::Contains("description".into(), m.clone()))
            .select(["id", "description"])
            .limit(5);
        Ok(self.crm.find(entity, &q).await?.into_iter().find(|r| {
            r.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.contains(&m))
        }))
    }
}
