//! What our filters need to know about the host they run in, in one place.
//!
//! # Layout
//! - [`set_upstream_path`]: rewrite the path the upstream receives, in Kong and elsewhere.
//! - [`blank_request_header`], [`repeated_request_header`]: keep a request
//!   header's value away from the upstream, which removal alone does not do in Kong.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

/// Points the proxied request at `path_and_query`.
///
/// Kong proxies to `$upstream_uri` (its nginx template: `proxy_pass
/// …$upstream_uri`), which Kong's router computes *before* the filter chain
/// runs, so a `:path` change alone does not reach Kong's upstream. `$upstream_uri`
/// is a writable nginx variable, exposed by ngx_wasm_module as the property
/// `ngx.upstream_uri`. Kong's `access.after` appends `?$args` when the request
/// has arguments; whether that runs before or after the filter, setting
/// `$upstream_uri` to the whole path and query and emptying `$args` gives the
/// same result. On hosts without the variable (Envoy, plain nginx) `:path` is
/// what counts. The Kong properties are only touched when the host has them,
/// because the SDK's `set_property` panics (traps) on any status but Ok.
pub fn set_upstream_path(path_and_query: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path_and_query))?;
    if matches!(
        hostcalls::get_property(vec!["ngx", "upstream_uri"]),
        Ok(Some(_))
    ) {
        hostcalls::set_property(vec!["ngx", "upstream_uri"], Some(path_and_query.as_bytes()))?;
        hostcalls::set_property(vec!["ngx", "args"], Some(b""))?;
    }
    Ok(())
}

/// Keeps the value of request header `name` from reaching the upstream.
///
/// In ngx_wasm_module, removing a request header only hides it from the wasm
/// side (`ngx_http_wasm_set_header_helper` sets the element's hash to 0);
/// nginx's proxy module still copies every element of `headers_in` to the
/// upstream, so a removed header is forwarded with its value (measured against
/// nginx 1.27.4 + ngx_wasm_module 3bed278). Replacing the value in place first
/// leaves an empty header there; the removal then hides it from later filters
/// and removes it for real on hosts that support removal. Only the first of
/// several values can be blanked this way, so callers refuse repeated
/// credentials first ([`repeated_request_header`]).
pub fn blank_request_header(name: &str) -> Result<(), Status> {
    if hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)?.is_some() {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(""))?;
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)?;
    }
    Ok(())
}

/// The first of `names` that the request carries more than once (case-insensitive).
///
/// A repeated header cannot be cleaned up in Kong (see [`blank_request_header`];
/// replacing a repeated header there hides all its values from the filters but
/// forwards them), so filters refuse such requests instead of guessing which
/// value counts.
pub fn repeated_request_header<'a>(names: &[&'a str]) -> Result<Option<&'a str>, Status> {
    let pairs = hostcalls::get_map_bytes(MapType::HttpRequestHeaders)?;
    Ok(names.iter().copied().find(|name| {
        pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .nth(1)
            .is_some()
    }))
}
