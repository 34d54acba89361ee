//! Recurrence: Advoware `turnus`/`turnusArt` ↔ RFC 5545 `RRULE`, and the occurrence arithmetic
//! needed to turn an `UNTIL`/`COUNT` into Advoware's series end date.
//!
//! Advoware can express only "every n days/weeks/months/years from `datum` until `datumBis`".
//! Anything richer in a Google rule (several weekdays, "third Monday", exceptions) is rejected with
//! [`MappingError::UnsupportedRecurrence`] instead of being approximated, so the caller can log and
//! skip the event rather than write a wrong series into the firm's calendar.
//!
//! Occurrence dates follow RFC 5545: a monthly series started on the 31st skips months without a
//! 31st, a yearly one started on 29 February skips non-leap years (skipped dates do not count
//! towards `COUNT`). The start date is always the first occurrence.

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, Utc, Weekday};

use super::mapping::berlin_to_utc;
use super::MappingError;

/// Upper bound on the periods we step through when looking for a series end; a `COUNT` or
/// `UNTIL` further out than this is refused rather than looped over.
const MAX_PERIODS: u64 = 100_000;

/// How often a series repeats (Advoware `turnusArt`, RRULE `FREQ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frequency {
    /// `turnusArt` 1, `FREQ=DAILY`.
    Daily,
    /// `turnusArt` 2, `FREQ=WEEKLY`.
    Weekly,
    /// `turnusArt` 3, `FREQ=MONTHLY`.
    Monthly,
    /// `turnusArt` 4, `FREQ=YEARLY`.
    Yearly,
}

impl Frequency {
    /// The frequency of an Advoware `turnusArt` (1–4).
    pub fn from_turnus_art(value: i64) -> Result<Self, MappingError> {
        match value {
            1 => Ok(Self::Daily),
            2 => Ok(Self::Weekly),
            3 => Ok(Self::Monthly),
            4 => Ok(Self::Yearly),
            other => Err(MappingError::UnknownTurnusArt(other)),
        }
    }

    /// The Advoware `turnusArt` code.
    pub fn turnus_art(self) -> i64 {
        match self {
            Self::Daily => 1,
            Self::Weekly => 2,
            Self::Monthly => 3,
            Self::Yearly => 4,
        }
    }

    /// The RRULE `FREQ` value.
    pub fn rrule_name(self) -> &'static str {
        match self {
            Self::Daily => "DAILY",
            Self::Weekly => "WEEKLY",
            Self::Monthly => "MONTHLY",
            Self::Yearly => "YEARLY",
        }
    }

    fn from_rrule_name(name: &str) -> Result<Self, MappingError> {
        match name {
            "DAILY" => Ok(Self::Daily),
            "WEEKLY" => Ok(Self::Weekly),
            "MONTHLY" => Ok(Self::Monthly),
            "YEARLY" => Ok(Self::Yearly),
            other => Err(MappingError::UnsupportedRecurrence(format!("FREQ={other}"))),
        }
    }
}

/// An RRULE `UNTIL` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Date form `YYYYMMDD` (all-day series): occurrences on or before this date.
    Date(NaiveDate),
    /// Date-time form: occurrences starting at or before this instant. `YYYYMMDDTHHMMSSZ` is UTC;
    /// the floating form without `Z` is read as Europe/Berlin local time.
    Instant(DateTime<Utc>),
}

/// Where a series stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesEnd {
    /// No `UNTIL` and no `COUNT`: repeats forever.
    Open,
    /// `UNTIL=…`.
    Until(Until),
    /// `COUNT=n` occurrences (n ≥ 1).
    Count(u32),
}

/// The subset of an RRULE that Advoware can represent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RRule {
    /// `FREQ`.
    pub freq: Frequency,
    /// `INTERVAL` (≥ 1; 1 when absent).
    pub interval: u32,
    /// `UNTIL` / `COUNT`.
    pub end: SeriesEnd,
}

