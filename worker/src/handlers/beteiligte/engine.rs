//! One sync run for one `CBeteiligte`: fetch both sides (never trust the event), decide, write,
//! record. The caller (the `vmh.beteiligte.*` handler, not registered yet) holds the entity lock.
//!
//! # Writes only when something changed
//!
//! Every EspoCRM write makes EspoCRM send an update webhook, which queues another run for the
//! same record. That run must end with no write at all, or the two would chase each other
//! forever. So a run decides *before* it writes anything: equal content with current
//! bookkeeping (`clean`, same `rowId`, stored hash) is zero writes on both sides; `syncing` is
//! written only when there is work to do; the final status write sets everything at once.
//!
//! # Create exactly once
//!
//! A record without `betnr` is created in Advoware; the returned `betNr` goes to Redis
//! ([`BeteiligteStore::set_created`]) right after the `POST`, before the write-back to EspoCRM.
//! A run after a failed write-back finds it and resumes (adopts that Beteiligter) instead of
//! creating a second one. The same run then reads the record again and syncs its Kommunikation
//! and Adressen, so a new party arrives in Advoware complete.
//!
//! The `POST` itself is bracketed by an intent ([`BeteiligteStore::set_creating`]) written
//! before it and replaced by the `betNr` after it. Advoware has no documented search, so a record
//! whose answer never arrived (timeout, connection lost, worker killed between answer and Redis)
//! cannot be found again; a later run that finds the intent without a `betNr` does not `POST`
//! again but marks the record `failed` ("create uncertain") and notifies: a person checks
//! Advoware and either writes the `betnr` into EspoCRM or runs `beteiligte reset`. An HTTP error
//! answer (Advoware refused) clears the intent, so ordinary failures retry on their own.
//!
//! # A status write is not a new change
//!
//! Writing `failed` makes EspoCRM send an update webhook, too. Run at once, that job would fail
//! again and count up to `permanently_failed` within seconds, bypassing the queue's back-off.
//! Likewise the 15-minute check refreshes `advowareLastSync` of unchanged records (or it would
//! pick the same oldest ones every time), and each refresh would cost a second run with an
//! Advoware `GET`. So the `modifiedAt` such a status-only write produced is kept in Redis, and a
//! webhook run ([`Engine::sync_webhook`]) of a `failed` or `clean` record still carrying it is
//! skipped; the handler uses it only for first-attempt webhook events that changed nothing but
//! sync fields. The queue's retry and the check run ([`Engine::sync_one`],
//! [`Engine::sync_checked`]) always run.

use std::time::Duration;

use bitbylaw_core::ids::{BetNr, EspoId};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use serde_json::Value;
use tracing::warn;

use super::sides::{AdvowareSide, EspoSide, SideError};
use super::store::BeteiligteStore;
use crate::clients::espocrm::NewNotification;
use crate::sync::beteiligte::model::espo_fields;
use crate::sync::beteiligte::{
    advoware_to_stammdaten, content_hash, decide, espo_to_stammdaten, parse_espo_datetime, plan,
    to_advoware, to_espo_patch, Action, ConflictPolicy, DecisionInput, EspoBeteiligte, Stammdaten,
    StatusUpdate, SyncDecision, SyncStatus,
};

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub conflict_policy: ConflictPolicy,
    /// Region of national phone numbers when Kommunikation values are compared.
    pub default_region: crate::sync::contact::Region,
    /// Failures until `permanently_failed` (seeds: 5).
    pub max_retries: u32,
    /// How much later than `advowareLastSync` our own write may have set `modifiedAt`.
    pub modified_tolerance: chrono::Duration,
    /// EspoCRM user who gets the in-app notifications; `None` = log only.
    pub notify_user_id: Option<String>,
}

