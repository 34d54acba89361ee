//! Thin, non-panicking wrappers over the host: clock, randomness, logging,
//! metrics, local responses and the token call. Shared by the root and the
//! HTTP context.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};

use crate::config::Config;
use crate::token::{token_call_headers, token_request_body, FetchError};

/// Host clock in nanoseconds since the Unix epoch (0 if unavailable).
pub fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub fn now_ms() -> u64 {
    now_nanos() / 1_000_000
}

/// 16 bytes from WASI `random_get`.
pub fn random16() -> Option<[u8; 16]> {
    let mut buf = [0u8; 16];
    getrandom::fill(&mut buf).ok()?;
    Some(buf)
}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, &format!("advoware_auth: {message}"));
}

/// Counters, named `pw:advoware_auth:<name>` by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Token calls started (tick or request).
    TokenFetches = 0,
    /// Token calls that failed (dispatch error, timeout, non-2xx, unusable answer).
    TokenFetchFailures,
    /// Tokens obtained by the tick (proactive refresh).
    TickRefreshes,
    /// Upstream answers 401 with our token (converted to 503 + Retry-After).
    Upstream401,
    /// Cached tokens discarded after such a 401 (CAS, only if still current).
    TokenInvalidations,
    /// Requests answered 503 because another context's fetch held the lock.
    RefreshInProgress,
    /// Requests rejected with 400 (bad endpoint).
    RejectedRequests,
    /// Requests answered 500 because the configuration is invalid.
    ConfigErrors,
    /// Requests answered 403 because they lie outside their consumer's scope.
    ScopeDenied,
    /// Upstream 401s passed to the client with the shared token kept (token
    /// younger than `rejected_token_min_age_secs`, or forced refreshes rate-limited).
    Upstream401Kept,
}

const METRIC_NAMES: [&str; 10] = [
    "token_fetches",
    "token_fetch_failures",
    "tick_refreshes",
    "upstream_401",
    "token_invalidations",
    "refresh_in_progress",
    "rejected_requests",
    "config_errors",
    "scope_denied",
    "upstream_401_kept",
];

/// Metric ids of this VM (defining the same name again returns the same id).
#[derive(Debug, Default)]
pub struct Metrics {
    ids: Vec<Option<u32>>,
}

impl Metrics {
    pub fn define() -> Metrics {
        Metrics {
            ids: METRIC_NAMES
                .iter()
                .map(|name| hostcalls::define_metric(MetricType::Counter, name).ok())
                .collect(),
        }
    }

    pub fn inc(&self, m: Metric) {
        if let Some(Some(id)) = self.ids.get(m as usize) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

/// Signs a token request and dispatches it; returns the call's token id.
/// Allowed only in request-headers/-body, tick and call-response hooks.
pub fn dispatch_token_call(cfg: &Config, random: [u8; 16]) -> Result<u32, FetchError> {
    let started = now_nanos();
    let body = token_request_body(cfg, random, started);
    // Debug level: how long nonce + timestamp + HMAC + JSON took inside wasm
    // (host clock; the benchmark reads it with a real-time clock).
    log(
        LogLevel::Debug,
        &format!(
            "token request signed in {} ns",
            now_nanos().saturating_sub(started)
        ),
    );
    let headers = token_call_headers(cfg, body.len());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::dispatch_http_call(
        &cfg.token_target,
        headers,
        Some(&body),
        vec![],
        Duration::from_millis(cfg.dispatch_timeout_ms),
    )
    .map_err(|status| FetchError::Unreachable(format!("dispatch refused: {status:?}")))
}

/// The outcome of the call whose response is being delivered now.
pub fn call_outcome(body_size: usize) -> (Option<String>, Option<String>, Vec<u8>) {
    use proxy_wasm::types::{BufferType, MapType};
    let dispatch_status =
        hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":dispatch_status")
            .ok()
            .flatten();
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten();
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    (dispatch_status, status, body)
}

/// 64 bits of owner id from random bytes.
pub fn owner_id(random: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&random[8..16]);
    u64::from_le_bytes(b) | 1
}
