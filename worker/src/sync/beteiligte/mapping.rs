//! `CBeteiligte` ↔ Advoware `Beteiligte` through the normalised [`Stammdaten`].
//!
//! Both sides are first read into [`Stammdaten`]; equality there is what "in sync" means, so a
//! difference only in spelling (`G.m.b.H.` vs `GmbH`, `Mrs.` vs `Ms.`, `HRB12345` vs
//! `HRB 12345`, surrounding blanks) never causes a write. Rules:
//!
//! - **Person or company:** in EspoCRM by Rechtsform (none, `Privatperson`, `natürliche
//!   Person` → person; a record with only `firmenname` is a company); in Advoware a company has
//!   a company Rechtsform or the Anrede `Firma`, which the sync writes for every company. Persons carry last name (required), first name, Anrede, title,
//!   date of birth; companies carry the company name (required), Rechtsform, Handelsregister.
//!   Attributes of the other kind are ignored on read and cleared on write.
//! - **Anrede:** EspoCRM `Mr.` ↔ Advoware `Herr`, `Ms.`/`Mrs.` ↔ `Frau`; other values pass through.
//! - **Rechtsform:** known German forms are recognised in their usual spellings and written in
//!   one canonical form; unknown ones pass through trimmed.
//! - **Date of birth:** EspoCRM `YYYY-MM-DD`, Advoware `YYYY-MM-DDT00:00:00` (date-only and
//!   other times accepted on read).
//! - **Handelsregister:** number as `HRA|HRB|GnR|PR|VR <digits…>` (prefix upper-cased, one blank);
//!   court with `AG ` expanded to `Amtsgericht `.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::model::{AdvowareBeteiligter, EspoBeteiligte, EspoStammdatenPatch};
use super::MappingError;

/// Natural person or company (juristische Person, Personengesellschaft…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Person,
    Firma,
}

/// Salutation of a person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Anrede {
    Herr,
    Frau,
    /// Anything else, trimmed (`Divers`, `Dr.` as salutation, …).
    Other(String),
}

impl Anrede {
    fn from_espo(s: &str) -> Self {
        match s.trim().trim_end_matches('.').to_lowercase().as_str() {
            "mr" | "herr" => Self::Herr,
            "ms" | "mrs" | "frau" => Self::Frau,
            _ => Self::Other(s.trim().to_owned()),
        }
    }
    fn from_advoware(s: &str) -> Self {
        Self::from_espo(s)
    }
    fn to_espo(&self) -> String {
        match self {
            Self::Herr => "Mr.".into(),
            Self::Frau => "Ms.".into(),
            Self::Other(s) => s.clone(),
        }
    }
    fn to_advoware(&self) -> String {
        match self {
            Self::Herr => "Herr".into(),
            Self::Frau => "Frau".into(),
            Self::Other(s) => s.clone(),
        }
    }
}

/// Rechtsform of a company.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rechtsform {
    GmbH,
    UG,
    AG,
    GmbHCoKG,
    KG,
    OHG,
    GbR,
    EK,
    EV,
    EG,
    PartG,
    PartGmbB,
    SE,
    KGaA,
    Einzelunternehmen,
    /// Unrecognised, trimmed.
    Other(String),
}

