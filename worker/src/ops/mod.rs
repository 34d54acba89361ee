//! Operations: liveness/readiness state and Prometheus metrics.

pub mod health;
pub mod metrics;
