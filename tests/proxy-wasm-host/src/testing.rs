//! A recording loopback HTTP server for tests of filters and of the host itself.
//!
//! Routes: `/slow/{ms}` answers after a delay (timeouts), `/status/{code}`
//! answers with that status, anything else echoes the request as JSON
//! (`{"method","path","headers","body"}`) with `x-echo-host` set to the Host
//! header it got. Every request is recorded for assertions on what reached the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::stream::header_value(&self.headers, name)
    }
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl EchoServer {
    /// Starts on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start() -> std::io::Result<EchoServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&requests));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(EchoServer {
            addr,
            requests,
            _stop: stop,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `IP:port`, the form a filter passes to `dispatch_http_call`.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().clone()
    }
}

async fn handle(
    State(log): State<Arc<Mutex<Vec<Recorded>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    log.lock().push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        headers: pairs.clone(),
        body: body.to_vec(),
    });
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(ms) = uri
        .path()
        .strip_prefix("/slow/")
        .and_then(|m| m.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return (StatusCode::OK, "slow").into_response();
    }
    if let Some(code) = uri
        .path()
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [("x-echo-host", host)], format!("status {code}")).into_response();
    }
    let echo = serde_json::json!({
        "method": method.to_string(),
        "path": path,
        "headers": pairs,
        "body": String::from_utf8_lossy(&body),
    });
    (
        StatusCode::OK,
        [
            ("content-type", "application/json".to_string()),
            ("x-echo-host", host),
        ],
        echo.to_string(),
    )
        .into_response()
}
