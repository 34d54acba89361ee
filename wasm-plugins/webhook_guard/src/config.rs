//! Part 1 of the filter: the per-route configuration.
//!
//! Kong hands the filter the `config` object of its kong.yaml entry as a JSON
//! string (validated against `webhook_guard.meta.json` first). [`Config::parse`]
//! turns it into typed settings once, in `on_configure`, and reports **every**
//! problem at once so one log line tells the operator all that is wrong.
//!
//! The parser walks a `serde_json::Value` by hand instead of deriving
//! `Deserialize`: serde's messages quote the offending value ("invalid type:
//! string \"whsec_…\""), which would put a misplaced secret into the error
//! log. Our messages name the field and the rule, never the value.
//!
//! Secrets live in [`Secret`] / core's credential types, whose `Debug` is
//! redacted, so `{:?}` of a `Config` is safe to log.

use std::fmt;

use bitbylaw_core::topic::{fill_topic_template, has_placeholders, route_for_action};
use bitbylaw_core::webhook::{decode_standard_webhook_secret, Encoding, EspoCrmCredential};
use serde_json::{Map, Value};

/// Default `timestamp_tolerance_secs` (FACTS §5: ±5 min).
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Default `max_body_bytes` (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Upper bound for `max_body_bytes` (the whole body is buffered in the VM).
pub const MAX_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default `dedup_slots` per route.
pub const DEFAULT_DEDUP_SLOTS: u32 = 1024;
/// Upper bound for `dedup_slots` per route.
pub const MAX_DEDUP_SLOTS: u32 = 65_536;
/// Default `forward_path` of event routes.
pub const DEFAULT_FORWARD_PATH: &str = "/events";
/// Minimum length of `gateway_secret` (bytes).
pub const MIN_GATEWAY_SECRET_LEN: usize = 16;

/// A secret byte string whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// A list of secret strings whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets(pub Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted secrets>", self.0.len())
    }
}

/// What the route does with a verified request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A webhook event: body required, verified, checked, deduplicated and
    /// forwarded to the worker with the gateway headers.
    Event,
    /// Credentials only (the 3CX contact-lookup GET, no body): the request
    /// passes with the credential removed and gateway headers added, signed
    /// under the route's fixed `topic` over the forwarded path and query.
    VerifyOnly,
}

/// Where a shared token is presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header (lowercase name).
    Header(String),
    /// A query parameter (its name).
    Query(String),
}

/// Raw HMAC keys whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKeys(pub Vec<Vec<u8>>);

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted keys>", self.0.len())
    }
}

/// Which topics each EspoCRM webhook may deliver (`webhooks[].actions`).
///
/// EspoCRM's create, update and delete webhooks of an entity share one route
/// and the topic comes from the path; without this binding a signed `update`
/// delivery POSTed to the `delete` path would become a delete event (and,
/// EspoCRM signatures carrying no timestamp, could be replayed at will).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionBindings(pub Vec<(String, Vec<String>)>);

impl ActionBindings {
    /// Whether the authenticated `webhook_id` may deliver `topic`.
    pub fn allows(&self, webhook_id: &str, topic: &str) -> bool {
        self.0
            .iter()
            .any(|(id, topics)| id == webhook_id && topics.iter().any(|t| t == topic))
    }
}

/// The signature scheme and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verifier {
    /// EspoCRM `Signature` / legacy `X-Signature` (FACTS §2).
    EspoCrm {
        credentials: Vec<EspoCrmCredential>,
        /// `Some` when the topic comes from the path (always then: every
        /// webhook must be bound); `None` on a single-topic route.
        bindings: Option<ActionBindings>,
    },
    /// Standard Webhooks (`whsec_` secrets, FACTS §5).
    StandardWebhooks { secrets: Secrets },
    /// Generic HMAC-SHA256 in one header.
    Hmac {
        /// Lowercase header name.
        header: String,
        encoding: Encoding,
        prefix: Option<String>,
        /// Lowercase header name; when set the signed content is `"{ts}.{body}"`.
        timestamp_header: Option<String>,
        /// Raw keys (the configured strings' UTF-8 bytes).
        keys: SecretKeys,
    },
    /// A static token compared in constant time.
    SharedToken {
        source: TokenSource,
        tokens: Secrets,
    },
}

