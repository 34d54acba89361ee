//! Verification of webhook sender signatures.
//!
//! Every comparison of secret-derived bytes is constant time (`subtle`), and
//! every credential in a list is tried (key rotation: old and new secrets are
//! configured side by side). Each function returns a [`SignatureError`]
//! whose variant says *why* a request failed (missing header, malformed
//! header, mismatch, stale timestamp, …): callers log [`SignatureError::code`]
//! but answer clients generically, so an attacker learns nothing.
//!
//! Header parsers never panic, whatever the input (property-tested).
//!
//! # Schemes
//! - **EspoCRM** ([`verify_espocrm`], FACTS §2): header
//!   `Signature: base64(webhookId + ":" + hex(HMAC-SHA256(body, secretKey)))`
//!   (EspoCRM ≥ 9.0) and legacy `X-Signature: base64(webhookId + ":" + raw
//!   32 HMAC bytes)`. The HMAC key is the secret's UTF-8 bytes.
//! - **Standard Webhooks** ([`verify_standard_webhook`], FACTS §5): headers
//!   `webhook-id`, `webhook-timestamp`, `webhook-signature`; signed content
//!   `"{id}.{timestamp}.{body}"`; key = base64 of the secret after `whsec_`.
//! - **Generic HMAC-SHA256** ([`verify_hmac_sha256`]): one header with the
//!   hex or base64 MAC, optionally behind a prefix such as `sha256=`; with a
//!   timestamp header configured the signed content is `"{timestamp}.{body}"`
//!   (the timestamp header's value exactly as sent, trimmed), else the body.
//! - **Shared token** ([`verify_shared_token`]): a static token compared via
//!   SHA-256 digests so neither content nor length leaks.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use subtle::{Choice, ConstantTimeEq};

use crate::mac::{hmac_sha256, sha256};

/// Why a signature check failed. Log the variant; answer clients generically.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent or empty (names the header or its role).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but not in the expected format.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// The header names a key id (EspoCRM webhook id) no credential has.
    #[error("unknown key id")]
    UnknownKeyId,
    /// Well-formed, but no configured secret produces this signature.
    #[error("signature mismatch")]
    Mismatch,
    /// The timestamp is outside the tolerance window (past or future).
    #[error("timestamp outside tolerance")]
    StaleTimestamp,
    /// No usable secret/credential is configured (a configuration error).
    #[error("no usable secret configured")]
    NotConfigured,
    /// A configured secret cannot be decoded (a configuration error).
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
}

impl SignatureError {
    /// A stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "signature_missing",
            Self::MalformedHeader(_) => "signature_malformed",
            Self::UnknownKeyId => "signature_unknown_key_id",
            Self::Mismatch => "signature_mismatch",
            Self::StaleTimestamp => "signature_stale",
            Self::NotConfigured => "signature_not_configured",
            Self::InvalidSecret(_) => "signature_invalid_secret",
        }
    }
}

// ---------------------------------------------------------------------------
// EspoCRM

/// One EspoCRM webhook's credentials (`id` and `secretKey` returned by
/// `POST api/v1/Webhook`). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EspoCrmCredential {
    /// The webhook id EspoCRM puts in front of the signature.
    pub webhook_id: String,
    /// The webhook's `secretKey` (HMAC key: its UTF-8 bytes).
    pub secret: String,
}

