//! Fake of Advoware: the security gateway's token endpoint and the `advonet` REST resources.
//!
//! The real system has two hosts (security gateway and API relay/connector); the fake serves both
//! on one address, so `security_gateway_url()` and `api_base_url()` are the same. It also answers
//! the configurator lookup (`GET /AdvonetConfigurator/api/Url?Kanzlei=`) with its own address.
//!
//! Honesty rules: the token endpoint recomputes the HMAC-SHA512 itself (independent of our core
//! crate), checks every credential field, the timestamp skew against the [`FakeClock`] and nonce
//! reuse. Resources need a valid, unexpired, unrevoked bearer token. Every request is logged raw
//! (see [`Controls`]), and unknown paths under `/api/v1/` answer 404 so proxy tests can inspect what
//! Kong forwarded. Error bodies follow ASP.NET Web API (`{"Message": …}`), which Advoware is built on;
//! the token endpoint answers OAuth-style `{"error", "error_description"}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha512;

use crate::clock::FakeClock;
use crate::server::{
    constant_time_eq, json as json_response, random_string, Controls, RunningServer, StartError,
};

/// Resource names used by the write counters.
pub const TERMINE: &str = "Termine";
pub const BETEILIGTE: &str = "Beteiligte";
pub const KOMMUNIKATIONEN: &str = "Kommunikationen";
/// Call notes: not in FACTS (no documented endpoint); the fake serves them under
/// [`NOTIZEN_PATH`] so the worker's configurable call note can be exercised. An assumption.
pub const NOTIZEN: &str = "Notizen";
/// Where the fake takes call notes (`POST`, `{betNr}` in place of the number).
pub const NOTIZEN_PATH: &str = "api/v1/advonet/Beteiligte/{betnr}/Notizen";
/// Resource name of address writes (issue 12).
pub const ADRESSEN: &str = "Adressen";
/// Address fields Advoware's `PUT` changes; every other field of the body is ignored (the fake's
/// choice for "read-only on PUT", like `kommKz`; see README).
pub const ADRESSE_WRITABLE: [&str; 4] = ["strasse", "plz", "ort", "anschrift"];

mod bankverbindungen;
pub use bankverbindungen::{iban_ok, BANKVERBINDUNGEN};

/// Credentials and behaviour of the fake. The defaults are obviously fake test values.
#[derive(Clone)]
pub struct AdvowareConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    pub app_id: String,
    pub kanzlei: String,
    pub database: String,
    /// The API user (an employee Kürzel).
    pub user: String,
    pub role: i64,
    pub product: i64,
    pub password: String,
    /// The API key as configured in production: base64; its decoded bytes key the HMAC.
    pub api_key_b64: String,
    /// `expires_in` of issued tokens, seconds.
    pub token_lifetime_secs: i64,
    /// Largest accepted distance between `RequestTimeStamp` and the fake clock, seconds.
    pub max_clock_skew_secs: i64,
    pub clock: FakeClock,
}

impl Default for AdvowareConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            app_id: "fake-app-id".into(),
            kanzlei: "fake-kanzlei".into(),
            database: "fake-db".into(),
            user: "API".into(),
            role: 2,
            product: 64,
            password: "fake-password".into(),
            api_key_b64: B64.encode("fake-advoware-api-key"),
            token_lifetime_secs: 3600,
            max_clock_skew_secs: 300,
            clock: FakeClock::new(),
        }
    }
}

impl std::fmt::Debug for AdvowareConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvowareConfig")
            .field("bind", &self.bind)
            .field("app_id", &self.app_id)
            .field("kanzlei", &self.kanzlei)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("role", &self.role)
            .field("product", &self.product)
            .field("password", &"<redacted>")
            .field("api_key_b64", &"<redacted>")
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .field("max_clock_skew_secs", &self.max_clock_skew_secs)
            .finish()
    }
}

impl AdvowareConfig {
    /// `base64(HMAC-SHA512(base64_decode(api key), "{Product}:{AppID}:{Nonce}:{ts}"))` — the
    /// fake's own implementation, for tests that need a valid signature.
    pub fn sign(&self, nonce: &str, timestamp: &str) -> Result<String, StartError> {
        let key = self.key_bytes()?;
        let message = format!("{}:{}:{}:{}", self.product, self.app_id, nonce, timestamp);
        Ok(hmac_sha512_b64(&key, message.as_bytes()))
    }

    /// A complete, valid token request body for this configuration.
    pub fn token_request(&self, nonce: &str, timestamp: &str) -> Result<Value, StartError> {
        Ok(json!({
            "AppID": self.app_id,
            "Kanzlei": self.kanzlei,
            "Database": self.database,
            "User": self.user,
            "Role": self.role,
            "Product": self.product,
            "Password": self.password,
            "Nonce": nonce,
            "HMAC512Signature": self.sign(nonce, timestamp)?,
            "RequestTimeStamp": timestamp,
        }))
    }

    fn key_bytes(&self) -> Result<Vec<u8>, StartError> {
        B64.decode(self.api_key_b64.trim())
            .map_err(|e| StartError::Config(format!("Advoware api_key_b64 is not base64: {e}")))
    }
}

