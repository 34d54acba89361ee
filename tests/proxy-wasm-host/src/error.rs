//! The host's error type: what can go wrong loading filters or talking to workers.
//!
//! A concrete enum because tests branch on it (an unsupported import must be a
//! clear load error, not a panic).

/// Errors from loading filters and driving the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read filter {path}: {reason}")]
    ReadFilter { path: String, reason: String },
    #[error("filter \"{filter}\" does not compile: {reason}")]
    Compile { filter: String, reason: String },
    #[error("\"{filter}\" is not a proxy-wasm filter: {reason}")]
    NotAFilter { filter: String, reason: String },
    #[error("filter \"{filter}\" imports unsupported function {module}::{name}")]
    UnsupportedImport {
        filter: String,
        module: String,
        name: String,
    },
    #[error("filter \"{filter}\" cannot be instantiated: {reason}")]
    Instantiate { filter: String, reason: String },
    #[error("no filter named \"{0}\" is loaded")]
    UnknownFilter(String),
    #[error("no filter chain #{0}")]
    UnknownChain(usize),
    #[error("worker #{0} does not exist or has stopped")]
    WorkerGone(usize),
    #[error("I/O: {0}")]
    Io(String),
}
