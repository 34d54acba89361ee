//! One run for one `CBankverbindungen`, under its Beteiligter's entity lock (the caller takes it).
//!
//! # Order of a run
//!
//! 1. Read the record from EspoCRM (never the event payload) and check IBAN and BIC. Invalid →
//!    `failed` with the reason (IBAN masked), and **no request to Advoware**.
//! 2. Read the linked Beteiligter's `betnr`. None yet → `pending_sync` with a note, the id in
//!    the Beteiligter's waiting set, and a retryable error: the queue retries, and the
//!    Beteiligte sync re-queues the record once it has created the Beteiligter
//!    ([`requeue_waiting`](super::requeue_waiting)), even after the retries are used up.
//! 3. List the Beteiligter's entries in Advoware (one `GET`) and act:
//!    - not linked: adopt the entry with the same IBAN if there is one, else `POST` (create);
//!    - linked: compare 3-way against the hash of the last sync and write only what changed.
//! 4. Write back to EspoCRM (`advowareKontoId`, `syncStatus`, `advowareLastSync`), once, and only
//!    when something changed — our own write-back's webhook then finds nothing to do.
//!
//! # Create exactly once
//!
//! An intent (`creating`) goes to Redis before the `POST`; Advoware's id (`created`) right after
//! it, before the write-back. A retry after a failed write-back resumes with `created`; a retry
//! after a lost answer finds the entry in the list by its IBAN and adopts it. Either way there
//! is no second `POST`.

use bitbylaw_core::ids::{BetNr, EspoId};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::sides::{BankAdvoware, BankEspo, Deleted, SideError, System};
use super::store::{BankStore, Link};
use crate::clients::espocrm::NewNotification;
use crate::sync::bankverbindungen::{
    advoware_id, advoware_to_data, content_hash, decide, espo_fields, espo_to_data, find_by_iban,
    find_by_id, mask_ibans, to_advoware, to_espo_patch, BankData, Decision, EspoBankverbindung,
    FieldNames, KontoId,
};
use crate::sync::beteiligte::SyncStatus;

