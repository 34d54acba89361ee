//! Minting a token request and judging the token endpoint's answer (pure).
//!
//! The signing itself (HMAC-SHA512, timestamp format, UUID v4 nonce, body
//! JSON, response parsing, lifetime) is `bitbylaw_core::advoware`; this module
//! only wires the configuration, the host's clock and random bytes into it,
//! and maps a call outcome to a cache entry or a client-facing error.

use bitbylaw_core::advoware::{parse_token_response, token_lifetime_secs};

use crate::cache::CachedToken;
use crate::config::Config;

/// The JSON body of `POST {token_path}` for this configuration, signed with
/// the nonce made from `random` and the timestamp `now_nanos` (host clock).
pub fn token_request_body(cfg: &Config, random: [u8; 16], now_nanos: u64) -> Vec<u8> {
    cfg.credentials.token_request_body(random, now_nanos)
}

/// The headers of the token call (`:method`, `:path`, `:authority`, `:scheme`
/// are what ngx_wasm_module needs; `:authority` becomes `Host`).
pub fn token_call_headers(cfg: &Config, body_len: usize) -> Vec<(String, String)> {
    vec![
        (":method".into(), "POST".into()),
        (":path".into(), cfg.token_path.clone()),
        (":authority".into(), cfg.token_authority.clone()),
        (":scheme".into(), cfg.token_scheme.clone()),
        ("content-type".into(), "application/json".into()),
        ("accept".into(), "application/json".into()),
        ("content-length".into(), body_len.to_string()),
        ("user-agent".into(), "bitbylaw-advoware-auth/0.1".into()),
    ]
}

/// Why a token fetch failed. Each maps to one client answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// `:dispatch_status: timeout` → 504.
    Timeout,
    /// Any other dispatch failure (`broken connection`, `resolver failure`,
    /// `tls handshake failure`, …) or the call could not be started → 502.
    Unreachable(String),
    /// The token endpoint answered with a non-2xx status → 502.
    Status(u16),
    /// A 2xx answer that is not a usable token → 502.
    Invalid(&'static str),
}

impl FetchError {
    /// HTTP status for the client.
    pub fn http_status(&self) -> u32 {
        match self {
            FetchError::Timeout => 504,
            _ => 502,
        }
    }

    /// Stable code for the JSON error body and logs.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Timeout => "token_endpoint_timeout",
            FetchError::Unreachable(_) => "token_endpoint_unreachable",
            FetchError::Status(_) => "token_endpoint_error",
            FetchError::Invalid(_) => "token_response_invalid",
        }
    }

    /// Human-readable, secret-free description.
    pub fn message(&self) -> String {
        match self {
            FetchError::Timeout => "the Advoware token endpoint did not answer in time".into(),
            FetchError::Unreachable(why) => {
                format!("the Advoware token endpoint is unreachable ({why})")
            }
            FetchError::Status(s) => format!("the Advoware token endpoint answered HTTP {s}"),
            FetchError::Invalid(why) => {
                format!("the Advoware token endpoint's answer is unusable ({why})")
            }
        }
    }
}

/// Judges a token call's outcome. `dispatch_status` is the host's
/// `:dispatch_status` pseudo-header: `ok` when the call got an answer (in
/// ngx_wasm_module, measured by hand), a reason such as `timeout` when it did
/// not, absent on hosts without it. `status` is the
/// `:status` header. On success the entry to cache: valid until
/// `now + lifetime`, refreshed from `now + lifetime - margin` (or at half the
/// lifetime when the lifetime is shorter than the margin).
pub fn interpret_token_response(
    cfg: &Config,
    dispatch_status: Option<&str>,
    status: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Result<CachedToken, FetchError> {
    if let Some(ds) = dispatch_status.filter(|s| !s.is_empty() && *s != "ok") {
        return Err(if ds == "timeout" {
            FetchError::Timeout
        } else {
            FetchError::Unreachable(sanitize(ds))
        });
    }
    let Some(code) = status.and_then(|s| s.trim().parse::<u16>().ok()) else {
        return Err(FetchError::Unreachable("no response status".into()));
    };
    if !(200..300).contains(&code) {
        return Err(FetchError::Status(code));
    }
    let resp = parse_token_response(body).map_err(|e| match e {
        bitbylaw_core::advoware::AdvowareError::InvalidTokenResponse(why) => {
            FetchError::Invalid(why)
        }
        _ => FetchError::Invalid("unparsable"),
    })?;
    if !resp.access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FetchError::Invalid(
            "access_token is not a header-safe string",
        ));
    }
    let lifetime = token_lifetime_secs(&resp, now_ms / 1000, cfg.token_max_lifetime_secs);
    if lifetime == 0 {
        return Err(FetchError::Invalid("token already expired"));
    }
    let refresh_after = if lifetime > cfg.refresh_margin_secs {
        lifetime - cfg.refresh_margin_secs
    } else {
        lifetime / 2
    };
    Ok(CachedToken {
        token: resp.access_token,
        fetched_at_ms: now_ms,
        refresh_at_ms: now_ms + refresh_after * 1000,
        expires_at_ms: now_ms + lifetime * 1000,
    })
}

