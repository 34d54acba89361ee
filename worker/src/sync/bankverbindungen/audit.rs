//! `beteiligte audit`, Bankverbindungen part (issue 12 item 4): a Beteiligter's EspoCRM
//! `CBankverbindungen` against its Advoware entries, paired as the sync pairs them (the stored
//! `advowareKontoId`, else the same IBAN). Pure: the handler fetches both lists. Every line
//! masks IBANs (`DE89 **** **** **** **30 00`); the audit output is pasted into tickets.

use std::collections::BTreeSet;

use serde_json::Value;

use super::mapping::{
    advoware_id, advoware_to_data, espo_to_data, find_by_iban, find_by_id, BankData,
    EspoBankverbindung, FieldNames, KontoId,
};
use super::{mask, mask_ibans};
use crate::sync::beteiligte::SyncStatus;

/// One line of the audit: a difference (counts for the exit status) or information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Diff(String),
    Info(String),
}

/// The fields compared, by name, as printable values (IBAN masked).
fn shown(d: &BankData) -> [(&'static str, String); 6] {
    let opt = |s: &Option<String>| {
        s.as_deref()
            .map_or("(none)".to_owned(), |s| format!("{s:?}"))
    };
    let flag = |b: Option<bool>| b.map_or("(not synced)".to_owned(), |b| b.to_string());
    [
        ("iban", d.iban.masked()),
        ("bic", opt(&d.bic)),
        ("bank", opt(&d.bank)),
        ("kontoinhaber", opt(&d.kontoinhaber)),
        ("istStandard", flag(d.ist_standard)),
        ("istAktiv", flag(d.ist_aktiv)),
    ]
}

/// The IBAN of an Advoware entry for a message: masked, also when it is not a valid IBAN.
fn advoware_iban(v: &Value, fields: &FieldNames) -> String {
    match advoware_to_data(v, fields) {
        Ok(d) => d.iban.masked(),
        Err(_) => v
            .get(&fields.iban)
            .and_then(Value::as_str)
            .map_or("(no IBAN)".to_owned(), mask),
    }
}

/// Compares `espo` (the Beteiligter's records) with `advoware` (its entries; `None` when the
/// Beteiligter has no `betnr` or Advoware does not know it: everything is missing there).
pub fn compare(
    espo: &[EspoBankverbindung],
    advoware: Option<&[Value]>,
    fields: &FieldNames,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut paired: BTreeSet<KontoId> = BTreeSet::new();
    let list = advoware.unwrap_or(&[]);
    let mut records: Vec<&EspoBankverbindung> = espo.iter().collect();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for e in records {
        let data = espo_to_data(e, fields);
        let label = match &data {
            Ok(d) => format!("Bankverbindung {} ({})", e.id, d.iban.masked()),
            Err(_) => format!("Bankverbindung {}", e.id),
        };
        let status = e.status();
        if status != Some(SyncStatus::Clean) {
            out.push(Finding::Diff(format!(
                "{label}: syncStatus is {} (error: {})",
                status.map_or("(none)", SyncStatus::as_str),
                mask_ibans(e.sync_error_message.as_deref().unwrap_or("-"))
            )));
        }
        if let Err(err) = &data {
            // The error's `Display` masks the IBAN.
            out.push(Finding::Diff(format!(
                "{label}: EspoCRM data cannot be synced: {err}"
            )));
        }
        if advoware.is_none() {
            out.push(Finding::Diff(format!(
                "{label}: missing in Advoware (the Beteiligter is not in Advoware)"
            )));
            continue;
        }
        let by_id = e.konto_id().and_then(|k| find_by_id(list, &k, fields));
        let entry = match (by_id, e.konto_id(), &data) {
            (Some(v), _, _) => Some(v),
            (None, linked, Ok(d)) => {
                let same_iban = find_by_iban(list, &d.iban, fields)
                    .filter(|v| advoware_id(v, fields).is_none_or(|k| !paired.contains(&k)));
                let what = match &linked {
                    Some(k) => format!("linked to Advoware entry {k}, which does not exist"),
                    None => "not linked to Advoware".to_owned(),
                };
                match same_iban.map(|v| (v, advoware_id(v, fields))) {
                    Some((v, k)) => {
                        out.push(Finding::Diff(format!(
                            "{label}: {what}; Advoware entry {} has the same IBAN",
                            k.map_or("(no id)".to_owned(), |k| k.to_string())
                        )));
                        Some(v)
                    }
                    None => {
                        out.push(Finding::Diff(format!(
                            "{label}: missing in Advoware ({what})"
                        )));
                        None
                    }
                }
            }
            (None, linked, Err(_)) => {
                out.push(Finding::Diff(format!(
                    "{label}: missing in Advoware ({})",
                    linked.map_or("not linked".to_owned(), |k| format!(
                        "linked to entry {k}, which does not exist"
                    ))
                )));
                None
            }
        };
        let Some(entry) = entry else { continue };
        let konto = advoware_id(entry, fields);
        if let Some(k) = &konto {
            paired.insert(k.clone());
        }
        let konto = konto.map_or("(no id)".to_owned(), |k| k.to_string());
        let Ok(d) = &data else { continue };
        match advoware_to_data(entry, fields) {
            Err(err) => out.push(Finding::Diff(format!(
                "{label}: Advoware entry {konto} cannot be mapped: {err}"
            ))),
            Ok(a) => {
                let mut equal = true;
                for ((name, ev), (_, av)) in shown(d).into_iter().zip(shown(&a)) {
                    if ev != av {
                        equal = false;
                        out.push(Finding::Diff(format!(
                            "{label} {name}: EspoCRM {ev} | Advoware {av} (entry {konto})"
                        )));
                    }
                }
                if equal {
                    out.push(Finding::Info(format!(
                        "{label}: equal to Advoware entry {konto}"
                    )));
                }
            }
        }
    }
    for v in list {
        let konto = advoware_id(v, fields);
        if konto.as_ref().is_some_and(|k| paired.contains(k)) {
            continue;
        }
        out.push(Finding::Diff(format!(
            "Bankverbindung only in Advoware: entry {} ({})",
            konto.map_or("(no id)".to_owned(), |k| k.to_string()),
            advoware_iban(v, fields)
        )));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::*;

    const IBAN: &str = "DE89370400440532013000";
    const MASKED: &str = "DE89 **** **** **** **30 00";
    const OTHER: &str = "GB82WEST12345698765432";

    fn espo(id: &str, iban: &str, konto: Option<i64>, bank: &str) -> EspoBankverbindung {
        serde_json::from_value(json!({
            "id": id, "iban": iban, "bic": "COBADEFFXXX", "bankname": bank,
            "kontoinhaber": "Erika Mustermann", "advowareKontoId": konto,
            "syncStatus": "clean", "beteiligteId": "b1",
        }))
        .unwrap()
    }

    fn adv(id: i64, iban: &str, bank: &str) -> Value {
        json!({"id": id, "iban": iban, "bic": "COBADEFFXXX", "bank": bank,
            "kontoinhaber": "Erika Mustermann"})
    }

    fn diffs(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter_map(|f| match f {
                Finding::Diff(s) => Some(s.as_str()),
                Finding::Info(_) => None,
            })
            .collect()
    }

    fn assert_masked(f: &[Finding]) {
        for line in f {
            let s = format!("{line:?}");
            for leak in [IBAN, OTHER, "3704 0044", "37040044", "WEST1234"] {
                assert!(!s.contains(leak), "{leak} in {s}");
            }
        }
    }

    #[test]
    fn in_sync_has_no_difference() {
        let f = compare(
            &[espo("e1", IBAN, Some(7), "Commerzbank")],
            Some(&[adv(7, IBAN, "Commerzbank")]),
            &FieldNames::default(),
        );
        assert!(diffs(&f).is_empty(), "{f:?}");
        assert_eq!(f.len(), 1);
        assert_masked(&f);
    }

    #[test]
    fn differing_field_missing_and_advoware_only_entries_are_differences() {
        let f = compare(
            &[
                espo("e1", IBAN, Some(7), "Commerzbank"),
                espo("e2", OTHER, None, "Westminster"),
            ],
            Some(&[
                adv(7, IBAN, "Deutsche Bank"),
                adv(9, "DE02120300000000202051", "X"),
            ]),
            &FieldNames::default(),
        );
        let d = diffs(&f);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(
            d[0].contains("e1")
                && d[0].contains("bank: EspoCRM \"Commerzbank\" | Advoware \"Deutsche Bank\""),
            "{}",
            d[0]
        );
        assert!(d[0].contains(MASKED), "{}", d[0]);
        assert!(
            d[1].contains("e2") && d[1].contains("missing in Advoware (not linked"),
            "{}",
            d[1]
        );
        assert!(
            d[2].contains("only in Advoware: entry 9 (DE02 **** **** **** **20 51)"),
            "{}",
            d[2]
        );
        assert_masked(&f);
    }

    #[test]
    fn an_unlinked_record_with_the_iban_in_advoware_is_paired_and_reported() {
        let f = compare(
            &[espo("e1", IBAN, None, "Commerzbank")],
            Some(&[adv(7, IBAN, "Commerzbank")]),
            &FieldNames::default(),
        );
        let d = diffs(&f);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(d[0].contains("not linked to Advoware; Advoware entry 7 has the same IBAN"));
    }

    #[test]
    fn without_advoware_everything_is_missing_and_bad_data_is_masked() {
        let mut bad = espo("e2", "DE89370400440532013001", None, "X");
        bad.sync_status = Some("failed".into());
        bad.sync_error_message = Some(format!("IBAN {IBAN} invalid"));
        let f = compare(
            &[espo("e1", IBAN, None, "Commerzbank"), bad],
            None,
            &FieldNames::default(),
        );
        let d = diffs(&f);
        assert_eq!(d.len(), 4, "{d:#?}");
        assert!(d[0].contains("missing in Advoware"));
        assert!(
            d[1].contains("syncStatus is failed") && d[1].contains(MASKED),
            "{}",
            d[1]
        );
        assert!(d[2].contains("cannot be synced"));
        assert_masked(&f);
    }

    #[test]
    fn a_broken_advoware_iban_is_still_masked() {
        let f = compare(
            &[],
            Some(&[json!({"id": 3, "iban": "DE89370400440532013001"})]),
            &FieldNames::default(),
        );
        let d = diffs(&f);
        assert_eq!(d.len(), 1);
        assert!(!d[0].contains("0532013001"), "{}", d[0]);
    }
}
