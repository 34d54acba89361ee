//! The signature `webhook_guard` adds when it forwards an accepted event to
//! the worker, and the worker's verification of it.
//!
//! # Wire format (version 1)
//!
//! Headers set by the filter on the forwarded request:
//!
//! | header                | value                                            |
//! |-----------------------|--------------------------------------------------|
//! | `X-Event-Topic`       | topic, `[a-z0-9._-]{1,128}`                      |
//! | `X-Event-Id`          | event id, `[A-Za-z0-9._:-]{1,128}`               |
//! | `X-Dedup-Key`         | lowercase hex SHA-256 of the canonical body      |
//! | `X-Received-At`       | decimal Unix seconds when the gateway accepted it|
//! | `X-Gateway-Signature` | `v1=` + lowercase hex HMAC-SHA256 (64 chars)     |
//!
//! The HMAC-SHA256 key is the shared secret's bytes (its UTF-8 encoding when
//! configured as a string). The signed bytes are, with `\n` = 0x0A:
//!
//! ```text
//! "bitbylaw-gateway-v1" 0x0A
//! topic                 0x0A
//! event_id              0x0A
//! received_at           0x0A      (decimal, no sign, no leading zeros: u64 Display)
//! body                            (the raw forwarded body bytes, unmodified)
//! ```
//!
//! Topic and event id cannot contain `\n` (their alphabets forbid it), so
//! the layout is unambiguous. The dedup key is not signed: the worker
//! recomputes it from the (signed) body when it needs to trust it.
//!
//! The verifier accepts any of several secrets (rotation), compares in
//! constant time, and rejects `received_at` more than `tolerance_secs` away
//! from `now_unix` in either direction ([`GatewayError::Stale`]).

use subtle::{Choice, ConstantTimeEq};

use crate::mac::hmac_sha256;

/// Header carrying the event topic.
pub const HEADER_EVENT_TOPIC: &str = "X-Event-Topic";
/// Header carrying the event id.
pub const HEADER_EVENT_ID: &str = "X-Event-Id";
/// Header carrying the dedup key (hex SHA-256 of the canonical JSON body).
pub const HEADER_DEDUP_KEY: &str = "X-Dedup-Key";
/// Header carrying the receive time (decimal Unix seconds).
pub const HEADER_RECEIVED_AT: &str = "X-Received-At";
/// Header carrying the gateway signature (`v1=<hex>`).
pub const HEADER_GATEWAY_SIGNATURE: &str = "X-Gateway-Signature";

/// The first line of the signed bytes (without its newline).
pub const SIGNATURE_CONTEXT: &str = "bitbylaw-gateway-v1";
/// The prefix of the header value.
pub const SIGNATURE_PREFIX: &str = "v1=";

/// Errors of signing/verifying gateway events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The topic is not `[a-z0-9._-]{1,128}`.
    #[error("invalid event topic")]
    InvalidTopic,
    /// The event id is not `[A-Za-z0-9._:-]{1,128}`.
    #[error("invalid event id")]
    InvalidEventId,
    /// No non-empty secret was given.
    #[error("no gateway secret configured")]
    NoSecret,
    /// The header is not `v1=` + 64 hex digits.
    #[error("malformed gateway signature header")]
    MalformedSignature,
    /// No secret produces this signature.
    #[error("gateway signature mismatch")]
    Mismatch,
    /// `received_at` is outside the tolerance window (past or future).
    #[error("gateway event timestamp outside tolerance")]
    Stale,
}

impl GatewayError {
    /// A stable code for logs and JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidTopic => "gateway_invalid_topic",
            Self::InvalidEventId => "gateway_invalid_event_id",
            Self::NoSecret => "gateway_no_secret",
            Self::MalformedSignature => "gateway_signature_malformed",
            Self::Mismatch => "gateway_signature_mismatch",
            Self::Stale => "gateway_stale",
        }
    }
}

