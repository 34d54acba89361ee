//! One employee's calendar sync run and the audit, over the two sides' APIs.
//!
//! A run: find (or create) the employee's Google calendar → list Advoware appointments in the
//! window → list Google events incrementally into the mirror (410 → full list) → scope both to
//! the window and confirm would-be Advoware deletions with a direct GET → plan the three-way
//! diff → execute the steps, persisting the state after every action.
//!
//! The sides are traits ([`AdvowareApi`], [`GoogleApi`]) so the engine does not care how the
//! clients are built; production and the tests use the real clients (see [`super::sides`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bitbylaw_core::ids::{FrNr, Kuerzel};
use chrono::NaiveDate;
use futures::future::BoxFuture;
use redis::aio::ConnectionLike;
use tracing::{info, warn};

use super::store::{CalendarStore, StoreError};
use crate::config::CalendarSettings;
use crate::sync::calendar::diff::{self, Action, GoogleEvent, Item, PlanError, Policy, Side};
use crate::sync::calendar::mapping::{AdvowareTermin, ContentMode, EventData};
use crate::sync::calendar::scope::{deletion_suspects, scope, EventChanges, Window};
use crate::sync::calendar::state::{Created, Origin};

/// A failed call to one side, classified for the queue.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// Google's sync token is no longer valid (410): list everything again.
    #[error("Google sync token expired")]
    SyncTokenExpired,
    /// The employee's Google calendar no longer exists.
    #[error("Google calendar not found")]
    CalendarNotFound,
    /// A configured path does not fit the system (405, …): nothing this run can learn from the
    /// call. Never taken as evidence about an item, never retried by itself.
    #[error("{side:?} configuration: {message}")]
    Misconfigured {
        /// Which system.
        side: Side,
        /// Names the path and the setting to fix.
        message: String,
    },
    /// Anything else.
    #[error("{side:?}: {message}")]
    Failed {
        /// Which system.
        side: Side,
        /// What happened (never contains credentials).
        message: String,
        /// Worth retrying later (network, 5xx, rate limits).
        retryable: bool,
        /// The side's own hint.
        retry_after: Option<Duration>,
    },
}

impl SideError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::SyncTokenExpired | Self::CalendarNotFound => true,
            Self::Misconfigured { .. } => false,
            Self::Failed { retryable, .. } => *retryable,
        }
    }
}

/// The Advoware calls the calendar sync needs.
pub trait AdvowareApi: Send + Sync {
    /// Kürzel of all employees.
    fn list_employees(&self) -> BoxFuture<'_, Result<Vec<Kuerzel>, SideError>>;
    /// The employee's appointments overlapping the window.
    fn list_termine<'a>(
        &'a self,
        kuerzel: &'a Kuerzel,
        window: Window,
    ) -> BoxFuture<'a, Result<Vec<AdvowareTermin>, SideError>>;
    /// One appointment; `None` when it does not exist; [`SideError::Misconfigured`] when the
    /// read itself does not fit this Advoware (then nothing is known about the appointment).
    fn get_termin(&self, frnr: FrNr) -> BoxFuture<'_, Result<Option<AdvowareTermin>, SideError>>;
    /// Creates an appointment, returning its new number.
    fn create_termin<'a>(&'a self, t: &'a AdvowareTermin)
        -> BoxFuture<'a, Result<FrNr, SideError>>;
    /// Replaces an appointment's content.
    fn update_termin<'a>(
        &'a self,
        frnr: FrNr,
        t: &'a AdvowareTermin,
    ) -> BoxFuture<'a, Result<(), SideError>>;
    /// Deletes an appointment (an absent one is not an error).
    fn delete_termin(&self, frnr: FrNr) -> BoxFuture<'_, Result<(), SideError>>;
}

/// The Google Calendar calls the calendar sync needs.
pub trait GoogleApi: Send + Sync {
    /// The id of the calendar named `summary`, created when missing.
    fn find_or_create_calendar<'a>(
        &'a self,
        summary: &'a str,
    ) -> BoxFuture<'a, Result<String, SideError>>;
    /// All events (`sync_token: None`) or the changes since the token.
    fn list_events<'a>(
        &'a self,
        calendar_id: &'a str,
        sync_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<EventChanges, SideError>>;
    /// Creates an event.
    fn insert_event<'a>(
        &'a self,
        calendar_id: &'a str,
        event: &'a EventData,
    ) -> BoxFuture<'a, Result<GoogleEvent, SideError>>;
    /// Replaces the synced fields of an event.
    fn update_event<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
        event: &'a EventData,
    ) -> BoxFuture<'a, Result<GoogleEvent, SideError>>;
    /// Deletes an event (an absent one is not an error).
    fn delete_event<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SideError>>;
}

