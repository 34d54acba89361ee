//! One submission into EspoCRM, exactly once per Standard Webhooks `webhook-id`.
//!
//! # Steps (each recorded in Redis right after it happened, see [`super::store`])
//!
//! 1. `intent` — before EspoCRM is touched.
//! 2. `record` — the Lead created, or the existing Lead/Contact the inquiry was added to.
//!    Everything written carries the submission's marker ([`marker`]) in its description. A
//!    retry that finds `intent` but no `record` (a crash between the create and the record)
//!    first searches EspoCRM for the marker and adopts what it finds: no second Lead.
//! 3. `linked` — newsletter sign-ups: the record linked to the target list (idempotent).
//! 4. `followup` — inquiries: a Task for the assignee (found by marker before creating, like
//!    the Lead), or an in-app notification.
//! 5. `done`.
//!
//! An existing Lead or Contact with the same e-mail address or phone number is handled per
//! [`ExistingPolicy`]; EspoCRM's own 409 duplicate answer leads to the same decision.

use bitbylaw_core::ids::EspoId;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use serde_json::{json, Value};
use tracing::debug;

use super::crm::LeadsCrm;
use super::store::LeadStore;
use crate::clients::espocrm::{EspoCrmError, ListQuery, NewNotification, Where};
use crate::config::{ExistingPolicy, Followup, LeadsSettings};
use crate::sync::leads::{marker, new_lead, repeat_inquiry_patch, task, Lead, LeadType};

/// What a run did (no personal data: safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Lead` or `Contact`.
    pub entity: String,
    pub id: String,
    /// A new Lead was created (false: an existing record got the inquiry).
    pub created: bool,
    /// Written by an interrupted earlier attempt (found by its marker, or recorded already).
    pub adopted: bool,
    /// Every step had been recorded already: nothing was written.
    pub already_done: bool,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match (self.already_done, self.adopted, self.created) {
            (true, ..) => "already_done",
            (_, true, _) => "adopted",
            (_, _, true) => "created",
            _ => "existing_updated",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Crm(#[from] EspoCrmError),
    #[error("redis (lead state): {0}")]
    Store(#[from] redis::RedisError),
    /// The 3CX journal's optional Advoware call note.
    #[error("Advoware call note: {0}")]
    Advoware(#[from] crate::clients::advoware::AdvowareError),
    /// Retrying cannot help (missing setting, unusable EspoCRM answer).
    #[error("{0}")]
    Permanent(String),
}

impl EngineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Crm(e) => e.is_retryable(),
            Self::Store(_) => true,
            Self::Advoware(e) => e.is_retryable(),
            Self::Permanent(_) => false,
        }
    }
}

pub struct Engine<'a, C> {
    pub crm: &'a dyn LeadsCrm,
    pub store: &'a LeadStore<C>,
    pub settings: &'a LeadsSettings,
}

fn record_id(v: &Value) -> Result<EspoId, EngineError> {
    v.get("id")
        .and_then(Value::as_str)
        .and_then(|s| EspoId::new(s).ok())
        .ok_or_else(|| EngineError::Permanent("EspoCRM answer without a usable id".into()))
}

const PERSONS: [&str; 2] = ["Lead", "Contact"];

