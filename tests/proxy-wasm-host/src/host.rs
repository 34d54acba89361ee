//! The public API: load filters, build chains, send requests, move the clock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use wasmtime::Engine;

use crate::abi::HeaderPairs;
use crate::error::HostError;
use crate::io::{Io, Resolver};
use crate::shared::{Clock, LogRecord, MetricValue, Metrics, Shared, SharedKv};
use crate::stream::header_value;
use crate::vm::FilterModule;
use crate::worker::{Worker, WorkerMsg};

/// How request bodies reach `on_request_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyMode {
    /// As in Kong/ngx_wasm_module: nginx reads the whole body first, the hook is
    /// called once with eof = true (ngx_http_proxy_wasm.c, `on_request_body`
    /// passes `eof: 1`), and not at all when there is no body.
    #[default]
    Kong,
    /// As in Envoy: one call per received chunk; returning Pause before eof
    /// buffers. Filters must work on both hosts, so tests use this too.
    Streamed,
}

/// Settings every worker reads.
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub env: Vec<(String, String)>,
    /// nginx's `hostname` (what `request.host` returns).
    pub host_name: String,
    /// `server_name` and port, which make up `:authority`.
    pub server_name: String,
    pub server_port: u16,
    pub resolver: Resolver,
    pub body_mode: BodyMode,
    pub preserve_host: bool,
    /// Deliver upstream response bodies in chunks of this size (None: one chunk).
    pub response_chunk_size: Option<usize>,
    /// nginx's `client_body_buffer_size`: in [`BodyMode::Kong`] a larger request
    /// body goes to a temp file and filters cannot read it.
    pub client_body_buffer_size: usize,
}

/// Kong's default `nginx_http_client_body_buffer_size` (8k).
pub const DEFAULT_CLIENT_BODY_BUFFER_SIZE: usize = 8192;

impl HostSettings {
    pub fn authority(&self) -> String {
        format!("{}:{}", self.server_name, self.server_port)
    }
}

/// One filter in a chain with its configuration (the JSON string kong.yaml gives it).
#[derive(Debug, Clone)]
pub struct FilterSpec {
    pub name: String,
    pub config: Option<String>,
}

impl FilterSpec {
    pub fn new(name: &str, config: Option<&str>) -> Self {
        FilterSpec {
            name: name.to_string(),
            config: config.map(str::to_string),
        }
    }

    /// A filter with a JSON configuration, serialised as Kong does.
    pub fn json(name: &str, config: &serde_json::Value) -> Self {
        FilterSpec {
            name: name.to_string(),
            config: Some(config.to_string()),
        }
    }
}

/// A configured filter chain; `configured[i]` says whether filter `i` accepted
/// its configuration (`on_configure` returned true) on every worker.
#[derive(Debug, Clone)]
pub struct Chain {
    pub id: usize,
    pub configured: Vec<bool>,
}

impl Chain {
    pub fn all_configured(&self) -> bool {
        self.configured.iter().all(|c| *c)
    }
}

/// A client request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Raw request URI with query string.
    pub path: String,
    pub scheme: String,
    pub headers: HeaderPairs,
    /// The body as it arrives on the connection, chunk by chunk.
    pub body_chunks: Vec<Vec<u8>>,
    pub client_addr: String,
    pub client_port: u16,
    /// Kong's `$upstream_uri` for this request (see [`HttpRequest::kong_upstream_uri`]).
    pub upstream_uri: Option<String>,
    pub kong_route_id: Option<String>,
    pub kong_service_id: Option<String>,
}

