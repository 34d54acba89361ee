//! Fake of the Google Calendar API v3 (the parts `google-calendar3` 7.0 uses) and of Google's
//! OAuth token endpoint for service accounts.
//!
//! Routes live under `/calendar/v3/` so a client's `base_url("http://127.0.0.1:PORT/calendar/v3/")`
//! just works; the token endpoint is `POST /token` (put `{base_url}/token` as `token_uri` in a test
//! service-account key file).
//!
//! Honest parts: incremental sync tokens (changes since a point, deletions as `status: "cancelled"`
//! with only id/status guaranteed, 410 `fullSyncRequired` after [`GoogleCalendarFake::invalidate_sync_tokens`]),
//! `syncToken` rejected together with the filters Google forbids, event validation (start/end,
//! time zone required for recurring timed events, id alphabet, duplicate ids), `sequence`/`etag`/
//! `updated` maintenance, deleting a deleted event answers 410, quota errors in Google's shape.
//! `singleEvents=true` expands series (see [`recurrence`]'s limits; rules it cannot expand answer
//! 501 instead of a wrong list). Not modelled: modified single instances (exceptions), ACLs,
//! reminders logic, batch requests, watch channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::clock::FakeClock;
use crate::server::{json as json_response, random_string, Controls, RunningServer, StartError};

pub mod recurrence;

/// How quota errors look when injected with [`GoogleCalendarFake::rate_limit_next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    /// 403 with reason `rateLimitExceeded` (per-user limit).
    Forbidden403,
    /// 429 with reason `rateLimitExceeded`.
    TooManyRequests429,
}

/// Configuration of the fake.
#[derive(Clone, Debug)]
pub struct GoogleCalendarConfig {
    pub bind: SocketAddr,
    pub clock: FakeClock,
    /// A bearer token accepted without the token endpoint (tests using a plain `String` auth).
    pub static_token: Option<String>,
    /// Id of the calendar `primary` stands for (created at start).
    pub primary_calendar_id: String,
    /// `expires_in` of issued access tokens, seconds.
    pub token_lifetime_secs: i64,
}

impl Default for GoogleCalendarConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            clock: FakeClock::new(),
            static_token: Some("fake-static-google-token".into()),
            primary_calendar_id: "kalender-sync@fake-kanzlei.test".into(),
            token_lifetime_secs: 3599,
        }
    }
}

/// API calls per calendar, for "no writes" and "one list per sync" assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub lists: usize,
    pub gets: usize,
    /// Inserts, updates, patches and deletes (attempts that reached the calendar, accepted or not).
    pub writes: usize,
}

/// What a service account asked for, decoded from its JWT assertion.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub iss: String,
    pub sub: Option<String>,
    pub scope: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct EventRec {
    value: Value,
    /// Calendar change counter value at the last change of this event.
    changed: u64,
}

#[derive(Clone, Debug)]
struct CalendarRec {
    id: String,
    summary: String,
    time_zone: String,
    events: Vec<EventRec>,
    change_seq: u64,
    counts: CallCounts,
}

impl CalendarRec {
    fn new(id: &str, summary: &str, time_zone: &str) -> Self {
        Self {
            id: id.to_owned(),
            summary: summary.to_owned(),
            time_zone: time_zone.to_owned(),
            events: Vec::new(),
            change_seq: 0,
            counts: CallCounts::default(),
        }
    }

    fn position(&self, event_id: &str) -> Option<usize> {
        self.events
            .iter()
            .position(|e| e.value.get("id").and_then(Value::as_str) == Some(event_id))
    }

    fn bump(&mut self) -> u64 {
        self.change_seq += 1;
        self.change_seq
    }

    fn as_json(&self, kind: &str) -> Value {
        json!({
            "kind": kind,
            "etag": format!("\"{}\"", self.change_seq),
            "id": self.id,
            "summary": self.summary,
            "timeZone": self.time_zone,
        })
    }
}

#[derive(Default)]
struct State_ {
    calendars: Vec<CalendarRec>,
    tokens: HashMap<String, IssuedToken>,
    /// Sync tokens carry this epoch; bumping it makes every older token stale (410).
    sync_epoch: u64,
    rate_limited: Option<(usize, RateLimit)>,
    etag_counter: u64,
    token_requests: usize,
}

impl State_ {
    fn calendar(&mut self, id: &str) -> Option<&mut CalendarRec> {
        self.calendars.iter_mut().find(|c| c.id == id)
    }

    fn next_etag(&mut self, now: DateTime<Utc>) -> String {
        self.etag_counter += 1;
        format!(
            "\"{}{:03}\"",
            now.timestamp_micros(),
            self.etag_counter % 1000
        )
    }
}

#[derive(Clone)]
struct Shared {
    config: Arc<GoogleCalendarConfig>,
    state: Arc<Mutex<State_>>,
}