impl<C: ConnectionLike + Clone + Send + Sync> Engine<'_, C> {
    /// Writes `lead` (keyed by `key`, the `webhook-id`) into EspoCRM, resuming where an earlier
    /// attempt stopped.
    pub async fn process(
        &self,
        key: &str,
        lead: &Lead,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        if lead.lead_type == LeadType::Newsletter
            && self.settings.newsletter_target_list_id.is_none()
        {
            // Checked before anything is written: nothing half-done.
            return Err(EngineError::Permanent(
                "newsletter sign-up, but LEADS_NEWSLETTER_TARGET_LIST_ID is not set".into(),
            ));
        }
        let steps = self.store.steps(key).await?;
        let (entity, id, created, adopted) = match steps.record.clone() {
            Some((e, i)) => (
                e,
                EspoId::new(i)
                    .map_err(|e| EngineError::Permanent(format!("stored record id: {e}")))?,
                false,
                // Resumed after the record step of an earlier attempt.
                true,
            ),
            None => {
                let fresh = self.store.set_intent(key, now.timestamp_millis()).await?;
                let earlier = if fresh {
                    None
                } else {
                    self.find_marked(key).await?
                };
                let (e, rec, created, adopted) = match earlier {
                    Some((e, rec)) => (e, rec, false, true),
                    None => {
                        let (e, rec, created) = self.write_record(key, lead, now).await?;
                        (e, rec, created, false)
                    }
                };
                let id = record_id(&rec)?;
                self.store.set(key, "record", &format!("{e}:{id}")).await?;
                (e.to_owned(), id, created, adopted)
            }
        };
        if steps.done {
            return Ok(Outcome {
                entity,
                id: id.to_string(),
                created: false,
                adopted: false,
                already_done: true,
            });
        }
        if lead.lead_type == LeadType::Newsletter {
            if !steps.linked {
                let list = self
                    .settings
                    .newsletter_target_list_id
                    .as_deref()
                    .ok_or_else(|| {
                        EngineError::Permanent(
                            "newsletter sign-up, but LEADS_NEWSLETTER_TARGET_LIST_ID is not set"
                                .into(),
                        )
                    })?;
                let list = EspoId::new(list)
                    .map_err(|e| EngineError::Permanent(format!("target list id: {e}")))?;
                let link = if entity == "Contact" {
                    "contacts"
                } else {
                    "leads"
                };
                self.crm.link("TargetList", &list, link, &id).await?;
                self.store.set(key, "linked", "1").await?;
            }
        } else if !steps.followup {
            self.followup(key, lead, (&entity, &id), now).await?;
            self.store.set(key, "followup", "1").await?;
        }
        self.store.set(key, "done", "1").await?;
        Ok(Outcome {
            entity,
            id: id.to_string(),
            created,
            adopted,
            already_done: false,
        })
    }

    /// A Lead or Contact whose description carries the marker of `key`.
    async fn find_marked(&self, key: &str) -> Result<Option<(&'static str, Value)>, EngineError> {
        let m = marker(key);
        let q = ListQuery::new()
            .filter(Where::Contains("description".into(), m.clone()))
            .select(["id", "description"])
            .limit(5);
        for entity in PERSONS {
            let found = self.crm.find(entity, &q).await?;
            // `contains` is SQL LIKE in EspoCRM (`_` matches any character): check exactly.
            if let Some(rec) = found.into_iter().find(|r| {
                r.get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.contains(&m))
            }) {
                return Ok(Some((entity, rec)));
            }
        }
        Ok(None)
    }

    /// An existing Contact or Lead with the same e-mail address, else the same phone number.
    async fn find_existing(
        &self,
        lead: &Lead,
    ) -> Result<Option<(&'static str, Value)>, EngineError> {
        let mut probes = Vec::new();
        if let Some(e) = &lead.email {
            probes.push(Where::equals("emailAddress", e.clone()));
        }
        if let Some(p) = &lead.phone {
            probes.push(Where::equals("phoneNumber", p.clone()));
        }
        // E-mail before phone (more specific); a Contact (a client already) before a Lead.
        for probe in &probes {
            for entity in ["Contact", "Lead"] {
                let q = ListQuery::new()
                    .filter(probe.clone())
                    .select([
                        "id",
                        "description",
                        "emailAddress",
                        "phoneNumber",
                        "firstName",
                    ])
                    .order_by("createdAt", crate::clients::espocrm::Order::Asc)
                    .limit(1);
                if let Some(rec) = self.crm.find(entity, &q).await?.into_iter().next() {
                    return Ok(Some((entity, rec)));
                }
            }
        }
        Ok(None)
    }

    /// Creates the Lead or updates the existing record: (entity, record, created).
    async fn write_record(
        &self,
        key: &str,
        lead: &Lead,
        now: DateTime<Utc>,
    ) -> Result<(&'static str, Value, bool), EngineError> {
        let existing = self.find_existing(lead).await?;
        let assignee = self.settings.assign.get(&lead.lead_type);
        let update_existing = self.settings.existing == ExistingPolicy::Update
            || lead.lead_type == LeadType::Newsletter;
        if let (Some((entity, rec)), true) = (&existing, update_existing) {
            return Ok((
                entity,
                self.add_inquiry(entity, rec, key, lead, now).await?,
                false,
            ));
        }
        let mut body = new_lead(lead, key, assignee, now);
        if let Some((entity, rec)) = &existing {
            let text = body["description"].as_str().unwrap_or_default().to_owned();
            body["description"] = json!(format!(
                "Bereits bekannt als {entity} {}.\n{text}",
                rec["id"].as_str().unwrap_or("?")
            ));
        }
        let skip = existing.is_some();
        match self.crm.create("Lead", &body, skip).await {
            Ok(rec) => Ok(("Lead", rec, true)),
            Err(EspoCrmError::Duplicate { duplicates, .. }) => {
                debug!(
                    count = duplicates.len(),
                    "EspoCRM reports duplicates of the new lead"
                );
                let first = duplicates
                    .first()
                    .and_then(|d| EspoId::new(d.id.clone()).ok());
                match (self.settings.existing, first) {
                    (ExistingPolicy::Update, Some(dup)) => {
                        let q = ListQuery::new()
                            .filter(Where::equals("id", dup.as_str()))
                            .limit(1);
                        let rec = self
                            .crm
                            .find("Lead", &q)
                            .await?
                            .into_iter()
                            .next()
                            .unwrap_or_else(|| json!({"id": dup.as_str()}));
                        Ok((
                            "Lead",
                            self.add_inquiry("Lead", &rec, key, lead, now).await?,
                            false,
                        ))
                    }
                    _ => Ok(("Lead", self.crm.create("Lead", &body, true).await?, true)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn add_inquiry(
        &self,
        entity: &str,
        rec: &Value,
        key: &str,
        lead: &Lead,
        now: DateTime<Utc>,
    ) -> Result<Value, EngineError> {
        let id = record_id(rec)?;
        let patch = repeat_inquiry_patch(rec, lead, key, now);
        Ok(self.crm.update(entity, &id, &patch).await?)
    }

    async fn followup(
        &self,
        key: &str,
        lead: &Lead,
        parent: (&str, &EspoId),
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let Some(user) = self
            .settings
            .assign
            .get(&lead.lead_type)
            .and_then(|a| a.user_id.clone())
        else {
            return Ok(());
        };
        match self.settings.followup {
            Followup::None => Ok(()),
            Followup::Task => {
                let m = marker(key);
                let q = ListQuery::new()
                    .filter(Where::equals("parentId", parent.1.as_str()))
                    .filter(Where::Contains("description".into(), m.clone()))
                    .select(["id", "description"])
                    .limit(5);
                let exists = self.crm.find("Task", &q).await?.iter().any(|t| {
                    t.get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.contains(&m))
                });
                if !exists {
                    let due =
                        now + chrono::Duration::hours(i64::from(self.settings.task_due_hours));
                    let body = task(lead, key, (parent.0, parent.1.as_str()), &user, due);
                    self.crm.create("Task", &body, false).await?;
                }
                Ok(())
            }
            Followup::Notification => {
                let n = NewNotification {
                    kind: "Message".into(),
                    message: format!("Neue {} über vermieterhelden.de", lead.lead_type.label()),
                    user_id: user,
                    related_type: Some(parent.0.to_owned()),
                    related_id: Some(parent.1.to_string()),
                    data: None,
                };
                Ok(self.crm.notify(&n).await?)
            }
        }
    }
}
