//! Kong 3.9's rules for a rendered DB-less declarative config, checked before Kong sees it.
//!
//! Kong would refuse to start (or, worse, start with a literal `{vault://…}` string as a
//! password) on most of these; catching them here turns a failed deploy into a list of
//! problems. Every rule runs and every problem is collected — fixing one at a time per
//! deploy attempt is the failure mode this module exists to avoid.
//!
//! Filters whose configuration rules go beyond JSON Schema are also checked with their own
//! parser — the code their `on_configure` runs ([`filter_own_problems`]) — so a render refuses
//! what the filter would refuse in Kong, and cross-checks tie a filter's config to the rest of
//! the file (`advoware_auth`'s `consumers` must be consumers here, behind key-auth).
//!
//! Messages name the place (`services[worker].routes[hook].filter_chains[0].filters[advoware_auth]`)
//! and the rule, never a config value: configs hold secrets, and jsonschema's own messages
//! quote the offending value, so they are rebuilt from the error kind and paths.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use jsonschema::error::ValidationErrorKind;
use serde_json::Value as Json;

use crate::error::Problem;
use crate::guard;
use crate::model::{FilterChain, KongConfig, Plugin, Route};

/// The plugins bundled with Kong OSS 3.9 (`kong/constants.lua`). Kong registers every wasm
/// filter as a plugin name too, so a filter named like one of these makes Kong refuse to start.
pub const BUNDLED_PLUGINS: &[&str] = &[
    "jwt",
    "acl",
    "correlation-id",
    "cors",
    "oauth2",
    "tcp-log",
    "udp-log",
    "file-log",
    "http-log",
    "key-auth",
    "hmac-auth",
    "basic-auth",
    "ip-restriction",
    "request-transformer",
    "response-transformer",
    "request-size-limiting",
    "rate-limiting",
    "response-ratelimiting",
    "syslog",
    "loggly",
    "datadog",
    "ldap-auth",
    "statsd",
    "bot-detection",
    "aws-lambda",
    "request-termination",
    "prometheus",
    "proxy-cache",
    "session",
    "acme",
    "grpc-gateway",
    "grpc-web",
    "pre-function",
    "post-function",
    "azure-functions",
    "zipkin",
    "opentelemetry",
    "ai-proxy",
    "ai-prompt-decorator",
    "ai-prompt-template",
    "ai-request-transformer",
    "ai-response-transformer",
    "ai-prompt-guard",
    "standard-webhooks",
    "redirect",
];

/// Location label of top-level filter chains (they name their route/service themselves).
const TOP_LEVEL: &str = "<top level>";

/// HTTP methods a route may match. Kong itself accepts any upper-case token, but anything
/// outside this list in our config is a typo.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Validates `config` with filter files and their `.meta.json` looked up in `filters_dir` only.
pub fn validate(config: &KongConfig, filters_dir: &Path) -> Result<(), Vec<Problem>> {
    validate_with_meta_dirs(config, filters_dir, &[])
}

/// Validates `config`; a filter's `<name>.meta.json` is looked up beside its `.wasm` in
/// `filters_dir` first, then in each of `meta_dirs` as `<dir>/<name>.meta.json` or
/// `<dir>/<name>/<name>.meta.json` (the source tree, `wasm-plugins/`, before the deploy
/// copies the file next to the `.wasm` — which it must, for Kong to accept a JSON config).
pub fn validate_with_meta_dirs(
    config: &KongConfig,
    filters_dir: &Path,
    meta_dirs: &[&Path],
) -> Result<(), Vec<Problem>> {
    let mut v = Validator {
        problems: Vec::new(),
        filters_dir,
        meta_dirs,
        schemas: HashMap::new(),
        route_paths: Vec::new(),
    };
    v.config(config);
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(v.problems)
    }
}

