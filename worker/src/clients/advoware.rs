//! Advoware REST client (FACTS §1): bearer token minted with the shared HMAC code of
//! `bitbylaw-core`, cached in Redis so all worker instances share one token, refreshed once on a
//! 401; errors classified so the queue knows whether and when to retry.
//!
//! # Token life cycle
//!
//! 1. A process-local copy (with its own expiry) saves a Redis round trip per call.
//! 2. Else the Redis key (default `bbl:advoware:token:{user}`) — written by whichever instance
//!    minted last, with `EX` = token lifetime − refresh margin, so it vanishes before Advoware
//!    stops accepting it.
//! 3. Else mint: `POST {security_gateway}api/v1/Token` with a fresh UUID v4 nonce, the system
//!    clock's timestamp and `HMAC512Signature` from [`bitbylaw_core::advoware`].
//!
//! A resource answering 401 means the token was revoked or expired early: the client deletes the
//! cached token *only if it is still the one it used* (a Lua compare-and-delete, so it never
//! throws away a token another instance just minted), obtains a token again and retries the call
//! exactly once. Two instances may refresh concurrently (one extra token, harmless); a single
//! call never loops.
//!
//! # HTTP transport
//!
//! The client talks HTTP through the small [`HttpTransport`] trait rather than a concrete client,
//! so unit tests run without a network; production and the integration tests use
//! [`super::http::ReqwestTransport`] (rustls, system roots).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitbylaw_core::advoware as core_aw;
use futures::future::BoxFuture;
use serde_json::Value;
use tracing::{debug, info_span, warn, Instrument as _};

use crate::config::{AdvowareSettings, Secret};

/// How many characters of an error body are kept in [`AdvowareError::Upstream`].
const BODY_EXCERPT_CHARS: usize = 300;

/// Errors of the Advoware client. A concrete enum: the queue branches on
/// [`AdvowareError::is_retryable`] and [`AdvowareError::retry_after`], handlers on the variants.
/// No variant ever carries the password, the API key or a token.
#[derive(Debug, thiserror::Error)]
pub enum AdvowareError {
    /// A resource still answered 401 after one token refresh.
    #[error("Advoware denied {path} (401) even with a freshly minted token")]
    Unauthorized { path: String },
    /// 429 or 503: Advoware asks us to slow down.
    #[error("Advoware rate limited {path} (status {status}, retry after {retry_after:?})")]
    RateLimited {
        path: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Any other non-success status; 5xx (and 408) are retryable, other 4xx are permanent.
    #[error("Advoware answered {status} on {path}: {body}")]
    Upstream {
        path: String,
        status: u16,
        /// The first characters of the answer's body.
        body: String,
    },
    /// Connection refused, timeout, broken connection…
    #[error("transport error talking to Advoware ({path}): {message}")]
    Transport { path: String, message: String },
    /// The token endpoint rejected our credentials or signature, or its answer is unusable.
    /// Permanent: a configuration problem, retrying cannot help.
    #[error("Advoware token could not be obtained: {0}")]
    Token(String),
    /// The Advoware settings are incomplete or invalid (missing URL, API key not base64…).
    #[error("Advoware client configuration: {0}")]
    Config(String),
    /// The token cache in Redis failed.
    #[error("Redis (Advoware token cache): {0}")]
    Redis(String),
    /// A success answer whose body is not the JSON we expect.
    #[error("unexpected Advoware answer on {path}: {message}")]
    Decode { path: String, message: String },
    /// Advoware has no such resource or method where a configured path points (405, or a 404
    /// where absence cannot be meant): the path setting does not fit this Advoware. Permanent:
    /// a configuration error, never evidence about the appointment.
    #[error(
        "Advoware answered {status} to {method} {path}: the configured path does not fit this \
         Advoware; check advoware.paths.{setting} / ADVOWARE_PATH_{setting_upper} (README, \
         \"Uncertain facts\")"
    )]
    EndpointMismatch {
        /// The path setting (`termin_get`, …).
        setting: &'static str,
        /// The same in upper case, for the environment variable's name.
        setting_upper: String,
        method: &'static str,
        path: String,
        status: u16,
    },
}

impl AdvowareError {
    /// Whether the queue should try the job again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport { .. } | Self::Redis(_) => true,
            Self::Upstream { status, .. } => *status >= 500 || *status == 408,
            Self::Unauthorized { .. }
            | Self::Token(_)
            | Self::Config(_)
            | Self::Decode { .. }
            | Self::EndpointMismatch { .. } => false,
        }
    }

    /// The delay Advoware asked for (`Retry-After`), if any; the queue bounds it by its policy.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status Advoware answered, if the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::RateLimited { status, .. }
            | Self::Upstream { status, .. }
            | Self::EndpointMismatch { status, .. } => Some(*status),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

/// HTTP methods the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }
}

/// One request for the transport. `Debug` redacts the `Authorization` header.
#[derive(Clone)]
pub struct HttpRequest {
    pub method: Method,
    /// Absolute URL, query included.
    pub url: String,
    /// Header name/value pairs (the client sets `Authorization`, `Accept`, `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// JSON body bytes, if any. For the token request it contains the password.
    pub body: Option<Vec<u8>>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("authorization") {
                    (k.as_str(), "<redacted>")
                } else {
                    (k.as_str(), v.as_str())
                }
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field(
                "body",
                &self.body.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .finish()
    }
}