fn hmac_sha512_b64(key: &[u8], message: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an impossible value anyway.
    match Hmac::<Sha512>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            B64.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Counts of token requests, for assertions like "the client reused its token".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenStats {
    pub succeeded: usize,
    pub failed: usize,
}

#[derive(Debug)]
struct TokenRecord {
    expires_at: DateTime<Utc>,
    revoked: bool,
}

#[derive(Default)]
struct State_ {
    tokens: HashMap<String, TokenRecord>,
    nonces: HashSet<String>,
    token_stats: TokenStats,
    last_token_error: Option<String>,
    mitarbeiter: Vec<Value>,
    termine: BTreeMap<i64, Value>,
    next_frnr: i64,
    beteiligte: BTreeMap<i64, Value>,
    next_betnr: i64,
    next_komm_id: i64,
    row_version: u64,
    writes: HashMap<String, usize>,
    /// Path prefixes the API user has no right on: 401 even with a valid token.
    denied_prefixes: Vec<String>,
    /// Bankverbindungen per Beteiligter (`bankverbindungen.rs`).
    bank: bankverbindungen::BankState,
    /// Notes per Beteiligter ([`NOTIZEN`]).
    notizen: BTreeMap<i64, Vec<Value>>,
}

impl State_ {
    fn next_row_id(&mut self) -> String {
        // Advoware's rowId looks like a SQL Server rowversion: 8 bytes, base64.
        self.row_version += 1;
        B64.encode(self.row_version.to_be_bytes())
    }

    fn count_write(&mut self, resource: &str) {
        *self.writes.entry(resource.to_owned()).or_default() += 1;
    }
}

#[derive(Clone)]
struct Shared {
    config: Arc<AdvowareConfig>,
    key: Arc<Vec<u8>>,
    state: Arc<Mutex<State_>>,
}

/// A running Advoware fake. Stops when dropped.
#[derive(Debug)]
pub struct AdvowareFake {
    server: RunningServer,
    shared: Shared,
    controls: Controls,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish()
    }
}

/// Starts the fake with `config` (see [`AdvowareConfig::default`] for test credentials).
pub async fn start(config: AdvowareConfig) -> Result<AdvowareFake, StartError> {
    let key = config.key_bytes()?;
    let shared = Shared {
        config: Arc::new(config),
        key: Arc::new(key),
        state: Arc::new(Mutex::new(State_ {
            next_frnr: 100_001,
            next_betnr: 50_001,
            next_komm_id: 9_001,
            ..State_::default()
        })),
    };
    let controls = Controls::default();
    let router = Router::new()
        .route("/AdvonetConfigurator/api/Url", get(configurator))
        .route("/api/v1/Token", post(token))
        .route("/api/v1/advonet/Mitarbeiter", get(list_mitarbeiter))
        .route(
            "/api/v1/advonet/Termine",
            get(list_termine).post(create_termin),
        )
        .route("/api/v1/advonet/TermineActiveSync", get(list_termine))
        .route(
            "/api/v1/advonet/Termine/{fr_nr}",
            get(get_termin_path_form)
                .put(update_termin)
                .delete(delete_termin),
        )
        .route("/api/v1/advonet/Beteiligte", post(create_beteiligter))
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}",
            get(get_beteiligter).put(update_beteiligter),
        )
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}/Kommunikationen",
            post(create_kommunikation),
        )
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}/Adressen",
            post(create_adresse),
        )
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}/Adressen/{id}",
            put(update_adresse).delete(delete_adresse),
        )
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}/Kommunikationen/{id}",
            put(update_kommunikation).delete(delete_kommunikation),
        )
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}/Bankverbindungen",
            get(bankverbindungen::list).post(bankverbindungen::create),
        )
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}/Notizen",
            post(create_notiz),
        )
        .route(
            "/api/v1/advonet/Beteiligte/{bet_nr}/Bankverbindungen/{id}",
            put(bankverbindungen::update).delete(bankverbindungen::delete),
        )
        .fallback(any(not_found))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            deny_paths,
        ))
        .with_state(shared.clone());
    let bind = shared.config.bind;
    let server = RunningServer::spawn(bind, router, controls.clone(), error_shape).await?;
    Ok(AdvowareFake {
        server,
        shared,
        controls,
    })
}

impl AdvowareFake {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The security gateway as the configurator reports it (with trailing slash).
    pub fn security_gateway_url(&self) -> String {
        format!("{}/", self.base_url())
    }

    /// The API base (relay/connector URL, with trailing slash); resources live under `api/v1/`.
    pub fn api_base_url(&self) -> String {
        format!("{}/", self.base_url())
    }

    /// `POST` target for tokens.
    pub fn token_url(&self) -> String {
        format!("{}/api/v1/Token", self.base_url())
    }

    pub fn config(&self) -> &AdvowareConfig {
        &self.shared.config
    }

    pub fn clock(&self) -> &FakeClock {
        &self.shared.config.clock
    }

