//! Retry policy as data: a list of delays, jitter, and bounds for an upstream's `Retry-After`.
//!
//! Attempt `n` (0-based count of failures so far) waits `delays[n]` (the last delay repeats when
//! `max_attempts` exceeds the list), spread by ±`jitter` so a storm of failures does not come back
//! as a storm. An upstream's `Retry-After` wins when it is longer, but never beyond `max_retry_after`.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delays before the 2nd, 3rd, … attempt, in milliseconds.
    pub delays_ms: Vec<u64>,
    /// Total attempts including the first; after the last failure the job is dead-lettered.
    pub max_attempts: u32,
    /// Fraction (0.0–1.0) by which each delay is randomly shortened or lengthened.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Upper bound for honouring an upstream `Retry-After`.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
}

fn default_jitter() -> f64 {
    0.2
}
fn default_max_retry_after_ms() -> u64 {
    15 * 60 * 1000
}

impl Default for RetryPolicy {
    /// 10 s, 1 min, 5 min, 30 min, 2 h: six attempts spread over about 2.5 hours, enough to ride
    /// out an Advoware maintenance window without hammering it.
    fn default() -> Self {
        Self {
            delays_ms: vec![10_000, 60_000, 300_000, 1_800_000, 7_200_000],
            max_attempts: 6,
            jitter: default_jitter(),
            max_retry_after_ms: default_max_retry_after_ms(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAfter(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// Problems with this policy, for `config check`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_attempts == 0 {
            out.push("max_attempts must be at least 1".to_string());
        }
        if self.max_attempts > 1 && self.delays_ms.is_empty() {
            out.push("delays_ms must not be empty when max_attempts > 1".to_string());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            out.push(format!(
                "jitter must be within 0.0..=1.0, got {}",
                self.jitter
            ));
        }
        out
    }

    /// `failures` counts failed attempts including the one just finished.
    pub fn decide(&self, failures: u32, retry_after: Option<Duration>) -> RetryDecision {
        if failures >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let idx = (failures.saturating_sub(1) as usize).min(self.delays_ms.len().saturating_sub(1));
        let base = self.delays_ms.get(idx).copied().unwrap_or(0);
        let jittered = self.jittered(base);
        let honoured = retry_after
            .map(|d| d.min(Duration::from_millis(self.max_retry_after_ms)))
            .unwrap_or_default();
        RetryDecision::RetryAfter(jittered.max(honoured))
    }

    fn jittered(&self, base_ms: u64) -> Duration {
        if self.jitter <= 0.0 || base_ms == 0 {
            return Duration::from_millis(base_ms);
        }
        let factor = rand::rng().random_range((1.0 - self.jitter)..=(1.0 + self.jitter));
        Duration::from_millis((base_ms as f64 * factor).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            delays_ms: vec![100, 1000],
            max_attempts: 4,
            jitter: 0.0,
            max_retry_after_ms: 5000,
        }
    }

    #[test]
    fn walks_the_schedule_then_gives_up() {
        let p = policy();
        assert_eq!(
            p.decide(1, None),
            RetryDecision::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            p.decide(2, None),
            RetryDecision::RetryAfter(Duration::from_millis(1000))
        );
        assert_eq!(
            p.decide(3, None),
            RetryDecision::RetryAfter(Duration::from_millis(1000))
        );
        assert_eq!(p.decide(4, None), RetryDecision::GiveUp);
    }

    #[test]
    fn retry_after_is_bounded() {
        let p = policy();
        assert_eq!(
            p.decide(1, Some(Duration::from_secs(2))),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(1, Some(Duration::from_secs(60))),
            RetryDecision::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            p.decide(2, Some(Duration::from_millis(10))),
            RetryDecision::RetryAfter(Duration::from_millis(1000))
        );
    }

    #[test]
    fn jitter_stays_in_band() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..policy()
        };
        for _ in 0..100 {
            match p.decide(2, None) {
                RetryDecision::RetryAfter(d) => {
                    assert!((500..=1500).contains(&(d.as_millis() as u64)))
                }
                RetryDecision::GiveUp => panic!("gave up early"),
            }
        }
    }
}
