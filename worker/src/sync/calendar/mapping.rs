//! Advoware Termin ↔ Google event, via one normalised [`Appointment`].
//!
//! Both directions go through [`Appointment`] so that the two mappings and the content hashes
//! agree on what an appointment *is*: a title/description/location, either whole local days or
//! a UTC interval (the first occurrence), and optionally a series with the local date of its last
//! occurrence.
//!
//! Advoware rules (FACTS §1): start = `datum` + `uhrzeitVon` (09:00 when no time); the end of a
//! single appointment is `datumBis` + `uhrzeitBis` (no 24 h cap); all-day appointments
//! (`dauertermin` 1) cover `datum`…`datumBis` inclusive and are stored with end 23:59; for a
//! series `datumBis` + `uhrzeitBis` ends the *series* and each occurrence ends on its own day at
//! `uhrzeitBis`. Google rules (FACTS §3): all-day `end.date` is exclusive; timed values are UTC
//! instants with an IANA `timeZone`.

use std::collections::BTreeMap;

use bitbylaw_core::ids::{FrNr, Kuerzel};
use chrono::offset::LocalResult;
use chrono::{
    DateTime, Days, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Europe::Berlin;
use serde::{Deserialize, Serialize};

use super::recurrence::{
    last_occurrence, nth_occurrence, parse_recurrence, Frequency, RRule, SeriesEnd, Until,
};
use super::MappingError;

/// The IANA zone of Advoware's wall-clock times, sent to Google as `timeZone`.
pub const TIME_ZONE: &str = "Europe/Berlin";

/// The `extendedProperties.private` key carrying the Advoware `frNr` (the name the Google fake and
/// the sample payloads use).
pub const FRNR_PROPERTY: &str = "advowareFrNr";

/// Largest `turnus`/`INTERVAL` we accept; larger values are data errors, not real series.
const MAX_INTERVAL: u32 = 1000;

/// An appointment as the Advoware API sends it (camelCase). Every field is optional so that a
/// sparse or slightly odd record still deserialises; [`Appointment::from_termin`] decides what is
/// really required. `None` fields are left out when serialising, so a body we build carries only
/// what we know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvowareTermin {
    /// Appointment number; absent for one not yet created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fr_nr: Option<FrNr>,
    /// The employee whose calendar it is.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_kuerzel"
    )]
    pub kuerzel: Option<Kuerzel>,
    /// Start date, `YYYY-MM-DDT00:00:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datum: Option<String>,
    /// Start time, `HH:MM:SS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uhrzeit_von: Option<String>,
    /// End date (of the appointment, or of the series when recurring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datum_bis: Option<String>,
    /// End time (of the appointment and of each occurrence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uhrzeit_bis: Option<String>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Note → Google description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notiz: Option<String>,
    /// Place → Google location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ort: Option<String>,
    /// All-day flag; the API sends 0/1 (booleans accepted too) and gets 0/1 back.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_bool",
        serialize_with = "lenient::opt_bool_as_int"
    )]
    pub dauertermin: Option<bool>,
    /// Repeat interval; 0 = not recurring. Also read as a 0/1 flag (1 = every period).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_int"
    )]
    pub turnus: Option<i64>,
    /// 1 daily, 2 weekly, 3 monthly, 4 yearly; 0 when not recurring.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_int"
    )]
    pub turnus_art: Option<i64>,
    /// Private flag (not synced).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_bool"
    )]
    pub privat: Option<bool>,
    /// Last change in Advoware (not synced; not part of the content hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zuletzt_geaendert_am: Option<String>,
}

/// How much of an appointment Google gets (`full_content` in the manual trigger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentMode {
    /// Title, description and location as in Advoware.
    Full,
    /// Only the time is visible: a neutral title, no description, no location.
    BusyOnly {
        /// The neutral title, e.g. `Termin (belegt)`.
        title: String,
    },
}

/// A Google start or end value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventTime {
    /// All-day (`date`); as an end value it is exclusive.
    Date(NaiveDate),
    /// Timed (`dateTime` as a UTC instant, `timeZone` IANA name).
    DateTime {
        /// The instant.
        utc: DateTime<Utc>,
        /// The IANA zone Google shows and expands recurrences in.
        tz: String,
    },
}

/// The synced part of a Google Calendar event, independent of `google-calendar3`'s types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    /// Title.
    pub summary: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Start.
    pub start: EventTime,
    /// End (exclusive for all-day events).
    pub end: EventTime,
    /// `RRULE:…` lines (and whatever else Google sends, which we refuse).
    pub recurrence: Vec<String>,
    /// `extendedProperties.private`; carries [`FRNR_PROPERTY`].
    pub private_properties: BTreeMap<String, String>,
}

/// When an appointment (or the first occurrence of a series) takes place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Whole local days, both inclusive.
    AllDay {
        /// First day.
        first: NaiveDate,
        /// Last day.
        last: NaiveDate,
    },
    /// An interval of instants (`end >= start`).
    Timed {
        /// Start.
        start: DateTime<Utc>,
        /// End.
        end: DateTime<Utc>,
    },
}

/// A repeating appointment's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    /// Daily, weekly, monthly, yearly.
    pub freq: Frequency,
    /// Every `interval` periods (≥ 1).
    pub interval: u32,
    /// Europe/Berlin date of the last occurrence; `None` = open-ended.
    pub last: Option<NaiveDate>,
}

/// The normalised appointment both sides map through and the content hash is computed over.
/// Empty and missing texts are the same; the series end is the last real occurrence, so
/// `datumBis` values between two occurrences compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appointment {
    /// `text` / `summary`.
    pub title: String,
    /// `notiz` / `description`.
    pub description: String,
    /// `ort` / `location`.
    pub location: String,
    /// The appointment or first occurrence.
    pub when: When,
    /// Repetition, if any.
    pub series: Option<Series>,
}

/// Maps an Advoware appointment to a Google event. Always sets [`FRNR_PROPERTY`] when the
/// appointment has a number.
pub fn termin_to_event(
    termin: &AdvowareTermin,
    mode: &ContentMode,
) -> Result<EventData, MappingError> {
    Appointment::from_termin(termin)?.to_event(mode, termin.fr_nr)
}