/// A running Google Calendar fake. Stops when dropped.
pub struct GoogleCalendarFake {
    server: RunningServer,
    shared: Shared,
    controls: Controls,
}

impl std::fmt::Debug for GoogleCalendarFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleCalendarFake")
            .field("addr", &self.server.addr())
            .finish()
    }
}

/// Starts the fake; the primary calendar exists from the start.
pub async fn start(config: GoogleCalendarConfig) -> Result<GoogleCalendarFake, StartError> {
    let mut state = State_::default();
    state.calendars.push(CalendarRec::new(
        &config.primary_calendar_id,
        &config.primary_calendar_id,
        "Europe/Berlin",
    ));
    let shared = Shared {
        config: Arc::new(config),
        state: Arc::new(Mutex::new(state)),
    };
    let controls = Controls::default();
    let router = Router::new()
        .route("/token", post(token))
        .route("/calendar/v3/users/me/calendarList", get(calendar_list))
        .route("/calendar/v3/calendars", post(insert_calendar))
        .route(
            "/calendar/v3/calendars/{cal}",
            get(get_calendar).delete(delete_calendar),
        )
        .route(
            "/calendar/v3/calendars/{cal}/events",
            get(list_events).post(insert_event),
        )
        .route(
            "/calendar/v3/calendars/{cal}/events/{event}",
            get(get_event)
                .put(update_event)
                .patch(patch_event)
                .delete(delete_event),
        )
        .fallback(not_found)
        .with_state(shared.clone());
    let server =
        RunningServer::spawn(shared.config.bind, router, controls.clone(), error_shape).await?;
    Ok(GoogleCalendarFake {
        server,
        shared,
        controls,
    })
}

impl GoogleCalendarFake {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// For `CalendarHub::base_url` (trailing slash included).
    pub fn api_base_url(&self) -> String {
        format!("{}/calendar/v3/", self.base_url())
    }

    /// For `CalendarHub::root_url` (trailing slash included).
    pub fn root_url(&self) -> String {
        format!("{}/", self.base_url())
    }

    /// `token_uri` for a service-account key file.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    pub fn clock(&self) -> &FakeClock {
        &self.shared.config.clock
    }

    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    pub fn config(&self) -> &GoogleCalendarConfig {
        &self.shared.config
    }

    pub fn primary_calendar_id(&self) -> &str {
        &self.shared.config.primary_calendar_id
    }

    /// Shorthand for [`Controls::fail_next`] (error bodies in Google's shape).
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.controls.fail_next(n, status, retry_after);
    }

    /// The next `n` calendar API calls (after authentication) fail with a quota error.
    pub fn rate_limit_next(&self, n: usize, kind: RateLimit) {
        self.shared.state.lock().rate_limited = (n > 0).then_some((n, kind));
    }

    /// Every sync token issued so far answers 410 `fullSyncRequired` from now on.
    pub fn invalidate_sync_tokens(&self) {
        self.shared.state.lock().sync_epoch += 1;
    }

    /// Creates a calendar as its owner would; returns its id.
    pub fn add_calendar(&self, summary: &str) -> String {
        let id = format!(
            "{}@group.calendar.google.com",
            random_string(26).to_ascii_lowercase()
        );
        self.add_calendar_with_id(&id, summary);
        id
    }

    /// Creates (or keeps) a calendar with a given id.
    pub fn add_calendar_with_id(&self, id: &str, summary: &str) {
        let mut state = self.shared.state.lock();
        if state.calendar(id).is_none() {
            state
                .calendars
                .push(CalendarRec::new(id, summary, "Europe/Berlin"));
        }
    }

    /// Ids of all calendars.
    pub fn calendar_ids(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .calendars
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    /// All events of a calendar as stored, cancelled ones included.
    pub fn events(&self, calendar_id: &str) -> Vec<Value> {
        let cal = self.resolve(calendar_id);
        let mut state = self.shared.state.lock();
        state
            .calendar(&cal)
            .map(|c| c.events.iter().map(|e| e.value.clone()).collect())
            .unwrap_or_default()
    }

    /// Events that are not cancelled.
    pub fn live_events(&self, calendar_id: &str) -> Vec<Value> {
        self.events(calendar_id)
            .into_iter()
            .filter(|e| e["status"] != "cancelled")
            .collect()
    }

    pub fn event(&self, calendar_id: &str, event_id: &str) -> Option<Value> {
        self.events(calendar_id)
            .into_iter()
            .find(|e| e["id"] == event_id)
    }

    /// Inserts an event as a user in Google Calendar would (validated like the API; not counted).
    pub fn user_insert_event(&self, calendar_id: &str, event: Value) -> Result<Value, String> {
        let cal = self.resolve(calendar_id);
        let now = self.clock().now();
        let mut state = self.shared.state.lock();
        do_insert(&mut state, &cal, event, now).map_err(|(_, _, msg)| msg)
    }

    /// Changes an event as a user would (patch semantics; not counted).
    pub fn user_patch_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        patch: Value,
    ) -> Result<Value, String> {
        let cal = self.resolve(calendar_id);
        let now = self.clock().now();
        let mut state = self.shared.state.lock();
        do_update(&mut state, &cal, event_id, patch, true, now).map_err(|(_, _, msg)| msg)
    }

    /// Deletes an event as a user would (it becomes `cancelled`; not counted).
    pub fn user_delete_event(&self, calendar_id: &str, event_id: &str) -> Result<(), String> {
        let cal = self.resolve(calendar_id);
        let now = self.clock().now();
        let mut state = self.shared.state.lock();
        do_delete(&mut state, &cal, event_id, now).map_err(|(_, _, msg)| msg)
    }

    /// API call counters of a calendar.
    pub fn calls(&self, calendar_id: &str) -> CallCounts {
        let cal = self.resolve(calendar_id);
        self.shared
            .state
            .lock()
            .calendar(&cal)
            .map(|c| c.counts)
            .unwrap_or_default()
    }

    /// Zeroes the call counters of every calendar.
    pub fn reset_calls(&self) {
        for cal in &mut self.shared.state.lock().calendars {
            cal.counts = CallCounts::default();
        }
    }

    /// Tokens issued by `POST /token`.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.shared.state.lock().tokens.values().cloned().collect()
    }

    /// Requests to `POST /token`, successful or not.
    pub fn token_requests(&self) -> usize {
        self.shared.state.lock().token_requests
    }

    /// Writes a service-account key file (the JSON the Cloud console downloads) whose
    /// `token_uri` is this fake's token endpoint, into `dir`. The RSA key is generated on the
    /// spot with `openssl genpkey`, so no private key ever lives in git; the fake does not check
    /// signatures, but `yup-oauth2` needs a real key to sign its JWT.
    pub fn write_service_account_key(
        &self,
        dir: &std::path::Path,
        client_email: &str,
    ) -> std::io::Result<std::path::PathBuf> {
        let pem_path = dir.join("sa-key.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&pem_path)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "openssl genpkey failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let pem = std::fs::read_to_string(&pem_path)?;
        std::fs::remove_file(&pem_path)?;
        let key = json!({
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": "fake-key-1",
            "private_key": pem,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
        });
        let path = dir.join("service-account.json");
        std::fs::write(&path, key.to_string())?;
        Ok(path)
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }

    fn resolve(&self, calendar_id: &str) -> String {
        resolve(&self.shared, calendar_id)
    }
}

