//! Adressen (issue 12, pure part): EspoCRM `CAdressen` records of a `CBeteiligte` ↔ Advoware
//! `adressen[]` of the Beteiligter, both directions.
//!
//! What Advoware allows decides the shape (FACTS §1): a `POST` sets every field, a `PUT` changes
//! only `strasse`, `plz`, `ort` and `anschrift` ([`Field::writable`]), a `DELETE` answers 403.
//! What the API cannot do becomes a [`ManualTask`] — an EspoCRM notification naming the
//! Beteiligter, the field, the old and the new value, and a `syncStatus` (`conflict` with the
//! open tasks in `syncErrorMessage`) — never a silent skip and never a retry loop: a task is
//! notified once (its key is remembered in the base) and stays open, without writes, as long as
//! the difference exists.
//!
//! Pairing: an Advoware address we created carries `[ESPOCRM:<EspoCRM id>]` at the start of its
//! `bemerkung` (set by the `POST`; `bemerkung` cannot be changed by `PUT`); pairs made earlier
//! live in the base; an address added on one side is paired with an unpaired one on the other
//! side holding the same `strasse`/`plz`/`ort` (so a lost answer never makes a duplicate).
//!
//! Change detection is 3-way per field against the base, which keeps what *each* side held
//! after the last sync ([`AdresseBase::espo`], [`AdresseBase::advoware`]): after a read-only
//! field could not be written the two differ, and neither counts as changed until one of them
//! moves again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::status::ConflictPolicy;

/// An address field synced between both sides (same name on both, uncertain: see README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    Strasse,
    Plz,
    Ort,
    Land,
    Zusatz,
    Anschrift,
}

impl Field {
    pub const ALL: [Field; 6] = [
        Self::Strasse,
        Self::Plz,
        Self::Ort,
        Self::Land,
        Self::Zusatz,
        Self::Anschrift,
    ];

    /// The attribute name on both sides.
    pub fn name(self) -> &'static str {
        match self {
            Self::Strasse => "strasse",
            Self::Plz => "plz",
            Self::Ort => "ort",
            Self::Land => "land",
            Self::Zusatz => "zusatz",
            Self::Anschrift => "anschrift",
        }
    }

    /// Whether Advoware's `PUT` changes it (FACTS §1: only these four).
    pub fn writable(self) -> bool {
        matches!(
            self,
            Self::Strasse | Self::Plz | Self::Ort | Self::Anschrift
        )
    }
}

/// The synced fields of one address; absent and empty are the same (`None`).
pub type Fields = BTreeMap<Field, String>;

/// Reads the synced fields from a JSON object (both sides use the same names).
pub fn fields_of(v: &serde_json::Value) -> Fields {
    Field::ALL
        .into_iter()
        .filter_map(|f| {
            let s = v.get(f.name())?.as_str()?.trim();
            (!s.is_empty()).then(|| (f, s.to_owned()))
        })
        .collect()
}

/// One EspoCRM address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspoAdresse {
    pub id: String,
    pub fields: Fields,
}

/// One Advoware address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvowareAdresse {
    pub id: i64,
    pub fields: Fields,
    pub bemerkung: Option<String>,
}

/// A pair after the last sync, with what each side held then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdresseBase {
    pub espo_id: String,
    pub advoware_id: i64,
    pub espo: Fields,
    pub advoware: Fields,
}

/// The whole stored state of one Beteiligter's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdressenBase {
    pub pairs: Vec<AdresseBase>,
    /// Keys of the tasks already notified ([`ManualTask::key`]).
    #[serde(default)]
    pub notified: BTreeSet<String>,
}

const MARKER_PREFIX: &str = "[ESPOCRM:";

/// `[ESPOCRM:<id>]`: the marker our `POST` puts in `bemerkung`.
pub fn marker(espo_id: &str) -> String {
    format!("{MARKER_PREFIX}{espo_id}]")
}

/// The EspoCRM id in a `bemerkung` starting with our marker (ids are 17 hex characters; a
/// Kommunikation marker `[ESPOCRM:b64:kz]` has a colon and is not one).
pub fn marker_id(bemerkung: Option<&str>) -> Option<&str> {
    let rest = bemerkung?.strip_prefix(MARKER_PREFIX)?;
    let (id, _) = rest.split_once(']')?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then_some(id)
}

