//! Google Calendar client (issue #6, FACTS §3): `google-calendar3` with the service-account flow
//! of `yup-oauth2`, every request drawn from the shared budget of [`crate::ratelimit`].
//!
//! # Errors and retries
//!
//! Each API call first awaits [`TokenBucket::acquire`]. A quota answer (403 with reason
//! `rateLimitExceeded`/`userRateLimitExceeded`, or 429) sets the shared backoff
//! ([`TokenBucket::back_off`]) — `Retry-After` when Google sends one, else exponential from the
//! backoff base with jitter — so *all* workers pause, then the call is retried up to
//! `rate_limit_retries` times before [`GoogleError::RateLimited`] goes to the queue's retry
//! policy. A 5xx is retried twice after a short pause. Everything else is returned at once,
//! classified by [`GoogleError::is_retryable`].
//!
//! # Updating events
//!
//! [`GoogleCalendarClient::update_event`] reads the event and writes it back with `events.update`
//! (PUT) after replacing the synced fields. PATCH cannot express what we need through
//! `google-calendar3` (its types never serialise `null`): switching `start` between `date` and
//! `dateTime` would merge with the stale member on real Google, and a cleared field could only
//! be sent as `""`. PUT replaces the whole event, so a field empty in [`EventData`] is simply
//! absent and thereby cleared, a recurrence is removed by leaving it out, while everything we do
//! not sync (attendees, reminders, colour, conference data, other private properties) is carried
//! over from the read. The price is one extra GET per update and a small window in which a
//! concurrent user edit of the same event can be overwritten (`google-calendar3` cannot send
//! `If-Match`).

use std::collections::HashMap;
use std::time::Duration;

use google_calendar3::api::{Calendar, Event, EventDateTime, EventExtendedProperties};
use google_calendar3::hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use google_calendar3::hyper_util::client::legacy::connect::HttpConnector;
use google_calendar3::hyper_util::client::legacy::Client as HyperClient;
use google_calendar3::hyper_util::rt::TokioExecutor;
use google_calendar3::{common, yup_oauth2, CalendarHub};
use rand::Rng;
use redis::aio::ConnectionLike;
use serde_json::Value;
use tracing::{debug, debug_span, warn, Instrument as _};

use super::advoware::parse_retry_after;
use crate::config::GoogleSettings;
use crate::ratelimit::{RateLimitError, TokenBucket};
use crate::sync::calendar::diff::GoogleEvent;
use crate::sync::calendar::mapping::{EventData, EventTime, TIME_ZONE};
use crate::sync::calendar::MappingError;

/// The one OAuth scope we ask for: read and write calendars and events.
pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";

/// How often a 5xx is retried inside one call.
const SERVER_RETRIES: u32 = 2;

/// How many characters of Google's error message are kept.
const MESSAGE_CHARS: usize = 300;

/// The HTTP connector of the hub: HTTPS with system roots, plain HTTP allowed (loopback fakes).
pub type Connector = HttpsConnector<HttpConnector>;

/// Errors of the Google client. A concrete enum: the sync branches on [`Self::SyncTokenExpired`]
/// (full sync) and the queue on [`Self::is_retryable`] / [`Self::retry_after`]. No variant ever
/// carries a token or key material.
#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    /// 410 on an incremental list: the sync token is stale, a full sync is required.
    #[error("Google sync token expired (410): a full sync is required")]
    SyncTokenExpired,
    /// Google kept answering quota errors after the in-client retries.
    #[error("Google rate limit persisted after retries (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// 404: the calendar or event does not exist.
    #[error("Google: not found (404)")]
    NotFound,
    /// Any other non-success status; 5xx and 408 are retryable, other 4xx permanent.
    #[error("Google answered {status}: {message}")]
    Status { status: u16, message: String },
    /// Connection refused, reset, timeout, …
    #[error("transport error talking to Google: {0}")]
    Transport(String),
    /// The key file is unreadable or invalid, the token endpoint refused us, or the API refused
    /// the token (401). A configuration problem: not retryable.
    #[error("Google authentication: {0}")]
    Auth(String),
    /// The shared request budget in Redis failed.
    #[error(transparent)]
    Budget(#[from] RateLimitError),
    /// A success answer we cannot use (undecodable JSON, missing id or sync token, …).
    #[error("unexpected Google answer: {0}")]
    Decode(String),
    /// An event Google returned cannot be read into [`EventData`].
    #[error("Google event {id} cannot be mapped: {error}")]
    Mapping { id: String, error: MappingError },
}