impl fmt::Debug for EspoCrmCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspoCrmCredential")
            .field("webhook_id", &self.webhook_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Verifies an EspoCRM webhook request.
///
/// `signature_header` is the `Signature` header, `legacy_header` the
/// `X-Signature` header. If `Signature` is present it is checked first; if
/// it fails and `X-Signature` is present too, that is tried (both prove
/// knowledge of the same secret). The webhook id in the header must equal
/// the credential's `webhook_id`; any credential may match. Callers that
/// bind webhooks to actions use [`verify_espocrm_webhook`] instead.
pub fn verify_espocrm(
    signature_header: Option<&str>,
    legacy_header: Option<&str>,
    body: &[u8],
    credentials: &[EspoCrmCredential],
) -> Result<(), SignatureError> {
    verify_espocrm_webhook(signature_header, legacy_header, body, credentials).map(|_| ())
}

/// [`verify_espocrm`], returning the id of the webhook whose secret signed
/// the body: an authenticated identity, so the caller can check that this
/// webhook may deliver what the request path asks for (a genuinely signed
/// `update` delivery must not become a `delete` event).
pub fn verify_espocrm_webhook<'c>(
    signature_header: Option<&str>,
    legacy_header: Option<&str>,
    body: &[u8],
    credentials: &'c [EspoCrmCredential],
) -> Result<&'c str, SignatureError> {
    let signature_header = non_empty(signature_header);
    let legacy_header = non_empty(legacy_header);
    if signature_header.is_none() && legacy_header.is_none() {
        return Err(SignatureError::MissingHeader("Signature"));
    }
    if credentials.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let mut first_error = None;
    if let Some(h) = signature_header {
        match parse_espocrm_signature(h)
            .and_then(|(id, mac)| espo_match(&id, &mac, body, credentials))
        {
            Ok(id) => return Ok(id),
            Err(e) => first_error = Some(e),
        }
    }
    if let Some(h) = legacy_header {
        match parse_espocrm_legacy(h).and_then(|(id, mac)| espo_match(&id, &mac, body, credentials))
        {
            Ok(id) => return Ok(id),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    Err(first_error.unwrap_or(SignatureError::Mismatch))
}

/// Parses `Signature: base64(webhookId ":" hex(hmac))` into (id, 32 MAC bytes).
pub fn parse_espocrm_signature(header: &str) -> Result<(String, [u8; 32]), SignatureError> {
    const H: &str = "Signature";
    let decoded = decode_b64(header.trim()).ok_or(SignatureError::MalformedHeader(H))?;
    let text = std::str::from_utf8(&decoded).map_err(|_| SignatureError::MalformedHeader(H))?;
    let (id, hex_mac) = text
        .rsplit_once(':')
        .ok_or(SignatureError::MalformedHeader(H))?;
    if id.is_empty() || hex_mac.len() != 64 {
        return Err(SignatureError::MalformedHeader(H));
    }
    let mut mac = [0u8; 32];
    hex::decode_to_slice(hex_mac, &mut mac).map_err(|_| SignatureError::MalformedHeader(H))?;
    Ok((id.to_owned(), mac))
}

/// Parses legacy `X-Signature: base64(webhookId ":" raw 32 MAC bytes)`.
pub fn parse_espocrm_legacy(header: &str) -> Result<(String, [u8; 32]), SignatureError> {
    const H: &str = "X-Signature";
    let decoded = decode_b64(header.trim()).ok_or(SignatureError::MalformedHeader(H))?;
    // The MAC is the last 32 bytes (it may itself contain ':').
    if decoded.len() < 34 {
        return Err(SignatureError::MalformedHeader(H));
    }
    let (head, mac) = decoded.split_at(decoded.len() - 32);
    let id = head
        .strip_suffix(b":")
        .and_then(|id| std::str::from_utf8(id).ok())
        .filter(|id| !id.is_empty())
        .ok_or(SignatureError::MalformedHeader(H))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(mac);
    Ok((id.to_owned(), out))
}

/// The configured id equal to `id` when one of its secrets signed `body`.
fn espo_match<'c>(
    id: &str,
    mac: &[u8; 32],
    body: &[u8],
    credentials: &'c [EspoCrmCredential],
) -> Result<&'c str, SignatureError> {
    let mut known_id = None;
    let mut ok = Choice::from(0);
    for cred in credentials
        .iter()
        .filter(|c| c.webhook_id == id && !c.secret.is_empty())
    {
        known_id = Some(cred.webhook_id.as_str());
        let expected = hmac_sha256(cred.secret.as_bytes(), &[body]);
        ok |= expected.ct_eq(mac);
    }
    if let (true, Some(id)) = (bool::from(ok), known_id) {
        Ok(id)
    } else if known_id.is_some() {
        Err(SignatureError::Mismatch)
    } else {
        Err(SignatureError::UnknownKeyId)
    }
}

/// Computes the `Signature` header value EspoCRM sends (for tests and fakes).
pub fn sign_espocrm(webhook_id: &str, secret: &str, body: &[u8]) -> String {
    let mac = hmac_sha256(secret.as_bytes(), &[body]);
    STANDARD.encode(format!("{webhook_id}:{}", hex::encode(mac)))
}

/// Computes the legacy `X-Signature` header value (for tests and fakes).
pub fn sign_espocrm_legacy(webhook_id: &str, secret: &str, body: &[u8]) -> String {
    let mac = hmac_sha256(secret.as_bytes(), &[body]);
    let mut raw = Vec::with_capacity(webhook_id.len() + 33);
    raw.extend_from_slice(webhook_id.as_bytes());
    raw.push(b':');
    raw.extend_from_slice(&mac);
    STANDARD.encode(raw)
}