fn resolve(shared: &Shared, calendar_id: &str) -> String {
    if calendar_id == "primary" {
        shared.config.primary_calendar_id.clone()
    } else {
        calendar_id.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors in Google's JSON shape

type ApiError = (StatusCode, &'static str, String);

fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        410 => "NOT_FOUND",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let domain = match reason {
        "rateLimitExceeded" | "userRateLimitExceeded" | "quotaExceeded" => "usageLimits",
        "fullSyncRequired" => "calendar",
        _ => "global",
    };
    let mut error = json!({"domain": domain, "reason": reason, "message": message});
    if reason == "authError" {
        error["location"] = json!("Authorization");
        error["locationType"] = json!("header");
    }
    json_response(
        status,
        json!({"error": {"code": status.as_u16(), "message": message, "errors": [error], "status": status_name(status)}}),
    )
}

fn api_error((status, reason, message): ApiError) -> Response {
    google_error(status, reason, &message)
}

fn error_shape(status: StatusCode) -> Response {
    let reason = match status.as_u16() {
        400 => "badRequest",
        401 => "authError",
        403 => "forbidden",
        404 => "notFound",
        409 => "conflict",
        410 => "deleted",
        412 => "conditionNotMet",
        429 => "rateLimitExceeded",
        _ => "backendError",
    };
    google_error(status, reason, status.canonical_reason().unwrap_or("Error"))
}

fn bad(message: impl Into<String>) -> ApiError {
    (StatusCode::BAD_REQUEST, "invalid", message.into())
}

fn not_found_err() -> ApiError {
    (StatusCode::NOT_FOUND, "notFound", "Not Found".into())
}

async fn not_found() -> Response {
    google_error(StatusCode::NOT_FOUND, "notFound", "Not Found")
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn decode_jwt_part(part: &str) -> Option<Value> {
    let bytes = B64URL.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn token(State(shared): State<Shared>, body: Bytes) -> Response {
    shared.state.lock().token_requests += 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: not three segments",
        );
    };
    if signature.is_empty() || B64URL.decode(signature.trim_end_matches('=')).is_err() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    }
    let (Some(header), Some(claims)) = (decode_jwt_part(header), decode_jwt_part(claims)) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: segments are not base64url JSON",
        );
    };
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: alg must be RS256",
        );
    }
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (Some(iss), Some(scope), Some(_aud)) = (text("iss"), text("scope"), text("aud")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: iss, scope and aud are required",
        );
    };
    let (Some(exp), iat) = (
        claims.get("exp").and_then(Value::as_i64),
        claims.get("iat").and_then(Value::as_i64),
    ) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: exp is required",
        );
    };
    let now = shared.config.clock.now();
    if exp <= now.timestamp() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe. Check your iat and exp values.");
    }
    if let Some(iat) = iat {
        if exp - iat > 3600 || iat > now.timestamp() + 300 {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values.");
        }
    }
    let access_token = format!("ya29.fake-{}", random_string(40));
    let issued = IssuedToken {
        access_token: access_token.clone(),
        iss,
        sub: text("sub"),
        scope,
        expires_at: now + Duration::seconds(shared.config.token_lifetime_secs),
    };
    shared
        .state
        .lock()
        .tokens
        .insert(access_token.clone(), issued);
    json_response(
        StatusCode::OK,
        json!({"access_token": access_token, "expires_in": shared.config.token_lifetime_secs, "token_type": "Bearer"}),
    )
}

