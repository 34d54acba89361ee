//! Real network I/O for the workers: HTTP dispatches and upstream requests.
//!
//! Workers never block on the network. Like nginx's event loop, a worker hands a
//! request to this I/O thread and gets a message back when it completes. The I/O
//! thread owns its own tokio runtime, so the host works the same inside and
//! outside `#[tokio::test]`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::abi::HeaderPairs;
use crate::stream::header_value;
use crate::vm::{CallResponse, DispatchRequest};

/// A plain HTTP/1.1 request on the wire.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub addr: SocketAddr,
    pub method: String,
    pub path: String,
    pub headers: HeaderPairs,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// A response, or the reason there is none (`timeout`, `broken connection`, …).
#[derive(Debug, Clone)]
pub struct WireResponse {
    pub status: u16,
    pub headers: HeaderPairs,
    pub body: Vec<u8>,
}

type Done = Box<dyn FnOnce(Result<WireResponse, String>) + Send>;

struct Job {
    request: WireRequest,
    done: Done,
}

/// Handle to the I/O thread.
#[derive(Clone)]
pub struct Io {
    tx: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

impl Io {
    pub fn start() -> std::io::Result<Io> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("pw-host-io".into())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(async move {
                            let result = send(&job.request).await;
                            (job.done)(result);
                        });
                    }
                });
            })?;
        Ok(Io { tx })
    }

    /// Sends `request`; `done` runs on the I/O thread with the outcome.
    pub fn submit(
        &self,
        request: WireRequest,
        done: impl FnOnce(Result<WireResponse, String>) + Send + 'static,
    ) {
        let job = Job {
            request,
            done: Box::new(done),
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            (job.done)(Err("broken connection".into()));
        }
    }
}

async fn send(req: &WireRequest) -> Result<WireResponse, String> {
    match tokio::time::timeout(req.timeout, send_inner(req)).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

async fn send_inner(req: &WireRequest) -> Result<WireResponse, String> {
    let stream = TcpStream::connect(req.addr)
        .await
        .map_err(|_| "broken connection".to_string())?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "broken connection".to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = hyper::Request::builder()
        .method(req.method.as_str())
        .uri(req.path.as_str());
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| "broken connection".to_string())?;
    let status = response.status().as_u16();
    let headers: HeaderPairs = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| "reader failure".to_string())?
        .to_bytes()
        .to_vec();
    Ok(WireResponse {
        status,
        headers,
        body,
    })
}

/// Resolves a dispatch target the way ngx_wasm_module does: `IP[:port]` or
/// `host[:port]` through nginx's resolver (here: an explicit name table, never
/// `/etc/hosts`, so `localhost` fails just as it does in Kong). Port 80 by default.
pub fn resolve_target(
    target: &str,
    resolver: &HashMap<String, IpAddr>,
) -> Result<SocketAddr, String> {
    if target.starts_with("unix:") {
        return Err("broken connection".into());
    }
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = target
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, 80));
    }
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| "resolver failure".to_string())?,
        ),
        None => (target, 80),
    };
    match resolver.get(host) {
        Some(ip) => Ok(SocketAddr::new(*ip, port)),
        None => Err("resolver failure".into()),
    }
}

/// Turns a `proxy_http_call` into a wire request: `:authority` becomes `Host`,
/// other pseudo-headers are dropped, and the call is sent with `Connection: close`
/// (ngx_http_proxy_wasm_dispatch.c).
pub fn dispatch_wire_request(call: &DispatchRequest, addr: SocketAddr) -> WireRequest {
    let method = header_value(&call.headers, ":method")
        .unwrap_or("GET")
        .to_string();
    let path = header_value(&call.headers, ":path")
        .unwrap_or("/")
        .to_string();
    let host = header_value(&call.headers, ":authority")
        .map(str::to_string)
        .unwrap_or_else(|| call.target.clone());
    let mut headers: HeaderPairs = vec![("host".into(), host)];
    headers.extend(
        call.headers
            .iter()
            .filter(|(k, _)| {
                !k.starts_with(':')
                    && !k.eq_ignore_ascii_case("host")
                    && !k.eq_ignore_ascii_case("connection")
            })
            .cloned(),
    );
    headers.push(("connection".into(), "close".into()));
    if !call.body.is_empty() && header_value(&headers, "content-length").is_none() {
        headers.push(("content-length".into(), call.body.len().to_string()));
    }
    WireRequest {
        addr,
        method,
        path,
        headers,
        body: call.body.clone(),
        timeout: call.timeout,
    }
}

/// What `on_http_call_response` sees for an outcome.
pub fn call_response(result: Result<WireResponse, String>) -> CallResponse {
    match result {
        Ok(r) => {
            let mut headers = vec![(":status".to_string(), r.status.to_string())];
            headers.extend(r.headers);
            CallResponse {
                headers,
                body: r.body,
                // ngx_wasm_module answers `:dispatch_status` with the socket
                // status, `ok` for an answered call (measured by hand).
                dispatch_status: Some("ok".to_string()),
            }
        }
        Err(reason) => CallResponse {
            headers: Vec::new(),
            body: Vec::new(),
            dispatch_status: Some(reason),
        },
    }
}

/// Shared resolver table handed to VMs.
pub type Resolver = Arc<HashMap<String, IpAddr>>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_like_ngx_wasm_module() {
        let mut names = HashMap::new();
        names.insert("advoware.test".to_string(), "127.0.0.1".parse().unwrap());
        assert_eq!(
            resolve_target("127.0.0.1:8080", &names).unwrap().port(),
            8080
        );
        assert_eq!(resolve_target("127.0.0.1", &names).unwrap().port(), 80);
        assert_eq!(
            resolve_target("advoware.test:9000", &names).unwrap().port(),
            9000
        );
        assert_eq!(
            resolve_target("localhost:80", &names).unwrap_err(),
            "resolver failure"
        );
        assert_eq!(
            resolve_target("my-upstream", &names).unwrap_err(),
            "resolver failure"
        );
    }
}