/// The parts of an answer the client needs.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The raw `Retry-After` header, if sent.
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// Sends one HTTP request. Implemented by the production HTTP client and by test doubles.
/// The error string must not contain secrets (URLs and transport messages do not).
pub trait HttpTransport: Send + Sync {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>>;
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Every Advoware path and query parameter name the worker uses, as templates relative to the
/// API base (the token path: relative to the security gateway). FACTS §1 marks the appointment
/// and employee paths as uncertain, so they are configuration (`[advoware.paths]`,
/// `ADVOWARE_PATH_*`), validated by `config check` ([`Paths::problems`]).
///
/// A template is `path[?name=value&…]`; `{placeholder}`s are replaced by percent-encoded values
/// in the path and by the value in the query (which is then encoded). The defaults follow FACTS
/// §1 where it says something: one appointment is read with the query parameter `frnr` on the
/// appointment list, not with a path `Termine/{frNr}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `POST`: the token (no placeholders).
    pub token: String,
    /// `GET`: all employees (no placeholders).
    pub mitarbeiter: String,
    /// `GET`: an employee's appointments overlapping a window; `{kuerzel}`, `{from}`, `{to}`
    /// (dates `YYYY-MM-DD`) required.
    pub termine_list: String,
    /// `GET`: one appointment; `{frnr}` required. With `{frnr}` in the query the answer may be
    /// a list (the matching entry is used, none = deleted); with `{frnr}` in the path a 404
    /// means deleted.
    pub termin_get: String,
    /// `POST`: create an appointment (no placeholders).
    pub termin_create: String,
    /// `PUT`: update an appointment; `{frnr}` required.
    pub termin_update: String,
    /// `DELETE`: delete an appointment; `{frnr}` required.
    pub termin_delete: String,
    /// `GET`: one Beteiligter; `{betnr}` required. A 404 means deleted in Advoware (only with
    /// `{betnr}` in the path; a 404 when it is only in the query is a configuration error).
    pub beteiligte_get: String,
    /// `POST`: create a Beteiligter (no placeholders); the answer carries the new `betNr`.
    pub beteiligte_create: String,
    /// `PUT`: replace a Beteiligter (Advoware's PUT replaces the record); `{betnr}` required.
    pub beteiligte_update: String,
    /// `POST`: add a Kommunikation entry to a Beteiligter; `{betnr}` required.
    pub kommunikation_create: String,
    /// `PUT`: change one (`kommKz` is read-only; DELETE answers 403); `{betnr}`, `{id}`.
    pub kommunikation_update: String,
    /// `POST`: add an address to a Beteiligter; `{betnr}` required (uncertain, like all
    /// Adressen paths).
    pub adressen_create: String,
    /// `PUT`: change an address (only `strasse`, `plz`, `ort`, `anschrift`); `{betnr}`, `{id}`.
    pub adressen_update: String,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            token: "api/v1/Token".into(),
            mitarbeiter: "api/v1/advonet/Mitarbeiter".into(),
            termine_list: "api/v1/advonet/Termine?kuerzel={kuerzel}&from={from}&to={to}".into(),
            termin_get: "api/v1/advonet/Termine?frnr={frnr}".into(),
            termin_create: "api/v1/advonet/Termine".into(),
            termin_update: "api/v1/advonet/Termine/{frnr}".into(),
            termin_delete: "api/v1/advonet/Termine/{frnr}".into(),
            beteiligte_get: "api/v1/advonet/Beteiligte/{betnr}".into(),
            beteiligte_create: "api/v1/advonet/Beteiligte".into(),
            beteiligte_update: "api/v1/advonet/Beteiligte/{betnr}".into(),
            kommunikation_create: "api/v1/advonet/Beteiligte/{betnr}/Kommunikationen".into(),
            kommunikation_update: "api/v1/advonet/Beteiligte/{betnr}/Kommunikationen/{id}".into(),
            adressen_create: "api/v1/advonet/Beteiligte/{betnr}/Adressen".into(),
            adressen_update: "api/v1/advonet/Beteiligte/{betnr}/Adressen/{id}".into(),
        }
    }
}

impl Paths {
    /// Every setting (`advoware.paths.<name>`, `ADVOWARE_PATH_<NAME>`) with the placeholders it
    /// must have (it may use no others), in the order of [`Paths::templates`].
    pub const SETTINGS: [(&'static str, &'static [&'static str]); 14] = [
        ("token", &[]),
        ("mitarbeiter", &[]),
        ("termine_list", &["kuerzel", "from", "to"]),
        ("termin_get", &["frnr"]),
        ("termin_create", &[]),
        ("termin_update", &["frnr"]),
        ("termin_delete", &["frnr"]),
        ("beteiligte_get", &["betnr"]),
        ("beteiligte_create", &[]),
        ("beteiligte_update", &["betnr"]),
        ("kommunikation_create", &["betnr"]),
        ("kommunikation_update", &["betnr", "id"]),
        ("adressen_create", &["betnr"]),
        ("adressen_update", &["betnr", "id"]),
    ];

    /// The templates, in the order of [`Paths::SETTINGS`].
    fn templates(&self) -> [&String; 14] {
        [
            &self.token,
            &self.mitarbeiter,
            &self.termine_list,
            &self.termin_get,
            &self.termin_create,
            &self.termin_update,
            &self.termin_delete,
            &self.beteiligte_get,
            &self.beteiligte_create,
            &self.beteiligte_update,
            &self.kommunikation_create,
            &self.kommunikation_update,
            &self.adressen_create,
            &self.adressen_update,
        ]
    }

    /// The template of setting `name`, for the config loader (`None`: no such setting).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut String> {
        let index = Self::SETTINGS.iter().position(|(n, _)| *n == name)?;
        let slots = [
            &mut self.token,
            &mut self.mitarbeiter,
            &mut self.termine_list,
            &mut self.termin_get,
            &mut self.termin_create,
            &mut self.termin_update,
            &mut self.termin_delete,
            &mut self.beteiligte_get,
            &mut self.beteiligte_create,
            &mut self.beteiligte_update,
            &mut self.kommunikation_create,
            &mut self.kommunikation_update,
            &mut self.adressen_create,
            &mut self.adressen_update,
        ];
        slots.into_iter().nth(index)
    }

    /// Every problem of every template, each naming its setting: not relative, a dot segment,
    /// characters that do not belong in a URL, a malformed query, an unknown or missing
    /// placeholder.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ((name, required), template) in Self::SETTINGS.iter().zip(self.templates()) {
            for p in template_problems(template, required) {
                out.push(format!(
                    "advoware.paths.{name} / ADVOWARE_PATH_{}: {p} (in {template:?})",
                    name.to_ascii_uppercase(),
                ));
            }
        }
        out
    }
}

