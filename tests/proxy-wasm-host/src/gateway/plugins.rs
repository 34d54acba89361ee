//! The bundled Kong plugins our kong.yaml uses, with Kong 3.9's defaults,
//! status codes and messages: `cors`, `key-auth`, `request-size-limiting` and
//! `acl`, `rate-limiting` (policy `local`), `request-transformer` (headers only). They run in
//! Kong's priority order (cors 2000, key-auth 1250, request-size-limiting 951, acl 950,
//! rate-limiting 910, request-transformer 801) before the filter chain, which runs at the end
//! of the access phase.

use std::collections::HashMap;

use kong_config::model::{Consumer, Plugin};
use parking_lot::Mutex;
use serde_json::Value;

use crate::abi::HeaderPairs;
use crate::stream::header_value;

/// A response a plugin sends instead of proxying.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: u16,
    pub headers: HeaderPairs,
    pub body: String,
}

impl Rejection {
    fn message(status: u16, message: &str) -> Self {
        Rejection {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::json!({ "message": message }).to_string(),
        }
    }
}

/// The effective plugins of a route: route config over service config over global.
pub fn effective<'a>(
    global: &'a [Plugin],
    service: &'a [Plugin],
    route: &'a [Plugin],
) -> Vec<&'a Plugin> {
    let mut out: Vec<&Plugin> = Vec::new();
    for layer in [route, service, global] {
        for p in layer.iter().filter(|p| p.enabled) {
            if !out.iter().any(|o| o.name == p.name) {
                out.push(p);
            }
        }
    }
    let priority = |name: &str| match name {
        "cors" => 2000,
        "key-auth" => 1250,
        "request-size-limiting" => 951,
        "acl" => 950,
        "rate-limiting" => 910,
        "request-transformer" => 801,
        _ => 0,
    };
    out.sort_by_key(|p| std::cmp::Reverse(priority(&p.name)));
    out
}

fn strings(config: &Value, key: &str) -> Option<Vec<String>> {
    config.get(key)?.as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    })
}

/// key-auth: finds the key in the configured header names or query parameters.
/// Kong 3.9 answers 401 "No API key found in request" / "Invalid authentication credentials".
pub fn key_auth(
    config: &Value,
    consumers: &[Consumer],
    headers: &mut HeaderPairs,
    query: &mut Vec<(String, String)>,
) -> Result<String, Rejection> {
    let names = strings(config, "key_names").unwrap_or_else(|| vec!["apikey".into()]);
    let in_header = config
        .get("key_in_header")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let in_query = config
        .get("key_in_query")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let hide = config
        .get("hide_credentials")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut found: Option<String> = None;
    for name in &names {
        if in_header {
            if let Some(v) = header_value(headers, name) {
                found = Some(v.to_string());
                if hide {
                    crate::stream::remove_header(headers, name);
                }
                break;
            }
        }
        if in_query {
            if let Some((_, v)) = query.iter().find(|(k, _)| k == name) {
                found = Some(v.clone());
                if hide {
                    query.retain(|(k, _)| k != name);
                }
                break;
            }
        }
    }
    let Some(key) = found else {
        let mut r = Rejection::message(401, "No API key found in request");
        r.headers.push(("www-authenticate".into(), "Key".into()));
        return Err(r);
    };
    for c in consumers {
        if c.keyauth_credentials.iter().any(|k| k.key == key) {
            // Kong's key-auth uses `set_header`, which replaces every value a client sent.
            crate::stream::replace_header(headers, "x-consumer-username", &c.username);
            return Ok(c.username.clone());
        }
    }
    let mut r = Rejection::message(401, "Invalid authentication credentials");
    r.headers.push(("www-authenticate".into(), "Key".into()));
    Err(r)
}

/// acl: the authenticated consumer's groups against `allow` (one must match) and
/// `deny` (none may match). Kong 3.9: no consumer → 401 "Unauthorized"; refused →
/// 403 "You cannot consume this service".
pub fn acl(config: &Value, consumer: Option<&Consumer>) -> Result<(), Rejection> {
    let Some(consumer) = consumer else {
        return Err(Rejection::message(401, "Unauthorized"));
    };
    let member = |list: &[String]| consumer.acls.iter().any(|g| list.contains(&g.group));
    let allowed = strings(config, "allow").is_none_or(|allow| member(&allow));
    let denied = strings(config, "deny").is_some_and(|deny| member(&deny));
    if !allowed || denied {
        return Err(Rejection::message(403, "You cannot consume this service"));
    }
    Ok(())
}