/// What the API cannot do; a person does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// A field changed in EspoCRM that Advoware's `PUT` cannot change.
    ReadOnlyField {
        field: Field,
        /// Advoware's value (what stays).
        old: Option<String>,
        /// EspoCRM's value (what was wanted).
        new: Option<String>,
    },
    /// Changed on both sides, policy `manual`.
    Conflict {
        field: Field,
        espo: Option<String>,
        advoware: Option<String>,
    },
    /// Deleted in EspoCRM; Advoware refuses DELETE (403).
    DeletedInEspocrm,
    /// Gone in Advoware; EspoCRM keeps it until a person decides.
    GoneInAdvoware,
}

/// One open manual task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualTask {
    pub espo_id: Option<String>,
    pub advoware_id: Option<i64>,
    pub kind: TaskKind,
    /// The address as one line (Advoware's where it exists), to name it.
    pub label: String,
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(leer)")
}

impl ManualTask {
    /// Stable identity (values included: a different wanted value is a new task).
    pub fn key(&self) -> String {
        let ids = format!(
            "{}/{}",
            self.espo_id.as_deref().unwrap_or("-"),
            self.advoware_id.map_or("-".into(), |i| i.to_string())
        );
        match &self.kind {
            TaskKind::ReadOnlyField { field, old, new } => {
                format!("ro:{ids}:{}:{}:{}", field.name(), show(old), show(new))
            }
            TaskKind::Conflict {
                field,
                espo,
                advoware,
            } => format!(
                "conflict:{ids}:{}:{}:{}",
                field.name(),
                show(espo),
                show(advoware)
            ),
            TaskKind::DeletedInEspocrm => format!("deleted:{ids}"),
            TaskKind::GoneInAdvoware => format!("gone:{ids}"),
        }
    }

    /// The notification text, naming the Beteiligter, the field, the old and the new value.
    pub fn message(&self, beteiligter: &str) -> String {
        let adr = &self.label;
        match &self.kind {
            TaskKind::ReadOnlyField { field, old, new } => format!(
                "Beteiligter {beteiligter}, Adresse {adr}: Feld {} ist in Advoware nicht änderbar (alt: {}, neu: {}); bitte in Advoware manuell ändern.",
                field.name(), show(old), show(new)
            ),
            TaskKind::Conflict { field, espo, advoware } => format!(
                "Beteiligter {beteiligter}, Adresse {adr}: Feld {} in beiden Systemen geändert (EspoCRM: {}, Advoware: {}); bitte manuell abgleichen.",
                field.name(), show(espo), show(advoware)
            ),
            TaskKind::DeletedInEspocrm => format!(
                "Beteiligter {beteiligter}, Adresse {adr}: in EspoCRM gelöscht; Advoware erlaubt kein Löschen (403), bitte in Advoware manuell entfernen."
            ),
            TaskKind::GoneInAdvoware => format!(
                "Beteiligter {beteiligter}, Adresse {adr}: in Advoware nicht mehr vorhanden; bitte in EspoCRM prüfen und gegebenenfalls löschen."
            ),
        }
    }
}

/// One address as a line: `strasse, plz ort`.
pub fn label(f: &Fields) -> String {
    let g = |x: Field| f.get(&x).map_or("", String::as_str);
    format!("{}, {} {}", g(Field::Strasse), g(Field::Plz), g(Field::Ort))
        .trim_matches([',', ' '])
        .to_owned()
}

/// A write of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `POST` a new Advoware address: every field, `bemerkung` = marker.
    AdvowarePost { espo_id: String, fields: Fields },
    /// `PUT` the writable fields (`fields` is the whole address after it, as Advoware keeps it).
    AdvowarePut { advoware_id: i64, fields: Fields },
    /// Create a `CAdressen` record linked to the Beteiligter.
    EspoCreate { advoware_id: i64, fields: Fields },
    /// Update a `CAdressen` record (all synced fields).
    EspoUpdate { espo_id: String, fields: Fields },
}

/// The result of [`diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// Every open task (the status says so while any is open).
    pub tasks: Vec<ManualTask>,
    /// The base after the writes; pairs of `AdvowarePost`/`EspoCreate` are added by the caller
    /// with the new id ([`base_entry`]). `notified` = the keys of `tasks`.
    pub base: AdressenBase,
}

impl Plan {
    /// Tasks not notified before (`previous`: the stored base's `notified`).
    pub fn new_tasks<'a>(&'a self, previous: &'a BTreeSet<String>) -> Vec<&'a ManualTask> {
        self.tasks
            .iter()
            .filter(|t| !previous.contains(&t.key()))
            .collect()
    }
}