// ---------------------------------------------------------------------------
// Standard Webhooks

/// Decodes a Standard Webhooks secret: optional `whsec_` prefix, then
/// standard base64. Validate configured secrets with this at load time.
pub fn decode_standard_webhook_secret(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let s = secret.trim();
    let s = s.strip_prefix("whsec_").unwrap_or(s);
    let key = decode_b64(s).ok_or(SignatureError::InvalidSecret("not base64"))?;
    if key.is_empty() {
        return Err(SignatureError::InvalidSecret("empty"));
    }
    Ok(key)
}

/// `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>` for the raw
/// (decoded) `key`: what a sender puts into `webhook-signature`.
pub fn sign_standard_webhook(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// Verifies a Standard Webhooks request.
///
/// - `id`, `timestamp`, `signature_header`: the `webhook-id`,
///   `webhook-timestamp` and `webhook-signature` headers.
/// - `secrets`: `whsec_…` secrets (see [`decode_standard_webhook_secret`]);
///   undecodable ones are skipped (validate them at configuration time), and
///   with none usable the result is [`SignatureError::NotConfigured`].
/// - The timestamp (decimal Unix seconds) must be within `tolerance_secs` of
///   `now_unix` in both directions, else [`SignatureError::StaleTimestamp`]
///   (checked before any MAC is computed).
/// - The signature header is a space-separated list of `version,base64`
///   entries; entries of other versions (e.g. `v1a`) and undecodable `v1`
///   entries are ignored; without any well-formed `v1` entry the header is
///   malformed. Any `v1` entry matching any secret passes.
///
/// Differences from Kong 3.9's bundled `standard-webhooks` plugin (read for
/// semantics): Kong uses the configured secret string itself as the HMAC key
/// (no `whsec_`/base64 decoding), compares the whole header to a single
/// `v1,…` string, checks only the past side of the tolerance, rejects an
/// empty body, and maps an unparsable timestamp to 0 (hence stale). We
/// follow the Standard Webhooks specification instead (as Svix senders do),
/// and report an unparsable timestamp as malformed.
pub fn verify_standard_webhook(
    id: Option<&str>,
    timestamp: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now_unix: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let id = non_empty(id).ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let ts_raw = non_empty(timestamp).ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let sig =
        non_empty(signature_header).ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let ts = parse_unix_secs(ts_raw).ok_or(SignatureError::MalformedHeader("webhook-timestamp"))?;
    check_tolerance(ts, now_unix, tolerance_secs)?;
    let candidates = parse_standard_signatures(sig);
    if candidates.is_empty() {
        return Err(SignatureError::MalformedHeader("webhook-signature"));
    }
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(|s| decode_standard_webhook_secret(s).ok())
        .collect();
    if keys.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let ts_text = ts.to_string();
    let mut ok = Choice::from(0);
    for key in &keys {
        let expected = hmac_sha256(key, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]);
        for cand in &candidates {
            ok |= expected.ct_eq(cand);
        }
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The well-formed `v1` MACs of a `webhook-signature` header.
pub fn parse_standard_signatures(header: &str) -> Vec<[u8; 32]> {
    header
        .split_ascii_whitespace()
        .filter_map(|entry| {
            let (version, sig) = entry.split_once(',')?;
            if version != "v1" {
                return None;
            }
            let raw = decode_b64(sig)?;
            <[u8; 32]>::try_from(raw.as_slice()).ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Generic HMAC-SHA256

/// How a generic HMAC header encodes the 32 MAC bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hex, either case.
    Hex,
    /// Standard base64, padding optional.
    Base64,
}

/// Verifies a generic HMAC-SHA256 signature header.
///
/// - `header_value`: the signature header (absent/empty → missing).
/// - `prefix`: e.g. `Some("sha256=")` (GitHub style); matched ASCII
///   case-insensitively; required when configured.
/// - `secrets`: raw HMAC keys; empty keys are ignored; any may match.
/// - `timestamp`: `Some((timestamp header value, now_unix, tolerance_secs))`
///   when the sender also sends a timestamp header. Then the value must be
///   decimal Unix seconds within ±tolerance of now, and the **signed content
///   is `"{timestamp}.{body}"`** (the header value as sent, trimmed). Pass
///   `""` as the value when the header is absent (→ missing). Without a
///   timestamp the signed content is the body alone.
pub fn verify_hmac_sha256(
    header_value: Option<&str>,
    body: &[u8],
    secrets: &[Vec<u8>],
    encoding: Encoding,
    prefix: Option<&str>,
    timestamp: Option<(&str, u64, u64)>,
) -> Result<(), SignatureError> {
    let header = non_empty(header_value).ok_or(SignatureError::MissingHeader("signature"))?;
    let ts_text = match timestamp {
        Some((value, now, tolerance)) => {
            let value = value.trim();
            if value.is_empty() {
                return Err(SignatureError::MissingHeader("timestamp"));
            }
            let ts = parse_unix_secs(value).ok_or(SignatureError::MalformedHeader("timestamp"))?;
            check_tolerance(ts, now, tolerance)?;
            Some(value)
        }
        None => None,
    };
    let mac = parse_hmac_header(header, encoding, prefix)?;
    let mut ok = Choice::from(0);
    let mut any_key = false;
    for key in secrets.iter().filter(|k| !k.is_empty()) {
        any_key = true;
        let expected = match ts_text {
            Some(ts) => hmac_sha256(key, &[ts.as_bytes(), b".", body]),
            None => hmac_sha256(key, &[body]),
        };
        ok |= expected.ct_eq(&mac);
    }
    if !any_key {
        return Err(SignatureError::NotConfigured);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Parses a generic HMAC header value into the 32 MAC bytes.
pub fn parse_hmac_header(
    header: &str,
    encoding: Encoding,
    prefix: Option<&str>,
) -> Result<[u8; 32], SignatureError> {
    const H: &str = "signature";
    let mut value = header.trim();
    if let Some(p) = prefix.filter(|p| !p.is_empty()) {
        let head = value
            .get(..p.len())
            .ok_or(SignatureError::MalformedHeader(H))?;
        if !head.eq_ignore_ascii_case(p) {
            return Err(SignatureError::MalformedHeader(H));
        }
        value = value[p.len()..].trim_start();
    }
    let mut mac = [0u8; 32];
    match encoding {
        Encoding::Hex => {
            if value.len() != 64 {
                return Err(SignatureError::MalformedHeader(H));
            }
            hex::decode_to_slice(value, &mut mac)
                .map_err(|_| SignatureError::MalformedHeader(H))?;
        }
        Encoding::Base64 => {
            let raw = decode_b64(value).ok_or(SignatureError::MalformedHeader(H))?;
            mac = <[u8; 32]>::try_from(raw.as_slice())
                .map_err(|_| SignatureError::MalformedHeader(H))?;
        }
    }
    Ok(mac)
}

/// Computes a generic HMAC-SHA256 header value (for tests and senders):
/// `prefix + encode(HMAC(key, [timestamp "."] body))`.
pub fn sign_hmac_sha256(
    key: &[u8],
    body: &[u8],
    encoding: Encoding,
    prefix: Option<&str>,
    timestamp: Option<&str>,
) -> String {
    let mac = match timestamp {
        Some(ts) => hmac_sha256(key, &[ts.as_bytes(), b".", body]),
        None => hmac_sha256(key, &[body]),
    };
    let encoded = match encoding {
        Encoding::Hex => hex::encode(mac),
        Encoding::Base64 => STANDARD.encode(mac),
    };
    format!("{}{encoded}", prefix.unwrap_or(""))
}

// ---------------------------------------------------------------------------
// Shared token

/// Verifies a static shared token against the configured ones.
///
/// Compares SHA-256 digests in constant time, so neither the content nor the
/// length of a configured token leaks through timing; every token is tried.
/// Empty configured tokens never match.
pub fn verify_shared_token(
    presented: Option<&str>,
    tokens: &[String],
) -> Result<(), SignatureError> {
    let presented = non_empty(presented).ok_or(SignatureError::MissingHeader("token"))?;
    let digest = sha256(presented.as_bytes());
    let mut ok = Choice::from(0);
    let mut any = false;
    for token in tokens.iter().filter(|t| !t.is_empty()) {
        any = true;
        ok |= sha256(token.as_bytes()).ct_eq(&digest);
    }
    if !any {
        return Err(SignatureError::NotConfigured);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------------------
// helpers

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// Standard base64, padding optional.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

/// Decimal Unix seconds: ASCII digits only (at most 19, so no overflow).
pub(crate) fn parse_unix_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `|now - ts| <= tolerance`, else stale.
pub(crate) fn check_tolerance(ts: u64, now: u64, tolerance: u64) -> Result<(), SignatureError> {
    if ts.abs_diff(now) > tolerance {
        Err(SignatureError::StaleTimestamp)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"[{"id":"6745a1b2c3d4e5f60","name":"Max Mustermann"}]"#;

    fn creds() -> Vec<EspoCrmCredential> {
        vec![
            EspoCrmCredential {
                webhook_id: "wh1".into(),
                secret: "old-secret".into(),
            },
            EspoCrmCredential {
                webhook_id: "wh1".into(),
                secret: "new-secret".into(),
            },
            EspoCrmCredential {
                webhook_id: "wh2".into(),
                secret: "other".into(),
            },
        ]
    }

    #[test]
    fn espocrm_known_vector() {
        // Computed independently: python3 -c 'import hmac,hashlib,base64;
        // m=hmac.new(b"secret",b"[]",hashlib.sha256).hexdigest();
        // print(base64.b64encode(b"abc:"+m.encode()).decode())'
        let header = sign_espocrm("abc", "secret", b"[]");
        assert_eq!(
            header,
            "YWJjOjUzMzY0YTA3ZmNjNTYzZTcxMmY0MmNmYzlkZTFlMjhlMWUyZDM5ZjIzNmNlZTQzMGYxMTIyMDNlNTU3YWVhM2Y="
        );
        let creds = [EspoCrmCredential {
            webhook_id: "abc".into(),
            secret: "secret".into(),
        }];
        assert_eq!(verify_espocrm(Some(&header), None, b"[]", &creds), Ok(()));
    }

    #[test]
    fn espocrm_both_headers_and_rotation() {
        let c = creds();
        for secret in ["old-secret", "new-secret"] {
            let sig = sign_espocrm("wh1", secret, BODY);
            let legacy = sign_espocrm_legacy("wh1", secret, BODY);
            assert_eq!(verify_espocrm(Some(&sig), None, BODY, &c), Ok(()));
            assert_eq!(verify_espocrm(None, Some(&legacy), BODY, &c), Ok(()));
            assert_eq!(verify_espocrm(Some(&sig), Some(&legacy), BODY, &c), Ok(()));
            // a broken new header does not hide a valid legacy one
            assert_eq!(
                verify_espocrm(Some("garbage"), Some(&legacy), BODY, &c),
                Ok(())
            );
        }
        let sig = sign_espocrm("wh2", "other", BODY);
        assert_eq!(verify_espocrm(Some(&sig), None, BODY, &c), Ok(()));
        // the signing webhook is named, from either header
        assert_eq!(
            verify_espocrm_webhook(Some(&sig), None, BODY, &c),
            Ok("wh2")
        );
        let legacy = sign_espocrm_legacy("wh1", "old-secret", BODY);
        assert_eq!(
            verify_espocrm_webhook(Some(&sig), Some(&legacy), b"x", &c),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_espocrm_webhook(Some("garbage"), Some(&legacy), BODY, &c),
            Ok("wh1")
        );
    }

    #[test]
    fn espocrm_failures() {
        let c = creds();
        assert_eq!(
            verify_espocrm(None, None, BODY, &c),
            Err(SignatureError::MissingHeader("Signature"))
        );
        assert_eq!(
            verify_espocrm(Some("  "), Some(""), BODY, &c),
            Err(SignatureError::MissingHeader("Signature"))
        );
        let sig = sign_espocrm("wh1", "wrong", BODY);
        assert_eq!(
            verify_espocrm(Some(&sig), None, BODY, &c),
            Err(SignatureError::Mismatch)
        );
        // right secret, wrong webhook id
        let sig = sign_espocrm("wh2", "new-secret", BODY);
        assert_eq!(
            verify_espocrm(Some(&sig), None, BODY, &c),
            Err(SignatureError::Mismatch)
        );
        let sig = sign_espocrm("wh9", "new-secret", BODY);
        assert_eq!(
            verify_espocrm(Some(&sig), None, BODY, &c),
            Err(SignatureError::UnknownKeyId)
        );
        // tampered body
        let sig = sign_espocrm("wh1", "new-secret", BODY);
        assert_eq!(
            verify_espocrm(Some(&sig), None, b"[]", &c),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_espocrm(Some("%%%"), None, BODY, &c),
            Err(SignatureError::MalformedHeader("Signature"))
        );
        let no_colon = STANDARD.encode("wh1deadbeef");
        assert_eq!(
            verify_espocrm(Some(&no_colon), None, BODY, &c),
            Err(SignatureError::MalformedHeader("Signature"))
        );
        let short = STANDARD.encode("wh1:abcd");
        assert_eq!(
            verify_espocrm(None, Some(&short), BODY, &c),
            Err(SignatureError::MalformedHeader("X-Signature"))
        );
        let sig = sign_espocrm("wh1", "new-secret", BODY);
        assert_eq!(
            verify_espocrm(Some(&sig), None, BODY, &[]),
            Err(SignatureError::NotConfigured)
        );
        let dbg = format!("{:?}", c[0]);
        assert!(!dbg.contains("old-secret"));
    }

    #[test]
    fn espocrm_uppercase_hex_and_legacy_colon_in_mac() {
        let mac = hmac_sha256(b"k", &[BODY]);
        let header = STANDARD.encode(format!("id1:{}", hex::encode_upper(mac)));
        let c = [EspoCrmCredential {
            webhook_id: "id1".into(),
            secret: "k".into(),
        }];
        assert_eq!(verify_espocrm(Some(&header), None, BODY, &c), Ok(()));
        // legacy parser takes the last 32 bytes even if they contain ':'
        let mut raw = b"id1:".to_vec();
        raw.extend_from_slice(&[b':'; 32]);
        let (id, m) = parse_espocrm_legacy(&STANDARD.encode(raw)).unwrap();
        assert_eq!((id.as_str(), m), ("id1", [b':'; 32]));
    }

    #[test]
    fn standard_webhooks_vector() {
        // Computed independently: python3 -c 'import hmac,hashlib,base64;
        // k=base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        // print(base64.b64encode(hmac.new(k,b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}",hashlib.sha256).digest()).decode())'
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let key = decode_standard_webhook_secret(&secret).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign_standard_webhook(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let ok = verify_standard_webhook(
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some(&sig),
            body,
            &[secret],
            1_614_265_330 + 299,
            300,
        );
        assert_eq!(ok, Ok(()));
    }

    fn std_verify(
        id: Option<&str>,
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        secrets: &[&str],
        now: u64,
    ) -> Result<(), SignatureError> {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        verify_standard_webhook(id, ts, sig, body, &secrets, now, 300)
    }

    #[test]
    fn standard_webhooks_rules() {
        let old = "whsec_b2xkLXNlY3JldC1rZXktMTIzNDU2Nzg5MA==";
        let new = "whsec_bmV3LXNlY3JldC1rZXktMTIzNDU2Nzg5MA==";
        let k_new = decode_standard_webhook_secret(new).unwrap();
        let now = 1_795_442_520;
        let sig = sign_standard_webhook(&k_new, "msg_1", now, BODY);
        let ts = now.to_string();
        let v = |sig: &str, now: u64| {
            std_verify(Some("msg_1"), Some(&ts), Some(sig), BODY, &[old, new], now)
        };
        assert_eq!(v(&sig, now), Ok(()));
        // list with other versions and junk
        let list = format!("v1a,abc v2,{} v1,!!! {sig}  v1,AAAA", &sig[3..]);
        assert_eq!(v(&list, now), Ok(()));
        // tolerance both directions
        assert_eq!(v(&sig, now + 300), Ok(()));
        assert_eq!(v(&sig, now - 300), Ok(()));
        assert_eq!(v(&sig, now + 301), Err(SignatureError::StaleTimestamp));
        assert_eq!(v(&sig, now - 301), Err(SignatureError::StaleTimestamp));
        // only other versions → malformed
        assert_eq!(
            v("v1a,abc v2,xyz", now),
            Err(SignatureError::MalformedHeader("webhook-signature"))
        );
        // wrong key
        let k_other = decode_standard_webhook_secret("whsec_b3RoZXI=").unwrap();
        let bad = sign_standard_webhook(&k_other, "msg_1", now, BODY);
        assert_eq!(v(&bad, now), Err(SignatureError::Mismatch));
        // id is part of the signed content
        assert_eq!(
            std_verify(Some("msg_2"), Some(&ts), Some(&sig), BODY, &[new], now),
            Err(SignatureError::Mismatch)
        );
        // missing / malformed headers
        assert_eq!(
            std_verify(None, Some(&ts), Some(&sig), BODY, &[new], now),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            std_verify(Some("msg_1"), None, Some(&sig), BODY, &[new], now),
            Err(SignatureError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            std_verify(Some("msg_1"), Some(&ts), None, BODY, &[new], now),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            std_verify(Some("msg_1"), Some("-5"), Some(&sig), BODY, &[new], now),
            Err(SignatureError::MalformedHeader("webhook-timestamp"))
        );
        assert_eq!(
            std_verify(Some("msg_1"), Some("1e9"), Some(&sig), BODY, &[new], now),
            Err(SignatureError::MalformedHeader("webhook-timestamp"))
        );
        // unusable secrets
        assert_eq!(
            std_verify(
                Some("msg_1"),
                Some(&ts),
                Some(&sig),
                BODY,
                &["whsec_!!"],
                now
            ),
            Err(SignatureError::NotConfigured)
        );
        // secret without prefix is accepted (bare base64)
        assert_eq!(
            std_verify(
                Some("msg_1"),
                Some(&ts),
                Some(&sig),
                BODY,
                &[&new[6..]],
                now
            ),
            Ok(())
        );
        assert!(decode_standard_webhook_secret("whsec_").is_err());
    }

    #[test]
    fn generic_hmac() {
        let keys = vec![b"k-old".to_vec(), b"k-new".to_vec()];
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"k-new",b"hello",hashlib.sha256).hexdigest())'
        let s =
            "sha256=7c9300c139950bbf10d95b3188326d804b828277e0a4534c14968dac608078f9".to_string();
        assert_eq!(
            sign_hmac_sha256(b"k-new", b"hello", Encoding::Hex, Some("sha256="), None),
            s
        );
        assert_eq!(
            verify_hmac_sha256(
                Some(&s),
                b"hello",
                &keys,
                Encoding::Hex,
                Some("sha256="),
                None
            ),
            Ok(())
        );
        // prefix case-insensitive, hex case-insensitive
        let upper = format!("SHA256={}", s["sha256=".len()..].to_uppercase());
        assert_eq!(
            verify_hmac_sha256(
                Some(&upper),
                b"hello",
                &keys,
                Encoding::Hex,
                Some("sha256="),
                None
            ),
            Ok(())
        );
        // prefix required
        let bare = &s["sha256=".len()..];
        assert_eq!(
            verify_hmac_sha256(
                Some(bare),
                b"hello",
                &keys,
                Encoding::Hex,
                Some("sha256="),
                None
            ),
            Err(SignatureError::MalformedHeader("signature"))
        );
        assert_eq!(
            verify_hmac_sha256(Some(bare), b"hello", &keys, Encoding::Hex, None, None),
            Ok(())
        );
        assert_eq!(
            verify_hmac_sha256(Some(bare), b"hellO", &keys, Encoding::Hex, None, None),
            Err(SignatureError::Mismatch)
        );
        let b64 = sign_hmac_sha256(b"k-old", b"hello", Encoding::Base64, None, None);
        assert_eq!(
            verify_hmac_sha256(Some(&b64), b"hello", &keys, Encoding::Base64, None, None),
            Ok(())
        );
        assert_eq!(
            verify_hmac_sha256(Some(&b64), b"hello", &keys, Encoding::Hex, None, None),
            Err(SignatureError::MalformedHeader("signature"))
        );
        assert_eq!(
            verify_hmac_sha256(None, b"hello", &keys, Encoding::Hex, None, None),
            Err(SignatureError::MissingHeader("signature"))
        );
        assert_eq!(
            verify_hmac_sha256(
                Some(bare),
                b"hello",
                &[Vec::new()],
                Encoding::Hex,
                None,
                None
            ),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn generic_hmac_independent_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"key",b"1700000000.{}",hashlib.sha256).hexdigest())'
        let want = "9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae";
        assert_eq!(
            sign_hmac_sha256(b"key", b"{}", Encoding::Hex, None, Some("1700000000")),
            want
        );
        let keys = vec![b"key".to_vec()];
        let ts = Some(("1700000000", 1_700_000_000, 0));
        assert_eq!(
            verify_hmac_sha256(Some(want), b"{}", &keys, Encoding::Hex, None, ts),
            Ok(())
        );
    }

    #[test]
    fn generic_hmac_with_timestamp() {
        let keys = vec![b"key".to_vec()];
        let now = 1_700_000_000;
        let s = sign_hmac_sha256(b"key", b"{}", Encoding::Hex, None, Some("1700000000"));
        let ts = Some(("1700000000", now + 10, 300));
        assert_eq!(
            verify_hmac_sha256(Some(&s), b"{}", &keys, Encoding::Hex, None, ts),
            Ok(())
        );
        // the timestamp is signed: the body-only MAC does not pass
        let body_only = sign_hmac_sha256(b"key", b"{}", Encoding::Hex, None, None);
        assert_eq!(
            verify_hmac_sha256(Some(&body_only), b"{}", &keys, Encoding::Hex, None, ts),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hmac_sha256(
                Some(&s),
                b"{}",
                &keys,
                Encoding::Hex,
                None,
                Some(("1700000000", now + 301, 300))
            ),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            verify_hmac_sha256(
                Some(&s),
                b"{}",
                &keys,
                Encoding::Hex,
                None,
                Some(("", now, 300))
            ),
            Err(SignatureError::MissingHeader("timestamp"))
        );
        assert_eq!(
            verify_hmac_sha256(
                Some(&s),
                b"{}",
                &keys,
                Encoding::Hex,
                None,
                Some(("abc", now, 300))
            ),
            Err(SignatureError::MalformedHeader("timestamp"))
        );
    }

    #[test]
    fn shared_token() {
        let tokens = vec!["tok-old".to_string(), "tok-new".to_string(), String::new()];
        assert_eq!(verify_shared_token(Some("tok-new"), &tokens), Ok(()));
        assert_eq!(verify_shared_token(Some("tok-old"), &tokens), Ok(()));
        assert_eq!(
            verify_shared_token(Some("tok"), &tokens),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_shared_token(Some(""), &tokens),
            Err(SignatureError::MissingHeader("token"))
        );
        assert_eq!(
            verify_shared_token(None, &tokens),
            Err(SignatureError::MissingHeader("token"))
        );
        assert_eq!(
            verify_shared_token(Some("x"), &[String::new()]),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn error_codes_are_distinct() {
        let all = [
            SignatureError::MissingHeader("x"),
            SignatureError::MalformedHeader("x"),
            SignatureError::UnknownKeyId,
            SignatureError::Mismatch,
            SignatureError::StaleTimestamp,
            SignatureError::NotConfigured,
            SignatureError::InvalidSecret("x"),
        ];
        let mut codes: Vec<_> = all.iter().map(SignatureError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(s in any::<String>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_espocrm_signature(&s);
            let _ = parse_espocrm_legacy(&s);
            let _ = parse_standard_signatures(&s);
            let _ = parse_hmac_header(&s, Encoding::Hex, Some("sha256="));
            let _ = parse_hmac_header(&s, Encoding::Base64, Some("é"));
            let _ = decode_standard_webhook_secret(&s);
            let creds = [EspoCrmCredential { webhook_id: "a".into(), secret: "b".into() }];
            prop_assert!(verify_espocrm(Some(&s), Some(&s), &body, &creds).is_err());
            prop_assert!(verify_standard_webhook(Some(&s), Some(&s), Some(&s), &body, &["whsec_YQ==".into()], 0, 300).is_err());
            prop_assert!(verify_hmac_sha256(Some(&s), &body, &[b"k".to_vec()], Encoding::Base64, None, Some((&s, 0, 5))).is_err());
            let _ = verify_shared_token(Some(&s), &["t".into()]);
        }

        #[test]
        fn base64ish_headers_never_panic(s in "[A-Za-z0-9+/=, v1a-z:]{0,120}") {
            let _ = parse_espocrm_signature(&s);
            let _ = parse_espocrm_legacy(&s);
            let _ = parse_standard_signatures(&s);
            let _ = parse_hmac_header(&s, Encoding::Base64, None);
        }

        #[test]
        fn sign_verify_roundtrip(key in proptest::collection::vec(any::<u8>(), 1..40),
                                 body in proptest::collection::vec(any::<u8>(), 0..64),
                                 id in "[a-zA-Z0-9_]{1,20}", ts in 0u64..4_000_000_000) {
            let secret = format!("whsec_{}", STANDARD.encode(&key));
            let sig = sign_standard_webhook(&key, &id, ts, &body);
            prop_assert_eq!(verify_standard_webhook(Some(&id), Some(&ts.to_string()), Some(&sig), &body, &[secret], ts, 0), Ok(()));
            let h = sign_hmac_sha256(&key, &body, Encoding::Base64, Some("sha256="), None);
            prop_assert_eq!(verify_hmac_sha256(Some(&h), &body, std::slice::from_ref(&key), Encoding::Base64, Some("sha256="), None), Ok(()));
        }
    }
}
