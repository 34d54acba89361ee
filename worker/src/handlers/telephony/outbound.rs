//! Outbound calls (issue 14): `POST /3cx/call {"lead_id" | "phone", "extension"}` → 3CX Call
//! Control `makecall` from the agent's extension, and `GET /3cx/call/{id}` → the state of the
//! participant 3CX created.
//!
//! # Steps of one call
//!
//! 1. Validate: exactly one of `lead_id` / `phone`, an extension of digits, an optional
//!    `Idempotency-Key`.
//! 2. The destination: `phone` through the shared normaliser ([`crate::sync::contact`]), or the
//!    Lead's `phoneNumber` read from EspoCRM. Unusable → 422, nothing sent to 3CX.
//! 3. The record `keys::threecx_call(id)` is written (`state = placing`, `HSETNX`) **before**
//!    3CX is asked. With an `Idempotency-Key` the id is derived from it, so a repeated request
//!    finds the record: a placed call is answered again (no second call), one still being
//!    placed — or one 3CX never answered (`in_doubt`: the call may exist) — is a 409. Calling a
//!    person twice is worse than asking the user to check the phone.
//! 4. The budget of all workers ([`crate::ratelimit::TokenBucket`] under
//!    `keys::THREECX_CALL_BUCKET`, `threecx.calls_per_minute`): exhausted → 429 with
//!    `Retry-After`, record removed. A 429 from 3CX sets the shared backoff.
//! 5. makecall; the answer is mapped to a clear status ([`api_error`]): busy → 409, invalid
//!    number → 422, unknown extension → 422, 401 after one refresh / refused credentials /
//!    403 → 502 naming the setting to check, 429/5xx → 503 with `Retry-After`, no answer → 504.
//!    A definite refusal removes the record (a retry may place the call); success stores the
//!    participant so `GET /3cx/call/{id}` can ask 3CX for its state.
//!
//! The number is never logged; logs carry the call id, extension, participant and lead id.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bitbylaw_core::ids::EspoId;
use redis::aio::ConnectionManager;
use redis::AsyncCommands as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest as _;
use tracing::{info, warn};

use crate::clients::espocrm::{ClientSettings, EspoCrmClient, EspoCrmError};
use crate::clients::threecx::{CallControlClient, Participant, ThreeCxError};
use crate::config::{Config, ThreeCxSettings};
use crate::error::ApiError;
use crate::keys;
use crate::ratelimit::TokenBucket;
use crate::sync::contact::normalize_phone;

/// How long the record of a placed call is kept (status queries, idempotent replays).
pub const RECORD_TTL_SECS: i64 = 24 * 3600;

/// The body of `POST /3cx/call`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    #[serde(default)]
    pub lead_id: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    pub extension: String,
}

/// What outbound calls need, built once at start-up.
pub struct OutboundService {
    client: Option<CallControlClient>,
    crm: Option<EspoCrmClient>,
}

impl OutboundService {
    pub fn from_config(config: &Config) -> Arc<Self> {
        let client = config
            .threecx
            .call_control()
            .and_then(|s| CallControlClient::with_reqwest(s).ok());
        Self::new(client, crm_of(config))
    }

    pub fn new(client: Option<CallControlClient>, crm: Option<EspoCrmClient>) -> Arc<Self> {
        Arc::new(Self { client, crm })
    }
}

fn crm_of(config: &Config) -> Option<EspoCrmClient> {
    config.espocrm.api_base_url.as_ref()?;
    ClientSettings::from_settings(&config.espocrm)
        .and_then(EspoCrmClient::new)
        .ok()
}

/// A 3CX extension (DN): digits only, as 3CX numbers them.
pub fn valid_extension(ext: &str) -> bool {
    !ext.is_empty() && ext.len() <= 10 && ext.bytes().all(|b| b.is_ascii_digit())
}

