//! `advoware_auth`: a proxy-wasm filter for Kong 3.9 (ngx_wasm_module) that
//! lets API clients call Advoware's REST API through
//! `/advoware/proxy?endpoint=…` without holding Advoware credentials. It
//! mints Advoware's HMAC-512 bearer token, caches it in shared memory for
//! every worker of the node, refreshes it before expiry from `on_tick`, and
//! injects it into the upstream request. See README.md for configuration and
//! the reasoning behind the waiting/retry design.
//!
//! # Layout
//! Pure logic (compiled and unit-tested natively as well as for wasm):
//! - [`config`]: part 1, the configuration: parsing, defaults, validation
//!   naming every problem, secrets redacted.
//! - [`proxy`]: client URI → upstream `:path` (endpoint rules from
//!   `bitbylaw-core`), credential stripping, JSON error bodies.
//! - [`token`]: the signed token request body and headers, and the mapping of
//!   a call outcome to a cache entry or a 502/504 error.
//! - [`cache`]: the shared-data records (token, fetch lock) and their rules.
//!
//! Host glue (wasm only):
//! - `host`: clock, WASI randomness, logging, metrics, the token dispatch.
//! - `shm`: bounded CAS loops over shared data (store, invalidate, lock).
//! - `root`: part 2, the root context (configure, tick refresh).
//! - `http`: part 3, the HTTP context (rewrite, inject, fetch, 401 handling).

pub mod cache;
pub mod config;
pub mod proxy;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod root;
#[cfg(target_arch = "wasm32")]
mod shm;

// `proxy_wasm::main!` exports `#[no_mangle]` entry points.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(crate::root::AdvowareRoot::new()) });
    }}
}
