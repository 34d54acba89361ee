//! 3CX call journaling, the pure part: a `ReportCall` body (FACTS §4: the variables the CRM
//! template posts at call end) → a validated [`CallReport`], its idempotency key, and the EspoCRM
//! `Call` and follow-up `Task` bodies.
//!
//! 3CX sends no call id, so the key is a hash of what identifies one call: its UTC start and end,
//! the number and the agent. A redelivered report hashes to the same key; two calls never share a
//! start second, number and agent. Errors name the field, never its value (personal data).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::contact::{normalize_phone, Region};
use crate::clients::espocrm::espo_datetime;

/// `[CallType]` of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Inbound,
    Outbound,
    /// An inbound call nobody took.
    Missed,
    /// A call the other side did not take (3CX: mostly outbound; inbound with `CallDirection`).
    NotAnswered,
}

impl CallType {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            "missed" => Some(Self::Missed),
            "notanswered" | "not answered" | "not_answered" => Some(Self::NotAnswered),
            _ => None,
        }
    }
}

/// EspoCRM's `Call.direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "Inbound",
            Self::Outbound => "Outbound",
        }
    }
}

/// One validated `ReportCall`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    pub call_type: CallType,
    pub direction: Direction,
    /// The number as 3CX sent it (key material; may be an extension or empty for anonymous).
    pub number_raw: String,
    /// The number in E.164, when it is a dialable one.
    pub number: Option<String>,
    pub name: Option<String>,
    /// What our lookup answered as `EntityId` (3CX hands it back).
    pub entity_id: Option<String>,
    pub agent: Option<String>,
    pub agent_email: Option<String>,
    pub start: DateTime<Utc>,
    pub established: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    pub duration_secs: u64,
    pub recording_url: Option<String>,
    pub transcription: Option<String>,
    pub summary: Option<String>,
}

/// A `ReportCall` body that cannot be journaled. Names the field, not its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ReportCall body: {field} {problem}")]
pub struct ReportError {
    pub field: &'static str,
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> ReportError {
    ReportError {
        field,
        problem: problem.into(),
    }
}

/// A string variable; 3CX sends unset variables as `""`, which counts as absent.
fn text(body: &Map<String, Value>, field: &'static str) -> Result<Option<String>, ReportError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(err(field, "is not a string")),
    }
}

/// RFC 3339 (`2026-11-23T13:02:00Z`) or `YYYY-MM-DD HH:MM:SS` read as UTC.
fn utc(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, ReportError> {
    let Some(s) = text(body, field)? else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&s, f) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(err(field, "is not a UTC date-time (RFC 3339)"))
}

/// `hh:mm:ss` (3CX) or plain seconds.
fn duration(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 {
        return None;
    }
    let mut total = 0u64;
    for p in parts {
        total = total.checked_mul(60)?.checked_add(p.parse::<u64>().ok()?)?;
    }
    Some(total)
}

/// Validates a `ReportCall` body.
pub fn parse(body: &Value, region: Region) -> Result<CallReport, ReportError> {
    let obj = body
        .as_object()
        .ok_or_else(|| err("body", "is not a JSON object"))?;
    let call_type = text(obj, "CallType")?
        .ok_or_else(|| err("CallType", "is missing"))
        .and_then(|s| {
            CallType::parse(&s).ok_or_else(|| {
                err(
                    "CallType",
                    "is not Inbound, Outbound, Missed or Notanswered",
                )
            })
        })?;
    let direction = match text(obj, "CallDirection")?.map(|s| s.to_ascii_lowercase()) {
        Some(d) if d == "inbound" => Direction::Inbound,
        Some(d) if d == "outbound" => Direction::Outbound,
        Some(_) => return Err(err("CallDirection", "is not Inbound or Outbound")),
        None => match call_type {
            CallType::Inbound | CallType::Missed => Direction::Inbound,
            CallType::Outbound | CallType::NotAnswered => Direction::Outbound,
        },
    };
    let number_raw = match obj.get("Number") {
        None => return Err(err("Number", "is missing")),
        Some(_) => text(obj, "Number")?.unwrap_or_default(),
    };
    let number = normalize_phone(&number_raw, region).ok();
    let start =
        utc(obj, "CallStartTimeUTC")?.ok_or_else(|| err("CallStartTimeUTC", "is missing"))?;
    let end = utc(obj, "CallEndTimeUTC")?.ok_or_else(|| err("CallEndTimeUTC", "is missing"))?;
    if end < start {
        return Err(err("CallEndTimeUTC", "is before CallStartTimeUTC"));
    }
    let established = utc(obj, "CallEstablishedTimeUTC")?;
    let duration_secs = match text(obj, "Duration")? {
        Some(d) => duration(&d).ok_or_else(|| err("Duration", "is not hh:mm:ss"))?,
        None => established.map_or(0, |e| (end - e).num_seconds().max(0).unsigned_abs()),
    };
    Ok(CallReport {
        call_type,
        direction,
        number_raw,
        number,
        name: text(obj, "Name")?,
        entity_id: text(obj, "EntityId")?,
        agent: text(obj, "Agent")?,
        agent_email: text(obj, "AgentEmail")?.map(|e| e.to_lowercase()),
        start,
        established,
        end,
        duration_secs,
        recording_url: text(obj, "RecordingUrl")?,
        transcription: text(obj, "Transcription")?,
        summary: text(obj, "Summary")?,
    })
}

