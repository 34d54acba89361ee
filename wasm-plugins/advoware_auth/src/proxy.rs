//! Proxy semantics (pure): client request URI → upstream `:path`, the
//! consumer scope check, and the JSON error bodies the filter answers with.
//!
//! Endpoint validation and mapping are `bitbylaw_core::endpoint`; this module
//! only removes the client's gateway credentials from the query first
//! (`remove_params`, which core does not have: core's `extract_param` rejects
//! duplicates, while credentials must be dropped however often they appear).

use bitbylaw_core::endpoint::{percent_decode, upstream_path_and_query, EndpointError};

use crate::config::{Config, ConsumerScope};

/// Removes every parameter whose (percent-decoded, case-insensitive) name is
/// in `names` from a raw query string (no leading `?`); the other pieces keep
/// their raw text and order; empty pieces are dropped.
pub fn remove_params(query: &str, names: &[String]) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|piece| {
            let key = piece.split_once('=').map_or(*piece, |(k, _)| k);
            let key = percent_decode(key.as_bytes());
            !names.iter().any(|n| key.eq_ignore_ascii_case(n.as_bytes()))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A client request mapped to Advoware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The Advoware path without leading `/`, `api_path_prefix` and query
    /// (`api/v1/advonet/Termine/5`): what consumer scopes are matched against.
    pub advoware_path: String,
    /// The whole upstream `:path`: `{api_path_prefix}/{advoware_path}?{params}`.
    pub upstream: String,
}

/// Maps a client request URI (`/advoware/proxy?endpoint=…&…`) to
/// `{api_path_prefix}/api/v1/advonet/{endpoint}?{other params}`, without the
/// client's credential parameters. The route's own path is irrelevant.
pub fn map_request(cfg: &Config, request_uri: &str) -> Result<Mapped, EndpointError> {
    let query = request_uri.split_once('?').map_or("", |(_, q)| q);
    // A fragment never reaches a server, but be strict if one does.
    let query = query.split('#').next().unwrap_or("");
    let query = remove_params(query, &cfg.key_names);
    let path = upstream_path_and_query(&query, &cfg.allowed_prefixes, &cfg.default_prefix)?;
    let advoware_path = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    Ok(Mapped {
        advoware_path,
        upstream: format!("{}{}", cfg.api_path_prefix, path),
    })
}

/// The upstream `:path` for a client request URI (see [`map_request`]).
pub fn upstream_path(cfg: &Config, request_uri: &str) -> Result<String, EndpointError> {
    map_request(cfg, request_uri).map(|m| m.upstream)
}

/// Why a request lies outside its consumer's scope (answered 403, before any
/// token is read or fetched and before anything goes upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeDenied {
    /// Scopes are configured and the request names no consumer with one.
    UnknownConsumer,
    /// The consumer may not use this method.
    Method { consumer: String, method: String },
    /// The consumer may not reach this Advoware path.
    Path { consumer: String, path: String },
}

impl ScopeDenied {
    pub fn code(&self) -> &'static str {
        match self {
            ScopeDenied::UnknownConsumer => "consumer_unknown",
            ScopeDenied::Method { .. } | ScopeDenied::Path { .. } => "outside_scope",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ScopeDenied::UnknownConsumer => {
                "this API key has no Advoware scope on this gateway".into()
            }
            ScopeDenied::Method { consumer, method } => {
                format!("consumer {consumer} may not use {method} on the Advoware proxy")
            }
            ScopeDenied::Path { consumer, path } => {
                format!("consumer {consumer} may not reach {path}")
            }
        }
    }
}

/// The scope of the request's consumer: `Ok(None)` when the configuration
/// has no `consumers` (everything the route lets through is allowed).
/// `consumer` is the value of `consumer_header` as the request carries it.
pub fn consumer_scope<'a>(
    cfg: &'a Config,
    consumer: Option<&str>,
) -> Result<Option<(&'a str, &'a ConsumerScope)>, ScopeDenied> {
    let Some(scopes) = &cfg.consumers else {
        return Ok(None);
    };
    consumer
        .and_then(|c| scopes.get_key_value(c))
        .map(|(name, scope)| Some((name.as_str(), scope)))
        .ok_or(ScopeDenied::UnknownConsumer)
}

/// Checks method and mapped path against a consumer's scope.
pub fn check_scope(
    consumer: &str,
    scope: &ConsumerScope,
    method: &str,
    mapped: &Mapped,
) -> Result<(), ScopeDenied> {
    if !scope.allows_method(method) {
        return Err(ScopeDenied::Method {
            consumer: consumer.to_owned(),
            method: method.to_owned(),
        });
    }
    if !scope.allows_path(&mapped.advoware_path) {
        return Err(ScopeDenied::Path {
            consumer: consumer.to_owned(),
            path: mapped.advoware_path.clone(),
        });
    }
    Ok(())
}

/// `{"error": code, "message": message}` (+ `"retry": true` when the client
/// should simply try again, after `Retry-After`).
pub fn error_body(code: &str, message: &str, retry: bool) -> Vec<u8> {
    let mut v = serde_json::json!({ "error": code, "message": message });
    if retry {
        v["retry"] = serde_json::Value::Bool(true);
    }
    v.to_string().into_bytes()
}