impl Verifier {
    /// Whether the sender authenticated as `key_id` (EspoCRM: the webhook
    /// id that signed the body) may deliver `topic` on this route.
    pub fn may_deliver(&self, key_id: Option<&str>, topic: &str) -> bool {
        match self {
            Verifier::EspoCrm {
                bindings: Some(b), ..
            } => key_id.is_some_and(|id| b.allows(id, topic)),
            _ => true,
        }
    }

    /// The scheme's name as configured.
    pub fn scheme(&self) -> &'static str {
        match self {
            Verifier::EspoCrm { .. } => "espocrm",
            Verifier::StandardWebhooks { .. } => "standard-webhooks",
            Verifier::Hmac { .. } => "hmac-sha256",
            Verifier::SharedToken { .. } => "shared-token",
        }
    }
}

/// The expected shape of the JSON payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A non-empty JSON array of objects, each with a string `id` (EspoCRM).
    EspoCrmBatch,
    /// A JSON object.
    Object,
    /// Any JSON value.
    Any,
}

/// How the topic is derived from the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    pub template: String,
    /// `None`: the template has no placeholders and any path matches.
    pub path_pattern: Option<String>,
}

impl TopicRule {
    /// The topic for a request path (without query), or `None` when the path
    /// does not fit the pattern.
    pub fn topic_for(&self, path: &str) -> Option<String> {
        match &self.path_pattern {
            Some(p) => fill_topic_template(&self.template, path, p).ok(),
            None => Some(self.template.clone()),
        }
    }
}

/// The parsed configuration of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Metric label `[a-z0-9_]{1,64}`.
    pub route: String,
    pub mode: Mode,
    pub verifier: Verifier,
    pub tolerance_secs: u64,
    pub max_body_bytes: u64,
    /// Required media type (lowercase, without parameters); `None` = any.
    pub content_type: Option<String>,
    /// Always `Some` once parsed; verify-only: the fixed pseudo-topic its
    /// forwards are signed under (e.g. `threecx.lookup`).
    pub topic: Option<TopicRule>,
    pub payload: Payload,
    /// 0 = edge dedup off.
    pub dedup_window_secs: u64,
    pub dedup_slots: u32,
    /// Always `Some` once parsed (both modes sign their forwards).
    pub gateway_secret: Option<Secret>,
    /// The upstream path (event mode: always set).
    pub forward_path: Option<String>,
}

impl Config {
    /// Parses the filter configuration; on failure returns every problem
    /// found (field names and rules only, never values).
    pub fn parse(bytes: &[u8]) -> Result<Config, Vec<String>> {
        let value: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                // serde_json's syntax errors carry only a position, not the input.
                return Err(vec![format!(
                    "configuration is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )]);
            }
        };
        let Some(obj) = value.as_object() else {
            return Err(vec!["configuration must be a JSON object".into()]);
        };
        let mut p = Problems::default();
        let cfg = parse_object(obj, &mut p);
        match cfg {
            Some(c) if p.0.is_empty() => Ok(c),
            _ => Err(p.0),
        }
    }
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }
}

const KNOWN_FIELDS: &[&str] = &[
    "route",
    "mode",
    "scheme",
    "webhooks",
    "secrets",
    "signature_header",
    "signature_encoding",
    "signature_prefix",
    "timestamp_header",
    "token_header",
    "token_query",
    "timestamp_tolerance_secs",
    "max_body_bytes",
    "content_type",
    "topic",
    "path_pattern",
    "payload",
    "dedup_window_secs",
    "dedup_slots",
    "gateway_secret",
    "forward_path",
];

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str, p: &mut Problems) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            p.add(format!("{key} must be a string"));
            None
        }
    }
}

fn get_u64(obj: &Map<String, Value>, key: &str, p: &mut Problems) -> Option<u64> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Some(v),
            None => {
                p.add(format!("{key} must be a non-negative integer"));
                None
            }
        },
        Some(_) => {
            p.add(format!("{key} must be a non-negative integer"));
            None
        }
    }
}