/// Why a run failed. The queue retries [`SyncError::is_retryable`] ones.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A side failed.
    #[error(transparent)]
    Side(#[from] SideError),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The planner refused (a side looks empty: an outage, not a mass deletion).
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl SyncError {
    /// Side errors say so themselves; Redis and an empty-looking side are worth a later try.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Side(e) => e.is_retryable(),
            Self::Store(StoreError::Redis(_)) | Self::Plan(_) => true,
            Self::Store(StoreError::State(_)) => false,
        }
    }

    /// A side's `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Side(SideError::Failed { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

/// Per-run choices (the job payload and the clock).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Today in Europe/Berlin; the window is around it.
    pub today: NaiveDate,
    /// What Google gets of Advoware's appointments.
    pub content_mode: ContentMode,
    /// Disables the empty-side guard for this run (operator override).
    pub force: bool,
}

/// What a run did, for logs, metrics and the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Appointments Advoware listed.
    pub advoware_listed: usize,
    /// Changes the Google list returned.
    pub google_changes: usize,
    /// Whether the Google side was listed in full (first run or 410).
    pub full_google_list: bool,
    /// Writes by kind: `create_google`, `update_google`, `delete_google`, `create_advoware`,
    /// `update_advoware`, `delete_advoware`.
    pub writes: BTreeMap<&'static str, usize>,
    /// Conflicts resolved.
    pub conflicts: usize,
    /// Items skipped because they cannot be mapped.
    pub skipped: usize,
    /// Items whose write was refused permanently (4xx); left for the next run.
    pub failed_items: usize,
    /// Appointments GET-checked before being treated as deleted.
    pub deletion_checks: usize,
    /// The content mode differs from the last run's, so Advoware's events were rewritten.
    pub content_mode_changed: bool,
    /// Deletion checks answered in a way that shows a wrong path setting (405, …); their pairs
    /// were left alone. Each one is logged with the path and counted in
    /// `advoware_endpoint_mismatches`.
    pub endpoint_mismatches: usize,
}

impl SyncReport {
    /// Total writes to both sides.
    pub fn total_writes(&self) -> usize {
        self.writes.values().sum()
    }

    /// One line for logs and `meta.last_result`.
    pub fn summary(&self) -> String {
        let writes: Vec<String> = self
            .writes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "advoware={} google_changes={} full={} writes[{}] conflicts={} skipped={} failed={} endpoint_mismatches={}",
            self.advoware_listed,
            self.google_changes,
            self.full_google_list,
            writes.join(","),
            self.conflicts,
            self.skipped,
            self.failed_items,
            self.endpoint_mismatches
        )
    }
}

/// Progress of a run, for the CLI.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Both sides listed; `steps` actions planned.
    Planned {
        /// Appointments.
        advoware: usize,
        /// In-scope events.
        google: usize,
        /// Planned steps.
        steps: usize,
    },
    /// One step done.
    Step {
        /// Steps done so far.
        done: usize,
        /// All steps.
        total: usize,
    },
}

/// The audit's result: every difference between the sides and the state.
#[derive(Debug, Clone)]
pub struct AuditReport {
    /// The calendar compared (none recorded yet: never synced).
    pub calendar_id: Option<String>,
    /// Appointments Advoware listed.
    pub advoware: usize,
    /// Events in scope.
    pub google: usize,
    /// Known pairs in scope.
    pub pairs: usize,
    /// Human-readable differences, one per planned action.
    pub differences: Vec<String>,
    /// Set when the planner refused (a side looks empty).
    pub refused: Option<String>,
}

impl AuditReport {
    /// In sync: nothing to do and nothing refused.
    pub fn in_sync(&self) -> bool {
        self.differences.is_empty() && self.refused.is_none()
    }
}

/// The two sides and the settings; one per worker.
pub struct Engine<'a> {
    /// Advoware.
    pub advoware: &'a dyn AdvowareApi,
    /// Google Calendar.
    pub google: &'a dyn GoogleApi,
    /// Window, names and policy.
    pub settings: &'a CalendarSettings,
}

