//! Renders and validates the gateway's Kong 3.9 DB-less declarative config.
//!
//! Kong 3.9 resolves no `{vault://…}` references inside proxy-wasm filter configs or
//! `keyauth_credentials` keys, so the committed `kong.yaml` is a *template* with `${VAR}`
//! placeholders; this crate fills them from the environment at deploy time and then checks
//! the result against the rules Kong would otherwise only enforce at startup.
//!
//! # Layout
//! - [`model`]: the typed view of `kong.yaml` (services, routes, filter chains, plugins,
//!   consumers) that other crates (test hosts, the gateway harness) read.
//! - [`render`]: `${VAR}` / `${VAR:-default}` substitution inside YAML string scalars,
//!   so a value can never change the document's structure.
//! - [`validate`]: Kong's rules (format version, URLs, routes, filter files and their
//!   `meta.json` schemas, bundled plugin names, leftover placeholders and vault refs, keys),
//!   all problems reported at once.
//! - [`guard`]: `webhook_guard` rules beyond its JSON Schema (webhooks bound to the actions of
//!   the route's `path_pattern` and `paths`), shared with the filter through `bitbylaw-core`.
//! - [`error`]: the error types of this boundary (`ConfigError`, `RenderError`, `Problem`).
//! - `main.rs`: the `kong-config` binary (`render`, `check`, `vars`).

pub mod error;
pub mod guard;
pub mod model;
pub mod render;
pub mod validate;

pub use error::{ConfigError, Problem, RenderError};
pub use model::{
    AclGroup, Consumer, Filter, FilterChain, KeyAuthCredential, KongConfig, Plugin, Route, Service,
};
pub use render::{redact, render, render_detailed, template_vars, Rendered, TemplateVar};
pub use validate::{validate, validate_document, validate_with_meta_dirs, BUNDLED_PLUGINS};
