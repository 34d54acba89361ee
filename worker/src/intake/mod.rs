//! HTTP in: the router and the state every request handler shares.
//!
//! `POST /events` (signed events from the edge filter), `POST /calendar/sync` (manual trigger) and
//! `GET /3cx/lookup` (3CX screen pop), `POST /3cx/call` + `GET /3cx/call/{id}` (outbound calls) are mounted only with the `intake` role; `GET /health`, `/ready`, `/metrics` and
//! `/openapi.json` always are. [`routes`] is the one list of them: the router is built from it,
//! and a test holds it against `worker/openapi.json`, so the document cannot drift.

pub mod calendar;
pub mod events;
pub mod signature;
pub mod threecx;
pub mod threecx_call;

use std::sync::Arc;

use axum::body::Body;
use axum::handler::Handler;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;

use crate::config::{AdminEndpoints, Config};
use crate::error::ApiError;
use crate::ops::health::{ClientsState, Health, CLIENT_SYNCS};
use crate::ops::metrics::Metrics;
use crate::queue::Queue;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The 3CX contact lookup (EspoCRM client, CRM web address).
    pub lookup: Arc<threecx::LookupService>,
    /// Outbound calls through the 3CX Call Control API (`POST /3cx/call`).
    pub outbound: Arc<crate::handlers::telephony::outbound::OutboundService>,
}

/// The OpenAPI 3.1 description of this API, served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// The methods the worker's routes answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteMethod {
    Get,
    Post,
}

impl RouteMethod {
    /// The operation key OpenAPI uses for this method.
    pub fn openapi_key(self) -> &'static str {
        match self {
            RouteMethod::Get => "get",
            RouteMethod::Post => "post",
        }
    }
    fn filter(self) -> MethodFilter {
        match self {
            RouteMethod::Get => MethodFilter::GET,
            RouteMethod::Post => MethodFilter::POST,
        }
    }
}

/// One route the worker serves; the handler is mounted for `method` only.
pub struct RouteSpec {
    pub path: &'static str,
    pub method: RouteMethod,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(path: &'static str, method: RouteMethod, handler: H) -> RouteSpec
where
    H: Handler<T, AppState>,
    T: 'static,
{
    RouteSpec {
        path,
        method,
        handler: on(method.filter(), handler),
    }
}

/// Every route of an instance with (`intake = true`) or without the intake role.
pub fn routes(intake: bool) -> Vec<RouteSpec> {
    use RouteMethod::{Get, Post};
    let mut r = vec![
        route("/health", Get, health),
        route("/ready", Get, ready),
        route("/metrics", Get, metrics),
        route("/openapi.json", Get, openapi),
    ];
    if intake {
        r.push(route("/events", Post, events::post_events));
        r.push(route("/calendar/sync", Post, calendar::post_calendar_sync));
        r.push(route("/3cx/lookup", Get, threecx::get_lookup));
        r.push(route("/3cx/call", Post, threecx_call::post_call));
        r.push(route("/3cx/call/{id}", Get, threecx_call::get_call));
    }
    r
}

pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    for spec in routes(state.config.roles.intake) {
        r = r.route(spec.path, spec.handler);
    }
    r.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

/// The guard of the manual endpoints (the triggers and outbound calls), by
/// [`Config::admin_endpoints`]: `Authorization: Bearer <admin_token>` when `WORKER_ADMIN_TOKEN`
/// is set (Kong's request-transformer injects it); without it open only on a loopback listener,
/// refused beyond loopback (fail closed: the network position alone is no guard).
pub fn check_admin_token(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    match (&config.admin_token, config.admin_endpoints()) {
        (Some(token), _) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Digests compared in constant time: neither the token's content nor its length
            // leaks through timing (a plain `ct_eq` returns early on a length mismatch).
            let accepted: Vec<String> = std::iter::once(token)
                .chain(config.admin_token_previous.as_ref())
                .map(|t| t.expose().to_owned())
                .collect();
            if bitbylaw_core::webhook::verify_shared_token(Some(given), &accepted).is_err()
            {
                return Err(ApiError::unauthorized("missing or wrong bearer token"));
            }
            Ok(())
        }
        (None, AdminEndpoints::Closed) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_token_unset",
            "manual endpoints are closed: the worker listens beyond loopback without WORKER_ADMIN_TOKEN",
        )),
        (None, _) => Ok(()),
    }
}