// ---------------------------------------------------------------------------------------------
// Request gate: authentication, quota

enum Op {
    List,
    Get,
    Write,
    Other,
}

/// Checks the bearer token and injected quota errors, resolves `primary`, checks the calendar
/// exists and counts the call. Returns the resolved calendar id.
fn gate(
    shared: &Shared,
    headers: &HeaderMap,
    cal: Option<&str>,
    op: Op,
) -> Result<String, Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let now = shared.config.clock.now();
    let mut state = shared.state.lock();
    let valid = match &token {
        Some(t) if shared.config.static_token.as_deref() == Some(t.as_str()) => true,
        Some(t) => state.tokens.get(t).is_some_and(|rec| rec.expires_at > now),
        None => false,
    };
    if !valid {
        let message = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.";
        return Err(google_error(StatusCode::UNAUTHORIZED, "authError", message));
    }
    if let Some((n, kind)) = state.rate_limited {
        state.rate_limited = (n > 1).then_some((n - 1, kind));
        let status = match kind {
            RateLimit::Forbidden403 => StatusCode::FORBIDDEN,
            RateLimit::TooManyRequests429 => StatusCode::TOO_MANY_REQUESTS,
        };
        return Err(google_error(
            status,
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        ));
    }
    let Some(cal) = cal else {
        return Ok(String::new());
    };
    let cal = resolve(shared, cal);
    let Some(rec) = state.calendar(&cal) else {
        return Err(api_error(not_found_err()));
    };
    match op {
        Op::List => rec.counts.lists += 1,
        Op::Get => rec.counts.gets += 1,
        Op::Write => rec.counts.writes += 1,
        Op::Other => {}
    }
    Ok(cal)
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err((
            StatusCode::BAD_REQUEST,
            "parseError",
            "This API does not support parsing form-encoded input.".into(),
        )),
        Err(_) => Err((StatusCode::BAD_REQUEST, "parseError", "Parse Error".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// Calendars

async fn calendar_list(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = gate(&shared, &headers, None, Op::Other) {
        return r;
    }
    let primary = shared.config.primary_calendar_id.clone();
    let items: Vec<Value> = shared
        .state
        .lock()
        .calendars
        .iter()
        .map(|c| {
            let mut entry = c.as_json("calendar#calendarListEntry");
            entry["accessRole"] = json!("owner");
            if c.id == primary {
                entry["primary"] = json!(true);
            }
            entry
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({"kind": "calendar#calendarList", "etag": "\"p33c\"", "items": items}),
    )
}

async fn insert_calendar(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&shared, &headers, None, Op::Other) {
        return r;
    }
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return api_error(e),
    };
    let Some(summary) = body
        .get("summary")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return google_error(StatusCode::BAD_REQUEST, "required", "Missing title.");
    };
    let tz = body
        .get("timeZone")
        .and_then(Value::as_str)
        .unwrap_or("Europe/Berlin");
    let id = format!(
        "{}@group.calendar.google.com",
        random_string(26).to_ascii_lowercase()
    );
    let rec = CalendarRec::new(&id, summary, tz);
    let out = rec.as_json("calendar#calendar");
    shared.state.lock().calendars.push(rec);
    json_response(StatusCode::OK, out)
}

async fn get_calendar(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(cal): Path<String>,
) -> Response {
    let cal = match gate(&shared, &headers, Some(&cal), Op::Other) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match shared.state.lock().calendar(&cal) {
        Some(c) => json_response(StatusCode::OK, c.as_json("calendar#calendar")),
        None => api_error(not_found_err()),
    }
}