impl HttpRequest {
    pub fn new(method: &str, path: &str) -> Self {
        HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            scheme: "http".into(),
            headers: Vec::new(),
            body_chunks: Vec::new(),
            client_addr: "127.0.0.1".into(),
            client_port: 40000,
            upstream_uri: None,
            kong_route_id: None,
            kong_service_id: None,
        }
    }

    /// Behave like Kong: the router has computed `$upstream_uri` (a path, no
    /// query) before the filters run; the upstream receives it with `?$args`
    /// appended when the request has arguments (Kong's `access.after`). A filter
    /// changes it through the `ngx.upstream_uri` property — a `:path` change only
    /// reaches Kong's upstream through its query part. Gateway mode sets this for
    /// every request.
    pub fn kong_upstream_uri(mut self, uri: &str) -> Self {
        self.upstream_uri = Some(uri.to_string());
        self
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", path).body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        self.headers
            .push(("content-length".into(), body.len().to_string()));
        self.body_chunks = vec![body];
        self
    }

    /// The same body, split into the given chunks.
    pub fn chunks(mut self, chunks: Vec<Vec<u8>>) -> Self {
        let len: usize = chunks.iter().map(Vec::len).sum();
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        self.headers
            .push(("content-length".into(), len.to_string()));
        self.body_chunks = chunks;
        self
    }
}

/// What the upstream received (after the filters changed it).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: String,
    pub path: String,
    pub headers: HeaderPairs,
    pub body: Vec<u8>,
}

impl UpstreamRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

/// Where accepted requests go.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A real HTTP server; the request path is appended to the base's path.
    Url { base: String, timeout: Duration },
    /// A canned answer (the request the filters produced is still recorded).
    Static {
        status: u16,
        headers: HeaderPairs,
        body: Vec<u8>,
    },
}