/// The base entry of a newly created pair (both sides hold `fields`).
pub fn base_entry(espo_id: &str, advoware_id: i64, fields: &Fields) -> AdresseBase {
    AdresseBase {
        espo_id: espo_id.to_owned(),
        advoware_id,
        espo: fields.clone(),
        advoware: fields.clone(),
    }
}

/// Pairing key for addresses added on both sides: street, postcode, town, compared loosely.
fn value_key(f: &Fields) -> Option<String> {
    let g = |x: Field| {
        f.get(&x)
            .map(|s| s.trim().to_lowercase().replace(' ', ""))
            .unwrap_or_default()
    };
    let k = format!("{}|{}|{}", g(Field::Strasse), g(Field::Plz), g(Field::Ort));
    (k != "||").then_some(k)
}

/// The 3-way diff of one Beteiligter's addresses (module docs).
pub fn diff(
    espo: &[EspoAdresse],
    advoware: &[AdvowareAdresse],
    base: &AdressenBase,
    policy: ConflictPolicy,
) -> Plan {
    let espo_by: BTreeMap<&str, &EspoAdresse> = espo.iter().map(|e| (e.id.as_str(), e)).collect();
    let adv_by: BTreeMap<i64, &AdvowareAdresse> = advoware.iter().map(|a| (a.id, a)).collect();
    let mut plan = Plan::default();
    let mut used_espo: BTreeSet<&str> = BTreeSet::new();
    let mut used_adv: BTreeSet<i64> = BTreeSet::new();

    // Pairs: the base first, then markers, then equal street/postcode/town.
    let mut pairs: Vec<(
        Option<&EspoAdresse>,
        Option<&AdvowareAdresse>,
        Option<&AdresseBase>,
    )> = Vec::new();
    for b in &base.pairs {
        if used_espo.contains(b.espo_id.as_str()) || used_adv.contains(&b.advoware_id) {
            continue;
        }
        used_espo.insert(&b.espo_id);
        used_adv.insert(b.advoware_id);
        pairs.push((
            espo_by.get(b.espo_id.as_str()).copied(),
            adv_by.get(&b.advoware_id).copied(),
            Some(b),
        ));
    }
    for a in advoware {
        if used_adv.contains(&a.id) {
            continue;
        }
        if let Some(e) = marker_id(a.bemerkung.as_deref())
            .and_then(|id| espo_by.get(id))
            .filter(|e| !used_espo.contains(e.id.as_str()))
        {
            used_espo.insert(&e.id);
            used_adv.insert(a.id);
            pairs.push((Some(e), Some(a), None));
        }
    }
    for a in advoware {
        if used_adv.contains(&a.id) {
            continue;
        }
        let Some(k) = value_key(&a.fields) else {
            continue;
        };
        if let Some(e) = espo
            .iter()
            .find(|e| !used_espo.contains(e.id.as_str()) && value_key(&e.fields) == Some(k.clone()))
        {
            used_espo.insert(&e.id);
            used_adv.insert(a.id);
            pairs.push((Some(e), Some(a), None));
        }
    }

    for (e, a, b) in pairs {
        match (e, a) {
            (Some(e), Some(a)) => pair(&mut plan, e, a, b, policy),
            (None, Some(a)) => {
                // Deleted in EspoCRM: Advoware refuses DELETE. Keep the pair, open a task.
                plan.tasks.push(ManualTask {
                    espo_id: b.map(|b| b.espo_id.clone()),
                    advoware_id: Some(a.id),
                    kind: TaskKind::DeletedInEspocrm,
                    label: label(&a.fields),
                });
                if let Some(b) = b {
                    plan.base.pairs.push(b.clone());
                }
            }
            (Some(e), None) => {
                plan.tasks.push(ManualTask {
                    espo_id: Some(e.id.clone()),
                    advoware_id: b.map(|b| b.advoware_id),
                    kind: TaskKind::GoneInAdvoware,
                    label: label(&e.fields),
                });
                if let Some(b) = b {
                    plan.base.pairs.push(b.clone());
                }
            }
            // Gone on both sides: forgotten.
            (None, None) => {}
        }
    }
    for e in espo.iter().filter(|e| !used_espo.contains(e.id.as_str())) {
        plan.writes.push(Write::AdvowarePost {
            espo_id: e.id.clone(),
            fields: e.fields.clone(),
        });
    }
    for a in advoware.iter().filter(|a| !used_adv.contains(&a.id)) {
        plan.writes.push(Write::EspoCreate {
            advoware_id: a.id,
            fields: a.fields.clone(),
        });
    }
    plan.base.notified = plan.tasks.iter().map(ManualTask::key).collect();
    plan
}