async fn delete_calendar(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(cal): Path<String>,
) -> Response {
    let cal = match gate(&shared, &headers, Some(&cal), Op::Other) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if cal == shared.config.primary_calendar_id {
        return google_error(
            StatusCode::BAD_REQUEST,
            "cannotDeletePrimaryCalendar",
            "Cannot delete primary calendar.",
        );
    }
    shared.state.lock().calendars.retain(|c| c.id != cal);
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------------------------------------
// Event validation and storage

/// Client-settable event fields kept as sent; everything else is server-owned.
const SERVER_FIELDS: [&str; 10] = [
    "kind",
    "etag",
    "id",
    "htmlLink",
    "created",
    "updated",
    "iCalUID",
    "creator",
    "organizer",
    "sequence",
];

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Start or end as a UTC instant (all-day dates at midnight UTC: good enough for range filters).
fn instant(v: &Value) -> Option<DateTime<Utc>> {
    if let Some(dt) = v.get("dateTime").and_then(Value::as_str) {
        return DateTime::parse_from_rfc3339(dt)
            .ok()
            .map(|d| d.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(v.get("date")?.as_str()?, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

fn validate_when(event: &Value, which: &str, recurring: bool) -> Result<(), ApiError> {
    let Some(when) = event.get(which).filter(|v| v.is_object()) else {
        let msg = if which == "end" {
            "Missing end time."
        } else {
            "Missing start time."
        };
        return Err((StatusCode::BAD_REQUEST, "required", msg.into()));
    };
    let date = when.get("date").filter(|v| !v.is_null());
    let date_time = when.get("dateTime").filter(|v| !v.is_null());
    match (date, date_time) {
        (Some(d), None) => {
            if d.as_str()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .is_none()
            {
                return Err(bad(format!("Invalid {which} time.")));
            }
        }
        (None, Some(dt)) => {
            if dt
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .is_none()
            {
                return Err(bad(format!("Invalid {which} time.")));
            }
            let has_tz = when
                .get("timeZone")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if recurring && !has_tz {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "required",
                    format!("Missing time zone definition for {which} time."),
                ));
            }
        }
        _ => return Err(bad(format!("Invalid {which} time."))),
    }
    Ok(())
}

fn validate_event(event: &Value) -> Result<(), ApiError> {
    let recurrence = event.get("recurrence").filter(|v| !v.is_null());
    if let Some(rules) = recurrence {
        let ok = rules.as_array().is_some_and(|list| {
            list.iter().all(|r| {
                r.as_str().is_some_and(|s| {
                    ["RRULE:", "EXRULE:", "RDATE", "EXDATE"]
                        .iter()
                        .any(|p| s.starts_with(p))
                })
            })
        });
        if !ok {
            return Err(bad("Invalid recurrence rule."));
        }
    }
    let recurring = recurrence
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    validate_when(event, "start", recurring)?;
    validate_when(event, "end", recurring)?;
    let (Some(start), Some(end)) = (event.get("start"), event.get("end")) else {
        return Err(bad("Missing start or end time."));
    };
    if start.get("date").is_some_and(|v| !v.is_null())
        != end.get("date").is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "Start and end times must either both be date or both be dateTime.",
        ));
    }
    if let (Some(s), Some(e)) = (instant(start), instant(end)) {
        if e < s {
            return Err((
                StatusCode::BAD_REQUEST,
                "timeRangeEmpty",
                "The specified time range is empty.".into(),
            ));
        }
    }
    if let Some(props) = event.get("extendedProperties").filter(|v| !v.is_null()) {
        for scope in ["private", "shared"] {
            if let Some(map) = props.get(scope).filter(|v| !v.is_null()) {
                let ok = map
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string));
                if !ok {
                    return Err(bad(format!(
                        "Invalid extendedProperties.{scope}: values must be strings."
                    )));
                }
            }
        }
    }
    if let Some(status) = event.get("status").and_then(Value::as_str) {
        if !["confirmed", "tentative", "cancelled"].contains(&status) {
            return Err(bad("Invalid value for status."));
        }
    }
    Ok(())
}

/// Google event ids: base32hex characters (a–v, 0–9), 5 to 1024 long.
fn valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

fn new_event_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let mut rng = rand::rng();
    (0..26)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn do_insert(
    state: &mut State_,
    cal: &str,
    mut event: Value,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    validate_event(&event)?;
    let id = match event.get("id").filter(|v| !v.is_null()) {
        Some(v) => {
            let id = v.as_str().unwrap_or_default().to_owned();
            if !valid_event_id(&id) {
                return Err(bad("Invalid resource id value."));
            }
            id
        }
        None => new_event_id(),
    };
    let etag = state.next_etag(now);
    let Some(rec) = state.calendar(cal) else {
        return Err(not_found_err());
    };
    if rec.position(&id).is_some() {
        return Err((
            StatusCode::CONFLICT,
            "duplicate",
            "The requested identifier already exists.".into(),
        ));
    }
    if let Some(map) = event.as_object_mut() {
        for field in SERVER_FIELDS {
            map.remove(field);
        }
        map.entry("status").or_insert(json!("confirmed"));
        map.insert("kind".into(), json!("calendar#event"));
        map.insert("etag".into(), json!(etag));
        map.insert("id".into(), json!(id));
        map.insert(
            "htmlLink".into(),
            json!(format!("https://calendar.google.test/event?eid={id}")),
        );
        map.insert("created".into(), json!(fmt_time(now)));
        map.insert("updated".into(), json!(fmt_time(now)));
        map.insert("iCalUID".into(), json!(format!("{id}@google.com")));
        map.insert("sequence".into(), json!(0));
        map.insert("creator".into(), json!({"email": cal}));
        map.insert("organizer".into(), json!({"email": cal, "self": true}));
        map.entry("reminders")
            .or_insert(json!({"useDefault": true}));
        map.entry("eventType").or_insert(json!("default"));
    }
    let changed = rec.bump();
    rec.events.push(EventRec {
        value: event.clone(),
        changed,
    });
    Ok(event)
}