    /// Request log, failure injection, latency.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// Shorthand for [`Controls::fail_next`].
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.controls.fail_next(n, status, retry_after);
    }

    /// Shorthand for [`Controls::requests`].
    pub fn requests(&self) -> Vec<crate::RecordedRequest> {
        self.controls.requests()
    }

    pub fn token_stats(&self) -> TokenStats {
        self.shared.state.lock().token_stats
    }

    /// Why the last token request failed (the `error_description` sent), for test diagnostics.
    pub fn last_token_error(&self) -> Option<String> {
        self.shared.state.lock().last_token_error.clone()
    }

    /// Issues a valid token without the HMAC dance (tests of resource handling).
    pub fn issue_token(&self) -> String {
        let token = random_string(48);
        let expires_at =
            self.clock().now() + Duration::seconds(self.shared.config.token_lifetime_secs);
        self.shared.state.lock().tokens.insert(
            token.clone(),
            TokenRecord {
                expires_at,
                revoked: false,
            },
        );
        token
    }

    /// Revokes one token; `false` if the fake never issued it.
    pub fn revoke(&self, token: &str) -> bool {
        match self.shared.state.lock().tokens.get_mut(token) {
            Some(record) => {
                record.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Revokes every token issued so far (e.g. a password change in Advoware).
    pub fn revoke_all(&self) {
        for record in self.shared.state.lock().tokens.values_mut() {
            record.revoked = true;
        }
    }

    /// From now on every request whose path starts with `path_prefix` is answered 401 with
    /// Advoware's "Authorization has been denied" body, valid token or not, as Advoware does
    /// for a resource the API user has no right on; every other path is unaffected.
    pub fn deny_path(&self, path_prefix: &str) {
        self.shared
            .state
            .lock()
            .denied_prefixes
            .push(path_prefix.to_owned());
    }

    /// Tokens that would be accepted now.
    pub fn active_tokens(&self) -> usize {
        let now = self.clock().now();
        self.shared
            .state
            .lock()
            .tokens
            .values()
            .filter(|r| !r.revoked && r.expires_at > now)
            .count()
    }

    /// Adds an employee (`{kuerzel, name, …}`); `extra` fields are merged in.
    pub fn add_mitarbeiter(&self, kuerzel: &str, name: &str, extra: Value) {
        let mut employee = json!({"kuerzel": kuerzel, "name": name, "aktiv": true});
        merge_object(&mut employee, &extra);
        self.shared.state.lock().mitarbeiter.push(employee);
    }

    /// Seeds a small demo firm for the sandbox: employees SB, AB, CD and three appointments of SB
    /// (a timed one, an all-day multi-day one, a weekly series), as in `shared/examples`.
    pub fn seed_demo(&self) {
        self.add_mitarbeiter(
            "SB",
            "Sabine Beispiel",
            json!({"email": "sb@example-kanzlei.test"}),
        );
        self.add_mitarbeiter(
            "AB",
            "Anton Bauer",
            json!({"email": "ab@example-kanzlei.test"}),
        );
        self.add_mitarbeiter(
            "CD",
            "Clara Dahl",
            json!({"email": "cd@example-kanzlei.test"}),
        );
        let termin =
            |fr_nr: i64, von: (&str, &str), bis: (&str, &str), text: &str, extra: Value| {
                let mut t = json!({
                    "frNr": fr_nr, "kuerzel": "SB", "datum": von.0, "uhrzeitVon": von.1,
                    "datumBis": bis.0, "uhrzeitBis": bis.1, "text": text, "notiz": "", "ort": "",
                    "dauertermin": 0, "turnus": 0, "turnusArt": 0, "privat": false,
                });
                merge_object(&mut t, &extra);
                t
            };
        self.insert_termin(termin(
            48213,
            ("2026-12-01T00:00:00", "09:30:00"),
            ("2026-12-01T00:00:00", "10:15:00"),
            "Mandantengespräch Müller ./. Schmidt",
            json!({"notiz": "Unterlagen Mietvertrag mitbringen", "ort": "Besprechungsraum 2"}),
        ));
        self.insert_termin(termin(
            48214,
            ("2026-12-24T00:00:00", "00:00:00"),
            ("2026-12-26T00:00:00", "23:59:00"),
            "Urlaub",
            json!({"dauertermin": 1, "privat": true}),
        ));
        self.insert_termin(termin(
            48215,
            ("2026-12-07T00:00:00", "08:00:00"),
            ("2027-03-29T00:00:00", "08:30:00"),
            "Wochenbesprechung Team Mietrecht",
            json!({"ort": "Kanzlei", "turnus": 1, "turnusArt": 2}),
        ));
    }

    pub fn mitarbeiter(&self) -> Vec<Value> {
        self.shared.state.lock().mitarbeiter.clone()
    }

    /// Seeds an appointment as if entered in Advoware (not counted as an API write). Assigns `frNr`
    /// if missing and `zuletztGeaendertAm` if missing; returns the `frNr`.
    pub fn insert_termin(&self, termin: Value) -> i64 {
        let now = self.clock().now_berlin();
        let mut state = self.shared.state.lock();
        let mut termin = match termin {
            Value::Object(map) => Value::Object(map),
            _ => json!({}),
        };
        let fr_nr = match termin.get("frNr").and_then(Value::as_i64) {
            Some(n) => n,
            None => {
                let n = state.next_frnr;
                state.next_frnr += 1;
                n
            }
        };
        state.next_frnr = state.next_frnr.max(fr_nr + 1);
        set(&mut termin, "frNr", json!(fr_nr));
        if termin.get("zuletztGeaendertAm").is_none() {
            set(&mut termin, "zuletztGeaendertAm", json!(fmt_local(now)));
        }
        state.termine.insert(fr_nr, termin);
        fr_nr
    }

    /// Changes an appointment as a user in Advoware would (bumps `zuletztGeaendertAm`); not counted
    /// as an API write. Returns `false` if there is no such appointment.
    pub fn edit_termin(&self, fr_nr: i64, patch: Value) -> bool {
        let now = self.clock().now_berlin();
        let mut state = self.shared.state.lock();
        match state.termine.get_mut(&fr_nr) {
            Some(termin) => {
                merge_object(termin, &patch);
                set(termin, "frNr", json!(fr_nr));
                set(termin, "zuletztGeaendertAm", json!(fmt_local(now)));
                true
            }
            None => false,
        }
    }

    /// Deletes an appointment as a user would (not counted as an API write).
    pub fn remove_termin(&self, fr_nr: i64) -> Option<Value> {
        self.shared.state.lock().termine.remove(&fr_nr)
    }

    pub fn termin(&self, fr_nr: i64) -> Option<Value> {
        self.shared.state.lock().termine.get(&fr_nr).cloned()
    }

    /// All appointments, ordered by `frNr`.
    pub fn termine(&self) -> Vec<Value> {
        self.shared.state.lock().termine.values().cloned().collect()
    }

    /// Seeds a Beteiligter (assigns `betNr` if missing, a fresh `rowId` and `geaendertAm`; ids for
    /// `kommunikation[]` entries without one). Returns the `betNr`.
    pub fn insert_beteiligter(&self, beteiligter: Value) -> i64 {
        let now = self.clock().now_berlin();
        let mut state = self.shared.state.lock();
        let mut b = match beteiligter {
            Value::Object(map) => Value::Object(map),
            _ => json!({}),
        };
        let bet_nr = match b.get("betNr").and_then(Value::as_i64) {
            Some(n) => n,
            None => {
                let n = state.next_betnr;
                state.next_betnr += 1;
                n
            }
        };
        state.next_betnr = state.next_betnr.max(bet_nr + 1);
        set(&mut b, "betNr", json!(bet_nr));
        let mut komm = b
            .get("kommunikation")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for entry in &mut komm {
            if entry.get("id").and_then(Value::as_i64).is_none() {
                let id = state.next_komm_id;
                state.next_komm_id += 1;
                set(entry, "id", json!(id));
            }
        }
        set(&mut b, "kommunikation", Value::Array(komm));
        if let Some(mut adr) = b.get("adressen").and_then(Value::as_array).cloned() {
            for entry in &mut adr {
                if entry.get("id").and_then(Value::as_i64).is_none() {
                    let id = state.next_komm_id;
                    state.next_komm_id += 1;
                    set(entry, "id", json!(id));
                }
            }
            set(&mut b, "adressen", Value::Array(adr));
        }
        let row_id = state.next_row_id();
        set(&mut b, "rowId", json!(row_id));
        set(&mut b, "geaendertAm", json!(fmt_local(now)));
        state.beteiligte.insert(bet_nr, b);
        bet_nr
    }

    /// Changes a Beteiligter as a user would (new `rowId`, `geaendertAm`); not an API write.
    pub fn edit_beteiligter(&self, bet_nr: i64, patch: Value) -> bool {
        let now = self.clock().now_berlin();
        let mut state = self.shared.state.lock();
        let row_id = state.next_row_id();
        match state.beteiligte.get_mut(&bet_nr) {
            Some(b) => {
                merge_object(b, &patch);
                set(b, "betNr", json!(bet_nr));
                set(b, "rowId", json!(row_id));
                set(b, "geaendertAm", json!(fmt_local(now)));
                true
            }
            None => false,
        }
    }

    pub fn beteiligter(&self, bet_nr: i64) -> Option<Value> {
        self.shared.state.lock().beteiligte.get(&bet_nr).cloned()
    }

    /// The call notes of a Beteiligter as stored ([`NOTIZEN`]).
    pub fn notizen(&self, bet_nr: i64) -> Vec<Value> {
        self.shared
            .state
            .lock()
            .notizen
            .get(&bet_nr)
            .cloned()
            .unwrap_or_default()
    }

    /// The Bankverbindungen of a Beteiligter as stored.
    pub fn bankverbindungen(&self, bet_nr: i64) -> Vec<Value> {
        self.shared
            .state
            .lock()
            .bank
            .entries
            .get(&bet_nr)
            .cloned()
            .unwrap_or_default()
    }

    /// Seeds a Bankverbindung as a person would type it in Advoware; returns its id.
    pub fn insert_bankverbindung(&self, bet_nr: i64, mut entry: Value) -> i64 {
        let mut state = self.shared.state.lock();
        let id = state.bank.take_id();
        let row_id = state.next_row_id();
        set(&mut entry, "id", json!(id));
        set(&mut entry, "rowId", json!(row_id));
        state.bank.entries.entry(bet_nr).or_default().push(entry);
        id
    }

    /// Changes a Bankverbindung as a person would (merged; new `rowId`).
    pub fn edit_bankverbindung(&self, bet_nr: i64, id: i64, patch: Value) -> bool {
        let mut state = self.shared.state.lock();
        let row_id = state.next_row_id();
        let entry = state.bank.entries.get_mut(&bet_nr).and_then(|l| {
            l.iter_mut()
                .find(|e| e.get("id").and_then(Value::as_i64) == Some(id))
        });
        match entry {
            Some(e) => {
                merge_object(e, &patch);
                set(e, "rowId", json!(row_id));
                true
            }
            None => false,
        }
    }

    /// From now on `DELETE` of a Bankverbindung answers 403, as Kommunikationen and Adressen do.
    pub fn deny_bank_delete(&self) {
        self.shared.state.lock().bank.deny_delete = true;
    }

    /// Write requests (POST/PUT/DELETE, accepted or not) that reached `resource`
    /// ([`TERMINE`], [`BETEILIGTE`], [`KOMMUNIKATIONEN`], [`BANKVERBINDUNGEN`]).
    pub fn writes(&self, resource: &str) -> usize {
        self.shared
            .state
            .lock()
            .writes
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// Write requests to any resource.
    pub fn total_writes(&self) -> usize {
        self.shared.state.lock().writes.values().sum()
    }

    /// Zeroes write counters and token stats (not the data).
    pub fn reset_counters(&self) {
        let mut state = self.shared.state.lock();
        state.writes.clear();
        state.token_stats = TokenStats::default();
    }

    /// Stops the server and waits for open connections.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn message(status: StatusCode, text: &str) -> Response {
    json_response(status, json!({ "Message": text }))
}

fn error_shape(status: StatusCode) -> Response {
    let text = status.canonical_reason().unwrap_or("Error");
    message(status, text)
}

fn unauthorized() -> Response {
    message(
        StatusCode::UNAUTHORIZED,
        "Authorization has been denied for this request.",
    )
}

fn not_found_entity(what: &str) -> Response {
    message(StatusCode::NOT_FOUND, &format!("{what} not found."))
}

fn bad_request(text: &str) -> Response {
    message(StatusCode::BAD_REQUEST, text)
}

async fn not_found(uri: Uri) -> Response {
    message(
        StatusCode::NOT_FOUND,
        &format!(
            "No HTTP resource was found that matches the request URI '{}'.",
            uri.path()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Configurator and token

async fn configurator(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match query.get("Kanzlei") {
        Some(k) if *k == shared.config.kanzlei => {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            let base = format!("http://{host}/");
            json_response(
                StatusCode::OK,
                json!({"relayUrl": base, "connectorUrl": null, "securityGateway": base}),
            )
        }
        _ => not_found_entity("Kanzlei"),
    }
}

fn token_error(shared: &Shared, status: StatusCode, error: &str, description: &str) -> Response {
    let mut state = shared.state.lock();
    state.token_stats.failed += 1;
    state.last_token_error = Some(description.to_owned());
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// `Role`/`Product` as the client sent them, for both comparison and the signed message.
fn number_field(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if s.parse::<i64>().is_ok() => Some(s.clone()),
        _ => None,
    }
}

async fn token(State(shared): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return token_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body is not JSON",
        );
    };
    let cfg = &shared.config;
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(app_id), Some(kanzlei), Some(database), Some(user), Some(password)) = (
        text("AppID"),
        text("Kanzlei"),
        text("Database"),
        text("User"),
        text("Password"),
    ) else {
        return token_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing credential field",
        );
    };
    let (Some(role), Some(product)) = (number_field(&body, "Role"), number_field(&body, "Product"))
    else {
        return token_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Role/Product missing or not numeric",
        );
    };
    let (Some(nonce), Some(signature), Some(timestamp)) = (
        text("Nonce"),
        text("HMAC512Signature"),
        text("RequestTimeStamp"),
    ) else {
        return token_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing Nonce, HMAC512Signature or RequestTimeStamp",
        );
    };
    if nonce.is_empty() {
        return token_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "empty Nonce",
        );
    }
    let credentials_ok = app_id == cfg.app_id
        && kanzlei == cfg.kanzlei
        && database == cfg.database
        && user.eq_ignore_ascii_case(&cfg.user)
        && role == cfg.role.to_string()
        && product == cfg.product.to_string()
        && constant_time_eq(password.as_bytes(), cfg.password.as_bytes());
    if !credentials_ok {
        return token_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid credentials",
        );
    }
    let message = format!("{product}:{app_id}:{nonce}:{timestamp}");
    let expected = hmac_sha512_b64(&shared.key, message.as_bytes());
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return token_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid HMAC512Signature",
        );
    }
    let Ok(sent_at) = DateTime::parse_from_rfc3339(&timestamp) else {
        return token_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "RequestTimeStamp is not a valid timestamp",
        );
    };
    let now = cfg.clock.now();
    let skew = (now - sent_at.with_timezone(&Utc)).num_seconds().abs();
    if skew > cfg.max_clock_skew_secs {
        return token_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "RequestTimeStamp outside the allowed clock skew",
        );
    }
    let token = random_string(48);
    let refresh = random_string(32);
    let expires_at = now + Duration::seconds(cfg.token_lifetime_secs);
    {
        let mut state = shared.state.lock();
        if !state.nonces.insert(nonce) {
            drop(state);
            return token_error(
                &shared,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Nonce already used",
            );
        }
        state.tokens.insert(
            token.clone(),
            TokenRecord {
                expires_at,
                revoked: false,
            },
        );
        state.token_stats.succeeded += 1;
    }
    json_response(
        StatusCode::OK,
        json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": cfg.token_lifetime_secs,
            "expiration_utc": expires_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "refresh_token": refresh,
        }),
    )
}