impl RRule {
    /// The rule as a Google `recurrence` line: `RRULE:FREQ=…[;INTERVAL=n][;UNTIL=…|;COUNT=n]`.
    /// `INTERVAL` is written only when > 1 (1 is the RFC default).
    pub fn to_line(&self) -> String {
        let mut line = format!("RRULE:FREQ={}", self.freq.rrule_name());
        if self.interval > 1 {
            line.push_str(&format!(";INTERVAL={}", self.interval));
        }
        match self.end {
            SeriesEnd::Open => {}
            SeriesEnd::Until(Until::Date(d)) => {
                line.push_str(&format!(";UNTIL={}", d.format("%Y%m%d")));
            }
            SeriesEnd::Until(Until::Instant(t)) => {
                line.push_str(&format!(";UNTIL={}", t.format("%Y%m%dT%H%M%SZ")));
            }
            SeriesEnd::Count(n) => line.push_str(&format!(";COUNT={n}")),
        }
        line
    }
}

/// Reads a Google `recurrence` list. Empty → `None`. Exactly one `RRULE` line is supported;
/// `EXDATE`, `RDATE`, `EXRULE` or a second `RRULE` are refused (Advoware has no exceptions).
/// `start` is the local date of the first occurrence; `BYDAY`/`BYMONTHDAY`/`BYMONTH` are accepted
/// only when they merely restate it (Google writes `BYDAY=MO` for "weekly on Monday").
pub fn parse_recurrence(lines: &[String], start: NaiveDate) -> Result<Option<RRule>, MappingError> {
    let mut rule = None;
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (name, body) = line.split_once(':').ok_or_else(|| {
            MappingError::InvalidRecurrence(format!("no property name in {line:?}"))
        })?;
        // A property name may carry parameters (`EXDATE;TZID=…`).
        let name = name.split(';').next().unwrap_or(name).to_ascii_uppercase();
        if name != "RRULE" {
            return Err(MappingError::UnsupportedRecurrence(format!("{name} lines")));
        }
        if rule.is_some() {
            return Err(MappingError::UnsupportedRecurrence(
                "more than one RRULE".into(),
            ));
        }
        rule = Some(parse_rrule(body, start)?);
    }
    Ok(rule)
}

/// Parses the value of one `RRULE` (without the `RRULE:` prefix).
pub fn parse_rrule(body: &str, start: NaiveDate) -> Result<RRule, MappingError> {
    let mut freq = None;
    let mut interval = None;
    let mut until = None;
    let mut count = None;
    let mut by_day = None;
    let mut by_month_day = None;
    let mut by_month = None;
    for part in body.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            MappingError::InvalidRecurrence(format!("part without '=': {part:?}"))
        })?;
        let key = key.trim().to_ascii_uppercase();
        let value = value.trim();
        let slot_taken = match key.as_str() {
            "FREQ" => freq
                .replace(Frequency::from_rrule_name(&value.to_ascii_uppercase())?)
                .is_some(),
            "INTERVAL" => interval.replace(parse_positive(&key, value)?).is_some(),
            "COUNT" => count.replace(parse_positive(&key, value)?).is_some(),
            "UNTIL" => until.replace(parse_until(value)?).is_some(),
            "BYDAY" => by_day.replace(value.to_ascii_uppercase()).is_some(),
            "BYMONTHDAY" => by_month_day.replace(value.to_owned()).is_some(),
            "BYMONTH" => by_month.replace(value.to_owned()).is_some(),
            // Week start only matters with several BYDAY values, which we refuse anyway.
            "WKST" => false,
            other => return Err(MappingError::UnsupportedRecurrence(other.to_owned())),
        };
        if slot_taken {
            return Err(MappingError::InvalidRecurrence(format!(
                "{key} given twice"
            )));
        }
    }
    let freq = freq.ok_or_else(|| MappingError::InvalidRecurrence("no FREQ".into()))?;
    let end = match (until, count) {
        (Some(_), Some(_)) => {
            return Err(MappingError::InvalidRecurrence(
                "both UNTIL and COUNT".into(),
            ));
        }
        (Some(u), None) => SeriesEnd::Until(u),
        (None, Some(n)) => SeriesEnd::Count(n),
        (None, None) => SeriesEnd::Open,
    };
    if let Some(days) = by_day {
        if freq != Frequency::Weekly || parse_weekday(&days) != Some(start.weekday()) {
            return Err(MappingError::UnsupportedRecurrence(format!("BYDAY={days}")));
        }
    }
    if let Some(day) = by_month_day {
        let restates = matches!(freq, Frequency::Monthly | Frequency::Yearly)
            && day.parse::<u32>().ok() == Some(start.day());
        if !restates {
            return Err(MappingError::UnsupportedRecurrence(format!(
                "BYMONTHDAY={day}"
            )));
        }
    }
    if let Some(month) = by_month {
        let restates =
            freq == Frequency::Yearly && month.parse::<u32>().ok() == Some(start.month());
        if !restates {
            return Err(MappingError::UnsupportedRecurrence(format!(
                "BYMONTH={month}"
            )));
        }
    }
    Ok(RRule {
        freq,
        interval: interval.unwrap_or(1),
        end,
    })
}

