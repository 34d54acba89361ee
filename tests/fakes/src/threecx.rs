//! The requests 3CX's CRM integration template makes to our endpoints.
//!
//! 3CX has no generic outgoing webhooks; its server-side CRM template calls us: a contact lookup
//! `GET <url>?phone=<number>` and, at call end, the `ReportCall` journaling `POST` with the call's
//! variables as JSON. A static API key travels in a header named in the template (`x-api-key`).
//!
//! The **Call Control API** fake ([`start_call_control`]), from FACTS §4 and 3CX's
//! "Call Control API endpoints" page:
//!
//! - `POST /connect/token`, form `client_id`, `client_secret`, `grant_type=client_credentials`
//!   → `{"token_type": "Bearer", "expires_in", "access_token"}`; a wrong id/secret is
//!   `400 {"error": "invalid_client"}`, another grant `400 {"error": "unsupported_grant_type"}`.
//!   Tokens expire after `token_ttl` by the fake's [`FakeClock`]; issues are counted.
//! - Every `/callcontrol…` request needs `Authorization: Bearer <live token>`, else 401.
//! - `POST /callcontrol/{dn}/makecall {destination, timeout?, attacheddata?}`: 404 for an
//!   extension the PBX does not have; an extension marked busy answers
//!   `200 {"finalstatus": "Failure", "reason": "PhoneBusy", …}`; a destination that is not a
//!   dialable number (digits, optional leading `+`, 3–20) or one marked undialable is `400` with
//!   a `reasontext`; otherwise a participant is created on `dn` (status `Dialing`, `party_dn` =
//!   destination, new `callid`/`legid`) and answered as
//!   `200 {"finalstatus": "Success", "reason": "None", "reasontext": "", "result": participant}`.
//! - `GET /callcontrol/{dn}/participants` and `…/participants/{id}` (404 once removed).
//!
//! Test controls move a participant's status ([`CallControlFake::set_status`]), end it
//! ([`CallControlFake::hang_up`]), mark extensions busy, revoke every token (the next API call
//! gets 401, as after a PBX restart), and read the counters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::server::{constant_time_eq, json as json_response, random_string};
use crate::{Controls, FakeClock, RunningServer, StartError};

/// Header name our template uses for the API key.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// POSTs a `ReportCall` body (see `shared/examples/3cx-reportcall.json`) with the key header.
pub async fn report_call(
    url: &str,
    api_key_header: &str,
    key: &str,
    call: &Value,
) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(url)
        .header(api_key_header, key)
        .header("content-type", "application/json")
        .body(call.to_string())
        .send()
        .await
}

/// Contact lookup as the template performs it: `GET {url}?phone={phone}` with `x-api-key`.
pub async fn lookup(url: &str, key: &str, phone: &str) -> reqwest::Result<reqwest::Response> {
    lookup_with_header(url, DEFAULT_API_KEY_HEADER, key, phone).await
}

/// [`lookup`] with a custom key header name.
pub async fn lookup_with_header(
    url: &str,
    api_key_header: &str,
    key: &str,
    phone: &str,
) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .get(url)
        .query(&[("phone", phone)])
        .header(api_key_header, key)
        .send()
        .await
}

// ---------------------------------------------------------------------------------------------
// Call Control API fake
// ---------------------------------------------------------------------------------------------

/// How to start the Call Control fake.
#[derive(Debug, Clone)]
pub struct CallControlConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of issued tokens (3CX: 60 minutes).
    pub token_ttl: Duration,
    /// Extensions (DNs) the PBX has.
    pub extensions: Vec<String>,
}

impl Default for CallControlConfig {
    fn default() -> Self {
        Self {
            client_id: "901".into(),
            client_secret: "fake-3cx-client-secret-0123456789".into(),
            token_ttl: Duration::from_secs(3600),
            extensions: vec!["201".into(), "202".into(), "203".into()],
        }
    }
}

/// A call participant as 3CX describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeParticipant {
    pub id: u64,
    pub dn: String,
    pub status: String,
    pub party_dn: String,
    pub callid: u64,
    pub legid: u64,
}