impl CallReport {
    /// The idempotency key: hex SHA-256 (first 32 digits) of start, end, number and agent.
    pub fn key(&self) -> String {
        let digits: String = self
            .number
            .clone()
            .unwrap_or_else(|| self.number_raw.clone())
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let material = format!(
            "3cx-call-v1|{}|{}|{}|{}",
            self.start.timestamp(),
            self.end.timestamp(),
            digits,
            self.agent.as_deref().unwrap_or_default()
        );
        let hash = Sha256::digest(material.as_bytes());
        hex::encode(&hash[..16])
    }

    /// Talked: `Held`; missed / not answered: `Not Held`.
    pub fn held(&self) -> bool {
        matches!(self.call_type, CallType::Inbound | CallType::Outbound)
            && (self.established.is_some() || self.duration_secs > 0)
    }

    /// An inbound call nobody took: the agent gets a call-back task.
    pub fn needs_task(&self) -> bool {
        self.direction == Direction::Inbound && !self.held()
    }

    fn who(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.number.clone())
            .unwrap_or_else(|| {
                if self.number_raw.is_empty() {
                    "unbekannt".into()
                } else {
                    self.number_raw.clone()
                }
            })
    }

    /// The Call's title, as a person reads it in the CRM.
    pub fn title(&self) -> String {
        let what = match (self.direction, self.held()) {
            (Direction::Inbound, true) => "Anruf von",
            (Direction::Inbound, false) => "Verpasster Anruf von",
            (Direction::Outbound, true) => "Anruf an",
            (Direction::Outbound, false) => "Nicht angenommener Anruf an",
        };
        format!("{what} {}", self.who())
    }
}

/// The marker every record written for a call carries in its description (found again after a
/// crash between the create and the record step).
pub fn marker(key: &str) -> String {
    format!("[3cx:{key}]")
}

/// Where a Call belongs and who gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// `(entity type, id)` of the matched Contact / Lead / CBeteiligte.
    pub parent: Option<(String, String)>,
    pub user_id: Option<String>,
}