/// Canonical text and accepted spellings (compared after [`squash`]).
const RECHTSFORMEN: &[(Rechtsform, &str, &[&str])] = &[
    (
        Rechtsform::GmbH,
        "GmbH",
        &["gmbh", "gesellschaftmitbeschränkterhaftung"],
    ),
    (
        Rechtsform::UG,
        "UG (haftungsbeschränkt)",
        &[
            "ug",
            "ug(haftungsbeschränkt)",
            "unternehmergesellschaft",
            "unternehmergesellschaft(haftungsbeschränkt)",
        ],
    ),
    (Rechtsform::AG, "AG", &["ag", "aktiengesellschaft"]),
    (
        Rechtsform::GmbHCoKG,
        "GmbH & Co. KG",
        &["gmbh&cokg", "gmbhundcokg", "gmbh&co.kg"],
    ),
    (Rechtsform::KG, "KG", &["kg", "kommanditgesellschaft"]),
    (
        Rechtsform::OHG,
        "OHG",
        &["ohg", "offenehandelsgesellschaft"],
    ),
    (
        Rechtsform::GbR,
        "GbR",
        &["gbr", "gesellschaftbürgerlichenrechts"],
    ),
    (
        Rechtsform::EK,
        "e.K.",
        &[
            "ek",
            "eingetragenerkaufmann",
            "eingetrageneskauffrau",
            "eingetragenekauffrau",
        ],
    ),
    (
        Rechtsform::EV,
        "e.V.",
        &["ev", "eingetragenerverein", "verein"],
    ),
    (
        Rechtsform::EG,
        "eG",
        &["eg", "eingetragenegenossenschaft", "genossenschaft"],
    ),
    (
        Rechtsform::PartG,
        "PartG",
        &["partg", "partnerschaftsgesellschaft"],
    ),
    (Rechtsform::PartGmbB, "PartG mbB", &["partgmbb"]),
    (
        Rechtsform::SE,
        "SE",
        &["se", "europäischegesellschaft", "societaseuropaea"],
    ),
    (
        Rechtsform::KGaA,
        "KGaA",
        &["kgaa", "kommanditgesellschaftaufaktien"],
    ),
    (
        Rechtsform::Einzelunternehmen,
        "Einzelunternehmen",
        &["einzelunternehmen", "einzelunternehmer", "einzelfirma"],
    ),
];

/// Rechtsform values that mean "natural person".
const PERSON_FORMS: &[&str] = &["privatperson", "natürlicheperson", "person", "privat"];

/// Lower case without blanks and dots: `G.m.b.H.` → `gmbh`.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '.')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Rechtsform {
    /// Recognises a Rechtsform; `None` for empty or person-like values.
    pub fn parse(raw: &str) -> Option<Self> {
        let key = squash(raw);
        if key.is_empty() || PERSON_FORMS.contains(&key.as_str()) {
            return None;
        }
        Some(
            RECHTSFORMEN
                .iter()
                .find(|(_, _, aliases)| aliases.contains(&key.as_str()))
                .map(|(form, _, _)| form.clone())
                .unwrap_or_else(|| Self::Other(raw.trim().to_owned())),
        )
    }

    /// The canonical spelling written to both systems.
    pub fn as_text(&self) -> &str {
        match self {
            Self::Other(s) => s,
            known => RECHTSFORMEN
                .iter()
                .find(|(f, _, _)| f == known)
                .map(|(_, text, _)| *text)
                .unwrap_or(""),
        }
    }
}

/// Handelsregister entry of a company.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Handelsregister {
    /// `HRB 12345` (normalised).
    pub nummer: String,
    /// `Amtsgericht München` (normalised).
    pub gericht: Option<String>,
}

/// Normalises a register number: known prefix upper-cased (GnR/PR/VR keep their case), one
/// blank before the rest, inner blanks collapsed.
pub fn normalise_hr_nummer(raw: &str) -> Option<String> {
    let compact: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if compact.is_empty() {
        return None;
    }
    for prefix in ["HRA", "HRB", "GnR", "PR", "VR"] {
        let head: String = compact.chars().take(prefix.len()).collect();
        if head.eq_ignore_ascii_case(prefix) {
            let rest = compact[head.len()..].trim_start();
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                return Some(format!("{prefix} {rest}"));
            }
        }
    }
    Some(compact)
}

/// Normalises a register court: `AG München` → `Amtsgericht München`, blanks collapsed.
pub fn normalise_gericht(raw: &str) -> Option<String> {
    let compact: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if compact.is_empty() {
        return None;
    }
    match compact.strip_prefix("AG ") {
        Some(rest) => Some(format!("Amtsgericht {rest}")),
        None => Some(compact),
    }
}

/// The master data both sides must agree on, normalised. Equality here means "in sync".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stammdaten {
    pub kind: Kind,
    /// Last name of a person, name of a company.
    pub name: String,
    /// Persons only.
    pub vorname: Option<String>,
    /// Persons only.
    pub anrede: Option<Anrede>,
    /// Persons only.
    pub titel: Option<String>,
    /// Persons only.
    pub geburtsdatum: Option<NaiveDate>,
    /// Companies only (may be `None` for a company whose form is not recorded).
    pub rechtsform: Option<Rechtsform>,
    /// Companies only.
    pub handelsregister: Option<Handelsregister>,
}

