//! Validation and enrichment of one form submission (payload contract v1,
//! `docs/leads/vermieterhelden-lead.v1.schema.json`): JSON object → [`Lead`], or a
//! [`ValidationError`] naming the field. Error texts never contain the submitted values: they
//! end up in the dead-letter stream and in logs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::sync::contact::{
    clean_text, normalize_email, normalize_phone, split_name, PersonName, Region,
};

/// The contract version this code reads. Payloads without `schema_version` are read as v1.
pub const SCHEMA_VERSION: &str = "1";

/// Longest accepted text per kind of field (characters); longer is refused, not cut.
pub const MAX_SHORT: usize = 200;
pub const MAX_MESSAGE: usize = 10_000;
pub const MAX_URL: usize = 2_000;
/// Unknown fields are kept in the description up to this many characters of JSON.
pub const MAX_EXTRA_JSON: usize = 10_000;

/// The four forms on vermieterhelden.de.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeadType {
    /// Tenants (Mieter) asking for help.
    Mieter,
    /// Landlords (Vermieter).
    Vermieter,
    /// The general contact form.
    Kontakt,
    /// Newsletter sign-up: goes to a target list, not into the lead pipeline.
    Newsletter,
}

impl LeadType {
    pub const ALL: [LeadType; 4] = [
        Self::Mieter,
        Self::Vermieter,
        Self::Kontakt,
        Self::Newsletter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mieter => "mieter",
            Self::Vermieter => "vermieter",
            Self::Kontakt => "kontakt",
            Self::Newsletter => "newsletter",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// German label for descriptions and task names.
    pub fn label(self) -> &'static str {
        match self {
            Self::Mieter => "Mieter-Anfrage",
            Self::Vermieter => "Vermieter-Anfrage",
            Self::Kontakt => "Kontaktformular",
            Self::Newsletter => "Newsletter-Anmeldung",
        }
    }
}

/// The two event names of the WordPress plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadEvent {
    /// A lead form (Mieter, Vermieter, newsletter).
    LeadCreated,
    /// The contact form.
    ContactSubmitted,
}

impl LeadEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeadCreated => "lead.created",
            Self::ContactSubmitted => "contact.submitted",
        }
    }
}

/// GDPR record of a newsletter consent: which consent text was shown, and when it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub text_version: String,
    pub given_at: DateTime<Utc>,
}

/// A validated, enriched submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub event: LeadEvent,
    pub lead_type: LeadType,
    pub submitted_at: Option<DateTime<Utc>>,
    /// EspoCRM salutation (`Mr.` / `Ms.`), from `Herr` / `Frau`.
    pub salutation: Option<&'static str>,
    pub name: PersonName,
    /// Normalised (lower case, syntax-checked).
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub company: Option<String>,
    pub message: Option<String>,
    pub page_url: Option<String>,
    /// `utm_source` … `utm_content`, as sent.
    pub utm: BTreeMap<String, String>,
    pub consent: Option<Consent>,
    /// Top-level fields the contract does not name, kept for the description.
    pub extra: Map<String, Value>,
}

/// A payload the contract refuses. `field` is the JSON path (`contact.email`); permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lead payload: field {field}: {problem}")]
pub struct ValidationError {
    pub field: String,
    pub problem: String,
}

fn invalid(field: &str, problem: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

const KNOWN: [&str; 9] = [
    "schema_version",
    "event",
    "lead_type",
    "submitted_at",
    "contact",
    "message",
    "page_url",
    "utm",
    "consent",
];

/// Reads an optional string field: absent/null/blank → `None`; not a string or longer than
/// `max` characters → error naming `path`.
fn opt_str(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                return Err(invalid(path, format!("longer than {max} characters")));
            }
            if s.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            {
                return Err(invalid(path, "contains control characters"));
            }
            Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
        }
        Some(_) => Err(invalid(path, "must be a string")),
    }
}

fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, ValidationError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(key, "must be an object")),
    }
}

fn parse_time(s: &str, path: &str) -> Result<DateTime<Utc>, ValidationError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            invalid(
                path,
                "must be an RFC 3339 date-time (2026-05-01T10:00:00+02:00)",
            )
        })
}