fn is_route_label(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// An HTTP header name (RFC 9110 token), returned lowercase.
fn header_name(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then(|| s.to_ascii_lowercase())
}

fn is_path(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 1024
        && !s.contains(['?', '#'])
        && s.bytes().all(|b| b.is_ascii_graphic())
}

fn string_list(obj: &Map<String, Value>, key: &str, p: &mut Problems) -> Option<Vec<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if !s.is_empty() => out.push(s.to_owned()),
                    Some(_) => p.add(format!("{key}[{i}] must not be empty")),
                    None => p.add(format!("{key}[{i}] must be a string")),
                }
            }
            if items.is_empty() {
                p.add(format!("{key} must list at least one secret"));
            }
            Some(out)
        }
        Some(_) => {
            p.add(format!("{key} must be an array of strings"));
            None
        }
    }
}

fn parse_object(obj: &Map<String, Value>, p: &mut Problems) -> Option<Config> {
    for key in obj.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            // Field names are not secret; keep them short in the log line.
            let shown: String = key.chars().take(40).collect();
            p.add(format!("unknown field {shown:?}"));
        }
    }

    let route = match get_str(obj, "route", p) {
        Some(r) if is_route_label(r) => Some(r.to_owned()),
        Some(_) => {
            p.add("route must match [a-z0-9_]{1,64}");
            None
        }
        None => {
            p.add("route is required");
            None
        }
    };

    let mode = match get_str(obj, "mode", p) {
        None | Some("event") => Mode::Event,
        Some("verify-only") => Mode::VerifyOnly,
        Some(_) => {
            p.add("mode must be \"event\" or \"verify-only\"");
            Mode::Event
        }
    };

    let mut verifier = parse_verifier(obj, p);

    let tolerance_secs =
        get_u64(obj, "timestamp_tolerance_secs", p).unwrap_or(DEFAULT_TOLERANCE_SECS);
    if tolerance_secs > 86_400 {
        p.add("timestamp_tolerance_secs must be at most 86400");
    }

    let max_body_bytes = get_u64(obj, "max_body_bytes", p).unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 || max_body_bytes > MAX_MAX_BODY_BYTES {
        p.add(format!(
            "max_body_bytes must be between 1 and {MAX_MAX_BODY_BYTES}"
        ));
    }

    let content_type = match get_str(obj, "content_type", p) {
        None => Some("application/json".to_owned()),
        Some("") => None,
        Some(ct) => {
            let ct = ct.trim().to_ascii_lowercase();
            let valid = ct
                .split_once('/')
                .is_some_and(|(a, b)| header_name(a).is_some() && header_name(b).is_some());
            if !valid {
                p.add(
                    "content_type must be a media type such as application/json (or \"\" for any)",
                );
            }
            Some(ct)
        }
    };

    let topic_template = get_str(obj, "topic", p);
    let path_pattern = get_str(obj, "path_pattern", p);
    let topic = match (mode, topic_template) {
        (Mode::Event, None) => {
            p.add("topic is required for event routes");
            None
        }
        // Verify-only forwards are signed under one fixed pseudo-topic, which keeps
        // their signatures apart from event signatures (and the worker knows it).
        (Mode::VerifyOnly, Some(t)) if has_placeholders(t) => {
            p.add("topic of a verify-only route must be fixed (no placeholders)");
            None
        }
        (Mode::VerifyOnly, Some(t)) => check_topic(t, None, p),
        (Mode::VerifyOnly, None) => {
            p.add("topic is required (verify-only: the fixed topic the forward is signed under)");
            None
        }
        (Mode::Event, Some(t)) => check_topic(t, path_pattern, p),
    };
    if mode == Mode::VerifyOnly && path_pattern.is_some() {
        p.add("path_pattern is only allowed on event routes");
    }
    bind_actions(obj, topic.as_ref(), verifier.as_mut(), p);

    let default_payload = match verifier {
        Some(Verifier::EspoCrm { .. }) => Payload::EspoCrmBatch,
        _ => Payload::Object,
    };
    let payload = match get_str(obj, "payload", p) {
        None => default_payload,
        Some("espocrm-batch") => Payload::EspoCrmBatch,
        Some("object") => Payload::Object,
        Some("any") => Payload::Any,
        Some(_) => {
            p.add("payload must be \"espocrm-batch\", \"object\" or \"any\"");
            default_payload
        }
    };

    let dedup_window_secs = get_u64(obj, "dedup_window_secs", p).unwrap_or(0);
    if dedup_window_secs > 7 * 86_400 {
        p.add("dedup_window_secs must be at most 604800");
    }
    let dedup_slots = get_u64(obj, "dedup_slots", p).unwrap_or(u64::from(DEFAULT_DEDUP_SLOTS));
    if dedup_slots == 0 || dedup_slots > u64::from(MAX_DEDUP_SLOTS) {
        p.add(format!(
            "dedup_slots must be between 1 and {MAX_DEDUP_SLOTS}"
        ));
    }
    if mode == Mode::VerifyOnly && dedup_window_secs > 0 {
        p.add("dedup_window_secs is only allowed on event routes");
    }

    // Both modes sign what they forward: the worker trusts nothing unsigned.
    let gateway_secret = match get_str(obj, "gateway_secret", p) {
        Some(s) if s.len() >= MIN_GATEWAY_SECRET_LEN => Some(Secret(s.as_bytes().to_vec())),
        Some(_) => {
            p.add(format!(
                "gateway_secret must be at least {MIN_GATEWAY_SECRET_LEN} bytes"
            ));
            None
        }
        None => {
            p.add("gateway_secret is required");
            None
        }
    };

    let forward_path = match get_str(obj, "forward_path", p) {
        Some(fp) if is_path(fp) => Some(fp.to_owned()),
        Some(_) => {
            p.add("forward_path must be an absolute path without query (/…, printable ASCII)");
            None
        }
        None if mode == Mode::Event => Some(DEFAULT_FORWARD_PATH.to_owned()),
        None => None,
    };

    if mode == Mode::VerifyOnly
        && verifier
            .as_ref()
            .is_some_and(|v| !matches!(v, Verifier::SharedToken { .. }))
    {
        p.add("mode verify-only requires scheme shared-token (the other schemes sign the body)");
    }

    Some(Config {
        route: route?,
        mode,
        verifier: verifier?,
        tolerance_secs,
        max_body_bytes,
        content_type: if mode == Mode::VerifyOnly {
            None
        } else {
            content_type
        },
        topic,
        payload,
        dedup_window_secs,
        dedup_slots: u32::try_from(dedup_slots).unwrap_or(DEFAULT_DEDUP_SLOTS),
        gateway_secret,
        forward_path,
    })
}

