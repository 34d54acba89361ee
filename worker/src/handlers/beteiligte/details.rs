//! Kommunikation and Adressen of one Beteiligter (issue 12), run inside the engine's run for the
//! record — same lock, same status machine, same final EspoCRM write.
//!
//! A run *prepares* both (pure diffs against the bases in Redis, no I/O besides the EspoCRM
//! address list), the engine decides whether anything must be written at all, then *writes*
//! (Advoware first, EspoCRM's address records, then — folded into the engine's one status
//! write — the `emailAddressData`/`phoneNumberData` arrays) and *finishes* (new bases,
//! notifications).
//!
//! # Crash safety
//!
//! - Kommunikation: `komm_intent` is stored before the first Advoware write and removed with the
//!   new base after the EspoCRM write. A run that finds it diffs against the stored base alone:
//!   the markers of entries the interrupted run already wrote are not taken for "synced", so a
//!   value added in Advoware whose marker was written but whose EspoCRM write was lost is added
//!   to EspoCRM (not freed as "removed in EspoCRM"), and a `POST` whose answer was lost is
//!   paired by its value instead of being posted again.
//! - Adressen: our `POST` carries the EspoCRM id in `bemerkung`, and unpaired addresses pair by
//!   street/postcode/town, so repeating an interrupted run writes nothing twice.
//!
//! Advoware is never sent a `DELETE` (it answers 403): a Kommunikation entry removed in EspoCRM
//! becomes a reusable slot, an address becomes a manual task.

use std::collections::BTreeSet;

use bitbylaw_core::ids::{BetNr, EspoId};
use redis::aio::ConnectionLike;
use serde_json::{json, Map, Value};

use super::engine::{Engine, EngineError};
use crate::sync::beteiligte::adressen::{self, AdvowareAdresse, EspoAdresse, Field};
use crate::sync::beteiligte::kommunikation::{
    self as komm, base_from_markers, effective_base, from_espo, to_espo, AdvowareKomm, EspoKomm,
};
use crate::sync::beteiligte::model::espo_fields;
use crate::sync::beteiligte::{AdvowareBeteiligter, ConflictPolicy, EspoBeteiligte};

/// The Kommunikation part of a run.
#[derive(Debug)]
pub struct KommWork {
    pub plan: komm::Plan,
    /// Advoware's entries as read; after [`Engine::details_write`] as written.
    pub advoware: Vec<AdvowareKomm>,
    /// Policy `manual` left conflicts for a person (under the other policies the plan
    /// resolved them).
    pub left_manual: bool,
    /// Which EspoCRM arrays the read carried (only those are written back).
    pub has_emails: bool,
    pub has_phones: bool,
}

/// The Adressen part of a run.
#[derive(Debug)]
pub struct AdressenWork {
    pub plan: adressen::Plan,
    /// Task keys notified by earlier runs.
    pub notified_before: BTreeSet<String>,
    /// Advoware's addresses as read (a `PUT` sends the address back with the writable fields set).
    pub advoware_raw: Vec<Value>,
}

/// Both parts; `None` where a side does not carry the data (then that part is not synced).
#[derive(Debug, Default)]
pub struct Details {
    pub komm: Option<KommWork>,
    pub adressen: Option<AdressenWork>,
    /// Whether Advoware was written (its `rowId` changed).
    pub wrote_advoware: bool,
}

impl Details {
    /// Nothing to write on either side.
    pub fn is_empty(&self) -> bool {
        self.komm.as_ref().is_none_or(|k| k.plan.is_empty())
            && self
                .adressen
                .as_ref()
                .is_none_or(|a| a.plan.writes.is_empty())
    }

    /// The EspoCRM attributes of the Beteiligter to write (the new arrays), if any.
    pub fn espo_patch(&self) -> Option<Value> {
        let k = self.komm.as_ref()?;
        let (emails, phones) = to_espo(k.plan.espo.as_ref()?);
        let mut patch = Map::new();
        if k.has_emails {
            patch.insert(espo_fields::EMAIL_ADDRESS_DATA.into(), json!(emails));
        }
        if k.has_phones {
            patch.insert(espo_fields::PHONE_NUMBER_DATA.into(), json!(phones));
        }
        Some(Value::Object(patch))
    }

    /// What is left for a person; while anything is, the record's status is `conflict`.
    pub fn manual(&self, beteiligter: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(k) = &self.komm {
            for c in k.plan.conflicts.iter().filter(|_| k.left_manual) {
                out.push(format!(
                    "Beteiligter {beteiligter}, Kommunikation: in beiden Systemen geändert (zuletzt: {}, EspoCRM: {}, Advoware: {}); bitte manuell abgleichen.",
                    c.base,
                    c.espo.as_deref().unwrap_or("(entfernt)"),
                    c.advoware.as_deref().unwrap_or("(entfernt)")
                ));
            }
        }
        if let Some(a) = &self.adressen {
            out.extend(a.plan.tasks.iter().map(|t| t.message(beteiligter)));
        }
        out
    }
}

