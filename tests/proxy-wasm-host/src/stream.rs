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
    /// nginx's `r->headers_in.headers`: edits clear elements instead of
    /// deleting them, and the proxy module still forwards cleared ones.
    pub request_headers: RequestHeaders,
    /// The request body as currently visible to the filter (whole body in
    /// Kong mode, the buffered part in streamed mode).
    pub request_body: Vec<u8>,
    /// Set when the body exceeded `client_body_buffer_size` and nginx wrote it
    /// to this temp file: filters then cannot read it (ngx_proxy_wasm_host.c,
    /// `ngx_proxy_wasm_get_buffer_helper`), the upstream still gets it.
    pub request_body_file: Option<String>,
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
        let mut out = Vec::with_capacity(self.request_headers.elements().len() + 4);
        out.push((":path".to_string(), self.path.clone()));
        out.push((":method".to_string(), self.method.clone()));
        out.push((":scheme".to_string(), self.scheme.clone()));
        out.push((":authority".to_string(), self.authority.clone()));
        out.extend(self.request_headers.visible());
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

/// Request headers nginx's proxy module generates itself instead of copying
/// them from `r->headers_in` (ngx_http_proxy_module.c, `ngx_http_proxy_headers`
/// and `ngx_http_proxy_create_request`): a cleared element of these names is
/// not forwarded, the host's own handling of them applies.
const PROXY_GENERATED: [&str; 8] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "expect",
    "upgrade",
    "te",
];

/// One element of nginx's `r->headers_in.headers` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderElement {
    /// As spelled by the client (lowercased by the host) or by the filter that set it.
    pub name: String,
    pub value: String,
    /// ngx_wasm_module's removal: `hash = 0`. Filters no longer see the
    /// element, but nginx's proxy module still sends it upstream.
    pub cleared: bool,
}

/// The request header list with ngx_wasm_module's edit semantics
/// (src/http/ngx_http_wasm_headers.c, `ngx_http_wasm_set_header_helper`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    elements: Vec<HeaderElement>,
}

impl RequestHeaders {
    pub fn from_pairs(pairs: HeaderPairs) -> Self {
        let elements = pairs
            .into_iter()
            .map(|(name, value)| HeaderElement {
                name,
                value,
                cleared: false,
            })
            .collect();
        RequestHeaders { elements }
    }

    /// Every element, cleared ones included, in list order.
    pub fn elements(&self) -> &[HeaderElement] {
        &self.elements
    }

    fn live(&self) -> impl Iterator<Item = &HeaderElement> {
        self.elements.iter().filter(|e| !e.cleared)
    }

    /// What filters see: the elements not cleared (maps skip `hash == 0`,
    /// ngx_proxy_wasm_util.c), names lowercased as everywhere in this host.
    pub fn visible(&self) -> HeaderPairs {
        self.live()
            .map(|e| (e.name.to_ascii_lowercase(), e.value.clone()))
            .collect()
    }

    /// First visible value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.live()
            .find(|e| e.name.eq_ignore_ascii_case(name))
            .map(|e| e.value.as_str())
    }

    /// `proxy_add_header_map_value`: always a new element at the end.
    pub fn add(&mut self, name: &str, value: &str) {
        self.elements.push(HeaderElement {
            name: name.to_string(),
            value: value.to_string(),
            cleared: false,
        });
    }

    /// `proxy_replace_header_map_value`, step by step as
    /// `ngx_http_wasm_set_header_helper` in SET mode: the first live match is
    /// updated in place (filter's spelling); every further match is cleared and
    /// the scan restarts, which then clears the updated element too. Appends
    /// when nothing matched.
    pub fn set(&mut self, name: &str, value: &str) {
        let mut found = false;
        'again: loop {
            for e in self.elements.iter_mut() {
                if e.cleared || !e.name.eq_ignore_ascii_case(name) {
                    continue;
                }
                if found {
                    e.cleared = true;
                    continue 'again;
                }
                e.name = name.to_string();
                e.value = value.to_string();
                found = true;
            }
            break;
        }
        if !found {
            self.add(name, value);
        }
    }

    /// `proxy_remove_header_map_value`: clears every live match.
    pub fn remove(&mut self, name: &str) {
        for e in self.elements.iter_mut() {
            if e.name.eq_ignore_ascii_case(name) {
                e.cleared = true;
            }
        }
    }

    /// `ngx_http_wasm_clear_headers_helper` (start of `proxy_set_header_map_pairs`).
    pub fn clear_all(&mut self) {
        for e in self.elements.iter_mut() {
            e.cleared = true;
        }
    }

    /// What nginx's proxy module copies to the upstream request: every element,
    /// cleared or not, except cleared ones of the headers it generates itself.
    pub fn wire(&self) -> HeaderPairs {
        self.elements
            .iter()
            .filter(|e| {
                !(e.cleared
                    && PROXY_GENERATED
                        .iter()
                        .any(|g| e.name.eq_ignore_ascii_case(g)))
            })
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> RequestHeaders {
        RequestHeaders::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn pairs(p: &[(&str, &str)]) -> HeaderPairs {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn set_over_one_value_updates_in_place_with_the_new_spelling() {
        let mut h = list(&[("a", "1"), ("x-dup", "a"), ("z", "2")]);
        h.set("X-Dup", "new");
        assert_eq!(
            h.visible(),
            pairs(&[("a", "1"), ("x-dup", "new"), ("z", "2")])
        );
        assert_eq!(h.wire(), pairs(&[("a", "1"), ("X-Dup", "new"), ("z", "2")]));
    }

    #[test]
    fn set_over_two_values_clears_both_and_forwards_both() {
        let mut h = list(&[("x-dup", "a"), ("x-dup", "b"), ("k", "v")]);
        h.set("x-dup", "new");
        assert_eq!(h.visible(), pairs(&[("k", "v")]));
        assert_eq!(
            h.wire(),
            pairs(&[("x-dup", "new"), ("x-dup", "b"), ("k", "v")])
        );
        // A second set finds nothing live and appends.
        h.set("x-dup", "again");
        assert_eq!(h.get("x-dup"), Some("again"));
    }

    #[test]
    fn set_without_match_appends_and_add_always_appends() {
        let mut h = list(&[("a", "1")]);
        h.set("b", "2");
        h.add("a", "3");
        assert_eq!(h.visible(), pairs(&[("a", "1"), ("b", "2"), ("a", "3")]));
    }

    #[test]
    fn remove_hides_every_value_but_keeps_them_on_the_wire() {
        let mut h = list(&[("x", "1"), ("X", "2"), ("y", "3")]);
        h.remove("x");
        assert_eq!(h.get("x"), None);
        assert_eq!(h.visible(), pairs(&[("y", "3")]));
        assert_eq!(h.wire(), pairs(&[("x", "1"), ("X", "2"), ("y", "3")]));
    }

    #[test]
    fn cleared_proxy_generated_headers_are_not_forwarded() {
        let mut h = list(&[
            ("host", "h"),
            ("connection", "keep-alive"),
            ("content-length", "3"),
            ("te", "trailers"),
            ("x", "1"),
        ]);
        h.clear_all();
        assert!(h.visible().is_empty());
        assert_eq!(h.wire(), pairs(&[("x", "1")]));
    }
}
