//! A clock tests can move: system time plus an offset.
//!
//! Token expiry (Advoware, Google) and timestamp staleness (Advoware's `RequestTimeStamp`) are
//! judged against this clock, so a test can jump an hour ahead instead of sleeping. Clones share
//! the offset, so moving the clock a fake was started with moves the fake's view of time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

/// System time shifted by a shared, settable offset (milliseconds).
#[derive(Clone, Debug, Default)]
pub struct FakeClock {
    offset_ms: Arc<AtomicI64>,
}

impl FakeClock {
    /// A clock showing real time (offset zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// The fake's "now".
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves the clock forward (or back, with a negative value) by `secs` seconds.
    pub fn advance_secs(&self, secs: i64) {
        self.offset_ms
            .fetch_add(secs.saturating_mul(1000), Ordering::SeqCst);
    }

    /// Moves the clock by a `std` duration.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the offset from system time, in seconds.
    pub fn set_offset_secs(&self, secs: i64) {
        self.offset_ms
            .store(secs.saturating_mul(1000), Ordering::SeqCst);
    }

    /// Current offset from system time, in seconds.
    pub fn offset_secs(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst) / 1000
    }

    /// Makes `now()` return (about) `at` from here on.
    pub fn set_now(&self, at: DateTime<Utc>) {
        let delta = at - Utc::now();
        self.offset_ms
            .store(delta.num_milliseconds(), Ordering::SeqCst);
    }

    /// Europe/Berlin wall-clock time of `now()` (Advoware stores local times without zone).
    pub fn now_berlin(&self) -> NaiveDateTime {
        berlin_local(self.now())
    }
}

/// Converts UTC to Europe/Berlin wall-clock time with the EU summer-time rule
/// (CEST from the last Sunday of March 01:00 UTC to the last Sunday of October 01:00 UTC).
/// Written out by hand to avoid a time-zone database dependency for one zone.
pub fn berlin_local(utc: DateTime<Utc>) -> NaiveDateTime {
    use chrono::{Datelike, NaiveDate, Weekday};
    let year = utc.year();
    let last_sunday = |month: u32| -> Option<NaiveDateTime> {
        let mut day = NaiveDate::from_ymd_opt(year, month, 31)?;
        while day.weekday() != Weekday::Sun {
            day = day.pred_opt()?;
        }
        day.and_hms_opt(1, 0, 0)
    };
    let naive = utc.naive_utc();
    let summer = match (last_sunday(3), last_sunday(10)) {
        (Some(start), Some(end)) => naive >= start && naive < end,
        _ => false,
    };
    naive + Duration::hours(if summer { 2 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn advancing_shifts_now() {
        let clock = FakeClock::new();
        let before = clock.now();
        clock.clone().advance_secs(3600);
        let moved = clock.now() - before;
        assert!(moved >= Duration::seconds(3599) && moved < Duration::seconds(3700));
    }

    #[test]
    fn berlin_offsets_follow_summer_time() {
        let winter = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).single();
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 8, 0, 0).single();
        let (Some(winter), Some(summer)) = (winter, summer) else {
            panic!("valid dates")
        };
        assert_eq!(berlin_local(winter).format("%H:%M").to_string(), "09:00");
        assert_eq!(berlin_local(summer).format("%H:%M").to_string(), "10:00");
        // 2026-03-29 is the last Sunday of March: 00:59 UTC is still winter, 01:00 UTC summer.
        let switch = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).single();
        let Some(switch) = switch else {
            panic!("valid date")
        };
        assert_eq!(berlin_local(switch).format("%H:%M").to_string(), "03:00");
    }
}