/// Validates and enriches one payload. `default_region` is where national phone numbers belong.
pub fn validate(payload: &Value, default_region: Region) -> Result<Lead, ValidationError> {
    let Value::Object(obj) = payload else {
        return Err(invalid("$", "must be a JSON object"));
    };
    if let Some(v) = opt_str(obj, "schema_version", "schema_version", 10)? {
        if v != SCHEMA_VERSION {
            return Err(invalid(
                "schema_version",
                format!("unsupported version (this worker reads {SCHEMA_VERSION})"),
            ));
        }
    }
    let event = match opt_str(obj, "event", "event", 40)?.as_deref() {
        Some("lead.created") => LeadEvent::LeadCreated,
        Some("contact.submitted") => LeadEvent::ContactSubmitted,
        Some(_) => {
            return Err(invalid(
                "event",
                "unknown event (lead.created, contact.submitted)",
            ))
        }
        None => return Err(invalid("event", "required")),
    };
    let lead_type = match opt_str(obj, "lead_type", "lead_type", 40)? {
        Some(t) => LeadType::parse(&t).ok_or_else(|| {
            invalid(
                "lead_type",
                "unknown type (mieter, vermieter, kontakt, newsletter)",
            )
        })?,
        None if event == LeadEvent::ContactSubmitted => LeadType::Kontakt,
        None => return Err(invalid("lead_type", "required for lead.created")),
    };
    let submitted_at = opt_str(obj, "submitted_at", "submitted_at", 40)?
        .map(|s| parse_time(&s, "submitted_at"))
        .transpose()?;

    let empty = Map::new();
    let contact = opt_object(obj, "contact")?.unwrap_or(&empty);
    let c = |key: &str, max: usize| opt_str(contact, key, &format!("contact.{key}"), max);
    let salutation = match c("salutation", 40)?.map(|s| s.to_lowercase()).as_deref() {
        None => None,
        Some("herr" | "mr" | "mr.") => Some("Mr."),
        Some("frau" | "ms" | "ms." | "mrs" | "mrs.") => Some("Ms."),
        Some("divers" | "keine angabe" | "") => None,
        Some(_) => {
            return Err(invalid(
                "contact.salutation",
                "unknown (Herr, Frau, divers)",
            ))
        }
    };
    let (first, last, full) = (
        c("first_name", MAX_SHORT)?,
        c("last_name", MAX_SHORT)?,
        c("name", MAX_SHORT)?,
    );
    let name = split_name(first.as_deref(), last.as_deref(), full.as_deref());
    let email = c("email", 254)?
        .map(|e| normalize_email(&e).map_err(|p| invalid("contact.email", p.to_string())))
        .transpose()?;
    let phone = c("phone", 40)?
        .map(|p| {
            normalize_phone(&p, default_region).map_err(|p| invalid("contact.phone", p.to_string()))
        })
        .transpose()?;
    if email.is_none() && phone.is_none() {
        return Err(invalid(
            "contact.email",
            "an e-mail address or a phone number is required",
        ));
    }
    if lead_type == LeadType::Newsletter && email.is_none() {
        return Err(invalid(
            "contact.email",
            "required for a newsletter sign-up",
        ));
    }
    let company = c("company", MAX_SHORT)?.and_then(|s| clean_text(&s));
    // Unknown fields anywhere are kept (in the description), never refused.
    let mut extra: Map<String, Value> = Map::new();
    const CONTACT: [&str; 7] = [
        "salutation",
        "first_name",
        "last_name",
        "name",
        "email",
        "phone",
        "company",
    ];
    for (k, v) in contact
        .iter()
        .filter(|(k, _)| !CONTACT.contains(&k.as_str()))
    {
        extra.insert(format!("contact.{k}"), v.clone());
    }

    let message = opt_str(obj, "message", "message", MAX_MESSAGE)?;
    let page_url = opt_str(obj, "page_url", "page_url", MAX_URL)?;
    if let Some(u) = &page_url {
        let ok = url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(invalid("page_url", "must be an http(s) URL"));
        }
    }
    let mut utm = BTreeMap::new();
    if let Some(u) = opt_object(obj, "utm")? {
        // Other tracking parameters (gclid, fbclid, …) are kept next to the five UTM ones.
        for k in u.keys() {
            if let Some(v) = opt_str(u, k, &format!("utm.{k}"), MAX_SHORT)? {
                let name =
                    if ["source", "medium", "campaign", "term", "content"].contains(&k.as_str()) {
                        format!("utm_{k}")
                    } else {
                        k.clone()
                    };
                utm.insert(name, v);
            }
        }
    }
    let consent = match opt_object(obj, "consent")? {
        None => None,
        Some(m) => {
            for (k, v) in m
                .iter()
                .filter(|(k, _)| !["newsletter", "text_version", "given_at"].contains(&k.as_str()))
            {
                extra.insert(format!("consent.{k}"), v.clone());
            }
            let newsletter = match m.get("newsletter") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid("consent.newsletter", "must be true or false")),
            };
            let version = opt_str(m, "text_version", "consent.text_version", 100)?;
            let given = opt_str(m, "given_at", "consent.given_at", 40)?
                .map(|s| parse_time(&s, "consent.given_at"))
                .transpose()?;
            match (newsletter, version, given) {
                (true, Some(text_version), Some(given_at)) => Some(Consent {
                    text_version,
                    given_at,
                }),
                (true, None, _) => {
                    return Err(invalid(
                        "consent.text_version",
                        "required with newsletter consent",
                    ))
                }
                (true, _, None) => {
                    return Err(invalid(
                        "consent.given_at",
                        "required with newsletter consent",
                    ))
                }
                (false, ..) => None,
            }
        }
    };
    if lead_type == LeadType::Newsletter && consent.is_none() {
        return Err(invalid(
            "consent.newsletter",
            "a newsletter sign-up needs consent (true, text_version, given_at)",
        ));
    }
    extra.extend(
        obj.iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    if Value::Object(extra.clone()).to_string().len() > MAX_EXTRA_JSON {
        return Err(invalid(
            "$",
            format!("additional fields exceed {MAX_EXTRA_JSON} characters"),
        ));
    }
    Ok(Lead {
        event,
        lead_type,
        submitted_at,
        salutation,
        name,
        email,
        phone,
        company,
        message,
        page_url,
        utm,
        consent,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "schema_version": "1",
            "event": "lead.created",
            "lead_type": "mieter",
            "submitted_at": "2026-05-01T10:00:00+02:00",
            "contact": {"salutation": "Frau", "name": " Anna  Schmidt ", "email": "Anna@Example.DE", "phone": "030 1234567"},
            "message": "Mieterhöhung erhalten",
            "page_url": "https://vermieterhelden.de/mieter?x=1",
            "utm": {"source": "google", "campaign": "miete"},
            "property_city": "Berlin"
        })
    }

    #[test]
    fn enriches_a_tenant_lead() {
        let lead = validate(&base(), Region::DE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lead.lead_type, LeadType::Mieter);
        assert_eq!(lead.salutation, Some("Ms."));
        assert_eq!(lead.name.first.as_deref(), Some("Anna"));
        assert_eq!(lead.name.last.as_deref(), Some("Schmidt"));
        assert_eq!(lead.email.as_deref(), Some("anna@example.de"));
        assert_eq!(lead.phone.as_deref(), Some("+49301234567"));
        assert_eq!(
            lead.utm.get("utm_source").map(String::as_str),
            Some("google")
        );
        assert_eq!(lead.extra.get("property_city"), Some(&json!("Berlin")));
        assert_eq!(
            lead.submitted_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-05-01T08:00:00+00:00")
        );
    }

    fn field_of(v: Value) -> String {
        match validate(&v, Region::DE) {
            Err(e) => e.field,
            Ok(_) => "accepted".into(),
        }
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut v = base();
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        if let Some(o) = at.as_object_mut() {
            if value.is_null() {
                o.remove(path[path.len() - 1]);
            } else {
                o.insert(path[path.len() - 1].into(), value);
            }
        }
        v
    }

    #[test]
    fn errors_name_the_field_not_the_value() {
        assert_eq!(field_of(with(&["lead_type"], json!("käufer"))), "lead_type");
        assert_eq!(field_of(with(&["event"], json!("lead.deleted"))), "event");
        assert_eq!(
            field_of(with(&["contact", "email"], json!("anna(at)example.de"))),
            "contact.email"
        );
        assert_eq!(
            field_of(with(&["contact", "phone"], json!("12"))),
            "contact.phone"
        );
        let none = with(&["contact"], json!({"name": "Anna"}));
        assert_eq!(field_of(none), "contact.email");
        assert_eq!(
            field_of(with(&["message"], json!("x".repeat(MAX_MESSAGE + 1)))),
            "message"
        );
        assert_eq!(
            field_of(with(&["page_url"], json!("javascript:alert(1)"))),
            "page_url"
        );
        assert_eq!(field_of(with(&["utm", "gclid"], json!(["x"]))), "utm.gclid");
        assert_eq!(
            field_of(with(&["contact", "whatsapp"], json!("ja"))),
            "accepted"
        );
        let kept = validate(&with(&["contact", "whatsapp"], json!("ja")), Region::DE)
            .map(|l| l.extra)
            .unwrap_or_default();
        assert_eq!(kept.get("contact.whatsapp"), Some(&json!("ja")));
        assert_eq!(
            field_of(with(&["contact", "email"], json!(42))),
            "contact.email"
        );
        let e = validate(
            &with(&["contact", "email"], json!("secret.person@@x.de")),
            Region::DE,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(!e.contains("secret.person"), "{e}");
    }

    #[test]
    fn contact_form_and_newsletter() {
        let contact = json!({"event": "contact.submitted", "contact": {"phone": "+43 1 234 5678"}});
        let lead = validate(&contact, Region::DE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lead.lead_type, LeadType::Kontakt);
        assert_eq!(lead.phone.as_deref(), Some("+4312345678"));
        let nl = json!({"event": "lead.created", "lead_type": "newsletter", "contact": {"email": "a@b.de"}});
        assert_eq!(field_of(nl.clone()), "consent.newsletter");
        let mut ok = nl;
        ok["consent"] = json!({"newsletter": true, "text_version": "nl-2026-01", "given_at": "2026-05-01T10:00:00Z"});
        let lead = validate(&ok, Region::DE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            lead.consent.map(|c| c.text_version).as_deref(),
            Some("nl-2026-01")
        );
    }

    /// The documented examples (`docs/leads/examples`) are what this code accepts, and the
    /// schema names exactly the types and events it knows.
    #[test]
    fn documented_examples_validate() {
        let examples = [
            (
                include_str!("../../../../docs/leads/examples/mieter.json"),
                LeadType::Mieter,
            ),
            (
                include_str!("../../../../docs/leads/examples/vermieter.json"),
                LeadType::Vermieter,
            ),
            (
                include_str!("../../../../docs/leads/examples/kontakt.json"),
                LeadType::Kontakt,
            ),
            (
                include_str!("../../../../docs/leads/examples/newsletter.json"),
                LeadType::Newsletter,
            ),
        ];
        for (text, t) in examples {
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            let lead = validate(&v, Region::DE).unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert_eq!(lead.lead_type, t);
        }
        let schema: Value = serde_json::from_str(include_str!(
            "../../../../docs/leads/vermieterhelden-lead.v1.schema.json"
        ))
        .unwrap_or_default();
        let types: Vec<&str> = LeadType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(schema["properties"]["lead_type"]["enum"], json!(types));
        assert_eq!(
            schema["properties"]["event"]["enum"],
            json!(["lead.created", "contact.submitted"])
        );
        assert_eq!(
            schema["properties"]["schema_version"]["const"],
            json!(SCHEMA_VERSION)
        );
    }

    proptest! {
        /// Any JSON never panics, and a refusal always names a field.
        #[test]
        fn arbitrary_payloads_are_refused_cleanly(
            t in ".{0,12}", e in ".{0,30}", p in ".{0,20}", extra in ".{0,50}",
        ) {
            let v = json!({"event": "lead.created", "lead_type": t, "contact": {"email": e, "phone": p}, "x": extra});
            if let Err(err) = validate(&v, Region::DE) {
                prop_assert!(!err.field.is_empty());
            }
        }
    }
}
