//! Parts 2 and 3 of the filter: the root context (configuration, metrics)
//! and the HTTP context (one per request).
//!
//! Host calls go through `proxy_wasm::hostcalls` and their `Result`s are
//! handled; the SDK's trait helpers (`get_http_request_header`, …) are not
//! used because they `unwrap` and would trap the filter (→ HTTP 500) on an
//! unexpected host status or on a non-UTF-8 header value.
//!
//! # Request flow (event mode)
//! 1. `on_http_request_headers`: topic from the path (404), content type
//!    (415), Content-Length over the limit (413) or no body at all (400 — in
//!    Kong the body hook is not called without a body, so an unverified
//!    request would pass), capture the credential headers; a shared token is
//!    verified right here (401).
//! 2. `on_http_request_body`: buffer until end of stream (`Pause`; 413 as
//!    soon as the limit is passed), then verify the signature (401), dedup key
//!    over canonical JSON (400), payload shape (400), edge dedup lookup
//!    (200 duplicate), and rewrite the request for the worker.
//! 3. `on_http_response_headers`: a 2xx from the worker marks the event as
//!    seen in the dedup memory.
//!
//! In verify-only mode (no body) the credential is checked and removed in
//! `on_http_request_headers`, and the forward gets `X-Event-Topic` (the
//! route's fixed topic), `X-Event-Id`, `X-Received-At` and
//! `X-Gateway-Signature` signed with [`sign_gateway_event`] over that topic
//! and, as body, the forwarded path and query (so the looked-up number is
//! covered); the upstream path is set to exactly those bytes.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use bitbylaw_core::advoware::uuid_v4_from_bytes;
use bitbylaw_core::canonical::Document;
use bitbylaw_core::endpoint::{extract_param, percent_decode};
use bitbylaw_core::gateway::{
    is_valid_event_id, sign_gateway_event, HEADER_DEDUP_KEY, HEADER_EVENT_ID, HEADER_EVENT_TOPIC,
    HEADER_GATEWAY_SIGNATURE, HEADER_RECEIVED_AT,
};
use bitbylaw_core::webhook::SignatureError;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::config::{Config, Mode, TokenSource, Verifier};
use crate::dedup::{slot_index, slot_key, Entry};
use crate::payload::check_document;
use crate::verify::{
    verify, Presented, H_SIGNATURE, H_WEBHOOK_ID, H_WEBHOOK_SIGNATURE, H_WEBHOOK_TIMESTAMP,
    H_X_SIGNATURE,
};

/// Bounded retries of a shared-data compare-and-swap.
const CAS_ATTEMPTS: usize = 4;

// ---------------------------------------------------------------------------
// Outcomes and metrics

/// What happened to a request; each has a counter `<route>_<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    BadSignature,
    Stale,
    TooLarge,
    Malformed,
    UnsupportedMediaType,
    /// The host could not hand over the body (Kong spilled it to a file).
    BodyUnreadable,
    /// Validly signed by a webhook that is not bound to the path's action.
    ActionMismatch,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::BadSignature,
        Outcome::Stale,
        Outcome::TooLarge,
        Outcome::Malformed,
        Outcome::UnsupportedMediaType,
        Outcome::BodyUnreadable,
        Outcome::ActionMismatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::BadSignature => "bad_signature",
            Outcome::Stale => "stale",
            Outcome::TooLarge => "too_large",
            Outcome::Malformed => "malformed",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::BodyUnreadable => "body_unreadable",
            Outcome::ActionMismatch => "action_mismatch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counter ids of one route (`None` when the host refused a definition).
#[derive(Debug, Default)]
struct Metrics {
    ids: [Option<u32>; Outcome::ALL.len()],
    /// `<route>_invalid_entries`: batch entries skipped by the shared batch
    /// rule (`bitbylaw_core::batch`) in forwarded batches.
    invalid_entries: Option<u32>,
}

impl Metrics {
    fn define(route: &str) -> Metrics {
        let mut m = Metrics::default();
        for o in Outcome::ALL {
            m.ids[o.index()] =
                hostcalls::define_metric(MetricType::Counter, &format!("{route}_{}", o.name()))
                    .ok();
        }
        m.invalid_entries =
            hostcalls::define_metric(MetricType::Counter, &format!("{route}_invalid_entries")).ok();
        m
    }