/// Parses rendered YAML and validates it, also scanning the *whole* document (including
/// fields the typed model does not know) for `${…}` placeholders left unrendered.
pub fn validate_document(
    yaml: &str,
    filters_dir: &Path,
    meta_dirs: &[&Path],
) -> Result<KongConfig, Vec<Problem>> {
    let config =
        KongConfig::parse(yaml).map_err(|e| vec![Problem::new("<document>", e.to_string())])?;
    let mut problems = match validate_with_meta_dirs(&config, filters_dir, meta_dirs) {
        Ok(()) => Vec::new(),
        Err(p) => p,
    };
    if let Ok(tree) = serde_yaml::from_str::<serde_yaml::Value>(yaml) {
        let mut found = Vec::new();
        scan_yaml(&tree, "", &mut found);
        // The typed checks already report placeholders in the fields they know (with nicer
        // paths); this catches the rest, e.g. in fields the model does not have.
        for (at, name) in found {
            let message = format!("unrendered placeholder `${{{name}}}`");
            if !problems.iter().any(|p| p.message == message) {
                problems.push(Problem::new(at, message));
            }
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// A filter's schema as loaded from its meta.json: `None` when missing or unusable (already reported).
type SchemaSlot = Option<(jsonschema::Validator, bool)>;

struct Validator<'a> {
    problems: Vec<Problem>,
    filters_dir: &'a Path,
    meta_dirs: &'a [&'a Path],
    /// Per filter name: compiled schema and whether it is an object schema; loaded once.
    schemas: HashMap<String, SchemaSlot>,
    /// The `paths` of the route whose filter chains are being checked (else empty).
    route_paths: Vec<String>,
}

impl Validator<'_> {
    fn push(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(at, message));
    }

    fn config(&mut self, c: &KongConfig) {
        if c.format_version != serde_yaml::Value::String("3.0".into()) {
            let what = match &c.format_version {
                serde_yaml::Value::String(_) => "a different string",
                serde_yaml::Value::Number(_) => "a number (quote it)",
                serde_yaml::Value::Null => "missing",
                _ => "not a string",
            };
            self.push(
                "_format_version",
                format!("must be the string \"3.0\", is {what}"),
            );
        }

        let mut service_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut route_names: BTreeMap<&str, String> = BTreeMap::new();
        for (i, s) in c.services.iter().enumerate() {
            let at = if s.name.is_empty() {
                format!("services[{i}]")
            } else {
                format!("services[{}]", s.name)
            };
            if s.name.is_empty() {
                self.push(&at, "service name is empty");
            } else if service_names.insert(&s.name, i).is_some() {
                self.push(&at, "duplicate service name");
            }
            self.service_url(&at, &s.url);
            for (t, name) in [
                (s.connect_timeout, "connect_timeout"),
                (s.read_timeout, "read_timeout"),
                (s.write_timeout, "write_timeout"),
            ] {
                if t == 0 || t > 2_147_483_646 {
                    self.push(
                        format!("{at}.{name}"),
                        "must be between 1 and 2147483646 ms",
                    );
                }
            }
            self.plugins(&at, &s.plugins);
            self.chains(&at, &s.filter_chains);
            for (j, r) in s.routes.iter().enumerate() {
                let rat = if r.name.is_empty() {
                    format!("{at}.routes[{j}]")
                } else {
                    format!("{at}.routes[{}]", r.name)
                };
                if r.name.is_empty() {
                    self.push(&rat, "route name is empty");
                } else if let Some(first) = route_names.insert(&r.name, rat.clone()) {
                    self.push(&rat, format!("duplicate route name (also {first})"));
                }
                self.route(&rat, r);
            }
        }
        self.plugins("plugins", &c.plugins);
        self.chains(TOP_LEVEL, &c.filter_chains);
        self.consumers(c);
        self.consumer_scopes(c);
        self.acl_groups(c);
    }

    /// An `acl` plugin's `allow` group that no consumer holds locks everyone out (a typo in
    /// either place); Kong would start and answer 403 to every request.
    fn acl_groups(&mut self, c: &KongConfig) {
        for p in c.all_plugins().filter(|p| p.name == "acl") {
            let Some(allow) = p.config.get("allow").and_then(Json::as_array) else {
                continue;
            };
            for group in allow.iter().filter_map(Json::as_str) {
                let held = c
                    .consumers
                    .iter()
                    .any(|k| k.acls.iter().any(|a| a.group == group));
                if !held {
                    self.push(
                        format!("plugins[acl].config.allow[{group}]"),
                        "no consumer is in this group (consumers[].acls), so nobody could pass",
                    );
                }
            }
        }
    }

    /// `advoware_auth` with `consumers`: every scoped name is a consumer of this file, and the
    /// route authenticates with key-auth, whose `X-Consumer-Username` (set by Kong, overwriting
    /// the client's) is what the filter reads — without key-auth a client could name any consumer.
    fn consumer_scopes(&mut self, c: &KongConfig) {
        for (s, r, chains) in c.route_filter_chains() {
            let at = format!("services[{}].routes[{}]", s.name, r.name);
            let scoped: Vec<&serde_json::Map<String, Json>> = chains
                .iter()
                .filter(|ch| ch.enabled)
                .flat_map(|ch| ch.filters.iter())
                .filter(|f| f.enabled && f.name == "advoware_auth")
                .filter_map(|f| f.config.as_ref()?.get("consumers")?.as_object())
                .collect();
            if scoped.is_empty() {
                continue;
            }
            let key_auth = [&r.plugins, &s.plugins, &c.plugins]
                .into_iter()
                .find_map(|layer| layer.iter().find(|p| p.name == "key-auth"))
                .is_some_and(|p| p.enabled);
            if !key_auth {
                self.push(
                    &at,
                    "advoware_auth `consumers` needs key-auth on the route (it sets X-Consumer-Username); without it a client could name any consumer",
                );
            }
            for consumers in scoped {
                for name in consumers.keys() {
                    if !c.consumers.iter().any(|k| &k.username == name) {
                        self.push(
                            format!(
                                "{at}.filter_chains.filters[advoware_auth].config.consumers.{name}"
                            ),
                            "no consumer with this username in `consumers`",
                        );
                    }
                }
            }
        }
    }

    fn service_url(&mut self, at: &str, raw: &str) {
        let at = format!("{at}.url");
        if let Some(name) = first_placeholder(raw) {
            self.push(at, format!("unrendered placeholder `${{{name}}}`"));
            return;
        }
        match url::Url::parse(raw) {
            Err(e) => self.push(at, format!("not a URL ({e})")),
            Ok(u) => {
                if u.scheme() != "http" && u.scheme() != "https" {
                    self.push(
                        &at,
                        format!("scheme must be http or https, is {}", u.scheme()),
                    );
                }
                if u.host_str().is_none_or(str::is_empty) {
                    self.push(&at, "has no host");
                }
                if !u.username().is_empty() || u.password().is_some() {
                    self.push(&at, "must not carry credentials");
                }
            }
        }
    }

    fn route(&mut self, at: &str, r: &Route) {
        for (k, p) in r.paths.iter().enumerate() {
            let pat = format!("{at}.paths[{k}]");
            if let Some(name) = first_placeholder(p) {
                self.push(pat, format!("unrendered placeholder `${{{name}}}`"));
            } else if let Some(re) = p.strip_prefix('~') {
                if let Some(why) = unsupported_regex(re) {
                    self.push(pat, format!("regex path {why}"));
                }
            } else if !p.starts_with('/') {
                self.push(pat, "must start with `/` (or `~` for a regex)");
            }
        }
        if let Some(methods) = &r.methods {
            if methods.is_empty() {
                self.push(
                    format!("{at}.methods"),
                    "empty list (omit it to match any method)",
                );
            }
            for (k, m) in methods.iter().enumerate() {
                if !METHODS.contains(&m.as_str()) {
                    let hint = if METHODS.contains(&m.to_ascii_uppercase().as_str()) {
                        " (Kong needs upper case)"
                    } else {
                        ""
                    };
                    self.push(
                        format!("{at}.methods[{k}]"),
                        format!("`{m}` is not an HTTP method{hint}"),
                    );
                }
            }
        }
        self.plugins(at, &r.plugins);
        self.route_paths.clone_from(&r.paths);
        self.chains(at, &r.filter_chains);
        self.route_paths.clear();
    }

    fn plugins(&mut self, at: &str, plugins: &[Plugin]) {
        for p in plugins {
            let pat = format!("{at}.plugins[{}]", p.name);
            if p.name == "rate-limiting"
                && p.config.get("policy").and_then(Json::as_str) == Some("cluster")
            {
                self.push(
                    &pat,
                    "policy `cluster` needs a database; use `local` or `redis` in DB-less mode",
                );
            }
            if p.name == "request-transformer" {
                self.request_transformer(&pat, &p.config);
            }
            let mut found = Vec::new();
            scan_json(&p.config, "config", &mut found);
            for (path, name) in found {
                self.push(
                    format!("{pat}.{path}"),
                    format!("unrendered placeholder `${{{name}}}`"),
                );
            }
        }
    }

    /// Kong's schema wants `name:value` in every header list but `remove`; and Kong evaluates
    /// `$(…)` in a value as a Lua template, so a rendered secret containing it (a token from
    /// the environment) would not be sent as written. Values are never quoted (secrets).
    fn request_transformer(&mut self, at: &str, config: &Json) {
        for op in ["rename", "replace", "add", "append"] {
            let Some(list) = config
                .get(op)
                .and_then(|o| o.get("headers"))
                .and_then(Json::as_array)
            else {
                continue;
            };
            for (i, entry) in list.iter().enumerate() {
                let eat = format!("{at}.config.{op}.headers[{i}]");
                match entry.as_str().and_then(|e| e.split_once(':')) {
                    Some((name, value)) if !name.is_empty() => {
                        if value.contains("$(") {
                            self.push(
                                &eat,
                                "value contains `$(`, which Kong evaluates as a template",
                            );
                        }
                    }
                    _ => self.push(&eat, "must be `name:value`"),
                }
            }
        }
    }

    fn chains(&mut self, at: &str, chains: &[FilterChain]) {
        // Kong's filter_chains entity has `route` and `service` foreign keys marked unique:
        // one chain per route and per service (put several filters into that one chain).
        if chains.len() > 1 && at != TOP_LEVEL {
            self.push(
                format!("{at}.filter_chains"),
                format!("{} filter chains; Kong allows one per route or service (list the filters in one chain)", chains.len()),
            );
        }
        for (i, chain) in chains.iter().enumerate() {
            let cat = match &chain.name {
                Some(n) => format!("{at}.filter_chains[{n}]"),
                None => format!("{at}.filter_chains[{i}]"),
            };
            if chain.filters.is_empty() {
                self.push(&cat, "filter chain has no filters");
            }
            for (j, f) in chain.filters.iter().enumerate() {
                let fat = if f.name.is_empty() {
                    format!("{cat}.filters[{j}]")
                } else {
                    format!("{cat}.filters[{}]", f.name)
                };
                self.filter(&fat, &f.name, f.config.as_ref());
            }
        }
    }

    fn filter(&mut self, at: &str, name: &str, config: Option<&Json>) {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.push(
                at,
                "filter name must be non-empty and use only letters, digits, `_` and `-`",
            );
            return;
        }
        if BUNDLED_PLUGINS.contains(&name) {
            self.push(
                at,
                format!("filter name `{name}` collides with a plugin bundled with Kong 3.9"),
            );
        }
        if let Some(c) = config {
            let mut found = Vec::new();
            scan_json(c, "config", &mut found);
            for (path, var) in found {
                self.push(
                    format!("{at}.{path}"),
                    format!("unrendered placeholder `${{{var}}}`"),
                );
            }
            if name == guard::FILTER {
                for (path, msg) in guard::check(c, &self.route_paths) {
                    self.push(format!("{at}.config.{path}"), msg);
                }
            }
            let mut vault = Vec::new();
            scan_vault(c, "config", &mut vault);
            for path in vault {
                self.push(
                    format!("{at}.{path}"),
                    "`{vault://…}` reference: Kong 3.9 passes filter configs as written, so the filter would get the literal string; render the secret in instead",
                );
            }
        }
        if !self.schemas.contains_key(name) {
            let slot = self.load_schema(at, name);
            self.schemas.insert(name.to_string(), slot);
        }
        let Some(Some((schema, is_object))) = self.schemas.get(name) else {
            return;
        };
        let mut found = Vec::new();
        match config {
            None if *is_object => found.push((
                String::new(),
                "filter has an object config schema but no config (Kong rejects this)".to_string(),
            )),
            None => {}
            Some(c) => {
                for e in schema.iter_errors(c) {
                    found.push((
                        e.instance_path.as_str().to_string(),
                        describe(&e.kind, e.schema_path.as_str()),
                    ));
                }
            }
        }
        // The filter's own rules only once the schema is satisfied (no duplicate reports
        // of the same missing field; the schema's are more precise about the place).
        if let (true, Some(c)) = (found.is_empty(), config) {
            for problem in filter_own_problems(name, c) {
                found.push((String::new(), problem));
            }
        }
        for (path, msg) in found {
            let where_ = if path.is_empty() {
                at.to_string()
            } else {
                format!("{at}.config{path}")
            };
            self.push(where_, msg);
        }
    }

    /// Finds the `.wasm` and the `.meta.json` of filter `name` and compiles its schema.
    /// Problems are reported at the first place the filter is used.
    fn load_schema(&mut self, at: &str, name: &str) -> SchemaSlot {
        let wasm = self.filters_dir.join(format!("{name}.wasm"));
        if !wasm.is_file() {
            // Without the module the meta.json question is moot; one problem is enough.
            self.push(at, format!("filter module {} not found", wasm.display()));
            return None;
        }
        let meta_file = format!("{name}.meta.json");
        let mut candidates: Vec<PathBuf> = vec![self.filters_dir.join(&meta_file)];
        for d in self.meta_dirs {
            candidates.push(d.join(&meta_file));
            candidates.push(d.join(name).join(&meta_file));
        }
        let Some(meta_path) = candidates.iter().find(|p| p.is_file()) else {
            let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            self.push(
                at,
                format!("no {meta_file} (Kong accepts a JSON config only with one beside the .wasm); looked in {}", list.join(", ")),
            );
            return None;
        };
        let mat = meta_path.display().to_string();
        let text = match std::fs::read_to_string(meta_path) {
            Ok(t) => t,
            Err(e) => {
                self.push(mat, format!("cannot read: {e}"));
                return None;
            }
        };
        let meta: Json = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                self.push(mat, format!("not JSON: {e}"));
                return None;
            }
        };
        let Some(schema) = meta.get("config_schema") else {
            self.push(mat, "has no `config_schema`");
            return None;
        };
        let mut empty_required = Vec::new();
        find_empty_required(schema, "config_schema", &mut empty_required);
        if !empty_required.is_empty() {
            for p in empty_required {
                self.push(
                    format!("{mat}: {p}"),
                    "`\"required\": []` is invalid in draft 4 and stops Kong; omit it",
                );
            }
            return None;
        }
        if let Err(e) = jsonschema::draft4::meta::validate(schema) {
            // The instance here is the schema itself (committed, no secrets), so the full message is fine.
            self.push(&mat, format!("config_schema is not valid draft 4: {e}"));
            return None;
        }
        let compiled = match jsonschema::draft4::new(schema) {
            Ok(v) => v,
            Err(e) => {
                self.push(&mat, format!("config_schema does not compile: {e}"));
                return None;
            }
        };
        let is_object = schema.get("type").and_then(Json::as_str) == Some("object")
            || schema.get("properties").is_some();
        Some((compiled, is_object))
    }

    fn consumers(&mut self, c: &KongConfig) {
        let mut usernames: BTreeMap<&str, usize> = BTreeMap::new();
        let mut keys: HashMap<&str, String> = HashMap::new();
        for (i, consumer) in c.consumers.iter().enumerate() {
            let at = if consumer.username.is_empty() {
                format!("consumers[{i}]")
            } else {
                format!("consumers[{}]", consumer.username)
            };
            if consumer.username.is_empty() {
                self.push(&at, "username is empty");
            } else if usernames.insert(&consumer.username, i).is_some() {
                self.push(&at, "duplicate username");
            }
            for (k, cred) in consumer.keyauth_credentials.iter().enumerate() {
                let kat = format!("{at}.keyauth_credentials[{k}].key");
                let key = cred.key.as_str();
                if key.trim().is_empty() {
                    self.push(&kat, "key is empty");
                    continue;
                }
                if let Some(name) = first_placeholder(key) {
                    self.push(&kat, format!("unrendered placeholder `${{{name}}}`"));
                    continue;
                }
                if key.contains("{vault://") {
                    self.push(
                        &kat,
                        "`{vault://…}` reference: Kong 3.9 does not resolve it here, the literal string would become the key",
                    );
                    continue;
                }
                if let Some(first) = keys.insert(key, kat.clone()) {
                    self.push(&kat, format!("same key as {first} (keys must be unique)"));
                }
            }
        }
    }
}