fn parse_positive(key: &str, value: &str) -> Result<u32, MappingError> {
    match value.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(MappingError::InvalidRecurrence(format!("{key}={value}"))),
    }
}

fn parse_until(value: &str) -> Result<Until, MappingError> {
    let invalid = || MappingError::InvalidRecurrence(format!("UNTIL={value}"));
    if let Some(utc) = value.strip_suffix('Z').or_else(|| value.strip_suffix('z')) {
        let naive = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").map_err(|_| invalid())?;
        return Ok(Until::Instant(naive.and_utc()));
    }
    if value.len() == 8 {
        return NaiveDate::parse_from_str(value, "%Y%m%d")
            .map(Until::Date)
            .map_err(|_| invalid());
    }
    let local = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S").map_err(|_| invalid())?;
    Ok(Until::Instant(berlin_to_utc(local)))
}

/// A single weekday code (`MO`…`SU`) without ordinal; anything else (lists, `3MO`) → `None`.
fn parse_weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

/// The date of period `k` (0-based) of a series, or `None` when that period has no occurrence
/// (day 31 in a 30-day month, 29 February in a common year) or lies beyond the calendar.
fn period_date(start: NaiveDate, freq: Frequency, interval: u32, k: u64) -> Option<NaiveDate> {
    let steps = k.checked_mul(u64::from(interval))?;
    match freq {
        Frequency::Daily => start.checked_add_days(Days::new(steps)),
        Frequency::Weekly => start.checked_add_days(Days::new(steps.checked_mul(7)?)),
        Frequency::Monthly => {
            let (year, month0) = shift_month(start, steps)?;
            NaiveDate::from_ymd_opt(year, month0 + 1, start.day())
        }
        Frequency::Yearly => {
            let year =
                i32::try_from(i64::from(start.year()).checked_add(i64::try_from(steps).ok()?)?)
                    .ok()?;
            NaiveDate::from_ymd_opt(year, start.month(), start.day())
        }
    }
}

/// First day of the month of period `k`; a lower bound for the period's occurrence, so the search
/// can stop even when the period itself has none.
fn period_floor(start: NaiveDate, freq: Frequency, interval: u32, k: u64) -> Option<NaiveDate> {
    let steps = k.checked_mul(u64::from(interval))?;
    match freq {
        Frequency::Daily | Frequency::Weekly => period_date(start, freq, interval, k),
        Frequency::Monthly => {
            let (year, month0) = shift_month(start, steps)?;
            NaiveDate::from_ymd_opt(year, month0 + 1, 1)
        }
        Frequency::Yearly => {
            let year =
                i32::try_from(i64::from(start.year()).checked_add(i64::try_from(steps).ok()?)?)
                    .ok()?;
            NaiveDate::from_ymd_opt(year, start.month(), 1)
        }
    }
}

fn shift_month(start: NaiveDate, months: u64) -> Option<(i32, u32)> {
    let total = i64::from(start.year())
        .checked_mul(12)?
        .checked_add(i64::from(start.month0()))?
        .checked_add(i64::try_from(months).ok()?)?;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month0 = u32::try_from(total.rem_euclid(12)).ok()?;
    Some((year, month0))
}