/// Maps a Google event to an Advoware appointment in `kuerzel`'s calendar. `frNr` is taken from
/// [`FRNR_PROPERTY`] when present. Recurrences Advoware cannot express fail with
/// [`MappingError::UnsupportedRecurrence`]; the event's own `timeZone` is ignored (Advoware is
/// Berlin time).
pub fn event_to_termin(
    event: &EventData,
    kuerzel: &Kuerzel,
) -> Result<AdvowareTermin, MappingError> {
    let fr_nr = match event.private_properties.get(FRNR_PROPERTY) {
        Some(raw) => Some(
            raw.trim()
                .parse::<FrNr>()
                .map_err(|_| MappingError::InvalidFrNr(raw.clone()))?,
        ),
        None => None,
    };
    Ok(Appointment::from_event(event)?.to_termin(Some(kuerzel.clone()), fr_nr))
}

/// Europe/Berlin wall-clock time → UTC, exactly across DST changes.
///
/// - A time in the spring gap (02:00–02:59 on the last Sunday of March) does not exist; it is
///   read with the offset in force before the gap, i.e. shifted forward by the gap (02:30 → 03:30
///   CEST), which is what a clock that skipped the hour shows.
/// - A time in the autumn overlap (02:00–02:59 on the last Sunday of October) happens twice; the
///   earlier instant (still CEST) wins, so an appointment never starts "late".
pub fn berlin_to_utc(local: NaiveDateTime) -> DateTime<Utc> {
    match Berlin.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // Six hours before the local time, read as UTC, is safely before the transition.
            let probe = local
                .checked_sub_signed(TimeDelta::hours(6))
                .unwrap_or(local);
            let offset = Berlin
                .offset_from_utc_datetime(&probe)
                .fix()
                .local_minus_utc();
            local
                .checked_sub_signed(TimeDelta::seconds(i64::from(offset)))
                .unwrap_or(local)
                .and_utc()
        }
    }
}

/// UTC → Europe/Berlin wall-clock time.
pub fn utc_to_berlin(t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&Berlin).naive_local()
}

/// `UNTIL` of a timed series whose last occurrence is on `last`: that day's end time, but never
/// before that day's start (a start in the spring gap is shifted forward and could overtake it).
fn series_until(last: NaiveDate, start_time: NaiveTime, end_time: NaiveTime) -> DateTime<Utc> {
    berlin_to_utc(last.and_time(end_time)).max(berlin_to_utc(last.and_time(start_time)))
}

fn default_start_time() -> NaiveTime {
    NaiveTime::from_hms_opt(9, 0, 0).unwrap_or(NaiveTime::MIN)
}

fn all_day_end_time() -> NaiveTime {
    NaiveTime::from_hms_opt(23, 59, 0).unwrap_or(NaiveTime::MIN)
}