fn description(r: &CallReport, key: &str) -> String {
    let mut d = Vec::new();
    if let Some(n) = &r.number {
        d.push(format!("Nummer: {n}"));
    } else if !r.number_raw.is_empty() {
        d.push(format!("Nummer: {}", r.number_raw));
    }
    if let Some(a) = &r.agent {
        d.push(format!("Nebenstelle: {a}"));
    }
    if r.duration_secs > 0 {
        let s = r.duration_secs;
        d.push(format!(
            "Gesprächsdauer: {:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        ));
    }
    if let Some(u) = &r.recording_url {
        d.push(format!("Aufzeichnung: {u}"));
    }
    if let Some(s) = &r.summary {
        d.push(format!("\nZusammenfassung:\n{s}"));
    }
    if let Some(t) = &r.transcription {
        d.push(format!("\nTranskript:\n{t}"));
    }
    d.push(marker(key));
    d.join("\n")
}

/// The EspoCRM `Call` of a report.
pub fn call_body(r: &CallReport, key: &str, links: &Links) -> Value {
    let mut body = json!({
        "name": r.title(),
        "status": if r.held() { "Held" } else { "Not Held" },
        "direction": r.direction.as_str(),
        "dateStart": espo_datetime(r.start),
        "dateEnd": espo_datetime(r.end),
        // EspoCRM keeps duration = dateEnd − dateStart; the talk time goes into the text.
        "duration": (r.end - r.start).num_seconds().max(0),
        "description": description(r, key),
    });
    if let Some((t, id)) = &links.parent {
        body["parentType"] = json!(t);
        body["parentId"] = json!(id);
        match t.as_str() {
            "Contact" => body["contactsIds"] = json!([id]),
            "Lead" => body["leadsIds"] = json!([id]),
            _ => {}
        }
    }
    if let Some(u) = &links.user_id {
        body["assignedUserId"] = json!(u);
    }
    body
}

/// The call-back `Task` for a missed inbound call, due `due`.
pub fn task_body(r: &CallReport, key: &str, links: &Links, due: DateTime<Utc>) -> Value {
    let mut body = json!({
        "name": format!("Rückruf: {}", r.who()),
        "status": "Not Started",
        "priority": "High",
        "dateEnd": espo_datetime(due),
        "description": format!(
            "Verpasster Anruf am {} (UTC).\n{}",
            espo_datetime(r.start),
            description(r, key)
        ),
    });
    if let Some((t, id)) = &links.parent {
        body["parentType"] = json!(t);
        body["parentId"] = json!(id);
    }
    if let Some(u) = &links.user_id {
        body["assignedUserId"] = json!(u);
    }
    body
}

/// The optional Advoware call note of a call with a known Beteiligter (seeds: "Anrufprotokoll
/// in EspoCRM/Advoware"): the Call's title and text (with the call's marker) under the configured
/// field names, and the start as Advoware's Europe/Berlin wall-clock time (`YYYY-MM-DDTHH:MM:SS`).
pub fn advoware_note_body(r: &CallReport, key: &str, text_field: &str, date_field: &str) -> Value {
    let start = r
        .start
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let mut body = serde_json::Map::new();
    body.insert(
        text_field.to_owned(),
        json!(format!("{}\n{}", r.title(), description(r, key))),
    );
    body.insert(date_field.to_owned(), json!(start));
    Value::Object(body)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // In tests a failed expect is a failed test.
mod tests {
    use super::*;

    #[test]
    fn the_advoware_note_carries_the_call_its_marker_and_berlin_time() {
        let r = parse(&example(), Region::DE).expect("valid");
        let key = r.key();
        let body = advoware_note_body(&r, &key, "notiz", "datum");
        let text = body["notiz"].as_str().unwrap_or_default();
        assert!(text.starts_with(&r.title()), "{text}");
        assert!(text.contains(&marker(&key)), "{text}");
        assert!(text.contains("Nebenstelle: 201"), "{text}");
        // 13:02 UTC in November is 14:02 in Berlin (CET).
        assert_eq!(body["datum"], "2026-11-23T14:02:00");
        assert_eq!(body.as_object().map(|o| o.len()), Some(2));
    }

    fn example() -> Value {
        json!({
            "CallType": "Inbound", "CallDirection": "Inbound", "Number": "+4951112345",
            "Name": "Max Mustermann", "EntityId": "6745a1b2c3d4e5f60", "Agent": "201",
            "AgentEmail": "SB@example-kanzlei.de", "Duration": "00:04:12",
            "DateTime": "2026-11-23 14:02:00", "CallStartTimeUTC": "2026-11-23T13:02:00Z",
            "CallEstablishedTimeUTC": "2026-11-23T13:02:09Z", "CallEndTimeUTC": "2026-11-23T13:06:21Z"
        })
    }

    #[test]
    fn parses_the_example_and_builds_a_held_call() {
        let r = parse(&example(), Region::DE).expect("valid");
        assert_eq!(r.duration_secs, 252);
        assert!(r.held());
        assert!(!r.needs_task());
        assert_eq!(r.agent_email.as_deref(), Some("sb@example-kanzlei.de"));
        let key = r.key();
        assert_eq!(key.len(), 32);
        let body = call_body(&r, &key, &Links::default());
        assert_eq!(body["status"], "Held");
        assert_eq!(body["dateStart"], "2026-11-23 13:02:00");
        assert_eq!(body["dateEnd"], "2026-11-23 13:06:21");
        assert_eq!(body["duration"], 261);
        assert!(body["description"]
            .as_str()
            .unwrap_or_default()
            .contains(&marker(&key)));
    }

    #[test]
    fn the_key_ignores_the_display_fields_but_not_the_call() {
        let a = parse(&example(), Region::DE).expect("valid").key();
        let mut renamed = example();
        renamed["Name"] = json!("Someone Else");
        renamed["Number"] = json!("0511 12345");
        assert_eq!(parse(&renamed, Region::DE).expect("valid").key(), a);
        let mut later = example();
        later["CallStartTimeUTC"] = json!("2026-11-23T13:02:01Z");
        assert_ne!(parse(&later, Region::DE).expect("valid").key(), a);
    }

    #[test]
    fn missed_and_not_answered() {
        let mut m = example();
        m["CallType"] = json!("Missed");
        m["Duration"] = json!("");
        m["CallEstablishedTimeUTC"] = json!("");
        let r = parse(&m, Region::DE).expect("valid");
        assert!(!r.held());
        assert!(r.needs_task());
        let mut n = m.clone();
        n["CallType"] = json!("Notanswered");
        n["CallDirection"] = json!("Outbound");
        let r = parse(&n, Region::DE).expect("valid");
        assert_eq!(r.direction, Direction::Outbound);
        assert!(!r.needs_task());
        assert_eq!(call_body(&r, "k", &Links::default())["status"], "Not Held");
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let cases: [(&str, Value, &str); 6] = [
            ("CallType", json!("Sideways"), "CallType"),
            ("CallStartTimeUTC", json!("yesterday"), "CallStartTimeUTC"),
            (
                "CallEndTimeUTC",
                json!("2026-11-23T12:00:00Z"),
                "CallEndTimeUTC",
            ),
            ("Duration", json!("four minutes"), "Duration"),
            ("CallDirection", json!("Up"), "CallDirection"),
            ("Agent", json!({"x": 1}), "Agent"),
        ];
        for (field, value, named) in cases {
            let mut b = example();
            b[field] = value;
            let e = parse(&b, Region::DE).expect_err(field);
            assert_eq!(e.field, named, "{field}");
        }
        let mut b = example();
        b.as_object_mut().map(|o| o.remove("CallStartTimeUTC"));
        assert_eq!(
            parse(&b, Region::DE).expect_err("missing").field,
            "CallStartTimeUTC"
        );
        assert_eq!(
            parse(&json!([1]), Region::DE).expect_err("array").field,
            "body"
        );
    }
}
