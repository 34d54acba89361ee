//! Civil-date arithmetic (proleptic Gregorian calendar, UTC) without chrono.
//!
//! The conversions follow the well-known "days from civil" algorithm
//! (eras of 400 years), valid for every date this project can meet.
//! Used for the Advoware `RequestTimeStamp` and for parsing the token
//! response's `expiration_utc`.

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The ranges above make these conversions lossless.
    (year, month as u32, day as u32)
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days in `month` (1–12) of `year`; 0 for an invalid month.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Formats Unix time in nanoseconds as `YYYY-MM-DDTHH:MM:SS.fffffffZ`
/// (seven fractional digits, i.e. 100 ns ticks, truncated).
pub fn format_unix_nanos_7(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let ticks = (unix_nanos % 1_000_000_000) / 100;
    let (date, time) = split_secs(secs);
    format!("{date}T{time}.{ticks:07}Z")
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_unix_secs(unix_secs: u64) -> String {
    let (date, time) = split_secs(unix_secs);
    format!("{date}T{time}Z")
}

fn split_secs(secs: u64) -> (String, String) {
    // u64 seconds / 86400 always fits into i64.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60),
    )
}

/// Parses an RFC 3339 / ISO 8601 timestamp into Unix seconds (fraction
/// truncated towards negative infinity).
///
/// Accepted: `YYYY-MM-DD[T|t| ]HH:MM:SS[.f+][Z|z|±HH:MM|±HHMM]`. A missing
/// zone is taken as UTC (the Advoware field is called `expiration_utc`).
/// A leap second `:60` is read as `:59`. Returns `None` for anything else.
pub fn parse_iso8601_utc(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 19 {
        return None;
    }
    let year = digits(b, 0, 4)? as i64;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [_, _, b':', _, _] => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                [_, _, _, _] => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let o = i64::from(h * 3600 + m * 60);
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let local =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second.min(59));
    Some(local - offset_secs)
}

fn digits(b: &[u8], start: usize, len: usize) -> Option<u32> {
    let slice = b.get(start..start + len)?;
    let mut v = 0u32;
    for &c in slice {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2021-01-29 (vendor example date)
        assert_eq!(days_from_civil(2021, 1, 29), 18_656);
    }

    #[test]
    fn roundtrip_many_days() {
        for d in (-800_000..800_000).step_by(37) {
            let (y, m, day) = civil_from_days(d);
            assert!((1..=12).contains(&m));
            assert!(day >= 1 && day <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_unix_secs(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_secs(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_unix_nanos_7(1_611_929_066_795_554_700),
            "2021-01-29T14:04:26.7955547Z"
        );
        assert_eq!(format_unix_nanos_7(0), "1970-01-01T00:00:00.0000000Z");
        // truncation, not rounding
        assert_eq!(format_unix_nanos_7(99), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(
            format_unix_nanos_7(u64::MAX),
            "2554-07-21T23:34:33.7095516Z"
        );
    }

    #[test]
    fn parses_iso() {
        assert_eq!(parse_iso8601_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601_utc("2026-11-23T15:04:26.123Z"),
            Some(days_from_civil(2026, 11, 23) * 86_400 + 15 * 3600 + 4 * 60 + 26)
        );
        assert_eq!(
            parse_iso8601_utc("2021-01-29T14:04:26.7955547Z"),
            Some(1_611_929_066)
        );
        assert_eq!(
            parse_iso8601_utc("2021-01-29 14:04:26"),
            Some(1_611_929_066)
        );
        assert_eq!(
            parse_iso8601_utc("2021-01-29T15:04:26+01:00"),
            Some(1_611_929_066)
        );
        assert_eq!(
            parse_iso8601_utc("2021-01-29T13:04:26-0100"),
            Some(1_611_929_066)
        );
        assert_eq!(
            parse_iso8601_utc("2016-12-31T23:59:60Z"),
            parse_iso8601_utc("2016-12-31T23:59:59Z")
        );
        for bad in [
            "",
            "2021-01-29",
            "2021-02-30T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-01-29T24:00:00Z",
            "2021-01-29T14:04:26.Z",
            "2021-01-29T14:04:26Zjunk",
            "2021-01-29T14:04:26+1",
            "2021/01/29T14:04:26Z",
            "２021-01-29T14:04:26Z",
        ] {
            assert_eq!(parse_iso8601_utc(bad), None, "{bad}");
        }
    }
}