/// Reads the whole body, refusing more than `limit` bytes with 413 (checked against
/// `Content-Length` first, so an oversized upload is refused before it is read).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            if s.to_string().contains("length limit") {
                return too_large();
            }
            src = s.source();
        }
        ApiError::bad_request("body_unreadable", "could not read the request body")
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn ready(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    let redis_ok = s.queue.ping().await.is_ok();
    let (running, expected) = s.health.consumers();
    let consumers_ok = !s.config.roles.consumers || running >= expected;
    let state = |c: &Option<ClientsState>| match c {
        None => "not_configured".to_string(),
        Some(ClientsState::Starting) => "starting".to_string(),
        Some(ClientsState::Ready) => "ready".to_string(),
        Some(ClientsState::Failed(why)) => format!("failed: {why}"),
    };
    let mut body = serde_json::json!({
        "redis": if redis_ok { "ok" } else { "unreachable" },
        "consumers": { "running": running, "expected": expected },
    });
    let mut failed_sync = None;
    for (key, name) in CLIENT_SYNCS {
        let c = s.health.clients(key);
        if failed_sync.is_none() && matches!(c, Some(ClientsState::Failed(_))) {
            failed_sync = Some(name);
        }
        body[format!("{key}_clients")] = serde_json::json!(state(&c));
    }
    if redis_ok && consumers_ok && failed_sync.is_none() {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "checks": body })),
        )
            .into_response()
    } else {
        let message = if !redis_ok {
            "redis unreachable".to_string()
        } else if !consumers_ok {
            "consumers not running".to_string()
        } else {
            format!(
                "{} sync clients cannot be built",
                failed_sync.unwrap_or("a")
            )
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "not_ready", "message": message, "checks": body })),
        )
            .into_response()
    }
}

async fn metrics(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    s.metrics.set_consumers(s.health.consumers());
    let text = s.metrics.render(&s.queue).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.
mod admin_token_tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let mut env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert(
            "GATEWAY_SIGNING_SECRET".into(),
            "0123456789abcdef-secret".into(),
        );
        Config::load(None, &env).unwrap()
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    /// Without a token the manual endpoints are open on loopback only; beyond loopback they
    /// are refused whatever the request carries; with a token only its bearer passes.
    #[test]
    fn manual_endpoints_fail_closed_beyond_loopback() {
        let local = config(&[("WORKER_LISTEN_ADDR", "127.0.0.1:8080")]);
        assert_eq!(local.admin_endpoints(), AdminEndpoints::OpenOnLoopback);
        assert!(check_admin_token(&local, &HeaderMap::new()).is_ok());
        assert!(local.admin_token_warning().unwrap().contains("open"));

        for addr in ["0.0.0.0:8080", "10.0.0.5:8080", "[::]:8080"] {
            let wide = config(&[("WORKER_LISTEN_ADDR", addr)]);
            assert_eq!(wide.admin_endpoints(), AdminEndpoints::Closed, "{addr}");
            for h in [HeaderMap::new(), bearer("Bearer anything")] {
                let e = check_admin_token(&wide, &h).unwrap_err();
                assert_eq!(
                    (e.status, e.code),
                    (StatusCode::SERVICE_UNAVAILABLE, "admin_token_unset")
                );
            }
            assert!(wide
                .admin_token_warning()
                .unwrap()
                .contains("admin_token_unset"));
        }

        let guarded = config(&[
            ("WORKER_LISTEN_ADDR", "0.0.0.0:8080"),
            ("WORKER_ADMIN_TOKEN", "tok-0123456789"),
        ]);
        assert_eq!(guarded.admin_endpoints(), AdminEndpoints::Bearer);
        assert!(guarded.admin_token_warning().is_none());
        assert!(check_admin_token(&guarded, &bearer("Bearer tok-0123456789")).is_ok());
        for wrong in [
            "Bearer tok-012345678",
            "tok-0123456789",
            "Basic tok-0123456789",
        ] {
            assert_eq!(
                check_admin_token(&guarded, &bearer(wrong))
                    .unwrap_err()
                    .status,
                StatusCode::UNAUTHORIZED,
                "{wrong}"
            );
        }
        // Rotation: the previous token passes beside the new one, nothing else does.
        let rotating = config(&[
            ("WORKER_LISTEN_ADDR", "0.0.0.0:8080"),
            ("WORKER_ADMIN_TOKEN", "tok-new-0123456789"),
            ("WORKER_ADMIN_TOKEN_PREVIOUS", "tok-0123456789"),
        ]);
        for ok in ["Bearer tok-new-0123456789", "Bearer tok-0123456789"] {
            assert!(check_admin_token(&rotating, &bearer(ok)).is_ok(), "{ok}");
        }
        assert_eq!(
            check_admin_token(&rotating, &bearer("Bearer tok-older"))
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check_admin_token(&guarded, &bearer("Bearer tok-new-0123456789"))
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED,
            "without the rotation setting the new token alone is the current one"
        );
        // A previous token alone would guard nothing while looking like it does.
        let mut env: std::collections::HashMap<String, String> = [
            ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
            ("WORKER_ADMIN_TOKEN_PREVIOUS", "tok-0123456789"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let problems = Config::load(None, &env).unwrap_err().to_string();
        assert!(
            problems.contains("WORKER_ADMIN_TOKEN_PREVIOUS: set without WORKER_ADMIN_TOKEN"),
            "{problems}"
        );
        assert!(
            !problems.contains("tok-0123456789"),
            "never the token itself"
        );
        env.insert("WORKER_ADMIN_TOKEN".into(), "tok-new-0123456789".into());
        assert!(Config::load(None, &env).is_ok());

        // Intake off: no manual endpoints, nothing to warn about.
        let no_intake = config(&[
            ("WORKER_LISTEN_ADDR", "0.0.0.0:8080"),
            ("WORKER_ROLES", "consumers"),
        ]);
        assert!(no_intake.admin_token_warning().is_none());
    }
}