/// The last occurrence date for which `within` holds, assuming `within` is true up to some date
/// and false after it. The start date always counts as the first occurrence (RFC 5545), even when
/// `within` rejects it.
pub fn last_occurrence(
    start: NaiveDate,
    freq: Frequency,
    interval: u32,
    within: impl Fn(NaiveDate) -> bool,
) -> Result<NaiveDate, MappingError> {
    let mut last = start;
    for k in 1..=MAX_PERIODS {
        match period_floor(start, freq, interval, k) {
            Some(floor) if within(floor) => {}
            // Past the limit (or past the end of the calendar): done.
            _ => return Ok(last),
        }
        if let Some(date) = period_date(start, freq, interval, k) {
            if !within(date) {
                return Ok(last);
            }
            last = date;
        }
    }
    Err(MappingError::SeriesTooLong)
}

/// The date of the `count`-th occurrence (1-based; `count` 0 is treated as 1).
pub fn nth_occurrence(
    start: NaiveDate,
    freq: Frequency,
    interval: u32,
    count: u32,
) -> Result<NaiveDate, MappingError> {
    let mut seen = 1;
    let mut last = start;
    let mut k = 0;
    while seen < count {
        k += 1;
        if k > MAX_PERIODS {
            return Err(MappingError::SeriesTooLong);
        }
        if period_floor(start, freq, interval, k).is_none() {
            return Err(MappingError::SeriesTooLong);
        }
        if let Some(date) = period_date(start, freq, interval, k) {
            seen += 1;
            last = date;
        }
    }
    Ok(last)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn turnus_art_codes_round_trip() {
        for code in 1..=4 {
            assert_eq!(Frequency::from_turnus_art(code).unwrap().turnus_art(), code);
        }
        assert_eq!(
            Frequency::from_turnus_art(5),
            Err(MappingError::UnknownTurnusArt(5))
        );
        assert_eq!(
            Frequency::from_turnus_art(0),
            Err(MappingError::UnknownTurnusArt(0))
        );
    }

    #[test]
    fn parses_google_rules() {
        let monday = d(2026, 12, 7);
        let rule = parse_rrule("FREQ=WEEKLY;INTERVAL=1;UNTIL=20270329T063000Z", monday).unwrap();
        assert_eq!(rule.freq, Frequency::Weekly);
        assert_eq!(rule.interval, 1);
        assert_eq!(
            rule.end,
            SeriesEnd::Until(Until::Instant(
                d(2027, 3, 29).and_hms_opt(6, 30, 0).unwrap().and_utc()
            ))
        );
        // Google's "weekly on Monday" restates the start weekday.
        let rule = parse_rrule("FREQ=WEEKLY;BYDAY=MO;WKST=SU", monday).unwrap();
        assert_eq!(rule.end, SeriesEnd::Open);
        let rule = parse_rrule("FREQ=MONTHLY;BYMONTHDAY=7;COUNT=3", monday).unwrap();
        assert_eq!(
            (rule.freq, rule.end),
            (Frequency::Monthly, SeriesEnd::Count(3))
        );
        let rule = parse_rrule("FREQ=YEARLY;BYMONTH=12;UNTIL=20301207", monday).unwrap();
        assert_eq!(rule.end, SeriesEnd::Until(Until::Date(d(2030, 12, 7))));
        // Floating UNTIL is Berlin local: 08:30 CET = 07:30 UTC.
        let rule = parse_rrule("FREQ=DAILY;UNTIL=20261210T083000", monday).unwrap();
        assert_eq!(
            rule.end,
            SeriesEnd::Until(Until::Instant(
                d(2026, 12, 10).and_hms_opt(7, 30, 0).unwrap().and_utc()
            ))
        );
    }

    #[test]
    fn refuses_what_advoware_cannot_express() {
        let monday = d(2026, 12, 7);
        for body in [
            "FREQ=WEEKLY;BYDAY=MO,WE",
            "FREQ=WEEKLY;BYDAY=TU",
            "FREQ=MONTHLY;BYDAY=3MO",
            "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-1",
            "FREQ=MONTHLY;BYMONTHDAY=8",
            "FREQ=WEEKLY;BYMONTH=12",
            "FREQ=HOURLY",
            "FREQ=DAILY;BYHOUR=9",
        ] {
            assert!(
                matches!(
                    parse_rrule(body, monday),
                    Err(MappingError::UnsupportedRecurrence(_))
                ),
                "{body}"
            );
        }
        for body in [
            "INTERVAL=2",
            "FREQ=DAILY;INTERVAL=0",
            "FREQ=DAILY;COUNT=2;UNTIL=20270101",
            "FREQ=DAILY;FREQ=WEEKLY",
            "FREQ=DAILY;UNTIL=2027",
            "FREQ",
        ] {
            assert!(
                matches!(
                    parse_rrule(body, monday),
                    Err(MappingError::InvalidRecurrence(_))
                ),
                "{body}"
            );
        }
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            parse_recurrence(
                &lines(&[
                    "RRULE:FREQ=DAILY",
                    "EXDATE;TZID=Europe/Berlin:20261208T080000"
                ]),
                monday
            ),
            Err(MappingError::UnsupportedRecurrence(_))
        ));
        assert!(matches!(
            parse_recurrence(&lines(&["RRULE:FREQ=DAILY", "RRULE:FREQ=WEEKLY"]), monday),
            Err(MappingError::UnsupportedRecurrence(_))
        ));
        assert_eq!(parse_recurrence(&[], monday), Ok(None));
    }

    #[test]
    fn formats_lines() {
        let rule = RRule {
            freq: Frequency::Weekly,
            interval: 2,
            end: SeriesEnd::Until(Until::Instant(
                d(2027, 3, 29).and_hms_opt(6, 30, 0).unwrap().and_utc(),
            )),
        };
        assert_eq!(
            rule.to_line(),
            "RRULE:FREQ=WEEKLY;INTERVAL=2;UNTIL=20270329T063000Z"
        );
        let rule = RRule {
            freq: Frequency::Yearly,
            interval: 1,
            end: SeriesEnd::Until(Until::Date(d(2030, 1, 2))),
        };
        assert_eq!(rule.to_line(), "RRULE:FREQ=YEARLY;UNTIL=20300102");
        let rule = RRule {
            freq: Frequency::Daily,
            interval: 1,
            end: SeriesEnd::Count(4),
        };
        assert_eq!(rule.to_line(), "RRULE:FREQ=DAILY;COUNT=4");
    }

    #[test]
    fn occurrences_skip_missing_days() {
        // Monthly on the 31st: Jan, Mar, May (Feb and Apr have no 31st).
        assert_eq!(
            nth_occurrence(d(2027, 1, 31), Frequency::Monthly, 1, 3).unwrap(),
            d(2027, 5, 31)
        );
        // Yearly on 29 Feb: next is 2028.
        assert_eq!(
            nth_occurrence(d(2024, 2, 29), Frequency::Yearly, 1, 2).unwrap(),
            d(2028, 2, 29)
        );
        assert_eq!(
            nth_occurrence(d(2026, 12, 7), Frequency::Weekly, 2, 3).unwrap(),
            d(2027, 1, 4)
        );
        assert_eq!(
            nth_occurrence(d(2026, 12, 7), Frequency::Daily, 1, 1).unwrap(),
            d(2026, 12, 7)
        );
        assert_eq!(
            last_occurrence(d(2027, 1, 31), Frequency::Monthly, 1, |x| x
                <= d(2027, 4, 30))
            .unwrap(),
            d(2027, 3, 31)
        );
        assert_eq!(
            last_occurrence(d(2026, 12, 7), Frequency::Weekly, 2, |x| x
                <= d(2027, 1, 17))
            .unwrap(),
            d(2027, 1, 4)
        );
        // The start always counts, even when the limit lies before it.
        assert_eq!(
            last_occurrence(d(2026, 12, 7), Frequency::Daily, 1, |x| x <= d(2026, 1, 1)).unwrap(),
            d(2026, 12, 7)
        );
        assert_eq!(
            nth_occurrence(d(2026, 12, 7), Frequency::Daily, 1, u32::MAX),
            Err(MappingError::SeriesTooLong)
        );
    }
}
