//! 3CX Call Control API client (FACTS §4; 3CX's "Call Control API endpoints"): outbound calls
//! placed from an extension (`POST /callcontrol/{dn}/makecall`) and the state of the participant
//! that call created (`GET /callcontrol/{dn}/participants/{id}`).
//!
//! # Token
//!
//! 3CX issues bearer tokens for an API client (Admin console → Integrations → API, "3CX Call
//! Control API access") with `POST /connect/token` (form: `client_id`, `client_secret`,
//! `grant_type=client_credentials`) → `{access_token, expires_in, token_type}`. The token is
//! cached in the process and fetched again [`REFRESH_MARGIN`] before it expires; concurrent
//! requests wait for one fetch instead of each fetching (single flight under the cache's lock).
//! A 401 from the API drops the token it was sent with, fetches one new token and retries the
//! request once; a second 401 is [`ThreeCxError::Unauthorized`] — never a loop.
//!
//! # Errors
//!
//! [`ThreeCxError`] is what `POST /3cx/call` branches on to answer clearly: a busy extension,
//! a number 3CX will not dial, an unknown extension, credentials 3CX refuses, 429/5xx
//! (retryable, with `Retry-After`), and no answer at all (the call may or may not exist).
//! makecall reports refusals two ways — an HTTP error status, or a 2xx whose `finalstatus` is
//! not `Success` with a `reason` — and both are classified by [`classify`].
//!
//! Secrets: the client secret travels only in the token request's body and the token only in
//! the `Authorization` header; `Debug` of settings and tokens redacts them, and no error
//! carries a body of the token endpoint.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::debug;

use super::advoware::{parse_retry_after, HttpRequest, HttpResponse, HttpTransport, Method};
use crate::config::Secret;

/// A cached token is replaced this long before 3CX says it expires (3CX issues 60-minute tokens).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Errors of the Call Control client; no variant carries the client secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum ThreeCxError {
    /// The extension is on a call (or otherwise cannot take the call now).
    #[error("3CX: extension {dn} is busy ({reason})")]
    Busy { dn: String, reason: String },
    /// 3CX refused the destination (or the request) as invalid.
    #[error("3CX refused the call from {dn}: {reason} (status {status})")]
    Rejected {
        dn: String,
        status: u16,
        reason: String,
    },
    /// 404 on makecall / an extension 3CX does not know.
    #[error("3CX has no extension {dn}")]
    UnknownExtension { dn: String },
    /// 404 on a participant: the call ended (3CX removes participants when they hang up).
    #[error("3CX has no participant {id} on {dn}")]
    ParticipantGone { dn: String, id: u64 },
    /// 403: the API client may not control this extension.
    #[error("3CX: the API client may not control extension {dn}")]
    Forbidden { dn: String },
    /// The token endpoint refused our client id / secret.
    #[error("3CX token endpoint refused the client credentials (status {status})")]
    Credentials { status: u16 },
    /// 401 again right after a fresh token.
    #[error("3CX answered 401 on {path} even with a freshly issued token")]
    Unauthorized { path: String },
    /// 429 or 5xx: 3CX is overloaded or failing; nothing was placed.
    #[error("3CX unavailable on {path} (status {status}, retry after {retry_after:?})")]
    Unavailable {
        path: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer (connection refused, timeout, broken connection).
    #[error("transport error talking to 3CX ({path}): {message}")]
    Transport { path: String, message: String },
    /// A success answer we cannot read.
    #[error("unexpected 3CX answer on {path}: {message}")]
    Decode { path: String, message: String },
    /// Incomplete or invalid settings.
    #[error("3CX client configuration: {0}")]
    Config(String),
}

impl ThreeCxError {
    /// Whether the same request may simply be sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Validated settings (`[threecx]` `api_base_url`, `client_id`, `client_secret`).
#[derive(Clone)]
pub struct CallControlSettings {
    /// `https://ralup.my3cx.de` (no path; `/connect/token` and `/callcontrol/…` hang below it).
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub timeout: Duration,
}

impl fmt::Debug for CallControlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallControlSettings")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A participant as 3CX describes it (the fields we use; the rest is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub id: u64,
    /// `Dialing`, `Ringing`, `Connected`, …
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub dn: String,
    #[serde(default)]
    pub party_dn: Option<String>,
    #[serde(default)]
    pub callid: Option<u64>,
    #[serde(default)]
    pub legid: Option<u64>,
}

/// makecall's answer: `{finalstatus, reason, reasontext, result}`.
#[derive(Debug, Deserialize)]
struct CallControlResult {
    #[serde(default)]
    finalstatus: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reasontext: Option<String>,
    #[serde(default)]
    result: Option<Value>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

/// The Call Control client. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct CallControlClient {
    settings: Arc<CallControlSettings>,
    http: Arc<dyn HttpTransport>,
    token: Arc<Mutex<Option<CachedToken>>>,
}

impl fmt::Debug for CallControlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallControlClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn is_dn(dn: &str) -> bool {
    !dn.is_empty() && dn.len() <= 10 && dn.bytes().all(|b| b.is_ascii_digit())
}

