//! Sender of Vermieterhelden leads, signed per Standard Webhooks (the WordPress lead plugin).
//!
//! Headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"`, keyed with the base64-decoded
//! secret after `whsec_`). [`SendOptions`] spoil one aspect at a time so tests can show the
//! gateway rejects each.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// How to (mis)behave when sending.
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// `webhook-id`; a random `msg_…` when `None`.
    pub message_id: Option<String>,
    /// Seconds added to the current time for `webhook-timestamp` (e.g. -600 for a stale message).
    pub timestamp_offset_secs: i64,
    /// Exact timestamp to send (overrides the offset).
    pub timestamp: Option<i64>,
    /// Change the body after signing.
    pub tamper_body: bool,
    /// Sign with this secret instead of the real one.
    pub wrong_secret: Option<String>,
    /// Extra entries put before the real one in `webhook-signature` (key rotation).
    pub extra_signatures: Vec<String>,
    /// Leave out `webhook-signature`.
    pub omit_signature: bool,
    /// Leave out `webhook-timestamp`.
    pub omit_timestamp: bool,
}

/// What was sent, for assertions.
#[derive(Clone, Debug)]
pub struct SentLead {
    pub message_id: String,
    pub timestamp: i64,
    pub signature_header: String,
    pub body: Vec<u8>,
}

/// Why signing could not happen.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("secret is not base64 after the whsec_ prefix")]
    BadSecret,
}

/// `v1,<base64(HMAC-SHA256(key = b64decode(secret without "whsec_"), "{id}.{ts}.{body}"))>`.
pub fn sign(
    secret: &str,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| SignError::BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SignError::BadSecret)?;
    mac.update(format!("{message_id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// A fresh test secret in `whsec_` form.
pub fn generate_secret() -> String {
    format!("whsec_{}", B64.encode(rand::random::<[u8; 24]>()))
}

/// Sends `lead` (the plugin's JSON) to `url`, correctly signed.
pub async fn send_lead(
    url: &str,
    secret_whsec: &str,
    lead: &Value,
) -> Result<reqwest::Response, Box<dyn std::error::Error + Send + Sync>> {
    send_lead_with(url, secret_whsec, lead, &SendOptions::default())
        .await
        .map(|(r, _)| r)
}

/// Sends `lead` with the given deviations; returns the response and what was sent.
pub async fn send_lead_with(
    url: &str,
    secret_whsec: &str,
    lead: &Value,
    options: &SendOptions,
) -> Result<(reqwest::Response, SentLead), Box<dyn std::error::Error + Send + Sync>> {
    let message_id = options
        .message_id
        .clone()
        .unwrap_or_else(|| format!("msg_{}", crate::server::random_string(24)));
    let timestamp = options
        .timestamp
        .unwrap_or_else(|| chrono::Utc::now().timestamp() + options.timestamp_offset_secs);
    let mut body = serde_json::to_vec(lead)?;
    let signing_secret = options.wrong_secret.as_deref().unwrap_or(secret_whsec);
    let real = sign(signing_secret, &message_id, timestamp, &body)?;
    let mut signatures = options.extra_signatures.clone();
    signatures.push(real);
    let signature_header = signatures.join(" ");
    if options.tamper_body {
        body.extend_from_slice(b" ");
    }
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &message_id);
    if !options.omit_timestamp {
        request = request.header("webhook-timestamp", timestamp.to_string());
    }
    if !options.omit_signature {
        request = request.header("webhook-signature", &signature_header);
    }
    let response = request.body(body.clone()).send().await?;
    Ok((
        response,
        SentLead {
            message_id,
            timestamp,
            signature_header,
            body,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() -> Result<(), SignError> {
        // Vector from the Standard Webhooks specification's reference implementations.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )?;
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        Ok(())
    }
}