impl Engine<'_> {
    /// The configured policy for one run.
    pub fn policy(&self, opts: &RunOptions) -> Policy {
        Policy {
            advoware_delete_allowed: self.settings.advoware_delete_allowed,
            recreate_deleted_in_google: self.settings.recreate_deleted_in_google,
            empty_side_guard: self.settings.empty_side_guard && !opts.force,
            empty_side_min_known: self.settings.empty_side_min_known,
            content_mode: opts.content_mode.clone(),
        }
    }

    /// The Google calendar name of `kuerzel`.
    pub fn calendar_name(&self, kuerzel: &Kuerzel) -> String {
        self.settings
            .calendar_name
            .replace("{kuerzel}", kuerzel.as_str())
    }

    fn window(&self, opts: &RunOptions) -> Window {
        Window::around(
            opts.today,
            self.settings.window_past_days,
            self.settings.window_future_days,
        )
    }

    /// Lists Advoware and confirms would-be deletions; returns the appointments to plan with.
    async fn advoware_side(
        &self,
        kuerzel: &Kuerzel,
        window: Window,
        state: &crate::sync::calendar::state::SyncState,
        google: &[GoogleEvent],
        report: &mut SyncReport,
    ) -> Result<Vec<AdvowareTermin>, SyncError> {
        let mut termine = self.advoware.list_termine(kuerzel, window).await?;
        report.advoware_listed = termine.len();
        let scoped = scope(state, &termine, google, &window);
        for frnr in deletion_suspects(&scoped, &termine) {
            report.deletion_checks += 1;
            match self.advoware.get_termin(frnr).await {
                // Still there (outside the window, or reassigned): deleted for this calendar
                // only when it now belongs to someone else.
                Ok(Some(t)) => {
                    if t.kuerzel.as_ref().is_none_or(|k| k == kuerzel) {
                        termine.push(t);
                    }
                }
                Ok(None) => {}
                // The read cannot tell, because the read itself is misconfigured: the
                // appointment counts as present but unreadable, so the planner leaves its pair
                // alone and the rest of the calendar still syncs.
                Err(SideError::Misconfigured { message, .. }) => {
                    report.endpoint_mismatches += 1;
                    tracing::error!(kuerzel = %kuerzel, frnr = %frnr, error = %message,
                        "deletion not confirmed: the Advoware read is misconfigured; pair left alone");
                    termine.push(AdvowareTermin {
                        fr_nr: Some(frnr),
                        ..AdvowareTermin::default()
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(termine)
    }

    /// One sync run of `kuerzel`'s calendar. The caller holds the employee lock.
    pub async fn sync_employee<C: ConnectionLike + Send + Sync + Clone>(
        &self,
        store: &mut CalendarStore<C>,
        kuerzel: &Kuerzel,
        opts: &RunOptions,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();
        let window = self.window(opts);
        let meta = store.meta().await?;
        let calendar_id = match meta.calendar_id {
            Some(id) => id,
            None => {
                let id = self
                    .google
                    .find_or_create_calendar(&self.calendar_name(kuerzel))
                    .await?;
                store.set_calendar_id(&id).await?;
                id
            }
        };

        // Google: incremental into the mirror; 410 → everything again.
        let mut mirror = store.load_mirror().await?;
        // The mirror and its token are written together, so a token means a current mirror.
        let (changes, full) = match meta.sync_token.as_deref() {
            Some(t) => match self.google.list_events(&calendar_id, Some(t)).await {
                Ok(c) => (c, false),
                Err(SideError::SyncTokenExpired) => {
                    warn!(kuerzel = %kuerzel, "Google sync token expired, listing the calendar in full");
                    (self.google.list_events(&calendar_id, None).await?, true)
                }
                Err(e) => return Err(self.calendar_gone(store, e).await),
            },
            None => match self.google.list_events(&calendar_id, None).await {
                Ok(c) => (c, true),
                Err(e) => return Err(self.calendar_gone(store, e).await),
            },
        };
        report.google_changes = changes.changes.len();
        report.full_google_list = full;
        store
            .record_list(
                &mut mirror,
                &changes.changes,
                &changes.next_sync_token,
                full,
            )
            .await?;
        let google: Vec<GoogleEvent> = mirror.values().cloned().collect();

        let mut state = store.load_state().await?;
        let termine = self
            .advoware_side(kuerzel, window, &state, &google, &mut report)
            .await?;
        let mut scoped = scope(&state, &termine, &google, &window);
        let mode = mode_key(&opts.content_mode);
        if meta.content_mode.as_ref().is_some_and(|m| *m != mode) {
            // Switched between full and busy-only: rewrite every event that came from Advoware,
            // as if the appointment had changed (the stored hash no longer matches anything).
            info!(kuerzel = %kuerzel, from = ?meta.content_mode, to = %mode, "content mode changed; rewriting Google events");
            report.content_mode_changed = true;
            for p in scoped.state.pairs.values_mut() {
                if p.origin == Origin::Advoware {
                    p.advoware_hash.clear();
                }
            }
        }
        let plan = diff::plan(&scoped.state, &termine, &scoped.google, &self.policy(opts))?;
        progress(&Progress::Planned {
            advoware: termine.len(),
            google: scoped.google.len(),
            steps: plan.steps.len(),
        });
        // Work on the scoped state: out-of-scope pairs are never touched (the store writes only
        // the fields each update changes).
        state = scoped.state;
        let total = plan.steps.len();
        for (i, step) in plan.steps.iter().enumerate() {
            if let Some(before) = &step.before {
                store.apply(&mut state, before, None).await?;
            }
            match self
                .execute(store, &calendar_id, kuerzel, &step.action, &mut report)
                .await
            {
                Ok(created) => {
                    store
                        .apply(&mut state, &step.after, created.as_ref())
                        .await?;
                    if let (Action::CreateInAdvoware { event_id, .. }, Some(Created::FrNr(frnr))) =
                        (&step.action, &created)
                    {
                        self.tag_event(store, &calendar_id, &mirror, event_id, *frnr, &mut report)
                            .await;
                    }
                }
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e) => {
                    report.failed_items += 1;
                    warn!(kuerzel = %kuerzel, action = %describe(&step.action), error = %e,
                        "calendar write refused; left for the next run");
                }
            }
            progress(&Progress::Step { done: i + 1, total });
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        store.mark_synced(now_ms, &report.summary(), &mode).await?;
        info!(kuerzel = %kuerzel, result = %report.summary(), "calendar synced");
        Ok(report)
    }

    /// Writes the new `frNr` into a Google event just created in Advoware, so a lost state can
    /// always re-pair it and the next run has nothing left to do. The content (and its hash) is
    /// unchanged; a failure only means the next run writes the tag.
    async fn tag_event<C: ConnectionLike + Send + Sync + Clone>(
        &self,
        store: &mut CalendarStore<C>,
        calendar_id: &str,
        mirror: &BTreeMap<String, GoogleEvent>,
        event_id: &str,
        frnr: FrNr,
        report: &mut SyncReport,
    ) {
        let Some(event) = mirror.get(event_id) else {
            return;
        };
        let data = diff::tagged(&event.data, frnr);
        match self.google.update_event(calendar_id, event_id, &data).await {
            Ok(updated) => {
                *report.writes.entry("tag_google").or_default() += 1;
                if let Err(e) = store.mirror_put(&updated).await {
                    warn!(error = %e, event_id, "mirror update after tagging failed");
                }
            }
            Err(e) => {
                warn!(error = %e, event_id, frnr = %frnr, "tagging the Google event failed; the next run does it")
            }
        }
    }

    /// A failed list: a vanished calendar is forgotten (recreated next run), everything else
    /// is passed on.
    async fn calendar_gone<C: ConnectionLike + Send + Sync + Clone>(
        &self,
        store: &mut CalendarStore<C>,
        e: SideError,
    ) -> SyncError {
        if matches!(e, SideError::CalendarNotFound) {
            warn!("Google calendar vanished; it is created again on the next run");
            if let Err(se) = store.forget_calendar().await {
                return se.into();
            }
        }
        e.into()
    }

    /// Runs one action; returns the id a create produced.
    async fn execute<C: ConnectionLike + Send + Sync + Clone>(
        &self,
        store: &mut CalendarStore<C>,
        calendar_id: &str,
        kuerzel: &Kuerzel,
        action: &Action,
        report: &mut SyncReport,
    ) -> Result<Option<Created>, SideError> {
        let mut count = |k: &'static str| *report.writes.entry(k).or_default() += 1;
        let store_err = |e: StoreError| SideError::Failed {
            side: Side::Google,
            message: format!("mirror update failed: {e}"),
            retryable: true,
            retry_after: None,
        };
        Ok(match action {
            Action::CreateInGoogle { frnr, event } => {
                let created = self.google.insert_event(calendar_id, event).await?;
                count("create_google");
                tracing::debug!(kuerzel = %kuerzel, frnr = %frnr, event_id = %created.id, "created in Google");
                store.mirror_put(&created).await.map_err(store_err)?;
                Some(Created::EventId(created.id))
            }
            Action::UpdateGoogle { event_id, event } => {
                let updated = self
                    .google
                    .update_event(calendar_id, event_id, event)
                    .await?;
                count("update_google");
                store.mirror_put(&updated).await.map_err(store_err)?;
                None
            }
            Action::DeleteFromGoogle { event_id } => {
                self.google.delete_event(calendar_id, event_id).await?;
                count("delete_google");
                store.mirror_delete(event_id).await.map_err(store_err)?;
                None
            }
            Action::CreateInAdvoware { event_id, termin } => {
                let frnr = self.advoware.create_termin(termin).await?;
                count("create_advoware");
                tracing::debug!(kuerzel = %kuerzel, frnr = %frnr, event_id, "created in Advoware");
                Some(Created::FrNr(frnr))
            }
            Action::UpdateAdvoware { frnr, termin } => {
                self.advoware.update_termin(*frnr, termin).await?;
                count("update_advoware");
                None
            }
            Action::DeleteFromAdvoware { frnr } => {
                self.advoware.delete_termin(*frnr).await?;
                count("delete_advoware");
                None
            }
            Action::Conflict {
                frnr,
                event_id,
                resolution,
            } => {
                report.conflicts += 1;
                warn!(kuerzel = %kuerzel, frnr = %frnr, event_id, ?resolution, "calendar conflict");
                None
            }
            Action::Skip { item, reason } => {
                report.skipped += 1;
                warn!(kuerzel = %kuerzel, item = ?item, %reason, "calendar item skipped");
                None
            }
            Action::ForgetPair { .. } | Action::RecordInSync { .. } => None,
        })
    }

    /// Compares both sides with the state without writing anything (also not the mirror).
    pub async fn audit<C: ConnectionLike + Send + Sync + Clone>(
        &self,
        store: &mut CalendarStore<C>,
        kuerzel: &Kuerzel,
        opts: &RunOptions,
    ) -> Result<AuditReport, SyncError> {
        let window = self.window(opts);
        let meta = store.meta().await?;
        let google: Vec<GoogleEvent> = match &meta.calendar_id {
            Some(id) => {
                let changes = self.google.list_events(id, None).await?;
                let mut mirror = BTreeMap::new();
                crate::sync::calendar::scope::apply_changes(&mut mirror, &changes.changes, true);
                mirror.into_values().collect()
            }
            None => Vec::new(),
        };
        let state = store.load_state().await?;
        let mut scratch = SyncReport::default();
        let termine = self
            .advoware_side(kuerzel, window, &state, &google, &mut scratch)
            .await?;
        let scoped = scope(&state, &termine, &google, &window);
        let mut report = AuditReport {
            calendar_id: meta.calendar_id,
            advoware: termine.len(),
            google: scoped.google.len(),
            pairs: scoped.state.pairs.len(),
            differences: Vec::new(),
            refused: None,
        };
        match diff::plan(&scoped.state, &termine, &scoped.google, &self.policy(opts)) {
            Ok(plan) => report.differences = plan.actions().map(describe).collect(),
            Err(e) => report.refused = Some(e.to_string()),
        }
        Ok(report)
    }
}

/// The content mode as stored in the run metadata.
fn mode_key(mode: &ContentMode) -> String {
    match mode {
        ContentMode::Full => "full".into(),
        ContentMode::BusyOnly { title } => format!("busy:{title}"),
    }
}

/// One line per action, for logs and the audit.
pub fn describe(action: &Action) -> String {
    let title = |e: &EventData| e.summary.clone().unwrap_or_default();
    match action {
        Action::CreateInGoogle { frnr, event } => {
            format!("missing in Google: frNr {frnr} {:?}", title(event))
        }
        Action::UpdateGoogle { event_id, event } => {
            format!(
                "Google event {event_id} differs from Advoware ({:?})",
                title(event)
            )
        }
        Action::DeleteFromGoogle { event_id } => {
            format!("Google event {event_id} has no appointment in Advoware")
        }
        Action::CreateInAdvoware { event_id, termin } => format!(
            "missing in Advoware: Google event {event_id} {:?}",
            termin.text.clone().unwrap_or_default()
        ),
        Action::UpdateAdvoware { frnr, .. } => {
            format!("Advoware appointment {frnr} differs from Google")
        }
        Action::DeleteFromAdvoware { frnr } => {
            format!("Advoware appointment {frnr} was deleted in Google")
        }
        Action::ForgetPair { frnr, event_id } => format!(
            "state still pairs frNr {frnr} with {} although both sides are gone",
            event_id.as_deref().unwrap_or("no event")
        ),
        Action::RecordInSync { frnr, event_id } => {
            format!("frNr {frnr} and event {event_id} agree but are not recorded as a pair")
        }
        Action::Conflict {
            frnr,
            event_id,
            resolution,
        } => format!("conflict frNr {frnr} / event {event_id}: {resolution:?}"),
        Action::Skip { item, reason } => match item {
            Item::Termin(f) => format!(
                "unreadable Advoware appointment {}: {reason}",
                f.map(|f| f.to_string()).unwrap_or_else(|| "?".into())
            ),
            Item::Event(id) => format!("unreadable Google event {id}: {reason}"),
        },
    }
}