/// The 401 of [`AdvowareFake::deny_path`], before any handler runs.
async fn deny_paths(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let denied = {
        let state = shared.state.lock();
        let path = request.uri().path();
        state
            .denied_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    };
    if denied {
        return unauthorized();
    }
    next.run(request).await
}

/// Checks `Authorization: Bearer <token>` against issued, unexpired, unrevoked tokens.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let now = shared.config.clock.now();
    shared
        .state
        .lock()
        .tokens
        .get(token.trim())
        .is_some_and(|r| !r.revoked && r.expires_at > now)
}

macro_rules! require_auth {
    ($shared:expr, $headers:expr) => {
        if !authorized(&$shared, &$headers) {
            return unauthorized();
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Mitarbeiter and Termine

async fn list_mitarbeiter(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    require_auth!(shared, headers);
    let list = shared.state.lock().mitarbeiter.clone();
    json_response(StatusCode::OK, Value::Array(list))
}

/// Date part of an Advoware date (`2026-12-01T00:00:00` or `2026-12-01`).
fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

fn fmt_local(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

async fn list_termine(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    require_auth!(shared, headers);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let kuerzel = param("kuerzel").filter(|k| !k.is_empty());
    // FACTS §1: `frNr` as a query parameter is spelled `frnr` (matched case-insensitively, as
    // ASP.NET binds parameters); it narrows the list to that one appointment.
    let fr_nr = match param("frnr") {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return bad_request(&format!("The value '{raw}' is not valid for frnr.")),
        },
    };
    let mut range = [None, None];
    for (slot, name) in range.iter_mut().zip(["from", "to"]) {
        if let Some(raw) = param(name) {
            match parse_date(&raw) {
                Some(d) => *slot = Some(d),
                None => return bad_request(&format!("The value '{raw}' is not valid for {name}.")),
            }
        }
    }
    let [from, to] = range;
    let list: Vec<Value> = shared
        .state
        .lock()
        .termine
        .values()
        .filter(|t| fr_nr.is_none_or(|n| t.get("frNr").and_then(Value::as_i64) == Some(n)))
        .filter(|t| match &kuerzel {
            Some(k) => t
                .get("kuerzel")
                .and_then(Value::as_str)
                .is_some_and(|tk| tk.eq_ignore_ascii_case(k)),
            None => true,
        })
        .filter(|t| {
            let start = t.get("datum").and_then(Value::as_str).and_then(parse_date);
            let end = t
                .get("datumBis")
                .and_then(Value::as_str)
                .and_then(parse_date)
                .or(start);
            match (start, end) {
                (Some(start), Some(end)) => {
                    from.is_none_or(|from| end >= from) && to.is_none_or(|to| start <= to)
                }
                _ => true,
            }
        })
        .cloned()
        .collect();
    json_response(StatusCode::OK, Value::Array(list))
}

/// `GET …/Termine/{frNr}`: FACTS §1 reads one appointment with the query parameter `frnr` on
/// the list, so this fake — like one written from the public documentation — has no GET on the
/// item path (PUT and DELETE only) and answers as ASP.NET Web API does for a route without
/// that method: 405 with `Allow`.
async fn get_termin_path_form(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    require_auth!(shared, headers);
    let mut resp = message(
        StatusCode::METHOD_NOT_ALLOWED,
        "The requested resource does not support http method 'GET'.",
    );
    resp.headers_mut().insert(
        axum::http::header::ALLOW,
        axum::http::HeaderValue::from_static("PUT, DELETE"),
    );
    resp
}

/// Validates appointment fields the way a typed API model would: dates, times, flags, ranges.
fn validate_termin(t: &Value, creating: bool) -> Result<(), String> {
    let Some(obj) = t.as_object() else {
        return Err("The request body must be a JSON object.".into());
    };
    if creating {
        for required in ["datum", "kuerzel"] {
            if obj.get(required).is_none_or(Value::is_null) {
                return Err(format!("The {required} field is required."));
            }
        }
    }
    for field in ["datum", "datumBis"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            if v.as_str().and_then(parse_date).is_none() {
                return Err(format!("The value '{v}' is not valid for {field}."));
            }
        }
    }
    for field in ["uhrzeitVon", "uhrzeitBis"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            if v.as_str().and_then(parse_time).is_none() {
                return Err(format!("The value '{v}' is not valid for {field}."));
            }
        }
    }
    if let Some(v) = obj.get("kuerzel").filter(|v| !v.is_null()) {
        if v.as_str().is_none_or(|s| s.trim().is_empty()) {
            return Err("The kuerzel field must be a non-empty string.".into());
        }
    }
    for field in ["dauertermin", "turnus", "turnusArt"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            if v.as_i64().is_none() && !v.is_boolean() {
                return Err(format!("The value '{v}' is not valid for {field}."));
            }
        }
    }
    if let Some(art) = obj.get("turnusArt").and_then(Value::as_i64) {
        if !(0..=4).contains(&art) {
            return Err(format!("The value '{art}' is not valid for turnusArt."));
        }
    }
    if let (Some(a), Some(b)) = (
        obj.get("datum")
            .and_then(Value::as_str)
            .and_then(parse_date),
        obj.get("datumBis")
            .and_then(Value::as_str)
            .and_then(parse_date),
    ) {
        if b < a {
            return Err("datumBis must not be before datum.".into());
        }
    }
    Ok(())
}