/// Whether `topic` matches `[a-z0-9._-]{1,128}`.
pub fn is_valid_topic(topic: &str) -> bool {
    (1..=128).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// Whether `event_id` matches `[A-Za-z0-9._:-]{1,128}`.
pub fn is_valid_event_id(event_id: &str) -> bool {
    (1..=128).contains(&event_id.len())
        && event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn mac(secret: &[u8], topic: &str, event_id: &str, received_at: u64, body: &[u8]) -> [u8; 32] {
    let ts = received_at.to_string();
    hmac_sha256(
        secret,
        &[
            SIGNATURE_CONTEXT.as_bytes(),
            b"\n",
            topic.as_bytes(),
            b"\n",
            event_id.as_bytes(),
            b"\n",
            ts.as_bytes(),
            b"\n",
            body,
        ],
    )
}

fn check_ids(topic: &str, event_id: &str) -> Result<(), GatewayError> {
    if !is_valid_topic(topic) {
        return Err(GatewayError::InvalidTopic);
    }
    if !is_valid_event_id(event_id) {
        return Err(GatewayError::InvalidEventId);
    }
    Ok(())
}

/// The `X-Gateway-Signature` value (`v1=` + lowercase hex) for an event.
pub fn sign_gateway_event(
    secret: &[u8],
    topic: &str,
    event_id: &str,
    received_at: u64,
    body: &[u8],
) -> Result<String, GatewayError> {
    check_ids(topic, event_id)?;
    if secret.is_empty() {
        return Err(GatewayError::NoSecret);
    }
    Ok(format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(mac(secret, topic, event_id, received_at, body))
    ))
}

/// Verifies an `X-Gateway-Signature` value.
///
/// Checks, in order: topic and event id syntax, at least one non-empty
/// secret, `|now_unix - received_at| <= tolerance_secs`, header format
/// (`v1=` + 64 hex digits; hex case-insensitive, surrounding whitespace
/// ignored), then the MAC against every non-empty secret (constant time).
#[allow(clippy::too_many_arguments)] // fixed signature other crates code against
pub fn verify_gateway_event(
    secrets: &[&[u8]],
    signature_header: &str,
    topic: &str,
    event_id: &str,
    received_at: u64,
    body: &[u8],
    now_unix: u64,
    tolerance_secs: u64,
) -> Result<(), GatewayError> {
    check_ids(topic, event_id)?;
    if secrets.iter().all(|s| s.is_empty()) {
        return Err(GatewayError::NoSecret);
    }
    if received_at.abs_diff(now_unix) > tolerance_secs {
        return Err(GatewayError::Stale);
    }
    let presented = parse_signature_header(signature_header)?;
    let mut ok = Choice::from(0);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        ok |= mac(secret, topic, event_id, received_at, body).ct_eq(&presented);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(GatewayError::Mismatch)
    }
}

/// Parses `v1=<64 hex>` into the MAC bytes.
pub fn parse_signature_header(header: &str) -> Result<[u8; 32], GatewayError> {
    let hex_part = header
        .trim()
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(GatewayError::MalformedSignature)?;
    if hex_part.len() != 64 {
        return Err(GatewayError::MalformedSignature);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| GatewayError::MalformedSignature)?;
    Ok(out)
}