impl Upstream {
    pub fn url(base: &str) -> Self {
        Upstream::Url {
            base: base.to_string(),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn fixed(status: u16, body: &str) -> Self {
        Upstream::Static {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// What the client received.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderPairs,
    pub body: Vec<u8>,
    /// The request as sent upstream, if the chain let it through.
    pub upstream_request: Option<UpstreamRequest>,
    /// Produced by `proxy_send_local_response`.
    pub local_response: bool,
    /// Hooks called, in order: `filter:export:action`.
    pub trace: Vec<String>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One process-wide engine and a cache of compiled modules, so a test binary
/// compiles each `.wasm` once however many hosts it builds.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

fn compile_cached(name: &str, bytes: &[u8]) -> Result<FilterModule, HostError> {
    static CACHE: OnceLock<Mutex<HashMap<(String, u64), FilterModule>>> = OnceLock::new();
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let key = (name.to_string(), h.finish());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(m) = cache.lock().get(&key) {
        return Ok(m.clone());
    }
    let module = FilterModule::compile(engine(), name, bytes)?;
    cache.lock().insert(key, module.clone());
    Ok(module)
}

/// The directory `cargo build --target wasm32-wasip1 --release` writes filters to.
pub fn default_filters_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BITBYLAW_WASM_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("wasm32-wasip1/release")
}

/// Builds a [`Host`].
#[derive(Debug)]
pub struct HostBuilder {
    modules: Vec<(String, PathBuf)>,
    workers: usize,
    clock: Clock,
    default_zone: bool,
    zones: Vec<String>,
    resolver: HashMap<String, IpAddr>,
    env: Vec<(String, String)>,
    body_mode: BodyMode,
    echo_logs: bool,
    response_chunk_size: Option<usize>,
    preserve_host: bool,
    server_name: String,
    server_port: u16,
    client_body_buffer_size: usize,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            modules: Vec::new(),
            workers: 1,
            clock: Clock::manual(),
            default_zone: true,
            zones: Vec::new(),
            resolver: HashMap::new(),
            env: Vec::new(),
            body_mode: BodyMode::Kong,
            echo_logs: std::env::var("PW_HOST_ECHO_LOGS").is_ok(),
            response_chunk_size: None,
            preserve_host: false,
            server_name: "kong".into(),
            server_port: 8000,
            client_body_buffer_size: DEFAULT_CLIENT_BODY_BUFFER_SIZE,
        }
    }
}

impl HostBuilder {
    /// Loads `<name>.wasm` from the default build directory.
    pub fn filter(mut self, name: &str) -> Self {
        let path = default_filters_dir().join(format!("{name}.wasm"));
        self.modules.push((name.to_string(), path));
        self
    }

    pub fn filter_file(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.modules.push((name.to_string(), path.into()));
        self
    }

    /// nginx worker processes, each with its own VM instances.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether `nginx_wasm_shm_kv` (the default zone) is configured; without it
    /// shared-data access traps, as in ngx_wasm_module.
    pub fn default_shm_zone(mut self, on: bool) -> Self {
        self.default_zone = on;
        self
    }

    /// A named zone (`nginx_wasm_shm_kv_<name>`), selected by keys `<name>/…`.
    pub fn shm_zone(mut self, name: &str) -> Self {
        self.zones.push(name.to_string());
        self
    }

    /// A name nginx's resolver would find (dispatch targets by host name).
    pub fn resolve(mut self, name: &str, ip: IpAddr) -> Self {
        self.resolver.insert(name.to_string(), ip);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn body_mode(mut self, mode: BodyMode) -> Self {
        self.body_mode = mode;
        self
    }

    pub fn echo_logs(mut self, on: bool) -> Self {
        self.echo_logs = on;
        self
    }

    pub fn response_chunk_size(mut self, size: usize) -> Self {
        self.response_chunk_size = Some(size);
        self
    }

    pub fn preserve_host(mut self, on: bool) -> Self {
        self.preserve_host = on;
        self
    }

    pub fn server(mut self, name: &str, port: u16) -> Self {
        self.server_name = name.to_string();
        self.server_port = port;
        self
    }

    /// nginx's `client_body_buffer_size` in bytes (default 8192, Kong's
    /// `nginx_http_client_body_buffer_size`). In [`BodyMode::Kong`] a larger
    /// request body is buffered to a temp file: `on_request_body` still gets its
    /// size and eof, but reading it gives nothing and logs nginx's error; the
    /// upstream gets it unchanged. Raise it for tests that need a big body in memory.
    pub fn client_body_buffer_size(mut self, bytes: usize) -> Self {
        self.client_body_buffer_size = bytes;
        self
    }

    pub fn build(self) -> Result<Host, HostError> {
        let mut modules = Vec::new();
        for (name, path) in &self.modules {
            let bytes = std::fs::read(path).map_err(|e| HostError::ReadFilter {
                path: path.display().to_string(),
                reason: format!(
                    "{e} (build the filters first: cargo build --target wasm32-wasip1 --release)"
                ),
            })?;
            modules.push(compile_cached(name, &bytes)?);
        }
        let shared = Arc::new(Shared {
            clock: self.clock.clone(),
            kv: Mutex::new(SharedKv::new(self.default_zone, self.zones.clone())),
            metrics: Mutex::new(Metrics::default()),
            logs: Mutex::new(Vec::new()),
            echo_logs: self.echo_logs,
        });
        let settings = Arc::new(HostSettings {
            env: self.env.clone(),
            host_name: "localhost".into(),
            server_name: self.server_name.clone(),
            server_port: self.server_port,
            resolver: Arc::new(self.resolver.clone()),
            body_mode: self.body_mode,
            preserve_host: self.preserve_host,
            response_chunk_size: self.response_chunk_size,
            client_body_buffer_size: self.client_body_buffer_size,
        });
        let io = Io::start().map_err(|e| HostError::Io(e.to_string()))?;
        let mut workers = Vec::new();
        for id in 0..self.workers {
            let (tx, rx) = mpsc::channel::<WorkerMsg>();
            let (ready_tx, ready_rx) = mpsc::channel::<Result<(), HostError>>();
            let (engine, modules, shared, settings, io, wtx) = (
                engine().clone(),
                modules.clone(),
                Arc::clone(&shared),
                Arc::clone(&settings),
                io.clone(),
                tx.clone(),
            );
            std::thread::Builder::new()
                .name(format!("pw-worker-{id}"))
                .spawn(
                    move || match Worker::new(id, engine, modules, shared, settings, io, wtx) {
                        Ok(worker) => {
                            let _ = ready_tx.send(Ok(()));
                            worker.run(rx);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    },
                )
                .map_err(|e| HostError::Io(e.to_string()))?;
            ready_rx.recv().map_err(|_| HostError::WorkerGone(id))??;
            workers.push(tx);
        }
        let names = modules.iter().map(|m| m.name.clone()).collect();
        Ok(Host {
            names,
            workers,
            shared,
            next_chain: AtomicUsize::new(1),
            round_robin: AtomicUsize::new(0),
        })
    }
}

/// A running host: N workers, each with one instance of every loaded filter.
pub struct Host {
    names: Vec<String>,
    workers: Vec<Sender<WorkerMsg>>,
    shared: Arc<Shared>,
    next_chain: AtomicUsize,
    round_robin: AtomicUsize,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("filters", &self.names)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn filters(&self) -> &[String] {
        &self.names
    }

    /// Configures a filter chain on every worker (`on_configure` with each config).
    pub async fn add_chain(&self, filters: &[FilterSpec]) -> Result<Chain, HostError> {
        let id = self.next_chain.fetch_add(1, Ordering::SeqCst);
        let mut indexed = Vec::new();
        for f in filters {
            let idx = self
                .names
                .iter()
                .position(|n| *n == f.name)
                .ok_or_else(|| HostError::UnknownFilter(f.name.clone()))?;
            indexed.push((idx, f.config.clone()));
        }
        let mut configured = vec![true; filters.len()];
        for (w, tx) in self.workers.iter().enumerate() {
            let (reply, rx) = oneshot::channel();
            tx.send(WorkerMsg::AddChain {
                chain: id,
                filters: indexed.clone(),
                reply,
            })
            .map_err(|_| HostError::WorkerGone(w))?;
            let result = rx.await.map_err(|_| HostError::WorkerGone(w))??;
            for (c, ok) in configured.iter_mut().zip(result) {
                *c &= ok;
            }
        }
        Ok(Chain { id, configured })
    }

    /// Sends one request through `chain` on worker `worker`.
    pub async fn request(
        &self,
        worker: usize,
        chain: &Chain,
        request: HttpRequest,
        upstream: Upstream,
    ) -> Result<HttpResponse, HostError> {
        let tx = self
            .workers
            .get(worker)
            .ok_or(HostError::WorkerGone(worker))?;
        let (reply, rx) = oneshot::channel();
        tx.send(WorkerMsg::Request {
            chain: chain.id,
            request,
            upstream,
            reply,
        })
        .map_err(|_| HostError::WorkerGone(worker))?;
        rx.await.map_err(|_| HostError::WorkerGone(worker))?
    }

    /// Like [`Host::request`], spreading requests over workers round-robin.
    pub async fn request_any(
        &self,
        chain: &Chain,
        request: HttpRequest,
        upstream: Upstream,
    ) -> Result<HttpResponse, HostError> {
        let w = self.round_robin.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.request(w, chain, request, upstream).await
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Moves a manual clock forward and fires every tick that is now due, on all
    /// workers, before returning.
    pub async fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
        for tx in &self.workers {
            let (reply, rx) = oneshot::channel();
            if tx.send(WorkerMsg::Tick { reply: Some(reply) }).is_ok() {
                let _ = rx.await;
            }
        }
    }

    pub fn logs(&self) -> Vec<LogRecord> {
        self.shared.logs.lock().clone()
    }

    /// All captured log text in one string, for "no secret in logs" assertions.
    pub fn log_text(&self) -> String {
        self.shared
            .logs
            .lock()
            .iter()
            .map(|l| format!("{:?} {} {}\n", l.level, l.filter, l.message))
            .collect()
    }

    pub fn clear_logs(&self) {
        self.shared.logs.lock().clear();
    }

    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        self.shared.metrics.lock().snapshot()
    }

    /// A counter's value by its full name (`pw:<filter>:<name>`), 0 when undefined.
    pub fn counter(&self, full_name: &str) -> u64 {
        match self.metrics().get(full_name) {
            Some(MetricValue::Counter(c)) => *c,
            _ => 0,
        }
    }

    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.kv.lock().get(key).flatten().map(|(v, _)| v)
    }

    pub fn shared_entries(&self) -> usize {
        self.shared.kv.lock().len()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for tx in &self.workers {
            let _ = tx.send(WorkerMsg::Stop);
        }
    }
}