/// Stores dates the way Advoware returns them (`YYYY-MM-DDT00:00:00`), times as `HH:MM:SS`.
fn normalise_termin(t: &mut Value) {
    for field in ["datum", "datumBis"] {
        if let Some(d) = t.get(field).and_then(Value::as_str).and_then(parse_date) {
            set(
                t,
                field,
                json!(format!("{}T00:00:00", d.format("%Y-%m-%d"))),
            );
        }
    }
    for field in ["uhrzeitVon", "uhrzeitBis"] {
        if let Some(time) = t.get(field).and_then(Value::as_str).and_then(parse_time) {
            set(t, field, json!(time.format("%H:%M:%S").to_string()));
        }
    }
}

fn parse_json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body).map_err(|_| bad_request("The request is invalid."))
}

async fn create_termin(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    shared.state.lock().count_write(TERMINE);
    require_auth!(shared, headers);
    let mut termin = match parse_json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(text) = validate_termin(&termin, true) {
        return bad_request(&text);
    }
    normalise_termin(&mut termin);
    let now = shared.config.clock.now_berlin();
    let mut state = shared.state.lock();
    let fr_nr = state.next_frnr;
    state.next_frnr += 1;
    set(&mut termin, "frNr", json!(fr_nr));
    set(&mut termin, "zuletztGeaendertAm", json!(fmt_local(now)));
    state.termine.insert(fr_nr, termin.clone());
    json_response(StatusCode::CREATED, termin)
}