/// The Beteiligter as people know it, for messages: name and `betNr`.
pub fn display_name(espo: &EspoBeteiligte) -> String {
    let person = format!(
        "{} {}",
        espo.first_name.as_deref().unwrap_or(""),
        espo.last_name.as_deref().unwrap_or("")
    );
    let name = espo
        .firmenname
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or(person.trim());
    match espo.betnr {
        Some(b) => format!("{name} ({b})"),
        None => name.to_owned(),
    }
}

fn read_espo_komm(espo: &EspoBeteiligte) -> Option<Vec<EspoKomm>> {
    if espo.email_address_data.is_none() && espo.phone_number_data.is_none() {
        return None;
    }
    Some(from_espo(
        espo.email_address_data.as_deref().unwrap_or(&[]),
        espo.phone_number_data.as_deref().unwrap_or(&[]),
    ))
}

/// Advoware's `kommunikation[]` (entries we cannot read are left alone: never written).
fn read_advoware_komm(a: &AdvowareBeteiligter) -> Option<Vec<AdvowareKomm>> {
    let list = a.other.get("kommunikation")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect(),
    )
}

fn read_advoware_adressen(a: &AdvowareBeteiligter) -> Option<Vec<Value>> {
    a.other.get("adressen")?.as_array().cloned()
}

