//! Part 1 of the filter: its configuration (the JSON object kong.yaml gives it).
//!
//! Parsed and validated once, in `on_configure`. Validation collects *every*
//! problem so the one log line an operator sees names all of them; secrets
//! (`password`, `api_key`) never appear in messages or in `Debug`.
//!
//! The JSON Schema in `advoware_auth.meta.json` mirrors these rules so Kong
//! rejects most mistakes before the filter ever runs; this parser is the
//! authority (it also runs on hosts without schema validation).

use std::collections::BTreeMap;
use std::fmt;

use bitbylaw_core::advoware::Credentials;
use bitbylaw_core::endpoint::under_prefix;
use serde_json::{Map, Value};

/// Default allow-listed Advoware path prefixes.
pub const DEFAULT_ALLOWED_PREFIXES: [&str; 3] =
    ["api/v1/advonet/", "api/v1/Akten", "api/v1/NewActivities"];
/// Default prefix put in front of endpoints that name no allowed prefix.
pub const DEFAULT_PREFIX: &str = "api/v1/advonet/";
/// Default token path on the security gateway.
pub const DEFAULT_TOKEN_PATH: &str = "/api/v1/Token";
/// Default shared-data key prefix (also the `shm_kv` zone name when such a zone exists).
pub const DEFAULT_SHARED_KEY_PREFIX: &str = "advoware_auth";
/// Default request header naming the authenticated consumer (set by Kong's key-auth,
/// which overwrites whatever the client sent).
pub const DEFAULT_CONSUMER_HEADER: &str = "x-consumer-username";
/// Methods a consumer scope may list.
pub const SCOPE_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// What one consumer may do through the proxy: its methods and the Advoware
/// path prefixes (segment-wise, case-sensitive, matched on the mapped path
/// such as `api/v1/advonet/Termine/5`) it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerScope {
    pub methods: Vec<String>,
    pub prefixes: Vec<String>,
}

impl ConsumerScope {
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }

    /// `advoware_path` without the leading `/` and without query.
    pub fn allows_path(&self, advoware_path: &str) -> bool {
        self.prefixes.iter().any(|p| under_prefix(advoware_path, p))
    }
}