async fn update_termin(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(fr_nr): Path<String>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(TERMINE);
    require_auth!(shared, headers);
    let Ok(fr_nr) = fr_nr.parse::<i64>() else {
        return bad_request(&format!("The value '{fr_nr}' is not valid for frNr."));
    };
    let mut patch = match parse_json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(text) = validate_termin(&patch, false) {
        return bad_request(&text);
    }
    if let Some(body_nr) = patch.get("frNr").filter(|v| !v.is_null()) {
        if body_nr.as_i64() != Some(fr_nr) {
            return bad_request("frNr in the body does not match the URI.");
        }
    }
    normalise_termin(&mut patch);
    let now = shared.config.clock.now_berlin();
    let mut state = shared.state.lock();
    let Some(termin) = state.termine.get_mut(&fr_nr) else {
        return not_found_entity("Termin");
    };
    merge_object(termin, &patch);
    set(termin, "frNr", json!(fr_nr));
    set(termin, "zuletztGeaendertAm", json!(fmt_local(now)));
    json_response(StatusCode::OK, termin.clone())
}

async fn delete_termin(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(fr_nr): Path<String>,
) -> Response {
    shared.state.lock().count_write(TERMINE);
    require_auth!(shared, headers);
    let Ok(fr_nr) = fr_nr.parse::<i64>() else {
        return bad_request(&format!("The value '{fr_nr}' is not valid for frNr."));
    };
    match shared.state.lock().termine.remove(&fr_nr) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found_entity("Termin"),
    }
}

// ---------------------------------------------------------------------------------------------
// Beteiligte and Kommunikationen

/// Fields the server owns; ignored in PUT bodies.
/// Sub-records (`kommunikation`, `adressen`) change only through their own endpoints.
const BETEILIGTE_READ_ONLY: [&str; 5] =
    ["betNr", "rowId", "geaendertAm", "kommunikation", "adressen"];

async fn get_beteiligter(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(bet_nr): Path<String>,
) -> Response {
    require_auth!(shared, headers);
    let Ok(bet_nr) = bet_nr.parse::<i64>() else {
        return bad_request(&format!("The value '{bet_nr}' is not valid for betNr."));
    };
    match shared.state.lock().beteiligte.get(&bet_nr) {
        Some(b) => json_response(StatusCode::OK, b.clone()),
        None => not_found_entity("Beteiligter"),
    }
}

async fn create_beteiligter(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(BETEILIGTE);
    require_auth!(shared, headers);
    let mut b = match parse_json_body(&body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return bad_request("The request body must be a JSON object."),
        Err(r) => return r,
    };
    let has_name = ["name", "vorname"].iter().any(|f| {
        b.get(*f)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    });
    if !has_name {
        return bad_request("The name field is required.");
    }
    if let Some(map) = b.as_object_mut() {
        for field in BETEILIGTE_READ_ONLY {
            map.remove(field);
        }
    }
    let now = shared.config.clock.now_berlin();
    let mut state = shared.state.lock();
    let bet_nr = state.next_betnr;
    state.next_betnr += 1;
    let row_id = state.next_row_id();
    set(&mut b, "betNr", json!(bet_nr));
    set(&mut b, "rowId", json!(row_id));
    set(&mut b, "geaendertAm", json!(fmt_local(now)));
    set(&mut b, "kommunikation", json!([]));
    set(&mut b, "adressen", json!([]));
    state.beteiligte.insert(bet_nr, b.clone());
    json_response(StatusCode::CREATED, b)
}