fn advoware_adresse(v: &Value) -> Option<AdvowareAdresse> {
    Some(AdvowareAdresse {
        id: v.get("id")?.as_i64()?,
        fields: adressen::fields_of(v),
        bemerkung: v
            .get("bemerkung")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn fields_json(fields: &adressen::Fields) -> Map<String, Value> {
    Field::ALL
        .into_iter()
        .map(|f| {
            (
                f.name().to_owned(),
                fields.get(&f).map_or(Value::Null, |v| json!(v)),
            )
        })
        .collect()
}

impl<C: ConnectionLike + Clone + Send + Sync> Engine<'_, C> {
    /// Reads the bases and diffs both parts (module docs).
    pub(super) async fn details_prepare(
        &self,
        id: &EspoId,
        espo: &EspoBeteiligte,
        current: &AdvowareBeteiligter,
    ) -> Result<Details, EngineError> {
        let policy = self.settings.conflict_policy;
        let komm = match (read_espo_komm(espo), read_advoware_komm(current)) {
            (Some(e), Some(mut a)) => {
                // A class whose EspoCRM array the read did not carry is left out on both sides
                // (never read as "all removed").
                let synced = |k: komm::KommKz| match k.espo_kind() {
                    Some(komm::EspoKind::Email) => espo.email_address_data.is_some(),
                    Some(komm::EspoKind::Phone(_)) => espo.phone_number_data.is_some(),
                    None => true,
                };
                a.retain(|x| synced(x.kommkz));
                let mut stored = self.store.komm_base(id).await?.unwrap_or_default();
                stored.retain(|b| synced(b.kommkz));
                let base = if self.store.komm_intent(id).await? {
                    tracing::info!(espo_id = %id, "resuming interrupted Kommunikation writes");
                    stored
                } else {
                    effective_base(&stored, &a)
                };
                let plan = komm::diff(&e, &a, &base, policy, self.settings.default_region);
                Some(KommWork {
                    has_emails: espo.email_address_data.is_some(),
                    has_phones: espo.phone_number_data.is_some(),
                    left_manual: policy == ConflictPolicy::Manual && !plan.conflicts.is_empty(),
                    plan,
                    advoware: a,
                })
            }
            _ => None,
        };
        let adressen = match read_advoware_adressen(current) {
            Some(raw) => match self.espo.list_adressen(id).await? {
                Some(list) => {
                    let espo_list: Vec<EspoAdresse> = list
                        .iter()
                        .filter_map(|v| {
                            Some(EspoAdresse {
                                id: v.get("id")?.as_str()?.to_owned(),
                                fields: adressen::fields_of(v),
                            })
                        })
                        .collect();
                    let adv: Vec<AdvowareAdresse> =
                        raw.iter().filter_map(advoware_adresse).collect();
                    let base = self.store.adressen_base(id).await?;
                    let plan = adressen::diff(&espo_list, &adv, &base, policy);
                    Some(AdressenWork {
                        plan,
                        notified_before: base.notified,
                        advoware_raw: raw,
                    })
                }
                None => None,
            },
            None => None,
        };
        Ok(Details {
            komm,
            adressen,
            wrote_advoware: false,
        })
    }

    /// The Advoware writes of both parts and EspoCRM's address records. Kommunikation: `PUT`s
    /// (slots reused) before `POST`s, the intent stored first.
    pub(super) async fn details_write(
        &self,
        id: &EspoId,
        bet_nr: BetNr,
        d: &mut Details,
    ) -> Result<(), EngineError> {
        if let Some(k) = &mut d.komm {
            let plan = &k.plan;
            if !plan.advoware_puts.is_empty() || !plan.advoware_posts.is_empty() {
                self.store.set_komm_intent(id).await?;
            }
            for put in &plan.advoware_puts {
                let Some(entry) = k.advoware.iter_mut().find(|a| a.id == put.id) else {
                    continue;
                };
                let body = json!({
                    "kommKz": entry.kommkz,
                    "tlf": put.tlf,
                    "bemerkung": put.bemerkung,
                    "online": entry.online,
                });
                self.advoware
                    .update_kommunikation(bet_nr, put.id, &body)
                    .await?;
                d.wrote_advoware = true;
                entry.tlf.clone_from(&put.tlf);
                entry.bemerkung = Some(put.bemerkung.clone());
            }
            for post in &plan.advoware_posts {
                let body = json!({
                    "kommKz": post.kommkz,
                    "tlf": post.tlf,
                    "bemerkung": post.bemerkung,
                    "online": post.online,
                });
                let created = self.advoware.create_kommunikation(bet_nr, &body).await?;
                d.wrote_advoware = true;
                if let Ok(entry) = serde_json::from_value::<AdvowareKomm>(created) {
                    k.advoware.push(entry);
                }
            }
        }
        if let Some(a) = &mut d.adressen {
            let mut new_pairs = Vec::new();
            for w in &a.plan.writes {
                match w {
                    adressen::Write::AdvowarePost { espo_id, fields } => {
                        let mut body = fields_json(fields);
                        body.insert("bemerkung".into(), json!(adressen::marker(espo_id)));
                        let created = self
                            .advoware
                            .create_adresse(bet_nr, &Value::Object(body))
                            .await?;
                        d.wrote_advoware = true;
                        if let Some(aid) = created.get("id").and_then(Value::as_i64) {
                            new_pairs.push(adressen::base_entry(espo_id, aid, fields));
                        }
                    }
                    adressen::Write::AdvowarePut {
                        advoware_id,
                        fields,
                    } => {
                        let mut body = a
                            .advoware_raw
                            .iter()
                            .find(|v| v.get("id").and_then(Value::as_i64) == Some(*advoware_id))
                            .cloned()
                            .unwrap_or_else(|| json!({ "id": advoware_id }));
                        if let Value::Object(m) = &mut body {
                            for f in Field::ALL.into_iter().filter(|f| f.writable()) {
                                m.insert(
                                    f.name().into(),
                                    fields.get(&f).map_or(Value::Null, |v| json!(v)),
                                );
                            }
                        }
                        self.advoware
                            .update_adresse(bet_nr, *advoware_id, &body)
                            .await?;
                        d.wrote_advoware = true;
                    }
                    adressen::Write::EspoCreate {
                        advoware_id,
                        fields,
                    } => {
                        let mut body = fields_json(fields);
                        body.insert(espo_fields::ADRESSEN_LINK.into(), json!(id.as_str()));
                        let created = self.espo.create_adresse(&Value::Object(body)).await?;
                        if let Some(eid) = created.get("id").and_then(Value::as_str) {
                            new_pairs.push(adressen::base_entry(eid, *advoware_id, fields));
                        }
                    }
                    adressen::Write::EspoUpdate { espo_id, fields } => {
                        self.espo
                            .update_adresse(espo_id, &Value::Object(fields_json(fields)))
                            .await?;
                    }
                }
            }
            a.plan.base.pairs.extend(new_pairs);
        }
        Ok(())
    }

    /// After the EspoCRM write: the new bases (ending the Kommunikation intent) and the
    /// notifications of what is new for a person.
    pub(super) async fn details_finish(
        &self,
        id: &EspoId,
        espo: &EspoBeteiligte,
        d: &Details,
    ) -> Result<(), EngineError> {
        let name = display_name(espo);
        if let Some(k) = &d.komm {
            self.store
                .set_komm_base(id, &base_from_markers(&k.advoware))
                .await?;
            if k.left_manual {
                // Notified once: the status message carries them while they are open.
                let shown = espo.sync_error_message.as_deref().unwrap_or("");
                for m in d.manual(&name) {
                    if m.contains("Kommunikation") && !shown.contains(&m) {
                        self.notify(id, &m).await;
                    }
                }
            } else if !k.plan.conflicts.is_empty() {
                let winner = match self.settings.conflict_policy {
                    ConflictPolicy::AdvowareWins => "Advoware",
                    _ => "EspoCRM",
                };
                for c in &k.plan.conflicts {
                    self.notify(
                        id,
                        &format!(
                            "Beteiligter {name}, Kommunikation: in beiden Systemen geändert (zuletzt: {}, EspoCRM: {}, Advoware: {}); {winner} hat Vorrang erhalten.",
                            c.base,
                            c.espo.as_deref().unwrap_or("(entfernt)"),
                            c.advoware.as_deref().unwrap_or("(entfernt)")
                        ),
                    )
                    .await;
                }
            }
        }
        if let Some(a) = &d.adressen {
            for t in a.plan.new_tasks(&a.notified_before) {
                self.notify(id, &t.message(&name)).await;
            }
            self.store.set_adressen_base(id, &a.plan.base).await?;
        }
        Ok(())
    }
}