/// The record id: derived from the caller's `Idempotency-Key` (so a repeat finds it), else random.
pub fn call_id(idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(k) => {
            let digest = sha2::Sha256::digest(format!("3cx-call:{k}").as_bytes());
            hex::encode(&digest[..16])
        }
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// An `Idempotency-Key` we accept: 1–100 of `[A-Za-z0-9._:-]`.
pub fn valid_idempotency_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 100
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn valid_call_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The HTTP answer for a Call Control error and its metrics outcome.
pub fn api_error(e: &ThreeCxError) -> (ApiError, &'static str) {
    let bad_gateway = |code, msg: String| ApiError::new(StatusCode::BAD_GATEWAY, code, msg);
    match e {
        ThreeCxError::Busy { dn, .. } => (
            ApiError::new(
                StatusCode::CONFLICT,
                "extension_busy",
                format!("extension {dn} is busy; try again when the current call has ended"),
            ),
            "busy",
        ),
        ThreeCxError::Rejected { reason, .. } => (
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_number",
                format!("3CX refused to dial the number: {reason}"),
            ),
            "invalid_number",
        ),
        ThreeCxError::UnknownExtension { dn } => (
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_extension",
                format!("3CX has no extension {dn}"),
            ),
            "unknown_extension",
        ),
        ThreeCxError::Forbidden { dn } => (
            bad_gateway(
                "threecx_forbidden",
                format!("the 3CX API client may not control extension {dn} (3CX admin console → Integrations → API: extensions)"),
            ),
            "unauthorized",
        ),
        ThreeCxError::Credentials { .. } => (
            bad_gateway(
                "threecx_credentials",
                "3CX refused our client credentials: check THREECX_CLIENT_ID / THREECX_CLIENT_SECRET".into(),
            ),
            "unauthorized",
        ),
        ThreeCxError::Unauthorized { .. } => (
            bad_gateway(
                "threecx_unauthorized",
                "3CX refused a freshly issued token: check that the API client has \"3CX Call Control API access\"".into(),
            ),
            "unauthorized",
        ),
        ThreeCxError::Unavailable { retry_after, .. } => (
            ApiError {
                retry_after_secs: Some(retry_after.map_or(5, |d| d.as_secs().clamp(1, 3600))),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "threecx_unavailable",
                    "3CX is overloaded or failing; nothing was placed, try again later",
                )
            },
            "unavailable",
        ),
        ThreeCxError::Transport { .. } => (
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "threecx_no_answer",
                "3CX did not answer; the call may have been placed — check the extension before trying again",
            ),
            "in_doubt",
        ),
        ThreeCxError::ParticipantGone { .. }
        | ThreeCxError::Decode { .. }
        | ThreeCxError::Config(_) => (
            bad_gateway("threecx_bad_answer", format!("{e}")),
            "error",
        ),
    }
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_configured",
        "outbound calls need THREECX_API_BASE_URL, THREECX_CLIENT_ID and THREECX_CLIENT_SECRET",
    )
}

fn redis_error(e: &redis::RedisError) -> ApiError {
    ApiError::unavailable(format!("redis: {e}"))
}

/// The E.164 destination of a request (the number or the lead's), or a 4xx/503.
async fn destination(
    svc: &OutboundService,
    settings: &ThreeCxSettings,
    req: &CallRequest,
) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_number",
            "not a phone number we can dial",
        )
    };
    match (&req.lead_id, &req.phone) {
        (None, Some(phone)) => {
            normalize_phone(phone, settings.default_region).map_err(|_| invalid())
        }
        (Some(lead_id), None) => {
            let id = EspoId::new(lead_id.clone()).map_err(|_| {
                ApiError::bad_request("invalid_lead_id", "lead_id is not an EspoCRM id")
            })?;
            let crm = svc.crm.as_ref().ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "lead_id needs EspoCRM (ESPOCRM_API_BASE_URL)",
                )
            })?;
            let lead: Value = crm.get("Lead", &id).await.map_err(|e| match e {
                EspoCrmError::NotFound { .. } => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "lead_not_found",
                    format!("EspoCRM has no Lead {id}"),
                ),
                e if e.is_retryable() => ApiError::unavailable(format!("EspoCRM: {e}")),
                e => ApiError::new(StatusCode::BAD_GATEWAY, "espocrm_error", e.to_string()),
            })?;
            let phone = lead
                .get("phoneNumber")
                .and_then(Value::as_str)
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "lead_without_phone",
                        format!("Lead {id} has no phone number"),
                    )
                })?;
            normalize_phone(phone, settings.default_region).map_err(|_| invalid())
        }
        _ => Err(ApiError::bad_request(
            "invalid_payload",
            "give exactly one of \"lead_id\" and \"phone\"",
        )),
    }
}