impl EngineSettings {
    /// The engine's view of the configured `[beteiligte]` settings.
    pub fn from_config(b: &crate::config::BeteiligteSettings) -> Self {
        Self {
            conflict_policy: b.conflict_policy,
            default_region: b.default_region,
            max_retries: b.max_retries,
            notify_user_id: b.notify_user_id.clone(),
            ..Self::default()
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            conflict_policy: ConflictPolicy::EspocrmWins,
            default_region: crate::sync::contact::Region::DE,
            max_retries: 5,
            modified_tolerance: chrono::Duration::seconds(5),
            notify_user_id: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Created in Advoware (or an earlier create adopted) and written back.
    Created(BetNr),
    /// EspoCRM's content written to Advoware; `conflict` names the fields if both had changed.
    WroteAdvoware { conflict: Option<Vec<&'static str>> },
    /// Advoware's content written to EspoCRM.
    WroteEspocrm { conflict: Option<Vec<&'static str>> },
    /// Equal content; `bookkeeping` if the sync fields had to be brought up to date.
    NoChange { bookkeeping: bool },
    /// Policy `manual`: both sides left as they are, `conflict` set.
    ConflictLeft(Vec<&'static str>),
    /// Advoware answered 404: `deleted_in_advoware`, never re-created automatically.
    DeletedInAdvoware,
    /// Nothing to do for this record (gone in EspoCRM, deleted in Advoware, permanently failed).
    Skipped(&'static str),
    /// A side's data cannot be mapped (missing name, bad date): `failed` with the reason.
    InvalidData(String),
    /// An earlier `POST` got no answer: it may have created a record we cannot find. `failed`,
    /// notified, never posted again until a person resolves it.
    CreateUncertain,
    /// Master data equal; Kommunikation and/or Adressen written (issue 12).
    WroteDetails,
}

impl Outcome {
    /// Metric/log label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Created(_) => "created",
            Self::WroteAdvoware { .. } => "espocrm_newer",
            Self::WroteEspocrm { .. } => "advoware_newer",
            Self::NoChange { .. } => "no_change",
            Self::ConflictLeft(_) => "conflict",
            Self::DeletedInAdvoware => "deleted_in_advoware",
            Self::Skipped(_) => "skipped",
            Self::InvalidData(_) => "invalid_data",
            Self::CreateUncertain => "create_uncertain",
            Self::WroteDetails => "details",
        }
    }
}

/// Why a run failed; the record's status is `failed` (or `permanently_failed`) already.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Side(#[from] SideError),
    #[error("redis (Beteiligte sync state): {0}")]
    Store(#[from] redis::RedisError),
}

impl EngineError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Side(e) => e.is_retryable(),
            Self::Store(_) => true,
        }
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Side(e) => e.retry_after(),
            Self::Store(_) => None,
        }
    }
}

/// Why a run happens; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Manual,
    Webhook,
    Check,
}

/// Both sides, the Redis record store and the settings.
pub struct Engine<'a, C> {
    pub espo: &'a dyn EspoSide,
    pub advoware: &'a dyn AdvowareSide,
    pub store: &'a BeteiligteStore<C>,
    pub settings: &'a EngineSettings,
}

