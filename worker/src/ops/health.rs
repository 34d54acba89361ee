//! Liveness and readiness state. `/health` only says the process answers; `/ready` says this
//! instance can do its job: Redis answers and every consumer loop it should run is running.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    consumers_expected: AtomicUsize,
    consumers_running: AtomicUsize,
}

impl Health {
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