/// Trimmed, `None` when empty.
fn text(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `YYYY-MM-DD` with an optional `T…`/` …` time part.
fn parse_date(v: &Option<String>, field: &'static str) -> Result<Option<NaiveDate>, MappingError> {
    let Some(raw) = text(v) else {
        return Ok(None);
    };
    let day = raw.split(['T', ' ']).next().unwrap_or_default();
    NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| MappingError::InvalidDate { field, value: raw })
}

/// EspoCRM: a company Rechtsform, or no Rechtsform and only a company name → company.
fn espo_kind(e: &EspoBeteiligte) -> Kind {
    match text(&e.rechtsform) {
        Some(r) if Rechtsform::parse(&r).is_some() => Kind::Firma,
        Some(_) => Kind::Person,
        None if text(&e.firmenname).is_some() && text(&e.last_name).is_none() => Kind::Firma,
        None => Kind::Person,
    }
}

/// Advoware: a company Rechtsform or the Anrede `Firma` → company.
fn advoware_kind(a: &AdvowareBeteiligter) -> Kind {
    let company_form = text(&a.rechtsform).is_some_and(|r| Rechtsform::parse(&r).is_some());
    let firma = text(&a.anrede).is_some_and(|r| squash(&r) == "firma");
    if company_form || firma {
        Kind::Firma
    } else {
        Kind::Person
    }
}

/// The Advoware Anrede of every company.
pub const ANREDE_FIRMA: &str = "Firma";

fn handelsregister(nummer: &Option<String>, gericht: &Option<String>) -> Option<Handelsregister> {
    let nummer = text(nummer).and_then(|n| normalise_hr_nummer(&n))?;
    Some(Handelsregister {
        nummer,
        gericht: text(gericht).and_then(|g| normalise_gericht(&g)),
    })
}

/// Reads an EspoCRM record. A person needs `lastName`, a company `firmenname`.
pub fn espo_to_stammdaten(e: &EspoBeteiligte) -> Result<Stammdaten, MappingError> {
    let firmenname = text(&e.firmenname);
    let last_name = text(&e.last_name);
    match espo_kind(e) {
        Kind::Person => Ok(Stammdaten {
            kind: Kind::Person,
            name: last_name.ok_or(MappingError::MissingField("lastName"))?,
            vorname: text(&e.first_name),
            anrede: text(&e.salutation_name).map(|s| Anrede::from_espo(&s)),
            titel: text(&e.titel),
            geburtsdatum: parse_date(&e.date_of_birth, "dateOfBirth")?,
            rechtsform: None,
            handelsregister: None,
        }),
        Kind::Firma => Ok(Stammdaten {
            kind: Kind::Firma,
            name: firmenname.ok_or(MappingError::MissingField("firmenname"))?,
            vorname: None,
            anrede: None,
            titel: None,
            geburtsdatum: None,
            rechtsform: text(&e.rechtsform).and_then(|r| Rechtsform::parse(&r)),
            handelsregister: handelsregister(&e.handelsregister_nummer, &e.handelsregister_gericht),
        }),
    }
}

/// Reads an Advoware record. Both kinds need `name`.
pub fn advoware_to_stammdaten(a: &AdvowareBeteiligter) -> Result<Stammdaten, MappingError> {
    let name = text(&a.name).ok_or(MappingError::MissingField("name"))?;
    match advoware_kind(a) {
        Kind::Person => Ok(Stammdaten {
            kind: Kind::Person,
            name,
            vorname: text(&a.vorname),
            anrede: text(&a.anrede).map(|s| Anrede::from_advoware(&s)),
            titel: text(&a.titel),
            geburtsdatum: parse_date(&a.geburtsdatum, "geburtsdatum")?,
            rechtsform: None,
            handelsregister: None,
        }),
        Kind::Firma => Ok(Stammdaten {
            kind: Kind::Firma,
            name,
            vorname: None,
            anrede: None,
            titel: None,
            geburtsdatum: None,
            rechtsform: text(&a.rechtsform).and_then(|r| Rechtsform::parse(&r)),
            handelsregister: handelsregister(&a.handels_register_nummer, &a.registergericht),
        }),
    }
}