/// Knobs of a run.
#[derive(Debug, Clone, Default)]
pub struct BankSettings {
    pub fields: FieldNames,
    /// EspoCRM user who gets the in-app notifications (the Beteiligte setting); `None` = log only.
    pub notify_user_id: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `POST`ed to Advoware and written back.
    Created(KontoId),
    /// An Advoware entry with the same IBAN existed (a lost answer, or typed by a person): linked.
    Adopted(KontoId),
    /// EspoCRM's content written to Advoware (`conflict`: Advoware had changed too).
    WroteAdvoware { conflict: bool },
    /// Advoware's content written to EspoCRM.
    WroteEspocrm,
    /// Equal; `bookkeeping` if the sync fields had to be brought up to date.
    NoChange { bookkeeping: bool },
    /// The linked entry is gone in Advoware: `deleted_in_advoware`, not re-created.
    DeletedInAdvoware,
    /// IBAN/BIC invalid or the record unusable: `failed` with the reason, nothing sent.
    InvalidData(String),
    /// Nothing to do (gone in EspoCRM, already failed with this reason, …).
    Skipped(&'static str),
    /// Delete: removed in Advoware (or it was gone already).
    Deleted,
    /// Delete: Advoware answered 403; a person was notified.
    DeleteRefused,
    /// Delete: the record was never linked to Advoware.
    NotLinked,
}

impl Outcome {
    /// Metric/log label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Created(_) => "created",
            Self::Adopted(_) => "adopted",
            Self::WroteAdvoware { .. } => "wrote_advoware",
            Self::WroteEspocrm => "wrote_espocrm",
            Self::NoChange { .. } => "no_change",
            Self::DeletedInAdvoware => "deleted_in_advoware",
            Self::InvalidData(_) => "invalid_data",
            Self::Skipped(_) => "skipped",
            Self::Deleted => "deleted",
            Self::DeleteRefused => "delete_refused",
            Self::NotLinked => "not_linked",
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Side(#[from] SideError),
    #[error("redis (Bankverbindungen sync state): {0}")]
    Store(#[from] redis::RedisError),
    /// The Beteiligter has no `betnr` yet: wait for the Beteiligte sync (retryable).
    #[error("Beteiligter {0} has no betnr yet (not created in Advoware); waiting")]
    NoBetnr(EspoId),
}

impl EngineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Side(e) => e.is_retryable(),
            Self::Store(_) | Self::NoBetnr(_) => true,
        }
    }
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Side(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Both sides, the Redis store and the settings.
pub struct Engine<'a, C> {
    pub espo: &'a dyn BankEspo,
    pub advoware: &'a dyn BankAdvoware,
    pub store: &'a BankStore<C>,
    pub settings: &'a BankSettings,
}

fn espo_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The write-back after a successful run: linked, `clean`, error cleared.
fn clean(konto: &KontoId, now: DateTime<Utc>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(espo_fields::ADVOWARE_KONTO_ID.into(), konto.to_json());
    m.insert(
        espo_fields::SYNC_STATUS.into(),
        json!(SyncStatus::Clean.as_str()),
    );
    m.insert(espo_fields::SYNC_ERROR_MESSAGE.into(), Value::Null);
    m.insert(
        espo_fields::ADVOWARE_LAST_SYNC.into(),
        json!(espo_time(now)),
    );
    m
}

fn no_id(what: &str) -> EngineError {
    EngineError::Side(SideError::Unanswered {
        system: System::Advoware,
        message: format!("{what}: the Bankverbindung answer carries no id"),
    })
}

impl<C: ConnectionLike + Clone + Send + Sync> Engine<'_, C> {
    /// `vmh.bankverbindungen.create|update`: syncs record `id`. On an error the record is marked
    /// `failed` (best effort) and the error returned for the queue's retry policy.
    pub async fn sync(&self, id: &EspoId, now: DateTime<Utc>) -> Result<Outcome, EngineError> {
        let Some(rec) = self.espo.get_bank(id).await? else {
            return Ok(Outcome::Skipped("gone in EspoCRM"));
        };
        if rec.status() == Some(SyncStatus::DeletedInAdvoware) && rec.konto_id().is_some() {
            return Ok(Outcome::Skipped("deleted in Advoware"));
        }
        match self.run(id, &rec, now).await {
            Ok(o) => Ok(o),
            Err(EngineError::NoBetnr(b)) => {
                // The Beteiligte sync re-queues this record once it has written the betnr.
                self.store.add_waiting(&b, id).await?;
                self.mark(
                    id,
                    &rec,
                    SyncStatus::PendingSync,
                    "Wartet auf die Anlage des Beteiligten in Advoware (betnr fehlt)",
                )
                .await;
                Err(EngineError::NoBetnr(b))
            }
            Err(e) => {
                self.mark(id, &rec, SyncStatus::Failed, &e.to_string())
                    .await;
                Err(e)
            }
        }
    }

