//! The per-request data every filter in a chain reads and writes.
//!
//! All filters of a chain see one request: a header a filter adds in
//! `on_request_headers` is visible to the next filter and to the upstream. The
//! data is shared between the chain's VM instances through `Rc<RefCell<…>>`
//! (all of them live on the same worker thread, like nginx's request struct).

use crate::abi::HeaderPairs;

/// Which hook is running; host functions check it the way ngx_wasm_module's
/// `ngx_proxy_wasm_host.c` does (`pwctx->step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Idle,
    VmStart,
    Configure,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    Log,
    Done,
    Tick,
    DispatchResponse,
}

/// A response produced by `proxy_send_local_response` while the request was
/// still being processed (the chain stops and the upstream is never called).
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: HeaderPairs,
    pub body: Vec<u8>,
}

/// Request and response as the filters see them.
#[derive(Debug, Default)]
pub struct StreamData {
    pub method: String,
    /// Raw request URI including the query string (`:path`, `request.path`).
    pub path: String,
    pub scheme: String,
    /// `server_name:port`, which is what ngx_wasm_module returns for `:authority`
    /// (src/common/proxy_wasm/ngx_proxy_wasm_maps.c, `get_authority`).
    pub authority: String,
    pub request_headers: HeaderPairs,
    /// The request body as currently visible to the filter (whole body in
    /// Kong mode, the buffered part in streamed mode).
    pub request_body: Vec<u8>,
    pub response_status: u16,
    pub response_headers: HeaderPairs,
    /// The response body chunk (or buffered chunks) the current hook sees.
    pub response_body: Vec<u8>,
    pub local_response: Option<LocalResponse>,
    /// Set once the response headers have been produced (after the response
    /// header hooks): from then on request headers are read-only.
    pub response_started: bool,
    pub client_addr: String,
    pub client_port: u16,
    pub request_started_nanos: u64,
    pub upstream_addr: Option<String>,
    /// Kong's `$upstream_uri` (path and query sent to the upstream), set by
    /// Kong's router before the filters run. `None` outside Kong: then the
    /// upstream gets `:path`, as with a plain nginx `proxy_pass`.
    pub upstream_uri: Option<String>,
    pub kong_route_id: Option<String>,
    pub kong_service_id: Option<String>,
}

impl StreamData {
    /// Request headers with ngx_wasm_module's pseudo-header "extras" first.
    pub fn request_pairs(&self) -> HeaderPairs {
        let mut out = Vec::with_capacity(self.request_headers.len() + 4);
        out.push((":path".to_string(), self.path.clone()));
        out.push((":method".to_string(), self.method.clone()));
        out.push((":scheme".to_string(), self.scheme.clone()));
        out.push((":authority".to_string(), self.authority.clone()));
        out.extend(self.request_headers.iter().cloned());
        out
    }

    pub fn response_pairs(&self) -> HeaderPairs {
        let mut out = Vec::with_capacity(self.response_headers.len() + 1);
        if self.response_status != 0 {
            out.push((":status".to_string(), self.response_status.to_string()));
        }
        out.extend(self.response_headers.iter().cloned());
        out
    }
}

/// Case-insensitive lookup of the first value of a header.
pub fn header_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Removes every value of `name` (case-insensitive).
pub fn remove_header(pairs: &mut HeaderPairs, name: &str) {
    pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
}

/// Replaces all values of `name` with one value (adds it when absent).
pub fn replace_header(pairs: &mut HeaderPairs, name: &str, value: &str) {
    if let Some(pos) = pairs.iter().position(|(k, _)| k.eq_ignore_ascii_case(name)) {
        pairs[pos].1 = value.to_string();
        let mut i = 0;
        pairs.retain(|(k, _)| {
            i += 1;
            i - 1 == pos || !k.eq_ignore_ascii_case(name)
        });
    } else {
        pairs.push((name.to_ascii_lowercase(), value.to_string()));
    }
}
