//! Advoware token requests (FACTS.md §1).
//!
//! A token is requested with `POST {securityGateway}api/v1/Token` and a JSON
//! body whose `HMAC512Signature` is
//!
//! ```text
//! message = "{Product}:{AppID}:{Nonce}:{RequestTimeStamp}"   (UTF-8)
//! key     = base64_decode(API key)
//! HMAC512Signature = base64(HMAC-SHA512(key, message))
//! ```
//!
//! The exact `RequestTimeStamp` string that was signed must be sent, so the
//! caller formats it once with [`format_request_timestamp`] and puts it into
//! [`TokenRequest::timestamp`]. Nonces are UUID v4 strings built from
//! caller-supplied random bytes ([`uuid_v4_from_bytes`]): this crate never
//! reads a clock or a random source.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use crate::canonical::write_json_string;
use crate::civil;
use crate::mac::hmac_sha512;

/// Errors of this module. A concrete enum: the filter logs which step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvowareError {
    /// The configured API key is empty (after trimming whitespace).
    #[error("Advoware API key is empty")]
    EmptyApiKey,
    /// The configured API key is not valid standard base64.
    #[error("Advoware API key is not valid base64: {0}")]
    InvalidApiKey(String),
    /// The token endpoint's answer is not usable.
    #[error("invalid Advoware token response: {0}")]
    InvalidTokenResponse(&'static str),
}

/// `base64(HMAC-SHA512(key, "{product}:{app_id}:{nonce}:{timestamp}"))`.
///
/// `key` is the raw key: in production the base64-decoded API key
/// (see [`decode_api_key`]).
pub fn hmac512_signature(
    key: &[u8],
    product: u32,
    app_id: &str,
    nonce: &str,
    timestamp: &str,
) -> String {
    let product = product.to_string();
    let mac = hmac_sha512(
        key,
        &[
            product.as_bytes(),
            b":",
            app_id.as_bytes(),
            b":",
            nonce.as_bytes(),
            b":",
            timestamp.as_bytes(),
        ],
    );
    STANDARD.encode(mac)
}

/// Decodes the configured API key (standard base64, padding optional;
/// surrounding whitespace ignored) into the HMAC key bytes.
pub fn decode_api_key(api_key_b64: &str) -> Result<Vec<u8>, AdvowareError> {
    let trimmed = api_key_b64.trim();
    if trimmed.is_empty() {
        return Err(AdvowareError::EmptyApiKey);
    }
    let decoded = STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|e| AdvowareError::InvalidApiKey(e.to_string()))?;
    if decoded.is_empty() {
        return Err(AdvowareError::EmptyApiKey);
    }
    Ok(decoded)
}

/// An Advoware API user's credentials: what every token request is made of. One type for the
/// filter and the worker, so both sign the same way; `Debug` never shows the password or key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AppID`: the application id issued by Advoware.
    pub app_id: String,
    /// `Kanzlei`: the firm id.
    pub kanzlei: String,
    /// `Database`.
    pub database: String,
    /// `User`: the API user's Kürzel.
    pub user: String,
    /// `Role` (2 in the vendor example).
    pub role: u32,
    /// `Product` (64 for third-party apps).
    pub product: u32,
    /// `Password` (secret).
    pub password: String,
    /// The base64-decoded API key: the HMAC key (secret).
    pub api_key: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("app_id", &self.app_id)
            .field("kanzlei", &self.kanzlei)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("role", &self.role)
            .field("product", &self.product)
            .field("password", &"<redacted>")
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The signed JSON body of `POST api/v1/Token` with a nonce made from `random` (16 random
    /// bytes) and the time `now_unix_nanos`.
    pub fn token_request_body(&self, random: [u8; 16], now_unix_nanos: u64) -> Vec<u8> {
        TokenRequest {
            credentials: self,
            nonce: uuid_v4_from_bytes(random),
            timestamp: format_request_timestamp(now_unix_nanos),
        }
        .to_json_body()
    }
}

/// One token request: the credentials plus a fresh nonce and timestamp. `Debug` (through
/// [`Credentials`]) never shows the password or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    /// Who asks.
    pub credentials: &'a Credentials,
    /// `Nonce` (a UUID v4, see [`uuid_v4_from_bytes`]).
    pub nonce: String,
    /// `RequestTimeStamp`, exactly as signed (see [`format_request_timestamp`]).
    pub timestamp: String,
}