impl GoogleError {
    /// Whether the queue should try the job again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) | Self::RateLimited { .. } | Self::Budget(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 408,
            Self::SyncTokenExpired
            | Self::NotFound
            | Self::Auth(_)
            | Self::Decode(_)
            | Self::Mapping { .. } => false,
        }
    }

    /// Google's `Retry-After`, when it sent one with a quota error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status behind the error, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::SyncTokenExpired => Some(410),
            Self::NotFound => Some(404),
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub use crate::sync::calendar::scope::{EventChange, EventChanges};

/// Google Calendar API v3 client. Cheap to share by reference; one per worker is enough.
pub struct GoogleCalendarClient<C> {
    hub: CalendarHub<Connector>,
    bucket: TokenBucket<C>,
    rate_limit_retries: u32,
    backoff_base: Duration,
}

impl<C> std::fmt::Debug for GoogleCalendarClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleCalendarClient")
            .field("rate_limit_retries", &self.rate_limit_retries)
            .field("backoff_base", &self.backoff_base)
            .finish_non_exhaustive()
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Quota: set the shared backoff to this, then try again.
    BackOff(Duration),
    /// 5xx: pause this long, then try again.
    Pause(Duration),
    /// Return the error.
    GiveUp,
}

/// Runs one API call with budget, quota backoff and 5xx retries. `|dlg| expr`: `expr` is the
/// call builder future with `.delegate(dlg)` attached (fresh per attempt).
macro_rules! call_google {
    ($client:expr, |$dlg:ident| $call:expr) => {{
        let mut rate_attempts: u32 = 0;
        let mut server_attempts: u32 = 0;
        loop {
            $client.bucket.acquire().await?;
            let mut capture = FailureCapture::default();
            let result = {
                let $dlg: &mut dyn common::Delegate = &mut capture;
                $call.await
            };
            match result {
                Ok(value) => break Ok(value),
                Err(e) => {
                    let err = classify(e, capture.retry_after);
                    let jitter = rand::rng().random_range(0.0..1.0);
                    match next_step(
                        &err,
                        rate_attempts,
                        $client.rate_limit_retries,
                        server_attempts,
                        $client.backoff_base,
                        jitter,
                    ) {
                        Step::GiveUp => break Err(err),
                        Step::BackOff(d) => {
                            rate_attempts += 1;
                            warn!(attempt = rate_attempts, backoff_ms = d.as_millis() as u64, "Google quota error; all workers back off");
                            $client.bucket.back_off(d).await?;
                        }
                        Step::Pause(d) => {
                            server_attempts += 1;
                            warn!(attempt = server_attempts, error = %err, "Google server error; retrying");
                            tokio::time::sleep(d).await;
                        }
                    }
                }
            }
        }
    }};
}