/// The validated configuration. `Debug` redacts the password and API key.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `Host` header for the upstream request (`None`: leave it to Kong).
    pub upstream_host: Option<String>,
    /// Path prefix of the Advoware API base (e.g. `/connector`), `""` for none.
    pub api_path_prefix: String,
    /// `dispatch_http_call` target of the security gateway: `IP[:port]` or `host[:port]`.
    pub token_target: String,
    /// `http` or `https` (`:scheme` of the token call).
    pub token_scheme: String,
    /// `:authority` (→ `Host`) of the token call.
    pub token_authority: String,
    /// Path of the token endpoint.
    pub token_path: String,
    /// The API user (password and decoded API key are secret; `Debug` redacts them).
    pub credentials: Credentials,
    /// Upper bound of how long a token is cached (seconds).
    pub token_max_lifetime_secs: u64,
    /// Refresh this many seconds before the token expires.
    pub refresh_margin_secs: u64,
    /// Timeout of the token call (milliseconds).
    pub dispatch_timeout_ms: u64,
    pub allowed_prefixes: Vec<String>,
    pub default_prefix: String,
    /// Shared-data keys are `{shared_key_prefix}/token` and `{shared_key_prefix}/lock`.
    pub shared_key_prefix: String,
    /// Tick period (milliseconds) of the proactive refresh; 0 disables ticks.
    pub tick_period_ms: u64,
    /// Client credential names removed from headers and query (`apikey`, …).
    pub key_names: Vec<String>,
    /// `Retry-After` (seconds) sent when the token endpoint failed.
    pub failure_retry_after_secs: u64,
    /// Also set Kong's `$upstream_uri` (property `ngx.upstream_uri`).
    pub kong_upstream_uri: bool,
    /// Per-consumer scopes by consumer username; `None`: every caller the
    /// route lets through may use every method and `allowed_prefixes`.
    pub consumers: Option<BTreeMap<String, ConsumerScope>>,
    /// Request header carrying the consumer username (Kong's key-auth sets it).
    pub consumer_header: String,
    /// An upstream 401 discards the shared token only when the token is at
    /// least this old (a fresh token refused is not an expired one).
    pub rejected_token_min_age_secs: u64,
    /// At most one 401-forced token refresh per this many seconds per node.
    pub forced_refresh_min_interval_secs: u64,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("upstream_host", &self.upstream_host)
            .field("api_path_prefix", &self.api_path_prefix)
            .field("token_target", &self.token_target)
            .field("token_scheme", &self.token_scheme)
            .field("token_authority", &self.token_authority)
            .field("token_path", &self.token_path)
            .field("credentials", &self.credentials)
            .field("token_max_lifetime_secs", &self.token_max_lifetime_secs)
            .field("refresh_margin_secs", &self.refresh_margin_secs)
            .field("dispatch_timeout_ms", &self.dispatch_timeout_ms)
            .field("allowed_prefixes", &self.allowed_prefixes)
            .field("default_prefix", &self.default_prefix)
            .field("shared_key_prefix", &self.shared_key_prefix)
            .field("tick_period_ms", &self.tick_period_ms)
            .field("key_names", &self.key_names)
            .field("failure_retry_after_secs", &self.failure_retry_after_secs)
            .field("kong_upstream_uri", &self.kong_upstream_uri)
            .field("consumers", &self.consumers)
            .field("consumer_header", &self.consumer_header)
            .field(
                "rejected_token_min_age_secs",
                &self.rejected_token_min_age_secs,
            )
            .field(
                "forced_refresh_min_interval_secs",
                &self.forced_refresh_min_interval_secs,
            )
            .finish()
    }
}

/// Every configuration field (the schema in `advoware_auth.meta.json` must list exactly these).
pub const KNOWN_FIELDS: [&str; 28] = [
    "upstream_host",
    "api_path_prefix",
    "token_target",
    "token_scheme",
    "token_authority",
    "token_path",
    "kanzlei",
    "database",
    "user",
    "role",
    "product",
    "app_id",
    "password",
    "api_key",
    "token_max_lifetime_secs",
    "refresh_margin_secs",
    "dispatch_timeout_ms",
    "allowed_prefixes",
    "default_prefix",
    "shared_key_prefix",
    "tick_period_ms",
    "key_names",
    "failure_retry_after_secs",
    "kong_upstream_uri",
    "consumers",
    "consumer_header",
    "rejected_token_min_age_secs",
    "forced_refresh_min_interval_secs",
];

/// Every problem found in a configuration, in field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid advoware_auth configuration: {}",
            self.0.join("; ")
        )
    }
}

impl std::error::Error for ConfigError {}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    problems: Vec<String>,
}

