//! Gateway signature: the contract with the `webhook_guard` filter lives in the shared crate
//! `bitbylaw_core::gateway`: HMAC-SHA256 over `bitbylaw-gateway-v1`, topic, event id, received-at
//! and the raw body (newline-separated), sent as `X-Gateway-Signature: v1=<hex>`, compared in
//! constant time against every configured secret (rotation), with a timestamp tolerance.
//!
//! This module is the worker's single import point for it, so intake and tests never name the
//! crate path themselves.

//!
//! [`verify_forward`] applies it to a request: `POST /events` (signed over the body) and
//! `GET /3cx/lookup` (signed over path and query under [`LOOKUP_TOPIC`]) share it.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use tracing::debug;

pub use bitbylaw_core::canonical::dedup_key;
pub use bitbylaw_core::gateway::{
    sign_gateway_event, verify_gateway_event, GatewayError, HEADER_DEDUP_KEY, HEADER_EVENT_ID,
    HEADER_EVENT_TOPIC, HEADER_GATEWAY_SIGNATURE, HEADER_RECEIVED_AT,
};

use crate::config::Config;
use crate::error::ApiError;

/// The fixed topic Kong's `webhook_guard` (verify-only, kong.yaml route `threecx-lookup`) signs
/// lookup forwards under; no event has it, so a lookup signature never passes `/events`.
pub const LOOKUP_TOPIC: &str = "threecx.lookup";

/// The gateway headers of a request whose signature verified.
#[derive(Debug)]
pub struct Forward<'a> {
    pub topic: &'a str,
    pub event_id: &'a str,
    pub received_at: u64,
    /// The clock the signature was checked against (Unix seconds).
    pub now: u64,
}

/// A header's trimmed value; empty counts as absent (Kong blanks what it removes).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Checks the gateway headers of a forward against the configured secrets (current and
/// previous) and tolerance; `signed` is what the filter signed (the body, or for the lookup the
/// path and query). Every failure is 401 with a generic message (the reason is logged at debug).
pub fn verify_forward<'a>(
    config: &Config,
    headers: &'a HeaderMap,
    signed: &[u8],
) -> Result<Forward<'a>, ApiError> {
    // Behind Kong a header a filter "removed" can still arrive next to the one it
    // set (ngx_wasm_module only hides it); the edge refuses repeats, and so do we,
    // rather than trust whichever value comes first.
    if let Some(name) = [
        HEADER_EVENT_TOPIC,
        HEADER_EVENT_ID,
        HEADER_RECEIVED_AT,
        HEADER_GATEWAY_SIGNATURE,
        HEADER_DEDUP_KEY,
    ]
    .into_iter()
    .find(|name| headers.get_all(*name).iter().nth(1).is_some())
    {
        return Err(ApiError::unauthorized(format!(
            "gateway header {name} sent more than once"
        )));
    }

    let (Some(topic), Some(event_id), Some(received_at), Some(signature)) = (
        header(headers, HEADER_EVENT_TOPIC),
        header(headers, HEADER_EVENT_ID),
        header(headers, HEADER_RECEIVED_AT),
        header(headers, HEADER_GATEWAY_SIGNATURE),
    ) else {
        return Err(ApiError::unauthorized(
            "missing gateway headers (topic, event id, received-at, signature)",
        ));
    };
    let received_at: u64 = received_at
        .parse()
        .map_err(|_| ApiError::unauthorized("X-Received-At is not unix seconds"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secrets: Vec<&[u8]> = config
        .gateway_secrets
        .iter()
        .map(|k| k.expose().as_bytes())
        .collect();
    if let Err(reason) = verify_gateway_event(
        &secrets,
        signature,
        topic,
        event_id,
        received_at,
        signed,
        now,
        config.signature_tolerance.as_secs(),
    ) {
        debug!(%reason, "gateway signature refused");
        return Err(ApiError::unauthorized(
            "invalid or expired gateway signature",
        ));
    }
    Ok(Forward {
        topic,
        event_id,
        received_at,
        now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_tamper_stale_rotation() {
        let sig = sign_gateway_event(b"s3cret", "vmh.beteiligte.update", "e1", 1000, b"[]")
            .unwrap_or_default();
        assert!(verify_gateway_event(
            &[b"s3cret"],
            &sig,
            "vmh.beteiligte.update",
            "e1",
            1000,
            b"[]",
            1010,
            300
        )
        .is_ok());
        assert_eq!(
            verify_gateway_event(
                &[b"s3cret"],
                &sig,
                "vmh.beteiligte.update",
                "e1",
                1000,
                b"[ ]",
                1010,
                300
            ),
            Err(GatewayError::Mismatch)
        );
        assert_eq!(
            verify_gateway_event(
                &[b"other"],
                &sig,
                "vmh.beteiligte.update",
                "e1",
                1000,
                b"[]",
                1010,
                300
            ),
            Err(GatewayError::Mismatch)
        );
        assert_eq!(
            verify_gateway_event(
                &[b"s3cret"],
                &sig,
                "vmh.beteiligte.update",
                "e1",
                1000,
                b"[]",
                2000,
                300
            ),
            Err(GatewayError::Stale)
        );
        assert!(verify_gateway_event(
            &[b"new", b"s3cret"],
            &sig,
            "vmh.beteiligte.update",
            "e1",
            1000,
            b"[]",
            1000,
            300
        )
        .is_ok());
    }

    #[test]
    fn dedup_key_ignores_formatting() {
        let a = dedup_key(br#"{"a":1,"b":[true,null]}"#).unwrap_or_default();
        let b = dedup_key(b"{ \"b\": [true, null], \"a\": 1 }").unwrap_or_default();
        assert_eq!(a.len(), 64);
        assert_eq!(a, b);
    }
}