impl<C> GoogleCalendarClient<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// The production client: service-account key from `settings.service_account_path`
    /// (`token_uri` overridden when configured), acting as `settings.subject` when set.
    pub async fn from_settings(
        settings: &GoogleSettings,
        bucket: TokenBucket<C>,
    ) -> Result<Self, GoogleError> {
        let path = settings
            .service_account_path
            .as_ref()
            .ok_or_else(|| GoogleError::Auth("no service account key file configured".into()))?;
        let mut key = yup_oauth2::read_service_account_key(path)
            .await
            .map_err(|e| {
                GoogleError::Auth(format!(
                    "cannot read service account key {}: {e}",
                    path.display()
                ))
            })?;
        if let Some(uri) = &settings.token_uri {
            key.token_uri.clone_from(uri);
        }
        // google-calendar3 builds yup-oauth2 without its default HTTP client: bring our own
        // (HTTP/1 too, so a plain-HTTP token endpoint of a fake works as well).
        let token_client =
            HyperClient::builder(TokioExecutor::new()).build::<_, String>(connector()?);
        let mut builder = yup_oauth2::ServiceAccountAuthenticator::with_client(
            key,
            yup_oauth2::CustomHyperClientBuilder::from(token_client),
        );
        if let Some(subject) = &settings.subject {
            builder = builder.subject(subject.clone());
        }
        let auth = builder.build().await.map_err(|e| {
            GoogleError::Auth(format!(
                "invalid service account key {}: {e}",
                path.display()
            ))
        })?;
        let hub = CalendarHub::new(http_client()?, auth);
        Ok(Self::from_hub(hub, settings, bucket))
    }

    /// A client sending a fixed bearer token (tools, tests against a fake's static token).
    pub fn with_static_token(
        settings: &GoogleSettings,
        bucket: TokenBucket<C>,
        token: String,
    ) -> Result<Self, GoogleError> {
        let hub = CalendarHub::new(http_client()?, token);
        Ok(Self::from_hub(hub, settings, bucket))
    }

    /// Wraps an already built hub; base and root URL are taken from `settings`.
    pub fn from_hub(
        mut hub: CalendarHub<Connector>,
        settings: &GoogleSettings,
        bucket: TokenBucket<C>,
    ) -> Self {
        hub.base_url(settings.api_base_url.clone());
        hub.root_url(settings.root_url.clone());
        Self {
            hub,
            bucket,
            rate_limit_retries: settings.rate_limit_retries,
            backoff_base: Duration::from_secs(1),
        }
    }

    /// The first quota backoff (doubled per attempt) when Google sends no `Retry-After`;
    /// 1 s by default, small in tests.
    #[must_use]
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    /// The id of our calendar named `summary`, created (zone Europe/Berlin) when missing.
    pub async fn find_or_create_calendar(&self, summary: &str) -> Result<String, GoogleError> {
        let span = debug_span!("google.find_or_create_calendar", summary);
        async {
            let mut page_token: Option<String> = None;
            loop {
                let (_, page) = call_google!(self, |dlg| {
                    let mut call = self
                        .hub
                        .calendar_list()
                        .list()
                        .add_scope(CALENDAR_SCOPE)
                        .delegate(dlg);
                    if let Some(p) = &page_token {
                        call = call.page_token(p);
                    }
                    call.doit()
                })?;
                let found = page.items.unwrap_or_default().into_iter().find(|entry| {
                    entry.deleted != Some(true) && entry.summary.as_deref() == Some(summary)
                });
                if let Some(id) = found.and_then(|e| e.id) {
                    debug!(calendar_id = %id, "found calendar");
                    return Ok(id);
                }
                match page.next_page_token.filter(|t| !t.is_empty()) {
                    Some(next) => page_token = Some(next),
                    None => break,
                }
            }
            let request = Calendar {
                summary: Some(summary.to_owned()),
                time_zone: Some(TIME_ZONE.to_owned()),
                ..Default::default()
            };
            let (_, created) = call_google!(self, |dlg| {
                self.hub
                    .calendars()
                    .insert(request.clone())
                    .add_scope(CALENDAR_SCOPE)
                    .delegate(dlg)
                    .doit()
            })?;
            let id = created
                .id
                .ok_or_else(|| GoogleError::Decode("inserted calendar has no id".into()))?;
            debug!(calendar_id = %id, "created calendar");
            Ok(id)
        }
        .instrument(span)
        .await
    }

    /// Whether the calendar exists (and we may see it): 404 → `false`.
    pub async fn calendar_exists(&self, calendar_id: &str) -> Result<bool, GoogleError> {
        let span = debug_span!("google.calendar_exists", calendar_id);
        async {
            let result = call_google!(self, |dlg| {
                self.hub
                    .calendars()
                    .get(calendar_id)
                    .add_scope(CALENDAR_SCOPE)
                    .delegate(dlg)
                    .doit()
            });
            match result {
                Ok(_) => Ok(true),
                Err(GoogleError::NotFound) => Ok(false),
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }

    /// All events (`sync_token` `None`) or the changes since `sync_token`, every page, deleted
    /// events included; series stay masters (`singleEvents=false`). No time window: Google
    /// refuses `timeMin`/`timeMax` together with sync tokens. A stale token →
    /// [`GoogleError::SyncTokenExpired`].
    pub async fn list_events(
        &self,
        calendar_id: &str,
        sync_token: Option<&str>,
    ) -> Result<EventChanges, GoogleError> {
        let span = debug_span!(
            "google.list_events",
            calendar_id,
            incremental = sync_token.is_some()
        );
        async {
            let mut changes = Vec::new();
            let mut page_token: Option<String> = None;
            loop {
                let result = call_google!(self, |dlg| {
                    let mut call = self
                        .hub
                        .events()
                        .list(calendar_id)
                        .show_deleted(true)
                        .max_results(2500)
                        .single_events(false)
                        .add_scope(CALENDAR_SCOPE)
                        .delegate(dlg);
                    if let Some(token) = sync_token {
                        call = call.sync_token(token);
                    }
                    if let Some(p) = &page_token {
                        call = call.page_token(p);
                    }
                    call.doit()
                });
                let page = match result {
                    Ok((_, page)) => page,
                    Err(e) if sync_token.is_some() && e.status() == Some(410) => {
                        return Err(GoogleError::SyncTokenExpired)
                    }
                    Err(e) => return Err(e),
                };
                changes.extend(page.items.unwrap_or_default().iter().map(change_from_api));
                if let Some(next) = page.next_page_token.filter(|t| !t.is_empty()) {
                    page_token = Some(next);
                    continue;
                }
                let next_sync_token =
                    page.next_sync_token
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| {
                            GoogleError::Decode("last event page carries no nextSyncToken".into())
                        })?;
                debug!(changes = changes.len(), "listed events");
                return Ok(EventChanges {
                    changes,
                    next_sync_token,
                });
            }
        }
        .instrument(span)
        .await
    }

    /// Creates an event; returns it as Google stored it (with Google's id).
    pub async fn insert_event(
        &self,
        calendar_id: &str,
        data: &EventData,
    ) -> Result<GoogleEvent, GoogleError> {
        let span = debug_span!("google.insert_event", calendar_id);
        async {
            let request = event_to_api(data);
            let (_, created) = call_google!(self, |dlg| {
                self.hub
                    .events()
                    .insert(request.clone(), calendar_id)
                    .add_scope(CALENDAR_SCOPE)
                    .delegate(dlg)
                    .doit()
            })?;
            let event = mapped(&created)?;
            debug!(event_id = %event.id, "inserted event");
            Ok(event)
        }
        .instrument(span)
        .await
    }

    /// Replaces the synced fields of an event (GET + PUT, see the module docs): fields empty in
    /// `data` are cleared in Google, a missing recurrence removes the series rule, private
    /// properties not in `data` and unsynced fields are kept.
    pub async fn update_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        data: &EventData,
    ) -> Result<GoogleEvent, GoogleError> {
        let span = debug_span!("google.update_event", calendar_id, event_id);
        async {
            let (_, current) = call_google!(self, |dlg| {
                self.hub
                    .events()
                    .get(calendar_id, event_id)
                    .add_scope(CALENDAR_SCOPE)
                    .delegate(dlg)
                    .doit()
            })?;
            let next = merge_for_update(current, data);
            let (_, saved) = call_google!(self, |dlg| {
                self.hub
                    .events()
                    .update(next.clone(), calendar_id, event_id)
                    .add_scope(CALENDAR_SCOPE)
                    .delegate(dlg)
                    .doit()
            })?;
            debug!("updated event");
            mapped(&saved)
        }
        .instrument(span)
        .await
    }

    /// Deletes an event; already deleted (410) or unknown (404) counts as done.
    pub async fn delete_event(&self, calendar_id: &str, event_id: &str) -> Result<(), GoogleError> {
        let span = debug_span!("google.delete_event", calendar_id, event_id);
        async {
            let result = call_google!(self, |dlg| {
                self.hub
                    .events()
                    .delete(calendar_id, event_id)
                    .add_scope(CALENDAR_SCOPE)
                    .delegate(dlg)
                    .doit()
            });
            match result {
                Ok(_) => {
                    debug!("deleted event");
                    Ok(())
                }
                Err(e) if matches!(e.status(), Some(404 | 410)) => {
                    debug!("event already gone");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }
}

/// The hyper client of the hub: HTTP/1 and HTTP/2 (Google speaks both; loopback fakes only
/// HTTP/1), TLS with the system's roots.
fn http_client() -> Result<common::Client<Connector>, GoogleError> {
    Ok(HyperClient::builder(TokioExecutor::new()).build(connector()?))
}

fn connector() -> Result<Connector, GoogleError> {
    Ok(HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| GoogleError::Transport(format!("no TLS root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

/// Remembers the `Retry-After` of a failed response, which `google-calendar3`'s error drops.
#[derive(Debug, Default)]
struct FailureCapture {
    retry_after: Option<Duration>,
}

impl common::Delegate for FailureCapture {
    fn http_failure(&mut self, response: &common::Response, _err: Option<&Value>) -> common::Retry {
        self.retry_after = retry_after_header(response);
        common::Retry::Abort
    }
}

fn retry_after_header(response: &common::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// Maps `google-calendar3`'s error to ours; `retry_after` comes from [`FailureCapture`].
fn classify(err: common::Error, retry_after: Option<Duration>) -> GoogleError {
    match err {
        common::Error::BadRequest(body) => error_from_body(&body, retry_after),
        common::Error::Failure(response) => error_from_status(
            response.status().as_u16(),
            None,
            "(no JSON error body)".into(),
            retry_after.or_else(|| retry_after_header(&response)),
        ),
        common::Error::HttpError(e) => GoogleError::Transport(e.to_string()),
        common::Error::Io(e) => GoogleError::Transport(e.to_string()),
        common::Error::MissingToken(e) => match e.downcast_ref::<yup_oauth2::Error>() {
            Some(yup_oauth2::Error::HttpError(_) | yup_oauth2::Error::HttpClientError(_)) => {
                GoogleError::Transport(format!("token endpoint: {e}"))
            }
            _ => GoogleError::Auth(format!("no access token: {e}")),
        },
        common::Error::JsonDecodeError(_, e) => GoogleError::Decode(e.to_string()),
        other => GoogleError::Decode(other.to_string()),
    }
}

/// Classifies Google's JSON error body `{"error": {"code", "message", "errors": [{"reason"}]}}`.
pub fn error_from_body(body: &Value, retry_after: Option<Duration>) -> GoogleError {
    let error = &body["error"];
    let Some(status) = error["code"].as_u64().and_then(|c| u16::try_from(c).ok()) else {
        return GoogleError::Decode("error body without a status code".into());
    };
    let reason = error["errors"]
        .as_array()
        .and_then(|list| list.iter().find_map(|e| e["reason"].as_str()));
    let message: String = error["message"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(MESSAGE_CHARS)
        .collect();
    error_from_status(status, reason, message, retry_after)
}

/// The variant for a status and Google's error reason.
fn error_from_status(
    status: u16,
    reason: Option<&str>,
    message: String,
    retry_after: Option<Duration>,
) -> GoogleError {
    match (status, reason) {
        (429, _) | (403, Some("rateLimitExceeded" | "userRateLimitExceeded")) => {
            GoogleError::RateLimited { retry_after }
        }
        (404, _) => GoogleError::NotFound,
        (401, _) => GoogleError::Auth(format!("Google refused the access token (401): {message}")),
        _ => GoogleError::Status { status, message },
    }
}

/// Retry decision after a failed attempt. `jitter` in `[0, 1)` spreads quota backoffs:
/// `base · 2^attempt · (1 + jitter)`, or exactly Google's `Retry-After` when given.
fn next_step(
    err: &GoogleError,
    rate_attempts: u32,
    rate_limit_retries: u32,
    server_attempts: u32,
    base: Duration,
    jitter: f64,
) -> Step {
    match err {
        GoogleError::RateLimited { retry_after } if rate_attempts < rate_limit_retries => {
            Step::BackOff(retry_after.unwrap_or_else(|| {
                base.saturating_mul(1u32 << rate_attempts.min(16))
                    .mul_f64(1.0 + jitter.clamp(0.0, 1.0))
            }))
        }
        GoogleError::Status { status, .. }
            if *status >= 500 && server_attempts < SERVER_RETRIES =>
        {
            Step::Pause(
                base.saturating_mul(server_attempts + 1)
                    .min(Duration::from_secs(5))
                    / 2,
            )
        }
        _ => Step::GiveUp,
    }
}

fn mapped(e: &Event) -> Result<GoogleEvent, GoogleError> {
    event_from_api(e).map_err(|error| GoogleError::Mapping {
        id: e.id.clone().unwrap_or_default(),
        error,
    })
}

/// One list item: cancelled → its id only; otherwise the mapped event or why it is unreadable.
fn change_from_api(e: &Event) -> EventChange {
    let id = e.id.clone().unwrap_or_default();
    if e.status.as_deref() == Some("cancelled") {
        return EventChange::Cancelled(id);
    }
    match event_from_api(e) {
        Ok(event) => EventChange::Live(event),
        Err(reason) => EventChange::Unreadable { id, reason },
    }
}

/// A Google event in our terms. `date` → [`EventTime::Date`]; `dateTime` →
/// [`EventTime::DateTime`] with the event's `timeZone` (`UTC` when Google gives none). The
/// `status` is not looked at: cancelled events are sorted out by the listing.
pub fn event_from_api(e: &Event) -> Result<GoogleEvent, MappingError> {
    let id =
        e.id.clone()
            .filter(|id| !id.is_empty())
            .ok_or(MappingError::MissingField("id"))?;
    let start = time_from_api(e.start.as_ref(), "start")?;
    let end = time_from_api(e.end.as_ref(), "end")?;
    if matches!(start, EventTime::Date(_)) != matches!(end, EventTime::Date(_)) {
        return Err(MappingError::MixedEventTimes);
    }
    let private_properties = e
        .extended_properties
        .as_ref()
        .and_then(|p| p.private.as_ref())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(GoogleEvent {
        id,
        updated: e.updated,
        data: EventData {
            summary: e.summary.clone(),
            description: e.description.clone(),
            location: e.location.clone(),
            start,
            end,
            recurrence: e.recurrence.clone().unwrap_or_default(),
            private_properties,
        },
    })
}

fn time_from_api(
    t: Option<&EventDateTime>,
    field: &'static str,
) -> Result<EventTime, MappingError> {
    let t = t.ok_or(MappingError::MissingField(field))?;
    match (t.date, t.date_time) {
        (_, Some(utc)) => Ok(EventTime::DateTime {
            utc,
            tz: t
                .time_zone
                .clone()
                .filter(|z| !z.is_empty())
                .unwrap_or_else(|| "UTC".to_owned()),
        }),
        (Some(date), None) => Ok(EventTime::Date(date)),
        (None, None) => Err(MappingError::MissingField(field)),
    }
}

fn time_to_api(t: &EventTime) -> EventDateTime {
    match t {
        EventTime::Date(date) => EventDateTime {
            date: Some(*date),
            ..Default::default()
        },
        EventTime::DateTime { utc, tz } => EventDateTime {
            date_time: Some(*utc),
            time_zone: Some(tz.clone()),
            ..Default::default()
        },
    }
}

/// The request body for [`EventData`]: timed values with their `timeZone` (Google needs it for
/// series), all-day values as `date`; empty recurrence and properties are left out.
pub fn event_to_api(d: &EventData) -> Event {
    Event {
        summary: d.summary.clone(),
        description: d.description.clone(),
        location: d.location.clone(),
        start: Some(time_to_api(&d.start)),
        end: Some(time_to_api(&d.end)),
        recurrence: (!d.recurrence.is_empty()).then(|| d.recurrence.clone()),
        extended_properties: (!d.private_properties.is_empty()).then(|| EventExtendedProperties {
            private: Some(
                d.private_properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            shared: None,
        }),
        ..Default::default()
    }
}

/// The PUT body of an update: `current` as read from Google with the synced fields replaced by
/// `d` (absent = cleared) and `d`'s private properties merged over the existing ones.
pub fn merge_for_update(mut current: Event, d: &EventData) -> Event {
    let wanted = event_to_api(d);
    current.summary = wanted.summary;
    current.description = wanted.description;
    current.location = wanted.location;
    current.start = wanted.start;
    current.end = wanted.end;
    current.recurrence = wanted.recurrence;
    let mut properties = current.extended_properties.take().unwrap_or_default();
    let mut private: HashMap<String, String> = properties.private.take().unwrap_or_default();
    private.extend(
        d.private_properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    properties.private = (!private.is_empty()).then_some(private);
    current.extended_properties =
        (properties.private.is_some() || properties.shared.is_some()).then_some(properties);
    current
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};
    use google_calendar3::api::{EventAttendee, EventReminders};
    use serde_json::json;

    fn utc(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, 0, 0).unwrap()
    }

    fn timed_data() -> EventData {
        EventData {
            summary: Some("Besprechung".into()),
            description: Some("Akte mitbringen".into()),
            location: Some("Büro".into()),
            start: EventTime::DateTime {
                utc: utc(8),
                tz: TIME_ZONE.into(),
            },
            end: EventTime::DateTime {
                utc: utc(9),
                tz: TIME_ZONE.into(),
            },
            recurrence: vec!["RRULE:FREQ=WEEKLY".into()],
            private_properties: BTreeMap::from([("advowareFrNr".into(), "4711".into())]),
        }
    }

    #[test]
    fn event_round_trips_through_the_api_type() {
        let data = timed_data();
        let mut api = event_to_api(&data);
        assert_eq!(
            api.start.as_ref().unwrap().time_zone.as_deref(),
            Some(TIME_ZONE)
        );
        api.id = Some("abc12345".into());
        api.updated = Some(utc(10));
        let back = event_from_api(&api).unwrap();
        assert_eq!(back.id, "abc12345");
        assert_eq!(back.updated, Some(utc(10)));
        assert_eq!(back.data, data);
    }

    #[test]
    fn all_day_uses_date_and_mixed_times_are_refused() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let data = EventData {
            summary: None,
            description: None,
            location: None,
            start: EventTime::Date(day(24)),
            end: EventTime::Date(day(27)),
            recurrence: vec![],
            private_properties: BTreeMap::new(),
        };
        let mut api = event_to_api(&data);
        assert_eq!(api.start.as_ref().unwrap().date, Some(day(24)));
        assert!(api.start.as_ref().unwrap().date_time.is_none());
        assert!(api.recurrence.is_none() && api.extended_properties.is_none());
        api.id = Some("x1234".into());
        assert_eq!(event_from_api(&api).unwrap().data, data);
        api.end = Some(time_to_api(&EventTime::DateTime {
            utc: utc(9),
            tz: "UTC".into(),
        }));
        assert_eq!(event_from_api(&api), Err(MappingError::MixedEventTimes));
        api.end = None;
        assert_eq!(event_from_api(&api), Err(MappingError::MissingField("end")));
        api.id = None;
        assert_eq!(event_from_api(&api), Err(MappingError::MissingField("id")));
    }

    #[test]
    fn timed_value_without_zone_is_utc() {
        let api = Event {
            id: Some("x1234".into()),
            start: Some(EventDateTime {
                date_time: Some(utc(8)),
                ..Default::default()
            }),
            end: Some(EventDateTime {
                date_time: Some(utc(9)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = event_from_api(&api).unwrap();
        assert_eq!(
            e.data.start,
            EventTime::DateTime {
                utc: utc(8),
                tz: "UTC".into()
            }
        );
    }

    #[test]
    fn cancelled_items_become_ids_and_broken_ones_unreadable() {
        let cancelled = Event {
            id: Some("gone1".into()),
            status: Some("cancelled".into()),
            ..Default::default()
        };
        assert_eq!(
            change_from_api(&cancelled),
            EventChange::Cancelled("gone1".into())
        );
        let broken = Event {
            id: Some("bad12".into()),
            ..Default::default()
        };
        assert_eq!(
            change_from_api(&broken),
            EventChange::Unreadable {
                id: "bad12".into(),
                reason: MappingError::MissingField("start")
            }
        );
    }

    #[test]
    fn update_body_replaces_synced_fields_and_keeps_the_rest() {
        let mut current = event_to_api(&timed_data());
        current.id = Some("ev123".into());
        current.attendees = Some(vec![EventAttendee {
            email: Some("a@example.test".into()),
            ..Default::default()
        }]);
        current.reminders = Some(EventReminders {
            use_default: Some(false),
            ..Default::default()
        });
        current
            .extended_properties
            .as_mut()
            .unwrap()
            .private
            .as_mut()
            .unwrap()
            .insert("userTag".into(), "keep".into());
        let mut wanted = timed_data();
        wanted.description = None;
        wanted.location = None;
        wanted.recurrence.clear();
        wanted.start = EventTime::Date(NaiveDate::from_ymd_opt(2026, 12, 7).unwrap());
        wanted.end = EventTime::Date(NaiveDate::from_ymd_opt(2026, 12, 8).unwrap());
        let next = merge_for_update(current, &wanted);
        assert!(next.description.is_none() && next.location.is_none());
        assert!(next.recurrence.is_none());
        assert!(next.start.as_ref().unwrap().date_time.is_none());
        assert!(next.start.as_ref().unwrap().time_zone.is_none());
        assert_eq!(next.attendees.as_ref().map(Vec::len), Some(1));
        assert!(next.reminders.is_some());
        let private = next.extended_properties.unwrap().private.unwrap();
        assert_eq!(private.get("userTag").map(String::as_str), Some("keep"));
        assert_eq!(
            private.get("advowareFrNr").map(String::as_str),
            Some("4711")
        );
    }

    #[test]
    fn error_bodies_are_classified() {
        let body = |code: u16, reason: &str| json!({"error": {"code": code, "message": "m", "errors": [{"reason": reason}]}});
        let five = Some(Duration::from_secs(5));
        assert!(matches!(
            error_from_body(&body(403, "rateLimitExceeded"), five),
            GoogleError::RateLimited { retry_after } if retry_after == five
        ));
        assert!(matches!(
            error_from_body(&body(403, "userRateLimitExceeded"), None),
            GoogleError::RateLimited { .. }
        ));
        assert!(matches!(
            error_from_body(&body(429, "rateLimitExceeded"), None),
            GoogleError::RateLimited { .. }
        ));
        let forbidden = error_from_body(&body(403, "forbidden"), None);
        assert_eq!(forbidden.status(), Some(403));
        assert!(!forbidden.is_retryable());
        assert!(matches!(
            error_from_body(&body(404, "notFound"), None),
            GoogleError::NotFound
        ));
        assert!(matches!(
            error_from_body(&body(401, "authError"), None),
            GoogleError::Auth(_)
        ));
        assert!(error_from_body(&body(503, "backendError"), None).is_retryable());
        assert!(matches!(
            error_from_body(&json!({"oops": 1}), None),
            GoogleError::Decode(_)
        ));
        assert!(GoogleError::Transport("x".into()).is_retryable());
        assert!(!GoogleError::SyncTokenExpired.is_retryable());
        assert_eq!(
            GoogleError::RateLimited { retry_after: five }.retry_after(),
            five
        );
    }

    #[test]
    fn retry_steps() {
        let base = Duration::from_millis(100);
        let rl = |ra| GoogleError::RateLimited { retry_after: ra };
        assert_eq!(
            next_step(&rl(None), 0, 4, 0, base, 0.0),
            Step::BackOff(Duration::from_millis(100))
        );
        assert_eq!(
            next_step(&rl(None), 2, 4, 0, base, 0.5),
            Step::BackOff(Duration::from_millis(600))
        );
        assert_eq!(
            next_step(&rl(Some(Duration::from_secs(7))), 1, 4, 0, base, 0.9),
            Step::BackOff(Duration::from_secs(7))
        );
        assert_eq!(next_step(&rl(None), 4, 4, 0, base, 0.0), Step::GiveUp);
        let server = GoogleError::Status {
            status: 503,
            message: String::new(),
        };
        assert!(matches!(
            next_step(&server, 0, 4, 0, base, 0.0),
            Step::Pause(_)
        ));
        assert!(matches!(
            next_step(&server, 0, 4, 1, base, 0.0),
            Step::Pause(_)
        ));
        assert_eq!(next_step(&server, 0, 4, 2, base, 0.0), Step::GiveUp);
        assert_eq!(
            next_step(&GoogleError::NotFound, 0, 4, 0, base, 0.0),
            Step::GiveUp
        );
    }
}