impl Fields<'_> {
    fn string(&mut self, name: &str, required: bool, default: &str) -> String {
        match self.obj.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.problems.push(format!("`{name}` is required"));
                }
                default.to_owned()
            }
            Some(Value::String(s)) => {
                if required && s.trim().is_empty() {
                    self.problems.push(format!("`{name}` must not be empty"));
                }
                if s.chars().any(char::is_control) {
                    self.problems
                        .push(format!("`{name}` contains control characters"));
                }
                s.clone()
            }
            Some(_) => {
                self.problems.push(format!("`{name}` must be a string"));
                default.to_owned()
            }
        }
    }

    fn opt_string(&mut self, name: &str) -> Option<String> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(_) => {
                let s = self.string(name, true, "");
                (!s.is_empty()).then_some(s)
            }
        }
    }

    fn int(&mut self, name: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.obj.get(name) {
            None | Some(Value::Null) => default,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => v,
                _ => {
                    self.problems
                        .push(format!("`{name}` must be an integer from {min} to {max}"));
                    default
                }
            },
            Some(_) => {
                self.problems.push(format!("`{name}` must be an integer"));
                default
            }
        }
    }

    fn boolean(&mut self, name: &str, default: bool) -> bool {
        match self.obj.get(name) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problems
                    .push(format!("`{name}` must be true or false"));
                default
            }
        }
    }

    fn strings(&mut self, name: &str, default: &[&str]) -> Vec<String> {
        match self.obj.get(name) {
            None | Some(Value::Null) => default.iter().map(|s| (*s).to_owned()).collect(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(s) if !s.trim().is_empty() && !s.chars().any(char::is_control) => {
                            out.push(s.to_owned())
                        }
                        _ => {
                            self.problems
                                .push(format!("`{name}` must contain only non-empty strings"));
                            return default.iter().map(|s| (*s).to_owned()).collect();
                        }
                    }
                }
                out
            }
            Some(_) => {
                self.problems
                    .push(format!("`{name}` must be an array of strings"));
                default.iter().map(|s| (*s).to_owned()).collect()
            }
        }
    }
}

impl Fields<'_> {
    /// `consumers`: `{username: {methods: [..], prefixes: [..]}}`; every prefix
    /// must lie under `allowed` and use only unreserved path characters (so
    /// matching the percent-encoded upstream path needs no decoding).
    fn consumers(&mut self, allowed: &[String]) -> Option<BTreeMap<String, ConsumerScope>> {
        let value = self.obj.get("consumers")?;
        let Some(map) = value.as_object() else {
            self.problems
                .push("`consumers` must be an object of consumer username → scope".into());
            return None;
        };
        if map.is_empty() {
            self.problems.push(
                "`consumers` must name at least one consumer (omit it to give every caller the full scope)"
                    .into(),
            );
        }
        let mut out = BTreeMap::new();
        for (name, scope) in map {
            let at = format!("`consumers.{name}`");
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                self.problems
                    .push("`consumers` keys must be consumer usernames".into());
                continue;
            }
            let Some(scope) = scope.as_object() else {
                self.problems.push(format!(
                    "{at} must be an object with `methods` and `prefixes`"
                ));
                continue;
            };
            for key in scope.keys() {
                if key != "methods" && key != "prefixes" {
                    self.problems.push(format!("{at}: unknown field `{key}`"));
                }
            }
            let list = |field: &str| -> Option<Vec<String>> {
                let items = scope.get(field)?.as_array()?;
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect();
                strings.filter(|s| !s.is_empty())
            };
            let Some(methods) = list("methods") else {
                self.problems
                    .push(format!("{at}.methods must be a non-empty array of methods"));
                continue;
            };
            for m in &methods {
                if !SCOPE_METHODS.contains(&m.as_str()) {
                    self.problems.push(format!(
                        "{at}.methods: `{m}` is not one of {}",
                        SCOPE_METHODS.join(", ")
                    ));
                }
            }
            let Some(prefixes) = list("prefixes") else {
                self.problems
                    .push(format!("{at}.prefixes must be a non-empty array of paths"));
                continue;
            };
            for p in &prefixes {
                let clean = p.trim_matches('/');
                let chars_ok = !clean.is_empty()
                    && clean
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
                    && !clean
                        .split('/')
                        .any(|seg| seg.is_empty() || seg == "." || seg == "..");
                if !chars_ok {
                    self.problems.push(format!(
                        "{at}.prefixes: `{p}` must be a path of letters, digits, `-._~` and `/`"
                    ));
                } else if !allowed.iter().any(|a| under_prefix(clean, a)) {
                    self.problems.push(format!(
                        "{at}.prefixes: `{p}` does not lie under `allowed_prefixes`"
                    ));
                }
            }
            out.insert(name.clone(), ConsumerScope { methods, prefixes });
        }
        Some(out)
    }
}

