//! Sender verification: maps the configured scheme onto the constant-time
//! checks of `bitbylaw_core::webhook` (pure; no host calls).

use bitbylaw_core::webhook::{
    verify_espocrm_webhook, verify_hmac_sha256, verify_shared_token, verify_standard_webhook,
    SignatureError,
};

use crate::config::Verifier;

/// Header names of the EspoCRM and Standard Webhooks schemes (lowercase).
pub const H_SIGNATURE: &str = "signature";
pub const H_X_SIGNATURE: &str = "x-signature";
pub const H_WEBHOOK_ID: &str = "webhook-id";
pub const H_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const H_WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The credential-carrying values of one request, captured in
/// `on_request_headers` (non-UTF-8 bytes replaced by U+FFFD, which no
/// parser accepts, so such headers fail as malformed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    pub signature: Option<String>,
    pub x_signature: Option<String>,
    pub webhook_id: Option<String>,
    pub webhook_timestamp: Option<String>,
    pub webhook_signature: Option<String>,
    /// The configured hmac-sha256 signature header.
    pub hmac_signature: Option<String>,
    /// The configured hmac-sha256 timestamp header.
    pub hmac_timestamp: Option<String>,
    /// The shared token (header value or percent-decoded query value).
    pub token: Option<String>,
}

/// Verifies the presented credentials over `body` at time `now_unix`.
/// Returns the authenticated key id where the scheme has one (EspoCRM: the
/// webhook whose secret signed the body), for [`Verifier::may_deliver`].
pub fn verify<'v>(
    verifier: &'v Verifier,
    presented: &Presented,
    body: &[u8],
    now_unix: u64,
    tolerance_secs: u64,
) -> Result<Option<&'v str>, SignatureError> {
    match verifier {
        Verifier::EspoCrm { credentials, .. } => verify_espocrm_webhook(
            presented.signature.as_deref(),
            presented.x_signature.as_deref(),
            body,
            credentials,
        )
        .map(Some),
        Verifier::StandardWebhooks { secrets } => verify_standard_webhook(
            presented.webhook_id.as_deref(),
            presented.webhook_timestamp.as_deref(),
            presented.webhook_signature.as_deref(),
            body,
            &secrets.0,
            now_unix,
            tolerance_secs,
        )
        .map(|()| None),
        Verifier::Hmac {
            encoding,
            prefix,
            timestamp_header,
            keys,
            ..
        } => verify_hmac_sha256(
            presented.hmac_signature.as_deref(),
            body,
            &keys.0,
            *encoding,
            prefix.as_deref(),
            timestamp_header.as_ref().map(|_| {
                (
                    presented.hmac_timestamp.as_deref().unwrap_or(""),
                    now_unix,
                    tolerance_secs,
                )
            }),
        )
        .map(|()| None),
        Verifier::SharedToken { tokens, .. } => {
            verify_shared_token(presented.token.as_deref(), &tokens.0).map(|()| None)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{SecretKeys, Secrets, TokenSource};
    use bitbylaw_core::webhook::{sign_espocrm, sign_hmac_sha256, Encoding, EspoCrmCredential};

    #[test]
    fn dispatches_to_each_scheme() {
        let body = br#"[{"id":"a"}]"#;
        let espo = Verifier::EspoCrm {
            credentials: vec![EspoCrmCredential {
                webhook_id: "w".into(),
                secret: "s".into(),
            }],
            bindings: None,
        };
        let p = Presented {
            signature: Some(sign_espocrm("w", "s", body)),
            ..Default::default()
        };
        assert_eq!(verify(&espo, &p, body, 0, 300), Ok(Some("w")));
        assert_eq!(
            verify(&espo, &p, b"[]", 0, 300),
            Err(SignatureError::Mismatch)
        );

        let hmac = Verifier::Hmac {
            header: "x-sig".into(),
            encoding: Encoding::Hex,
            prefix: None,
            timestamp_header: Some("x-ts".into()),
            keys: SecretKeys(vec![b"k".to_vec()]),
        };
        let sig = sign_hmac_sha256(b"k", body, Encoding::Hex, None, Some("1000"));
        let mut p = Presented {
            hmac_signature: Some(sig),
            hmac_timestamp: Some("1000".into()),
            ..Default::default()
        };
        assert_eq!(verify(&hmac, &p, body, 1200, 300), Ok(None));
        assert_eq!(
            verify(&hmac, &p, body, 1301, 300),
            Err(SignatureError::StaleTimestamp)
        );
        p.hmac_timestamp = None;
        assert_eq!(
            verify(&hmac, &p, body, 1000, 300),
            Err(SignatureError::MissingHeader("timestamp"))
        );

        let tok = Verifier::SharedToken {
            source: TokenSource::Header("x-api-key".into()),
            tokens: Secrets(vec!["t1".into()]),
        };
        let p = Presented {
            token: Some("t1".into()),
            ..Default::default()
        };
        assert_eq!(verify(&tok, &p, b"", 0, 0), Ok(None));
        assert!(verify(&tok, &Presented::default(), b"", 0, 0).is_err());
    }
}