async fn update_beteiligter(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(bet_nr): Path<String>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(BETEILIGTE);
    require_auth!(shared, headers);
    let Ok(bet_nr) = bet_nr.parse::<i64>() else {
        return bad_request(&format!("The value '{bet_nr}' is not valid for betNr."));
    };
    let mut patch = match parse_json_body(&body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return bad_request("The request body must be a JSON object."),
        Err(r) => return r,
    };
    if let Some(map) = patch.as_object_mut() {
        for field in BETEILIGTE_READ_ONLY {
            map.remove(field);
        }
    }
    // PUT replaces the record, so it must name the Beteiligter like a POST.
    let has_name = ["name", "vorname"].iter().any(|f| {
        patch
            .get(*f)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    });
    let now = shared.config.clock.now_berlin();
    let mut state = shared.state.lock();
    if !state.beteiligte.contains_key(&bet_nr) {
        return not_found_entity("Beteiligter");
    }
    if !has_name {
        return bad_request("The name field is required.");
    }
    let row_id = state.next_row_id();
    let Some(b) = state.beteiligte.get_mut(&bet_nr) else {
        return not_found_entity("Beteiligter");
    };
    // Advoware's PUT replaces the whole record: attributes missing from the body are gone
    // (callers read, modify and write back everything). Read-only parts stay.
    let mut replaced = patch;
    for field in BETEILIGTE_READ_ONLY {
        if let Some(v) = b.get(field) {
            set(&mut replaced, field, v.clone());
        }
    }
    *b = replaced;
    set(b, "rowId", json!(row_id));
    set(b, "geaendertAm", json!(fmt_local(now)));
    json_response(StatusCode::OK, b.clone())
}

fn validate_kommunikation(k: &Value, creating: bool) -> Result<(), String> {
    let Some(obj) = k.as_object() else {
        return Err("The request body must be a JSON object.".into());
    };
    if creating {
        match obj.get("kommKz").and_then(Value::as_i64) {
            Some(kz) if (1..=12).contains(&kz) => {}
            _ => return Err("kommKz must be between 1 and 12.".into()),
        }
    }
    if let Some(tlf) = obj.get("tlf").filter(|v| !v.is_null()) {
        if !tlf.is_string() {
            return Err("tlf must be a string.".into());
        }
    }
    if let Some(online) = obj.get("online").filter(|v| !v.is_null()) {
        if !online.is_boolean() {
            return Err("online must be a boolean.".into());
        }
    }
    Ok(())
}

async fn create_kommunikation(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(bet_nr): Path<String>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(KOMMUNIKATIONEN);
    require_auth!(shared, headers);
    let Ok(bet_nr) = bet_nr.parse::<i64>() else {
        return bad_request(&format!("The value '{bet_nr}' is not valid for betNr."));
    };
    let entry = match parse_json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(text) = validate_kommunikation(&entry, true) {
        return bad_request(&text);
    }
    add_sub_record(&shared, bet_nr, "kommunikation", entry)
}

/// `POST …/Beteiligte/{betNr}/Notizen`: any JSON object, stored with a fresh id (404 for an
/// unknown Beteiligter, 400 for anything but an object).
async fn create_notiz(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(bet_nr): Path<String>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(NOTIZEN);
    require_auth!(shared, headers);
    let Ok(bet_nr) = bet_nr.parse::<i64>() else {
        return bad_request(&format!("The value '{bet_nr}' is not valid for betNr."));
    };
    let mut entry = match parse_json_body(&body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return bad_request("A note must be a JSON object."),
        Err(r) => return r,
    };
    let mut state = shared.state.lock();
    if !state.beteiligte.contains_key(&bet_nr) {
        return not_found_entity("Beteiligter");
    }
    let id = state.next_komm_id;
    state.next_komm_id += 1;
    set(&mut entry, "id", json!(id));
    state.notizen.entry(bet_nr).or_default().push(entry.clone());
    json_response(StatusCode::CREATED, entry)
}

/// Stores a new sub-record (`list`: `kommunikation` or `adressen`) with a fresh id; 201 with it.
fn add_sub_record(shared: &Shared, bet_nr: i64, list: &str, mut entry: Value) -> Response {
    let now = shared.config.clock.now_berlin();
    let mut state = shared.state.lock();
    if !state.beteiligte.contains_key(&bet_nr) {
        return not_found_entity("Beteiligter");
    }
    let id = state.next_komm_id;
    state.next_komm_id += 1;
    let row_id = state.next_row_id();
    set(&mut entry, "id", json!(id));
    let Some(b) = state.beteiligte.get_mut(&bet_nr) else {
        return not_found_entity("Beteiligter");
    };
    if !b.get(list).is_some_and(Value::is_array) {
        set(b, list, json!([]));
    }
    if let Some(items) = b.get_mut(list).and_then(Value::as_array_mut) {
        items.push(entry.clone());
    }
    // Changing a sub-record changes the Beteiligter's row (assumption; see README).
    set(b, "rowId", json!(row_id));
    set(b, "geaendertAm", json!(fmt_local(now)));
    json_response(StatusCode::CREATED, entry)
}

/// Merges `patch` into the sub-record `id` of `list`; 200 with it, 404 naming `what`.
fn change_sub_record(
    shared: &Shared,
    bet_nr: i64,
    list: &str,
    id: i64,
    patch: &Value,
    what: &str,
) -> Response {
    let now = shared.config.clock.now_berlin();
    let mut state = shared.state.lock();
    let row_id = state.next_row_id();
    let Some(b) = state.beteiligte.get_mut(&bet_nr) else {
        return not_found_entity("Beteiligter");
    };
    let updated = b
        .get_mut(list)
        .and_then(Value::as_array_mut)
        .and_then(|items| {
            items
                .iter_mut()
                .find(|e| e.get("id").and_then(Value::as_i64) == Some(id))
        })
        .map(|entry| {
            merge_object(entry, patch);
            entry.clone()
        });
    match updated {
        Some(entry) => {
            set(b, "rowId", json!(row_id));
            set(b, "geaendertAm", json!(fmt_local(now)));
            json_response(StatusCode::OK, entry)
        }
        None => not_found_entity(what),
    }
}