/// The host part of a `host[:port]` / `IP[:port]` / `[v6]:port` target.
fn target_host(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => target,
    }
}

/// Why an https token call to `authority` can never work in Kong, if it cannot.
///
/// ngx_wasm_module takes the TLS server name (SNI) of a dispatch from the call's
/// `:authority` (port stripped; the target's host when there is none) and, as RFC 6066
/// demands, refuses an IP literal: the call fails with "could not derive tls sni from
/// host" before any byte is sent (`ngx_wasm_socket_tcp.c`).
pub fn https_authority_problem(authority: &str) -> Option<String> {
    let host = target_host(authority);
    if host.is_empty() || authority.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return Some(
            "`token_scheme` is `https` but the token call's authority (`token_authority`, by default the host of `token_target`) is an IP address: Kong's ngx_wasm_module takes the TLS server name from it and refuses an IP (\"could not derive tls sni from host\"), so every token fetch would fail; set `token_authority` to the security gateway's host name (e.g. `security.advo-net.net`) or use a host name in `token_target`"
                .into(),
        );
    }
    None
}

fn valid_target(target: &str) -> bool {
    if target.is_empty()
        || target.contains('/')
        || target.contains("://")
        || target.chars().any(char::is_whitespace)
    {
        return false;
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
            host.ends_with(']') || port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        Some(_) => false,
        None => true,
    }
}