/// One existing pair, field by field.
fn pair(
    plan: &mut Plan,
    e: &EspoAdresse,
    a: &AdvowareAdresse,
    b: Option<&AdresseBase>,
    policy: ConflictPolicy,
) {
    // A pair found without a base (marker or value): EspoCRM's content is the one to keep, as
    // after our own POST; Advoware's counts as unchanged.
    let (base_e, base_a) = match b {
        Some(b) => (b.espo.clone(), b.advoware.clone()),
        None => (a.fields.clone(), a.fields.clone()),
    };
    let mut adv_after = a.fields.clone();
    let mut espo_after = e.fields.clone();
    for f in Field::ALL {
        let ev = e.fields.get(&f).cloned();
        let av = a.fields.get(&f).cloned();
        if ev == av {
            continue;
        }
        let e_ch = ev != base_e.get(&f).cloned();
        let a_ch = av != base_a.get(&f).cloned();
        let espo_wins = match (e_ch, a_ch) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            (true, true) => match policy {
                ConflictPolicy::EspocrmWins => Some(true),
                ConflictPolicy::AdvowareWins => Some(false),
                ConflictPolicy::Manual => {
                    plan.tasks.push(ManualTask {
                        espo_id: Some(e.id.clone()),
                        advoware_id: Some(a.id),
                        kind: TaskKind::Conflict {
                            field: f,
                            espo: ev.clone(),
                            advoware: av.clone(),
                        },
                        label: label(&a.fields),
                    });
                    None
                }
            },
            // Neither moved since a difference was left: a task still open — a read-only field
            // EspoCRM wanted, or (writable) a conflict left under `manual`.
            (false, false) if f.writable() => {
                plan.tasks.push(ManualTask {
                    espo_id: Some(e.id.clone()),
                    advoware_id: Some(a.id),
                    kind: TaskKind::Conflict {
                        field: f,
                        espo: ev.clone(),
                        advoware: av.clone(),
                    },
                    label: label(&a.fields),
                });
                None
            }
            (false, false) => Some(true),
        };
        match espo_wins {
            Some(true) if f.writable() => set(&mut adv_after, f, ev),
            Some(true) => plan.tasks.push(ManualTask {
                espo_id: Some(e.id.clone()),
                advoware_id: Some(a.id),
                kind: TaskKind::ReadOnlyField {
                    field: f,
                    old: av,
                    new: ev,
                },
                label: label(&a.fields),
            }),
            Some(false) => set(&mut espo_after, f, av),
            None => {}
        }
    }
    if adv_after != a.fields {
        plan.writes.push(Write::AdvowarePut {
            advoware_id: a.id,
            fields: adv_after.clone(),
        });
    }
    if espo_after != e.fields {
        plan.writes.push(Write::EspoUpdate {
            espo_id: e.id.clone(),
            fields: espo_after.clone(),
        });
    }
    plan.base.pairs.push(AdresseBase {
        espo_id: e.id.clone(),
        advoware_id: a.id,
        espo: espo_after,
        advoware: adv_after,
    });
}

