//! Gateway signature: the contract with the `webhook_guard` filter lives in the shared crate
//! `bitbylaw_core::gateway`: HMAC-SHA256 over `bitbylaw-gateway-v1`, topic, event id, received-at
//! and the raw body (newline-separated), sent as `X-Gateway-Signature: v1=<hex>`, compared in
//! constant time against every configured secret (rotation), with a timestamp tolerance.
//!
//! This module is the worker's single import point for it, so intake and tests never name the
//! crate path themselves.

pub use bitbylaw_core::canonical::dedup_key;
pub use bitbylaw_core::gateway::{
    sign_gateway_event, verify_gateway_event, GatewayError, HEADER_DEDUP_KEY, HEADER_EVENT_ID,
    HEADER_EVENT_TOPIC, HEADER_GATEWAY_SIGNATURE, HEADER_RECEIVED_AT,
};

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
