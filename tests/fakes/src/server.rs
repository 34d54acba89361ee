//! What every fake shares: binding and stopping the server, the request log, injected failures
//! and latency.
//!
//! Each fake builds an axum `Router` and hands it to `RunningServer::spawn` together with its
//! [`Controls`] and an error shaper (how that system words an error body), so an injected 503 from
//! the Google fake looks like Google's error JSON and one from EspoCRM like EspoCRM's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Largest request body a fake accepts (proxy tests send binary uploads through Kong).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Why a fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid fake configuration: {0}")]
    Config(String),
}

/// One request as it arrived, before the fake's own handling.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string, as sent (not percent-decoded).
    pub path: String,
    /// Raw query string without `?`, if any.
    pub query: Option<String>,
    /// Header names lower-case, in arrival order; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    /// The raw body bytes (binary-safe).
    pub body: Bytes,
    /// Arrival time by the system clock.
    pub at: DateTime<Utc>,
}

impl RecordedRequest {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Percent-decoded query pairs.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// First value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// An error to answer instead of the real handling.
#[derive(Clone, Debug)]
pub struct InjectedFailure {
    pub status: u16,
    /// Sent as `Retry-After: <seconds>`.
    pub retry_after: Option<u64>,
    /// Only requests whose path starts with this are failed; `None` = any request.
    pub path_prefix: Option<String>,
    /// Only requests with this method (`PUT`, …); `None` = any method.
    pub method: Option<String>,
}

#[derive(Default)]
struct ControlsInner {
    log: Vec<RecordedRequest>,
    /// Pending failures with the number of requests each still fails.
    failures: VecDeque<(InjectedFailure, usize)>,
    latency: Duration,
}

/// Request log, failure injection and latency of one fake; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Controls {
    inner: Arc<Mutex<ControlsInner>>,
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("Controls")
            .field("logged_requests", &inner.log.len())
            .field("pending_failures", &inner.failures.len())
            .field("latency", &inner.latency)
            .finish()
    }
}

impl Controls {
    /// Every request received so far (including failed and unauthorised ones).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().log.clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RecordedRequest> {
        self.inner
            .lock()
            .log
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.lock().log.last().cloned()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.inner.lock().log.clear();
    }

    /// The next `n` requests (any path) get `status`, with `Retry-After` if given.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.push_failure(
            InjectedFailure {
                status,
                retry_after,
                path_prefix: None,
                method: None,
            },
            n,
        );
    }

    /// The next `n` requests whose path starts with `path_prefix` get `status`; others pass.
    pub fn fail_next_on(&self, path_prefix: &str, n: usize, status: u16, retry_after: Option<u64>) {
        let failure = InjectedFailure {
            status,
            retry_after,
            path_prefix: Some(path_prefix.to_owned()),
            method: None,
        };
        self.push_failure(failure, n);
    }

    /// The next `n` `method` requests whose path starts with `path_prefix` get `status` (e.g. fail
    /// a write while reads of the same record pass).
    pub fn fail_next_method_on(
        &self,
        method: &str,
        path_prefix: &str,
        n: usize,
        status: u16,
        retry_after: Option<u64>,
    ) {
        let failure = InjectedFailure {
            status,
            retry_after,
            path_prefix: Some(path_prefix.to_owned()),
            method: Some(method.to_ascii_uppercase()),
        };
        self.push_failure(failure, n);
    }

    /// Drops all pending injected failures.
    pub fn clear_failures(&self) {
        self.inner.lock().failures.clear();
    }

    /// Delay before answering every request (simulates a slow system; zero to turn off).
    pub fn set_latency(&self, latency: Duration) {
        self.inner.lock().latency = latency;
    }

    fn push_failure(&self, failure: InjectedFailure, n: usize) {
        if n > 0 {
            self.inner.lock().failures.push_back((failure, n));
        }
    }

    /// Takes one use of the first pending failure that applies to `method` and `path`.
    fn take_failure(&self, method: &str, path: &str) -> Option<InjectedFailure> {
        let mut inner = self.inner.lock();
        let idx = inner.failures.iter().position(|(f, _)| {
            f.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
                && f.method.as_deref().is_none_or(|m| m == method)
        })?;
        let entry = inner.failures.get_mut(idx)?;
        entry.1 -= 1;
        let failure = entry.0.clone();
        if entry.1 == 0 {
            inner.failures.remove(idx);
        }
        Some(failure)
    }
}

/// How a system words an error body for a status (used for injected failures).
pub(crate) type ErrorShaper = fn(StatusCode) -> Response;

/// A fake listening on a socket; stops when dropped (or via [`RunningServer::stop`]).
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Binds `bind` (port 0 = any free port), wraps `router` in the request log and failure
    /// injection layers, and serves it on a background task.
    pub(crate) async fn spawn(
        bind: SocketAddr,
        router: Router,
        controls: Controls,
        shaper: ErrorShaper,
    ) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| StartError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: bind, source })?;
        let app = router
            .layer(from_fn_with_state((controls, shaper), record_and_inject))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(err) = served.await {
                eprintln!("fake server on {addr} stopped with error: {err}");
            }
        });
        Ok(Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Records the request (with its full body), waits the configured latency, then either answers an
/// injected failure or passes the request on.
async fn record_and_inject(
    State((controls, shaper)): State<(Controls, ErrorShaper)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return shaper(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: bytes.clone(),
        at: Utc::now(),
    };
    let latency = {
        let mut inner = controls.inner.lock();
        inner.log.push(recorded);
        inner.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(failure) = controls.take_failure(parts.method.as_str(), parts.uri.path()) {
        let status =
            StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = shaper(status);
        if let Some(secs) = failure.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        return response;
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A JSON response with a status.
pub(crate) fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A random alphanumeric string (tokens, secrets).
pub(crate) fn random_string(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// Constant-time comparison of two byte strings (length leaks, content does not).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_apply_by_prefix_and_count_down() {
        let controls = Controls::default();
        controls.fail_next_on("/a", 2, 503, Some(7));
        assert!(controls.take_failure("GET", "/b").is_none());
        assert_eq!(
            controls.take_failure("GET", "/a/x").map(|f| f.status),
            Some(503)
        );
        assert_eq!(
            controls.take_failure("PUT", "/a").map(|f| f.retry_after),
            Some(Some(7))
        );
        assert!(controls.take_failure("GET", "/a").is_none());
    }

    #[test]
    fn failures_can_be_limited_to_a_method() {
        let controls = Controls::default();
        controls.fail_next_method_on("put", "/a", 1, 503, None);
        assert!(controls.take_failure("GET", "/a/1").is_none());
        assert_eq!(
            controls.take_failure("PUT", "/a/1").map(|f| f.status),
            Some(503)
        );
        assert!(controls.take_failure("PUT", "/a/1").is_none());
    }

    #[test]
    fn constant_time_eq_compares_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
