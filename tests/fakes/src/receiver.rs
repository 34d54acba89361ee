//! A catch-all HTTP receiver: records every request and answers a settable status.
//!
//! Stands in for any endpoint that only has to receive (a webhook target, our gateway in sender
//! tests); the request log is the same [`Controls`] log every fake has.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::server::{Controls, RunningServer, StartError};

/// A running receiver. Stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    server: RunningServer,
    controls: Controls,
    status: Arc<AtomicU16>,
}

/// Starts a receiver on `bind` (`127.0.0.1:0` for any port) answering `status` with an empty body.
pub async fn start(bind: SocketAddr, status: u16) -> Result<Receiver, StartError> {
    let status = Arc::new(AtomicU16::new(status));
    let controls = Controls::default();
    let router = Router::new().fallback(answer).with_state(status.clone());
    let server =
        RunningServer::spawn(bind, router, controls.clone(), |s| s.into_response()).await?;
    Ok(Receiver {
        server,
        controls,
        status,
    })
}

/// Starts a receiver on a free loopback port answering 200.
pub async fn start_ok() -> Result<Receiver, StartError> {
    start(SocketAddr::from(([127, 0, 0, 1], 0)), 200).await
}

async fn answer(State(status): State<Arc<AtomicU16>>) -> Response {
    StatusCode::from_u16(status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        .into_response()
}

impl Receiver {
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `base_url()` + `path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    pub fn requests(&self) -> Vec<crate::RecordedRequest> {
        self.controls.requests()
    }

    /// Status for subsequent requests.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}