/// request-size-limiting: `allowed_payload_size` in `size_unit` (megabytes by default).
pub fn request_size(config: &Value, body_len: usize) -> Result<(), Rejection> {
    let allowed = config
        .get("allowed_payload_size")
        .and_then(Value::as_u64)
        .unwrap_or(128);
    let unit = match config
        .get("size_unit")
        .and_then(Value::as_str)
        .unwrap_or("megabytes")
    {
        "bytes" => 1,
        "kilobytes" => 1024,
        _ => 1024 * 1024,
    };
    if body_len as u64 > allowed * unit {
        return Err(Rejection::message(413, "Request size limit exceeded"));
    }
    Ok(())
}

/// request-transformer, header operations in Kong 3.9's fixed order: remove → rename →
/// replace → add → append. `add` sets a header only when the client did not send it (so
/// overriding a client's header takes `remove` + `add`), `replace` only when it did. Entries
/// are `name:value`, split at the first colon (Kong's `^([^:]+):*(.-)$`). Anything this
/// stand-in does not model — query string, body, URI, method, `$(…)` templates — is a 500,
/// so a kong.yaml relying on it fails its tests instead of passing untransformed.
pub fn request_transformer(config: &Value, headers: &mut HeaderPairs) -> Result<(), Rejection> {
    let unsupported = |what: &str| {
        Rejection::message(
            500,
            &format!("request-transformer stand-in: {what} is not implemented"),
        )
    };
    for op in ["remove", "rename", "replace", "add", "append"] {
        for field in ["querystring", "body", "json_types"] {
            if config
                .get(op)
                .and_then(|o| o.get(field))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(unsupported(&format!("{op}.{field}")));
            }
        }
    }
    if config.get("http_method").is_some_and(|v| !v.is_null())
        || config
            .get("replace")
            .and_then(|r| r.get("uri"))
            .is_some_and(|v| !v.is_null())
    {
        return Err(unsupported("http_method / replace.uri"));
    }
    let list =
        |op: &str| strings(config.get(op).unwrap_or(&Value::Null), "headers").unwrap_or_default();
    let pair = |entry: &str| -> Result<(String, String), Rejection> {
        let (name, value) = entry
            .split_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| unsupported("a header entry without `name:`"))?;
        if value.contains("$(") {
            return Err(unsupported("templates"));
        }
        Ok((
            name.to_ascii_lowercase(),
            value.trim_start_matches(':').to_string(),
        ))
    };
    for name in list("remove") {
        crate::stream::remove_header(headers, &name);
    }
    for entry in list("rename") {
        let (old, new) = pair(&entry)?;
        if let Some(v) = header_value(headers, &old).map(str::to_string) {
            crate::stream::remove_header(headers, &old);
            crate::stream::replace_header(headers, &new, &v);
        }
    }
    for entry in list("replace") {
        let (name, value) = pair(&entry)?;
        if header_value(headers, &name).is_some() {
            crate::stream::replace_header(headers, &name, &value);
        }
    }
    for entry in list("add") {
        let (name, value) = pair(&entry)?;
        if header_value(headers, &name).is_none() {
            headers.push((name, value));
        }
    }
    for entry in list("append") {
        let (name, value) = pair(&entry)?;
        headers.push((name, value));
    }
    Ok(())
}

/// rate-limiting with `policy: local`: per-minute windows keyed by consumer
/// (or client IP when there is none), shared by all workers of the node.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<(String, String, u64), u64>>,
}

