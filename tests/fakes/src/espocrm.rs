//! Fake of EspoCRM's REST API (`/api/v1/`, `X-Api-Key`) and of its webhook sender.
//!
//! The server is a generic entity store for the entity types the gateway touches (configurable),
//! with the list/where query language, 17-character ids, `createdAt`/`modifiedAt` in
//! `YYYY-MM-DD HH:mm:ss` UTC, Lead duplicate detection (409 unless `X-Skip-Duplicate-Check`), a
//! few required-field checks answered in EspoCRM's `validationFailure` shape, and the webhook
//! registry, and relationships (`POST/GET/DELETE {Entity}/{id}/{link}`; the links the gateway uses
//! are known: `TargetList` ↔ `leads`/`contacts`, `CDokumente` ↔ cases/parties/accounts, `CBeteiligte` → `bankverbindungen` (the
//! foreign key `beteiligteId`), unknown
//! ones answer 404), attachments
//! (`GET Attachment/file/{id}`, stored with [`EspoCrmFake::insert_attachment`]). Errors carry EspoCRM's
//! `X-Status-Reason` header, mostly with an empty body.
//!
//! Webhooks: every create/update/delete (through the API or a test helper) queues events for the
//! matching registered webhooks; [`EspoCrmFake::flush_webhooks`] delivers them like EspoCRM's
//! scheduled job (JSON array batches of up to 20, signed, a 410 answer deletes the webhook). The
//! standalone [`send_webhook`] signs and sends a batch you give it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::clock::FakeClock;
use crate::server::{constant_time_eq, json as json_response, Controls, RunningServer, StartError};

/// Entity types served by default.
pub const DEFAULT_ENTITIES: [&str; 12] = [
    "Lead",
    "TargetList",
    "Task",
    "Call",
    "Notification",
    "CBeteiligte",
    "CBankverbindungen",
    "CDokumente",
    "Contact",
    "CAdressen",
    "Raeumungsklage",
    "Account",
];

/// EspoCRM refuses list requests asking for more than this many records.
pub const MAX_LIST_SIZE: usize = 200;

/// Configuration of the fake.
#[derive(Clone)]
pub struct EspoCrmConfig {
    pub bind: SocketAddr,
    /// The API user's key, expected in `X-Api-Key`.
    pub api_key: String,
    pub entities: Vec<String>,
    pub clock: FakeClock,
    /// Signature headers [`EspoCrmFake::flush_webhooks`] sends.
    pub signature_style: SignatureStyle,
}

impl Default for EspoCrmConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: "fake-espocrm-api-key".into(),
            entities: DEFAULT_ENTITIES.iter().map(|s| (*s).to_owned()).collect(),
            clock: FakeClock::new(),
            signature_style: SignatureStyle::Both,
        }
    }
}

impl std::fmt::Debug for EspoCrmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspoCrmConfig")
            .field("bind", &self.bind)
            .field("api_key", &"<redacted>")
            .field("entities", &self.entities)
            .field("signature_style", &self.signature_style)
            .finish()
    }
}

/// Which signature headers a webhook request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureStyle {
    /// `Signature: base64(id + ":" + hex(hmac))` (EspoCRM ≥ 9.0).
    Current,
    /// `X-Signature: base64(id + ":" + raw hmac bytes)` (before 9.0; removed in 11).
    Legacy,
    /// Both headers, as EspoCRM 9.x/10.x sends.
    Both,
    /// No signature (a webhook without secret).
    None,
}

/// A registered webhook.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub id: String,
    pub event: String,
    pub url: String,
    pub secret_key: String,
    pub is_active: bool,
    /// Skip events caused by the API user itself (EspoCRM's `skipOwn`).
    pub skip_own: bool,
}

/// Outcome of delivering one batch in [`EspoCrmFake::flush_webhooks`].
#[derive(Clone, Debug)]
pub struct Delivery {
    pub webhook_id: String,
    pub events: usize,
    /// HTTP status, or `None` for a connection error / timeout.
    pub status: Option<u16>,
}

#[derive(Default)]
struct State_ {
    records: HashMap<String, BTreeMap<String, Value>>,
    webhooks: Vec<Webhook>,
    /// Pending events per webhook id, oldest first.
    queue: HashMap<String, Vec<Value>>,
    writes: HashMap<String, usize>,
    id_counter: u64,
    /// `(entity, id, link)` → related ids.
    links: HashMap<(String, String, String), std::collections::BTreeSet<String>>,
    /// Attachment id → (content type, bytes), served by `GET Attachment/file/{id}`.
    attachments: HashMap<String, (String, Vec<u8>)>,
}

#[derive(Clone)]
struct Shared {
    config: Arc<EspoCrmConfig>,
    state: Arc<Mutex<State_>>,
}

/// A running EspoCRM fake. Stops when dropped.
pub struct EspoCrmFake {
    server: RunningServer,
    shared: Shared,
    controls: Controls,
}

impl std::fmt::Debug for EspoCrmFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspoCrmFake")
            .field("addr", &self.server.addr())
            .finish()
    }
}

pub async fn start(config: EspoCrmConfig) -> Result<EspoCrmFake, StartError> {
    let mut state = State_::default();
    for entity in &config.entities {
        state.records.insert(entity.clone(), BTreeMap::new());
    }
    let shared = Shared {
        config: Arc::new(config),
        state: Arc::new(Mutex::new(state)),
    };
    let controls = Controls::default();
    let router = Router::new()
        .route("/api/v1/Webhook", get(list_webhooks).post(create_webhook))
        .route("/api/v1/Webhook/{id}", delete(delete_webhook))
        .route("/api/v1/Attachment/file/{id}", get(attachment_file))
        .route("/api/v1/{entity}", get(list).post(create))
        .route(
            "/api/v1/{entity}/{id}",
            get(read).put(update).patch(update).delete(remove),
        )
        .route(
            "/api/v1/{entity}/{id}/{link}",
            get(list_related).post(relate).delete(unrelate),
        )
        .fallback(fallback)
        .with_state(shared.clone());
    let server =
        RunningServer::spawn(shared.config.bind, router, controls.clone(), error_shape).await?;
    Ok(EspoCrmFake {
        server,
        shared,
        controls,
    })
}