/// Human message for a rejected endpoint.
pub fn endpoint_message(e: &EndpointError) -> String {
    format!("{e}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(extra: serde_json::Value) -> Config {
        let mut v = json!({
            "token_target": "advoware.test:8080", "kanzlei": "k", "database": "d", "user": "u",
            "app_id": "a", "password": "p", "api_key": "dGVzdA=="
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        Config::from_value(&v).unwrap()
    }

    #[test]
    fn strips_credentials_and_maps() {
        let c = cfg(json!({}));
        assert_eq!(
            upstream_path(&c, "/advoware/proxy?endpoint=Termine&kuerzel=AB&apikey=secret&APIKEY=x&%61pikey=y&from=2026-01-01").unwrap(),
            "/api/v1/advonet/Termine?kuerzel=AB&from=2026-01-01"
        );
        assert_eq!(
            upstream_path(&c, "/advoware/proxy?endpoint=api/v1/Akten/5").unwrap(),
            "/api/v1/Akten/5"
        );
        assert_eq!(
            upstream_path(&c, "/advoware/proxy?apikey=k&endpoint=Beteiligte%2F7").unwrap(),
            "/api/v1/advonet/Beteiligte/7"
        );
        let c = cfg(json!({"api_path_prefix": "/relay", "key_names": ["apikey", "key"]}));
        assert_eq!(
            upstream_path(&c, "/p?key=1&endpoint=Mitarbeiter&x=%20").unwrap(),
            "/relay/api/v1/advonet/Mitarbeiter?x=%20"
        );
    }

    #[test]
    fn rejections_use_core_codes() {
        let c = cfg(json!({}));
        let code = |uri: &str| upstream_path(&c, uri).unwrap_err().code();
        assert_eq!(code("/advoware/proxy"), "endpoint_missing");
        assert_eq!(code("/advoware/proxy?endpoint="), "endpoint_missing");
        assert_eq!(
            code("/advoware/proxy?endpoint=../Token"),
            "endpoint_traversal"
        );
        assert_eq!(
            code("/advoware/proxy?endpoint=%2e%2e%2fToken"),
            "endpoint_traversal"
        );
        assert_eq!(
            code("/advoware/proxy?endpoint=https://evil.example/"),
            "endpoint_absolute"
        );
        assert_eq!(
            code("/advoware/proxy?endpoint=a%0d%0aX:1"),
            "endpoint_control_chars"
        );
        assert_eq!(
            code("/advoware/proxy?endpoint=a%00"),
            "endpoint_control_chars"
        );
        assert_eq!(
            code("/advoware/proxy?endpoint=a&endpoint=b"),
            "endpoint_duplicate"
        );
        let c = cfg(json!({"allowed_prefixes": ["api/v1/advonet/"]}));
        assert_eq!(
            upstream_path(&c, "/p?endpoint=api/v1/Token").unwrap(),
            "/api/v1/advonet/api/v1/Token"
        );
    }

    #[test]
    fn scopes() {
        let c = cfg(json!({"consumers": {
            "reader": {"methods": ["GET"], "prefixes": ["api/v1/advonet/Termine"]},
        }}));
        let m = map_request(&c, "/p?endpoint=Termine/5&x=1").unwrap();
        assert_eq!(m.advoware_path, "api/v1/advonet/Termine/5");
        assert_eq!(m.upstream, "/api/v1/advonet/Termine/5?x=1");
        assert_eq!(consumer_scope(&c, None), Err(ScopeDenied::UnknownConsumer));
        assert_eq!(
            consumer_scope(&c, Some("other")),
            Err(ScopeDenied::UnknownConsumer)
        );
        let (name, scope) = consumer_scope(&c, Some("reader")).unwrap().unwrap();
        assert_eq!(check_scope(name, scope, "GET", &m), Ok(()));
        let e = check_scope(name, scope, "DELETE", &m).unwrap_err();
        assert_eq!(e.code(), "outside_scope");
        assert!(e.message().contains("DELETE"));
        let m = map_request(&c, "/p?endpoint=Beteiligte/5").unwrap();
        let e = check_scope(name, scope, "GET", &m).unwrap_err();
        assert!(e.message().contains("api/v1/advonet/Beteiligte/5"));
        // Without `consumers` nobody is restricted.
        assert_eq!(consumer_scope(&cfg(json!({})), None), Ok(None));
    }

    #[test]
    fn params_and_bodies() {
        let names = vec!["apikey".to_string()];
        assert_eq!(remove_params("a=1&&apikey&b", &names), "a=1&b");
        assert_eq!(remove_params("", &names), "");
        let b: serde_json::Value =
            serde_json::from_slice(&error_body("x", "y \"z\"", true)).unwrap();
        assert_eq!(
            b,
            json!({"error": "x", "message": "y \"z\"", "retry": true})
        );
        let b: serde_json::Value = serde_json::from_slice(&error_body("x", "y", false)).unwrap();
        assert_eq!(b, json!({"error": "x", "message": "y"}));
    }
}