/// Places one call; the answer body and status, or the error to answer.
pub async fn place(
    svc: &OutboundService,
    settings: &ThreeCxSettings,
    mut conn: ConnectionManager,
    req: &CallRequest,
    idempotency_key: Option<&str>,
) -> Result<(StatusCode, Value, &'static str), Refused> {
    let ext = req.extension.trim();
    if !valid_extension(ext) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_extension",
            "extension must be the 3CX extension number (digits)",
        )
        .into());
    }
    if idempotency_key.is_some_and(|k| !valid_idempotency_key(k)) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key: 1–100 of letters, digits, '.', '_', ':', '-'",
        )
        .into());
    }
    let client = svc.client.as_ref().ok_or_else(not_configured)?;
    let number = destination(svc, settings, req).await?;
    let id = call_id(idempotency_key);
    let key = keys::threecx_call(&id);
    let fresh: bool = conn
        .hset_nx(&key, "state", "placing")
        .await
        .map_err(|e| redis_error(&e))?;
    if !fresh {
        return replay(&mut conn, &id).await.map_err(Refused::from);
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let fields = [
        ("extension", ext.to_owned()),
        ("lead", req.lead_id.clone().unwrap_or_default()),
        ("at_ms", now_ms.to_string()),
    ];
    redis::pipe()
        .hset_multiple(&key, &fields)
        .ignore()
        .expire(&key, RECORD_TTL_SECS)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| redis_error(&e))?;
    let bucket = TokenBucket::with_keys(
        conn.clone(),
        settings.calls_per_minute,
        keys::THREECX_CALL_BUCKET,
        keys::THREECX_CALL_BACKOFF,
    );
    let wait = match bucket.try_acquire().await {
        Ok(w) => w,
        Err(e) => {
            let _: Result<(), _> = conn.del(&key).await;
            return Err(ApiError::unavailable(e.to_string()).into());
        }
    };
    if let Some(wait) = wait {
        let _: Result<(), _> = conn.del(&key).await;
        let secs = wait.as_millis().div_ceil(1000).max(1);
        return Err(Refused::from(ApiError {
            retry_after_secs: Some(u64::try_from(secs).unwrap_or(60)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "at most {} outbound calls per minute; try again in {secs} s",
                    settings.calls_per_minute
                ),
            )
        }));
    }
    match client
        .make_call(ext, &number, settings.ring_timeout_secs)
        .await
    {
        Ok(p) => {
            let callid = p.callid.map(|c| c.to_string()).unwrap_or_default();
            let placed = [
                ("state", "placed".to_owned()),
                ("participant", p.id.to_string()),
                ("callid", callid),
            ];
            // The call exists now; losing this write only loses the status handle.
            if let Err(e) = conn.hset_multiple::<_, _, _, ()>(&key, &placed).await {
                warn!(call = %id, error = %e, "3CX call placed but its record could not be updated");
            }
            info!(call = %id, extension = %ext, participant = p.id, lead = req.lead_id.as_deref().unwrap_or(""), "outbound call placed through 3CX");
            Ok((
                StatusCode::CREATED,
                json!({
                    "id": id,
                    "extension": ext,
                    "destination": number,
                    "participant_id": p.id,
                    "callid": p.callid,
                    "status": p.status,
                }),
                "placed",
            ))
        }
        Err(e) => {
            if let ThreeCxError::Transport { .. } = e {
                let _: Result<(), _> = conn.hset(&key, "state", "in_doubt").await;
            } else {
                let _: Result<(), _> = conn.del(&key).await;
            }
            if let ThreeCxError::Unavailable {
                status: 429,
                retry_after,
                ..
            } = &e
            {
                let pause = retry_after.unwrap_or(Duration::from_secs(5));
                let _ = bucket.back_off(pause).await;
            }
            let (error, outcome) = api_error(&e);
            info!(call = %id, extension = %ext, outcome, error = %e, "outbound call not placed");
            Err(Refused { error, outcome })
        }
    }
}

