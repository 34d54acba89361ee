//! EspoCRM `CBankverbindungen` ↔ Advoware Bankverbindung of a Beteiligter, through the
//! normalised [`BankData`] both sides map to, and the 3-way decision of a run.
//!
//! Advoware's field names are not documented publicly (FACTS §1), so they are configuration
//! ([`FieldNames`], `[bankverbindungen.fields]`); the defaults are the most likely names
//! (`iban`, `bic`, `bank`, `kontoinhaber`, `id`). EspoCRM's are FACTS §1's, in [`espo_fields`].
//! An Advoware `PUT` is taken to replace the record like the Beteiligte `PUT`: the body is the
//! entry as read with the synced fields changed ([`to_advoware`]), so unknown fields survive.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::iban::{parse_bic, BicError, Iban, IbanError};
use crate::sync::beteiligte::SyncStatus;

/// EspoCRM attribute names of `CBankverbindungen` (FACTS §1) and the link to the Beteiligter.
pub mod espo_fields {
    pub const ENTITY: &str = "CBankverbindungen";
    pub const IBAN: &str = "iban";
    pub const BIC: &str = "bic";
    pub const KONTOINHABER: &str = "kontoinhaber";
    pub const BANKNAME: &str = "bankname";
    pub const IST_AKTIV: &str = "istAktiv";
    pub const IST_STANDARD: &str = "istStandard";
    pub const ADVOWARE_KONTO_ID: &str = "advowareKontoId";
    pub const ADVOWARE_LAST_SYNC: &str = "advowareLastSync";
    pub const SYNC_STATUS: &str = "syncStatus";
    /// Not in FACTS' field list of `CBankverbindungen`; the seeds' name on `CBeteiligte`.
    pub const SYNC_ERROR_MESSAGE: &str = "syncErrorMessage";
    /// The `belongsTo` link `beteiligte` as EspoCRM stores it (`<link>Id`).
    pub const BETEILIGTE_ID: &str = "beteiligteId";
}

/// Advoware's field names of a Bankverbindung; an empty name means "not sent, not read".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames {
    /// The entry's id (answer of the `POST`, key of `PUT`/`DELETE`).
    pub id: String,
    pub iban: String,
    pub bic: String,
    /// ← EspoCRM `bankname`.
    pub bank: String,
    pub kontoinhaber: String,
    /// ← EspoCRM `istStandard` (default: not synced; Advoware's name is unknown).
    pub ist_standard: String,
    /// ← EspoCRM `istAktiv` (default: not synced).
    pub ist_aktiv: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            id: "id".into(),
            iban: "iban".into(),
            bic: "bic".into(),
            bank: "bank".into(),
            kontoinhaber: "kontoinhaber".into(),
            ist_standard: String::new(),
            ist_aktiv: String::new(),
        }
    }
}

impl FieldNames {
    /// Setting names (`bankverbindungen.fields.<name>`), in the order of [`FieldNames::slots`].
    pub const SETTINGS: [&'static str; 7] = [
        "id",
        "iban",
        "bic",
        "bank",
        "kontoinhaber",
        "ist_standard",
        "ist_aktiv",
    ];

    pub fn get_mut(&mut self, name: &str) -> Option<&mut String> {
        let index = Self::SETTINGS.iter().position(|n| *n == name)?;
        let slots = [
            &mut self.id,
            &mut self.iban,
            &mut self.bic,
            &mut self.bank,
            &mut self.kontoinhaber,
            &mut self.ist_standard,
            &mut self.ist_aktiv,
        ];
        slots.into_iter().nth(index)
    }

    fn slots(&self) -> [&String; 7] {
        [
            &self.id,
            &self.iban,
            &self.bic,
            &self.bank,
            &self.kontoinhaber,
            &self.ist_standard,
            &self.ist_aktiv,
        ]
    }