impl RateLimiter {
    /// Counts one request; returns the headers Kong adds, or the 429.
    pub fn check(
        &self,
        route: &str,
        config: &Value,
        identity: &str,
        now_secs: u64,
    ) -> Result<HeaderPairs, Rejection> {
        let Some(limit) = config.get("minute").and_then(Value::as_u64) else {
            return Ok(Vec::new());
        };
        let window = now_secs / 60;
        let reset = 60 - now_secs % 60;
        let count = {
            let mut w = self.windows.lock();
            w.retain(|(_, _, win), _| *win + 1 >= window);
            let c = w
                .entry((route.to_string(), identity.to_string(), window))
                .or_insert(0);
            *c += 1;
            *c
        };
        let remaining = limit.saturating_sub(count);
        let headers = vec![
            ("x-ratelimit-limit-minute".to_string(), limit.to_string()),
            (
                "x-ratelimit-remaining-minute".to_string(),
                remaining.to_string(),
            ),
            ("ratelimit-limit".to_string(), limit.to_string()),
            ("ratelimit-remaining".to_string(), remaining.to_string()),
            ("ratelimit-reset".to_string(), reset.to_string()),
        ];
        if count > limit {
            let mut r = Rejection::message(429, "API rate limit exceeded");
            r.headers.extend(headers);
            r.headers.push(("retry-after".into(), reset.to_string()));
            return Err(r);
        }
        Ok(headers)
    }
}

/// cors: answers preflights and adds `Access-Control-Allow-Origin` to responses.
pub fn cors_origin(config: &Value, origin: Option<&str>) -> Option<String> {
    let origins = strings(config, "origins").unwrap_or_else(|| vec!["*".into()]);
    if origins.iter().any(|o| o == "*") {
        return Some("*".into());
    }
    let origin = origin?;
    origins
        .iter()
        .any(|o| o == origin)
        .then(|| origin.to_string())
}

