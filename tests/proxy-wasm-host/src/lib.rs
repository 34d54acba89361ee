//! A proxy-wasm ABI 0.2.1 host that runs our filters the way Kong 3.9's
//! `ngx_wasm_module` does — a test and development tool, never shipped.
//!
//! Kong cannot be installed on our build machines, so every filter is verified
//! here: the built `.wasm` is loaded into wasmtime and driven through the same
//! lifecycle, host functions and restrictions as inside Kong. See `README.md` in
//! this crate for the list of implemented semantics and where each was taken from.
//!
//! # Layout
//! - [`abi`]: ABI constants and the header-map wire format.
//! - [`shared`]: what all workers share — clock, `shm_kv` zones, metrics, logs.
//! - [`stream`]: the request/response data the filters of one chain see.
//! - [`vm`]: one instance of one filter module and its host functions (proxy-wasm + WASI).
//! - [`worker`]: one "nginx worker" thread driving requests through filter chains.
//! - [`io`]: real HTTP for dispatches and upstream requests.
//! - [`host`]: the public API tests use ([`Host`], [`HttpRequest`], [`HttpResponse`]).
//! - [`gateway`]: gateway mode — serve HTTP routed by `kong.yaml` (a Kong stand-in).

pub mod abi;
pub mod error;
pub mod gateway;
pub mod host;
pub mod io;
pub mod shared;
pub mod stream;
pub mod testing;
pub mod vm;
pub mod worker;

pub use abi::LogLevel;
pub use error::HostError;
pub use host::{
    BodyMode, Chain, FilterSpec, Host, HostBuilder, HttpRequest, HttpResponse, Upstream,
    UpstreamRequest,
};
pub use shared::{Clock, LogRecord, MetricValue};
