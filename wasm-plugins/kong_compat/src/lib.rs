//! What our filters need to know about the host they run in, in one place.
//!
//! # Layout
//! - [`set_upstream_path`]: rewrite the path the upstream receives, in Kong and elsewhere.

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