pub fn cors_preflight(config: &Value, origin: Option<&str>) -> Rejection {
    let methods = strings(config, "methods").unwrap_or_else(|| {
        [
            "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ]
        .map(String::from)
        .to_vec()
    });
    let mut headers = vec![(
        "access-control-allow-methods".to_string(),
        methods.join(","),
    )];
    if let Some(o) = cors_origin(config, origin) {
        headers.push(("access-control-allow-origin".into(), o));
    }
    if let Some(h) = strings(config, "headers") {
        headers.push(("access-control-allow-headers".into(), h.join(",")));
    }
    if let Some(age) = config.get("max_age").and_then(Value::as_u64) {
        headers.push(("access-control-max-age".into(), age.to_string()));
    }
    Rejection {
        status: 200,
        headers,
        body: String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use kong_config::model::{AclGroup, KeyAuthCredential};
    use serde_json::json;

    #[test]
    fn key_auth_messages_match_kong() {
        let consumers = vec![Consumer {
            username: "app".into(),
            keyauth_credentials: vec![KeyAuthCredential { key: "k1".into() }],
            acls: vec![],
        }];
        let mut h = vec![];
        let mut q = vec![];
        assert_eq!(
            key_auth(&json!({}), &consumers, &mut h, &mut q)
                .unwrap_err()
                .status,
            401
        );
        let mut h = vec![("apikey".to_string(), "nope".to_string())];
        assert!(key_auth(&json!({}), &consumers, &mut h, &mut q)
            .unwrap_err()
            .body
            .contains("Invalid authentication credentials"));
        let mut q = vec![("apikey".to_string(), "k1".to_string())];
        assert_eq!(
            key_auth(
                &json!({"hide_credentials": true}),
                &consumers,
                &mut vec![],
                &mut q
            )
            .unwrap(),
            "app"
        );
        assert!(q.is_empty());
        // A client's own X-Consumer-Username is overwritten, as Kong's set_header does.
        let mut h = vec![
            ("x-consumer-username".to_string(), "admin".to_string()),
            ("apikey".to_string(), "k1".to_string()),
            ("X-Consumer-Username".to_string(), "root".to_string()),
        ];
        key_auth(&json!({}), &consumers, &mut h, &mut vec![]).unwrap();
        let names: Vec<&str> = h
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-consumer-username"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(names, ["app"]);
    }

    #[test]
    fn acl_allows_only_listed_groups() {
        let member = Consumer {
            username: "a".into(),
            keyauth_credentials: vec![],
            acls: vec![AclGroup {
                group: "sync".into(),
            }],
        };
        let other = Consumer {
            username: "b".into(),
            keyauth_credentials: vec![],
            acls: vec![],
        };
        let cfg = json!({"allow": ["sync"]});
        assert!(acl(&cfg, Some(&member)).is_ok());
        let r = acl(&cfg, Some(&other)).unwrap_err();
        assert_eq!(r.status, 403);
        assert!(r.body.contains("You cannot consume this service"));
        assert_eq!(acl(&cfg, None).unwrap_err().status, 401);
        assert!(acl(&json!({"deny": ["sync"]}), Some(&member)).is_err());
        assert!(acl(&json!({"deny": ["sync"]}), Some(&other)).is_ok());
    }

    #[test]
    fn rate_limit_counts_per_minute_window() {
        let rl = RateLimiter::default();
        let cfg = json!({"minute": 2});
        assert!(rl.check("r", &cfg, "a", 120).is_ok());
        assert!(rl.check("r", &cfg, "a", 130).is_ok());
        let r = rl.check("r", &cfg, "a", 150).unwrap_err();
        assert_eq!(r.status, 429);
        assert!(rl.check("r", &cfg, "b", 150).is_ok(), "separate identity");
        assert!(rl.check("r", &cfg, "a", 180).is_ok(), "next window");
    }

    #[test]
    fn request_transformer_replaces_a_client_header_only_with_remove_then_add() {
        let pairs = |h: &HeaderPairs, n: &str| -> Vec<String> {
            h.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let forged = || {
            vec![
                ("Authorization".to_string(), "Bearer forged".to_string()),
                ("authorization".to_string(), "Bearer second".to_string()),
            ]
        };
        // Kong's `add` alone keeps what the client sent.
        let mut h = forged();
        request_transformer(
            &json!({"add": {"headers": ["Authorization:Bearer t:1"]}}),
            &mut h,
        )
        .unwrap();
        assert_eq!(
            pairs(&h, "authorization"),
            ["Bearer forged", "Bearer second"]
        );
        // remove runs before add: exactly the configured value reaches the upstream.
        let cfg = json!({"remove": {"headers": ["Authorization"]},
                         "add": {"headers": ["Authorization:Bearer t:1"]}});
        let mut h = forged();
        request_transformer(&cfg, &mut h).unwrap();
        assert_eq!(pairs(&h, "authorization"), ["Bearer t:1"]);
        let mut h = vec![];
        request_transformer(&cfg, &mut h).unwrap();
        assert_eq!(pairs(&h, "authorization"), ["Bearer t:1"]);
        // replace only touches a header that is there; append adds another value; rename moves.
        let mut h = vec![
            ("x-a".to_string(), "1".to_string()),
            ("x-old".to_string(), "o".to_string()),
        ];
        request_transformer(
            &json!({"replace": {"headers": ["x-a:2", "x-b:2"]}, "append": {"headers": ["x-a:3"]},
                    "rename": {"headers": ["x-old:x-new"]}}),
            &mut h,
        )
        .unwrap();
        assert_eq!(pairs(&h, "x-a"), ["2", "3"]);
        assert!(pairs(&h, "x-b").is_empty());
        assert!(pairs(&h, "x-old").is_empty());
        assert_eq!(pairs(&h, "x-new"), ["o"]);
        // What the stand-in does not model fails loudly.
        for cfg in [
            json!({"add": {"querystring": ["a:b"]}}),
            json!({"add": {"headers": ["x:$(headers.host)"]}}),
            json!({"add": {"headers": ["novalue"]}}),
        ] {
            assert_eq!(
                request_transformer(&cfg, &mut vec![]).unwrap_err().status,
                500,
                "{cfg}"
            );
        }
    }

    #[test]
    fn size_limit_uses_megabytes_by_default() {
        assert!(request_size(&json!({"allowed_payload_size": 1}), 1024 * 1024).is_ok());
        assert_eq!(
            request_size(&json!({"allowed_payload_size": 1}), 1024 * 1024 + 1)
                .unwrap_err()
                .status,
            413
        );
        assert!(request_size(
            &json!({"allowed_payload_size": 10, "size_unit": "bytes"}),
            11
        )
        .is_err());
    }
}