/// Keeps a host-provided reason printable and short (it goes into a JSON
/// message and a log line).
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn cfg() -> Config {
        Config::from_value(&json!({
            "token_target": "advoware.test:8080", "token_scheme": "http",
            "kanzlei": "musterkanzlei", "database": "advo01", "user": "SB",
            "app_id": "app-123", "password": "s3cr\"et",
            "api_key": "dGVzdC1zZWNyZXQta2V5",
            "token_max_lifetime_secs": 3300, "refresh_margin_secs": 300
        }))
        .unwrap()
    }

    #[test]
    fn body_is_signed_exactly_per_facts() {
        // 2026-08-30T00:00:00Z; random bytes chosen so the nonce is easy to read.
        let now = 1_788_048_000_000_000_000u64;
        let body = token_request_body(&cfg(), [0u8; 16], now);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["AppID"], "app-123");
        assert_eq!(v["Kanzlei"], "musterkanzlei");
        assert_eq!(v["Database"], "advo01");
        assert_eq!(v["User"], "SB");
        assert_eq!(v["Role"], 2);
        assert_eq!(v["Product"], 64);
        assert_eq!(v["Password"], "s3cr\"et");
        assert_eq!(v["Nonce"], "00000000-0000-4000-8000-000000000000");
        assert_eq!(v["RequestTimeStamp"], "2026-08-30T00:00:00.0000000Z");
        // The signature is the FACTS recipe over exactly the sent strings,
        // recomputed here with the core function from the decoded key.
        let expected = bitbylaw_core::advoware::hmac512_signature(
            b"test-secret-key",
            64,
            "app-123",
            "00000000-0000-4000-8000-000000000000",
            "2026-08-30T00:00:00.0000000Z",
        );
        assert_eq!(v["HMAC512Signature"], expected.as_str());
        // and the core function itself matches the FACTS vector
        assert_eq!(
            bitbylaw_core::advoware::hmac512_signature(b"test-secret-key", 64, "app-123", "nonce-abc", "2026-08-30T00:00:00.000Z"),
            "o7rz9KmoXZs550HfzO6ffiG17XwiPmlBHlksUYKZ3jcfolELow51Fw5KlrQqCK5y41aIValDjrh1iQ2GZ2WtqQ=="
        );
        let h = token_call_headers(&cfg(), body.len());
        assert!(h.contains(&(":authority".into(), "advoware.test".into())));
        assert!(h.contains(&(":scheme".into(), "http".into())));
        assert!(h.contains(&(":path".into(), "/api/v1/Token".into())));
    }

    #[test]
    fn outcomes() {
        let c = cfg();
        let now = 1_000_000_000u64;
        assert_eq!(
            interpret_token_response(&c, Some("timeout"), None, b"", now),
            Err(FetchError::Timeout)
        );
        let e =
            interpret_token_response(&c, Some("broken connection"), None, b"", now).unwrap_err();
        assert_eq!(
            (e.http_status(), e.code()),
            (502, "token_endpoint_unreachable")
        );
        let e =
            interpret_token_response(&c, None, Some("401"), br#"{"error":"invalid_client"}"#, now)
                .unwrap_err();
        assert_eq!(e, FetchError::Status(401));
        let e = interpret_token_response(&c, None, Some("200"), b"<html>", now).unwrap_err();
        assert_eq!(e.code(), "token_response_invalid");
        let e = interpret_token_response(&c, None, Some("200"), br#"{"access_token":"a b"}"#, now)
            .unwrap_err();
        assert_eq!(e.code(), "token_response_invalid");
        let e = interpret_token_response(
            &c,
            None,
            Some("200"),
            br#"{"access_token":"t","expires_in":0}"#,
            now,
        )
        .unwrap_err();
        assert_eq!(e, FetchError::Invalid("token already expired"));

        let t = interpret_token_response(
            &c,
            None,
            Some("200"),
            br#"{"access_token":"tok","expires_in":3600}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.token, "tok");
        assert_eq!(t.expires_at_ms, now + 3_300_000); // capped
        assert_eq!(t.refresh_at_ms, now + 3_000_000);
        let t = interpret_token_response(
            &c,
            None,
            Some("200"),
            br#"{"access_token":"tok","expires_in":120}"#,
            now,
        )
        .unwrap();
        assert_eq!(
            (t.refresh_at_ms, t.expires_at_ms),
            (now + 60_000, now + 120_000)
        );
        // ngx_wasm_module reports `:dispatch_status: ok` for an answered call.
        let t = interpret_token_response(
            &c,
            Some("ok"),
            Some("200"),
            br#"{"access_token":"tok","expires_in":3600}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.token, "tok");
        let e = interpret_token_response(&c, Some("ok"), Some("503"), b"", now).unwrap_err();
        assert_eq!(e, FetchError::Status(503));
    }
}