    /// `id` and `iban` are required; names are JSON attribute names (letters, digits, `_`);
    /// no name twice.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = BTreeMap::new();
        for (setting, name) in Self::SETTINGS.iter().zip(self.slots()) {
            let var = format!(
                "bankverbindungen.fields.{setting} / BANKVERBINDUNGEN_FIELD_{}",
                setting.to_ascii_uppercase()
            );
            if name.is_empty() {
                if matches!(*setting, "id" | "iban") {
                    out.push(format!("{var}: must not be empty"));
                }
                continue;
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push(format!(
                    "{var}: {name:?} is not an attribute name (letters, digits, _)"
                ));
            }
            if let Some(other) = seen.insert(name.clone(), *setting) {
                out.push(format!("{var}: {name:?} is also used by {other}"));
            }
        }
        out
    }
}

/// A `CBankverbindungen` record as the sync reads it. Fields are loose (strings, options):
/// bad values become a clear `failed`, never a failed decode.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EspoBankverbindung {
    pub id: String,
    #[serde(default)]
    pub iban: Option<String>,
    #[serde(default)]
    pub bic: Option<String>,
    #[serde(default)]
    pub kontoinhaber: Option<String>,
    #[serde(default)]
    pub bankname: Option<String>,
    #[serde(default)]
    pub ist_aktiv: Option<bool>,
    #[serde(default)]
    pub ist_standard: Option<bool>,
    /// Advoware's id of the entry (number or string in EspoCRM).
    #[serde(default)]
    pub advoware_konto_id: Option<Value>,
    #[serde(default)]
    pub sync_status: Option<String>,
    #[serde(default)]
    pub sync_error_message: Option<String>,
    #[serde(default)]
    pub beteiligte_id: Option<String>,
}

impl EspoBankverbindung {
    /// `syncStatus` (`""`, unknown → `None`).
    pub fn status(&self) -> Option<SyncStatus> {
        self.sync_status.as_deref().and_then(|s| s.parse().ok())
    }

    /// The stored Advoware id, if any (`null`, `""`, `0` mean none).
    pub fn konto_id(&self) -> Option<KontoId> {
        self.advoware_konto_id.as_ref().and_then(KontoId::from_json)
    }
}

/// Advoware's id of a Bankverbindung: kept as text (a number in every example, but the API
/// is not documented; a string id must work too).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KontoId(String);

impl KontoId {
    pub fn new(s: &str) -> Option<Self> {
        let s = s.trim();
        let ok = !s.is_empty()
            && s != "0"
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then(|| Self(s.to_owned()))
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => Self::new(&n.to_string()),
            Value::String(s) => Self::new(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As EspoCRM's `advowareKontoId` gets it: a number when it is one.
    pub fn to_json(&self) -> Value {
        self.0
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(self.0.clone()))
    }
}

impl std::fmt::Display for KontoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The content both sides are compared by. `Debug` masks the IBAN.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BankData {
    pub iban: Iban,
    /// Upper case, no spaces; `None` when empty (SEPA needs no BIC).
    pub bic: Option<String>,
    pub bank: Option<String>,
    pub kontoinhaber: Option<String>,
    pub ist_standard: Option<bool>,
    pub ist_aktiv: Option<bool>,
}

/// Why a record's bank data cannot be synced. `Display` is safe to log (masked IBAN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankDataError {
    #[error("{0}")]
    Iban(#[from] IbanError),
    #[error("{0}")]
    Bic(#[from] BicError),
}

fn text(v: Option<&str>) -> Option<String> {
    v.map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
}

/// EspoCRM → [`BankData`]: IBAN and BIC checked. `fields` decides which flags are synced.
pub fn espo_to_data(
    e: &EspoBankverbindung,
    fields: &FieldNames,
) -> Result<BankData, BankDataError> {
    let iban = Iban::parse(e.iban.as_deref().unwrap_or(""))?;
    let bic = match text(e.bic.as_deref()) {
        Some(b) => Some(parse_bic(&b)?),
        None => None,
    };
    Ok(BankData {
        iban,
        bic,
        bank: text(e.bankname.as_deref()),
        kontoinhaber: text(e.kontoinhaber.as_deref()),
        ist_standard: (!fields.ist_standard.is_empty()).then_some(e.ist_standard.unwrap_or(false)),
        ist_aktiv: (!fields.ist_aktiv.is_empty()).then_some(e.ist_aktiv.unwrap_or(true)),
    })
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    v.get(name).and_then(Value::as_str)
}

fn bool_field(v: &Value, name: &str) -> Option<bool> {
    if name.is_empty() {
        return None;
    }
    match v.get(name)? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_i64() != Some(0)),
        _ => None,
    }
}