/// `DELETE` of a sub-record: Advoware refuses it (FACTS §1).
fn refuse_delete(
    shared: &Shared,
    headers: &HeaderMap,
    method: &Method,
    resource: &str,
) -> Response {
    shared.state.lock().count_write(resource);
    if !authorized(shared, headers) {
        return unauthorized();
    }
    message(
        StatusCode::FORBIDDEN,
        &format!("The requested resource does not support http method '{method}'."),
    )
}

async fn update_kommunikation(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((bet_nr, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(KOMMUNIKATIONEN);
    require_auth!(shared, headers);
    let (Ok(bet_nr), Ok(id)) = (bet_nr.parse::<i64>(), id.parse::<i64>()) else {
        return bad_request("The request is invalid.");
    };
    let mut patch = match parse_json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(text) = validate_kommunikation(&patch, false) {
        return bad_request(&text);
    }
    if let Some(map) = patch.as_object_mut() {
        // kommKz is read-only on PUT: the stored value stays (assumption: silently ignored).
        map.remove("kommKz");
        map.remove("id");
    }
    change_sub_record(
        &shared,
        bet_nr,
        "kommunikation",
        id,
        &patch,
        "Kommunikation",
    )
}

/// Addresses cannot be deleted through the API either (FACTS §1).
async fn delete_adresse(
    State(shared): State<Shared>,
    headers: HeaderMap,
    method: Method,
) -> Response {
    refuse_delete(&shared, &headers, &method, ADRESSEN)
}

async fn delete_kommunikation(
    State(shared): State<Shared>,
    headers: HeaderMap,
    method: Method,
) -> Response {
    refuse_delete(&shared, &headers, &method, KOMMUNIKATIONEN)
}

async fn create_adresse(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(bet_nr): Path<String>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(ADRESSEN);
    require_auth!(shared, headers);
    let Ok(bet_nr) = bet_nr.parse::<i64>() else {
        return bad_request(&format!("The value '{bet_nr}' is not valid for betNr."));
    };
    let entry = match parse_json_body(&body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return bad_request("The request body must be a JSON object."),
        Err(r) => return r,
    };
    if let Some(bad) = entry.as_object().and_then(|m| {
        m.iter()
            .find(|(k, v)| *k != "id" && !(v.is_string() || v.is_null()))
    }) {
        return bad_request(&format!("{} must be a string.", bad.0));
    }
    add_sub_record(&shared, bet_nr, "adressen", entry)
}

/// `PUT` of an address: only [`ADRESSE_WRITABLE`] are taken; other fields in the body are
/// ignored (Advoware keeps its values), as the fake does with `kommKz`.
async fn update_adresse(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((bet_nr, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(ADRESSEN);
    require_auth!(shared, headers);
    let (Ok(bet_nr), Ok(id)) = (bet_nr.parse::<i64>(), id.parse::<i64>()) else {
        return bad_request("The request is invalid.");
    };
    let patch = match parse_json_body(&body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return bad_request("The request body must be a JSON object."),
        Err(r) => return r,
    };
    let writable: serde_json::Map<String, Value> = ADRESSE_WRITABLE
        .iter()
        .filter_map(|f| patch.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .collect();
    if writable.values().any(|v| !(v.is_string() || v.is_null())) {
        return bad_request("Address fields must be strings.");
    }
    change_sub_record(
        &shared,
        bet_nr,
        "adressen",
        id,
        &Value::Object(writable),
        "Adresse",
    )
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

fn set(target: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = target {
        map.insert(key.to_owned(), value);
    }
}

/// Shallow merge: every key of `patch` (an object) replaces the one in `target`.
fn merge_object(target: &mut Value, patch: &Value) {
    if let (Value::Object(target), Value::Object(patch)) = (target, patch) {
        for (k, v) in patch {
            target.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_facts_vector() {
        // FACTS §1: key bytes `test-secret-key` (base64-encoded here as production keys are).
        let config = AdvowareConfig {
            app_id: "app-123".into(),
            product: 64,
            api_key_b64: B64.encode("test-secret-key"),
            ..AdvowareConfig::default()
        };
        let sig = config.sign("nonce-abc", "2026-08-30T00:00:00.000Z").ok();
        assert_eq!(
            sig.as_deref(),
            Some("o7rz9KmoXZs550HfzO6ffiG17XwiPmlBHlksUYKZ3jcfolELow51Fw5KlrQqCK5y41aIValDjrh1iQ2GZ2WtqQ==")
        );
    }

    #[test]
    fn seven_digit_fractions_parse() {
        assert!(DateTime::parse_from_rfc3339("2021-01-29T14:04:26.7955547Z").is_ok());
        assert!(DateTime::parse_from_rfc3339("2021-01-29T14:04:26").is_err());
    }

    #[test]
    fn termin_validation_rejects_bad_fields() {
        assert!(validate_termin(
            &json!({"datum": "2026-12-01T00:00:00", "kuerzel": "SB"}),
            true
        )
        .is_ok());
        assert!(validate_termin(&json!({"kuerzel": "SB"}), true).is_err());
        assert!(validate_termin(&json!({"datum": "01.12.2026", "kuerzel": "SB"}), true).is_err());
        assert!(validate_termin(&json!({"uhrzeitVon": "9 Uhr"}), false).is_err());
        assert!(validate_termin(&json!({"turnusArt": 7}), false).is_err());
        assert!(validate_termin(
            &json!({"datum": "2026-12-02", "datumBis": "2026-12-01"}),
            false
        )
        .is_err());
    }
}