/// Parses an `X-Received-At` value (decimal Unix seconds, digits only).
pub fn parse_received_at(value: &str) -> Option<u64> {
    crate::webhook::parse_unix_secs(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"[{"id":"1"}]"#;
    // Computed independently at dev time:
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"gateway-secret",
    //   b"bitbylaw-gateway-v1\nvmh.beteiligte.update\nevt-123\n1795442520\n"+b"[{\"id\":\"1\"}]",
    //   hashlib.sha256).hexdigest())'
    const VECTOR: &str = "v1=ac2e263a986996869bf2809de64d8aec5cf9a4264f14d97f4b3b619e301060f8";

    #[test]
    fn test_vector() {
        let sig = sign_gateway_event(
            b"gateway-secret",
            "vmh.beteiligte.update",
            "evt-123",
            1_795_442_520,
            BODY,
        )
        .unwrap();
        assert_eq!(sig, VECTOR);
        // empty body: python3 -c '...hmac.new(b"s", b"bitbylaw-gateway-v1\na\nb\n0\n", ...)'
        assert_eq!(
            sign_gateway_event(b"s", "a", "b", 0, b"").unwrap(),
            "v1=5d966a1cc701292820e2c3d2cba58c1e6bbd50e4532ffe2d8a84b950c26aec96"
        );
    }

    #[test]
    fn verify_with_rotation_and_tolerance() {
        let secrets: [&[u8]; 2] = [b"old", b"gateway-secret"];
        let t = 1_795_442_520;
        let v = |sig: &str, now: u64| {
            verify_gateway_event(
                &secrets,
                sig,
                "vmh.beteiligte.update",
                "evt-123",
                t,
                BODY,
                now,
                300,
            )
        };
        assert_eq!(v(VECTOR, t), Ok(()));
        assert_eq!(
            v(&VECTOR.to_uppercase().replacen("V1=", "v1=", 1), t),
            Ok(())
        );
        assert_eq!(v(&format!(" {VECTOR} "), t), Ok(()));
        assert_eq!(v(VECTOR, t + 300), Ok(()));
        assert_eq!(v(VECTOR, t - 300), Ok(()));
        assert_eq!(v(VECTOR, t + 301), Err(GatewayError::Stale));
        assert_eq!(v(VECTOR, t - 301), Err(GatewayError::Stale));
        assert_eq!(
            v(&VECTOR.replace("v1=", "v2="), t),
            Err(GatewayError::MalformedSignature)
        );
        assert_eq!(v(&VECTOR[..66], t), Err(GatewayError::MalformedSignature));
        assert_eq!(v("v1=zz", t), Err(GatewayError::MalformedSignature));
        let other = sign_gateway_event(b"x", "vmh.beteiligte.update", "evt-123", t, BODY).unwrap();
        assert_eq!(v(&other, t), Err(GatewayError::Mismatch));
        // every signed field matters
        let check = |topic: &str, id: &str, at: u64, body: &[u8]| {
            verify_gateway_event(&secrets, VECTOR, topic, id, at, body, t, 300)
        };
        assert_eq!(
            check("vmh.beteiligte.create", "evt-123", t, BODY),
            Err(GatewayError::Mismatch)
        );
        assert_eq!(
            check("vmh.beteiligte.update", "evt-124", t, BODY),
            Err(GatewayError::Mismatch)
        );
        assert_eq!(
            check("vmh.beteiligte.update", "evt-123", t + 1, BODY),
            Err(GatewayError::Mismatch)
        );
        assert_eq!(
            check("vmh.beteiligte.update", "evt-123", t, b"[]"),
            Err(GatewayError::Mismatch)
        );
        assert_eq!(
            verify_gateway_event(
                &[b""],
                VECTOR,
                "vmh.beteiligte.update",
                "evt-123",
                t,
                BODY,
                t,
                300
            ),
            Err(GatewayError::NoSecret)
        );
    }

    #[test]
    fn id_rules() {
        assert!(is_valid_topic("vmh.beteiligte.sync_check"));
        assert!(is_valid_topic(&"a".repeat(128)));
        assert!(!is_valid_topic(&"a".repeat(129)));
        assert!(!is_valid_topic(""));
        assert!(!is_valid_topic("Vmh.x"));
        assert!(!is_valid_topic("a\nb"));
        assert!(is_valid_event_id("msg_2p8dZ3kq"));
        assert!(is_valid_event_id("espo:6745a1b2c3d4e5f60:update"));
        assert!(!is_valid_event_id("a b"));
        assert!(!is_valid_event_id("a\n"));
        assert!(!is_valid_event_id(""));
        assert_eq!(
            sign_gateway_event(b"s", "A", "b", 0, b""),
            Err(GatewayError::InvalidTopic)
        );
        assert_eq!(
            sign_gateway_event(b"s", "a", "b/c", 0, b""),
            Err(GatewayError::InvalidEventId)
        );
        assert_eq!(
            sign_gateway_event(b"", "a", "b", 0, b""),
            Err(GatewayError::NoSecret)
        );
        assert_eq!(parse_received_at("1795442520"), Some(1_795_442_520));
        assert_eq!(parse_received_at("-1"), None);
        assert_eq!(parse_received_at("99999999999999999999"), None);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_parser_never_panics(s in any::<String>()) {
            let _ = parse_signature_header(&s);
            let _ = parse_received_at(&s);
            let _ = verify_gateway_event(&[b"k"], &s, &s, &s, 0, s.as_bytes(), 0, 0);
        }

        #[test]
        fn roundtrip(secret in proptest::collection::vec(any::<u8>(), 1..40),
                     topic in "[a-z0-9._-]{1,40}", id in "[A-Za-z0-9._:-]{1,40}",
                     at in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let sig = sign_gateway_event(&secret, &topic, &id, at, &body).unwrap();
            prop_assert_eq!(verify_gateway_event(&[&secret], &sig, &topic, &id, at, &body, at, 0), Ok(()));
        }
    }
}