impl EspoCrmFake {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash); the API is under `/api/v1/`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `http://127.0.0.1:PORT/api/v1/`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v1/", self.base_url())
    }

    pub fn config(&self) -> &EspoCrmConfig {
        &self.shared.config
    }

    pub fn clock(&self) -> &FakeClock {
        &self.shared.config.clock
    }

    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// Shorthand for [`Controls::fail_next`].
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.controls.fail_next(n, status, retry_after);
    }

    /// Creates a record as a CRM user would (no validation, no duplicate check, not counted as an
    /// API write, but queues `create` webhook events). Returns the record with its new id.
    pub fn insert(&self, entity: &str, record: Value) -> Option<Value> {
        let now = self.clock().now();
        let mut state = self.shared.state.lock();
        let stored = store_new(&mut state, entity, record, now)?;
        queue_events(&mut state, entity, "create", &stored, &stored, false);
        Some(stored)
    }

    /// Changes a record as a CRM user would (queues `update`/`fieldUpdate` events).
    pub fn edit(&self, entity: &str, id: &str, patch: Value) -> Option<Value> {
        let now = self.clock().now();
        let mut state = self.shared.state.lock();
        let (stored, changed) = apply_update(&mut state, entity, id, patch, now)?;
        queue_events(&mut state, entity, "update", &stored, &changed, false);
        Some(stored)
    }

    /// Deletes a record as a CRM user would (queues `delete` events).
    pub fn remove(&self, entity: &str, id: &str) -> Option<Value> {
        let mut state = self.shared.state.lock();
        let removed = state.records.get_mut(entity)?.remove(id)?;
        let stub = json!({"id": id});
        queue_events(&mut state, entity, "delete", &stub, &stub, false);
        Some(removed)
    }

    pub fn get(&self, entity: &str, id: &str) -> Option<Value> {
        self.shared
            .state
            .lock()
            .records
            .get(entity)?
            .get(id)
            .cloned()
    }

    /// All records of an entity type (id order).
    pub fn all(&self, entity: &str) -> Vec<Value> {
        self.shared
            .state
            .lock()
            .records
            .get(entity)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// API write requests (POST/PUT/PATCH/DELETE, accepted or not) per entity type.
    pub fn writes(&self, entity: &str) -> usize {
        self.shared
            .state
            .lock()
            .writes
            .get(entity)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_writes(&self) -> usize {
        self.shared.state.lock().writes.values().sum()
    }

    pub fn webhooks(&self) -> Vec<Webhook> {
        self.shared.state.lock().webhooks.clone()
    }

    /// Registers a webhook directly (as an administrator would); returns it.
    pub fn add_webhook(&self, event: &str, url: &str) -> Webhook {
        let mut state = self.shared.state.lock();
        register_webhook(&mut state, event, url)
    }

    /// Stores an attachment's bytes as an upload through EspoCRM's UI would; returns its id (put
    /// it into a record's `<field>Id`). `GET Attachment/file/{id}` streams them back.
    pub fn insert_attachment(&self, content_type: &str, content: Vec<u8>) -> String {
        let now = self.clock().now();
        let mut state = self.shared.state.lock();
        let id = new_id(&mut state, now);
        state
            .attachments
            .insert(id.clone(), (content_type.to_owned(), content));
        id
    }

    /// Events waiting for delivery to a webhook.
    pub fn pending_events(&self, webhook_id: &str) -> Vec<Value> {
        self.shared
            .state
            .lock()
            .queue
            .get(webhook_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Delivers queued events like EspoCRM's job: per webhook, batches of at most 20 events as a
    /// JSON array, signed per [`EspoCrmConfig::signature_style`]. Delivered batches leave the
    /// queue; failed ones stay (EspoCRM retries later); a 410 answer deletes the webhook.
    pub async fn flush_webhooks(&self) -> Vec<Delivery> {
        let hooks = self.webhooks();
        let mut deliveries = Vec::new();
        for hook in hooks.into_iter().filter(|h| h.is_active) {
            loop {
                let batch: Vec<Value> = {
                    let state = self.shared.state.lock();
                    state
                        .queue
                        .get(&hook.id)
                        .map(|q| q.iter().take(20).cloned().collect())
                        .unwrap_or_default()
                };
                if batch.is_empty() {
                    break;
                }
                let sent = send_webhook(
                    &hook.url,
                    &hook.id,
                    &hook.secret_key,
                    &Value::Array(batch.clone()),
                    self.config().signature_style,
                )
                .await;
                let status = sent.ok().map(|r| r.status().as_u16());
                deliveries.push(Delivery {
                    webhook_id: hook.id.clone(),
                    events: batch.len(),
                    status,
                });
                let mut state = self.shared.state.lock();
                match status {
                    Some(s) if (200..300).contains(&s) => {
                        if let Some(q) = state.queue.get_mut(&hook.id) {
                            q.drain(..batch.len().min(q.len()));
                        }
                    }
                    Some(410) => {
                        state.webhooks.retain(|h| h.id != hook.id);
                        state.queue.remove(&hook.id);
                        break;
                    }
                    _ => break,
                }
            }
        }
        deliveries
    }

    /// Relates two records as a user would in EspoCRM's UI (both sides, no API write counted);
    /// false when the link is unknown or a record does not exist.
    pub fn relate(&self, entity: &str, id: &str, link: &str, foreign_id: &str) -> bool {
        let mut state = self.shared.state.lock();
        let Some((foreign, _)) = link_target(entity, link) else {
            return false;
        };
        let exists = |e: &str, i: &str| state.records.get(e).is_some_and(|m| m.contains_key(i));
        if !exists(entity, id) || !exists(foreign, foreign_id) {
            return false;
        }
        set_relation(&mut state, entity, id, link, foreign_id, true);
        true
    }

    /// Unrelates two records (both sides).
    pub fn unrelate(&self, entity: &str, id: &str, link: &str, foreign_id: &str) {
        set_relation(
            &mut self.shared.state.lock(),
            entity,
            id,
            link,
            foreign_id,
            false,
        );
    }

    /// Ids related to `entity`/`id` through `link` (e.g. the leads of a target list).
    pub fn related(&self, entity: &str, id: &str, link: &str) -> Vec<String> {
        self.shared
            .state
            .lock()
            .links
            .get(&(entity.to_owned(), id.to_owned(), link.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Storage

fn fmt_espo(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// EspoCRM ids: 17 lower-case hex characters (uniqid-like: time part + counter/random).
fn new_id(state: &mut State_, now: DateTime<Utc>) -> String {
    use rand::Rng;
    state.id_counter += 1;
    let time_part = format!(
        "{:013x}",
        now.timestamp_micros() as u64 & 0x000f_ffff_ffff_ffff
    );
    let rand_part: u16 = rand::rng().random();
    let mix = (u64::from(rand_part) + state.id_counter) & 0xffff;
    format!("{time_part}{mix:04x}")
}

const READ_ONLY: [&str; 4] = ["id", "createdAt", "modifiedAt", "deleted"];

/// Derived fields EspoCRM maintains itself.
fn derive(entity: &str, record: &mut Map<String, Value>) {
    if entity == "CBeteiligte" {
        // Person-type entity: `name` from first + last name; the firm's companies use `firmenname`.
        let part = |k: &str| {
            record
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let person = format!("{} {}", part("firstName"), part("lastName"))
            .trim()
            .to_owned();
        let firma = part("firmenname");
        let name = if firma.is_empty() { person } else { firma };
        // Records seeded with only a `name` (older tests, the sandbox) keep it.
        if !name.is_empty() {
            record.insert("name".into(), json!(name));
        }
    }
    if entity == "Lead" || entity == "Contact" {
        let part = |k: &str| {
            record
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let name = format!("{} {}", part("firstName"), part("lastName"))
            .trim()
            .to_owned();
        record.insert("name".into(), json!(name));
    }
    if entity == "Call" {
        let parse = |k: &str| {
            record
                .get(k)
                .and_then(Value::as_str)
                .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok())
        };
        match (
            parse("dateStart"),
            parse("dateEnd"),
            record.get("duration").and_then(Value::as_i64),
        ) {
            (Some(start), Some(end), _) => {
                record.insert("duration".into(), json!((end - start).num_seconds().max(0)));
            }
            (Some(start), None, Some(secs)) => {
                let end = start + chrono::Duration::seconds(secs);
                record.insert(
                    "dateEnd".into(),
                    json!(end.format("%Y-%m-%d %H:%M:%S").to_string()),
                );
            }
            _ => {}
        }
    }
}

/// Entities with EspoCRM's e-mail and phone fields (`emailAddressData`, `phoneNumberData`).
const CONTACT_DATA_ENTITIES: [&str; 3] = ["CBeteiligte", "Lead", "Contact"];

/// EspoCRM's phone number types (the default metadata).
pub const PHONE_TYPES: [&str; 5] = ["Mobile", "Office", "Home", "Fax", "Other"];

/// EspoCRM's semantics of the address arrays, applied to a create body or an update patch:
/// setting `emailAddressData`/`phoneNumberData` replaces all entries; entries with an empty value
/// are dropped, a value given twice (e-mail: case-insensitively) is kept once; exactly one entry
/// is primary (the first flagged one, else the first); `emailAddress`/`phoneNumber` become the
/// primary's value. Setting only `emailAddress`/`phoneNumber` replaces the primary entry.
fn contact_data(
    entity: &str,
    patch: &mut Map<String, Value>,
    existing: Option<&Map<String, Value>>,
) {
    if !CONTACT_DATA_ENTITIES.contains(&entity) {
        return;
    }
    for (data, single, value_key) in [
        ("emailAddressData", "emailAddress", "emailAddress"),
        ("phoneNumberData", "phoneNumber", "phoneNumber"),
    ] {
        let list = match (patch.get(data), patch.get(single)) {
            (Some(Value::Array(list)), _) => list.clone(),
            (Some(_), _) => Vec::new(),
            // Only the primary value given: it replaces the primary entry (of a record that has
            // the array; records seeded without one keep the plain attribute).
            (None, Some(v)) if existing.and_then(|e| e.get(data)).is_some() => {
                let mut list: Vec<Value> = existing
                    .and_then(|e| e.get(data))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                list.retain(|e| e.get("primary") != Some(&json!(true)));
                if let Some(v) = v.as_str().filter(|v| !v.trim().is_empty()) {
                    let mut entry =
                        json!({value_key: v, "primary": true, "optOut": false, "invalid": false});
                    if data == "phoneNumberData" {
                        entry["type"] = json!("Office");
                    }
                    list.insert(0, entry);
                }
                list
            }
            (None, _) => continue,
        };
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Value> = Vec::new();
        for e in list {
            let Some(v) = e.get(value_key).and_then(Value::as_str).map(str::trim) else {
                continue;
            };
            if v.is_empty() || !seen.insert(v.to_lowercase()) {
                continue;
            }
            let flag = |k: &str| json!(e.get(k).and_then(Value::as_bool).unwrap_or(false));
            let mut entry = json!({value_key: v, "primary": flag("primary"),
                "optOut": flag("optOut"), "invalid": flag("invalid")});
            if data == "phoneNumberData" {
                entry["type"] = e.get("type").cloned().unwrap_or(json!("Office"));
            }
            out.push(entry);
        }
        let first_primary = out
            .iter()
            .position(|e| e["primary"] == json!(true))
            .unwrap_or(0);
        for (i, e) in out.iter_mut().enumerate() {
            e["primary"] = json!(i == first_primary);
        }
        let primary = out
            .get(first_primary)
            .map_or(Value::Null, |e| e[value_key].clone());
        patch.insert(single.into(), primary);
        patch.insert(data.into(), Value::Array(out));
    }
}

fn store_new(state: &mut State_, entity: &str, record: Value, now: DateTime<Utc>) -> Option<Value> {
    if !state.records.contains_key(entity) {
        return None;
    }
    let mut map = match record {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for field in READ_ONLY {
        map.remove(field);
    }
    contact_data(entity, &mut map, None);
    let id = new_id(state, now);
    map.insert("id".into(), json!(id));
    map.insert("deleted".into(), json!(false));
    map.insert("createdAt".into(), json!(fmt_espo(now)));
    map.insert("modifiedAt".into(), json!(fmt_espo(now)));
    derive(entity, &mut map);
    let value = Value::Object(map);
    state.records.get_mut(entity)?.insert(id, value.clone());
    Some(value)
}

/// Merges `patch`; returns the stored record and the changed attributes (with `id`).
fn apply_update(
    state: &mut State_,
    entity: &str,
    id: &str,
    patch: Value,
    now: DateTime<Utc>,
) -> Option<(Value, Value)> {
    let record = state.records.get_mut(entity)?.get_mut(id)?;
    let Value::Object(target) = record else {
        return None;
    };
    let mut changed = Map::new();
    if let Value::Object(mut patch) = patch {
        contact_data(entity, &mut patch, Some(&target.clone()));
        for (k, v) in patch {
            if READ_ONLY.contains(&k.as_str()) {
                continue;
            }
            if target.get(&k) != Some(&v) {
                changed.insert(k.clone(), v.clone());
            }
            target.insert(k, v);
        }
    }
    if !changed.is_empty() {
        target.insert("modifiedAt".into(), json!(fmt_espo(now)));
        changed.insert("modifiedAt".into(), json!(fmt_espo(now)));
    }
    derive(entity, target);
    changed.insert("id".into(), json!(id));
    Some((record.clone(), Value::Object(changed)))
}

/// Queues webhook events for a change: `<E>.create` gets the full record, `<E>.update` the changed
/// attributes and id, `<E>.delete` `{id}`, `<E>.fieldUpdate.<f>` id plus that field.
fn queue_events(
    state: &mut State_,
    entity: &str,
    action: &str,
    full: &Value,
    changed: &Value,
    by_api_user: bool,
) {
    let mut out: Vec<(String, Value)> = Vec::new();
    for hook in state
        .webhooks
        .iter()
        .filter(|h| h.is_active && !(by_api_user && h.skip_own))
    {
        let Some((hook_entity, rest)) = hook.event.split_once('.') else {
            continue;
        };
        if hook_entity != entity {
            continue;
        }
        let payload = match (rest, action) {
            ("create", "create") => Some(full.clone()),
            ("update", "update") if changed.as_object().is_some_and(|m| m.len() > 1) => {
                Some(changed.clone())
            }
            ("delete", "delete") => Some(json!({"id": full["id"]})),
            (field_event, "update") => field_event.strip_prefix("fieldUpdate.").and_then(|field| {
                changed
                    .get(field)
                    .map(|v| json!({"id": full["id"], field: v}))
            }),
            _ => None,
        };
        if let Some(p) = payload {
            out.push((hook.id.clone(), p));
        }
    }
    for (id, payload) in out {
        state.queue.entry(id).or_default().push(payload);
    }
}

fn register_webhook(state: &mut State_, event: &str, url: &str) -> Webhook {
    let now = Utc::now();
    let hook = Webhook {
        id: new_id(state, now),
        event: event.to_owned(),
        url: url.to_owned(),
        secret_key: hex::encode(rand::random::<[u8; 16]>()),
        is_active: true,
        skip_own: false,
    };
    state.webhooks.push(hook.clone());
    hook
}

// ---------------------------------------------------------------------------------------------
// HTTP: errors and auth

fn status_reason(status: StatusCode, reason: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(reason) {
        response.headers_mut().insert("x-status-reason", value);
    }
    response
}

fn error_shape(status: StatusCode) -> Response {
    status_reason(status, status.canonical_reason().unwrap_or("Error"))
}

fn validation_failure(field: &str, kind: &str) -> Response {
    let body = json!({"messageTranslation": {"label": "validationFailure", "scope": null, "data": {"field": field, "type": kind}}});
    let mut response = json_response(StatusCode::BAD_REQUEST, body);
    response.headers_mut().insert(
        "x-status-reason",
        HeaderValue::from_static("validationFailure"),
    );
    response
}

async fn fallback() -> Response {
    status_reason(StatusCode::NOT_FOUND, "Page not found.")
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("x-api-key")
        .is_some_and(|v| constant_time_eq(v.as_bytes(), shared.config.api_key.as_bytes()))
}

macro_rules! require_auth {
    ($shared:expr, $headers:expr) => {
        if !authorized(&$shared, &$headers) {
            return status_reason(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
    };
}

fn parse_object(body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(status_reason(StatusCode::BAD_REQUEST, "Bad payload.")),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: webhooks

async fn list_webhooks(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    require_auth!(shared, headers);
    let list: Vec<Value> = shared
        .state
        .lock()
        .webhooks
        .iter()
        .map(webhook_json)
        .collect();
    let total = list.len();
    json_response(StatusCode::OK, json!({"list": list, "total": total}))
}

fn webhook_json(h: &Webhook) -> Value {
    json!({"id": h.id, "event": h.event, "url": h.url, "isActive": h.is_active, "secretKey": h.secret_key, "skipOwn": h.skip_own})
}

async fn create_webhook(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    require_auth!(shared, headers);
    let body = match parse_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(event) = body.get("event").and_then(Value::as_str) else {
        return validation_failure("event", "required");
    };
    let Some(url) = body.get("url").and_then(Value::as_str) else {
        return validation_failure("url", "required");
    };
    let entity_ok = event.split_once('.').is_some_and(|(entity, action)| {
        shared.config.entities.iter().any(|e| e == entity)
            && (["create", "update", "delete"].contains(&action)
                || action
                    .strip_prefix("fieldUpdate.")
                    .is_some_and(|f| !f.is_empty()))
    });
    if !entity_ok {
        return validation_failure("event", "valid");
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return validation_failure("url", "valid");
    }
    let mut state = shared.state.lock();
    let mut hook = register_webhook(&mut state, event, url);
    if body.get("skipOwn").and_then(Value::as_bool) == Some(true) {
        hook.skip_own = true;
        if let Some(stored) = state.webhooks.iter_mut().find(|h| h.id == hook.id) {
            stored.skip_own = true;
        }
    }
    json_response(StatusCode::OK, webhook_json(&hook))
}

async fn delete_webhook(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    require_auth!(shared, headers);
    let mut state = shared.state.lock();
    let before = state.webhooks.len();
    state.webhooks.retain(|h| h.id != id);
    if state.webhooks.len() == before {
        return status_reason(StatusCode::NOT_FOUND, "Record not found.");
    }
    state.queue.remove(&id);
    json_response(StatusCode::OK, json!(true))
}

// ---------------------------------------------------------------------------------------------
// HTTP: records

#[derive(Debug, Default)]
struct WhereItem {
    kind: String,
    attribute: Option<String>,
    value: Option<Value>,
}

/// Parses `where[i][type|attribute|value]` (and `where[i][value][]` / `where[i][value][j]` lists).
fn parse_where(query: &[(String, String)]) -> Result<Vec<WhereItem>, String> {
    let mut items: BTreeMap<usize, WhereItem> = BTreeMap::new();
    for (key, value) in query {
        let Some(rest) = key.strip_prefix("where[") else {
            continue;
        };
        let Some((index, rest)) = rest.split_once(']') else {
            return Err(format!("bad where key {key}"));
        };
        let index: usize = index
            .parse()
            .map_err(|_| format!("bad where index in {key}"))?;
        let item = items.entry(index).or_default();
        match rest {
            "[type]" => item.kind = value.clone(),
            "[attribute]" | "[field]" => item.attribute = Some(value.clone()),
            "[value]" => item.value = Some(json!(value)),
            list if list.starts_with("[value][") => {
                let entry = item.value.get_or_insert_with(|| json!([]));
                if !entry.is_array() {
                    *entry = json!([]);
                }
                if let Some(arr) = entry.as_array_mut() {
                    arr.push(json!(value));
                }
            }
            _ => return Err(format!("unsupported where key {key}")),
        }
    }
    Ok(items.into_values().collect())
}

/// Database-like text of a value (MySQL compares case-insensitively; so do we).
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.to_lowercase()),
        Value::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
        other => Some(other.to_string().to_lowercase()),
    }
}

fn query_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s == "true" => Some("1".into()),
        Value::String(s) if s == "false" => Some("0".into()),
        other => text_of(other),
    }
}

/// EspoCRM's ORM filters `phoneNumber` / `emailAddress` with `equals` or `in` through a subquery
/// over all of the record's numbers (addresses), not only the primary one: a record is found by
/// its second number too.
fn matches_any_address(record: &Value, cond: &WhereItem) -> Option<Result<bool, String>> {
    let attr = cond.attribute.as_deref()?;
    let data = match attr {
        "phoneNumber" => "phoneNumberData",
        "emailAddress" => "emailAddressData",
        _ => return None,
    };
    if !matches!(cond.kind.as_str(), "equals" | "in") {
        return None;
    }
    let entries = record.get(data)?.as_array()?;
    let mut any = false;
    for value in entries.iter().filter_map(|e| e.get(attr)) {
        // One entry as a plain record (no array: no recursion).
        match matches(&json!({ attr: value }), cond) {
            Ok(hit) => any |= hit,
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(any))
}

fn matches(record: &Value, cond: &WhereItem) -> Result<bool, String> {
    if let Some(hit) = matches_any_address(record, cond) {
        if hit? {
            return Ok(true);
        }
    }
    let attr = cond.attribute.as_deref().unwrap_or_default();
    let field = record.get(attr).unwrap_or(&Value::Null);
    let field_text = text_of(field);
    let want = cond.value.as_ref().and_then(query_text);
    let list = || -> Vec<String> {
        match &cond.value {
            Some(Value::Array(items)) => items.iter().filter_map(query_text).collect(),
            Some(v) => query_text(v).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let cmp = |f: fn(&str, &str) -> bool| match (&field_text, &want) {
        (Some(a), Some(b)) => f(a, b),
        _ => false,
    };
    Ok(match cond.kind.as_str() {
        "equals" => field_text.is_some() && field_text == want,
        "notEquals" => field_text != want,
        "in" => field_text.as_ref().is_some_and(|f| list().contains(f)),
        "notIn" => field_text.as_ref().is_none_or(|f| !list().contains(f)),
        "isNull" => field.is_null() || field_text.as_deref() == Some(""),
        "isNotNull" => !(field.is_null() || field_text.as_deref() == Some("")),
        "isTrue" => field == &json!(true),
        "isFalse" => field == &json!(false) || field.is_null(),
        "contains" => cmp(|a, b| a.contains(b)),
        "startsWith" => cmp(|a, b| a.starts_with(b)),
        "endsWith" => cmp(|a, b| a.ends_with(b)),
        "greaterThan" | "after" => cmp(|a, b| a > b),
        "lessThan" | "before" => cmp(|a, b| a < b),
        "greaterThanOrEquals" => cmp(|a, b| a >= b),
        "lessThanOrEquals" => cmp(|a, b| a <= b),
        other => return Err(format!("unsupported where type {other}")),
    })
}

fn count_write(shared: &Shared, entity: &str) {
    *shared
        .state
        .lock()
        .writes
        .entry(entity.to_owned())
        .or_default() += 1;
}

fn known(shared: &Shared, entity: &str) -> bool {
    shared.config.entities.iter().any(|e| e == entity)
}

async fn list(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(entity): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    require_auth!(shared, headers);
    if !known(&shared, &entity) {
        return status_reason(StatusCode::NOT_FOUND, "Not found.");
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let max_size = match param("maxSize").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if n <= MAX_LIST_SIZE => n,
        Some(Ok(_)) => {
            return status_reason(
                StatusCode::FORBIDDEN,
                "Max size should not exceed 200. Use offset and limit.",
            )
        }
        Some(Err(_)) => return status_reason(StatusCode::BAD_REQUEST, "Bad maxSize."),
    };
    let offset = match param("offset").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return status_reason(StatusCode::BAD_REQUEST, "Bad offset."),
    };
    let conditions = match parse_where(&query) {
        Ok(c) => c,
        Err(e) => return status_reason(StatusCode::BAD_REQUEST, &e),
    };
    let records: Vec<Value> = shared
        .state
        .lock()
        .records
        .get(&entity)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let mut filtered = Vec::new();
    for record in records {
        let mut keep = true;
        for cond in &conditions {
            match matches(&record, cond) {
                Ok(true) => {}
                Ok(false) => keep = false,
                Err(e) => return status_reason(StatusCode::BAD_REQUEST, &e),
            }
        }
        if keep {
            filtered.push(record);
        }
    }
    // Default order: newest first by createdAt, like EspoCRM's list views.
    let order_by = param("orderBy").unwrap_or("createdAt");
    let desc = match param("order") {
        Some("asc") => false,
        Some("desc") => true,
        Some(_) => return status_reason(StatusCode::BAD_REQUEST, "Bad order."),
        None => param("orderBy").is_none(),
    };
    filtered.sort_by(|a, b| {
        let key = |r: &Value| text_of(r.get(order_by).unwrap_or(&Value::Null));
        let ord = key(a)
            .cmp(&key(b))
            .then_with(|| text_of(&a["id"]).cmp(&text_of(&b["id"])));
        if desc {
            ord.reverse()
        } else {
            ord
        }
    });
    let total = filtered.len();
    let select: Option<Vec<&str>> = param("select").map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    let page: Vec<Value> = filtered
        .into_iter()
        .skip(offset)
        .take(max_size)
        .map(|r| match &select {
            Some(fields) => {
                let mut out = Map::new();
                out.insert("id".into(), r["id"].clone());
                for f in fields {
                    if let Some(v) = r.get(*f) {
                        out.insert((*f).to_owned(), v.clone());
                    }
                }
                Value::Object(out)
            }
            None => r,
        })
        .collect();
    json_response(StatusCode::OK, json!({"total": total, "list": page}))
}

/// `GET Attachment/file/{id}`: the raw bytes with their content type.
async fn attachment_file(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    require_auth!(shared, headers);
    match shared.state.lock().attachments.get(&id) {
        Some((ctype, bytes)) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, ctype.clone())],
            bytes.clone(),
        )
            .into_response(),
        None => status_reason(StatusCode::NOT_FOUND, "Attachment not found."),
    }
}

async fn read(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((entity, id)): Path<(String, String)>,
) -> Response {
    require_auth!(shared, headers);
    if !known(&shared, &entity) {
        return status_reason(StatusCode::NOT_FOUND, "Not found.");
    }
    match shared
        .state
        .lock()
        .records
        .get(&entity)
        .and_then(|m| m.get(&id))
    {
        Some(r) => json_response(StatusCode::OK, r.clone()),
        None => status_reason(StatusCode::NOT_FOUND, "Record not found."),
    }
}

/// Required fields and enum values of the standard entities (a small part of EspoCRM's metadata).
fn validate(entity: &str, record: &Value, creating: bool) -> Result<(), Response> {
    let present = |f: &str| {
        record
            .get(f)
            .is_some_and(|v| !v.is_null() && v != &json!(""))
    };
    let required: &[&str] = match entity {
        "Lead" | "Contact" => &["lastName"],
        "Call" => &["name", "dateStart"],
        "Notification" => &["type"],
        "Task" | "TargetList" => &["name"],
        _ => &[],
    };
    if creating {
        if let Some(missing) = required.iter().find(|f| !present(f)) {
            return Err(validation_failure(missing, "required"));
        }
    }
    // The address arrays: lists of objects with a string value; phone types from the metadata.
    for (data, value_key) in [
        ("emailAddressData", "emailAddress"),
        ("phoneNumberData", "phoneNumber"),
    ] {
        let Some(v) = record.get(data).filter(|v| !v.is_null()) else {
            continue;
        };
        let ok = v.as_array().is_some_and(|list| {
            list.iter().all(|e| {
                e.get(value_key).is_some_and(Value::is_string)
                    && e.get("type")
                        .filter(|t| !t.is_null())
                        .is_none_or(|t| t.as_str().is_some_and(|t| PHONE_TYPES.contains(&t)))
            })
        });
        if !ok {
            return Err(validation_failure(data, "valid"));
        }
    }
    let enums: &[(&str, &[&str])] = match entity {
        "Call" => &[
            ("status", &["Planned", "Held", "Not Held"]),
            ("direction", &["Inbound", "Outbound"]),
        ],
        "Task" => &[
            (
                "status",
                &[
                    "Not Started",
                    "Started",
                    "Completed",
                    "Canceled",
                    "Deferred",
                ],
            ),
            ("priority", &["Low", "Normal", "High", "Urgent"]),
        ],
        "Lead" => &[
            (
                "status",
                &[
                    "New",
                    "Assigned",
                    "In Process",
                    "Converted",
                    "Recycled",
                    "Dead",
                ],
            ),
            (
                "source",
                &[
                    "",
                    "Call",
                    "Email",
                    "Existing Customer",
                    "Partner",
                    "Public Relations",
                    "Web Site",
                    "Campaign",
                    "Other",
                ],
            ),
            ("salutationName", &["", "Mr.", "Ms.", "Mrs.", "Dr."]),
        ],
        // The seeds' sync states; "" is EspoCRM's empty enum option.
        "CBeteiligte" => &[(
            "syncStatus",
            &[
                "",
                "pending_sync",
                "dirty",
                "syncing",
                "clean",
                "failed",
                "conflict",
                "deleted_in_advoware",
                "permanently_failed",
            ],
        )],
        // The same sync states on the firm's bank accounts (FACTS §1).
        "CBankverbindungen" => &[(
            "syncStatus",
            &[
                "",
                "pending_sync",
                "dirty",
                "syncing",
                "clean",
                "failed",
                "conflict",
                "deleted_in_advoware",
                "permanently_failed",
            ],
        )],
        _ => &[],
    };
    for (field, allowed) in enums {
        if let Some(v) = record.get(*field).filter(|v| !v.is_null()) {
            if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                return Err(validation_failure(field, "valid"));
            }
        }
    }
    let datetimes: &[&str] = match entity {
        "CBeteiligte" => &["advowareLastSync", "advowareDeletedAt"],
        "CBankverbindungen" => &["advowareLastSync"],
        _ => &["dateStart", "dateEnd"],
    };
    for field in datetimes {
        if let Some(v) = record.get(*field).filter(|v| !v.is_null()) {
            let ok = v
                .as_str()
                .is_some_and(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok());
            if !ok {
                return Err(validation_failure(field, "valid"));
            }
        }
    }
    if entity == "CBeteiligte" {
        if let Some(v) = record.get("dateOfBirth").filter(|v| !v.is_null()) {
            let ok = v
                .as_str()
                .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok());
            if !ok {
                return Err(validation_failure("dateOfBirth", "valid"));
            }
        }
        // int fields: EspoCRM accepts numbers (and numeric strings), nothing else.
        for field in ["betnr", "syncRetryCount"] {
            if let Some(v) = record.get(field).filter(|v| !v.is_null()) {
                let ok = v.is_i64() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok());
                if !ok {
                    return Err(validation_failure(field, "valid"));
                }
            }
        }
    }
    Ok(())
}

async fn create(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(entity): Path<String>,
    body: Bytes,
) -> Response {
    count_write(&shared, &entity);
    require_auth!(shared, headers);
    if !known(&shared, &entity) {
        return status_reason(StatusCode::NOT_FOUND, "Not found.");
    }
    let record = match parse_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = validate(&entity, &record, true) {
        return r;
    }
    let skip_duplicates = headers
        .get("x-skip-duplicate-check")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let now = shared.config.clock.now();
    let mut state = shared.state.lock();
    if !skip_duplicates {
        let duplicates = find_duplicates(&state, &entity, &record);
        if !duplicates.is_empty() {
            let mut response = json_response(StatusCode::CONFLICT, Value::Array(duplicates));
            response
                .headers_mut()
                .insert("x-status-reason", HeaderValue::from_static("Duplicate"));
            return response;
        }
    }
    let Some(stored) = store_new(&mut state, &entity, record, now) else {
        return status_reason(StatusCode::NOT_FOUND, "Not found.");
    };
    queue_events(&mut state, &entity, "create", &stored, &stored, true);
    json_response(StatusCode::OK, stored)
}

/// EspoCRM's duplicate checks (a new record only): Lead by e-mail address; `CBeteiligte` (a
/// Person-type entity) by e-mail address, by first + last name, or by company name — all
/// compared case-insensitively. Answered as 409 with `{id, name, _entityType}` items.
fn find_duplicates(state: &State_, entity: &str, record: &Value) -> Vec<Value> {
    let norm = |r: &Value, f: &str| {
        r.get(f)
            .and_then(Value::as_str)
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
    };
    let keys: &[&[&str]] = match entity {
        "Lead" => &[&["emailAddress"]],
        "CBeteiligte" => &[
            &["emailAddress"],
            &["firstName", "lastName"],
            &["firmenname"],
        ],
        _ => &[],
    };
    let Some(records) = state.records.get(entity) else {
        return Vec::new();
    };
    records
        .values()
        .filter(|existing| {
            keys.iter().any(|fields| {
                fields.iter().all(|f| {
                    let new = norm(record, f);
                    new.is_some() && new == norm(existing, f)
                })
            })
        })
        .map(|r| {
            let name = r
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| norm(r, "firmenname"))
                .unwrap_or_default();
            json!({"id": r["id"], "name": name, "_entityType": entity})
        })
        .collect()
}

async fn update(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((entity, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    count_write(&shared, &entity);
    require_auth!(shared, headers);
    if !known(&shared, &entity) {
        return status_reason(StatusCode::NOT_FOUND, "Not found.");
    }
    let patch = match parse_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = validate(&entity, &patch, false) {
        return r;
    }
    let now = shared.config.clock.now();
    let mut state = shared.state.lock();
    let Some((stored, changed)) = apply_update(&mut state, &entity, &id, patch, now) else {
        return status_reason(StatusCode::NOT_FOUND, "Record not found.");
    };
    queue_events(&mut state, &entity, "update", &stored, &changed, true);
    json_response(StatusCode::OK, stored)
}

async fn remove(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((entity, id)): Path<(String, String)>,
) -> Response {
    count_write(&shared, &entity);
    require_auth!(shared, headers);
    let mut state = shared.state.lock();
    let removed = state.records.get_mut(&entity).and_then(|m| m.remove(&id));
    match removed {
        Some(_) => {
            let stub = json!({"id": id});
            queue_events(&mut state, &entity, "delete", &stub, &stub, true);
            json_response(StatusCode::OK, json!(true))
        }
        None => status_reason(StatusCode::NOT_FOUND, "Record not found."),
    }
}

/// The foreign entity type and the reverse link of a relationship link the fake knows: target
/// lists (`leads`/`contacts`) and the documents of cases, parties and accounts (`CDokumente`
/// `raeumungsklagen`/`beteiligte`/`accounts` ↔ `dokumente`; names as the README assumes them).
fn link_target(entity: &str, link: &str) -> Option<(&'static str, &'static str)> {
    match (entity, link) {
        ("TargetList", "leads") => Some(("Lead", "targetLists")),
        ("TargetList", "contacts") => Some(("Contact", "targetLists")),
        ("Lead", "targetLists") => Some(("TargetList", "leads")),
        ("Contact", "targetLists") => Some(("TargetList", "contacts")),
        ("CDokumente", "raeumungsklagen") => Some(("Raeumungsklage", "dokumente")),
        ("CDokumente", "beteiligte") => Some(("CBeteiligte", "dokumente")),
        ("CDokumente", "accounts") => Some(("Account", "dokumente")),
        ("Raeumungsklage", "dokumente") => Some(("CDokumente", "raeumungsklagen")),
        ("CBeteiligte", "dokumente") => Some(("CDokumente", "beteiligte")),
        ("Account", "dokumente") => Some(("CDokumente", "accounts")),
        // hasMany ↔ belongsTo: stored as the foreign key `beteiligteId` on the bank account.
        ("CBeteiligte", "bankverbindungen") => Some(("CBankverbindungen", "beteiligte")),
        _ => None,
    }
}

/// Sets (or clears) a `belongsTo` foreign key (`<link>Id`) on a stored record.
fn set_foreign_key(record: &mut Value, field: &str, id: Option<&str>) {
    if let Value::Object(m) = record {
        m.insert(field.to_owned(), id.map_or(Value::Null, |i| json!(i)));
    }
}

/// The ids of a `{"id": …}` or `{"ids": […]}` relationship body.
fn relation_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body
        .get("ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(one) = body.get("id").and_then(Value::as_str) {
        ids.push(one.to_owned());
    }
    ids
}

/// Relates or unrelates both sides (EspoCRM stores one relation for both).
fn set_relation(
    state: &mut State_,
    entity: &str,
    id: &str,
    link: &str,
    foreign_id: &str,
    on: bool,
) {
    let Some((foreign, back)) = link_target(entity, link) else {
        return;
    };
    let pairs = [
        (
            (entity.to_owned(), id.to_owned(), link.to_owned()),
            foreign_id,
        ),
        (
            (foreign.to_owned(), foreign_id.to_owned(), back.to_owned()),
            id,
        ),
    ];
    for (key, other) in pairs {
        let set = state.links.entry(key).or_default();
        if on {
            set.insert(other.to_owned());
        } else {
            set.remove(other);
        }
    }
}

/// `POST {Entity}/{id}/{link}` with `{"id": …}` or `{"ids": […]}`: relates records; `true`.
async fn relate(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((entity, id, link)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    change_relation(shared, headers, entity, id, link, body, true).await
}

/// `DELETE {Entity}/{id}/{link}` with the same body: unrelates them; `true`.
async fn unrelate(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((entity, id, link)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    change_relation(shared, headers, entity, id, link, body, false).await
}

async fn change_relation(
    shared: Shared,
    headers: HeaderMap,
    entity: String,
    id: String,
    link: String,
    body: Bytes,
    on: bool,
) -> Response {
    count_write(&shared, &entity);
    require_auth!(shared, headers);
    let Some((foreign, _)) = link_target(&entity, &link) else {
        return status_reason(StatusCode::NOT_FOUND, "Not found.");
    };
    let body = match parse_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let ids = relation_ids(&body);
    if ids.is_empty() {
        return status_reason(StatusCode::BAD_REQUEST, "No id.");
    }
    let mut state = shared.state.lock();
    let exists =
        |state: &State_, e: &str, i: &str| state.records.get(e).is_some_and(|m| m.contains_key(i));
    if !exists(&state, &entity, &id) || !ids.iter().all(|i| exists(&state, foreign, i)) {
        return status_reason(StatusCode::NOT_FOUND, "Record not found.");
    }
    if foreign == "CBankverbindungen" {
        for i in &ids {
            if let Some(r) = state.records.get_mut(foreign).and_then(|m| m.get_mut(i)) {
                set_foreign_key(r, "beteiligteId", on.then_some(id.as_str()));
            }
        }
        return json_response(StatusCode::OK, json!(true));
    }
    for i in ids {
        set_relation(&mut state, &entity, &id, &link, &i, on);
    }
    json_response(StatusCode::OK, json!(true))
}

/// `GET {Entity}/{id}/{link}` → `{list, total}` of the related records.
async fn list_related(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((entity, id, link)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    require_auth!(shared, headers);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let max_size = param("maxSize").unwrap_or(20);
    if max_size > MAX_LIST_SIZE {
        return status_reason(
            StatusCode::FORBIDDEN,
            "Max size should not exceed 200. Use offset and limit.",
        );
    }
    let offset = param("offset").unwrap_or(0);
    let Some((foreign, _)) = link_target(&entity, &link) else {
        return status_reason(StatusCode::NOT_FOUND, "Not found.");
    };
    let state = shared.state.lock();
    if !state
        .records
        .get(&entity)
        .is_some_and(|m| m.contains_key(&id))
    {
        return status_reason(StatusCode::NOT_FOUND, "Record not found.");
    }
    if foreign == "CBankverbindungen" {
        let list: Vec<Value> = state
            .records
            .get(foreign)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|r| r.get("beteiligteId").and_then(Value::as_str) == Some(id.as_str()))
            .cloned()
            .collect();
        let total = list.len();
        return json_response(StatusCode::OK, json!({"list": list, "total": total}));
    }
    let list: Vec<Value> = state
        .links
        .get(&(entity.clone(), id.clone(), link.clone()))
        .into_iter()
        .flatten()
        .filter_map(|i| state.records.get(foreign).and_then(|m| m.get(i)).cloned())
        .collect();
    let total = list.len();
    let list: Vec<Value> = list.into_iter().skip(offset).take(max_size).collect();
    json_response(StatusCode::OK, json!({"list": list, "total": total}))
}

// ---------------------------------------------------------------------------------------------
// Webhook sender

/// `json_encode` with PHP's default flags: `/` becomes `\/` and non-ASCII becomes `\uXXXX`
/// (UTF-16). EspoCRM encodes payloads this way (assumption, see README); a receiver that
/// re-serialises the JSON before verifying the signature fails against it, as it would in production.
pub fn php_json_encode(value: &Value) -> String {
    let compact = value.to_string();
    let mut out = String::with_capacity(compact.len());
    for ch in compact.chars() {
        match ch {
            '/' => out.push_str("\\/"),
            c if (c as u32) < 0x80 => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// `Signature` header value: `base64(webhookId + ":" + hex(HMAC-SHA256(body, secretKey)))`.
pub fn signature(webhook_id: &str, secret: &str, body: &[u8]) -> String {
    B64.encode(format!(
        "{webhook_id}:{}",
        hex::encode(hmac_sha256(secret, body))
    ))
}

/// Legacy `X-Signature` value: `base64(webhookId + ":" + raw HMAC-SHA256 bytes)`.
pub fn legacy_signature(webhook_id: &str, secret: &str, body: &[u8]) -> String {
    let mut bytes = format!("{webhook_id}:").into_bytes();
    bytes.extend(hmac_sha256(secret, body));
    B64.encode(bytes)
}

/// Sends `batch` (should be a JSON array) to `url` the way EspoCRM's webhook job does: PHP-style
/// JSON body, `Content-Type: application/json`, signature headers per `style`, 5 s connect and
/// 10 s total timeout.
pub async fn send_webhook(
    url: &str,
    webhook_id: &str,
    secret: &str,
    batch: &Value,
    style: SignatureStyle,
) -> reqwest::Result<reqwest::Response> {
    send_webhook_raw(
        url,
        webhook_id,
        secret,
        php_json_encode(batch).into_bytes(),
        style,
    )
    .await
}

/// Like [`send_webhook`] with exact body bytes (for tampering or odd encodings).
pub async fn send_webhook_raw(
    url: &str,
    webhook_id: &str,
    secret: &str,
    body: Vec<u8>,
    style: SignatureStyle,
) -> reqwest::Result<reqwest::Response> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let mut request = client.post(url).header("content-type", "application/json");
    if matches!(style, SignatureStyle::Current | SignatureStyle::Both) {
        request = request.header("Signature", signature(webhook_id, secret, &body));
    }
    if matches!(style, SignatureStyle::Legacy | SignatureStyle::Both) {
        request = request.header("X-Signature", legacy_signature(webhook_id, secret, &body));
    }
    request.body(body).send().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_encoding_escapes_slashes_and_unicode() {
        let v = json!([{"url": "a/b", "name": "Müller 😀"}]);
        assert_eq!(
            php_json_encode(&v),
            r#"[{"name":"M\u00fcller \ud83d\ude00","url":"a\/b"}]"#
        );
    }

    #[test]
    fn signatures_decode_to_id_and_mac() -> Result<(), Box<dyn std::error::Error>> {
        let body = br#"[{"id":"x"}]"#;
        let current = String::from_utf8(B64.decode(signature("wh1", "secret", body))?)?;
        assert_eq!(
            current,
            format!("wh1:{}", hex::encode(hmac_sha256("secret", body)))
        );
        let legacy = B64.decode(legacy_signature("wh1", "secret", body))?;
        assert_eq!(&legacy[..4], b"wh1:");
        assert_eq!(legacy[4..].len(), 32);
        Ok(())
    }

    #[test]
    fn ids_are_17_hex_chars() {
        let mut state = State_::default();
        let id = new_id(&mut state, Utc::now());
        assert_eq!(id.len(), 17);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn where_parsing_handles_lists() {
        let q: Vec<(String, String)> = vec![
            ("where[0][type]".into(), "in".into()),
            ("where[0][attribute]".into(), "status".into()),
            ("where[0][value][]".into(), "New".into()),
            ("where[0][value][]".into(), "Assigned".into()),
        ];
        let items = parse_where(&q).unwrap_or_default();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].value, Some(json!(["New", "Assigned"])));
    }
}