fn next_day(d: NaiveDate) -> Result<NaiveDate, MappingError> {
    d.checked_add_days(Days::new(1))
        .ok_or(MappingError::DateOutOfRange(d))
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `YYYY-MM-DD`, optionally followed by `T…` or ` …` (Advoware sends `2026-12-01T00:00:00`).
fn parse_date(field: &'static str, v: &Option<String>) -> Result<Option<NaiveDate>, MappingError> {
    let Some(s) = non_empty(v) else {
        return Ok(None);
    };
    let invalid = || MappingError::InvalidDate {
        field,
        value: s.to_owned(),
    };
    let date = s.get(..10).ok_or_else(invalid)?;
    let rest = s.get(10..).unwrap_or("");
    if !(rest.is_empty() || rest.starts_with('T') || rest.starts_with(' ')) {
        return Err(invalid());
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| invalid())
}

/// `HH:MM[:SS[.fff]]`, also the time part of a full date-time.
fn parse_time(field: &'static str, v: &Option<String>) -> Result<Option<NaiveTime>, MappingError> {
    let Some(s) = non_empty(v) else {
        return Ok(None);
    };
    let time = s.rsplit_once('T').map_or(s, |(_, t)| t);
    NaiveTime::parse_from_str(time, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M"))
        .map(Some)
        .map_err(|_| MappingError::InvalidTime {
            field,
            value: s.to_owned(),
        })
}

fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%dT00:00:00").to_string()
}

fn format_time(t: NaiveTime) -> String {
    t.format("%H:%M:%S").to_string()
}

/// `turnus` 0/absent = single; ≥ 1 = interval (so a 0/1 flag reads as "every period").
fn series_spec(t: &AdvowareTermin) -> Result<Option<(Frequency, u32)>, MappingError> {
    let turnus = t.turnus.unwrap_or(0);
    if turnus == 0 {
        return Ok(None);
    }
    let interval = u32::try_from(turnus)
        .ok()
        .filter(|n| *n <= MAX_INTERVAL)
        .ok_or(MappingError::InvalidTurnus(turnus))?;
    let freq = Frequency::from_turnus_art(t.turnus_art.unwrap_or(0))?;
    Ok(Some((freq, interval)))
}

fn non_empty_owned(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Appointment {
    /// Reads an Advoware appointment. Requires `datum`; missing `uhrzeitVon` means 09:00, missing
    /// `uhrzeitBis` means "ends when it starts", an end before the start is clamped to the start.
    /// For all-day appointments the times are ignored.
    pub fn from_termin(t: &AdvowareTermin) -> Result<Self, MappingError> {
        let datum = parse_date("datum", &t.datum)?.ok_or(MappingError::MissingField("datum"))?;
        let datum_bis = parse_date("datumBis", &t.datum_bis)?;
        let von = parse_time("uhrzeitVon", &t.uhrzeit_von)?;
        let bis = parse_time("uhrzeitBis", &t.uhrzeit_bis)?;
        let spec = series_spec(t)?;
        let (when, series) = if t.dauertermin.unwrap_or(false) {
            match spec {
                None => {
                    let last = datum_bis.unwrap_or(datum).max(datum);
                    (When::AllDay { first: datum, last }, None)
                }
                Some((freq, interval)) => {
                    let last = datum_bis
                        .map(|b| last_occurrence(datum, freq, interval, |d| d <= b))
                        .transpose()?;
                    (
                        When::AllDay {
                            first: datum,
                            last: datum,
                        },
                        Some(Series {
                            freq,
                            interval,
                            last,
                        }),
                    )
                }
            }
        } else {
            let start_time = von.unwrap_or_else(default_start_time);
            let start_local = datum.and_time(start_time);
            let start = berlin_to_utc(start_local);
            match spec {
                None => {
                    let end_local = datum_bis
                        .unwrap_or(datum)
                        .and_time(bis.unwrap_or(start_time))
                        .max(start_local);
                    (
                        When::Timed {
                            start,
                            end: berlin_to_utc(end_local).max(start),
                        },
                        None,
                    )
                }
                Some((freq, interval)) => {
                    let end_time = bis.unwrap_or(start_time).max(start_time);
                    let last = datum_bis
                        .map(|b| {
                            let until = series_until(b, start_time, end_time);
                            last_occurrence(datum, freq, interval, |d| {
                                berlin_to_utc(d.and_time(start_time)) <= until
                            })
                        })
                        .transpose()?;
                    let end = berlin_to_utc(datum.and_time(end_time)).max(start);
                    (
                        When::Timed { start, end },
                        Some(Series {
                            freq,
                            interval,
                            last,
                        }),
                    )
                }
            }
        };
        Ok(Self {
            title: t.text.clone().unwrap_or_default(),
            description: t.notiz.clone().unwrap_or_default(),
            location: t.ort.clone().unwrap_or_default(),
            when,
            series,
        })
    }

    /// Reads a Google event. An end before the start is clamped to the start.
    pub fn from_event(e: &EventData) -> Result<Self, MappingError> {
        let when = match (&e.start, &e.end) {
            (EventTime::Date(s), EventTime::Date(end)) => {
                let last = end.pred_opt().unwrap_or(*end).max(*s);
                When::AllDay { first: *s, last }
            }
            (EventTime::DateTime { utc: s, .. }, EventTime::DateTime { utc: end, .. }) => {
                When::Timed {
                    start: *s,
                    end: (*end).max(*s),
                }
            }
            _ => return Err(MappingError::MixedEventTimes),
        };
        let (first, start_time) = match when {
            When::AllDay { first, .. } => (first, NaiveTime::MIN),
            When::Timed { start, .. } => {
                let local = utc_to_berlin(start);
                (local.date(), local.time())
            }
        };
        let series = match parse_recurrence(&e.recurrence, first)? {
            None => None,
            Some(rule) => Some(series_from_rule(rule, when, first, start_time)?),
        };
        Ok(Self {
            title: e.summary.clone().unwrap_or_default(),
            description: e.description.clone().unwrap_or_default(),
            location: e.location.clone().unwrap_or_default(),
            when,
            series,
        })
    }

    /// Builds the Google event. Recurring series get `UNTIL` = last occurrence date + the
    /// occurrence's end time (timed, in UTC) or the last date (all-day, date form).
    pub fn to_event(
        &self,
        mode: &ContentMode,
        fr_nr: Option<FrNr>,
    ) -> Result<EventData, MappingError> {
        let (start, end, until) = match self.when {
            When::AllDay { first, last } => (
                EventTime::Date(first),
                EventTime::Date(next_day(last)?),
                self.series.and_then(|s| s.last).map(Until::Date),
            ),
            When::Timed { start, end } => {
                let (start_time, end_time) =
                    (utc_to_berlin(start).time(), utc_to_berlin(end).time());
                let until = self
                    .series
                    .and_then(|s| s.last)
                    .map(|d| Until::Instant(series_until(d, start_time, end_time)));
                let tz = TIME_ZONE.to_owned();
                (
                    EventTime::DateTime {
                        utc: start,
                        tz: tz.clone(),
                    },
                    EventTime::DateTime { utc: end, tz },
                    until,
                )
            }
        };
        let recurrence = self
            .series
            .map(|s| {
                let end = until.map_or(SeriesEnd::Open, SeriesEnd::Until);
                RRule {
                    freq: s.freq,
                    interval: s.interval,
                    end,
                }
                .to_line()
            })
            .into_iter()
            .collect();
        let (summary, description, location) = match mode {
            ContentMode::Full => (
                non_empty_owned(&self.title),
                non_empty_owned(&self.description),
                non_empty_owned(&self.location),
            ),
            ContentMode::BusyOnly { title } => (Some(title.clone()), None, None),
        };
        let private_properties = fr_nr
            .map(|n| (FRNR_PROPERTY.to_owned(), n.to_string()))
            .into_iter()
            .collect();
        Ok(EventData {
            summary,
            description,
            location,
            start,
            end,
            recurrence,
            private_properties,
        })
    }

    /// Builds the Advoware appointment: all-day as `00:00`–`23:59`, times in Berlin local time,
    /// `turnus`/`turnusArt` 0 for a single appointment; `privat` and `zuletztGeaendertAm` unset.
    pub fn to_termin(&self, kuerzel: Option<Kuerzel>, fr_nr: Option<FrNr>) -> AdvowareTermin {
        let (all_day, datum, von, single_end, bis) = match self.when {
            When::AllDay { first, last } => (true, first, NaiveTime::MIN, last, all_day_end_time()),
            When::Timed { start, end } => {
                let (s, e) = (utc_to_berlin(start), utc_to_berlin(end));
                (false, s.date(), s.time(), e.date(), e.time())
            }
        };
        let datum_bis = match self.series {
            Some(s) => s.last,
            None => Some(single_end),
        };
        AdvowareTermin {
            fr_nr,
            kuerzel,
            datum: Some(format_date(datum)),
            uhrzeit_von: Some(format_time(von)),
            datum_bis: datum_bis.map(format_date),
            uhrzeit_bis: Some(format_time(bis)),
            text: Some(self.title.clone()),
            notiz: Some(self.description.clone()),
            ort: Some(self.location.clone()),
            dauertermin: Some(all_day),
            turnus: Some(self.series.map_or(0, |s| i64::from(s.interval))),
            turnus_art: Some(self.series.map_or(0, |s| s.freq.turnus_art())),
            privat: None,
            zuletzt_geaendert_am: None,
        }
    }
}

/// The Advoware series for a Google rule; each occurrence must fit in one local day, since
/// Advoware ends every occurrence on its own date.
fn series_from_rule(
    rule: RRule,
    when: When,
    first: NaiveDate,
    start_time: NaiveTime,
) -> Result<Series, MappingError> {
    match when {
        When::AllDay { first, last } if first != last => {
            return Err(MappingError::UnsupportedRecurrence(
                "multi-day all-day occurrences".into(),
            ));
        }
        When::Timed { end, .. } if utc_to_berlin(end).date() != first => {
            return Err(MappingError::UnsupportedRecurrence(
                "occurrences spanning midnight".into(),
            ));
        }
        _ => {}
    }
    if rule.interval > MAX_INTERVAL {
        return Err(MappingError::UnsupportedRecurrence(format!(
            "INTERVAL={}",
            rule.interval
        )));
    }
    let (freq, interval) = (rule.freq, rule.interval);
    let last = match rule.end {
        SeriesEnd::Open => None,
        SeriesEnd::Count(n) => Some(nth_occurrence(first, freq, interval, n)?),
        SeriesEnd::Until(Until::Date(u)) => {
            Some(last_occurrence(first, freq, interval, |d| d <= u)?)
        }
        SeriesEnd::Until(Until::Instant(u)) => Some(last_occurrence(first, freq, interval, |d| {
            berlin_to_utc(d.and_time(start_time)) <= u
        })?),
    };
    Ok(Series {
        freq,
        interval,
        last,
    })
}

/// Tolerant readers for the Advoware fields whose JSON type varies (0/1 vs booleans, numbers as
/// strings, empty strings for "none").
mod lenient {
    use bitbylaw_core::ids::Kuerzel;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    fn int_of<E: serde::de::Error>(v: &Value) -> Result<Option<i64>, E> {
        match v {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(i64::from(*b))),
            Value::Number(n) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                })
                .map(Some)
                .ok_or_else(|| E::custom(format!("not an integer: {n}"))),
            Value::String(s) if s.trim().is_empty() => Ok(None),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("not an integer: {s:?}"))),
            other => Err(E::custom(format!("not an integer: {other}"))),
        }
    }

    pub(super) fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        int_of(&Value::deserialize(d)?)
    }

    pub(super) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Some(b)),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
            other => Ok(int_of::<D::Error>(&other)?.map(|n| n != 0)),
        }
    }

    pub(super) fn opt_bool_as_int<S: Serializer>(
        v: &Option<bool>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_i64(i64::from(*b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn opt_kuerzel<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Kuerzel>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) if !s.trim().is_empty() => {
                Kuerzel::new(s.trim()).map(Some).map_err(D::Error::custom)
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn utc(y: i32, m: u32, day: u32, h: u32, min: u32) -> DateTime<Utc> {
        d(y, m, day).and_hms_opt(h, min, 0).unwrap().and_utc()
    }

    fn timed(t: DateTime<Utc>) -> EventTime {
        EventTime::DateTime {
            utc: t,
            tz: TIME_ZONE.into(),
        }
    }

    fn sb() -> Kuerzel {
        Kuerzel::new("SB").unwrap()
    }

    fn termin(v: Value) -> AdvowareTermin {
        serde_json::from_value(v).unwrap()
    }

    fn base(datum: &str, von: &str, datum_bis: &str, bis: &str) -> AdvowareTermin {
        termin(json!({
            "frNr": 1, "kuerzel": "SB", "datum": datum, "uhrzeitVon": von, "datumBis": datum_bis,
            "uhrzeitBis": bis, "text": "T", "notiz": "N", "ort": "O", "dauertermin": 0,
            "turnus": 0, "turnusArt": 0, "privat": false
        }))
    }

    fn full(t: &AdvowareTermin) -> EventData {
        termin_to_event(t, &ContentMode::Full).unwrap()
    }

    /// Reads one event of the Google sample file (test helper; the real conversion from
    /// `google-calendar3` comes with the client).
    fn google_event(v: &Value) -> EventData {
        let time = |t: &Value| match t.get("date").and_then(Value::as_str) {
            Some(date) => EventTime::Date(NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap()),
            None => EventTime::DateTime {
                utc: DateTime::parse_from_rfc3339(t["dateTime"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc),
                tz: t["timeZone"].as_str().unwrap_or("UTC").to_owned(),
            },
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        EventData {
            summary: text("summary"),
            description: text("description"),
            location: text("location"),
            start: time(&v["start"]),
            end: time(&v["end"]),
            recurrence: v
                .get("recurrence")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            private_properties: v["extendedProperties"]["private"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// `/work/shared/examples/advoware-termine.json`, copied so the test needs nothing outside the repo.
    const TERMINE: &str = r#"[
  {
    "frNr": 48213,
    "kuerzel": "SB",
    "datum": "2026-12-01T00:00:00",
    "uhrzeitVon": "09:30:00",
    "datumBis": "2026-12-01T00:00:00",
    "uhrzeitBis": "10:15:00",
    "text": "Mandantengespräch Müller ./. Schmidt",
    "notiz": "Unterlagen Mietvertrag mitbringen",
    "ort": "Besprechungsraum 2",
    "dauertermin": 0,
    "turnus": 0,
    "turnusArt": 0,
    "privat": false,
    "zuletztGeaendertAm": "2026-11-20T16:02:11"
  },
  {
    "frNr": 48214,
    "kuerzel": "SB",
    "datum": "2026-12-24T00:00:00",
    "uhrzeitVon": "00:00:00",
    "datumBis": "2026-12-26T00:00:00",
    "uhrzeitBis": "23:59:00",
    "text": "Urlaub",
    "notiz": "",
    "ort": "",
    "dauertermin": 1,
    "turnus": 0,
    "turnusArt": 0,
    "privat": true,
    "zuletztGeaendertAm": "2026-11-02T08:15:00"
  },
  {
    "frNr": 48215,
    "kuerzel": "SB",
    "datum": "2026-12-07T00:00:00",
    "uhrzeitVon": "08:00:00",
    "datumBis": "2027-03-29T00:00:00",
    "uhrzeitBis": "08:30:00",
    "text": "Wochenbesprechung Team Mietrecht",
    "notiz": "",
    "ort": "Kanzlei",
    "dauertermin": 0,
    "turnus": 1,
    "turnusArt": 2,
    "privat": false,
    "zuletztGeaendertAm": "2026-10-30T11:40:00"
  }
]"#;

    /// `/work/shared/examples/google-events.json`, copied likewise.
    const EVENTS: &str = r#"{
  "timed": {
    "summary": "Mandantengespräch Müller ./. Schmidt",
    "location": "Besprechungsraum 2",
    "description": "Unterlagen Mietvertrag mitbringen",
    "start": {"dateTime": "2026-12-01T09:30:00+01:00", "timeZone": "Europe/Berlin"},
    "end": {"dateTime": "2026-12-01T10:15:00+01:00", "timeZone": "Europe/Berlin"},
    "extendedProperties": {"private": {"advowareFrNr": "48213"}}
  },
  "all_day_multi_day": {
    "summary": "Urlaub",
    "start": {"date": "2026-12-24"},
    "end": {"date": "2026-12-27"},
    "extendedProperties": {"private": {"advowareFrNr": "48214"}}
  },
  "recurring_weekly": {
    "summary": "Wochenbesprechung Team Mietrecht",
    "start": {"dateTime": "2026-12-07T08:00:00+01:00", "timeZone": "Europe/Berlin"},
    "end": {"dateTime": "2026-12-07T08:30:00+01:00", "timeZone": "Europe/Berlin"},
    "recurrence": ["RRULE:FREQ=WEEKLY;INTERVAL=1;UNTIL=20270329T063000Z"],
    "extendedProperties": {"private": {"advowareFrNr": "48215"}}
  },
  "busy_only": {
    "summary": "Termin (belegt)",
    "start": {"dateTime": "2026-12-01T09:30:00+01:00", "timeZone": "Europe/Berlin"},
    "end": {"dateTime": "2026-12-01T10:15:00+01:00", "timeZone": "Europe/Berlin"},
    "transparency": "opaque",
    "visibility": "private",
    "extendedProperties": {"private": {"advowareFrNr": "48213"}}
  }
}"#;

    #[test]
    fn simple_timed_in_winter_and_summer() {
        let e = full(&base(
            "2026-12-01T00:00:00",
            "09:30:00",
            "2026-12-01T00:00:00",
            "10:15:00",
        ));
        assert_eq!(e.start, timed(utc(2026, 12, 1, 8, 30)));
        assert_eq!(e.end, timed(utc(2026, 12, 1, 9, 15)));
        assert_eq!(
            (
                e.summary.as_deref(),
                e.description.as_deref(),
                e.location.as_deref()
            ),
            (Some("T"), Some("N"), Some("O"))
        );
        assert!(e.recurrence.is_empty());
        assert_eq!(
            e.private_properties.get(FRNR_PROPERTY).map(String::as_str),
            Some("1")
        );
        let e = full(&base(
            "2026-07-01T00:00:00",
            "10:00:00",
            "2026-07-01T00:00:00",
            "11:00:00",
        ));
        assert_eq!(e.start, timed(utc(2026, 7, 1, 8, 0)));
    }

    #[test]
    fn all_day_single_and_multi_day() {
        let mut t = base(
            "2026-12-24T00:00:00",
            "00:00:00",
            "2026-12-24T00:00:00",
            "23:59:00",
        );
        t.dauertermin = Some(true);
        let e = full(&t);
        assert_eq!(
            (e.start.clone(), e.end.clone()),
            (
                EventTime::Date(d(2026, 12, 24)),
                EventTime::Date(d(2026, 12, 25))
            )
        );
        t.datum_bis = Some("2026-12-26T00:00:00".into());
        let e = full(&t);
        assert_eq!(
            (e.start.clone(), e.end.clone()),
            (
                EventTime::Date(d(2026, 12, 24)),
                EventTime::Date(d(2026, 12, 27))
            )
        );
        let back = event_to_termin(&e, &sb()).unwrap();
        assert_eq!(back.datum_bis.as_deref(), Some("2026-12-26T00:00:00"));
        assert_eq!(back.uhrzeit_bis.as_deref(), Some("23:59:00"));
        assert_eq!(back.dauertermin, Some(true));
    }

    #[test]
    fn timed_multi_day_has_no_cap() {
        let e = full(&base(
            "2026-12-01T00:00:00",
            "14:00:00",
            "2026-12-04T00:00:00",
            "12:00:00",
        ));
        assert_eq!(
            (e.start.clone(), e.end.clone()),
            (
                timed(utc(2026, 12, 1, 13, 0)),
                timed(utc(2026, 12, 4, 11, 0))
            )
        );
        let back = event_to_termin(&e, &sb()).unwrap();
        assert_eq!(back.datum_bis.as_deref(), Some("2026-12-04T00:00:00"));
        assert_eq!(back.uhrzeit_bis.as_deref(), Some("12:00:00"));
    }

    #[test]
    fn weekly_interval_two_with_until_across_dst() {
        let mut t = base(
            "2026-12-07T00:00:00",
            "08:00:00",
            "2027-04-12T00:00:00",
            "08:30:00",
        );
        (t.turnus, t.turnus_art) = (Some(2), Some(2));
        let e = full(&t);
        // Occurrence ends on its own day; UNTIL is 12 April 08:30 CEST = 06:30 UTC.
        assert_eq!(e.end, timed(utc(2026, 12, 7, 7, 30)));
        assert_eq!(
            e.recurrence,
            vec!["RRULE:FREQ=WEEKLY;INTERVAL=2;UNTIL=20270412T063000Z".to_owned()]
        );
        let back = event_to_termin(&e, &sb()).unwrap();
        assert_eq!((back.turnus, back.turnus_art), (Some(2), Some(2)));
        assert_eq!(back.datum_bis.as_deref(), Some("2027-04-12T00:00:00"));
        assert_eq!(back.uhrzeit_bis.as_deref(), Some("08:30:00"));
        // A datumBis between two occurrences ends the series at the occurrence before it.
        t.datum_bis = Some("2027-04-25T00:00:00".into());
        assert_eq!(
            full(&t).recurrence[0],
            "RRULE:FREQ=WEEKLY;INTERVAL=2;UNTIL=20270412T063000Z"
        );
    }

    #[test]
    fn monthly_and_yearly() {
        let mut t = base(
            "2027-01-31T00:00:00",
            "10:00:00",
            "2027-06-15T00:00:00",
            "11:00:00",
        );
        (t.turnus, t.turnus_art) = (Some(1), Some(3));
        let e = full(&t);
        assert_eq!(
            e.recurrence,
            vec!["RRULE:FREQ=MONTHLY;UNTIL=20270531T090000Z".to_owned()]
        );
        let back = event_to_termin(&e, &sb()).unwrap();
        assert_eq!(
            (back.turnus, back.turnus_art, back.datum_bis.as_deref()),
            (Some(1), Some(3), Some("2027-05-31T00:00:00"))
        );

        let mut t = base(
            "2026-05-04T00:00:00",
            "00:00:00",
            "2030-05-04T00:00:00",
            "23:59:00",
        );
        (t.turnus, t.turnus_art, t.dauertermin) = (Some(1), Some(4), Some(true));
        let e = full(&t);
        assert_eq!(
            (e.start.clone(), e.end.clone()),
            (
                EventTime::Date(d(2026, 5, 4)),
                EventTime::Date(d(2026, 5, 5))
            )
        );
        assert_eq!(
            e.recurrence,
            vec!["RRULE:FREQ=YEARLY;UNTIL=20300504".to_owned()]
        );
        assert_eq!(
            event_to_termin(&e, &sb()).unwrap().datum_bis.as_deref(),
            Some("2030-05-04T00:00:00")
        );
    }

    #[test]
    fn count_becomes_series_end_and_open_series_has_none() {
        let e = EventData {
            summary: Some("Jour fixe".into()),
            description: None,
            location: None,
            start: timed(utc(2026, 12, 7, 7, 0)),
            end: timed(utc(2026, 12, 7, 8, 0)),
            recurrence: vec!["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4".into()],
            private_properties: BTreeMap::new(),
        };
        let t = event_to_termin(&e, &sb()).unwrap();
        assert_eq!(t.datum_bis.as_deref(), Some("2026-12-28T00:00:00"));
        assert_eq!(
            (t.fr_nr, t.kuerzel.as_ref().map(Kuerzel::as_str)),
            (None, Some("SB"))
        );
        assert_eq!(
            (t.text.as_deref(), t.notiz.as_deref()),
            (Some("Jour fixe"), Some(""))
        );
        let open = EventData {
            recurrence: vec!["RRULE:FREQ=DAILY".into()],
            ..e.clone()
        };
        let t = event_to_termin(&open, &sb()).unwrap();
        assert_eq!(
            (t.datum_bis.clone(), t.turnus, t.turnus_art),
            (None, Some(1), Some(1))
        );
        assert_eq!(full(&t).recurrence, vec!["RRULE:FREQ=DAILY".to_owned()]);
        // Google's UNTIL at midnight UTC does not include that day's 08:00 occurrence.
        let until = EventData {
            recurrence: vec!["RRULE:FREQ=DAILY;UNTIL=20261210T000000Z".into()],
            ..e.clone()
        };
        assert_eq!(
            event_to_termin(&until, &sb()).unwrap().datum_bis.as_deref(),
            Some("2026-12-09T00:00:00")
        );
    }

    #[test]
    fn unsupported_google_recurrences_are_typed_errors() {
        let e = EventData {
            summary: None,
            description: None,
            location: None,
            start: timed(utc(2026, 12, 7, 7, 0)),
            end: timed(utc(2026, 12, 7, 8, 0)),
            recurrence: vec!["RRULE:FREQ=WEEKLY;BYDAY=MO,WE".into()],
            private_properties: BTreeMap::new(),
        };
        assert!(matches!(
            event_to_termin(&e, &sb()),
            Err(MappingError::UnsupportedRecurrence(_))
        ));
        let overnight = EventData {
            end: timed(utc(2026, 12, 8, 1, 0)),
            recurrence: vec!["RRULE:FREQ=DAILY".into()],
            ..e.clone()
        };
        assert!(matches!(
            event_to_termin(&overnight, &sb()),
            Err(MappingError::UnsupportedRecurrence(_))
        ));
        let multi_day = EventData {
            start: EventTime::Date(d(2026, 12, 7)),
            end: EventTime::Date(d(2026, 12, 9)),
            recurrence: vec!["RRULE:FREQ=WEEKLY".into()],
            ..e.clone()
        };
        assert!(matches!(
            event_to_termin(&multi_day, &sb()),
            Err(MappingError::UnsupportedRecurrence(_))
        ));
        let mixed = EventData {
            end: EventTime::Date(d(2026, 12, 8)),
            recurrence: vec![],
            ..e.clone()
        };
        assert_eq!(
            event_to_termin(&mixed, &sb()),
            Err(MappingError::MixedEventTimes)
        );
        let mut bad_nr = EventData {
            recurrence: vec![],
            ..e
        };
        bad_nr
            .private_properties
            .insert(FRNR_PROPERTY.into(), "x1".into());
        assert_eq!(
            event_to_termin(&bad_nr, &sb()),
            Err(MappingError::InvalidFrNr("x1".into()))
        );
    }

    #[test]
    fn dst_spring_forward_shifts_by_the_gap() {
        // 29 March 2026: 02:00 CET → 03:00 CEST. 02:30 does not exist → 03:30 CEST = 01:30 UTC.
        let e = full(&base(
            "2026-03-29T00:00:00",
            "02:30:00",
            "2026-03-29T00:00:00",
            "04:00:00",
        ));
        assert_eq!(
            (e.start.clone(), e.end.clone()),
            (
                timed(utc(2026, 3, 29, 1, 30)),
                timed(utc(2026, 3, 29, 2, 0))
            )
        );
        assert_eq!(
            event_to_termin(&e, &sb()).unwrap().uhrzeit_von.as_deref(),
            Some("03:30:00")
        );
        // Just before and after the gap.
        let e = full(&base(
            "2026-03-29T00:00:00",
            "01:55:00",
            "2026-03-29T00:00:00",
            "03:00:00",
        ));
        assert_eq!(
            (e.start.clone(), e.end.clone()),
            (
                timed(utc(2026, 3, 29, 0, 55)),
                timed(utc(2026, 3, 29, 1, 0))
            )
        );
    }

    #[test]
    fn dst_fall_back_takes_the_earlier_instant() {
        // 25 October 2026: 03:00 CEST → 02:00 CET. 02:30 happens twice; the CEST one (00:30 UTC) wins.
        let e = full(&base(
            "2026-10-25T00:00:00",
            "02:30:00",
            "2026-10-25T00:00:00",
            "03:30:00",
        ));
        assert_eq!(
            (e.start.clone(), e.end.clone()),
            (
                timed(utc(2026, 10, 25, 0, 30)),
                timed(utc(2026, 10, 25, 2, 30))
            )
        );
        let back = event_to_termin(&e, &sb()).unwrap();
        assert_eq!(
            (back.uhrzeit_von.as_deref(), back.uhrzeit_bis.as_deref()),
            (Some("02:30:00"), Some("03:30:00"))
        );
    }

    #[test]
    fn busy_only_hides_content() {
        let mode = ContentMode::BusyOnly {
            title: "Termin (belegt)".into(),
        };
        let e = termin_to_event(
            &base(
                "2026-12-01T00:00:00",
                "09:30:00",
                "2026-12-01T00:00:00",
                "10:15:00",
            ),
            &mode,
        )
        .unwrap();
        assert_eq!(
            (
                e.summary.as_deref(),
                e.description.as_deref(),
                e.location.as_deref()
            ),
            (Some("Termin (belegt)"), None, None)
        );
        assert_eq!(
            e.private_properties.get(FRNR_PROPERTY).map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn missing_times_and_fields() {
        let t = termin(json!({"datum": "2026-12-01T00:00:00", "text": "Frist"}));
        let e = full(&t);
        assert_eq!(
            (e.start.clone(), e.end),
            (timed(utc(2026, 12, 1, 8, 0)), timed(utc(2026, 12, 1, 8, 0)))
        );
        assert!(e.private_properties.is_empty());
        let t = termin(
            json!({"datum": "2026-12-01", "uhrzeitBis": "10:00", "datumBis": null, "kuerzel": ""}),
        );
        assert_eq!(full(&t).end, timed(utc(2026, 12, 1, 9, 0)));
        assert_eq!(
            termin_to_event(&termin(json!({"text": "x"})), &ContentMode::Full),
            Err(MappingError::MissingField("datum"))
        );
        assert!(matches!(
            termin_to_event(&termin(json!({"datum": "01.12.2026"})), &ContentMode::Full),
            Err(MappingError::InvalidDate { field: "datum", .. })
        ));
        assert!(matches!(
            termin_to_event(
                &termin(json!({"datum": "2026-12-01", "uhrzeitVon": "9 Uhr"})),
                &ContentMode::Full
            ),
            Err(MappingError::InvalidTime {
                field: "uhrzeitVon",
                ..
            })
        ));
        assert_eq!(
            termin_to_event(
                &termin(json!({"datum": "2026-12-01", "turnus": 1, "turnusArt": 7})),
                &ContentMode::Full
            ),
            Err(MappingError::UnknownTurnusArt(7))
        );
        assert_eq!(
            termin_to_event(
                &termin(json!({"datum": "2026-12-01", "turnus": -1, "turnusArt": 1})),
                &ContentMode::Full
            ),
            Err(MappingError::InvalidTurnus(-1))
        );
        // turnus 0 with a stray turnusArt is a single appointment.
        assert!(full(&termin(
            json!({"datum": "2026-12-01", "turnus": 0, "turnusArt": 9})
        ))
        .recurrence
        .is_empty());
    }

    #[test]
    fn tolerant_field_types() {
        let t = termin(
            json!({"frNr": "12", "datum": "2026-12-01T00:00:00", "dauertermin": true,
                              "turnus": "1", "turnusArt": 2.0, "privat": 1, "unknownField": [1]}),
        );
        assert_eq!(t.fr_nr, Some(FrNr(12)));
        assert_eq!(
            (t.dauertermin, t.turnus, t.turnus_art, t.privat),
            (Some(true), Some(1), Some(2), Some(true))
        );
        // dauertermin goes back to the API as 0/1.
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["dauertermin"], json!(1));
        assert!(v.get("uhrzeitVon").is_none());
    }

    #[test]
    fn sample_payloads() {
        let termine: Vec<AdvowareTermin> = serde_json::from_str(TERMINE).unwrap();
        let events: Value = serde_json::from_str(EVENTS).unwrap();
        let pairs = [
            (0, "timed"),
            (1, "all_day_multi_day"),
            (2, "recurring_weekly"),
        ];
        for (i, name) in pairs {
            let ours = full(&termine[i]);
            let sample = google_event(&events[name]);
            assert_eq!(
                (&ours.start, &ours.end),
                (&sample.start, &sample.end),
                "{name}"
            );
            assert_eq!(ours.summary, sample.summary, "{name}");
            assert_eq!(ours.private_properties, sample.private_properties, "{name}");
            // Same times and series (the sample's weekly event omits the location).
            let (a, b) = (
                Appointment::from_event(&ours).unwrap(),
                Appointment::from_event(&sample).unwrap(),
            );
            assert_eq!(
                (a.when, a.series, a.title),
                (b.when, b.series, b.title),
                "{name}"
            );
            // Google → Advoware gives back the synced fields.
            let back = event_to_termin(&sample, &sb()).unwrap();
            let t = &termine[i];
            assert_eq!(
                (
                    &back.fr_nr,
                    &back.datum,
                    &back.datum_bis,
                    &back.uhrzeit_bis,
                    &back.text,
                    &back.dauertermin,
                    &back.turnus
                ),
                (
                    &t.fr_nr,
                    &t.datum,
                    &t.datum_bis,
                    &t.uhrzeit_bis,
                    &t.text,
                    &t.dauertermin,
                    &t.turnus
                ),
                "{name}"
            );
        }
        // The sample writes INTERVAL=1, we leave it out; UNTIL is the same instant.
        assert_eq!(
            full(&termine[2]).recurrence,
            vec!["RRULE:FREQ=WEEKLY;UNTIL=20270329T063000Z".to_owned()]
        );
        let busy = google_event(&events["busy_only"]);
        let ours = termin_to_event(
            &termine[0],
            &ContentMode::BusyOnly {
                title: "Termin (belegt)".into(),
            },
        )
        .unwrap();
        assert_eq!(ours, busy);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
pub(super) mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn date_strategy() -> impl Strategy<Value = NaiveDate> {
        (0u64..(16 * 366)).prop_map(|n| {
            d2020()
                .checked_add_days(Days::new(n))
                .unwrap_or_else(d2020)
                .min(d_end())
        })
    }

    fn d2020() -> NaiveDate {
        NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default()
    }

    fn d_end() -> NaiveDate {
        NaiveDate::from_ymd_opt(2035, 12, 31).unwrap_or_default()
    }

    /// Times on 5-minute steps; `min` and `max` in 5-minute units.
    fn time_of(units: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(units / 12, (units % 12) * 5, 0).unwrap_or(NaiveTime::MIN)
    }

    /// A local time that exists in Berlin (not in the spring gap), so the raw fields survive.
    fn exists(date: NaiveDate, time: NaiveTime) -> bool {
        !matches!(
            Berlin.from_local_datetime(&date.and_time(time)),
            LocalResult::None
        )
    }

    prop_compose! {
        /// Random valid Termine: 2020–2035, times on 5-minute steps, all-day or timed, with an
        /// optional series whose datumBis is a real occurrence (or open-ended).
        pub(crate) fn valid_termin()(
            fr_nr in 1u64..10_000_000,
            datum in date_strategy(),
            all_day in any::<bool>(),
            von in 0u32..288,
            len in 0u32..288,
            days in 0u64..5,
            series in proptest::option::of((1i64..=4, 1i64..=4, proptest::option::of(0u32..30))),
            text in ".{0,20}",
            notiz in ".{0,40}",
            ort in ".{0,20}",
        ) -> AdvowareTermin {
            let von_t = time_of(von);
            let (datum_bis, bis_t) = match series {
                Some((art, interval, count)) => {
                    let freq = Frequency::from_turnus_art(art).unwrap_or(Frequency::Daily);
                    let last = count.map(|c| {
                        nth_occurrence(datum, freq, u32::try_from(interval).unwrap_or(1), c + 1).unwrap_or(datum)
                    });
                    (last, time_of((von + len).min(287)))
                }
                None => {
                    let bis_date = datum.checked_add_days(Days::new(days)).unwrap_or(datum);
                    let bis = if days == 0 { time_of((von + len).min(287)) } else { time_of(len) };
                    (Some(bis_date), bis)
                }
            };
            let (von_s, bis_s) = if all_day { (NaiveTime::MIN, all_day_end_time()) } else { (von_t, bis_t) };
            AdvowareTermin {
                fr_nr: Some(FrNr(fr_nr)),
                kuerzel: Kuerzel::new("SB").ok(),
                datum: Some(format_date(datum)),
                uhrzeit_von: Some(format_time(von_s)),
                datum_bis: datum_bis.map(format_date),
                uhrzeit_bis: Some(format_time(bis_s)),
                text: Some(text),
                notiz: Some(notiz),
                ort: Some(ort),
                dauertermin: Some(all_day),
                turnus: Some(series.map_or(0, |s| s.1)),
                turnus_art: Some(series.map_or(0, |s| s.0)),
                privat: None,
                zuletzt_geaendert_am: None,
            }
        }
    }

    /// Whether all local times of `t` exist (the generator may land in the spring gap).
    pub(crate) fn times_exist(t: &AdvowareTermin) -> bool {
        let date = |s: &Option<String>| parse_date("d", s).ok().flatten();
        let time = |s: &Option<String>| parse_time("t", s).ok().flatten();
        let (Some(datum), Some(von), Some(bis)) =
            (date(&t.datum), time(&t.uhrzeit_von), time(&t.uhrzeit_bis))
        else {
            return false;
        };
        let end_date = if t.turnus.unwrap_or(0) > 0 {
            datum
        } else {
            date(&t.datum_bis).unwrap_or(datum)
        };
        exists(datum, von) && exists(end_date, bis)
    }

    proptest! {
        #[test]
        fn advoware_google_advoware_round_trip(t in valid_termin()) {
            prop_assume!(times_exist(&t));
            let event = termin_to_event(&t, &ContentMode::Full).unwrap();
            let back = event_to_termin(&event, &sb()).unwrap();
            prop_assert_eq!(&back, &t);
            // And Google → Advoware → Google is stable too.
            prop_assert_eq!(termin_to_event(&back, &ContentMode::Full).unwrap(), event);
        }

        #[test]
        fn normalised_round_trip_even_in_the_gap(t in valid_termin()) {
            let app = Appointment::from_termin(&t).unwrap();
            let event = termin_to_event(&t, &ContentMode::Full).unwrap();
            let back = event_to_termin(&event, &sb()).unwrap();
            prop_assert_eq!(Appointment::from_termin(&back).unwrap(), app.clone());
            prop_assert_eq!(Appointment::from_event(&event).unwrap(), app);
        }
    }

    fn sb() -> Kuerzel {
        Kuerzel::new("SB").unwrap()
    }
}
