//! Kong's router for plain prefix paths: which route a request matches and
//! which `$upstream_uri` Kong computes for it.
//!
//! Kong's `traditional_compatible` router matches a route when the method is
//! allowed and one of its paths is a prefix of the request path; among several,
//! the longest path wins. With `strip_path` (default true) the matched prefix is
//! removed and the rest is appended to the service's path (kong/router/utils.lua,
//! `get_upstream_uri_v0`).

use kong_config::model::{KongConfig, Route, Service};

/// A route together with its service, by index into the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRef {
    pub service: usize,
    pub route: usize,
}

/// Finds the route for `method` + `path` (path without query).
pub fn match_route(config: &KongConfig, method: &str, path: &str) -> Option<(RouteRef, String)> {
    let mut best: Option<(RouteRef, String)> = None;
    for (si, service) in config.services.iter().enumerate() {
        for (ri, route) in service.routes.iter().enumerate() {
            if let Some(methods) = &route.methods {
                if !methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                    continue;
                }
            }
            for prefix in &route.paths {
                if prefix.starts_with('~') {
                    continue; // regex routes are not used by this project
                }
                if path.starts_with(prefix.as_str())
                    && best.as_ref().is_none_or(|(_, p)| prefix.len() > p.len())
                {
                    best = Some((
                        RouteRef {
                            service: si,
                            route: ri,
                        },
                        prefix.clone(),
                    ));
                }
            }
        }
    }
    best
}

/// `$upstream_uri` for a request: service path + (request path minus the
/// matched prefix when `strip_path`), plus the query string.
pub fn upstream_uri(
    service: &Service,
    route: &Route,
    matched_prefix: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let service_path = url::Url::parse(&service.url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/".into());
    let rest = if route.strip_path {
        &path[matched_prefix.len().min(path.len())..]
    } else {
        path
    };
    let mut uri = if service_path == "/" || service_path.is_empty() {
        if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        }
    } else if rest.is_empty() {
        service_path
    } else if service_path.ends_with('/') || rest.starts_with('/') {
        format!(
            "{}{}",
            service_path.trim_end_matches('/'),
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        )
    } else {
        format!("{service_path}/{rest}")
    };
    if uri.is_empty() {
        uri.push('/');
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(q);
    }
    uri
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn config() -> KongConfig {
        KongConfig::parse(
            r#"
_format_version: "3.0"
services:
  - name: worker
    url: http://127.0.0.1:8080/events
    routes:
      - name: webhooks
        paths: [/vmh/webhook]
        methods: [POST]
      - name: beteiligte
        paths: [/vmh/webhook/beteiligte]
        methods: [POST]
  - name: api
    url: http://127.0.0.1:9000
    routes:
      - name: health
        paths: [/health]
        strip_path: false
"#,
        )
        .unwrap()
    }

    #[test]
    fn longest_prefix_and_method_win() {
        let c = config();
        let (r, p) = match_route(&c, "POST", "/vmh/webhook/beteiligte/create").unwrap();
        assert_eq!(
            (r.service, r.route, p.as_str()),
            (0, 1, "/vmh/webhook/beteiligte")
        );
        assert!(match_route(&c, "GET", "/vmh/webhook/beteiligte/create").is_none());
        assert!(match_route(&c, "GET", "/nothing").is_none());
    }

    #[test]
    fn strip_path_appends_rest_to_service_path() {
        let c = config();
        let s = &c.services[0];
        assert_eq!(
            upstream_uri(
                s,
                &s.routes[1],
                "/vmh/webhook/beteiligte",
                "/vmh/webhook/beteiligte/create",
                Some("a=1")
            ),
            "/events/create?a=1"
        );
        assert_eq!(
            upstream_uri(
                s,
                &s.routes[1],
                "/vmh/webhook/beteiligte",
                "/vmh/webhook/beteiligte",
                None
            ),
            "/events"
        );
        let api = &c.services[1];
        assert_eq!(
            upstream_uri(api, &api.routes[0], "/health", "/health", None),
            "/health"
        );
    }
}