/// The problems of one template (see [`Paths::problems`]); also used for other path settings.
pub fn template_problems(template: &str, required: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let t = template.trim();
    if t.is_empty() {
        out.push("must not be empty".to_owned());
        return out;
    }
    if t.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#' || c == '\\')
    {
        out.push("must not contain whitespace, control characters, '#' or '\\'".to_owned());
    }
    let (path, query) = t.split_once('?').unwrap_or((t, ""));
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        out.push("needs a path before the query".to_owned());
    }
    if t.starts_with("//")
        || path
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        out.push("must be a path relative to the base URL, not a URL".to_owned());
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        out.push("must not contain '.' or '..' segments".to_owned());
    }
    for piece in query.split('&').filter(|_| t.contains('?')) {
        match piece.split_once('=') {
            Some((name, _)) if !name.is_empty() && !name.contains('{') => {}
            _ => out.push(format!("query part {piece:?} is not name=value")),
        }
    }
    match placeholders(t) {
        Err(e) => out.push(e),
        Ok(found) => {
            for name in &found {
                if !required.contains(&name.as_str()) {
                    out.push(if required.is_empty() {
                        format!("takes no placeholders, found {{{name}}}")
                    } else {
                        format!(
                            "unknown placeholder {{{name}}} (allowed: {})",
                            braced(required)
                        )
                    });
                }
            }
            for name in required {
                if !found.iter().any(|f| f == name) {
                    out.push(format!("must contain {{{name}}}"));
                }
            }
        }
    }
    out
}

fn braced(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `{name}`s of a template, in order; unbalanced braces are an error.
fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("unbalanced '}'".into());
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unbalanced '{'")?;
        let name = &after[..close];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(format!("bad placeholder {{{name}}}"));
        }
        found.push(name.to_owned());
        rest = &after[close + 1..];
    }
    Ok(found)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for values put into a path).
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A template with its values filled in: the path (values encoded) and the query pairs (values
/// raw; [`join`] encodes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Whether a placeholder sits in the path (for `termin_get`: a 404 then means "deleted").
    pub placeholder_in_path: bool,
}

/// Fills `template` with `values` (`("frnr", "5")`, …). Templates are validated at start-up,
/// so an unknown placeholder cannot occur; it would be left as is.
pub fn expand(template: &str, values: &[(&str, &str)]) -> Expanded {
    let fill = |text: &str, encode: bool| {
        values.iter().fold(text.to_owned(), |acc, (name, value)| {
            let value = if encode {
                encode_component(value)
            } else {
                (*value).to_owned()
            };
            acc.replace(&format!("{{{name}}}"), &value)
        })
    };
    let template = template.trim();
    let (path, query) = template.split_once('?').unwrap_or((template, ""));
    Expanded {
        path: fill(path, true),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), fill(v, false))
            })
            .collect(),
        placeholder_in_path: path.contains('{'),
    }
}

/// Token caching knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Redis key of the shared token. Default `bbl:advoware:token:{user}`
    /// (see [`default_token_key`], which takes it from `crate::keys`).
    pub redis_key: String,
    /// Upper bound of the cache time when Advoware names no lifetime (the seeds cache 53–55 min).
    pub max_lifetime: Duration,
    /// Stop using a token this long before it expires.
    pub refresh_margin: Duration,
}

/// `bbl:advoware:token:{user}` — the default Redis key of the shared token.
pub fn default_token_key(user: &str) -> String {
    crate::keys::advoware_token(user)
}

/// Everything the client needs, validated: built from the worker's [`AdvowareSettings`].
#[derive(Clone)]
pub struct ClientSettings {
    /// API base with trailing slash.
    pub api_base_url: url::Url,
    /// Security gateway base with trailing slash.
    pub security_gateway_url: url::Url,
    /// The API user; the same type the `advoware_auth` filter signs with (`Debug` redacts).
    pub credentials: core_aw::Credentials,
    pub paths: Paths,
    pub token: TokenPolicy,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("api_base_url", &self.api_base_url.as_str())
            .field("security_gateway_url", &self.security_gateway_url.as_str())
            .field("credentials", &self.credentials)
            .field("paths", &self.paths)
            .field("token", &self.token)
            .finish()
    }
}