/// A request not placed: the answer and the metrics outcome.
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub outcome: &'static str,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        let outcome = match error.status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_number",
            _ => "rejected",
        };
        Self { error, outcome }
    }
}

/// A request whose record already exists (same `Idempotency-Key`).
async fn replay(
    conn: &mut ConnectionManager,
    id: &str,
) -> Result<(StatusCode, Value, &'static str), ApiError> {
    let rec: std::collections::HashMap<String, String> = conn
        .hgetall(keys::threecx_call(id))
        .await
        .map_err(|e| redis_error(&e))?;
    match rec.get("state").map(String::as_str) {
        Some("placed") => Ok((
            StatusCode::OK,
            json!({
                "id": id,
                "extension": rec.get("extension"),
                "participant_id": rec.get("participant").and_then(|p| p.parse::<u64>().ok()),
                "callid": rec.get("callid").and_then(|p| p.parse::<u64>().ok()),
                "replayed": true,
            }),
            "replayed",
        )),
        Some("in_doubt") => Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_in_doubt",
            "3CX did not answer when this call was placed; it may exist — check the extension, then use a new Idempotency-Key",
        )),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_in_progress",
            "a call with this Idempotency-Key is being placed right now",
        )),
    }
}

/// `GET /3cx/call/{id}`: the record and, for a placed call, 3CX's participant state (`Ended`
/// once 3CX removed the participant).
pub async fn status(
    svc: &OutboundService,
    mut conn: ConnectionManager,
    id: &str,
) -> Result<Value, ApiError> {
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "unknown_call", "no such call");
    if !valid_call_id(id) {
        return Err(unknown());
    }
    let rec: std::collections::HashMap<String, String> = conn
        .hgetall(keys::threecx_call(id))
        .await
        .map_err(|e| redis_error(&e))?;
    let state = rec.get("state").ok_or_else(unknown)?;
    let ext = rec.get("extension").cloned().unwrap_or_default();
    let participant = rec.get("participant").and_then(|p| p.parse::<u64>().ok());
    let (Some(pid), "placed") = (participant, state.as_str()) else {
        return Ok(json!({"id": id, "extension": ext, "state": state}));
    };
    let client = svc.client.as_ref().ok_or_else(not_configured)?;
    let p: Option<Participant> = match client.participant(&ext, pid).await {
        Ok(p) => Some(p),
        Err(ThreeCxError::ParticipantGone { .. }) => None,
        Err(e) => return Err(api_error(&e).0),
    };
    Ok(json!({
        "id": id,
        "extension": ext,
        "state": state,
        "participant_id": pid,
        "callid": rec.get("callid").and_then(|c| c.parse::<u64>().ok()),
        "status": p.as_ref().map_or("Ended", |p| p.status.as_str()),
        "active": p.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys() {
        assert_eq!(call_id(Some("k-1")), call_id(Some("k-1")));
        assert_ne!(call_id(Some("k-1")), call_id(Some("k-2")));
        assert!(valid_call_id(&call_id(Some("k-1"))));
        assert!(valid_call_id(&call_id(None)));
        assert!(valid_extension("201") && !valid_extension("20a") && !valid_extension(""));
        assert!(valid_idempotency_key("crm:lead-1.2_x") && !valid_idempotency_key("a b"));
    }

    #[test]
    fn errors_map_to_clear_answers() {
        let busy = ThreeCxError::Busy {
            dn: "201".into(),
            reason: "PhoneBusy".into(),
        };
        assert_eq!(api_error(&busy).0.status, StatusCode::CONFLICT);
        let gone = ThreeCxError::Unavailable {
            path: "/x".into(),
            status: 503,
            retry_after: None,
        };
        let (e, _) = api_error(&gone);
        assert_eq!(
            (e.status, e.retry_after_secs),
            (StatusCode::SERVICE_UNAVAILABLE, Some(5))
        );
        let unauth = ThreeCxError::Unauthorized { path: "/x".into() };
        assert_eq!(api_error(&unauth).0.status, StatusCode::BAD_GATEWAY);
    }
}