/// What the filter's own configuration parser — the code its `on_configure` runs — says
/// about `config`, for the filters that have rules beyond their JSON Schema. The parsers
/// never quote a value (configs hold secrets), only field names and rules.
pub fn filter_own_problems(name: &str, config: &Json) -> Vec<String> {
    match name {
        "advoware_auth" => match advoware_auth::config::Config::from_value(config) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        },
        _ => Vec::new(),
    }
}

/// A problem description for a schema violation that does not quote the offending value.
fn describe(kind: &ValidationErrorKind, schema_path: &str) -> String {
    match kind {
        ValidationErrorKind::Required { property } => {
            format!("required property {property} is missing")
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            format!("unknown properties: {}", unexpected.join(", "))
        }
        ValidationErrorKind::Type { .. } => format!("wrong type (schema rule {schema_path})"),
        ValidationErrorKind::Enum { options } => format!("must be one of {options}"),
        ValidationErrorKind::MinLength { limit } => format!("shorter than {limit} characters"),
        ValidationErrorKind::MaxLength { limit } => format!("longer than {limit} characters"),
        ValidationErrorKind::Pattern { pattern } => format!("does not match pattern {pattern}"),
        _ => format!("violates schema rule {schema_path}"),
    }
}

/// Why a Kong regex path would be rejected (Kong's PCRE routes allow no look-around or backreferences).
fn unsupported_regex(re: &str) -> Option<&'static str> {
    if re.is_empty() {
        return Some("is empty");
    }
    if !re.starts_with('/') && !re.starts_with("^/") && !re.starts_with("(") {
        return Some("must match from `/`");
    }
    for la in ["(?=", "(?!", "(?<=", "(?<!"] {
        if re.contains(la) {
            return Some("uses look-around, which Kong's router does not support");
        }
    }
    let b = re.as_bytes();
    for w in b.windows(2) {
        if w[0] == b'\\' && w[1].is_ascii_digit() && w[1] != b'0' {
            return Some("uses a backreference, which Kong's router does not support");
        }
    }
    None
}