impl CallControlClient {
    pub fn new(settings: CallControlSettings, http: Arc<dyn HttpTransport>) -> Self {
        Self {
            settings: Arc::new(settings),
            http,
            token: Arc::new(Mutex::new(None)),
        }
    }

    /// With the production transport (reqwest, the settings' timeout).
    pub fn with_reqwest(settings: CallControlSettings) -> Result<Self, ThreeCxError> {
        let http = super::http::ReqwestTransport::new(settings.timeout)
            .map_err(|e| ThreeCxError::Config(e.to_string()))?;
        Ok(Self::new(settings, Arc::new(http)))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_url.trim_end_matches('/'))
    }

    /// The cached token, or a new one; `stale` is a token the API just refused (dropped only if
    /// it is still the cached one, so a request that raced a refresh does not discard the new).
    async fn token(&self, stale: Option<&str>) -> Result<Secret, ThreeCxError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            let refused = stale.is_some_and(|s| s == t.value.expose());
            if !refused && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("client_secret", self.settings.client_secret.expose())
            .append_pair("grant_type", "client_credentials")
            .finish();
        let path = "/connect/token";
        let resp = self
            .http
            .send(HttpRequest {
                method: Method::Post,
                url: self.url(path),
                headers: vec![
                    (
                        "Content-Type".into(),
                        "application/x-www-form-urlencoded".into(),
                    ),
                    ("Accept".into(), "application/json".into()),
                ],
                body: Some(body.into_bytes()),
            })
            .await
            .map_err(|message| ThreeCxError::Transport {
                path: path.into(),
                message,
            })?;
        match resp.status {
            200..=299 => {}
            400 | 401 | 403 => {
                return Err(ThreeCxError::Credentials {
                    status: resp.status,
                })
            }
            status => return Err(unavailable(path, &resp, status)),
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&resp.body).map_err(|e| ThreeCxError::Decode {
                path: path.into(),
                message: e.to_string(),
            })?;
        if answer.access_token.is_empty() {
            return Err(ThreeCxError::Decode {
                path: path.into(),
                message: "empty access_token".into(),
            });
        }
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        // A short-lived token is refreshed after 90 % of its life, a normal one a minute early.
        let margin = REFRESH_MARGIN.min(lifetime / 10);
        debug!(
            expires_in_secs = lifetime.as_secs(),
            "3CX Call Control token issued"
        );
        let value = Secret::new(answer.access_token);
        *cached = Some(CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(value)
    }

    /// Sends an authorised request; on a 401 one new token and one retry.
    async fn authorised(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, ThreeCxError> {
        let mut stale: Option<Secret> = None;
        for attempt in 0..2 {
            let token = self.token(stale.as_ref().map(Secret::expose)).await?;
            let headers = super::http::bearer_json_headers(token.expose(), body.is_some());
            let resp = self
                .http
                .send(HttpRequest {
                    method,
                    url: self.url(path),
                    headers,
                    body: body.clone(),
                })
                .await
                .map_err(|message| ThreeCxError::Transport {
                    path: path.to_owned(),
                    message,
                })?;
            if resp.status != 401 {
                return Ok(resp);
            }
            debug!(attempt, path, "3CX refused the token; fetching a new one");
            stale = Some(token);
        }
        Err(ThreeCxError::Unauthorized {
            path: path.to_owned(),
        })
    }

    /// `POST /callcontrol/{dn}/makecall {destination, timeout?}`: 3CX rings extension `dn` and,
    /// when it answers, dials `destination`. The participant is the extension's leg.
    pub async fn make_call(
        &self,
        dn: &str,
        destination: &str,
        ring_timeout_secs: Option<u32>,
    ) -> Result<Participant, ThreeCxError> {
        if !is_dn(dn) {
            return Err(ThreeCxError::UnknownExtension { dn: dn.to_owned() });
        }
        let path = format!("/callcontrol/{dn}/makecall");
        let mut body = serde_json::json!({ "destination": destination });
        if let Some(t) = ring_timeout_secs {
            body["timeout"] = t.into();
        }
        let resp = self
            .authorised(Method::Post, &path, Some(body.to_string().into_bytes()))
            .await?;
        classify(dn, &path, &resp)
    }

    /// `GET /callcontrol/{dn}/participants/{id}`: the participant's current state; a 404 means
    /// 3CX removed it (the call ended).
    pub async fn participant(&self, dn: &str, id: u64) -> Result<Participant, ThreeCxError> {
        if !is_dn(dn) {
            return Err(ThreeCxError::UnknownExtension { dn: dn.to_owned() });
        }
        let path = format!("/callcontrol/{dn}/participants/{id}");
        let resp = self.authorised(Method::Get, &path, None).await?;
        match resp.status {
            200..=299 => serde_json::from_slice(&resp.body).map_err(|e| ThreeCxError::Decode {
                path,
                message: e.to_string(),
            }),
            404 => Err(ThreeCxError::ParticipantGone {
                dn: dn.to_owned(),
                id,
            }),
            403 => Err(ThreeCxError::Forbidden { dn: dn.to_owned() }),
            status if status == 429 || status >= 500 => Err(unavailable(&path, &resp, status)),
            status => Err(ThreeCxError::Rejected {
                dn: dn.to_owned(),
                status,
                reason: reason_of(&resp.body),
            }),
        }
    }
}