/// The Advoware record to send: `base` (the current record from `GET`, for a `PUT`; `None` for a
/// `POST`) with the synced fields replaced by `s`; every other field of `base` is kept.
/// A person's person-like Rechtsform in `base` (`Privatperson`) is kept as it is.
pub fn to_advoware(base: Option<&AdvowareBeteiligter>, s: &Stammdaten) -> AdvowareBeteiligter {
    let mut out = base.cloned().unwrap_or_default();
    out.name = Some(s.name.clone());
    match s.kind {
        Kind::Person => {
            out.vorname = s.vorname.clone();
            out.anrede = s.anrede.as_ref().map(Anrede::to_advoware);
            out.titel = s.titel.clone();
            out.geburtsdatum = s
                .geburtsdatum
                .map(|d| format!("{}T00:00:00", d.format("%Y-%m-%d")));
            let keeps_person_form =
                text(&out.rechtsform).is_some_and(|r| Rechtsform::parse(&r).is_none());
            if !keeps_person_form {
                out.rechtsform = None;
            }
            out.handels_register_nummer = None;
            out.registergericht = None;
        }
        Kind::Firma => {
            out.vorname = None;
            out.anrede = Some(ANREDE_FIRMA.to_owned());
            out.titel = None;
            out.geburtsdatum = None;
            out.rechtsform = s.rechtsform.as_ref().map(|r| r.as_text().to_owned());
            out.handels_register_nummer = s.handelsregister.as_ref().map(|h| h.nummer.clone());
            out.registergericht = s.handelsregister.as_ref().and_then(|h| h.gericht.clone());
        }
    }
    out
}

/// The EspoCRM attributes for `s`; attributes of the other kind are cleared.
pub fn to_espo_patch(s: &Stammdaten) -> EspoStammdatenPatch {
    match s.kind {
        Kind::Person => EspoStammdatenPatch {
            first_name: s.vorname.clone(),
            last_name: Some(s.name.clone()),
            firmenname: None,
            salutation_name: s.anrede.as_ref().map(Anrede::to_espo),
            titel: s.titel.clone(),
            rechtsform: None,
            date_of_birth: s.geburtsdatum.map(|d| d.format("%Y-%m-%d").to_string()),
            handelsregister_nummer: None,
            handelsregister_gericht: None,
        },
        Kind::Firma => EspoStammdatenPatch {
            first_name: None,
            last_name: None,
            firmenname: Some(s.name.clone()),
            salutation_name: None,
            titel: None,
            rechtsform: s.rechtsform.as_ref().map(|r| r.as_text().to_owned()),
            date_of_birth: None,
            handelsregister_nummer: s.handelsregister.as_ref().map(|h| h.nummer.clone()),
            handelsregister_gericht: s.handelsregister.as_ref().and_then(|h| h.gericht.clone()),
        },
    }
}