impl TokenRequest<'_> {
    /// The `HMAC512Signature` of this request (keyed with the decoded API key).
    pub fn signature(&self) -> String {
        let c = self.credentials;
        hmac512_signature(
            &c.api_key,
            c.product,
            &c.app_id,
            &self.nonce,
            &self.timestamp,
        )
    }

    /// The JSON body for `POST api/v1/Token`, fields in this order:
    /// `AppID, Kanzlei, Database, User, Role, Product, Password, Nonce,
    /// HMAC512Signature, RequestTimeStamp`.
    pub fn to_json_body(&self) -> Vec<u8> {
        let signature = self.signature();
        let c = self.credentials;
        let mut out = String::with_capacity(256);
        out.push('{');
        let fields: [(&str, Field<'_>); 10] = [
            ("AppID", Field::Str(&c.app_id)),
            ("Kanzlei", Field::Str(&c.kanzlei)),
            ("Database", Field::Str(&c.database)),
            ("User", Field::Str(&c.user)),
            ("Role", Field::Num(c.role)),
            ("Product", Field::Num(c.product)),
            ("Password", Field::Str(&c.password)),
            ("Nonce", Field::Str(&self.nonce)),
            ("HMAC512Signature", Field::Str(&signature)),
            ("RequestTimeStamp", Field::Str(&self.timestamp)),
        ];
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_string(&mut out, name);
            out.push(':');
            match value {
                Field::Str(s) => write_json_string(&mut out, s),
                Field::Num(n) => out.push_str(&n.to_string()),
            }
        }
        out.push('}');
        out.into_bytes()
    }
}

enum Field<'a> {
    Str(&'a str),
    Num(u32),
}

/// Formats Unix time in nanoseconds like the vendor example
/// `2021-01-29T14:04:26.7955547Z`: UTC, seven fractional digits (truncated).
pub fn format_request_timestamp(unix_nanos: u64) -> String {
    civil::format_unix_nanos_7(unix_nanos)
}

/// A UUID v4 string (lowercase, hyphenated) from 16 caller-supplied random
/// bytes; sets the version (4) and variant (RFC 4122) bits.
pub fn uuid_v4_from_bytes(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The token endpoint's answer. `Debug` never shows the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The bearer token for `Authorization: Bearer …`.
    pub access_token: String,
    /// `token_type` (e.g. `bearer`), if sent.
    pub token_type: Option<String>,
    /// `expires_in` in seconds, if sent (number or numeric string).
    pub expires_in: Option<u64>,
    /// `expiration_utc` as sent (ISO 8601), if sent.
    pub expiration_utc: Option<String>,
    /// `refresh_token`, if sent (secret).
    pub refresh_token: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("expiration_utc", &self.expiration_utc)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Parses the token endpoint's JSON answer.
///
/// Requires a JSON object with a non-empty string `access_token`. Lenient
/// with the optional fields: `expires_in` may be a non-negative number
/// (fraction dropped) or a numeric string; fields of unexpected types are
/// treated as absent. Field names are matched exactly (also accepts the
/// PascalCase spelling `AccessToken`/`ExpiresIn`/… as a fallback).
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, AdvowareError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| AdvowareError::InvalidTokenResponse("body is not JSON"))?;
    let obj = value
        .as_object()
        .ok_or(AdvowareError::InvalidTokenResponse(
            "body is not a JSON object",
        ))?;
    let get = |snake: &str, pascal: &str| obj.get(snake).or_else(|| obj.get(pascal));
    let string = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);

    let access_token = string(get("access_token", "AccessToken"))
        .ok_or(AdvowareError::InvalidTokenResponse("access_token missing"))?;
    if access_token.trim().is_empty() {
        return Err(AdvowareError::InvalidTokenResponse("access_token empty"));
    }
    let expires_in = get("expires_in", "ExpiresIn").and_then(|v| match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    });
    Ok(TokenResponse {
        access_token,
        token_type: string(get("token_type", "TokenType")),
        expires_in,
        expiration_utc: string(get("expiration_utc", "ExpirationUtc")),
        refresh_token: string(get("refresh_token", "RefreshToken")),
    })
}