fn set(f: &mut Fields, field: Field, v: Option<String>) {
    match v {
        Some(v) => f.insert(field, v),
        None => f.remove(&field),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(Field, &str)]) -> Fields {
        pairs.iter().map(|(f, v)| (*f, (*v).to_owned())).collect()
    }

    fn home() -> Fields {
        fields(&[
            (Field::Strasse, "Hauptstr. 1"),
            (Field::Plz, "10115"),
            (Field::Ort, "Berlin"),
            (Field::Land, "DE"),
        ])
    }

    const E: &str = "64f0a1b2c3d4e5f60";

    fn espo(f: Fields) -> EspoAdresse {
        EspoAdresse {
            id: E.into(),
            fields: f,
        }
    }

    fn adv(f: Fields) -> AdvowareAdresse {
        AdvowareAdresse {
            id: 7,
            fields: f,
            bemerkung: Some(marker(E)),
        }
    }

    fn synced() -> AdressenBase {
        AdressenBase {
            pairs: vec![base_entry(E, 7, &home())],
            notified: BTreeSet::new(),
        }
    }

    fn with(mut f: Fields, field: Field, v: &str) -> Fields {
        f.insert(field, v.into());
        f
    }

    /// Every case of the issue, each with its writes and its notification text.
    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            espo: Vec<EspoAdresse>,
            adv: Vec<AdvowareAdresse>,
            base: AdressenBase,
            writes: Vec<Write>,
            /// Expected notification texts (Beteiligter "Mustermann, Erika (50001)").
            messages: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "new in EspoCRM → POST with every field and the marker",
                espo: vec![espo(home())],
                adv: vec![],
                base: AdressenBase::default(),
                writes: vec![Write::AdvowarePost {
                    espo_id: E.into(),
                    fields: home(),
                }],
                messages: vec![],
            },
            Case {
                name: "new in Advoware → created in EspoCRM",
                espo: vec![],
                adv: vec![AdvowareAdresse {
                    bemerkung: None,
                    ..adv(home())
                }],
                base: AdressenBase::default(),
                writes: vec![Write::EspoCreate {
                    advoware_id: 7,
                    fields: home(),
                }],
                messages: vec![],
            },
            Case {
                name: "unchanged → nothing",
                espo: vec![espo(home())],
                adv: vec![adv(home())],
                base: synced(),
                writes: vec![],
                messages: vec![],
            },
            Case {
                name: "writable field changed in EspoCRM → PUT",
                espo: vec![espo(with(home(), Field::Strasse, "Nebenstr. 2"))],
                adv: vec![adv(home())],
                base: synced(),
                writes: vec![Write::AdvowarePut {
                    advoware_id: 7,
                    fields: with(home(), Field::Strasse, "Nebenstr. 2"),
                }],
                messages: vec![],
            },
            Case {
                name: "writable field changed in Advoware → EspoCRM updated",
                espo: vec![espo(home())],
                adv: vec![adv(with(home(), Field::Ort, "Potsdam"))],
                base: synced(),
                writes: vec![Write::EspoUpdate {
                    espo_id: E.into(),
                    fields: with(home(), Field::Ort, "Potsdam"),
                }],
                messages: vec![],
            },
            Case {
                name: "read-only field changed in Advoware → EspoCRM updated (EspoCRM can)",
                espo: vec![espo(home())],
                adv: vec![adv(with(home(), Field::Land, "AT"))],
                base: synced(),
                writes: vec![Write::EspoUpdate {
                    espo_id: E.into(),
                    fields: with(home(), Field::Land, "AT"),
                }],
                messages: vec![],
            },
            Case {
                name: "read-only field changed in EspoCRM → manual task, no write",
                espo: vec![espo(with(home(), Field::Land, "AT"))],
                adv: vec![adv(home())],
                base: synced(),
                writes: vec![],
                messages: vec!["Beteiligter Mustermann, Erika (50001), Adresse Hauptstr. 1, 10115 Berlin: Feld land ist in Advoware nicht änderbar (alt: DE, neu: AT); bitte in Advoware manuell ändern."],
            },
            Case {
                name: "read-only and writable changed in EspoCRM → PUT the writable, task for the other",
                espo: vec![espo(with(with(home(), Field::Land, "AT"), Field::Plz, "10117"))],
                adv: vec![adv(home())],
                base: synced(),
                writes: vec![Write::AdvowarePut {
                    advoware_id: 7,
                    fields: with(home(), Field::Plz, "10117"),
                }],
                messages: vec!["Beteiligter Mustermann, Erika (50001), Adresse Hauptstr. 1, 10115 Berlin: Feld land ist in Advoware nicht änderbar (alt: DE, neu: AT); bitte in Advoware manuell ändern."],
            },
            Case {
                name: "deleted in EspoCRM → manual task (DELETE is 403), no write",
                espo: vec![],
                adv: vec![adv(home())],
                base: synced(),
                writes: vec![],
                messages: vec!["Beteiligter Mustermann, Erika (50001), Adresse Hauptstr. 1, 10115 Berlin: in EspoCRM gelöscht; Advoware erlaubt kein Löschen (403), bitte in Advoware manuell entfernen."],
            },
            Case {
                name: "gone in Advoware → manual task, EspoCRM kept",
                espo: vec![espo(home())],
                adv: vec![],
                base: synced(),
                writes: vec![],
                messages: vec!["Beteiligter Mustermann, Erika (50001), Adresse Hauptstr. 1, 10115 Berlin: in Advoware nicht mehr vorhanden; bitte in EspoCRM prüfen und gegebenenfalls löschen."],
            },
            Case {
                name: "lost POST answer: the marker pairs, no second POST",
                espo: vec![espo(home())],
                adv: vec![adv(home())],
                base: AdressenBase::default(),
                writes: vec![],
                messages: vec![],
            },
            Case {
                name: "added on both sides with the same street → paired, not duplicated",
                espo: vec![espo(home())],
                adv: vec![AdvowareAdresse {
                    bemerkung: None,
                    ..adv(with(home(), Field::Strasse, "Hauptstr.  1"))
                }],
                base: AdressenBase::default(),
                writes: vec![Write::AdvowarePut {
                    advoware_id: 7,
                    fields: home(),
                }],
                messages: vec![],
            },
        ];
        for c in cases {
            let plan = diff(&c.espo, &c.adv, &c.base, ConflictPolicy::EspocrmWins);
            assert_eq!(plan.writes, c.writes, "{}", c.name);
            let got: Vec<String> = plan
                .new_tasks(&c.base.notified)
                .iter()
                .map(|t| t.message("Mustermann, Erika (50001)"))
                .collect();
            assert_eq!(got, c.messages, "{}", c.name);
        }
    }

    /// A task is notified once: the next run with the stored base writes nothing and notifies
    /// nothing, but the task stays open until someone resolves it.
    #[test]
    fn a_task_is_notified_once_and_stays_open_until_resolved() {
        let e = vec![espo(with(home(), Field::Land, "AT"))];
        let a = vec![adv(home())];
        let first = diff(&e, &a, &synced(), ConflictPolicy::EspocrmWins);
        assert_eq!(first.new_tasks(&synced().notified).len(), 1);
        let second = diff(&e, &a, &first.base, ConflictPolicy::EspocrmWins);
        assert!(second.writes.is_empty());
        assert_eq!(second.tasks.len(), 1, "still open");
        assert!(second.new_tasks(&first.base.notified).is_empty());
        // Fixed by hand in Advoware: closed, EspoCRM and Advoware agree, nothing to write.
        let fixed = vec![adv(with(home(), Field::Land, "AT"))];
        let third = diff(&e, &fixed, &second.base, ConflictPolicy::EspocrmWins);
        assert!(third.tasks.is_empty() && third.writes.is_empty());
    }

    #[test]
    fn both_changed_follows_the_policy() {
        let e = vec![espo(with(home(), Field::Ort, "Hamburg"))];
        let a = vec![adv(with(home(), Field::Ort, "Potsdam"))];
        let put = |v: &str| Write::AdvowarePut {
            advoware_id: 7,
            fields: with(home(), Field::Ort, v),
        };
        let p = diff(&e, &a, &synced(), ConflictPolicy::EspocrmWins);
        assert_eq!(p.writes, vec![put("Hamburg")]);
        let p = diff(&e, &a, &synced(), ConflictPolicy::AdvowareWins);
        assert_eq!(
            p.writes,
            vec![Write::EspoUpdate {
                espo_id: E.into(),
                fields: with(home(), Field::Ort, "Potsdam")
            }]
        );
        let p = diff(&e, &a, &synced(), ConflictPolicy::Manual);
        assert!(p.writes.is_empty());
        // Left as it is on the next run too (not resolved by default), not notified again.
        let again = diff(&e, &a, &p.base, ConflictPolicy::Manual);
        assert!(again.writes.is_empty());
        assert_eq!(again.tasks.len(), 1);
        assert!(again.new_tasks(&p.base.notified).is_empty());
        assert_eq!(
            p.tasks[0].message("X"),
            "Beteiligter X, Adresse Hauptstr. 1, 10115 Potsdam: Feld ort in beiden Systemen geändert (EspoCRM: Hamburg, Advoware: Potsdam); bitte manuell abgleichen."
        );
    }

    #[test]
    fn markers_round_trip_and_kommunikation_markers_are_not_address_markers() {
        assert_eq!(marker_id(Some(&format!("{} Büro", marker(E)))), Some(E));
        assert_eq!(marker_id(Some("[ESPOCRM:YUBiLmRl:4] x")), None);
        assert_eq!(marker_id(Some("no marker")), None);
        assert_eq!(marker_id(None), None);
    }
}