fn unavailable(path: &str, resp: &HttpResponse, status: u16) -> ThreeCxError {
    ThreeCxError::Unavailable {
        path: path.to_owned(),
        status,
        retry_after: resp.retry_after.as_deref().and_then(parse_retry_after),
    }
}

/// 3CX's reason for a refusal: `reasontext`, else `reason`, else the start of a text body.
fn reason_of(body: &[u8]) -> String {
    if let Ok(r) = serde_json::from_slice::<CallControlResult>(body) {
        if let Some(t) = r
            .reasontext
            .filter(|t| !t.is_empty())
            .or(r.reason.filter(|t| !t.is_empty()))
        {
            return t.chars().take(200).collect();
        }
    }
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// True for 3CX's busy reasons (`PhoneBusy`, `Busy`, `UserBusy`, …).
fn is_busy(reason: &str) -> bool {
    reason.to_ascii_lowercase().contains("busy")
}

/// A refused makecall: busy, or rejected with 3CX's reason.
fn refusal(dn: &str, status: u16, busy: bool, reason: String) -> ThreeCxError {
    let dn = dn.to_owned();
    if busy {
        ThreeCxError::Busy { dn, reason }
    } else {
        ThreeCxError::Rejected { dn, status, reason }
    }
}

/// Maps makecall's answer: HTTP status first, then `finalstatus`/`reason` of a 2xx.
pub fn classify(dn: &str, path: &str, resp: &HttpResponse) -> Result<Participant, ThreeCxError> {
    let dn_owned = || dn.to_owned();
    match resp.status {
        200..=299 => {}
        404 => return Err(ThreeCxError::UnknownExtension { dn: dn_owned() }),
        403 => return Err(ThreeCxError::Forbidden { dn: dn_owned() }),
        status if status == 429 || status >= 500 => {
            return Err(unavailable(path, resp, status));
        }
        status => {
            let reason = reason_of(&resp.body);
            return Err(refusal(
                dn,
                status,
                status == 409 || is_busy(&reason),
                reason,
            ));
        }
    }
    let answer: CallControlResult =
        serde_json::from_slice(&resp.body).map_err(|e| ThreeCxError::Decode {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let success = answer
        .finalstatus
        .as_deref()
        .is_none_or(|s| s.eq_ignore_ascii_case("success"));
    if !success {
        let reason = answer
            .reasontext
            .clone()
            .filter(|t| !t.is_empty())
            .or(answer.reason.clone())
            .unwrap_or_else(|| "Failure".into());
        let busy = answer.reason.as_deref().is_some_and(is_busy) || is_busy(&reason);
        return Err(refusal(dn, resp.status, busy, reason));
    }
    let result = answer.result.ok_or_else(|| ThreeCxError::Decode {
        path: path.to_owned(),
        message: "makecall succeeded without a result".into(),
    })?;
    serde_json::from_value(result).map_err(|e| ThreeCxError::Decode {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn resp(status: u16, body: Value) -> HttpResponse {
        HttpResponse {
            status,
            retry_after: Some("7".into()),
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn makecall_answers_are_classified() {
        let ok = resp(
            200,
            serde_json::json!({"finalstatus": "Success", "reason": "None", "result": {"id": 5, "status": "Dialing", "dn": "201", "callid": 9}}),
        );
        let p = classify("201", "/x", &ok).unwrap();
        assert_eq!((p.id, p.status.as_str(), p.callid), (5, "Dialing", Some(9)));
        let busy = resp(
            200,
            serde_json::json!({"finalstatus": "Failure", "reason": "PhoneBusy", "reasontext": "Extension is busy"}),
        );
        assert!(matches!(
            classify("201", "/x", &busy),
            Err(ThreeCxError::Busy { .. })
        ));
        let invalid = resp(
            400,
            serde_json::json!({"reasontext": "Invalid destination"}),
        );
        assert!(matches!(
            classify("201", "/x", &invalid),
            Err(ThreeCxError::Rejected { status: 400, .. })
        ));
        assert!(matches!(
            classify("201", "/x", &resp(404, Value::Null)),
            Err(ThreeCxError::UnknownExtension { .. })
        ));
        let e = classify("201", "/x", &resp(503, Value::Null)).unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(classify("201", "/x", &resp(429, Value::Null))
            .unwrap_err()
            .is_retryable());
    }

    #[test]
    fn settings_debug_hides_the_secret() {
        let s = CallControlSettings {
            base_url: "https://pbx".into(),
            client_id: "901".into(),
            client_secret: Secret::new("very-secret-value"),
            timeout: Duration::from_secs(5),
        };
        let text = format!("{s:?}");
        assert!(!text.contains("very-secret-value"), "{text}");
    }
}
