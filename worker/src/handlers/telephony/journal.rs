//! One reported call into EspoCRM, exactly once per call key.
//!
//! Steps (recorded in Redis under `keys::call`, like the leads handler's, see
//! [`crate::handlers::leads::store`]): `intent` before EspoCRM is touched; `record` = the `Call`
//! created; `followup` = the call-back `Task` of a missed inbound call; `done`. Everything written
//! carries the call's marker ([`marker`]); a retry that finds `intent` without `record` (a crash
//! between create and record) searches for the marker first: no second Call, no second Task.
//!
//! The optional Advoware call note (configured by `THREECX_ADVOWARE_NOTE_PATH`) goes to the
//! Beteiligter of a call matched to a `CBeteiligte` with `betnr`: `note_intent` before the `POST`,
//! `note` after it. Advoware offers no search for it, so a `POST` that got no answer (or a crash
//! around it) is never repeated: the note is recorded `uncertain` and logged, like the Beteiligte
//! create. A refused `POST` (an HTTP error answer) clears the intent and is retried.

use bitbylaw_core::ids::{BetNr, EspoId};
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionLike, ConnectionManager};
use serde_json::Value;

use super::matching::{find_person, Match};
use crate::clients::advoware::{expand, AdvowareClient, AdvowareError, Method};
use crate::clients::espocrm::{ListQuery, Where};
use crate::config::{CallNoteSettings, ThreeCxSettings};
use crate::handlers::leads::crm::LeadsCrm;
use crate::handlers::leads::engine::EngineError;
use crate::handlers::leads::store::LeadStore;
use crate::sync::telephony::{advoware_note_body, call_body, marker, task_body, CallReport, Links};

/// What a run did (ids only: safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub call_id: String,
    pub parent_type: Option<String>,
    /// A call-back task exists for this call.
    pub task: bool,
    /// The Advoware call note: `none` (off, or no Beteiligter linked to Advoware), `written`,
    /// `uncertain` (a POST without answer, never repeated), `recorded` (an earlier run's).
    pub advoware_note: &'static str,
    pub already_done: bool,
}

/// Where the optional Advoware call note goes: the client and the configured path and fields.
pub struct CallNotes {
    pub client: AdvowareClient<ConnectionManager>,
    pub settings: CallNoteSettings,
}

impl CallNotes {
    async fn post(&self, bet_nr: BetNr, body: &Value) -> Result<(), AdvowareError> {
        let n = bet_nr.to_string();
        let e = expand(&self.settings.path, &[("betnr", &n)]);
        self.client
            .send_expanded(Method::Post, &e, Some(body))
            .await
            .map(|_| ())
    }
}

pub struct Journal<'a, C> {
    pub crm: &'a dyn LeadsCrm,
    pub store: &'a LeadStore<C>,
    /// Where a matched person goes into the lookup index (none in unit tests).
    pub index: Option<ConnectionManager>,
    pub settings: &'a ThreeCxSettings,
    /// The Advoware call note; none: off.
    pub notes: Option<&'a CallNotes>,
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
                advoware_note: if steps.note { "recorded" } else { "none" },
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
        let advoware_note = match (self.notes, steps.note) {
            (Some(notes), false) => match self.betnr_of(found.chosen()).await? {
                Some(bet_nr) => self.advoware_note(notes, key, report, bet_nr, now).await?,
                None => "none",
            },
            (_, true) => "recorded",
            (None, false) => "none",
        };
        self.store.set(key, "done", "1").await?;
        Ok(Outcome {
            call_id,
            parent_type: links.parent.map(|(t, _)| t),
            task,
            advoware_note,
            already_done: false,
        })
    }

    /// The `betnr` of a call matched to a `CBeteiligte` linked to Advoware (read, not trusted
    /// from the search answer).
    async fn betnr_of(&self, chosen: Option<&Match>) -> Result<Option<BetNr>, EngineError> {
        let Some(m) = chosen.filter(|m| m.entity == "CBeteiligte") else {
            return Ok(None);
        };
        let q = ListQuery::new()
            .filter(Where::Equals("id".into(), m.id().to_owned()))
            .select(["id", "betnr"])
            .limit(1);
        Ok(self
            .crm
            .find("CBeteiligte", &q)
            .await?
            .first()
            .and_then(crate::sync::beteiligte::espo_betnr))
    }

    /// Posts the note once (module docs); its outcome label.
    async fn advoware_note(
        &self,
        notes: &CallNotes,
        key: &str,
        report: &CallReport,
        bet_nr: BetNr,
        now: DateTime<Utc>,
    ) -> Result<&'static str, EngineError> {
        if !self
            .store
            .set_once(key, "note_intent", now.timestamp_millis())
            .await?
        {
            tracing::warn!(call_key = %key, bet_nr = %bet_nr,
                "Advoware call note uncertain: an earlier attempt got no answer; not posted again");
            self.store.set(key, "note", "uncertain").await?;
            return Ok("uncertain");
        }
        let body = advoware_note_body(
            report,
            key,
            &notes.settings.text_field,
            &notes.settings.date_field,
        );
        match notes.post(bet_nr, &body).await {
            // Answered with success (an unreadable body still means written).
            Ok(()) | Err(AdvowareError::Decode { .. }) => {
                self.store.set(key, "note", "1").await?;
                Ok("written")
            }
            Err(e @ AdvowareError::Transport { .. }) => {
                tracing::warn!(call_key = %key, bet_nr = %bet_nr, error = %e,
                    "Advoware call note uncertain: no answer to the POST; not posted again");
                self.store.set(key, "note", "uncertain").await?;
                Ok("uncertain")
            }
            Err(e) => {
                // Refused: nothing was written, the retry posts again.
                self.store.clear(key, "note_intent").await?;
                if matches!(e.status(), Some(404 | 405)) {
                    crate::clients::advoware::ENDPOINT_MISMATCHES.inc();
                    return Err(EngineError::Permanent(format!(
                        "{e}; if every call note gets this, THREECX_ADVOWARE_NOTE_PATH does not fit this Advoware (README)"
                    )));
                }
                Err(e.into())
            }
        }
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