    async fn run(
        &self,
        id: &EspoId,
        rec: &EspoBankverbindung,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let fields = &self.settings.fields;
        let data = match espo_to_data(rec, fields) {
            Ok(d) => d,
            Err(e) => return Ok(self.invalid(id, rec, e.to_string()).await),
        };
        let Some(beteiligte) = rec
            .beteiligte_id
            .as_deref()
            .and_then(|b| EspoId::new(b).ok())
        else {
            return Ok(self
                .invalid(id, rec, "Nicht mit einem Beteiligten verknüpft".into())
                .await);
        };
        let bet_nr = match self.espo.betnr(&beteiligte).await? {
            None => {
                return Ok(self
                    .invalid(
                        id,
                        rec,
                        format!("Beteiligter {beteiligte} existiert nicht in EspoCRM"),
                    )
                    .await)
            }
            Some(None) => return Err(EngineError::NoBetnr(beteiligte)),
            Some(Some(b)) => b,
        };
        let link = self.store.link(id).await?;
        let Some(list) = self.advoware.list(bet_nr).await? else {
            return Ok(self
                .invalid(
                    id,
                    rec,
                    format!("Beteiligter {bet_nr} existiert in Advoware nicht"),
                )
                .await);
        };
        let linked = rec.konto_id().or_else(|| link.created.clone());
        match linked {
            None => {
                self.create(id, rec, &data, &beteiligte, bet_nr, &list, now)
                    .await
            }
            Some(konto) => match find_by_id(&list, &konto, fields) {
                Some(current) => {
                    self.update(
                        id,
                        rec,
                        &data,
                        &beteiligte,
                        bet_nr,
                        &konto,
                        current,
                        &link,
                        now,
                    )
                    .await
                }
                None => {
                    let message = format!(
                        "Bankverbindung {konto} von Beteiligtem {bet_nr} existiert in Advoware nicht mehr; nicht neu angelegt (advowareKontoId leeren, um sie neu anzulegen)"
                    );
                    self.mark(id, rec, SyncStatus::DeletedInAdvoware, &message)
                        .await;
                    self.notify(id, &message).await;
                    Ok(Outcome::DeletedInAdvoware)
                }
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        id: &EspoId,
        rec: &EspoBankverbindung,
        data: &BankData,
        beteiligte: &EspoId,
        bet_nr: BetNr,
        list: &[Value],
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let fields = &self.settings.fields;
        if let Some(existing) = find_by_iban(list, &data.iban, fields) {
            let konto = advoware_id(existing, fields).ok_or_else(|| no_id("list"))?;
            if advoware_to_data(existing, fields).as_ref() != Ok(data) {
                self.advoware
                    .update(bet_nr, &konto, &to_advoware(Some(existing), data, fields))
                    .await?;
            }
            self.write_back(id, rec, clean(&konto, now)).await?;
            self.store
                .synced(id, beteiligte, bet_nr, &konto, &content_hash(data))
                .await?;
            info!(espo_id = %id, bet_nr = bet_nr.get(), konto = %konto, "Bankverbindung adopted");
            // Personal data only at debug, and only masked.
            debug!(espo_id = %id, iban_masked = %data.iban.masked(), "Bankverbindung adopted");
            return Ok(Outcome::Adopted(konto));
        }
        self.store
            .set_creating(id, beteiligte, bet_nr, &espo_time(now))
            .await?;
        let answer = match self
            .advoware
            .create(bet_nr, &to_advoware(None, data, fields))
            .await
        {
            Ok(v) => v,
            Err(e) => {
                if !e.may_have_written() {
                    self.store.clear_creating(id).await?;
                }
                return Err(e.into());
            }
        };
        let konto = match advoware_id(&answer, fields) {
            Some(k) => k,
            // No id in the answer: find the entry just created by its IBAN.
            None => {
                let after = self.advoware.list(bet_nr).await?.unwrap_or_default();
                find_by_iban(&after, &data.iban, fields)
                    .and_then(|v| advoware_id(v, fields))
                    .ok_or_else(|| no_id("create"))?
            }
        };
        self.store.set_created(id, &konto).await?;
        info!(espo_id = %id, bet_nr = bet_nr.get(), konto = %konto, "Bankverbindung created in Advoware");
        // Personal data only at debug, and only masked.
        debug!(espo_id = %id, iban_masked = %data.iban.masked(), "Bankverbindung created in Advoware");
        self.write_back(id, rec, clean(&konto, now)).await?;
        self.store
            .synced(id, beteiligte, bet_nr, &konto, &content_hash(data))
            .await?;
        Ok(Outcome::Created(konto))
    }

    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        id: &EspoId,
        rec: &EspoBankverbindung,
        data: &BankData,
        beteiligte: &EspoId,
        bet_nr: BetNr,
        konto: &KontoId,
        current: &Value,
        link: &Link,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let fields = &self.settings.fields;
        // A broken IBAN typed in Advoware is overwritten by EspoCRM's valid one.
        let decision = match advoware_to_data(current, fields) {
            Ok(adv) => (decide(data, &adv, link.hash.as_deref()), Some(adv)),
            Err(_) => (Decision::WriteAdvoware { conflict: false }, None),
        };
        match decision {
            (Decision::NoChange, _) => {
                let hash = content_hash(data);
                let current_bookkeeping = rec.status() == Some(SyncStatus::Clean)
                    && rec.konto_id().as_ref() == Some(konto)
                    && link.konto.as_ref() == Some(konto)
                    && link.hash.as_deref() == Some(hash.as_str());
                if current_bookkeeping {
                    return Ok(Outcome::NoChange { bookkeeping: false });
                }
                self.write_back(id, rec, clean(konto, now)).await?;
                self.store
                    .synced(id, beteiligte, bet_nr, konto, &hash)
                    .await?;
                Ok(Outcome::NoChange { bookkeeping: true })
            }
            (Decision::WriteAdvoware { conflict }, _) => {
                self.advoware
                    .update(bet_nr, konto, &to_advoware(Some(current), data, fields))
                    .await?;
                self.write_back(id, rec, clean(konto, now)).await?;
                self.store
                    .synced(id, beteiligte, bet_nr, konto, &content_hash(data))
                    .await?;
                if conflict {
                    self.notify(
                        id,
                        &format!("Bankverbindung {} in EspoCRM und Advoware geändert; EspoCRM hat Vorrang erhalten.", data.iban),
                    )
                    .await;
                }
                Ok(Outcome::WroteAdvoware { conflict })
            }
            (Decision::WriteEspocrm, adv) => {
                let Some(adv) = adv else {
                    return Ok(Outcome::Skipped("unreachable: no Advoware data"));
                };
                let mut patch = to_espo_patch(&adv);
                patch.extend(clean(konto, now));
                self.write_back(id, rec, patch).await?;
                self.store
                    .synced(id, beteiligte, bet_nr, konto, &content_hash(&adv))
                    .await?;
                Ok(Outcome::WroteEspocrm)
            }
        }
    }

    /// `vmh.bankverbindungen.delete`: the record is gone in EspoCRM (checked, never trusted);
    /// the linked Advoware entry is deleted. A 403 becomes a notification for a person.
    pub async fn delete(&self, id: &EspoId, link: &Link) -> Result<Outcome, EngineError> {
        if self.espo.get_bank(id).await?.is_some() {
            return Ok(Outcome::Skipped("the record exists in EspoCRM"));
        }
        let (Some(bet_nr), Some(konto)) = (link.bet_nr, link.advoware_id().cloned()) else {
            self.store.forget(id).await?;
            return Ok(Outcome::NotLinked);
        };
        let outcome = match self.advoware.delete(bet_nr, &konto).await? {
            Deleted::Deleted | Deleted::AlreadyGone => Outcome::Deleted,
            Deleted::Refused => {
                self.notify(
                    id,
                    &format!("Bankverbindung {konto} von Beteiligtem {bet_nr} wurde in EspoCRM gelöscht; Advoware erlaubt das Löschen über die API nicht (403). Bitte in Advoware manuell löschen."),
                )
                .await;
                Outcome::DeleteRefused
            }
        };
        self.store.forget(id).await?;
        Ok(outcome)
    }

    async fn write_back(
        &self,
        id: &EspoId,
        _rec: &EspoBankverbindung,
        patch: serde_json::Map<String, Value>,
    ) -> Result<(), EngineError> {
        self.espo.update_bank(id, &Value::Object(patch)).await?;
        Ok(())
    }

    /// Invalid data: `failed` with the reason; nothing is sent to Advoware.
    async fn invalid(&self, id: &EspoId, rec: &EspoBankverbindung, message: String) -> Outcome {
        let message = mask_ibans(&message);
        if rec.status() == Some(SyncStatus::Failed)
            && rec.sync_error_message.as_deref() == Some(message.as_str())
        {
            // Already said so: this is the webhook of our own failure write.
            return Outcome::Skipped("already failed with this reason");
        }
        self.mark(id, rec, SyncStatus::Failed, &message).await;
        Outcome::InvalidData(message)
    }

    /// Writes `status` and `message` (masked) unless the record says exactly that already (a
    /// repeated write would only cause another webhook).
    async fn mark(&self, id: &EspoId, rec: &EspoBankverbindung, status: SyncStatus, message: &str) {
        let message: String = mask_ibans(message).chars().take(500).collect();
        if rec.status() == Some(status) && rec.sync_error_message.as_deref() == Some(&message) {
            return;
        }
        let patch = json!({
            espo_fields::SYNC_STATUS: status.as_str(),
            espo_fields::SYNC_ERROR_MESSAGE: message,
        });
        if let Err(e) = self.espo.update_bank(id, &patch).await {
            warn!(espo_id = %id, error = %e, "could not record the status in EspoCRM");
        }
    }

    /// In-app notification; a failure is logged, never fails the sync.
    async fn notify(&self, id: &EspoId, message: &str) {
        let message = mask_ibans(message);
        info!(espo_id = %id, message = %message, "Bankverbindungen sync notification");
        let Some(user_id) = &self.settings.notify_user_id else {
            return;
        };
        let n = NewNotification {
            kind: "Message".into(),
            message,
            user_id: user_id.clone(),
            related_type: Some(espo_fields::ENTITY.into()),
            related_id: Some(id.to_string()),
            data: None,
        };
        if let Err(e) = self.espo.notify(&n).await {
            warn!(espo_id = %id, error = %e, "notification failed");
        }
    }
}