impl FakeParticipant {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "status": self.status,
            "dn": self.dn,
            "party_caller_name": "",
            "party_dn": self.party_dn,
            "party_caller_id": self.party_dn,
            "party_did": "",
            "device_id": format!("sip:{}@127.0.0.1", self.dn),
            "party_dn_type": "Wexternalline",
            "direct_control": false,
            "originated_by_dn": "",
            "originated_by_type": "",
            "referred_by_dn": "",
            "referred_by_type": "",
            "on_behalf_of_dn": "",
            "on_behalf_of_type": "",
            "callid": self.callid,
            "legid": self.legid,
        })
    }
}

/// Counters of the Call Control fake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallControlCounters {
    /// Tokens issued by `/connect/token`.
    pub token_issues: usize,
    /// Token requests refused (wrong credentials or grant).
    pub token_refusals: usize,
    /// API requests refused with 401.
    pub unauthorized: usize,
    /// Calls created by makecall.
    pub calls_placed: usize,
}

#[derive(Debug, Default)]
struct CcState {
    /// token → expiry (fake clock, Unix seconds).
    tokens: BTreeMap<String, i64>,
    busy: BTreeSet<String>,
    undialable: BTreeSet<String>,
    participants: BTreeMap<(String, u64), FakeParticipant>,
    next_id: u64,
    counters: CallControlCounters,
}

#[derive(Clone)]
struct CcShared {
    config: Arc<CallControlConfig>,
    clock: FakeClock,
    state: Arc<Mutex<CcState>>,
}

/// The running Call Control fake.
pub struct CallControlFake {
    server: RunningServer,
    controls: Controls,
    shared: CcShared,
}

impl std::fmt::Debug for CallControlFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallControlFake")
            .field("addr", &self.server.addr())
            .finish()
    }
}

/// Starts the Call Control fake on a free loopback port, with its own clock.
pub async fn start_call_control(config: CallControlConfig) -> Result<CallControlFake, StartError> {
    start_call_control_with_clock(config, FakeClock::new()).await
}

/// [`start_call_control`] with a given clock (move it to expire tokens).
pub async fn start_call_control_with_clock(
    config: CallControlConfig,
    clock: FakeClock,
) -> Result<CallControlFake, StartError> {
    let shared = CcShared {
        config: Arc::new(config),
        clock,
        state: Arc::new(Mutex::new(CcState {
            next_id: 1,
            ..CcState::default()
        })),
    };
    let router = Router::new()
        .route("/connect/token", post(token))
        .route("/callcontrol/{dn}/makecall", post(makecall))
        .route("/callcontrol/{dn}/participants", get(participants))
        .route("/callcontrol/{dn}/participants/{id}", get(participant))
        .fallback(|| async { StatusCode::NOT_FOUND.into_response() })
        .with_state(shared.clone());
    let controls = Controls::default();
    let server = RunningServer::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        router,
        controls.clone(),
        cc_error_shape,
    )
    .await?;
    Ok(CallControlFake {
        server,
        controls,
        shared,
    })
}

impl CallControlFake {
    /// `http://127.0.0.1:PORT` (the PBX's address; paths hang below it).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn config(&self) -> &CallControlConfig {
        &self.shared.config
    }

    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// Request log and failure injection.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    pub fn counters(&self) -> CallControlCounters {
        self.shared.state.lock().counters
    }

    /// Marks `dn` busy (makecall answers `PhoneBusy`) or free.
    pub fn set_busy(&self, dn: &str, busy: bool) {
        let mut s = self.shared.state.lock();
        if busy {
            s.busy.insert(dn.to_owned());
        } else {
            s.busy.remove(dn);
        }
    }

    /// A destination the PBX's outbound rules cannot route (makecall answers 400).
    pub fn set_undialable(&self, destination: &str) {
        self.shared
            .state
            .lock()
            .undialable
            .insert(destination.to_owned());
    }

    /// Forgets every issued token: the next API request with one is a 401.
    pub fn revoke_tokens(&self) {
        self.shared.state.lock().tokens.clear();
    }

    /// Every live participant.
    pub fn participants(&self) -> Vec<FakeParticipant> {
        self.shared
            .state
            .lock()
            .participants
            .values()
            .cloned()
            .collect()
    }

    /// Moves a participant to `status` (`Ringing`, `Connected`, …); false if unknown.
    pub fn set_status(&self, dn: &str, id: u64, status: &str) -> bool {
        let mut s = self.shared.state.lock();
        match s.participants.get_mut(&(dn.to_owned(), id)) {
            Some(p) => {
                status.clone_into(&mut p.status);
                true
            }
            None => false,
        }
    }

    /// Ends the call: 3CX removes the participant.
    pub fn hang_up(&self, dn: &str, id: u64) -> bool {
        self.shared
            .state
            .lock()
            .participants
            .remove(&(dn.to_owned(), id))
            .is_some()
    }
}