/// The variable name of the first `${NAME…}` in `s`, if any.
fn first_placeholder(s: &str) -> Option<String> {
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        let tail = &rest[i + 2..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let after = &tail[name.len()..];
        if !name.is_empty() && (after.starts_with('}') || after.starts_with(":-")) {
            return Some(name);
        }
        rest = tail;
    }
    None
}

fn scan_json(v: &Json, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Json::String(s) => {
            if let Some(n) = first_placeholder(s) {
                out.push((path.to_string(), n));
            }
        }
        Json::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                scan_json(x, &format!("{path}[{i}]"), out);
            }
        }
        Json::Object(o) => {
            for (k, x) in o {
                scan_json(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn scan_vault(v: &Json, path: &str, out: &mut Vec<String>) {
    match v {
        Json::String(s) if s.contains("{vault://") => out.push(path.to_string()),
        Json::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                scan_vault(x, &format!("{path}[{i}]"), out);
            }
        }
        Json::Object(o) => {
            for (k, x) in o {
                scan_vault(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn scan_yaml(v: &serde_yaml::Value, path: &str, out: &mut Vec<(String, String)>) {
    use serde_yaml::Value as Y;
    match v {
        Y::String(s) => {
            if let Some(n) = first_placeholder(s) {
                out.push((
                    if path.is_empty() {
                        "<root>".into()
                    } else {
                        path.to_string()
                    },
                    n,
                ));
            }
        }
        Y::Sequence(a) => {
            for (i, x) in a.iter().enumerate() {
                scan_yaml(x, &format!("{path}[{i}]"), out);
            }
        }
        Y::Mapping(m) => {
            for (k, x) in m {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                scan_yaml(k, &p, out);
                scan_yaml(x, &p, out);
            }
        }
        Y::Tagged(t) => scan_yaml(&t.value, path, out),
        _ => {}
    }
}

/// Paths of every `"required": []` in a schema (draft 4 demands at least one entry).
fn find_empty_required(v: &Json, path: &str, out: &mut Vec<String>) {
    match v {
        Json::Object(o) => {
            for (k, x) in o {
                let p = format!("{path}.{k}");
                if k == "required" && x.as_array().is_some_and(Vec::is_empty) {
                    out.push(p);
                } else {
                    find_empty_required(x, &p, out);
                }
            }
        }
        Json::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                find_empty_required(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_detection() {
        assert_eq!(first_placeholder("a${B_1}c").as_deref(), Some("B_1"));
        assert_eq!(first_placeholder("${X:-y}").as_deref(), Some("X"));
        assert_eq!(first_placeholder("$5 ${lower} {vault://x}"), None);
    }

    #[test]
    fn regex_rules() {
        assert_eq!(unsupported_regex("/a/(?<id>\\d+)$"), None);
        assert!(unsupported_regex("/a(?=b)").is_some());
        assert!(unsupported_regex("/(a)\\1").is_some());
    }

    #[test]
    fn empty_required_found_anywhere() {
        let s =
            serde_json::json!({"type":"object","properties":{"a":{"type":"object","required":[]}}});
        let mut out = Vec::new();
        find_empty_required(&s, "config_schema", &mut out);
        assert_eq!(out, ["config_schema.properties.a.required"]);
    }

    #[test]
    fn bundled_list_has_the_ones_we_meet() {
        for n in [
            "key-auth",
            "rate-limiting",
            "cors",
            "request-size-limiting",
            "standard-webhooks",
        ] {
            assert!(BUNDLED_PLUGINS.contains(&n));
        }
        assert!(!BUNDLED_PLUGINS.contains(&"advoware_auth"));
        assert!(!BUNDLED_PLUGINS.contains(&"webhook_guard"));
    }
}