    fn count(&self, o: Outcome) {
        if let Some(id) = self.ids[o.index()] {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn count_invalid_entries(&self, n: usize) {
        if let Some(id) = self.invalid_entries {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

// ---------------------------------------------------------------------------
// Root context

/// One per filter entry in a chain: owns the parsed configuration.
#[derive(Default)]
pub struct GuardRoot {
    shared: Option<Rc<Shared>>,
}

/// What every request of a route reads.
struct Shared {
    cfg: Config,
    metrics: Metrics,
}

impl Context for GuardRoot {}

impl RootContext for GuardRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        match Config::parse(&bytes) {
            Ok(cfg) => {
                let metrics = Metrics::define(&cfg.route);
                log(
                    LogLevel::Info,
                    &format!(
                        "webhook_guard: route {} configured (scheme {}, {:?} mode, dedup window {} s)",
                        cfg.route,
                        cfg.verifier.scheme(),
                        cfg.mode,
                        cfg.dedup_window_secs
                    ),
                );
                self.shared = Some(Rc::new(Shared { cfg, metrics }));
                true
            }
            Err(problems) => {
                log(
                    LogLevel::Error,
                    &format!(
                        "webhook_guard: invalid configuration: {}",
                        problems.join("; ")
                    ),
                );
                self.shared = None;
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Guard {
            shared: self.shared.clone(),
            state: State::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// ---------------------------------------------------------------------------
// HTTP context

#[derive(Default)]
struct State {
    /// A local response was sent (or the request needs nothing more).
    done: bool,
    topic: String,
    /// The path's remaining query (token parameter removed), without `?`.
    query: String,
    presented: Presented,
    /// Set once the event went upstream: (topic, dedup key).
    forwarded: Option<(String, String)>,
}

/// One request.
pub struct Guard {
    shared: Option<Rc<Shared>>,
    state: State,
}

fn header(map: MapType, name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(map, name) {
        Ok(Some(b)) => Some(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }),
        _ => None,
    }
}

fn req_header(name: &str) -> Option<String> {
    header(MapType::HttpRequestHeaders, name)
}

fn set_req_header(name: &str, value: &str) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
}

/// The headers the filter sets for the worker; a client's values must never pass.
const GATEWAY_HEADERS: [&str; 5] = [
    HEADER_EVENT_TOPIC,
    HEADER_EVENT_ID,
    HEADER_DEDUP_KEY,
    HEADER_RECEIVED_AT,
    HEADER_GATEWAY_SIGNATURE,
];

/// Every header that may carry a sender credential on this route.
fn credential_headers(cfg: &Config) -> Vec<&str> {
    let mut names = vec![
        H_SIGNATURE,
        H_X_SIGNATURE,
        H_WEBHOOK_SIGNATURE,
        H_WEBHOOK_ID,
        H_WEBHOOK_TIMESTAMP,
    ];
    match &cfg.verifier {
        Verifier::Hmac {
            header,
            timestamp_header,
            ..
        } => {
            names.push(header);
            names.extend(timestamp_header.as_deref());
        }
        Verifier::SharedToken {
            source: TokenSource::Header(h),
            ..
        } => names.push(h),
        _ => {}
    }
    names
}

fn now_unix() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// A JSON string literal (for the few dynamic values in response bodies).
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl Guard {
    fn cfg(&self) -> Option<&Config> {
        self.shared.as_deref().map(|s| &s.cfg)
    }

    fn count(&self, o: Outcome) {
        if let Some(s) = &self.shared {
            s.metrics.count(o);
        }
    }

    fn route(&self) -> &str {
        self.cfg().map_or("-", |c| c.route.as_str())
    }

    /// Sends `{"error","message"}` with `status` once, logs `reason` at warn.
    fn reject(
        &mut self,
        status: u32,
        code: &str,
        message: &str,
        outcome: Outcome,
        reason: &str,
    ) -> Action {
        self.count(outcome);
        log(
            LogLevel::Warn,
            &format!(
                "webhook_guard: route {} rejected {status} {code}: {reason}",
                self.route()
            ),
        );
        let body = format!(
            "{{\"error\":{},\"message\":{}}}",
            json_str(code),
            json_str(message)
        );
        self.reply(status, &body, &[]);
        Action::Pause
    }

    fn reply(&mut self, status: u32, body: &str, extra: &[(&str, &str)]) {
        if self.state.done {
            return;
        }
        self.state.done = true;
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(extra);
        // The SDK panics on a non-Ok status; `done` guarantees one call.
        let _ = hostcalls::send_http_response(status, headers, Some(body.as_bytes()));
    }

    fn reject_signature(&mut self, e: &SignatureError) -> Action {
        let outcome = if *e == SignatureError::StaleTimestamp {
            Outcome::Stale
        } else {
            Outcome::BadSignature
        };
        let reason = format!("{} ({e})", e.code());
        self.reject(
            401,
            "invalid_signature",
            "signature verification failed",
            outcome,
            &reason,
        )
    }

    /// Keeps every sender credential away from the upstream. The gateway
    /// headers are then set in place ([`set_req_header`]); verify-only sets
    /// no dedup key, so a client's value of that one is blanked too.
    fn strip_credentials(cfg: &Config) {
        let gateway: &[&str] = match cfg.mode {
            Mode::VerifyOnly => &[HEADER_DEDUP_KEY],
            Mode::Event => &[],
        };
        for h in credential_headers(cfg)
            .into_iter()
            .chain(gateway.iter().copied())
        {
            let _ = kong_compat::blank_request_header(h);
        }
    }

    /// Refuses a request that repeats a credential (401, like any bad
    /// credential) or a gateway header (400): neither can be cleaned in Kong.
    fn refuse_repeated_headers(&mut self, cfg: &Config) -> Option<Action> {
        let mut watched = credential_headers(cfg);
        watched.extend(GATEWAY_HEADERS);
        match kong_compat::repeated_request_header(&watched) {
            Ok(Some(name)) if GATEWAY_HEADERS.contains(&name) => Some(self.reject(
                400,
                "duplicate_header",
                "a gateway header was sent more than once",
                Outcome::Malformed,
                &format!("{name} sent more than once"),
            )),
            Ok(Some(name)) => {
                Some(self.reject_signature_reason(&format!("{name} sent more than once")))
            }
            Ok(None) | Err(_) => None,
        }
    }

    fn path_with_query(path: &str, query: &str) -> String {
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        }
    }

    fn on_headers(&mut self) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.reject(
                503,
                "not_configured",
                "webhook guard is not configured",
                Outcome::Malformed,
                "no valid configuration",
            );
        };
        let cfg = &shared.cfg;
        if let Some(refused) = self.refuse_repeated_headers(cfg) {
            return refused;
        }
        let raw_path = req_header(":path").unwrap_or_default();
        let (url_path, query) = raw_path.split_once('?').unwrap_or((raw_path.as_str(), ""));
        let url_path = url_path.to_owned();

        // Credentials that do not need the body.
        match &cfg.verifier {
            Verifier::SharedToken {
                source: TokenSource::Query(name),
                ..
            } => match extract_param(query, name) {
                Ok((value, rest)) => {
                    self.state.presented.token = value.map(|v| {
                        String::from_utf8_lossy(&percent_decode(v.as_bytes())).into_owned()
                    });
                    self.state.query = rest;
                }
                Err(_) => {
                    return self
                        .reject_signature_reason("token query parameter given more than once");
                }
            },
            Verifier::SharedToken {
                source: TokenSource::Header(h),
                ..
            } => {
                self.state.presented.token = req_header(h);
                self.state.query = query.to_owned();
            }
            _ => self.state.query = query.to_owned(),
        }

        if cfg.mode == Mode::VerifyOnly {
            if let Err(e) = verify(
                &cfg.verifier,
                &self.state.presented,
                b"",
                now_unix(),
                cfg.tolerance_secs,
            ) {
                return self.reject_signature(&e);
            }
            // The signed "body" is the path and query exactly as forwarded.
            let base = cfg.forward_path.as_deref().unwrap_or(&url_path);
            let forwarded = Self::path_with_query(base, &self.state.query);
            let topic = cfg
                .topic
                .as_ref()
                .map(|t| t.template.clone())
                .unwrap_or_default();
            let event_id = new_event_id(&cfg.route);
            let now = now_unix();
            let signature = match self.sign(cfg, &topic, &event_id, now, forwarded.as_bytes()) {
                Ok(s) => s,
                Err(rejected) => return rejected,
            };
            Self::strip_credentials(cfg);
            let _ = kong_compat::set_upstream_path(&forwarded);
            set_req_header(HEADER_EVENT_TOPIC, &topic);
            set_req_header(HEADER_EVENT_ID, &event_id);
            set_req_header(HEADER_RECEIVED_AT, &now.to_string());
            set_req_header(HEADER_GATEWAY_SIGNATURE, &signature);
            self.count(Outcome::Accepted);
            self.state.done = true;
            return Action::Continue;
        }

        // Event mode.
        let Some(topic) = cfg.topic.as_ref().and_then(|t| t.topic_for(&url_path)) else {
            return self.reject(
                404,
                "unknown_topic",
                "no event topic for this path",
                Outcome::Malformed,
                "path does not match path_pattern",
            );
        };
        self.state.topic = topic;

        if let Some(want) = &cfg.content_type {
            let got = req_header("content-type").unwrap_or_default();
            let media = got
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if media != *want {
                return self.reject(
                    415,
                    "unsupported_media_type",
                    "unsupported content type",
                    Outcome::UnsupportedMediaType,
                    "content type does not match",
                );
            }
        }

        let chunked = req_header("transfer-encoding").is_some_and(|v| !v.trim().is_empty());
        match req_header("content-length").map(|v| v.trim().parse::<u64>()) {
            Some(Ok(n)) if n > cfg.max_body_bytes => {
                return self.reject(
                    413,
                    "payload_too_large",
                    "request body too large",
                    Outcome::TooLarge,
                    "content-length over max_body_bytes",
                );
            }
            Some(Ok(0)) | None if !chunked => {
                return self.reject(
                    400,
                    "empty_body",
                    "request body required",
                    Outcome::Malformed,
                    "no request body",
                );
            }
            Some(Err(_)) if !chunked => {
                return self.reject(
                    400,
                    "bad_request",
                    "invalid content-length",
                    Outcome::Malformed,
                    "unparsable content-length",
                );
            }
            _ => {}
        }

        let p = &mut self.state.presented;
        match &cfg.verifier {
            Verifier::EspoCrm { .. } => {
                p.signature = req_header(H_SIGNATURE);
                p.x_signature = req_header(H_X_SIGNATURE);
            }
            Verifier::StandardWebhooks { .. } => {
                p.webhook_id = req_header(H_WEBHOOK_ID);
                p.webhook_timestamp = req_header(H_WEBHOOK_TIMESTAMP);
                p.webhook_signature = req_header(H_WEBHOOK_SIGNATURE);
            }
            Verifier::Hmac {
                header,
                timestamp_header,
                ..
            } => {
                p.hmac_signature = req_header(header);
                p.hmac_timestamp = timestamp_header.as_deref().and_then(req_header);
            }
            Verifier::SharedToken { .. } => {
                if let Err(e) = verify(
                    &cfg.verifier,
                    &self.state.presented,
                    b"",
                    now_unix(),
                    cfg.tolerance_secs,
                ) {
                    return self.reject_signature(&e);
                }
            }
        }
        Action::Continue
    }

    fn reject_signature_reason(&mut self, reason: &str) -> Action {
        self.reject(
            401,
            "invalid_signature",
            "signature verification failed",
            Outcome::BadSignature,
            reason,
        )
    }

    fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.state.done {
            return Action::Continue;
        }
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let cfg = &shared.cfg;
        if body_size as u64 > cfg.max_body_bytes {
            return self.reject(
                413,
                "payload_too_large",
                "request body too large",
                Outcome::TooLarge,
                "body over max_body_bytes",
            );
        }
        if !end_of_stream {
            // Envoy-style hosts: keep buffering until the last chunk.
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if body.is_empty() && body_size > 0 {
            // ngx_wasm_module cannot read a body nginx spilled to a temp file
            // (over client_body_buffer_size; Kong's default is 8k). Answer 500
            // so the sender retries once an operator has fixed the setting.
            log(
                LogLevel::Error,
                &format!(
                    "webhook_guard: route {}: the {body_size}-byte request body is not readable \
                     (nginx buffered it to a file); set nginx_http_client_body_buffer_size \
                     (KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE) to at least max_body_bytes ({})",
                    cfg.route, cfg.max_body_bytes
                ),
            );
            return self.reject(
                500,
                "body_unreadable",
                "the gateway could not read the request body",
                Outcome::BodyUnreadable,
                "request body not readable by the filter",
            );
        }
        if body.is_empty() {
            return self.reject(
                400,
                "empty_body",
                "request body required",
                Outcome::Malformed,
                "no request body",
            );
        }
        let now = now_unix();

        if !matches!(cfg.verifier, Verifier::SharedToken { .. }) {
            let key_id = match verify(
                &cfg.verifier,
                &self.state.presented,
                &body,
                now,
                cfg.tolerance_secs,
            ) {
                Ok(id) => id,
                Err(e) => return self.reject_signature(&e),
            };
            if !cfg.verifier.may_deliver(key_id, &self.state.topic) {
                // Authentic, but this webhook delivers another action: a
                // re-addressed (or replayed) delivery, never a new event.
                let reason = format!(
                    "webhook_action_mismatch (webhook {} is not bound to topic {})",
                    key_id.unwrap_or("-"),
                    self.state.topic
                );
                return self.reject(
                    401,
                    "invalid_signature",
                    "signature verification failed",
                    Outcome::ActionMismatch,
                    &reason,
                );
            }
        }

        // One strict parse serves both the dedup key and the shape check.
        let doc = match Document::parse(&body) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("{} ({e})", e.code());
                return self.reject(
                    400,
                    "invalid_json",
                    "request body is not valid JSON",
                    Outcome::Malformed,
                    &reason,
                );
            }
        };
        let key = doc.dedup_key();
        let skipped = match check_document(doc.root(), cfg.payload) {
            Ok(skipped) => skipped,
            Err(e) => {
                let reason = e.to_string();
                return self.reject(
                    400,
                    "invalid_payload",
                    "payload does not have the expected shape",
                    Outcome::Malformed,
                    &reason,
                );
            }
        };
        drop(doc);
        if !skipped.is_empty() {
            // Forwarded whole: the worker applies the same rule, enqueues the
            // usable entries and lists the skipped ones in its answer.
            shared.metrics.count_invalid_entries(skipped.len());
            let list: Vec<String> = skipped.iter().take(20).map(ToString::to_string).collect();
            log(
                LogLevel::Warn,
                &format!(
                    "webhook_guard: route {} batch {key}: {} unusable entries skipped (index:problem): {}",
                    cfg.route,
                    skipped.len(),
                    list.join(", ")
                ),
            );
        }

        let topic = std::mem::take(&mut self.state.topic);
        if cfg.dedup_window_secs > 0 && self.seen(cfg, &topic, &key, now) {
            self.count(Outcome::Duplicate);
            log(
                LogLevel::Info,
                &format!(
                    "webhook_guard: route {} duplicate {topic} {key} answered at the edge",
                    cfg.route
                ),
            );
            self.reply(
                200,
                "{\"status\":\"duplicate\"}",
                &[(HEADER_DEDUP_KEY, key.as_str())],
            );
            return Action::Pause;
        }

        let event_id = match &cfg.verifier {
            Verifier::StandardWebhooks { .. } => {
                let id = self
                    .state
                    .presented
                    .webhook_id
                    .as_deref()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                if !is_valid_event_id(&id) {
                    return self.reject(
                        400,
                        "invalid_event_id",
                        "webhook-id is not a usable event id",
                        Outcome::Malformed,
                        "webhook-id outside [A-Za-z0-9._:-]{1,128}",
                    );
                }
                id
            }
            _ => new_event_id(&key),
        };
        let signature = match self.sign(cfg, &topic, &event_id, now, &body) {
            Ok(s) => s,
            Err(rejected) => return rejected,
        };

        Self::strip_credentials(cfg);
        set_req_header(HEADER_EVENT_TOPIC, &topic);
        set_req_header(HEADER_EVENT_ID, &event_id);
        set_req_header(HEADER_DEDUP_KEY, &key);
        set_req_header(HEADER_RECEIVED_AT, &now.to_string());
        set_req_header(HEADER_GATEWAY_SIGNATURE, &signature);
        if let Some(fp) = &cfg.forward_path {
            let _ = kong_compat::set_upstream_path(&Self::path_with_query(fp, &self.state.query));
        }
        self.count(Outcome::Accepted);
        log(
            LogLevel::Debug,
            &format!(
                "webhook_guard: route {} accepted {topic} id {event_id} key {key}",
                cfg.route
            ),
        );
        self.state.forwarded = Some((topic, key));
        self.state.done = true;
        Action::Continue
    }

    /// The `X-Gateway-Signature` of a forward, or the 500 sent instead.
    fn sign(
        &mut self,
        cfg: &Config,
        topic: &str,
        event_id: &str,
        now: u64,
        body: &[u8],
    ) -> Result<String, Action> {
        let Some(secret) = cfg.gateway_secret.as_ref() else {
            return Err(self.reject(
                500,
                "internal_error",
                "gateway misconfigured",
                Outcome::Malformed,
                "no gateway secret",
            ));
        };
        sign_gateway_event(&secret.0, topic, event_id, now, body).map_err(|e| {
            self.reject(
                500,
                "internal_error",
                "could not sign the event",
                Outcome::Malformed,
                e.code(),
            )
        })
    }

    /// Whether (topic, key) was accepted within the window.
    fn seen(&self, cfg: &Config, topic: &str, key: &str, now: u64) -> bool {
        let slot = slot_key(&cfg.route, slot_index(key, topic, cfg.dedup_slots));
        match hostcalls::get_shared_data(&slot) {
            Ok((Some(bytes), _)) => {
                Entry::decode(&bytes).is_some_and(|e| e.matches(topic, key, now))
            }
            _ => false,
        }
    }

    /// Remembers an accepted event (bounded CAS retries; losing a race only
    /// means a missed edge duplicate).
    fn remember(cfg: &Config, topic: &str, key: &str, now: u64) {
        let slot = slot_key(&cfg.route, slot_index(key, topic, cfg.dedup_slots));
        let entry = Entry {
            expires_at: now.saturating_add(cfg.dedup_window_secs),
            topic: topic.to_owned(),
            key: key.to_owned(),
        }
        .encode();
        for _ in 0..CAS_ATTEMPTS {
            let cas = match hostcalls::get_shared_data(&slot) {
                Ok((_, cas)) => cas,
                Err(_) => return,
            };
            match hostcalls::set_shared_data(&slot, Some(&entry), cas) {
                Ok(()) => return,
                Err(Status::CasMismatch) => continue,
                Err(_) => return,
            }
        }
        log(
            LogLevel::Debug,
            &format!(
                "webhook_guard: route {} dedup slot busy, not remembered",
                cfg.route
            ),
        );
    }
}

/// A UUID v4 from WASI random; if the host has no randomness, an id derived
/// from the dedup key and the host clock (unique enough: the worker
/// deduplicates by content).
fn new_event_id(dedup_key: &str) -> String {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => uuid_v4_from_bytes(bytes),
        Err(_) => {
            let nanos = hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("gw-{nanos}-{}", dedup_key.get(..16).unwrap_or(dedup_key))
        }
    }
}

impl Context for Guard {}

impl HttpContext for Guard {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.on_headers()
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some((topic, key)) = self.state.forwarded.take() else {
            return Action::Continue;
        };
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        if shared.cfg.dedup_window_secs == 0 {
            return Action::Continue;
        }
        let status = header(MapType::HttpResponseHeaders, ":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            Self::remember(&shared.cfg, &topic, &key, now_unix());
        }
        Action::Continue
    }
}