/// 3CX's API answers errors without a JSON body worth copying; the fake sends a short reason.
fn cc_error_shape(status: StatusCode) -> Response {
    json_response(
        status,
        json!({"finalstatus": "Failure", "reason": "Error", "reasontext": status.canonical_reason().unwrap_or("error")}),
    )
}

async fn token(State(s): State<CcShared>, body: axum::body::Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let mut st = s.state.lock();
    if get("grant_type") != "client_credentials" {
        st.counters.token_refusals += 1;
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
        );
    }
    let id_ok = constant_time_eq(get("client_id").as_bytes(), s.config.client_id.as_bytes());
    let secret_ok = constant_time_eq(
        get("client_secret").as_bytes(),
        s.config.client_secret.as_bytes(),
    );
    if !(id_ok && secret_ok) {
        st.counters.token_refusals += 1;
        return json_response(StatusCode::BAD_REQUEST, json!({"error": "invalid_client"}));
    }
    let value = random_string(48);
    let ttl = i64::try_from(s.config.token_ttl.as_secs()).unwrap_or(3600);
    st.tokens
        .insert(value.clone(), s.clock.now().timestamp() + ttl);
    st.counters.token_issues += 1;
    json_response(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": ttl, "access_token": value}),
    )
}

/// 401 unless the request carries a live token.
fn authorised(s: &CcShared, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let now = s.clock.now().timestamp();
    let mut st = s.state.lock();
    st.tokens.retain(|_, exp| *exp > now);
    if st
        .tokens
        .keys()
        .any(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
    {
        Ok(())
    } else {
        st.counters.unauthorized += 1;
        Err(StatusCode::UNAUTHORIZED.into_response())
    }
}

fn dialable(d: &str) -> bool {
    let digits = d.strip_prefix('+').unwrap_or(d);
    (3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

async fn makecall(
    State(s): State<CcShared>,
    Path(dn): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return r;
    }
    if !s.config.extensions.contains(&dn) {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"finalstatus": "Failure", "reason": "NotFound", "reasontext": format!("DN {dn} not found")}),
        );
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"finalstatus": "Failure", "reason": "BadRequest", "reasontext": "invalid JSON"}),
        );
    };
    let destination = req
        .get("destination")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut st = s.state.lock();
    if !dialable(&destination) || st.undialable.contains(&destination) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"finalstatus": "Failure", "reason": "InvalidDestination", "reasontext": "Destination cannot be dialled"}),
        );
    }
    if st.busy.contains(&dn) {
        return json_response(
            StatusCode::OK,
            json!({"finalstatus": "Failure", "reason": "PhoneBusy", "reasontext": format!("Extension {dn} is busy"), "result": null}),
        );
    }
    let id = st.next_id;
    st.next_id += 1;
    let p = FakeParticipant {
        id,
        dn: dn.clone(),
        status: "Dialing".into(),
        party_dn: destination,
        callid: 1000 + id,
        legid: 1,
    };
    let body = p.to_json();
    st.participants.insert((dn, id), p);
    st.counters.calls_placed += 1;
    json_response(
        StatusCode::OK,
        json!({"finalstatus": "Success", "reason": "None", "reasontext": "", "result": body}),
    )
}

async fn participants(
    State(s): State<CcShared>,
    Path(dn): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return r;
    }
    if !s.config.extensions.contains(&dn) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let st = s.state.lock();
    let list: Vec<serde_json::Value> = st
        .participants
        .values()
        .filter(|p| p.dn == dn)
        .map(FakeParticipant::to_json)
        .collect();
    json_response(StatusCode::OK, serde_json::Value::Array(list))
}

async fn participant(
    State(s): State<CcShared>,
    Path((dn, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return r;
    }
    let Ok(id) = id.parse::<u64>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match s.state.lock().participants.get(&(dn, id)) {
        Some(p) => json_response(StatusCode::OK, p.to_json()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