fn check_topic(template: &str, pattern: Option<&str>, p: &mut Problems) -> Option<TopicRule> {
    let has_placeholder = template.contains('{') || template.contains('}');
    match pattern {
        None if has_placeholder => {
            p.add("topic has placeholders, so path_pattern is required");
            None
        }
        None => {
            if bitbylaw_core::gateway::is_valid_topic(template) {
                Some(TopicRule {
                    template: template.to_owned(),
                    path_pattern: None,
                })
            } else {
                p.add("topic must match [a-z0-9._-]{1,128}");
                None
            }
        }
        Some(pat) => {
            // Validate template and pattern together by filling the template
            // from a path that the pattern itself describes.
            if !pat.starts_with('/') {
                p.add("path_pattern must start with /");
                return None;
            }
            let sample: Vec<&str> = pat
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') && seg.ends_with('}') {
                        "x"
                    } else {
                        seg
                    }
                })
                .collect();
            match fill_topic_template(template, &sample.join("/"), pat) {
                Ok(_) => Some(TopicRule {
                    template: template.to_owned(),
                    path_pattern: Some(pat.to_owned()),
                }),
                Err(e) => {
                    p.add(format!("topic/path_pattern: {e}"));
                    None
                }
            }
        }
    }
}

fn parse_verifier(obj: &Map<String, Value>, p: &mut Problems) -> Option<Verifier> {
    let scheme = get_str(obj, "scheme", p);
    let only = |p: &mut Problems, fields: &[&str], scheme: &str| {
        for f in fields {
            if obj.get(*f).is_some_and(|v| !v.is_null()) {
                p.add(format!("{f} is not used by scheme {scheme}"));
            }
        }
    };
    match scheme {
        None => {
            p.add("scheme is required (espocrm, standard-webhooks, hmac-sha256, shared-token)");
            None
        }
        Some("espocrm") => {
            only(
                p,
                &[
                    "secrets",
                    "signature_header",
                    "signature_encoding",
                    "signature_prefix",
                    "timestamp_header",
                    "token_header",
                    "token_query",
                ],
                "espocrm",
            );
            parse_webhooks(obj, p).map(|credentials| Verifier::EspoCrm {
                credentials,
                bindings: None,
            })
        }
        Some("standard-webhooks") => {
            only(
                p,
                &[
                    "webhooks",
                    "signature_header",
                    "signature_encoding",
                    "signature_prefix",
                    "timestamp_header",
                    "token_header",
                    "token_query",
                ],
                "standard-webhooks",
            );
            let secrets = required_secrets(obj, p)?;
            for (i, s) in secrets.iter().enumerate() {
                if decode_standard_webhook_secret(s).is_err() {
                    p.add(format!("secrets[{i}] is not a whsec_ (base64) secret"));
                }
            }
            Some(Verifier::StandardWebhooks {
                secrets: Secrets(secrets),
            })
        }
        Some("hmac-sha256") => {
            only(
                p,
                &["webhooks", "token_header", "token_query"],
                "hmac-sha256",
            );
            let header = match get_str(obj, "signature_header", p) {
                Some(h) => header_name(h).or_else(|| {
                    p.add("signature_header must be a header name");
                    None
                }),
                None => {
                    p.add("signature_header is required for scheme hmac-sha256");
                    None
                }
            };
            let encoding = match get_str(obj, "signature_encoding", p) {
                None | Some("hex") => Encoding::Hex,
                Some("base64") => Encoding::Base64,
                Some(_) => {
                    p.add("signature_encoding must be \"hex\" or \"base64\"");
                    Encoding::Hex
                }
            };
            let prefix = get_str(obj, "signature_prefix", p)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            if prefix
                .as_ref()
                .is_some_and(|s| s.len() > 32 || !s.bytes().all(|b| b.is_ascii_graphic()))
            {
                p.add("signature_prefix must be at most 32 printable ASCII characters");
            }
            let timestamp_header = match get_str(obj, "timestamp_header", p) {
                Some(h) => match header_name(h) {
                    Some(h) => Some(h),
                    None => {
                        p.add("timestamp_header must be a header name");
                        None
                    }
                },
                None => None,
            };
            let secrets = required_secrets(obj, p);
            Some(Verifier::Hmac {
                header: header?,
                encoding,
                prefix,
                timestamp_header,
                keys: SecretKeys(secrets?.into_iter().map(String::into_bytes).collect()),
            })
        }
        Some("shared-token") => {
            only(
                p,
                &[
                    "webhooks",
                    "signature_header",
                    "signature_encoding",
                    "signature_prefix",
                    "timestamp_header",
                ],
                "shared-token",
            );
            let header = get_str(obj, "token_header", p);
            let query = get_str(obj, "token_query", p);
            let source = match (header, query) {
                (Some(h), None) => header_name(h).map(TokenSource::Header).or_else(|| {
                    p.add("token_header must be a header name");
                    None
                }),
                (None, Some(q))
                    if !q.is_empty()
                        && q.len() <= 64
                        && q.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
                {
                    Some(TokenSource::Query(q.to_owned()))
                }
                (None, Some(_)) => {
                    p.add("token_query must be a parameter name ([A-Za-z0-9-._~]{1,64})");
                    None
                }
                _ => {
                    p.add("scheme shared-token needs exactly one of token_header, token_query");
                    None
                }
            };
            let secrets = required_secrets(obj, p);
            Some(Verifier::SharedToken {
                source: source?,
                tokens: Secrets(secrets?),
            })
        }
        Some(_) => {
            p.add("scheme must be one of espocrm, standard-webhooks, hmac-sha256, shared-token");
            None
        }
    }
}