/// How long (seconds from `now_unix_secs`) a token may be cached, at most
/// `cap_secs`.
///
/// Uses `expires_in` when present, else `expiration_utc` (ISO 8601, UTC
/// unless an offset is given) minus now (0 if already past). When neither
/// is known or parsable, returns `cap_secs`: the caller's cap is the blind
/// cache time (the seeds cache tokens 53–55 min), and a 401 from Advoware
/// makes the caller refresh anyway.
pub fn token_lifetime_secs(resp: &TokenResponse, now_unix_secs: u64, cap_secs: u64) -> u64 {
    if let Some(secs) = resp.expires_in {
        return secs.min(cap_secs);
    }
    if let Some(exp) = resp
        .expiration_utc
        .as_deref()
        .and_then(civil::parse_iso8601_utc)
    {
        let now = i64::try_from(now_unix_secs).unwrap_or(i64::MAX);
        let left = exp.saturating_sub(now).max(0);
        return u64::try_from(left).unwrap_or(0).min(cap_secs);
    }
    cap_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str =
        "o7rz9KmoXZs550HfzO6ffiG17XwiPmlBHlksUYKZ3jcfolELow51Fw5KlrQqCK5y41aIValDjrh1iQ2GZ2WtqQ==";

    #[test]
    fn facts_test_vector() {
        let sig = hmac512_signature(
            b"test-secret-key",
            64,
            "app-123",
            "nonce-abc",
            "2026-08-30T00:00:00.000Z",
        );
        assert_eq!(sig, VECTOR);
    }

    #[test]
    fn decoded_api_key_path() {
        // base64("test-secret-key")
        let key = decode_api_key(" dGVzdC1zZWNyZXQta2V5 \n").unwrap();
        assert_eq!(key, b"test-secret-key");
        assert_eq!(
            hmac512_signature(&key, 64, "app-123", "nonce-abc", "2026-08-30T00:00:00.000Z"),
            VECTOR
        );
        assert_eq!(decode_api_key("dGVzdA").unwrap(), b"test"); // unpadded
        assert_eq!(decode_api_key(""), Err(AdvowareError::EmptyApiKey));
        assert_eq!(decode_api_key("   "), Err(AdvowareError::EmptyApiKey));
        assert!(matches!(
            decode_api_key("not base64!"),
            Err(AdvowareError::InvalidApiKey(_))
        ));
    }

    fn credentials() -> Credentials {
        Credentials {
            app_id: "app-123".into(),
            kanzlei: "musterkanzlei".into(),
            database: "advo01".into(),
            user: "SB".into(),
            role: 2,
            product: 64,
            password: "s3cr\"et".into(),
            api_key: b"test-secret-key".to_vec(),
        }
    }

    fn request(credentials: &Credentials) -> TokenRequest<'_> {
        TokenRequest {
            credentials,
            nonce: "nonce-abc".into(),
            timestamp: "2026-08-30T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn json_body_fields_and_signature() {
        let body = request(&credentials()).to_json_body();
        let text = String::from_utf8(body.clone()).unwrap();
        let expected = format!(
            "{{\"AppID\":\"app-123\",\"Kanzlei\":\"musterkanzlei\",\"Database\":\"advo01\",\
             \"User\":\"SB\",\"Role\":2,\"Product\":64,\"Password\":\"s3cr\\\"et\",\
             \"Nonce\":\"nonce-abc\",\"HMAC512Signature\":\"{VECTOR}\",\
             \"RequestTimeStamp\":\"2026-08-30T00:00:00.000Z\"}}"
        );
        assert_eq!(text, expected);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["Password"], "s3cr\"et");
        assert_eq!(v["Role"], 2);
    }

    #[test]
    fn debug_redacts_password() {
        let dbg = format!("{:?}", request(&credentials()));
        assert!(
            !dbg.contains("s3cr") && !dbg.contains("test-secret"),
            "{dbg}"
        );
        assert!(dbg.contains("<redacted>"));
        assert!(dbg.contains("app-123"));
    }

    #[test]
    fn credentials_sign_like_a_token_request_and_redact() {
        let creds = credentials();
        let nanos = 1_788_048_000_000_000_000;
        let body = creds.token_request_body([7; 16], nanos);
        let expected = TokenRequest {
            credentials: &creds,
            nonce: uuid_v4_from_bytes([7; 16]),
            timestamp: format_request_timestamp(nanos),
        }
        .to_json_body();
        assert_eq!(body, expected);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["Nonce"], uuid_v4_from_bytes([7; 16]));
        let dbg = format!("{creds:?}");
        assert!(
            !dbg.contains("s3cr") && !dbg.contains("test-secret"),
            "{dbg}"
        );
    }

    #[test]
    fn request_timestamp_format() {
        assert_eq!(
            format_request_timestamp(1_611_929_066_795_554_700),
            "2021-01-29T14:04:26.7955547Z"
        );
        assert_eq!(
            format_request_timestamp(1_788_048_000_000_000_000),
            "2026-08-30T00:00:00.0000000Z"
        );
    }

    #[test]
    fn uuid_v4_bits() {
        assert_eq!(
            uuid_v4_from_bytes([0; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
        assert_eq!(
            uuid_v4_from_bytes([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        let u = uuid_v4_from_bytes([
            0x6f, 0x1c, 0x1a, 0x3e, 0x8a, 0x55, 0x4d, 0x7e, 0x9a, 0x3b, 0x2f, 0x0c, 0x5b, 0x7e,
            0x9d, 0x11,
        ]);
        assert_eq!(u, "6f1c1a3e-8a55-4d7e-9a3b-2f0c5b7e9d11");
    }

    #[test]
    fn parse_response_example() {
        let body = br#"{"access_token":"eyJhbGciOi...","token_type":"bearer","expires_in":3600,
            "expiration_utc":"2026-11-23T15:04:26.123Z","refresh_token":"c2b1..."}"#;
        let r = parse_token_response(body).unwrap();
        assert_eq!(r.access_token, "eyJhbGciOi...");
        assert_eq!(r.token_type.as_deref(), Some("bearer"));
        assert_eq!(r.expires_in, Some(3600));
        assert_eq!(
            r.expiration_utc.as_deref(),
            Some("2026-11-23T15:04:26.123Z")
        );
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("eyJ") && !dbg.contains("c2b1"), "{dbg}");
    }

    #[test]
    fn parse_response_lenient_and_errors() {
        let r = parse_token_response(br#"{"access_token":"t","expires_in":"1800"}"#).unwrap();
        assert_eq!(r.expires_in, Some(1800));
        let r = parse_token_response(br#"{"access_token":"t","expires_in":1799.9}"#).unwrap();
        assert_eq!(r.expires_in, Some(1799));
        let r = parse_token_response(br#"{"access_token":"t","expires_in":-5}"#).unwrap();
        assert_eq!(r.expires_in, None);
        let r = parse_token_response(br#"{"AccessToken":"t","ExpiresIn":60}"#).unwrap();
        assert_eq!((r.access_token.as_str(), r.expires_in), ("t", Some(60)));
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"access_token":""}"#,
            br#"{"access_token":5}"#,
        ] {
            assert!(matches!(
                parse_token_response(bad),
                Err(AdvowareError::InvalidTokenResponse(_))
            ));
        }
    }

    #[test]
    fn lifetime() {
        let now = civil::parse_iso8601_utc("2026-11-23T14:04:26Z").unwrap() as u64;
        let mut r = parse_token_response(
            br#"{"access_token":"t","expires_in":3600,"expiration_utc":"2026-11-23T14:14:26Z"}"#,
        )
        .unwrap();
        assert_eq!(token_lifetime_secs(&r, now, 3300), 3300);
        assert_eq!(token_lifetime_secs(&r, now, 7200), 3600);
        r.expires_in = None;
        assert_eq!(token_lifetime_secs(&r, now, 3300), 600);
        assert_eq!(token_lifetime_secs(&r, now + 10_000, 3300), 0);
        r.expiration_utc = Some("2026-11-23T15:14:26+01:00".into());
        assert_eq!(token_lifetime_secs(&r, now, 3300), 600);
        r.expiration_utc = Some("garbage".into());
        assert_eq!(token_lifetime_secs(&r, now, 3300), 3300);
        r.expiration_utc = None;
        assert_eq!(token_lifetime_secs(&r, now, 3300), 3300);
    }
}
