//! Liveness and readiness state. `/health` only says the process answers; `/ready` says this
//! instance can do its job: Redis answers, every consumer loop it should run is running, and the
//! outside-system clients it was configured with could be built.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// State of a sync's clients (calendar, Beteiligte; built in the background at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientsState {
    /// Waiting for Redis.
    Starting,
    /// Built.
    Ready,
    /// Cannot be built (configuration); the reason, free of secrets.
    Failed(String),
}

#[derive(Debug, Default)]
pub struct Health {
    consumers_expected: AtomicUsize,
    consumers_running: AtomicUsize,
    /// `None`: the calendar sync is not configured on this instance.
    calendar: Mutex<Option<ClientsState>>,
    /// `None`: the Beteiligte sync is not configured on this instance.
    beteiligte: Mutex<Option<ClientsState>>,
}

impl Health {
    pub fn set_calendar(&self, state: ClientsState) {
        *self.calendar.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }
    pub fn calendar(&self) -> Option<ClientsState> {
        self.calendar
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn set_beteiligte(&self, state: ClientsState) {
        *self.beteiligte.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }
    pub fn beteiligte(&self) -> Option<ClientsState> {
        self.beteiligte
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