impl Config {
    /// Parses and validates the JSON configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError(vec![format!("not JSON ({e})")]))?;
        Self::from_value(&value)
    }

    /// Validates an already parsed configuration.
    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        let Some(obj) = value.as_object() else {
            return Err(ConfigError(vec!["must be a JSON object".into()]));
        };
        let mut f = Fields {
            obj,
            problems: Vec::new(),
        };
        for key in obj.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                f.problems.push(format!("unknown field `{key}`"));
            }
        }

        let upstream_host = f.opt_string("upstream_host");
        let api_path_prefix = f.string("api_path_prefix", false, "");
        if !api_path_prefix.is_empty()
            && (!api_path_prefix.starts_with('/')
                || api_path_prefix.contains(['?', '#', ' ', '\\']))
        {
            f.problems.push(
                "`api_path_prefix` must start with `/` and contain no `?`, `#`, space or backslash"
                    .into(),
            );
        }
        let token_target = f.string("token_target", true, "");
        if !token_target.is_empty() && !valid_target(&token_target) {
            f.problems.push(
                "`token_target` must be `IP[:port]` or `host[:port]` (no scheme, no path; a Kong upstream name does not work)"
                    .into(),
            );
        }
        let token_scheme = f.string("token_scheme", false, "https");
        if token_scheme != "http" && token_scheme != "https" {
            f.problems
                .push("`token_scheme` must be `http` or `https`".into());
        }
        let token_authority = f
            .opt_string("token_authority")
            .unwrap_or_else(|| target_host(&token_target).to_owned());
        if token_scheme == "https" && !token_target.is_empty() {
            if let Some(problem) = https_authority_problem(&token_authority) {
                f.problems.push(problem);
            }
        }
        let token_path = f.string("token_path", false, DEFAULT_TOKEN_PATH);
        if !token_path.starts_with('/') || token_path.contains(['#', ' ']) {
            f.problems.push("`token_path` must start with `/`".into());
        }
        let kanzlei = f.string("kanzlei", true, "");
        let database = f.string("database", true, "");
        let user = f.string("user", true, "");
        let role = f.int("role", 2, 0, u64::from(u32::MAX)) as u32;
        let product = f.int("product", 64, 0, u64::from(u32::MAX)) as u32;
        let app_id = f.string("app_id", true, "");
        let password = f.string("password", true, "");
        let api_key_b64 = f.string("api_key", true, "");
        let api_key = if api_key_b64.trim().is_empty() {
            Vec::new()
        } else {
            match bitbylaw_core::advoware::decode_api_key(&api_key_b64) {
                Ok(k) => k,
                Err(_) => {
                    // The decoder's message could quote part of the key: say only what is wrong.
                    f.problems
                        .push("`api_key` must be the base64 API key issued by Advoware".into());
                    Vec::new()
                }
            }
        };
        let token_max_lifetime_secs = f.int("token_max_lifetime_secs", 3300, 60, 86_400);
        let refresh_margin_secs = f.int("refresh_margin_secs", 300, 0, 86_400);
        if refresh_margin_secs >= token_max_lifetime_secs {
            f.problems.push(
                "`refresh_margin_secs` must be smaller than `token_max_lifetime_secs`".into(),
            );
        }
        let dispatch_timeout_ms = f.int("dispatch_timeout_ms", 5000, 100, 60_000);
        let allowed_prefixes = f.strings("allowed_prefixes", &DEFAULT_ALLOWED_PREFIXES);
        if allowed_prefixes.is_empty() {
            f.problems
                .push("`allowed_prefixes` must not be empty".into());
        }
        let default_prefix = f.string("default_prefix", false, DEFAULT_PREFIX);
        if !allowed_prefixes.is_empty()
            && bitbylaw_core::endpoint::advoware_path("x", &allowed_prefixes, &default_prefix)
                .is_err()
        {
            f.problems
                .push("`default_prefix` must lie under one of `allowed_prefixes`".into());
        }
        let shared_key_prefix = f.string("shared_key_prefix", false, DEFAULT_SHARED_KEY_PREFIX);
        if shared_key_prefix.is_empty() || shared_key_prefix.contains('/') {
            f.problems
                .push("`shared_key_prefix` must be non-empty and contain no `/`".into());
        }
        let tick_period_ms = f.int("tick_period_ms", 5000, 0, 3_600_000);
        if tick_period_ms != 0 && tick_period_ms < 100 {
            f.problems
                .push("`tick_period_ms` must be 0 (off) or at least 100".into());
        }
        if tick_period_ms / 1000 >= refresh_margin_secs && tick_period_ms != 0 {
            f.problems.push("`tick_period_ms` must be shorter than `refresh_margin_secs`, or ticks cannot refresh in time".into());
        }
        let key_names = f.strings("key_names", &["apikey"]);
        let failure_retry_after_secs = f.int("failure_retry_after_secs", 5, 1, 3600);
        let kong_upstream_uri = f.boolean("kong_upstream_uri", true);
        let consumers = f.consumers(&allowed_prefixes);
        let consumer_header = f
            .string("consumer_header", false, DEFAULT_CONSUMER_HEADER)
            .to_ascii_lowercase();
        if consumer_header.is_empty()
            || !consumer_header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            f.problems
                .push("`consumer_header` must be a header name".into());
        }
        let rejected_token_min_age_secs = f.int("rejected_token_min_age_secs", 60, 0, 86_400);
        let forced_refresh_min_interval_secs =
            f.int("forced_refresh_min_interval_secs", 300, 0, 86_400);

        if !f.problems.is_empty() {
            return Err(ConfigError(f.problems));
        }
        Ok(Config {
            upstream_host,
            api_path_prefix: api_path_prefix.trim_end_matches('/').to_owned(),
            token_target,
            token_scheme,
            token_authority,
            token_path,
            credentials: Credentials {
                app_id,
                kanzlei,
                database,
                user,
                role,
                product,
                password,
                api_key,
            },
            token_max_lifetime_secs,
            refresh_margin_secs,
            dispatch_timeout_ms,
            allowed_prefixes,
            default_prefix,
            shared_key_prefix,
            tick_period_ms,
            key_names,
            failure_retry_after_secs,
            kong_upstream_uri,
            consumers,
            consumer_header,
            rejected_token_min_age_secs,
            forced_refresh_min_interval_secs,
        })
    }

    /// Shared-data key of the last 401-forced refresh (its rate limit).
    pub fn forced_refresh_key(&self) -> String {
        format!("{}/forced", self.shared_key_prefix)
    }

    /// Shared-data key of the cached token.
    pub fn token_key(&self) -> String {
        format!("{}/token", self.shared_key_prefix)
    }

    /// Shared-data key of the fetch lock.
    pub fn lock_key(&self) -> String {
        format!("{}/lock", self.shared_key_prefix)
    }

    /// How long a fetch lock stays valid: the call's timeout plus slack, so a
    /// fetch whose instance crashed blocks nobody for longer than that.
    pub fn lock_ttl_ms(&self) -> u64 {
        self.dispatch_timeout_ms + 1000
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "token_target": "security.advo-net.test:443",
            "kanzlei": "k", "database": "db", "user": "API",
            "app_id": "app", "password": "pw-secret", "api_key": "dGVzdC1zZWNyZXQta2V5"
        })
    }

    #[test]
    fn defaults() {
        let c = Config::from_value(&minimal()).unwrap();
        assert_eq!(c.token_scheme, "https");
        assert_eq!(c.token_authority, "security.advo-net.test");
        assert_eq!(c.token_path, "/api/v1/Token");
        assert_eq!((c.credentials.role, c.credentials.product), (2, 64));
        assert_eq!(c.credentials.api_key, b"test-secret-key");
        assert_eq!(c.allowed_prefixes, DEFAULT_ALLOWED_PREFIXES);
        assert_eq!(c.default_prefix, "api/v1/advonet/");
        assert_eq!(c.token_key(), "advoware_auth/token");
        assert_eq!(c.lock_key(), "advoware_auth/lock");
        assert_eq!(c.key_names, ["apikey"]);
        assert_eq!(c.lock_ttl_ms(), 6000);
        assert_eq!(c.upstream_host, None);
        assert_eq!(c.consumers, None);
        assert_eq!(c.consumer_header, "x-consumer-username");
        assert_eq!(
            (
                c.rejected_token_min_age_secs,
                c.forced_refresh_min_interval_secs
            ),
            (60, 300)
        );
        assert_eq!(c.forced_refresh_key(), "advoware_auth/forced");
    }

    #[test]
    fn https_with_an_ip_authority_is_refused_with_what_to_set() {
        for (target, authority) in [
            ("10.0.0.5:443", None),
            ("10.0.0.5", None),
            ("[::1]:443", None),
            ("gw.example:443", Some("10.0.0.5")),
            ("gw.example:443", Some("[2001:db8::1]:443")),
        ] {
            let mut v = minimal();
            v["token_target"] = json!(target);
            if let Some(a) = authority {
                v["token_authority"] = json!(a);
            }
            let err = Config::from_value(&v).unwrap_err().to_string();
            assert!(
                err.contains("could not derive tls sni from host")
                    && err.contains("set `token_authority`"),
                "{target} {authority:?}: {err}"
            );
            // Plain http has no SNI; a host name as authority is fine.
            let mut http = v.clone();
            http["token_scheme"] = json!("http");
            assert!(Config::from_value(&http).is_ok(), "{target} over http");
            v["token_authority"] = json!("security.advo-net.net");
            assert_eq!(
                Config::from_value(&v).unwrap().token_authority,
                "security.advo-net.net"
            );
        }
    }

    #[test]
    fn consumer_scopes() {
        let mut v = minimal();
        v["consumers"] = json!({
            "worker": {"methods": ["GET", "PUT"], "prefixes": ["api/v1/advonet/Termine", "/api/v1/Akten/"]},
        });
        let c = Config::from_value(&v).unwrap();
        let scope = &c.consumers.as_ref().unwrap()["worker"];
        assert!(scope.allows_method("PUT") && !scope.allows_method("DELETE"));
        assert!(!scope.allows_method("put"), "methods are compared as sent");
        assert!(scope.allows_path("api/v1/advonet/Termine"));
        assert!(scope.allows_path("api/v1/advonet/Termine/5"));
        assert!(scope.allows_path("api/v1/Akten/7"));
        assert!(!scope.allows_path("api/v1/advonet/TermineActiveSync"));
        assert!(!scope.allows_path("api/v1/advonet/termine/5"));
        assert!(!scope.allows_path("api/v1/advonet/Beteiligte/5"));

        v["consumers"] = json!({
            "a": {"methods": ["get"], "prefixes": ["api/v1/advonet/X"]},
            "b": {"methods": ["GET"], "prefixes": ["api/v1/Token"]},
            "c": {"methods": [], "prefixes": ["api/v1/advonet/X"]},
            "d": {"methods": ["GET"], "prefixes": ["api/v1/advonet/../Token"], "extra": 1},
            "e": "all",
        });
        v["consumer_header"] = json!("x consumer");
        let text = Config::from_value(&v).unwrap_err().to_string();
        for needle in [
            "`consumers.a`.methods: `get`",
            "`consumers.b`.prefixes: `api/v1/Token` does not lie under `allowed_prefixes`",
            "`consumers.c`.methods must be a non-empty array",
            "`consumers.d`: unknown field `extra`",
            "`consumers.d`.prefixes: `api/v1/advonet/../Token` must be a path",
            "`consumers.e` must be an object",
            "`consumer_header`",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
        v["consumers"] = json!({});
        v["consumer_header"] = json!("X-Consumer-Username");
        assert!(Config::from_value(&v)
            .unwrap_err()
            .to_string()
            .contains("at least one consumer"));
    }

    #[test]
    fn every_problem_is_named_and_no_secret_leaks() {
        let bad = json!({
            "token_target": "http://gw/x", "kanzlei": "", "user": 5,
            "app_id": "a", "password": "hunter2-secret", "api_key": "not base64 hunter3!",
            "role": -1, "token_scheme": "ftp", "refresh_margin_secs": 4000,
            "allowed_prefixes": [], "tikc_period_ms": 5
        });
        let err = Config::from_value(&bad).unwrap_err();
        let text = err.to_string();
        for needle in [
            "tikc_period_ms",
            "token_target",
            "`kanzlei` must not be empty",
            "`database` is required",
            "`user` must be a string",
            "`role`",
            "token_scheme",
            "api_key",
            "refresh_margin_secs",
            "allowed_prefixes",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
        assert!(!text.contains("hunter"), "{text}");
        assert!(!format!("{err:?}").contains("hunter"));
    }

    #[test]
    fn debug_redacts() {
        let c = Config::from_value(&minimal()).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("pw-secret") && !dbg.contains("116, 101"),
            "{dbg}"
        );
    }

    #[test]
    fn targets() {
        assert!(valid_target("advoware.test:8080"));
        assert!(valid_target("127.0.0.1"));
        assert!(valid_target("[::1]:443"));
        assert!(!valid_target("https://x"));
        assert!(!valid_target("x:0"));
        assert!(!valid_target("x/y"));
        assert!(!valid_target(":80"));
        assert_eq!(target_host("gw.example:8443"), "gw.example");
        assert_eq!(target_host("[::1]:443"), "::1");
        assert_eq!(target_host("gw"), "gw");
    }

    #[test]
    fn not_json_or_not_object() {
        assert!(Config::parse(b"nope").is_err());
        assert!(Config::parse(b"[]").is_err());
        let mut v = minimal();
        v["default_prefix"] = json!("other/");
        assert!(Config::from_value(&v)
            .unwrap_err()
            .to_string()
            .contains("default_prefix"));
        v["default_prefix"] = json!("api/v1/advonet/");
        v["api_path_prefix"] = json!("/base/");
        assert_eq!(Config::from_value(&v).unwrap().api_path_prefix, "/base");
    }
}
