//! [`Lead`] → EspoCRM records: the `Lead` to create, the patch that adds a repeat inquiry to
//! an existing record, the follow-up `Task`, and the idempotency marker every one of them
//! carries in its description.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::payload::{Lead, LeadType};

/// Who gets leads of a type (EspoCRM user and/or team ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignee {
    pub user_id: Option<String>,
    pub team_id: Option<String>,
}

/// Lead type → assignee. Newsletter sign-ups are never assigned.
pub type AssignmentRules = BTreeMap<LeadType, Assignee>;

/// EspoCRM `source` of every lead from the website (a standard option of the enum).
pub const SOURCE: &str = "Web Site";

/// EspoCRM `status` for a lead type: inquiries start as `New`, or `Assigned` when a rule names a
/// user; newsletter sign-ups are `Recycled`, which keeps them out of the open-lead views.
pub fn status(lead_type: LeadType, assigned: bool) -> &'static str {
    match (lead_type, assigned) {
        (LeadType::Newsletter, _) => "Recycled",
        (_, true) => "Assigned",
        (_, false) => "New",
    }
}

/// The text every record written for one submission carries; EspoCRM is searched for it
/// (`description contains`) before anything is created, so a retry after a crash between the
/// create and the Redis record finds the first create.
pub fn marker(idempotency_key: &str) -> String {
    format!("[vermieterhelden:{idempotency_key}]")
}

/// The human-readable block of a submission: type and event, message, page, UTM, consent,
/// unknown fields, then the marker.
pub fn description(lead: &Lead, key: &str, received: DateTime<Utc>) -> String {
    let mut out = format!(
        "{} über vermieterhelden.de ({}), eingegangen {}",
        lead.lead_type.label(),
        lead.event.as_str(),
        lead.submitted_at
            .unwrap_or(received)
            .format("%Y-%m-%d %H:%M UTC")
    );
    if let Some(m) = &lead.message {
        out.push_str("\n\nNachricht:\n");
        out.push_str(m);
    }
    if let Some(u) = &lead.page_url {
        out.push_str(&format!("\n\nSeite: {u}"));
    }
    if !lead.utm.is_empty() {
        let utm: Vec<String> = lead.utm.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("\nKampagne: {}", utm.join(", ")));
    }
    if let Some(c) = &lead.consent {
        out.push_str(&format!(
            "\nNewsletter-Einwilligung: Textversion {}, erteilt {}",
            c.text_version,
            c.given_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if !lead.extra.is_empty() {
        out.push_str("\nWeitere Angaben: ");
        out.push_str(&Value::Object(lead.extra.clone()).to_string());
    }
    out.push('\n');
    out.push_str(&marker(key));
    out
}

/// The body of `POST Lead`.
pub fn new_lead(
    lead: &Lead,
    key: &str,
    assignee: Option<&Assignee>,
    received: DateTime<Utc>,
) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), json!(v));
        }
    };
    put("salutationName", lead.salutation);
    put("firstName", lead.name.first.as_deref());
    // EspoCRM requires a last name; forms may only ask for an e-mail address.
    put(
        "lastName",
        Some(lead.name.last.as_deref().unwrap_or("(ohne Namen)")),
    );
    put("emailAddress", lead.email.as_deref());
    put("phoneNumber", lead.phone.as_deref());
    put("accountName", lead.company.as_deref());
    put("source", Some(SOURCE));
    let assigned_user = assignee.and_then(|a| a.user_id.as_deref());
    put(
        "status",
        Some(status(lead.lead_type, assigned_user.is_some())),
    );
    put("assignedUserId", assigned_user);
    put("description", Some(&description(lead, key, received)));
    if let Some(team) = assignee.and_then(|a| a.team_id.as_deref()) {
        m.insert("teamsIds".into(), json!([team]));
    }
    Value::Object(m)
}