/// Advoware entry → [`BankData`]. Its IBAN is checked too: a broken one typed in Advoware is
/// never copied into EspoCRM.
pub fn advoware_to_data(v: &Value, fields: &FieldNames) -> Result<BankData, BankDataError> {
    let iban = Iban::parse(str_field(v, &fields.iban).unwrap_or(""))?;
    let bic = match text(str_field(v, &fields.bic)) {
        Some(b) => Some(parse_bic(&b)?),
        None => None,
    };
    Ok(BankData {
        iban,
        bic,
        bank: text(str_field(v, &fields.bank)),
        kontoinhaber: text(str_field(v, &fields.kontoinhaber)),
        ist_standard: (!fields.ist_standard.is_empty())
            .then(|| bool_field(v, &fields.ist_standard).unwrap_or(false)),
        ist_aktiv: (!fields.ist_aktiv.is_empty())
            .then(|| bool_field(v, &fields.ist_aktiv).unwrap_or(true)),
    })
}

/// The id of an Advoware entry.
pub fn advoware_id(v: &Value, fields: &FieldNames) -> Option<KontoId> {
    v.get(&fields.id).and_then(KontoId::from_json)
}

/// The Advoware body for `data`: `current` (the entry as read, for a `PUT`) with the synced
/// fields replaced; a new entry has only them. The id is never sent in a `POST`.
pub fn to_advoware(current: Option<&Value>, data: &BankData, fields: &FieldNames) -> Value {
    let mut body = match current {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let mut put = |name: &str, value: Value| {
        if !name.is_empty() {
            body.insert(name.to_owned(), value);
        }
    };
    let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    put(&fields.iban, Value::String(data.iban.expose().to_owned()));
    put(&fields.bic, opt(&data.bic));
    put(&fields.bank, opt(&data.bank));
    put(&fields.kontoinhaber, opt(&data.kontoinhaber));
    if let Some(b) = data.ist_standard {
        put(&fields.ist_standard, Value::Bool(b));
    }
    if let Some(b) = data.ist_aktiv {
        put(&fields.ist_aktiv, Value::Bool(b));
    }
    if current.is_none() {
        body.remove(&fields.id);
    }
    Value::Object(body)
}

/// The EspoCRM attributes for `data` (the Advoware → EspoCRM direction).
pub fn to_espo_patch(data: &BankData) -> Map<String, Value> {
    let mut m = Map::new();
    let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    m.insert(
        espo_fields::IBAN.into(),
        Value::String(data.iban.expose().to_owned()),
    );
    m.insert(espo_fields::BIC.into(), opt(&data.bic));
    m.insert(espo_fields::BANKNAME.into(), opt(&data.bank));
    m.insert(espo_fields::KONTOINHABER.into(), opt(&data.kontoinhaber));
    if let Some(b) = data.ist_standard {
        m.insert(espo_fields::IST_STANDARD.into(), Value::Bool(b));
    }
    if let Some(b) = data.ist_aktiv {
        m.insert(espo_fields::IST_AKTIV.into(), Value::Bool(b));
    }
    m
}

/// SHA-256 over the compared content: the base of the next 3-way decision, stored in Redis
/// (a hash, so Redis never holds the IBAN).
pub fn content_hash(d: &BankData) -> String {
    let mut h = Sha256::new();
    for part in [
        Some(d.iban.expose()),
        d.bic.as_deref(),
        d.bank.as_deref(),
        d.kontoinhaber.as_deref(),
    ] {
        h.update(part.unwrap_or("\u{0}").as_bytes());
        h.update([0x1f]);
    }
    for flag in [d.ist_standard, d.ist_aktiv] {
        h.update(match flag {
            None => b"-",
            Some(true) => b"1",
            Some(false) => b"0",
        });
    }
    hex::encode(h.finalize())
}

/// The entry of `list` whose IBAN is `iban` (adopting an entry our lost `POST` created, or one
/// a person already typed in Advoware, instead of creating a second one).
pub fn find_by_iban<'a>(list: &'a [Value], iban: &Iban, fields: &FieldNames) -> Option<&'a Value> {
    list.iter().find(|v| {
        str_field(v, &fields.iban).is_some_and(|s| {
            s.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .eq_ignore_ascii_case(iban.expose())
        })
    })
}