impl ClientSettings {
    /// Validates the worker's settings. Role defaults to 2 and Product to 64 (vendor example);
    /// everything else is required. The API key must be base64.
    pub fn from_settings(s: &AdvowareSettings) -> Result<Self, AdvowareError> {
        fn req<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, AdvowareError> {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| AdvowareError::Config(format!("{name} is not set")))
        }
        let api_key = s
            .api_key
            .as_ref()
            .ok_or_else(|| AdvowareError::Config("api_key is not set".into()))?;
        // The core error names only the kind of problem, never the key.
        let key = core_aw::decode_api_key(api_key.expose())
            .map_err(|e| AdvowareError::Config(format!("api_key: {e}")))?;
        let user = req(&s.user, "user")?.to_owned();
        let problems = s.paths.problems();
        if !problems.is_empty() {
            return Err(AdvowareError::Config(problems.join("; ")));
        }
        Ok(Self {
            api_base_url: base_url(req(&s.api_base_url, "api_base_url")?, "api_base_url")?,
            security_gateway_url: base_url(
                req(&s.security_gateway_url, "security_gateway_url")?,
                "security_gateway_url",
            )?,
            paths: s.paths.clone(),
            token: TokenPolicy {
                redis_key: default_token_key(&user),
                max_lifetime: Duration::from_secs(55 * 60),
                refresh_margin: Duration::from_secs(120),
            },
            credentials: core_aw::Credentials {
                kanzlei: req(&s.kanzlei, "kanzlei")?.to_owned(),
                database: req(&s.database, "database")?.to_owned(),
                role: s.role.unwrap_or(2),
                product: s.product.unwrap_or(64),
                app_id: req(&s.app_id, "app_id")?.to_owned(),
                password: s
                    .password
                    .as_ref()
                    .filter(|p| !p.is_empty())
                    .map(|p| p.expose().to_owned())
                    .ok_or_else(|| AdvowareError::Config("password is not set".into()))?,
                api_key: key,
                user,
            },
        })
    }
}

