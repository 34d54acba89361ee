//! Gateway mode: a stand-in for Kong on machines without Kong.
//!
//! It serves HTTP on a loopback port and handles each request as Kong 3.9 in
//! DB-less mode would with the same `kong.yaml`: route by path prefix and method,
//! run the bundled plugins we use (cors, key-auth, request-size-limiting,
//! rate-limiting, request-transformer), then the route's filter chain (service chains first, then route
//! chains, kong/runloop/wasm.lua) in the proxy-wasm host, and proxy to the
//! service's URL at Kong's `$upstream_uri`. End-to-end tests and the local sandbox
//! send real requests through it. It is not Kong: no TLS, no regex routes, no
//! other plugins, `preserve_host` is ignored.

pub mod plugins;
pub mod router;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use kong_config::model::KongConfig;

use crate::host::{Chain, FilterSpec, Host, HttpRequest, Upstream};
use crate::shared::Clock;
use crate::HostError;
use plugins::{RateLimiter, Rejection};
use router::RouteRef;

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("invalid size \"{value}\": {reason} (nginx size syntax: bytes, or a number followed by k, m or g)")]
    InvalidSize { value: String, reason: &'static str },
    #[error("filter chain of route \"{route}\" rejected its configuration: filter(s) {filters:?} failed on_configure")]
    FilterConfig { route: String, filters: Vec<String> },
}

/// Parses an nginx size (`ngx_parse_size`: `8192`, `8k`, `1m`, `1g`, suffix in
/// either case), as in Kong's `nginx_http_*` settings such as
/// `KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE`.
pub fn parse_nginx_size(text: &str) -> Result<usize, GatewayError> {
    let bad = |reason| GatewayError::InvalidSize {
        value: text.to_string(),
        reason,
    };
    let (digits, scale) = match text.as_bytes().last() {
        None => return Err(bad("empty")),
        Some(b'k' | b'K') => (&text[..text.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&text[..text.len() - 1], 1 << 30),
        Some(_) => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a number"));
    }
    let n: usize = digits.parse().map_err(|_| bad("too large"))?;
    n.checked_mul(scale).ok_or_else(|| bad("too large"))
}

/// `nginx_http_client_body_buffer_size` as the product deploys it (1m in
/// docker/compose.yaml and the README's kong.conf): every webhook up to
/// `max_body_bytes` stays readable by the filters. The sandbox and the
/// end-to-end tests use it; Kong's own default stays [`GatewayOptions::new`]'s.
pub const DEPLOYED_CLIENT_BODY_BUFFER_SIZE: usize = 1 << 20;

/// How to run the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub config: KongConfig,
    pub filters_dir: PathBuf,
    pub workers: usize,
    pub listen: SocketAddr,
    pub clock: Clock,
    /// Names nginx's resolver would know (for dispatch targets by host name).
    pub resolver: HashMap<String, IpAddr>,
    pub echo_logs: bool,
    /// nginx's `client_body_buffer_size` in bytes (Kong's
    /// `nginx_http_client_body_buffer_size`, default 8k): larger request bodies
    /// are proxied but filters cannot read them.
    pub client_body_buffer_size: usize,
}

impl GatewayOptions {
    pub fn new(config: KongConfig) -> Self {
        GatewayOptions {
            config,
            filters_dir: crate::host::default_filters_dir(),
            workers: 2,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clock: Clock::System,
            resolver: HashMap::new(),
            echo_logs: false,
            client_body_buffer_size: crate::host::DEFAULT_CLIENT_BODY_BUFFER_SIZE,
        }
    }
}

struct Inner {
    host: Arc<Host>,
    config: KongConfig,
    chains: HashMap<(usize, usize), Chain>,
    limiter: RateLimiter,
}

/// A running gateway; stops when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    pub host: Arc<Host>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("addr", &self.addr).finish()
    }
}

