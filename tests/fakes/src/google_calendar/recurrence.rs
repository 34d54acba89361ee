//! Expansion of recurring events into instances for `singleEvents=true`.
//!
//! Supports what the calendar sync produces and users commonly create: `RRULE` with `FREQ`
//! DAILY/WEEKLY/MONTHLY/YEARLY, `INTERVAL`, `COUNT`, `UNTIL`, plain `BYDAY` lists for WEEKLY, and
//! `EXDATE` lines. Wall-clock times stay fixed across daylight-saving changes for `Europe/Berlin`
//! (other zones keep the start's UTC offset). Anything else is refused loudly
//! ([`Unsupported`]) instead of being expanded wrongly.

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday,
};
use serde_json::{json, Value};

use crate::clock::berlin_local;

/// A recurrence the fake cannot expand faithfully.
#[derive(Debug)]
pub struct Unsupported(pub String);

/// Most instances produced for one series (open-ended series are cut here).
const MAX_INSTANCES: usize = 1000;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Freq {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

#[derive(Debug)]
struct Rule {
    freq: Freq,
    interval: u32,
    count: Option<usize>,
    until: Option<Until>,
    by_day: Vec<Weekday>,
}

#[derive(Debug, Clone, Copy)]
enum Until {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

fn weekday(code: &str) -> Option<Weekday> {
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

fn parse_rule(line: &str) -> Result<Rule, Unsupported> {
    let body = line
        .strip_prefix("RRULE:")
        .ok_or_else(|| Unsupported(line.to_owned()))?;
    let mut rule = Rule {
        freq: Freq::Daily,
        interval: 1,
        count: None,
        until: None,
        by_day: Vec::new(),
    };
    let mut freq = None;
    for part in body.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| Unsupported(part.to_owned()))?;
        let unsupported = || Unsupported(format!("{key}={value}"));
        match key {
            "FREQ" => {
                freq = Some(match value {
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    "MONTHLY" => Freq::Monthly,
                    "YEARLY" => Freq::Yearly,
                    _ => return Err(unsupported()),
                })
            }
            "INTERVAL" => {
                rule.interval = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(unsupported)?
            }
            "COUNT" => rule.count = Some(value.parse().map_err(|_| unsupported())?),
            "UNTIL" => rule.until = Some(parse_until(value).ok_or_else(unsupported)?),
            "BYDAY" => {
                rule.by_day = value
                    .split(',')
                    .map(weekday)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(unsupported)?;
            }
            "WKST" if value == "MO" => {}
            _ => return Err(unsupported()),
        }
    }
    rule.freq = freq.ok_or_else(|| Unsupported("RRULE without FREQ".into()))?;
    if !rule.by_day.is_empty() && rule.freq != Freq::Weekly {
        return Err(Unsupported("BYDAY outside FREQ=WEEKLY".into()));
    }
    Ok(rule)
}

fn parse_until(value: &str) -> Option<Until> {
    if let Some(stamp) = value.strip_suffix('Z') {
        let t = NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S").ok()?;
        return Some(Until::Instant(t.and_utc()));
    }
    if value.len() == 8 {
        return NaiveDate::parse_from_str(value, "%Y%m%d")
            .ok()
            .map(Until::Date);
    }
    // Floating local time: treat as Berlin wall clock.
    let t = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S").ok()?;
    Some(Until::Instant(berlin_to_utc(t)))
}

/// Excluded starts from `EXDATE[;TZID=…|;VALUE=DATE]:v1,v2` lines: local wall-clock values.
fn parse_exdates(lines: &[&str]) -> Result<Vec<NaiveDateTime>, Unsupported> {
    let mut out = Vec::new();
    for line in lines {
        let (_, values) = line
            .split_once(':')
            .ok_or_else(|| Unsupported((*line).to_owned()))?;
        for v in values.split(',') {
            let v = v.trim();
            let parsed = if let Some(utc) = v.strip_suffix('Z') {
                NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
                    .ok()
                    .map(|t| berlin_local(t.and_utc()))
            } else if v.len() == 8 {
                NaiveDate::parse_from_str(v, "%Y%m%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            } else {
                NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").ok()
            };
            out.push(parsed.ok_or_else(|| Unsupported(format!("EXDATE value {v}")))?);
        }
    }
    Ok(out)
}

/// Europe/Berlin wall clock to UTC (the earlier instant for ambiguous, a best guess for skipped times).
pub fn berlin_to_utc(local: NaiveDateTime) -> DateTime<Utc> {
    for hours in [1, 2] {
        let utc = (local - Duration::hours(hours)).and_utc();
        if berlin_local(utc) == local {
            return utc;
        }
    }
    (local - Duration::hours(1)).and_utc()
}

/// Local wall-clock candidates of a rule, in order, starting at `first`.
fn candidates(rule: &Rule, first: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> {
    let interval = i64::from(rule.interval);
    let time: NaiveTime = first.time();
    let start_date = first.date();
    let by_day = rule.by_day.clone();
    let freq = rule.freq;
    let monday =
        start_date - Duration::days(i64::from(start_date.weekday().num_days_from_monday()));
    (0i64..)
        .take(MAX_INSTANCES * 8)
        .flat_map(move |k| -> Vec<NaiveDateTime> {
            let dates: Vec<NaiveDate> = match freq {
                Freq::Daily => vec![start_date + Duration::days(k * interval)],
                Freq::Weekly if by_day.is_empty() => {
                    vec![start_date + Duration::weeks(k * interval)]
                }
                Freq::Weekly => {
                    let week = monday + Duration::weeks(k * interval);
                    let mut days: Vec<NaiveDate> = by_day
                        .iter()
                        .map(|d| week + Duration::days(i64::from(d.num_days_from_monday())))
                        .filter(|d| *d >= start_date)
                        .collect();
                    days.sort();
                    days
                }
                Freq::Monthly => {
                    let months = start_date.month0() as i64 + k * interval;
                    let year = start_date.year() + (months / 12) as i32;
                    NaiveDate::from_ymd_opt(year, (months % 12) as u32 + 1, start_date.day())
                        .into_iter()
                        .collect()
                }
                Freq::Yearly => {
                    let year = start_date.year() + (k * interval) as i32;
                    NaiveDate::from_ymd_opt(year, start_date.month(), start_date.day())
                        .into_iter()
                        .collect()
                }
            };
            dates.into_iter().map(|d| d.and_time(time)).collect()
        })
}

fn format_instant(utc: DateTime<Utc>, berlin: bool, offset: FixedOffset) -> String {
    if berlin {
        let local = berlin_local(utc);
        let secs = (local - utc.naive_utc()).num_seconds() as i32;
        match FixedOffset::east_opt(secs) {
            Some(off) => utc
                .with_timezone(&off)
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            None => utc.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    } else {
        utc.with_timezone(&offset)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }
}

/// Instances of a recurring `master` whose start is before `time_max` (if given). Non-recurring
/// events come back unchanged as the only element.
pub fn expand(master: &Value, time_max: Option<DateTime<Utc>>) -> Result<Vec<Value>, Unsupported> {
    let lines: Vec<&str> = master
        .get("recurrence")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if lines.is_empty() {
        return Ok(vec![master.clone()]);
    }
    let rrules: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("RRULE:"))
        .collect();
    let exdate_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("EXDATE"))
        .collect();
    if rrules.len() != 1 || rrules.len() + exdate_lines.len() != lines.len() {
        return Err(Unsupported(format!("recurrence {lines:?}")));
    }
    let rule = parse_rule(rrules[0])?;
    let exdates = parse_exdates(&exdate_lines)?;
    let master_id = master.get("id").and_then(Value::as_str).unwrap_or_default();
    let start = master.get("start").cloned().unwrap_or(Value::Null);
    let end = master.get("end").cloned().unwrap_or(Value::Null);

    let mut out = Vec::new();
    let mut produced = 0usize;
    if let Some(date) = start.get("date").and_then(Value::as_str) {
        // All-day series.
        let first = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| Unsupported(date.to_owned()))?;
        let last = end
            .get("date")
            .and_then(Value::as_str)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        let days = last.map(|l| (l - first).num_days()).unwrap_or(1);
        for local in candidates(&rule, first.and_time(NaiveTime::MIN)) {
            let day = local.date();
            if rule.count.is_some_and(|c| produced >= c) || out.len() >= MAX_INSTANCES {
                break;
            }
            match rule.until {
                Some(Until::Date(u)) if day > u => break,
                Some(Until::Instant(u)) if day.and_time(NaiveTime::MIN).and_utc() > u => break,
                _ => {}
            }
            if time_max.is_some_and(|max| berlin_to_utc(local) >= max) {
                break;
            }
            produced += 1;
            if exdates.contains(&local) {
                continue;
            }
            let mut instance = instance_of(master, master_id, &format!("{}", day.format("%Y%m%d")));
            instance["start"] = json!({"date": day.format("%Y-%m-%d").to_string()});
            instance["end"] =
                json!({"date": (day + Duration::days(days)).format("%Y-%m-%d").to_string()});
            instance["originalStartTime"] = instance["start"].clone();
            out.push(instance);
        }
        return Ok(out);
    }
    let raw = start
        .get("dateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| Unsupported("start without time".into()))?;
    let first = DateTime::parse_from_rfc3339(raw).map_err(|_| Unsupported(raw.to_owned()))?;
    let end_at = end
        .get("dateTime")
        .and_then(Value::as_str)
        .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
        .ok_or_else(|| Unsupported("end without time".into()))?;
    let duration = end_at - first;
    let zone = start
        .get("timeZone")
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    let berlin = zone == "Europe/Berlin";
    let first_local = if berlin {
        berlin_local(first.with_timezone(&Utc))
    } else {
        first.naive_local()
    };
    for local in candidates(&rule, first_local) {
        if rule.count.is_some_and(|c| produced >= c) || out.len() >= MAX_INSTANCES {
            break;
        }
        let utc = if berlin {
            berlin_to_utc(local)
        } else {
            (local - Duration::seconds(i64::from(first.offset().local_minus_utc()))).and_utc()
        };
        match rule.until {
            Some(Until::Instant(u)) if utc > u => break,
            Some(Until::Date(u)) if local.date() > u => break,
            _ => {}
        }
        if time_max.is_some_and(|max| utc >= max) {
            break;
        }
        produced += 1;
        if exdates.contains(&local) {
            continue;
        }
        let mut instance =
            instance_of(master, master_id, &utc.format("%Y%m%dT%H%M%SZ").to_string());
        instance["start"] =
            json!({"dateTime": format_instant(utc, berlin, *first.offset()), "timeZone": zone});
        instance["end"] = json!({"dateTime": format_instant(utc + duration, berlin, *first.offset()), "timeZone": zone});
        instance["originalStartTime"] = instance["start"].clone();
        out.push(instance);
    }
    Ok(out)
}

fn instance_of(master: &Value, master_id: &str, suffix: &str) -> Value {
    let mut instance = master.clone();
    if let Some(map) = instance.as_object_mut() {
        map.remove("recurrence");
        map.insert("id".into(), json!(format!("{master_id}_{suffix}")));
        map.insert("recurringEventId".into(), json!(master_id));
    }
    instance
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(instances: &[Value]) -> Vec<String> {
        instances
            .iter()
            .map(|i| {
                i["start"]["dateTime"]
                    .as_str()
                    .or(i["start"]["date"].as_str())
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn weekly_series_keeps_wall_clock_across_dst() -> Result<(), Unsupported> {
        let master = json!({
            "id": "abc12",
            "start": {"dateTime": "2027-03-22T08:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2027-03-22T08:30:00+01:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;INTERVAL=1;UNTIL=20270329T063000Z"],
        });
        let list = expand(&master, None)?;
        assert_eq!(
            starts(&list),
            vec!["2027-03-22T08:00:00+01:00", "2027-03-29T08:00:00+02:00"]
        );
        assert_eq!(list[1]["id"], "abc12_20270329T060000Z");
        assert_eq!(list[1]["recurringEventId"], "abc12");
        Ok(())
    }

    #[test]
    fn count_byday_and_exdate() -> Result<(), Unsupported> {
        let master = json!({
            "id": "abc12",
            "start": {"dateTime": "2026-12-01T09:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=4", "EXDATE;TZID=Europe/Berlin:20261203T090000"],
        });
        let list = expand(&master, None)?;
        assert_eq!(
            starts(&list),
            vec![
                "2026-12-01T09:00:00+01:00",
                "2026-12-08T09:00:00+01:00",
                "2026-12-10T09:00:00+01:00"
            ]
        );
        Ok(())
    }

    #[test]
    fn all_day_monthly_skips_missing_days_and_stops_at_time_max() -> Result<(), Unsupported> {
        let master = json!({
            "id": "abc12",
            "start": {"date": "2027-01-31"},
            "end": {"date": "2027-02-01"},
            "recurrence": ["RRULE:FREQ=MONTHLY"],
        });
        let max = NaiveDate::from_ymd_opt(2027, 6, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc());
        let list = expand(&master, max)?;
        assert_eq!(
            starts(&list),
            vec!["2027-01-31", "2027-03-31", "2027-05-31"]
        );
        Ok(())
    }

    #[test]
    fn unsupported_rules_are_refused() {
        let master = json!({
            "id": "abc12",
            "start": {"date": "2027-01-31"},
            "end": {"date": "2027-02-01"},
            "recurrence": ["RRULE:FREQ=MONTHLY;BYSETPOS=-1;BYDAY=FR"],
        });
        assert!(expand(&master, None).is_err());
    }
}