/// Parses a base URL and gives it a trailing slash, so relative paths join below it.
fn base_url(raw: &str, name: &str) -> Result<url::Url, AdvowareError> {
    let with_slash = if raw.ends_with('/') {
        raw.to_owned()
    } else {
        format!("{raw}/")
    };
    url::Url::parse(&with_slash)
        .map_err(|e| AdvowareError::Config(format!("{name} is not a URL: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct LocalToken {
    token: Secret,
    valid_until: Instant,
}

/// The Advoware REST client. Cheap to clone (shared state behind `Arc`s); `C` is any async Redis
/// connection (`ConnectionManager` in the worker, `MultiplexedConnection` in tests).
#[derive(Clone)]
pub struct AdvowareClient<C> {
    settings: Arc<ClientSettings>,
    redis: C,
    http: Arc<dyn HttpTransport>,
    local: Arc<Mutex<Option<LocalToken>>>,
    /// Single flight: concurrent calls of this process wait for one token lookup or mint
    /// instead of each logging in (several employee syncs start at once).
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl<C> fmt::Debug for AdvowareClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdvowareClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Deletes the key only if it still holds the token we used (ARGV[1]).
const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl<C> AdvowareClient<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    pub fn new(settings: ClientSettings, redis: C, http: Arc<dyn HttpTransport>) -> Self {
        Self {
            settings: Arc::new(settings),
            redis,
            http,
            local: Arc::new(Mutex::new(None)),
            fetching: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    // ----- generic calls ---------------------------------------------------------------------

    /// `GET {api}{path}?query` → JSON.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, AdvowareError> {
        let resp = self.call(Method::Get, path, query, None).await?;
        decode_json(path, &resp.body)
    }

    /// `POST {api}{path}` with a JSON body → JSON answer (`null` for an empty body).
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, AdvowareError> {
        let resp = self.call(Method::Post, path, &[], Some(body)).await?;
        decode_json(path, &resp.body)
    }

    /// `PUT {api}{path}` with a JSON body → JSON answer (`null` for an empty body).
    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Value, AdvowareError> {
        let resp = self.call(Method::Put, path, &[], Some(body)).await?;
        decode_json(path, &resp.body)
    }

    /// `DELETE {api}{path}`; any 2xx is success.
    pub async fn delete(&self, path: &str) -> Result<(), AdvowareError> {
        self.call(Method::Delete, path, &[], None).await.map(|_| ())
    }

    /// `method` on an [`expand`]ed template (path and query) with an optional JSON body → JSON
    /// answer (`null` for an empty body). For callers with their own path settings
    /// (`[bankverbindungen.paths]`), which classify 404/405 themselves.
    pub async fn send_expanded(
        &self,
        method: Method,
        e: &Expanded,
        body: Option<&Value>,
    ) -> Result<Value, AdvowareError> {
        let resp = self
            .call(method, &e.path, &query_refs(&e.query), body)
            .await?;
        decode_json(&e.path, &resp.body)
    }

    // ----- typed helpers ---------------------------------------------------------------------

    /// All employees (`Mitarbeiter`).
    pub async fn list_mitarbeiter(&self) -> Result<Vec<Value>, AdvowareError> {
        let e = expand(&self.settings.paths.mitarbeiter, &[]);
        let value = self
            .get_expanded(&e)
            .await
            .map_err(|err| mismatch_on_405("mitarbeiter", Method::Get, err))?;
        expect_array(&e.path, value)
    }

    /// Appointments of `kuerzel` overlapping `[from, to]` (dates).
    pub async fn list_termine(
        &self,
        kuerzel: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<Value>, AdvowareError> {
        let from = from.format("%Y-%m-%d").to_string();
        let to = to.format("%Y-%m-%d").to_string();
        let e = expand(
            &self.settings.paths.termine_list,
            &[("kuerzel", kuerzel), ("from", &from), ("to", &to)],
        );
        let value = self
            .get_expanded(&e)
            .await
            .map_err(|err| mismatch_on_405("termine_list", Method::Get, err))?;
        expect_array(&e.path, value)
    }

    /// One appointment (`None`: it does not exist), read as `termin_get` says (FACTS §1: the
    /// query parameter `frnr`). A list answer is searched for the entry with this `frNr`.
    /// A 405 — or a 404 when `{frnr}` is only in the query, where a missing appointment is an
    /// empty list — is [`AdvowareError::EndpointMismatch`], never "deleted".
    pub async fn get_termin(&self, fr_nr: i64) -> Result<Option<Value>, AdvowareError> {
        let n = fr_nr.to_string();
        let e = expand(&self.settings.paths.termin_get, &[("frnr", &n)]);
        let value = match self.get_expanded(&e).await {
            Ok(v) => v,
            Err(err) if err.status() == Some(404) && e.placeholder_in_path => return Ok(None),
            Err(err) if matches!(err.status(), Some(404 | 405)) => {
                return Err(mismatch("termin_get", Method::Get, err))
            }
            Err(err) => return Err(err),
        };
        let is_it = |t: &Value| t.get("frNr").and_then(Value::as_i64) == Some(fr_nr);
        Ok(match value {
            Value::Null => None,
            Value::Array(items) => items.into_iter().find(is_it),
            other => Some(other),
        })
    }

    /// Creates an appointment; the answer carries the new `frNr`.
    pub async fn create_termin(&self, termin: &Value) -> Result<Value, AdvowareError> {
        let e = expand(&self.settings.paths.termin_create, &[]);
        let resp = self
            .call(Method::Post, &e.path, &query_refs(&e.query), Some(termin))
            .await
            .map_err(|err| mismatch_on_405("termin_create", Method::Post, err))?;
        decode_json(&e.path, &resp.body)
    }

    pub async fn update_termin(&self, fr_nr: i64, termin: &Value) -> Result<Value, AdvowareError> {
        let n = fr_nr.to_string();
        let e = expand(&self.settings.paths.termin_update, &[("frnr", &n)]);
        let resp = self
            .call(Method::Put, &e.path, &query_refs(&e.query), Some(termin))
            .await
            .map_err(|err| mismatch_on_405("termin_update", Method::Put, err))?;
        decode_json(&e.path, &resp.body)
    }

    pub async fn delete_termin(&self, fr_nr: i64) -> Result<(), AdvowareError> {
        let n = fr_nr.to_string();
        let e = expand(&self.settings.paths.termin_delete, &[("frnr", &n)]);
        self.call(Method::Delete, &e.path, &query_refs(&e.query), None)
            .await
            .map(|_| ())
            .map_err(|err| mismatch_on_405("termin_delete", Method::Delete, err))
    }

    /// One Beteiligter (`None`: deleted in Advoware), read as `beteiligte_get` says. A 405 —
    /// or a 404 when `{betnr}` is only in the query — is [`AdvowareError::EndpointMismatch`],
    /// never "deleted". A list answer is searched for the entry with this `betNr`.
    pub async fn get_beteiligter(
        &self,
        bet_nr: bitbylaw_core::ids::BetNr,
    ) -> Result<Option<Value>, AdvowareError> {
        let n = bet_nr.to_string();
        let e = expand(&self.settings.paths.beteiligte_get, &[("betnr", &n)]);
        let value = match self.get_expanded(&e).await {
            Ok(v) => v,
            Err(err) if err.status() == Some(404) && e.placeholder_in_path => return Ok(None),
            Err(err) if matches!(err.status(), Some(404 | 405)) => {
                return Err(mismatch("beteiligte_get", Method::Get, err))
            }
            Err(err) => return Err(err),
        };
        let is_it = |b: &Value| b.get("betNr").and_then(Value::as_u64) == Some(bet_nr.get());
        Ok(match value {
            Value::Null => None,
            Value::Array(items) => items.into_iter().find(is_it),
            other => Some(other),
        })
    }

    /// The path a Beteiligte `POST` goes to ([`Self::create_beteiligter`]): a transport or
    /// decode error naming it means the POST went out and its answer was lost.
    pub fn beteiligte_create_path(&self) -> String {
        expand(&self.settings.paths.beteiligte_create, &[]).path
    }

    /// Creates a Beteiligter; the answer carries the new `betNr`.
    pub async fn create_beteiligter(&self, body: &Value) -> Result<Value, AdvowareError> {
        let e = expand(&self.settings.paths.beteiligte_create, &[]);
        let resp = self
            .call(Method::Post, &e.path, &query_refs(&e.query), Some(body))
            .await
            .map_err(|err| mismatch_on_405("beteiligte_create", Method::Post, err))?;
        decode_json(&e.path, &resp.body)
    }

    /// Replaces a Beteiligter (read-modify-write is the caller's job).
    pub async fn update_beteiligter(
        &self,
        bet_nr: bitbylaw_core::ids::BetNr,
        body: &Value,
    ) -> Result<Value, AdvowareError> {
        let n = bet_nr.to_string();
        let e = expand(&self.settings.paths.beteiligte_update, &[("betnr", &n)]);
        let resp = self
            .call(Method::Put, &e.path, &query_refs(&e.query), Some(body))
            .await
            .map_err(|err| mismatch_on_405("beteiligte_update", Method::Put, err))?;
        decode_json(&e.path, &resp.body)
    }

    /// Adds a Kommunikation entry to a Beteiligter; the answer is the stored entry with its id.
    pub async fn create_kommunikation(
        &self,
        bet_nr: bitbylaw_core::ids::BetNr,
        body: &Value,
    ) -> Result<Value, AdvowareError> {
        let template = &self.settings.paths.kommunikation_create;
        self.sub_record(
            Method::Post,
            "kommunikation_create",
            template,
            bet_nr,
            None,
            body,
        )
        .await
    }

    /// Changes a Kommunikation entry (`tlf`, `bemerkung`, `online`; Advoware keeps `kommKz`).
    pub async fn update_kommunikation(
        &self,
        bet_nr: bitbylaw_core::ids::BetNr,
        id: i64,
        body: &Value,
    ) -> Result<Value, AdvowareError> {
        let template = &self.settings.paths.kommunikation_update;
        self.sub_record(
            Method::Put,
            "kommunikation_update",
            template,
            bet_nr,
            Some(id),
            body,
        )
        .await
    }

    /// Adds an address to a Beteiligter (every field is taken); the answer is the stored
    /// address with its id.
    pub async fn create_adresse(
        &self,
        bet_nr: bitbylaw_core::ids::BetNr,
        body: &Value,
    ) -> Result<Value, AdvowareError> {
        let template = &self.settings.paths.adressen_create;
        self.sub_record(
            Method::Post,
            "adressen_create",
            template,
            bet_nr,
            None,
            body,
        )
        .await
    }

    /// Changes an address (Advoware takes only `strasse`, `plz`, `ort`, `anschrift`).
    pub async fn update_adresse(
        &self,
        bet_nr: bitbylaw_core::ids::BetNr,
        id: i64,
        body: &Value,
    ) -> Result<Value, AdvowareError> {
        let template = &self.settings.paths.adressen_update;
        self.sub_record(
            Method::Put,
            "adressen_update",
            template,
            bet_nr,
            Some(id),
            body,
        )
        .await
    }

    /// `POST`/`PUT` of a Beteiligter's sub-record (`setting` names the path template in a 405).
    async fn sub_record(
        &self,
        method: Method,
        setting: &'static str,
        template: &str,
        bet_nr: bitbylaw_core::ids::BetNr,
        id: Option<i64>,
        body: &Value,
    ) -> Result<Value, AdvowareError> {
        let (n, i) = (bet_nr.to_string(), id.map(|i| i.to_string()));
        let mut values = vec![("betnr", n.as_str())];
        if let Some(i) = &i {
            values.push(("id", i.as_str()));
        }
        let e = expand(template, &values);
        let resp = self
            .call(method, &e.path, &query_refs(&e.query), Some(body))
            .await
            .map_err(|err| mismatch_on_405(setting, method, err))?;
        decode_json(&e.path, &resp.body)
    }

    async fn get_expanded(&self, e: &Expanded) -> Result<Value, AdvowareError> {
        self.get_json(&e.path, &query_refs(&e.query)).await
    }

    // ----- core ------------------------------------------------------------------------------

    /// One resource call with the token; on 401 invalidates the token used and retries once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<HttpResponse, AdvowareError> {
        let span = info_span!("advoware", method = method.as_str(), path = %path);
        async move {
            let url = self.resource_url(path, query)?;
            let body = match body {
                Some(v) => Some(serde_json::to_vec(v).map_err(|e| AdvowareError::Decode {
                    path: path.to_owned(),
                    message: format!("body not serialisable: {e}"),
                })?),
                None => None,
            };
            let mut refreshed = false;
            loop {
                let token = self.token().await?;
                let headers = super::http::bearer_json_headers(token.expose(), body.is_some());
                let resp = self
                    .send(
                        HttpRequest {
                            method,
                            url: url.clone(),
                            headers,
                            body: body.clone(),
                        },
                        path,
                    )
                    .await?;
                if resp.status == 401 && !refreshed {
                    debug!("401: invalidating the token and retrying once");
                    self.invalidate(&token).await?;
                    refreshed = true;
                    continue;
                }
                if resp.status == 401 {
                    return Err(AdvowareError::Unauthorized {
                        path: path.to_owned(),
                    });
                }
                return classify(path, resp);
            }
        }
        .instrument(span)
        .await
    }

    async fn send(&self, request: HttpRequest, path: &str) -> Result<HttpResponse, AdvowareError> {
        self.http
            .send(request)
            .await
            .map_err(|message| AdvowareError::Transport {
                path: path.to_owned(),
                message,
            })
    }

    fn resource_url(&self, path: &str, query: &[(&str, &str)]) -> Result<String, AdvowareError> {
        join(&self.settings.api_base_url, path, query)
    }

    /// The current token: process-local copy, else Redis, else a freshly minted one.
    async fn token(&self) -> Result<Secret, AdvowareError> {
        if let Some(t) = self.local_token() {
            return Ok(t);
        }
        let _single_flight = self.fetching.lock().await;
        // Another task may have fetched it while we waited.
        if let Some(t) = self.local_token() {
            return Ok(t);
        }
        let key = &self.settings.token.redis_key;
        let mut conn = self.redis.clone();
        let (cached, ttl): (Option<String>, i64) = redis::pipe()
            .get(key)
            .ttl(key)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if let Some(token) = cached.filter(|t| !t.is_empty()) {
            if ttl > 0 {
                let token = Secret::new(token);
                self.store_local(&token, Duration::from_secs(ttl.unsigned_abs()));
                return Ok(token);
            }
        }
        self.mint().await
    }

    fn local_token(&self) -> Option<Secret> {
        let guard = self.local.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|t| t.valid_until > Instant::now())
            .map(|t| t.token.clone())
    }

    fn store_local(&self, token: &Secret, ttl: Duration) {
        let mut guard = self.local.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(LocalToken {
            token: token.clone(),
            valid_until: Instant::now() + ttl,
        });
    }

    /// Forgets `used` locally and in Redis — in Redis only if it is still the cached token.
    async fn invalidate(&self, used: &Secret) -> Result<(), AdvowareError> {
        {
            let mut guard = self.local.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_ref().is_some_and(|t| t.token == *used) {
                *guard = None;
            }
        }
        let mut conn = self.redis.clone();
        let _: i64 = redis::Script::new(COMPARE_AND_DELETE)
            .key(&self.settings.token.redis_key)
            .arg(used.expose())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    /// Mints a token (FACTS §1) and caches it in Redis and locally.
    async fn mint(&self) -> Result<Secret, AdvowareError> {
        let s = &self.settings;
        let path = s.paths.token.trim();
        let span = info_span!("advoware_token", path = %path, user = %s.credentials.user);
        async move {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| AdvowareError::Token("system clock before 1970".into()))?;
            let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
            let body = s.credentials.token_request_body(rand::random(), nanos);
            let url = join(&s.security_gateway_url, path, &[])?;
            let resp = self
                .send(
                    HttpRequest {
                        method: Method::Post,
                        url,
                        headers: vec![
                            ("Content-Type".to_owned(), "application/json".to_owned()),
                            ("Accept".to_owned(), "application/json".to_owned()),
                        ],
                        body: Some(body),
                    },
                    path,
                )
                .await?;
            match resp.status {
                200..=299 => {}
                // Overload and outages: the same retryable errors as for resources.
                429 | 408 | 500..=599 => return Err(error_for(path, resp)),
                status => {
                    warn!(status, "Advoware refused the token request");
                    return Err(AdvowareError::Token(format!(
                        "token endpoint answered {status}: {}",
                        token_error_reason(&resp.body)
                    )));
                }
            }
            let parsed = core_aw::parse_token_response(&resp.body)
                .map_err(|e| AdvowareError::Token(e.to_string()))?;
            let lifetime = core_aw::token_lifetime_secs(
                &parsed,
                now.as_secs(),
                s.token.max_lifetime.as_secs(),
            );
            let ttl = lifetime.saturating_sub(s.token.refresh_margin.as_secs());
            let token = Secret::new(parsed.access_token);
            if ttl > 0 {
                let mut conn = self.redis.clone();
                let _: () = redis::cmd("SET")
                    .arg(&s.token.redis_key)
                    .arg(token.expose())
                    .arg("EX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                self.store_local(&token, Duration::from_secs(ttl));
            } else {
                // Too short-lived to cache: use it for this call only.
                warn!(
                    lifetime,
                    "Advoware token lifetime below the refresh margin; not cached"
                );
            }
            debug!(ttl, "minted a new Advoware token");
            Ok(token)
        }
        .instrument(span)
        .await
    }
}

/// `base` + relative `path` (leading slashes ignored) + URL-encoded `query`.
fn join(base: &url::Url, path: &str, query: &[(&str, &str)]) -> Result<String, AdvowareError> {
    let mut url = base
        .join(path.trim_start_matches('/'))
        .map_err(|e| AdvowareError::Config(format!("bad path {path:?}: {e}")))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query.iter());
    }
    Ok(url.into())
}

fn query_refs(query: &[(String, String)]) -> Vec<(&str, &str)> {
    query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Answers that showed a configured Advoware path does not fit this Advoware (405, or a 404 that
/// cannot mean "gone"), from every sync of the process. Process-wide because each sync builds its
/// own client from the one path configuration; `/metrics` exports it as
/// `advoware_endpoint_mismatches`, the alert an operator gets for a wrong `ADVOWARE_PATH_*`.
pub static ENDPOINT_MISMATCHES: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);

/// [`AdvowareError::EndpointMismatch`] for an answer that shows the configured path is wrong;
/// logged and counted here, once, with the path (never a secret).
fn mismatch(setting: &'static str, method: Method, err: AdvowareError) -> AdvowareError {
    let (path, status) = match &err {
        AdvowareError::Upstream { path, status, .. } => (path.clone(), *status),
        _ => return err,
    };
    ENDPOINT_MISMATCHES.inc();
    tracing::error!(
        setting,
        method = method.as_str(),
        path = %path,
        status,
        "Advoware path configuration does not fit this Advoware"
    );
    AdvowareError::EndpointMismatch {
        setting,
        setting_upper: setting.to_ascii_uppercase(),
        method: method.as_str(),
        path,
        status,
    }
}

/// A 405 (method not allowed at this path) always means the path setting is wrong.
fn mismatch_on_405(setting: &'static str, method: Method, err: AdvowareError) -> AdvowareError {
    if err.status() == Some(405) {
        mismatch(setting, method, err)
    } else {
        err
    }
}

/// Maps a non-401 answer: 2xx passes, everything else becomes an error ([`error_for`]).
fn classify(path: &str, resp: HttpResponse) -> Result<HttpResponse, AdvowareError> {
    if (200..=299).contains(&resp.status) {
        Ok(resp)
    } else {
        Err(error_for(path, resp))
    }
}

/// 429/503 → rate limited (with `Retry-After`), others → `Upstream` with a body excerpt.
fn error_for(path: &str, resp: HttpResponse) -> AdvowareError {
    match resp.status {
        status @ (429 | 503) => AdvowareError::RateLimited {
            path: path.to_owned(),
            status,
            retry_after: resp.retry_after.as_deref().and_then(parse_retry_after),
        },
        status => AdvowareError::Upstream {
            path: path.to_owned(),
            status,
            body: excerpt(&resp.body),
        },
    }
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 2822 form).
pub fn parse_retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let secs = when.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    if text.chars().count() > BODY_EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// The OAuth-style `error`/`error_description` of a token refusal; never echoes our request.
fn token_error_reason(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return "no JSON error body".into();
    };
    let field = |n: &str| v.get(n).and_then(Value::as_str).unwrap_or("").to_owned();
    let (error, description) = (field("error"), field("error_description"));
    let reason = match (error.is_empty(), description.is_empty()) {
        (true, true) => "no error given".to_owned(),
        (false, true) => error,
        (true, false) => description,
        (false, false) => format!("{error}: {description}"),
    };
    reason.chars().take(BODY_EXCERPT_CHARS).collect()
}

fn decode_json(path: &str, body: &[u8]) -> Result<Value, AdvowareError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| AdvowareError::Decode {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn expect_array(path: &str, value: Value) -> Result<Vec<Value>, AdvowareError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(AdvowareError::Decode {
            path: path.to_owned(),
            message: format!("expected a JSON array, got {}", kind(&other)),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn redis_err(e: redis::RedisError) -> AdvowareError {
    AdvowareError::Redis(e.to_string())
}

#[cfg(test)]
#[allow(clippy::expect_used)] // In tests a failed expect is a failed test.
mod tests {
    use super::*;

    fn settings() -> AdvowareSettings {
        AdvowareSettings {
            api_base_url: Some("http://127.0.0.1:1/base".into()),
            security_gateway_url: Some("http://127.0.0.1:1/".into()),
            kanzlei: Some("k".into()),
            database: Some("d".into()),
            user: Some("API".into()),
            role: None,
            product: None,
            app_id: Some("app".into()),
            password: Some(Secret::new("pw-very-secret")),
            api_key: Some(Secret::new("dGVzdC1zZWNyZXQta2V5")),
            paths: Paths::default(),
        }
    }

    #[test]
    fn settings_validate_and_redact() {
        let s = ClientSettings::from_settings(&settings()).expect("valid");
        assert_eq!(s.api_base_url.as_str(), "http://127.0.0.1:1/base/");
        assert_eq!((s.credentials.role, s.credentials.product), (2, 64));
        assert_eq!(s.token.redis_key, "bbl:advoware:token:API");
        assert_eq!(s.credentials.api_key, b"test-secret-key");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("pw-very") && !dbg.contains("746573"), "{dbg}");

        let mut bad = settings();
        bad.api_key = Some(Secret::new("not base64!"));
        let err = ClientSettings::from_settings(&bad).expect_err("bad key");
        assert!(matches!(err, AdvowareError::Config(_)));
        assert!(!err.to_string().contains("not base64!"), "{err}");
        let mut missing = settings();
        missing.kanzlei = None;
        assert!(ClientSettings::from_settings(&missing)
            .expect_err("missing")
            .to_string()
            .contains("kanzlei"));
    }

    #[test]
    fn join_paths_and_query() {
        let base = base_url("http://h/x", "b").expect("url");
        assert_eq!(
            join(
                &base,
                "/api/v1/advonet/Termine",
                &[("kuerzel", "A B"), ("from", "2026-01-01")]
            )
            .expect("join"),
            "http://h/x/api/v1/advonet/Termine?kuerzel=A+B&from=2026-01-01"
        );
    }

    #[test]
    fn path_templates_expand_and_validate() {
        let e = expand(
            "api/Termine/{frnr}?frnr={frnr}&kind=1",
            &[("frnr", "5 6/7")],
        );
        assert_eq!(e.path, "api/Termine/5%206%2F7");
        assert_eq!(
            e.query,
            vec![("frnr".into(), "5 6/7".into()), ("kind".into(), "1".into())]
        );
        assert!(e.placeholder_in_path);
        let d = expand(&Paths::default().termin_get, &[("frnr", "48215")]);
        assert_eq!(
            (d.path.as_str(), d.placeholder_in_path),
            ("api/v1/advonet/Termine", false)
        );
        assert_eq!(d.query, vec![("frnr".into(), "48215".into())]);

        assert!(Paths::default().problems().is_empty());
        assert_eq!(
            placeholders("a/{x}/{y}?z={x}"),
            Ok(vec!["x".into(), "y".into(), "x".into()])
        );
        assert!(placeholders("a/{x").is_err() && placeholders("a/x}").is_err());
        assert_eq!(
            template_problems("api/{frnr}?{frnr}=1&", &["frnr"]),
            vec![
                "query part \"{frnr}=1\" is not name=value".to_owned(),
                "query part \"\" is not name=value".to_owned()
            ]
        );
        assert_eq!(
            template_problems("//host/x", &[]),
            vec!["must be a path relative to the base URL, not a URL".to_owned()]
        );
    }

    #[test]
    fn classification() {
        let resp = |status, retry_after: Option<&str>| HttpResponse {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: b"{\"Message\":\"x\"}".to_vec(),
        };
        let e = classify("p", resp(503, Some("7"))).expect_err("503");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let e = classify("p", resp(429, None)).expect_err("429");
        assert!(e.is_retryable() && e.retry_after().is_none());
        let e = classify("p", resp(500, None)).expect_err("500");
        assert!(e.is_retryable());
        assert!(e.to_string().contains("Message"));
        let e = classify("p", resp(404, None)).expect_err("404");
        assert!(!e.is_retryable());
        assert_eq!(e.status(), Some(404));
        assert!(classify("p", resp(204, None)).is_ok());
        assert!(!AdvowareError::Token("x".into()).is_retryable());
        assert!(!AdvowareError::Unauthorized { path: "p".into() }.is_retryable());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn excerpt_is_bounded_and_reason_is_short() {
        let long = "ä".repeat(1000);
        assert_eq!(
            excerpt(long.as_bytes()).chars().count(),
            BODY_EXCERPT_CHARS + 1
        );
        assert_eq!(
            token_error_reason(br#"{"error":"invalid_grant","error_description":"bad signature"}"#),
            "invalid_grant: bad signature"
        );
        assert_eq!(token_error_reason(b"<html>"), "no JSON error body");
    }

    #[test]
    fn request_debug_redacts_authorization() {
        let r = HttpRequest {
            method: Method::Get,
            url: "http://h/".into(),
            headers: vec![("Authorization".into(), "Bearer tok-123".into())],
            body: Some(b"{\"Password\":\"pw\"}".to_vec()),
        };
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("tok-123") && !dbg.contains("pw\""), "{dbg}");
    }
}