/// Recursive merge with Google's patch semantics: objects merge, `null` removes, the rest replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    target.remove(k);
                } else if k == "start" || k == "end" {
                    // A start/end switches between `date` and `dateTime` as a whole.
                    target.insert(k.clone(), v.clone());
                } else if let Some(existing) =
                    target.get_mut(k).filter(|e| e.is_object() && v.is_object())
                {
                    merge_patch(existing, v);
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn do_update(
    state: &mut State_,
    cal: &str,
    event_id: &str,
    body: Value,
    patch: bool,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let etag = state.next_etag(now);
    let Some(rec) = state.calendar(cal) else {
        return Err(not_found_err());
    };
    let Some(pos) = rec.position(event_id) else {
        return Err(not_found_err());
    };
    let old = rec.events[pos].value.clone();
    let mut client_part = body;
    if let Some(map) = client_part.as_object_mut() {
        for field in SERVER_FIELDS {
            map.remove(field);
        }
    }
    let mut next = if patch {
        let mut merged = old.clone();
        merge_patch(&mut merged, &client_part);
        merged
    } else {
        let mut replaced = Map::new();
        for field in SERVER_FIELDS {
            if let Some(v) = old.get(field) {
                replaced.insert(field.to_owned(), v.clone());
            }
        }
        if let Value::Object(client) = client_part {
            replaced.extend(client);
        }
        replaced.entry("status").or_insert(json!("confirmed"));
        Value::Object(replaced)
    };
    validate_event(&next)?;
    let timing_changed = ["start", "end", "recurrence"]
        .iter()
        .any(|f| old.get(*f) != next.get(*f));
    let sequence =
        old.get("sequence").and_then(Value::as_i64).unwrap_or(0) + i64::from(timing_changed);
    if let Some(map) = next.as_object_mut() {
        map.insert("etag".into(), json!(etag));
        map.insert("updated".into(), json!(fmt_time(now)));
        map.insert("sequence".into(), json!(sequence));
    }
    let changed = rec.bump();
    rec.events[pos] = EventRec {
        value: next.clone(),
        changed,
    };
    Ok(next)
}

fn do_delete(
    state: &mut State_,
    cal: &str,
    event_id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let etag = state.next_etag(now);
    let Some(rec) = state.calendar(cal) else {
        return Err(not_found_err());
    };
    let Some(pos) = rec.position(event_id) else {
        return Err(not_found_err());
    };
    if rec.events[pos].value.get("status").and_then(Value::as_str) == Some("cancelled") {
        return Err((
            StatusCode::GONE,
            "deleted",
            "Resource has been deleted".into(),
        ));
    }
    let changed = rec.bump();
    let event = &mut rec.events[pos];
    event.changed = changed;
    if let Some(map) = event.value.as_object_mut() {
        map.insert("status".into(), json!("cancelled"));
        map.insert("etag".into(), json!(etag));
        map.insert("updated".into(), json!(fmt_time(now)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Event handlers

async fn insert_event(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(cal): Path<String>,
    body: Bytes,
) -> Response {
    let cal = match gate(&shared, &headers, Some(&cal), Op::Write) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let event = match parse_body(&body) {
        Ok(e) => e,
        Err(e) => return api_error(e),
    };
    let now = shared.config.clock.now();
    match do_insert(&mut shared.state.lock(), &cal, event, now) {
        Ok(ev) => json_response(StatusCode::OK, ev),
        Err(e) => api_error(e),
    }
}

async fn get_event(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((cal, event_id)): Path<(String, String)>,
) -> Response {
    let cal = match gate(&shared, &headers, Some(&cal), Op::Get) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut state = shared.state.lock();
    let found = state
        .calendar(&cal)
        .and_then(|c| c.position(&event_id).map(|p| c.events[p].value.clone()));
    match found {
        Some(ev) => json_response(StatusCode::OK, ev),
        None => api_error(not_found_err()),
    }
}

async fn update_event(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((cal, event_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    write_event(shared, headers, cal, event_id, body, false)
}

async fn patch_event(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((cal, event_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    write_event(shared, headers, cal, event_id, body, true)
}

fn write_event(
    shared: Shared,
    headers: HeaderMap,
    cal: String,
    event_id: String,
    body: Bytes,
    patch: bool,
) -> Response {
    let cal = match gate(&shared, &headers, Some(&cal), Op::Write) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return api_error(e),
    };
    let now = shared.config.clock.now();
    match do_update(&mut shared.state.lock(), &cal, &event_id, body, patch, now) {
        Ok(ev) => json_response(StatusCode::OK, ev),
        Err(e) => api_error(e),
    }
}

async fn delete_event(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((cal, event_id)): Path<(String, String)>,
) -> Response {
    let cal = match gate(&shared, &headers, Some(&cal), Op::Write) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = shared.config.clock.now();
    match do_delete(&mut shared.state.lock(), &cal, &event_id, now) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Listing, paging and sync tokens

/// Where a listing continues: offset into the filtered result, the change counter the listing
/// started at, and (for incremental lists) the counter the sync token stood for.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    c: String,
    e: u64,
    o: usize,
    at: u64,
    since: Option<u64>,
}

fn encode_cursor<T: serde::Serialize>(value: &T) -> String {
    B64URL.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode_cursor<T: serde::de::DeserializeOwned>(token: &str) -> Option<T> {
    serde_json::from_slice(&B64URL.decode(token).ok()?).ok()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SyncToken {
    c: String,
    e: u64,
    s: u64,
}

fn full_sync_required() -> Response {
    google_error(
        StatusCode::GONE,
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
    )
}

fn is_recurring(ev: &Value) -> bool {
    ev.get("recurrence")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
}

/// The minimal form Google returns for deleted events in lists.
fn cancelled_stub(ev: &Value) -> Value {
    json!({"kind": "calendar#event", "etag": ev["etag"], "id": ev["id"], "status": "cancelled"})
}

async fn list_events(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(cal): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let cal = match gate(&shared, &headers, Some(&cal), Op::List) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let flag = |name: &str| param(name) == Some("true");
    let sync_token = param("syncToken");
    if sync_token.is_some() {
        let forbidden = [
            "timeMin",
            "timeMax",
            "q",
            "orderBy",
            "updatedMin",
            "privateExtendedProperty",
            "sharedExtendedProperty",
            "iCalUID",
        ];
        if let Some(bad_param) = forbidden.iter().find(|p| param(p).is_some()) {
            return google_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("Sync token cannot be used with {bad_param}."),
            );
        }
    }
    let max_results = match param("maxResults").map(str::parse::<usize>) {
        None => 250,
        Some(Ok(n)) if n >= 1 => n.min(2500),
        Some(_) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "Invalid value for maxResults.",
            )
        }
    };
    if param("orderBy") == Some("startTime") && !flag("singleEvents") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "The requested ordering is not available for the particular query.",
        );
    }
    let bound = |name: &str| -> Result<Option<DateTime<Utc>>, Response> {
        match param(name) {
            None => Ok(None),
            Some(raw) => DateTime::parse_from_rfc3339(raw)
                .map(|d| Some(d.with_timezone(&Utc)))
                .map_err(|_| google_error(StatusCode::BAD_REQUEST, "badRequest", "Bad Request")),
        }
    };
    let (time_min, time_max, updated_min) =
        match (bound("timeMin"), bound("timeMax"), bound("updatedMin")) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
        };
    let private_filters: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k == "privateExtendedProperty")
        .filter_map(|(_, v)| v.split_once('=').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    let text = param("q").map(str::to_lowercase);

    let mut state = shared.state.lock();
    let epoch = state.sync_epoch;
    let Some(rec) = state.calendar(&cal) else {
        return api_error(not_found_err());
    };
    // Where this listing stands: continue a page, start incremental, or start full.
    let cursor = if let Some(page) = param("pageToken") {
        match decode_cursor::<Cursor>(page) {
            Some(c) if c.c == cal => {
                if c.e != epoch && c.since.is_some() {
                    return full_sync_required();
                }
                c
            }
            _ => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "Invalid page token value.",
                )
            }
        }
    } else if let Some(token) = sync_token {
        match decode_cursor::<SyncToken>(token) {
            Some(t) if t.c == cal && t.e == epoch && t.s <= rec.change_seq => Cursor {
                c: cal.clone(),
                e: epoch,
                o: 0,
                at: rec.change_seq,
                since: Some(t.s),
            },
            Some(_) => return full_sync_required(),
            None => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "Invalid sync token value.",
                )
            }
        }
    } else {
        Cursor {
            c: cal.clone(),
            e: epoch,
            o: 0,
            at: rec.change_seq,
            since: None,
        }
    };
    let show_deleted = flag("showDeleted") || cursor.since.is_some();
    let base: Vec<Value> = rec
        .events
        .iter()
        .filter(|e| match cursor.since {
            Some(since) => e.changed > since,
            None => true,
        })
        .map(|e| &e.value)
        .filter(|ev| show_deleted || ev.get("status").and_then(Value::as_str) != Some("cancelled"))
        .filter(|ev| {
            updated_min.is_none_or(|min| {
                ev.get("updated")
                    .and_then(Value::as_str)
                    .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
                    .is_none_or(|u| u.with_timezone(&Utc) >= min)
            })
        })
        .filter(|ev| {
            private_filters.iter().all(|(k, v)| {
                ev.pointer(&format!("/extendedProperties/private/{k}"))
                    .and_then(Value::as_str)
                    == Some(v.as_str())
            })
        })
        .filter(|ev| {
            text.as_deref().is_none_or(|q| {
                ["summary", "description", "location"].iter().any(|f| {
                    ev.get(*f)
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.to_lowercase().contains(q))
                })
            })
        })
        .cloned()
        .collect();
    // singleEvents=true: recurring series become their instances (cancelled series stay stubs).
    let single = flag("singleEvents");
    let mut expanded = Vec::with_capacity(base.len());
    for ev in base {
        let live_series =
            is_recurring(&ev) && ev.get("status").and_then(Value::as_str) != Some("cancelled");
        if single && live_series {
            match recurrence::expand(&ev, time_max) {
                Ok(instances) => expanded.extend(instances),
                Err(recurrence::Unsupported(what)) => {
                    return google_error(
                        StatusCode::NOT_IMPLEMENTED,
                        "notImplemented",
                        &format!("bitbylaw-fakes cannot expand this recurrence faithfully: {what}"),
                    )
                }
            }
        } else {
            expanded.push(ev);
        }
    }
    let mut matching: Vec<Value> = expanded
        .into_iter()
        .filter(|ev| {
            let start = ev.get("start").and_then(instant);
            let end = ev.get("end").and_then(instant);
            // A series master overlaps any window after its start (its end is the first instance's).
            let after_min =
                time_min.is_none_or(|min| is_recurring(ev) || end.is_none_or(|end| end > min));
            let before_max = time_max.is_none_or(|max| start.is_none_or(|start| start < max));
            after_min && before_max
        })
        .collect();
    if single && param("orderBy") == Some("startTime") {
        matching.sort_by_key(|ev| ev.get("start").and_then(instant));
    }
    let mut items: Vec<Value> = matching
        .iter()
        .skip(cursor.o)
        .take(max_results)
        .cloned()
        .collect();
    for item in &mut items {
        if item.get("status").and_then(Value::as_str) == Some("cancelled") {
            *item = cancelled_stub(item);
        }
    }
    let next_offset = cursor.o + items.len();
    let mut out = json!({
        "kind": "calendar#events",
        "etag": format!("\"{}\"", rec.change_seq),
        "summary": rec.summary,
        "timeZone": rec.time_zone,
        "accessRole": "owner",
        "updated": fmt_time(shared.config.clock.now()),
        "defaultReminders": [],
        "items": items,
    });
    if next_offset < matching.len() {
        let next = Cursor {
            o: next_offset,
            ..cursor
        };
        out["nextPageToken"] = json!(encode_cursor(&next));
    } else {
        let token = SyncToken {
            c: cal,
            e: epoch,
            s: cursor.at,
        };
        out["nextSyncToken"] = json!(encode_cursor(&token));
    }
    json_response(StatusCode::OK, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_base32hex() {
        assert!(valid_event_id("abcdev01234"));
        assert!(!valid_event_id("abcw1"));
        assert!(!valid_event_id("ab1"));
        assert!(valid_event_id(&new_event_id()));
    }

    #[test]
    fn recurring_timed_events_need_a_time_zone() {
        let ev = json!({
            "start": {"dateTime": "2026-12-07T08:00:00+01:00"},
            "end": {"dateTime": "2026-12-07T08:30:00+01:00"},
            "recurrence": ["RRULE:FREQ=WEEKLY"],
        });
        assert_eq!(validate_event(&ev).err().map(|e| e.1), Some("required"));
        let all_day = json!({"start": {"date": "2026-12-24"}, "end": {"date": "2026-12-27"}, "recurrence": ["RRULE:FREQ=YEARLY"]});
        assert!(validate_event(&all_day).is_ok());
        let backwards = json!({"start": {"date": "2026-12-24"}, "end": {"date": "2026-12-20"}});
        assert_eq!(
            validate_event(&backwards).err().map(|e| e.1),
            Some("timeRangeEmpty")
        );
    }

    #[test]
    fn patch_merges_objects_and_null_removes() {
        let mut target = json!({"a": {"x": 1, "y": 2}, "b": 1});
        merge_patch(&mut target, &json!({"a": {"y": null, "z": 3}, "b": [1]}));
        assert_eq!(target, json!({"a": {"x": 1, "z": 3}, "b": [1]}));
    }
}
