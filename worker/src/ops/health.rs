//! Liveness and readiness state. `/health` only says the process answers; `/ready` says this
//! instance can do its job: Redis answers, every consumer loop it should run is running, and the
//! outside-system clients it was configured with could be built.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// State of a sync's clients (built at start-up, most in the background once Redis answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientsState {
    /// Waiting for Redis.
    Starting,
    /// Built.
    Ready,
    /// Cannot be built (configuration); the reason, free of secrets.
    Failed(String),
}

/// The syncs whose clients `/ready` reports, in its order: the key (`<key>_clients` in the
/// answer) and the name used in the 503 message.
pub const CLIENT_SYNCS: [(&str, &str); 4] = [
    ("calendar", "calendar"),
    ("beteiligte", "Beteiligte"),
    ("documents", "document"),
    ("bankverbindungen", "Bankverbindungen"),
];

#[derive(Debug, Default)]
pub struct Health {
    consumers_expected: AtomicUsize,
    consumers_running: AtomicUsize,
    /// Per sync key of [`CLIENT_SYNCS`]; absent: that sync is not configured on this instance.
    clients: Mutex<BTreeMap<&'static str, ClientsState>>,
}

impl Health {
    /// Records the state of the clients of `sync` (a key of [`CLIENT_SYNCS`]).
    pub fn set_clients(&self, sync: &'static str, state: ClientsState) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sync, state);
    }
    /// The state of the clients of `sync`; `None` when it is not configured here.
    pub fn clients(&self, sync: &str) -> Option<ClientsState> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sync)
            .cloned()
    }
    pub fn expect_consumers(&self, n: usize) {
        self.consumers_expected.store(n, Ordering::SeqCst);
    }
    pub fn consumer_up(&self) {
        self.consumers_running.fetch_add(1, Ordering::SeqCst);
    }
    pub fn consumer_down(&self) {
        self.consumers_running.fetch_sub(1, Ordering::SeqCst);
    }
    pub fn consumers(&self) -> (usize, usize) {
        (
            self.consumers_running.load(Ordering::SeqCst),
            self.consumers_expected.load(Ordering::SeqCst),
        )
    }
}