/// The [`Stammdaten`] fields (named as in EspoCRM) in which `a` and `b` differ; for the conflict
/// notification and the audit.
pub fn changed_fields(a: &Stammdaten, b: &Stammdaten) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |differs: bool, name: &'static str| {
        if differs {
            out.push(name);
        }
    };
    check(a.kind != b.kind, "kind");
    check(
        a.name != b.name,
        if a.kind == Kind::Firma {
            "firmenname"
        } else {
            "lastName"
        },
    );
    check(a.vorname != b.vorname, "firstName");
    check(a.anrede != b.anrede, "salutationName");
    check(a.titel != b.titel, "titel");
    check(a.geburtsdatum != b.geburtsdatum, "dateOfBirth");
    check(a.rechtsform != b.rechtsform, "rechtsform");
    let hr = |s: &Stammdaten| s.handelsregister.as_ref().map(|h| h.nummer.clone());
    let court = |s: &Stammdaten| s.handelsregister.as_ref().and_then(|h| h.gericht.clone());
    check(hr(a) != hr(b), "handelsregisterNummer");
    check(court(a) != court(b), "handelsregisterGericht");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn espo(v: serde_json::Value) -> EspoBeteiligte {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rechtsform_spellings_normalise() {
        for (raw, want) in [
            ("G.m.b.H.", "GmbH"),
            (" gmbh ", "GmbH"),
            ("Gesellschaft mit beschränkter Haftung", "GmbH"),
            ("GmbH & Co. KG", "GmbH & Co. KG"),
            ("GmbH & Co KG", "GmbH & Co. KG"),
            ("UG", "UG (haftungsbeschränkt)"),
            ("e. K.", "e.K."),
            ("Aktiengesellschaft", "AG"),
            ("PartG mbB", "PartG mbB"),
            ("Stiftung", "Stiftung"),
        ] {
            assert_eq!(
                Rechtsform::parse(raw).as_ref().map(Rechtsform::as_text),
                Some(want),
                "{raw}"
            );
        }
        assert_eq!(Rechtsform::parse("Privatperson"), None);
        assert_eq!(Rechtsform::parse("  "), None);
    }

    #[test]
    fn register_number_and_court_normalise() {
        assert_eq!(
            normalise_hr_nummer("hrb12345").as_deref(),
            Some("HRB 12345")
        );
        assert_eq!(
            normalise_hr_nummer(" HRA   987 B ").as_deref(),
            Some("HRA 987 B")
        );
        assert_eq!(normalise_hr_nummer("12345").as_deref(), Some("12345"));
        assert_eq!(
            normalise_gericht("AG  München").as_deref(),
            Some("Amtsgericht München")
        );
    }

    #[test]
    fn person_maps_to_advoware_and_back() {
        let e = espo(json!({
            "id": "p1", "firstName": " Erika ", "lastName": "Mustermann", "salutationName": "Mrs.",
            "titel": "Dr.", "dateOfBirth": "1964-08-12", "rechtsform": "Privatperson",
            "handelsregisterNummer": "HRB 1"
        }));
        let s = espo_to_stammdaten(&e).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.kind, Kind::Person);
        assert_eq!(s.anrede, Some(Anrede::Frau));
        assert_eq!(s.handelsregister, None, "persons carry no register entry");
        let a = to_advoware(None, &s);
        assert_eq!(a.vorname.as_deref(), Some("Erika"));
        assert_eq!(a.anrede.as_deref(), Some("Frau"));
        assert_eq!(a.geburtsdatum.as_deref(), Some("1964-08-12T00:00:00"));
        assert_eq!(a.rechtsform, None);
        assert_eq!(advoware_to_stammdaten(&a), Ok(s.clone()));
        let p = to_espo_patch(&s);
        assert_eq!(p.salutation_name.as_deref(), Some("Ms."));
        assert_eq!(p.date_of_birth.as_deref(), Some("1964-08-12"));
    }

    #[test]
    fn company_maps_with_register_and_keeps_unknown_advoware_fields() {
        let e = espo(json!({
            "id": "f1", "firmenname": "Muster Bau", "rechtsform": "gmbh",
            "handelsregisterNummer": "hrb 4711", "handelsregisterGericht": "AG Köln",
            "firstName": "ignored"
        }));
        let s = espo_to_stammdaten(&e).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.kind, Kind::Firma);
        let base: AdvowareBeteiligter = serde_json::from_value(json!({
            "betNr": 7, "rowId": "r1", "name": "Muster Bau alt", "anrede": "Firma",
            "vorname": "stale", "kurzname": "MB", "adressen": [{"ort": "Köln"}]
        }))
        .unwrap_or_default();
        let a = to_advoware(Some(&base), &s);
        assert_eq!(a.name.as_deref(), Some("Muster Bau"));
        assert_eq!(a.rechtsform.as_deref(), Some("GmbH"));
        assert_eq!(a.handels_register_nummer.as_deref(), Some("HRB 4711"));
        assert_eq!(a.registergericht.as_deref(), Some("Amtsgericht Köln"));
        assert_eq!(a.vorname, None);
        assert_eq!(a.anrede.as_deref(), Some("Firma"));
        assert_eq!(a.other.get("kurzname"), Some(&json!("MB")));
        assert_eq!(a.other.get("adressen"), Some(&json!([{"ort": "Köln"}])));
        assert_eq!(a.bet_nr, base.bet_nr);
        assert_eq!(advoware_to_stammdaten(&a), Ok(s));
    }

    #[test]
    fn spelling_differences_are_not_changes() {
        let a = espo(
            json!({"id": "x", "firmenname": "ACME", "rechtsform": "G.m.b.H.",
            "handelsregisterNummer": "HRB12", "handelsregisterGericht": "AG Bonn"}),
        );
        let b: AdvowareBeteiligter = serde_json::from_value(json!({"name": " ACME ",
            "rechtsform": "GmbH", "handelsRegisterNummer": "HRB 12", "registergericht": "Amtsgericht Bonn"}))
        .unwrap_or_default();
        let (sa, sb) = (espo_to_stammdaten(&a), advoware_to_stammdaten(&b));
        assert_eq!(sa, sb);
    }

    #[test]
    fn bad_input_is_a_mapping_error() {
        assert_eq!(
            espo_to_stammdaten(&espo(json!({"id": "x", "firstName": "Max"}))),
            Err(MappingError::MissingField("lastName"))
        );
        assert_eq!(
            espo_to_stammdaten(&espo(json!({"id": "x", "rechtsform": "AG"}))),
            Err(MappingError::MissingField("firmenname"))
        );
        assert!(matches!(
            espo_to_stammdaten(&espo(
                json!({"id": "x", "lastName": "M", "dateOfBirth": "12.08.1964"})
            )),
            Err(MappingError::InvalidDate {
                field: "dateOfBirth",
                ..
            })
        ));
        assert_eq!(
            advoware_to_stammdaten(&AdvowareBeteiligter::default()),
            Err(MappingError::MissingField("name"))
        );
    }

    #[test]
    fn changed_fields_name_the_differences() {
        let e = espo(
            json!({"id": "x", "lastName": "A", "firstName": "B", "dateOfBirth": "2000-01-01"}),
        );
        let s = espo_to_stammdaten(&e).unwrap_or_else(|e| panic!("{e}"));
        let mut t = s.clone();
        t.vorname = Some("C".into());
        t.geburtsdatum = None;
        assert_eq!(changed_fields(&s, &t), vec!["firstName", "dateOfBirth"]);
        assert!(changed_fields(&s, &s).is_empty());
    }

    // ----- property: EspoCRM → Advoware → EspoCRM is the identity on canonical records

    fn word() -> impl Strategy<Value = String> {
        "[A-ZÄÖÜ][a-zäöüß]{1,11}( [A-Z][a-z]{1,8})?"
    }

    fn date() -> impl Strategy<Value = NaiveDate> {
        (1900i32..2025, 1u32..=12, 1u32..=28)
            .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default())
    }

    fn person() -> impl Strategy<Value = Stammdaten> {
        (
            word(),
            proptest::option::of(word()),
            proptest::option::of(prop_oneof![
                Just(Anrede::Herr),
                Just(Anrede::Frau),
                Just(Anrede::Other("Divers".into()))
            ]),
            proptest::option::of(prop_oneof![
                Just("Dr.".to_owned()),
                Just("Prof. Dr.".to_owned())
            ]),
            proptest::option::of(date()),
        )
            .prop_map(|(name, vorname, anrede, titel, geburtsdatum)| Stammdaten {
                kind: Kind::Person,
                name,
                vorname,
                anrede,
                titel,
                geburtsdatum,
                rechtsform: None,
                handelsregister: None,
            })
    }

    fn company() -> impl Strategy<Value = Stammdaten> {
        let forms: Vec<Rechtsform> = RECHTSFORMEN.iter().map(|(f, _, _)| f.clone()).collect();
        (
            word(),
            proptest::option::of(proptest::sample::select(forms)),
            proptest::option::of((
                prop_oneof![Just("HRA"), Just("HRB")],
                1u32..999_999,
                proptest::option::of(word()),
            )),
        )
            .prop_map(|(name, form, hr)| Stammdaten {
                kind: Kind::Firma,
                name,
                vorname: None,
                anrede: None,
                titel: None,
                geburtsdatum: None,
                rechtsform: form,
                handelsregister: hr.map(|(p, n, court)| Handelsregister {
                    nummer: format!("{p} {n}"),
                    gericht: court.map(|c| format!("Amtsgericht {c}")),
                }),
            })
    }

    fn espo_record(id: &str, p: &EspoStammdatenPatch) -> EspoBeteiligte {
        let mut v = serde_json::to_value(p).unwrap_or_default();
        v["id"] = json!(id);
        espo(v)
    }

    proptest! {
        #[test]
        fn espo_advoware_espo_round_trip(s in prop_oneof![person(), company()]) {
            let patch = to_espo_patch(&s);
            let e = espo_record("abc123", &patch);
            let from_espo = espo_to_stammdaten(&e);
            prop_assert_eq!(from_espo.as_ref(), Ok(&s));
            let a = to_advoware(None, &s);
            // Through JSON, as it travels.
            let a: AdvowareBeteiligter = serde_json::from_value(
                serde_json::to_value(&a).unwrap_or_default()).unwrap_or_default();
            let back = advoware_to_stammdaten(&a);
            prop_assert_eq!(back.as_ref(), Ok(&s));
            prop_assert_eq!(to_espo_patch(&s), patch);
        }
    }
}