fn required_secrets(obj: &Map<String, Value>, p: &mut Problems) -> Option<Vec<String>> {
    match string_list(obj, "secrets", p) {
        Some(s) if !s.is_empty() => Some(s),
        Some(_) => None,
        None => {
            p.add("secrets is required (one or more; several for rotation)");
            None
        }
    }
}

fn parse_webhooks(obj: &Map<String, Value>, p: &mut Problems) -> Option<Vec<EspoCrmCredential>> {
    let Some(v) = obj.get("webhooks").filter(|v| !v.is_null()) else {
        p.add("webhooks is required for scheme espocrm ([{\"id\", \"secret\", \"actions\"}, …])");
        return None;
    };
    let Some(items) = v.as_array() else {
        p.add("webhooks must be an array of {id, secret, actions}");
        return None;
    };
    if items.is_empty() {
        p.add("webhooks must list at least one webhook");
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(o) = item.as_object() else {
            p.add(format!("webhooks[{i}] must be an object {{id, secret}}"));
            continue;
        };
        for k in o.keys() {
            if !["id", "secret", "actions"].contains(&k.as_str()) {
                p.add(format!("webhooks[{i}] has an unknown field"));
            }
        }
        let id = o
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && !s.contains(':'));
        let secret = o
            .get("secret")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if id.is_none() {
            p.add(format!(
                "webhooks[{i}].id must be a non-empty string without ':'"
            ));
        }
        if secret.is_none() {
            p.add(format!("webhooks[{i}].secret must be a non-empty string"));
        }
        if let (Some(id), Some(secret)) = (id, secret) {
            out.push(EspoCrmCredential {
                webhook_id: id.to_owned(),
                secret: secret.to_owned(),
            });
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Binds every EspoCRM webhook to the topics of its `actions` when the
/// topic comes from the path, and refuses a path-selected topic for the
/// other schemes: their credentials (bare secrets or tokens) name no webhook
/// that could be bound, so one credential would reach every topic of the
/// route — such senders get one route per topic instead.
fn bind_actions(
    obj: &Map<String, Value>,
    topic: Option<&TopicRule>,
    verifier: Option<&mut Verifier>,
    p: &mut Problems,
) {
    let from_path = topic.and_then(|t| {
        t.path_pattern
            .as_deref()
            .filter(|_| has_placeholders(&t.template))
            .map(|pat| (t.template.as_str(), pat))
    });
    let bindings = match verifier {
        Some(Verifier::EspoCrm { bindings, .. }) => bindings,
        Some(_) => {
            if from_path.is_some() {
                p.add(
                    "topic placeholders need scheme espocrm: the other schemes' credentials name \
                     no webhook that could be bound to an action (use one route per topic)",
                );
            }
            return;
        }
        None => return,
    };
    let items = obj
        .get("webhooks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut bound: Vec<(String, Vec<String>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(o) = item.as_object() else { continue };
        let actions = o.get("actions").filter(|v| !v.is_null());
        let Some((template, pattern)) = from_path else {
            if actions.is_some() {
                p.add(format!(
                    "webhooks[{i}].actions only applies when the topic comes from the path (a topic with placeholders)"
                ));
            }
            continue;
        };
        let list = match actions.map(Value::as_array) {
            None => {
                p.add(format!(
                    "webhooks[{i}].actions is required: the topic comes from the path, so each webhook names the action(s) it delivers"
                ));
                continue;
            }
            Some(None) => {
                p.add(format!("webhooks[{i}].actions must be an array of strings"));
                continue;
            }
            Some(Some(list)) => list,
        };
        if list.is_empty() {
            p.add(format!(
                "webhooks[{i}].actions must list at least one action"
            ));
        }
        let mut topics = Vec::new();
        for (j, a) in list.iter().enumerate() {
            match a.as_str().map(|a| route_for_action(template, pattern, a)) {
                Some(Ok(r)) => topics.push(r.topic),
                Some(Err(e)) => p.add(format!("webhooks[{i}].actions[{j}]: {e}")),
                None => p.add(format!("webhooks[{i}].actions[{j}] must be a string")),
            }
        }
        topics.sort();
        topics.dedup();
        let Some(id) = o.get("id").and_then(Value::as_str) else {
            continue;
        };
        match bound.iter().find(|(known, _)| known == id) {
            // Rotation lists one webhook twice; both entries must agree.
            Some((_, earlier)) if *earlier != topics => p.add(format!(
                "webhooks[{i}].actions differ from an earlier entry with the same id"
            )),
            Some(_) => {}
            None => bound.push((id.to_owned(), topics)),
        }
    }
    if from_path.is_some() {
        *bindings = Some(ActionBindings(bound));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Config, Vec<String>> {
        Config::parse(v.to_string().as_bytes())
    }

    fn espo() -> Value {
        json!({
            "route": "espocrm_beteiligte",
            "scheme": "espocrm",
            "webhooks": [{"id": "wh1", "secret": "s3cret-one", "actions": ["update"]}],
            "topic": "vmh.beteiligte.{action}",
            "path_pattern": "/vmh/webhook/beteiligte/{action}",
            "gateway_secret": "gateway-secret-0123456789"
        })
    }

    #[test]
    fn espocrm_defaults() {
        let c = parse(espo()).unwrap();
        assert_eq!(c.mode, Mode::Event);
        assert_eq!(c.payload, Payload::EspoCrmBatch);
        assert_eq!(c.tolerance_secs, 300);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.content_type.as_deref(), Some("application/json"));
        assert_eq!(c.forward_path.as_deref(), Some("/events"));
        assert_eq!(c.dedup_window_secs, 0);
        assert_eq!(c.dedup_slots, 1024);
        let t = c.topic.unwrap();
        assert_eq!(
            t.topic_for("/vmh/webhook/beteiligte/update").as_deref(),
            Some("vmh.beteiligte.update")
        );
        assert_eq!(t.topic_for("/vmh/webhook/other/update"), None);
    }

    #[test]
    fn every_problem_is_reported_without_values() {
        let err = parse(json!({
            "scheme": "standard-webhooks",
            "secrets": ["whsec_!!notbase64", 5],
            "topic": "Leads",
            "max_body_bytes": 0,
            "gateway_secret": "short-secret-xy",
            "bogus": 1
        }))
        .unwrap_err();
        let all = err.join("; ");
        assert!(all.contains("route is required"), "{all}");
        assert!(all.contains("secrets[0]"), "{all}");
        assert!(all.contains("secrets[1] must be a string"), "{all}");
        assert!(all.contains("topic must match"), "{all}");
        assert!(all.contains("max_body_bytes"), "{all}");
        assert!(all.contains("gateway_secret must be at least"), "{all}");
        assert!(all.contains("unknown field \"bogus\""), "{all}");
        assert!(!all.contains("notbase64"), "{all}");
        assert!(!all.contains("short-secret"), "{all}");
        // a secret in a wrongly typed field is not echoed either
        let err = parse(json!({"route": "r", "scheme": "shared-token", "token_header": "x-api-key", "secrets": "tok-SECRET"})).unwrap_err();
        assert!(!err.join(";").contains("tok-SECRET"));
    }

    #[test]
    fn schemes() {
        let c = parse(json!({
            "route": "gh", "scheme": "hmac-sha256", "signature_header": "X-Hub-Signature-256",
            "signature_prefix": "sha256=", "signature_encoding": "hex", "timestamp_header": "X-Timestamp",
            "secrets": ["a", "b"], "topic": "gh.push", "gateway_secret": "0123456789abcdef"
        }))
        .unwrap();
        match c.verifier {
            Verifier::Hmac {
                header,
                prefix,
                timestamp_header,
                keys,
                ..
            } => {
                assert_eq!(header, "x-hub-signature-256");
                assert_eq!(prefix.as_deref(), Some("sha256="));
                assert_eq!(timestamp_header.as_deref(), Some("x-timestamp"));
                assert_eq!(keys.0.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let c = parse(
            json!({"route": "lookup", "mode": "verify-only", "scheme": "shared-token",
            "token_header": "x-api-key", "secrets": ["t"], "topic": "threecx.lookup",
            "gateway_secret": "0123456789abcdef"}),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::VerifyOnly);
        assert_eq!(
            c.topic.as_ref().map(|t| t.template.as_str()),
            Some("threecx.lookup")
        );
        let err = parse(
            json!({"route": "lookup", "mode": "verify-only", "scheme": "shared-token",
            "token_header": "x-api-key", "secrets": ["t"]}),
        )
        .unwrap_err()
        .join(";");
        assert!(err.contains("gateway_secret is required"), "{err}");
        assert!(err.contains("topic is required"), "{err}");
        assert_eq!(c.content_type, None);
        assert_eq!(c.forward_path, None);
        let err = parse(
            json!({"route": "lookup", "mode": "verify-only", "scheme": "espocrm",
            "webhooks": [{"id": "a", "secret": "b", "actions": ["x"]}]}),
        )
        .unwrap_err();
        assert!(err.join(";").contains("verify-only requires"));
        let err = parse(
            json!({"route": "x", "scheme": "shared-token", "token_header": "x", "token_query": "t",
            "secrets": ["t"], "topic": "a", "gateway_secret": "0123456789abcdef"}),
        )
        .unwrap_err();
        assert!(err.join(";").contains("exactly one"));
        let err = parse(json!({"route": "x", "scheme": "espocrm", "webhooks": [],
            "topic": "a.{b}", "gateway_secret": "0123456789abcdef"}))
        .unwrap_err();
        let all = err.join(";");
        assert!(
            all.contains("at least one webhook") && all.contains("path_pattern is required"),
            "{all}"
        );
    }

    #[test]
    fn webhooks_are_bound_to_their_actions() {
        let c = parse(with(json!({"webhooks": [
            {"id": "wh-up", "secret": "s1", "actions": ["update", "create"]},
            {"id": "wh-del", "secret": "s2", "actions": ["delete"]},
            {"id": "wh-del", "secret": "s3", "actions": ["delete", "delete"]}
        ]})))
        .unwrap();
        let v = &c.verifier;
        assert!(v.may_deliver(Some("wh-up"), "vmh.beteiligte.update"));
        assert!(v.may_deliver(Some("wh-up"), "vmh.beteiligte.create"));
        assert!(!v.may_deliver(Some("wh-up"), "vmh.beteiligte.delete"));
        assert!(v.may_deliver(Some("wh-del"), "vmh.beteiligte.delete"));
        assert!(!v.may_deliver(Some("wh-del"), "vmh.beteiligte.update"));
        assert!(!v.may_deliver(None, "vmh.beteiligte.update"));
        // a single-topic route needs no binding
        let c = parse(with(
            json!({"topic": "vmh.beteiligte.update", "path_pattern": null,
            "webhooks": [{"id": "a", "secret": "b"}]}),
        ))
        .unwrap();
        assert!(c.verifier.may_deliver(Some("a"), "vmh.beteiligte.update"));
    }

    #[test]
    fn action_binding_problems_are_all_reported() {
        let err = parse(with(json!({"webhooks": [
            {"id": "a", "secret": "s"},
            {"id": "b", "secret": "s", "actions": []},
            {"id": "c", "secret": "s", "actions": ["Update", "up/date", 5]},
            {"id": "d", "secret": "s", "actions": "update"},
            {"id": "e", "secret": "s", "actions": ["update"]},
            {"id": "e", "secret": "s2", "actions": ["delete"]}
        ]})))
        .unwrap_err();
        let all = err.join("; ");
        for want in [
            "webhooks[0].actions is required",
            "webhooks[1].actions must list at least one action",
            "webhooks[2].actions[0]: path segment for \"action\"",
            "webhooks[2].actions[1]: path segment for \"action\"",
            "webhooks[2].actions[2] must be a string",
            "webhooks[3].actions must be an array",
            "webhooks[5].actions differ from an earlier entry with the same id",
        ] {
            assert!(all.contains(want), "{want} in {all}");
        }
        // the pattern must select the topic by {action} alone
        let err = parse(with(json!({"topic": "vmh.{entity}.{action}",
            "path_pattern": "/vmh/webhook/{entity}/{action}"})))
        .unwrap_err();
        assert!(
            err.join(";").contains("\"entity\" is not {action}"),
            "{err:?}"
        );
        // actions on a single-topic route are a mistake
        let err = parse(with(
            json!({"topic": "vmh.beteiligte.update", "path_pattern": null}),
        ))
        .unwrap_err();
        assert!(err.join(";").contains("actions only applies"), "{err:?}");
        // other schemes cannot take the topic from the path
        let err = parse(
            json!({"route": "gh", "scheme": "hmac-sha256", "signature_header": "x-sig",
            "secrets": ["k"], "topic": "gh.{action}", "path_pattern": "/gh/{action}",
            "gateway_secret": "0123456789abcdef"}),
        )
        .unwrap_err();
        assert!(
            err.join(";")
                .contains("topic placeholders need scheme espocrm"),
            "{err:?}"
        );
    }

    fn with(patch: Value) -> Value {
        let mut v = espo();
        for (k, x) in patch.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    #[test]
    fn debug_is_redacted() {
        let c = parse(espo()).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret-one"), "{dbg}");
        assert!(!dbg.contains("gateway-secret-0123456789"), "{dbg}");
        assert!(Config::parse(b"{").is_err());
        assert!(Config::parse(b"[]").is_err());
    }
}