impl Gateway {
    /// Loads every filter the config names, configures one chain per route and
    /// starts serving on the current tokio runtime.
    pub async fn start(opts: GatewayOptions) -> Result<Gateway, GatewayError> {
        let mut names: Vec<String> = Vec::new();
        let all_chains =
            opts.config
                .filter_chains
                .iter()
                .chain(opts.config.services.iter().flat_map(|s| {
                    s.filter_chains
                        .iter()
                        .chain(s.routes.iter().flat_map(|r| r.filter_chains.iter()))
                }));
        for chain in all_chains {
            for f in &chain.filters {
                if !names.contains(&f.name) {
                    names.push(f.name.clone());
                }
            }
        }
        let mut builder = Host::builder()
            .workers(opts.workers)
            .clock(opts.clock.clone())
            .echo_logs(opts.echo_logs)
            .client_body_buffer_size(opts.client_body_buffer_size);
        for name in &names {
            builder = builder.filter_file(name, opts.filters_dir.join(format!("{name}.wasm")));
        }
        for (name, ip) in &opts.resolver {
            builder = builder.resolve(name, *ip);
        }
        let host = Arc::new(builder.build()?);
        let mut chains = HashMap::new();
        for (si, service) in opts.config.services.iter().enumerate() {
            for (ri, route) in service.routes.iter().enumerate() {
                let specs: Vec<FilterSpec> = service
                    .filter_chains
                    .iter()
                    .chain(route.filter_chains.iter())
                    .filter(|c| c.enabled)
                    .flat_map(|c| c.filters.iter())
                    .filter(|f| f.enabled)
                    .map(|f| FilterSpec {
                        name: f.name.clone(),
                        config: f.config_string(),
                    })
                    .collect();
                let chain = host.add_chain(&specs).await?;
                if !chain.all_configured() {
                    let filters = specs
                        .iter()
                        .zip(&chain.configured)
                        .filter(|(_, ok)| !**ok)
                        .map(|(s, _)| s.name.clone())
                        .collect();
                    return Err(GatewayError::FilterConfig {
                        route: route.name.clone(),
                        filters,
                    });
                }
                chains.insert((si, ri), chain);
            }
        }
        let inner = Arc::new(Inner {
            host: Arc::clone(&host),
            config: opts.config,
            chains,
            limiter: RateLimiter::default(),
        });
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| GatewayError::Listen {
                addr: opts.listen,
                reason: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| GatewayError::Listen {
            addr: opts.listen,
            reason: e.to_string(),
        })?;
        let app = axum::Router::new().fallback(handle).with_state(inner);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Gateway {
            addr,
            host,
            _stop: stop,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn respond(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length")
            || k.eq_ignore_ascii_case("connection")
            || k.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp.headers_mut().insert(
        "via",
        HeaderValue::from_static("1.1 kong/3.9.1 (bitbylaw stand-in)"),
    );
    resp
}

fn reject(r: Rejection, extra: &[(String, String)]) -> Response {
    let mut headers = r.headers;
    headers.extend_from_slice(extra);
    respond(r.status, &headers, r.body.into_bytes())
}

/// Splits a raw query string into pairs without decoding, so it can be rebuilt unchanged.
fn raw_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn handle(
    State(gw): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let Some((route_ref, prefix)) = router::match_route(&gw.config, method.as_str(), &path) else {
        return reject(
            Rejection {
                status: 404,
                headers: vec![(
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                )],
                body: r#"{"message":"no Route matched with those values"}"#.into(),
            },
            &[],
        );
    };
    let RouteRef {
        service: si,
        route: ri,
    } = route_ref;
    let service = &gw.config.services[si];
    let route = &service.routes[ri];
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut query = raw_pairs(uri.query().unwrap_or(""));
    let origin = crate::stream::header_value(&pairs, "origin").map(str::to_string);
    let mut extra_response_headers: Vec<(String, String)> = Vec::new();
    let mut consumer: Option<String> = None;
    for plugin in plugins::effective(&gw.config.plugins, &service.plugins, &route.plugins) {
        let cfg = &plugin.config;
        match plugin.name.as_str() {
            "cors" => {
                if method == Method::OPTIONS
                    && crate::stream::header_value(&pairs, "access-control-request-method")
                        .is_some()
                {
                    return reject(plugins::cors_preflight(cfg, origin.as_deref()), &[]);
                }
                if let Some(o) = plugins::cors_origin(cfg, origin.as_deref()) {
                    extra_response_headers.push(("access-control-allow-origin".into(), o));
                }
            }
            "key-auth" => {
                match plugins::key_auth(cfg, &gw.config.consumers, &mut pairs, &mut query) {
                    Ok(c) => consumer = Some(c),
                    Err(r) => return reject(r, &extra_response_headers),
                }
            }
            "acl" => {
                let c = consumer
                    .as_deref()
                    .and_then(|name| gw.config.consumers.iter().find(|c| c.username == name));
                if let Err(r) = plugins::acl(cfg, c) {
                    return reject(r, &extra_response_headers);
                }
            }
            "request-size-limiting" => {
                if let Err(r) = plugins::request_size(cfg, body.len()) {
                    return reject(r, &extra_response_headers);
                }
            }
            "request-transformer" => {
                if let Err(r) = plugins::request_transformer(cfg, &mut pairs) {
                    return reject(r, &extra_response_headers);
                }
            }
            "rate-limiting" => {
                let identity = consumer.clone().unwrap_or_else(|| peer.ip().to_string());
                let now = gw.host.clock().now_nanos() / 1_000_000_000;
                match gw.limiter.check(&route.name, cfg, &identity, now) {
                    Ok(h) => extra_response_headers.extend(h),
                    Err(r) => return reject(r, &extra_response_headers),
                }
            }
            _ => {}
        }
    }
    let query_string = join_pairs(&query);
    let full_path = if query_string.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query_string}")
    };
    let upstream_uri = router::upstream_uri(service, route, &prefix, &path, None);
    let mut request =
        HttpRequest::new(method.as_str(), &full_path).kong_upstream_uri(&upstream_uri);
    request.headers = pairs;
    request.body_chunks = if body.is_empty() {
        Vec::new()
    } else {
        vec![body.to_vec()]
    };
    request.client_addr = peer.ip().to_string();
    request.client_port = peer.port();
    request.kong_route_id = Some(route.name.clone());
    request.kong_service_id = Some(service.name.clone());
    let base = match url::Url::parse(&service.url) {
        Ok(u) => format!(
            "{}://{}",
            u.scheme(),
            u.host_str()
                .map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
                .unwrap_or_default()
        ),
        Err(_) => service.url.clone(),
    };
    let upstream = Upstream::Url {
        base,
        timeout: Duration::from_millis(service.read_timeout.max(1)),
    };
    let Some(chain) = gw.chains.get(&(si, ri)) else {
        return respond(
            500,
            &[],
            br#"{"message":"An unexpected error occurred"}"#.to_vec(),
        );
    };
    match gw.host.request_any(chain, request, upstream).await {
        Ok(r) => {
            let mut headers = r.headers;
            headers.extend(extra_response_headers);
            respond(r.status, &headers, r.body)
        }
        Err(e) => respond(
            500,
            &[],
            serde_json::json!({"message": "An unexpected error occurred", "detail": e.to_string()})
                .to_string()
                .into_bytes(),
        ),
    }
}