fn json(v: impl serde::Serialize) -> Value {
    // Plain structs of strings and numbers always serialise.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl<C: ConnectionLike + Clone + Send + Sync> Engine<'_, C> {
    /// Syncs one record. On an error the record is marked `failed` (best effort) and the error
    /// returned for the queue's retry policy.
    pub async fn sync_one(&self, id: &EspoId, now: DateTime<Utc>) -> Result<Outcome, EngineError> {
        self.sync(id, now, Mode::Manual).await
    }

    /// [`Engine::sync_one`] for a fresh webhook event that changed only sync fields: a `failed`
    /// or `clean` record unchanged since our own status write is skipped (module docs).
    pub async fn sync_webhook(
        &self,
        id: &EspoId,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        self.sync(id, now, Mode::Webhook).await
    }

    /// [`Engine::sync_one`] for the 15-minute check: an unchanged record gets its
    /// `advowareLastSync` refreshed, so the next check moves on to others.
    pub async fn sync_checked(
        &self,
        id: &EspoId,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        self.sync(id, now, Mode::Check).await
    }

    async fn sync(
        &self,
        id: &EspoId,
        now: DateTime<Utc>,
        mode: Mode,
    ) -> Result<Outcome, EngineError> {
        let Some(espo) = self.espo.get(id).await? else {
            return Ok(Outcome::Skipped("gone in EspoCRM"));
        };
        match espo.sync_status {
            Some(SyncStatus::DeletedInAdvoware) => {
                return Ok(Outcome::Skipped("deleted in Advoware"))
            }
            Some(SyncStatus::PermanentlyFailed) => {
                return Ok(Outcome::Skipped("permanently failed"))
            }
            _ => {}
        }
        let echo_candidate = mode == Mode::Webhook
            && matches!(
                espo.sync_status,
                Some(SyncStatus::Failed | SyncStatus::Clean)
            )
            && espo.modified_at.is_some();
        if echo_candidate && self.store.echo(id).await? == espo.modified_at {
            return Ok(Outcome::Skipped("echo of our own status write"));
        }
        match self.run(id, &espo, now, mode).await {
            Ok(Outcome::Created(bet_nr)) => self.details_after_create(id, bet_nr, now).await,
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                self.mark_failed(id, &espo, &e.to_string()).await;
                Err(e)
            }
        }
    }

    async fn run(
        &self,
        id: &EspoId,
        espo: &EspoBeteiligte,
        now: DateTime<Utc>,
        mode: Mode,
    ) -> Result<Outcome, EngineError> {
        let data = match espo_to_stammdaten(espo) {
            Ok(d) => d,
            Err(e) => return Ok(self.invalid(id, espo, format!("EspoCRM: {e}")).await),
        };
        let Some(bet_nr) = espo.betnr else {
            return self.create(id, espo, &data, now).await;
        };
        let Some(current) = self.advoware.get(bet_nr).await? else {
            self.espo
                .update(id, &json(StatusUpdate::deleted_in_advoware(now)))
                .await?;
            self.notify(
                id,
                &format!("Beteiligter {bet_nr} existiert in Advoware nicht mehr; die Verknüpfung bleibt bestehen, nichts wurde neu angelegt."),
            )
            .await;
            return Ok(Outcome::DeletedInAdvoware);
        };
        let adv = match advoware_to_stammdaten(&current) {
            Ok(a) => a,
            Err(e) => {
                return Ok(self
                    .invalid(id, espo, format!("Advoware {bet_nr}: {e}"))
                    .await)
            }
        };
        let base = self.store.hash(id).await?;
        let decision = decide(&DecisionInput {
            espo: &data,
            advoware: &adv,
            last_synced_hash: base.as_deref(),
            espo_modified_at: parse_espo_datetime(espo.modified_at.as_deref()),
            last_sync: parse_espo_datetime(espo.advoware_last_sync.as_deref()),
            modified_tolerance: self.settings.modified_tolerance,
            stored_row_id: espo.advoware_row_id.as_deref(),
            advoware_row_id: current.row_id.as_deref(),
        });
        let conflict = match &decision {
            SyncDecision::Conflict { fields } => Some(fields.clone()),
            _ => None,
        };
        let row_id = current.row_id.clone().unwrap_or_default();
        // Kommunikation and Adressen (issue 12): diffed now, written with the master data.
        let mut details = self.details_prepare(id, espo, &current).await?;
        let manual = details.manual(&super::details::display_name(espo));
        match plan(&decision, self.settings.conflict_policy) {
            Action::Nothing => {
                let hash = content_hash(&data);
                let want = final_status(&row_id, now, &manual);
                let shown = espo.sync_error_message.as_deref().filter(|m| !m.is_empty());
                let current_bookkeeping = espo.sync_status == want.sync_status
                    && shown == want.sync_error_message.clone().flatten().as_deref()
                    && espo.advoware_row_id.as_deref() == Some(row_id.as_str())
                    && base.as_deref() == Some(hash.as_str());
                if details.is_empty() && current_bookkeeping && mode != Mode::Check {
                    // Redis only: the bases may be new (first run after an upgrade).
                    self.details_finish(id, espo, &details).await?;
                    return Ok(Outcome::NoChange { bookkeeping: false });
                }
                self.details_write(id, bet_nr, &mut details).await?;
                let row_id = self.row_id_after(bet_nr, &details, row_id).await?;
                let mut patch = json(final_status(&row_id, now, &manual));
                if let Some(arrays) = details.espo_patch() {
                    merge(&mut patch, arrays);
                }
                let after = self.espo.update(id, &patch).await?;
                self.store.synced(id, bet_nr, &hash).await?;
                self.details_finish(id, espo, &details).await?;
                if !details.is_empty() {
                    return Ok(Outcome::WroteDetails);
                }
                if let Some(m) = after.modified_at.as_deref() {
                    self.store.set_echo(id, m).await?;
                }
                Ok(Outcome::NoChange { bookkeeping: true })
            }
            Action::WriteAdvoware => {
                self.espo.update(id, &json(StatusUpdate::syncing())).await?;
                let stored = self
                    .advoware
                    .replace(bet_nr, &to_advoware(Some(&current), &data))
                    .await?;
                self.details_write(id, bet_nr, &mut details).await?;
                let row_id = self
                    .row_id_after(bet_nr, &details, stored.row_id.unwrap_or_default())
                    .await?;
                let mut patch = json(final_status(&row_id, now, &manual));
                if let Some(arrays) = details.espo_patch() {
                    merge(&mut patch, arrays);
                }
                self.espo.update(id, &patch).await?;
                self.store.synced(id, bet_nr, &content_hash(&data)).await?;
                self.details_finish(id, espo, &details).await?;
                if let Some(fields) = &conflict {
                    self.notify_conflict(id, fields, "EspoCRM").await;
                }
                Ok(Outcome::WroteAdvoware { conflict })
            }
            Action::WriteEspocrm => {
                self.details_write(id, bet_nr, &mut details).await?;
                let row_id = self.row_id_after(bet_nr, &details, row_id).await?;
                // One write: master data, status and the Kommunikation arrays together.
                let mut patch = json(to_espo_patch(&adv));
                merge(&mut patch, json(final_status(&row_id, now, &manual)));
                if let Some(arrays) = details.espo_patch() {
                    merge(&mut patch, arrays);
                }
                self.espo.update(id, &patch).await?;
                self.store.synced(id, bet_nr, &content_hash(&adv)).await?;
                self.details_finish(id, espo, &details).await?;
                if let Some(fields) = &conflict {
                    self.notify_conflict(id, fields, "Advoware").await;
                }
                Ok(Outcome::WroteEspocrm { conflict })
            }
            Action::LeaveConflict => {
                let fields = conflict.unwrap_or_default();
                self.details_write(id, bet_nr, &mut details).await?;
                let arrays = details.espo_patch();
                let already = espo.sync_status == Some(SyncStatus::Conflict);
                if already && arrays.is_none() {
                    // Already marked and notified; writing again would echo forever.
                    self.details_finish(id, espo, &details).await?;
                    return Ok(Outcome::ConflictLeft(fields));
                }
                let mut patch = json(StatusUpdate::conflict(&fields));
                if let Some(arrays) = arrays {
                    merge(&mut patch, arrays);
                }
                self.espo.update(id, &patch).await?;
                self.details_finish(id, espo, &details).await?;
                if !already {
                    self.notify(
                        id,
                        &format!(
                            "Konflikt: in EspoCRM und Advoware geändert ({}); bitte manuell abgleichen.",
                            fields.join(", ")
                        ),
                    )
                    .await;
                }
                Ok(Outcome::ConflictLeft(fields))
            }
        }
    }

    /// A new Beteiligter's Kommunikation and Adressen, in the run that created it: the record is
    /// read again (it now carries `betnr`) and synced like any linked one. A failure here is
    /// retried by the queue and finds the create done, so only the details are left to do.
    async fn details_after_create(
        &self,
        id: &EspoId,
        bet_nr: BetNr,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let Some(espo) = self.espo.get(id).await? else {
            return Ok(Outcome::Created(bet_nr));
        };
        if espo.betnr != Some(bet_nr) {
            // Changed meanwhile (a person relinked it): the next event syncs what is there now.
            return Ok(Outcome::Created(bet_nr));
        }
        // `Manual`: bookkeeping that is already current is not written again.
        match self.run(id, &espo, now, Mode::Manual).await {
            Ok(_) => Ok(Outcome::Created(bet_nr)),
            Err(e) => {
                self.mark_failed(id, &espo, &e.to_string()).await;
                Err(e)
            }
        }
    }

    /// Advoware's `rowId` after our writes: Kommunikation and Adressen writes change it too
    /// (assumption, see README), so it is read again only when they happened.
    async fn row_id_after(
        &self,
        bet_nr: BetNr,
        details: &super::details::Details,
        row_id: String,
    ) -> Result<String, EngineError> {
        if !details.wrote_advoware {
            return Ok(row_id);
        }
        Ok(self
            .advoware
            .get(bet_nr)
            .await?
            .and_then(|b| b.row_id)
            .unwrap_or(row_id))
    }

    async fn create(
        &self,
        id: &EspoId,
        espo: &EspoBeteiligte,
        data: &Stammdaten,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let adopted = match self.store.created(id).await? {
            Some(bet_nr) => self.advoware.get(bet_nr).await?.map(|rec| (bet_nr, rec)),
            None => None,
        };
        let (bet_nr, row_id) = match adopted {
            Some((bet_nr, rec)) => {
                // Created by an earlier attempt whose write-back failed: bring it up to date
                // with the current EspoCRM content if that changed meanwhile.
                let same = advoware_to_stammdaten(&rec).as_ref() == Ok(data);
                let row_id = if same {
                    rec.row_id.clone()
                } else {
                    self.advoware
                        .replace(bet_nr, &to_advoware(Some(&rec), data))
                        .await?
                        .row_id
                };
                (bet_nr, row_id)
            }
            None => {
                if let Some(since) = self.store.creating(id).await? {
                    return Ok(self.create_uncertain(id, espo, &since).await);
                }
                if espo.sync_status != Some(SyncStatus::Syncing) {
                    self.espo.update(id, &json(StatusUpdate::syncing())).await?;
                }
                self.store
                    .set_creating(id, &now.format("%Y-%m-%d %H:%M:%S").to_string())
                    .await?;
                let created = match self.advoware.create(&to_advoware(None, data)).await {
                    Ok(c) => c,
                    Err(e) => {
                        if !e.may_have_written() {
                            // Advoware refused (or was never reached): nothing was created.
                            self.store.clear_creating(id).await?;
                        }
                        return Err(e.into());
                    }
                };
                let Some(bet_nr) = created.bet_nr else {
                    // The side guarantees a betNr; keep the type honest anyway.
                    return Err(EngineError::Side(SideError::Failed {
                        system: super::sides::System::Advoware,
                        message: "create answer carries no betNr".into(),
                        retryable: true,
                        retry_after: None,
                        status: None,
                    }));
                };
                self.store.set_created(id, bet_nr).await?;
                (bet_nr, created.row_id)
            }
        };
        let mut patch = json(StatusUpdate::clean(&row_id.unwrap_or_default(), now));
        merge(
            &mut patch,
            serde_json::json!({ espo_fields::BETNR: bet_nr.get() }),
        );
        self.espo.update(id, &patch).await?;
        self.store.synced(id, bet_nr, &content_hash(data)).await?;
        Ok(Outcome::Created(bet_nr))
    }

    /// An intent without `betNr`: never `POST` again on our own (module docs).
    async fn create_uncertain(&self, id: &EspoId, espo: &EspoBeteiligte, since: &str) -> Outcome {
        let message = format!(
            "Anlage in Advoware um {since} UTC ohne Antwort: bitte in Advoware prüfen, ob der Beteiligte existiert, dann die betnr eintragen oder `beteiligte reset` ausführen."
        );
        let first = espo.sync_error_message.as_deref() != Some(message.as_str());
        self.mark_failed(id, espo, &message).await;
        if first {
            self.notify(id, &message).await;
        }
        Outcome::CreateUncertain
    }

    /// Bad data: `failed` with the reason, counted like any failure; not retried by the queue.
    async fn invalid(&self, id: &EspoId, espo: &EspoBeteiligte, message: String) -> Outcome {
        self.mark_failed(id, espo, &message).await;
        Outcome::InvalidData(message)
    }

    async fn mark_failed(&self, id: &EspoId, espo: &EspoBeteiligte, message: &str) {
        let update = StatusUpdate::failed(
            espo.sync_retry_count.unwrap_or(0),
            self.settings.max_retries,
            message,
        );
        let permanent = update.sync_status == Some(SyncStatus::PermanentlyFailed);
        match self.espo.update(id, &json(update)).await {
            Ok(after) => {
                if let Some(m) = after.modified_at.as_deref() {
                    if let Err(e) = self.store.set_echo(id, m).await {
                        warn!(espo_id = %id, error = %e, "could not remember the failure write");
                    }
                }
            }
            Err(e) => warn!(espo_id = %id, error = %e, "could not record the failure in EspoCRM"),
        }
        if permanent {
            self.notify(
                id,
                &format!("Synchronisation mit Advoware endgültig fehlgeschlagen: {message}"),
            )
            .await;
        }
    }

    async fn notify_conflict(&self, id: &EspoId, fields: &[&str], winner: &str) {
        self.notify(
            id,
            &format!(
                "Konflikt: in EspoCRM und Advoware geändert ({}); {winner} hat Vorrang erhalten.",
                fields.join(", ")
            ),
        )
        .await;
    }

    /// In-app notification; a failure is logged, never fails the sync. The text may name
    /// client data (addresses, numbers): logged at debug only.
    pub(super) async fn notify(&self, id: &EspoId, message: &str) {
        tracing::info!(espo_id = %id, "Beteiligte sync notification");
        tracing::debug!(espo_id = %id, message, "Beteiligte sync notification text");
        let Some(user_id) = &self.settings.notify_user_id else {
            return;
        };
        let n = NewNotification {
            kind: "Message".into(),
            message: message.to_owned(),
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

/// The status a successful run ends with: `clean`, or `conflict` with the open manual tasks
/// (Kommunikation conflicts under `manual`, Adressen Advoware cannot take) as the message, so
/// the record says what a person must do; the check does not retry `conflict`.
fn final_status(row_id: &str, now: DateTime<Utc>, manual: &[String]) -> StatusUpdate {
    let mut s = StatusUpdate::clean(row_id, now);
    if !manual.is_empty() {
        s.sync_status = Some(SyncStatus::Conflict);
        s.sync_error_message = Some(Some(
            manual
                .join(" | ")
                .chars()
                .take(crate::sync::beteiligte::status::MAX_ERROR_MESSAGE_CHARS)
                .collect(),
        ));
    }
    s
}

/// Adds the attributes of `extra` (an object) to `target` (an object).
fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        t.extend(e);
    }
}