/// The entry of `list` with id `id`.
pub fn find_by_id<'a>(list: &'a [Value], id: &KontoId, fields: &FieldNames) -> Option<&'a Value> {
    list.iter()
        .find(|v| advoware_id(v, fields).as_ref() == Some(id))
}

/// What a run of a linked record writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Equal content.
    NoChange,
    /// EspoCRM changed (or both did: EspoCRM, where the webhook came from, wins; `conflict`).
    WriteAdvoware { conflict: bool },
    /// Only Advoware changed since the last sync.
    WriteEspocrm,
}

/// 3-way: `base` is [`content_hash`] after the last sync. Without a base EspoCRM wins.
pub fn decide(espo: &BankData, advoware: &BankData, base: Option<&str>) -> Decision {
    if espo == advoware {
        return Decision::NoChange;
    }
    let espo_hash = content_hash(espo);
    let adv_hash = content_hash(advoware);
    match base {
        Some(b) if b == espo_hash => Decision::WriteEspocrm,
        Some(b) if b == adv_hash => Decision::WriteAdvoware { conflict: false },
        Some(_) => Decision::WriteAdvoware { conflict: true },
        None => Decision::WriteAdvoware { conflict: false },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn espo(v: Value) -> EspoBankverbindung {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn espo_record_maps_with_checks() {
        let f = FieldNames::default();
        let e = espo(
            json!({"id": "b1", "iban": "de89 3704 0044 0532 0130 00", "bic": "cobadeffxxx",
            "bankname": "  Commerzbank ", "kontoinhaber": "Erika  Mustermann", "istStandard": true,
            "advowareKontoId": 7, "beteiligteId": "bet1", "syncStatus": ""}),
        );
        let d = espo_to_data(&e, &f).unwrap();
        assert_eq!(d.iban.expose(), "DE89370400440532013000");
        assert_eq!(d.bic.as_deref(), Some("COBADEFFXXX"));
        assert_eq!(d.bank.as_deref(), Some("Commerzbank"));
        assert_eq!(d.kontoinhaber.as_deref(), Some("Erika Mustermann"));
        assert_eq!(d.ist_standard, None, "not synced by default");
        assert_eq!(e.konto_id(), KontoId::new("7"));
        assert_eq!(e.status(), None);
        let body = to_advoware(None, &d, &f);
        assert_eq!(
            body,
            json!({"iban": "DE89370400440532013000", "bic": "COBADEFFXXX", "bank": "Commerzbank",
                "kontoinhaber": "Erika Mustermann"})
        );
        assert_eq!(advoware_to_data(&body, &f).unwrap(), d);
    }

    #[test]
    fn invalid_iban_or_bic_is_an_error_that_masks() {
        let f = FieldNames::default();
        let e = espo(json!({"id": "b1", "iban": "DE89370400440532013001"}));
        let err = espo_to_data(&e, &f).unwrap_err();
        assert!(matches!(
            err,
            BankDataError::Iban(IbanError::Checksum { .. })
        ));
        assert!(!err.to_string().contains("370400440532013001"));
        let e = espo(json!({"id": "b1", "iban": "DE89370400440532013000", "bic": "COBA"}));
        assert!(matches!(espo_to_data(&e, &f), Err(BankDataError::Bic(_))));
        let e = espo(json!({"id": "b1"}));
        assert!(matches!(
            espo_to_data(&e, &f),
            Err(BankDataError::Iban(IbanError::Empty))
        ));
    }

    #[test]
    fn configured_names_are_used_and_unknown_fields_survive_a_put() {
        let mut f = FieldNames::default();
        *f.get_mut("bank").unwrap() = "bankName".into();
        *f.get_mut("ist_standard").unwrap() = "standard".into();
        let e = espo(
            json!({"id": "b1", "iban": "GB82WEST12345698765432", "bankname": "West",
            "istStandard": true}),
        );
        let d = espo_to_data(&e, &f).unwrap();
        let current = json!({"id": 12, "iban": "GB82WEST12345698765432", "bankName": "Old",
            "rowId": "AAA", "blz": "37040044"});
        let body = to_advoware(Some(&current), &d, &f);
        assert_eq!(body["id"], 12);
        assert_eq!(body["rowId"], "AAA");
        assert_eq!(body["blz"], "37040044");
        assert_eq!(body["bankName"], "West");
        assert_eq!(body["standard"], true);
        assert!(body.get("bank").is_none());
        let patch = to_espo_patch(&advoware_to_data(&body, &f).unwrap());
        assert_eq!(patch["bankname"], "West");
        assert_eq!(patch["istStandard"], true);
    }

    #[test]
    fn field_name_problems_are_listed() {
        let mut f = FieldNames::default();
        assert!(f.problems().is_empty());
        *f.get_mut("iban").unwrap() = String::new();
        *f.get_mut("bic").unwrap() = "b ic".into();
        *f.get_mut("bank").unwrap() = "kontoinhaber".into();
        let p = f.problems().join("\n");
        assert!(p.contains("fields.iban"), "{p}");
        assert!(p.contains("fields.bic"), "{p}");
        assert!(p.contains("also used by bank"), "{p}");
        assert!(f.get_mut("nope").is_none());
    }

    #[test]
    fn finds_entries_by_iban_and_id() {
        let f = FieldNames::default();
        let list = vec![
            json!({"id": 1, "iban": "GB82 WEST 1234 5698 7654 32"}),
            json!({"id": "2", "iban": "DE89370400440532013000"}),
        ];
        let iban = Iban::parse("gb82west12345698765432").unwrap();
        assert_eq!(find_by_iban(&list, &iban, &f).unwrap()["id"], 1);
        assert_eq!(
            find_by_id(&list, &KontoId::new("2").unwrap(), &f).unwrap()["id"],
            "2"
        );
        assert!(find_by_id(&list, &KontoId::new("3").unwrap(), &f).is_none());
        assert_eq!(KontoId::new("0"), None);
        assert_eq!(KontoId::new("12").unwrap().to_json(), json!(12));
        assert_eq!(KontoId::new("a-1").unwrap().to_json(), json!("a-1"));
    }

    #[test]
    fn three_way_decision() {
        let f = FieldNames::default();
        let a =
            advoware_to_data(&json!({"iban": "DE89370400440532013000", "bank": "A"}), &f).unwrap();
        let b =
            advoware_to_data(&json!({"iban": "DE89370400440532013000", "bank": "B"}), &f).unwrap();
        let c =
            advoware_to_data(&json!({"iban": "DE89370400440532013000", "bank": "C"}), &f).unwrap();
        let ha = content_hash(&a);
        assert_eq!(decide(&a, &a, None), Decision::NoChange);
        // EspoCRM changed A → B, Advoware still A.
        assert_eq!(
            decide(&b, &a, Some(&ha)),
            Decision::WriteAdvoware { conflict: false }
        );
        // Advoware changed A → B, EspoCRM still A.
        assert_eq!(decide(&a, &b, Some(&ha)), Decision::WriteEspocrm);
        // Both changed: EspoCRM wins, flagged.
        assert_eq!(
            decide(&b, &c, Some(&ha)),
            Decision::WriteAdvoware { conflict: true }
        );
        assert_eq!(
            decide(&b, &a, None),
            Decision::WriteAdvoware { conflict: false }
        );
        assert_ne!(content_hash(&a), content_hash(&b));
        assert!(!ha.contains("DE89"));
    }
}