/// The patch that records a repeat inquiry on an existing Lead or Contact: its description
/// gets the new block appended (marker included); empty e-mail/phone/name fields are filled,
/// filled ones are never overwritten.
pub fn repeat_inquiry_patch(
    existing: &Value,
    lead: &Lead,
    key: &str,
    received: DateTime<Utc>,
) -> Value {
    let old = existing
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let block = description(lead, key, received);
    let text = if old.trim().is_empty() {
        block
    } else {
        format!("{old}\n\n---\n{block}")
    };
    let mut m = Map::new();
    m.insert("description".into(), json!(text));
    let empty = |k: &str| {
        existing
            .get(k)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
    };
    for (k, v) in [
        ("emailAddress", lead.email.as_deref()),
        ("phoneNumber", lead.phone.as_deref()),
        ("firstName", lead.name.first.as_deref()),
    ] {
        if let (true, Some(v)) = (empty(k), v) {
            m.insert(k.into(), json!(v));
        }
    }
    Value::Object(m)
}

/// The follow-up `Task` for the assignee of a lead (`parent` = entity type and id).
pub fn task(
    lead: &Lead,
    key: &str,
    parent: (&str, &str),
    user_id: &str,
    due: DateTime<Utc>,
) -> Value {
    json!({
        "name": task_name(lead.lead_type),
        "status": "Not Started",
        "priority": if lead.lead_type == LeadType::Mieter || lead.lead_type == LeadType::Vermieter { "High" } else { "Normal" },
        "dateEnd": due.format("%Y-%m-%d %H:%M:%S").to_string(),
        "assignedUserId": user_id,
        "parentType": parent.0,
        "parentId": parent.1,
        "description": format!("Bitte innerhalb der Frist Kontakt aufnehmen.\n{}", marker(key)),
    })
}

pub fn task_name(t: LeadType) -> String {
    format!("{} beantworten (vermieterhelden.de)", t.label())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::contact::Region;
    use crate::sync::leads::payload::validate;
    use proptest::prelude::*;

    fn lead(t: &str) -> Lead {
        let v = json!({"event": "lead.created", "lead_type": t,
            "contact": {"first_name": "Max", "last_name": "Muster", "email": "max@example.de"},
            "consent": {"newsletter": true, "text_version": "v3", "given_at": "2026-05-01T10:00:00Z"},
            "utm": {"source": "fb"}, "wp_form": 7});
        validate(&v, Region::DE).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lead_body_carries_everything() {
        let now = Utc::now();
        let a = Assignee {
            user_id: Some("u1".into()),
            team_id: Some("t1".into()),
        };
        let body = new_lead(&lead("vermieter"), "msg_1", Some(&a), now);
        assert_eq!(body["lastName"], "Muster");
        assert_eq!(body["status"], "Assigned");
        assert_eq!(body["source"], SOURCE);
        assert_eq!(body["teamsIds"], json!(["t1"]));
        let d = body["description"].as_str().unwrap_or("");
        assert!(d.contains("Vermieter-Anfrage") && d.contains("utm_source=fb"));
        assert!(d.contains("Textversion v3") && d.contains("\"wp_form\":7"));
        assert!(d.ends_with("[vermieterhelden:msg_1]"));
        assert_eq!(new_lead(&lead("kontakt"), "k", None, now)["status"], "New");
    }

    #[test]
    fn repeat_inquiry_appends_and_fills_only_gaps() {
        let existing =
            json!({"description": "alt", "emailAddress": "other@example.de", "phoneNumber": ""});
        let mut l = lead("mieter");
        l.phone = Some("+49301234567".into());
        let p = repeat_inquiry_patch(&existing, &l, "msg_2", Utc::now());
        assert!(p["description"]
            .as_str()
            .unwrap_or("")
            .starts_with("alt\n\n---\nMieter-Anfrage"));
        assert!(p.get("emailAddress").is_none());
        assert_eq!(p["phoneNumber"], "+49301234567");
    }

    proptest! {
        /// The marker of the key is always in what gets written, so the search finds it.
        #[test]
        fn marker_is_always_present(key in "[A-Za-z0-9._:-]{1,64}", msg in ".{0,200}") {
            let mut l = lead("mieter");
            l.message = Some(msg);
            let d = new_lead(&l, &key, None, Utc::now())["description"].as_str().unwrap_or("").to_owned();
            prop_assert!(d.contains(&marker(&key)));
        }
    }
}
