//! `beteiligte audit <espo-id>`: both sides of one record field by field, plus the sync
//! bookkeeping (status, `rowId`, the Redis base), Kommunikation and Adressen (what the next run
//! would write, and the open manual tasks). Read-only.

use bitbylaw_core::ids::EspoId;
use redis::aio::ConnectionLike;
use serde_json::Value;

use super::sides::{AdvowareSide, EspoSide, SideError};
use super::store::BeteiligteStore;
use crate::sync::beteiligte::{
    advoware_to_stammdaten, content_hash, espo_to_stammdaten, Stammdaten, SyncStatus,
};

/// Why the comparison itself failed (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Side(#[from] SideError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no CBeteiligte {0} in EspoCRM")]
    NotFound(String),
}

/// What the audit found: printable lines and how many of them are differences.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub lines: Vec<String>,
    pub differences: usize,
}

impl AuditReport {
    fn diff(&mut self, line: String) {
        self.differences += 1;
        self.lines.push(format!("DIFF {line}"));
    }
    fn info(&mut self, line: String) {
        self.lines.push(line);
    }
}

fn fields(s: &Stammdaten) -> serde_json::Map<String, Value> {
    match serde_json::to_value(s) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Compares EspoCRM and Advoware for `id`. `settings` are the ones the handler runs with (the
/// configured conflict policy and region), so the audit predicts what the next run really does.
pub async fn audit<C: ConnectionLike + Clone + Send + Sync>(
    espo: &dyn EspoSide,
    advoware: &dyn AdvowareSide,
    store: &BeteiligteStore<C>,
    id: &EspoId,
    settings: &super::engine::EngineSettings,
) -> Result<AuditReport, AuditError> {
    let mut r = AuditReport::default();
    let e = espo
        .get(id)
        .await?
        .ok_or_else(|| AuditError::NotFound(id.to_string()))?;
    let status = e.sync_status;
    r.info(format!(
        "syncStatus: {}",
        status.map_or("(none)", SyncStatus::as_str)
    ));
    if status != Some(SyncStatus::Clean) {
        r.diff(format!(
            "syncStatus is {} (error: {})",
            status.map_or("(none)", SyncStatus::as_str),
            e.sync_error_message.as_deref().unwrap_or("-")
        ));
    }
    let Some(bet_nr) = e.betnr else {
        r.diff("betnr: not linked (not in Advoware yet)".into());
        return Ok(r);
    };
    r.info(format!("betnr: {bet_nr}"));
    let Some(a) = advoware.get(bet_nr).await? else {
        r.diff(format!(
            "Advoware: Beteiligter {bet_nr} does not exist (404)"
        ));
        return Ok(r);
    };
    if e.advoware_row_id.as_deref() != a.row_id.as_deref() {
        r.diff(format!(
            "rowId: stored {:?}, Advoware {:?} (changed since the last sync)",
            e.advoware_row_id.as_deref().unwrap_or(""),
            a.row_id.as_deref().unwrap_or("")
        ));
    }
    let (es, as_) = match (espo_to_stammdaten(&e), advoware_to_stammdaten(&a)) {
        (Ok(es), Ok(as_)) => (es, as_),
        (es, as_) => {
            if let Err(err) = es {
                r.diff(format!("EspoCRM record cannot be mapped: {err}"));
            }
            if let Err(err) = as_ {
                r.diff(format!("Advoware record cannot be mapped: {err}"));
            }
            return Ok(r);
        }
    };
    let (ef, af) = (fields(&es), fields(&as_));
    let keys: std::collections::BTreeSet<&String> = ef.keys().chain(af.keys()).collect();
    for k in keys {
        let (ev, av) = (
            ef.get(k).unwrap_or(&Value::Null),
            af.get(k).unwrap_or(&Value::Null),
        );
        if ev != av {
            r.diff(format!("{k}: EspoCRM {ev} | Advoware {av}"));
        }
    }
    let engine = super::engine::Engine {
        espo,
        advoware,
        store,
        settings,
    };
    details(&mut r, &engine, id, &e, &a).await?;
    let base = store.hash(id).await?;
    if es == as_ && base.as_deref() != Some(content_hash(&es).as_str()) {
        r.info(
            "note: the Redis base of the last sync is missing or older (the next run stores it)"
                .into(),
        );
    }
    Ok(r)
}

/// Kommunikation and Adressen: the next run's plan, read-only, as difference lines.
async fn details<C: ConnectionLike + Clone + Send + Sync>(
    r: &mut AuditReport,
    engine: &super::engine::Engine<'_, C>,
    id: &EspoId,
    e: &crate::sync::beteiligte::EspoBeteiligte,
    a: &crate::sync::beteiligte::AdvowareBeteiligter,
) -> Result<(), AuditError> {
    use crate::sync::beteiligte::adressen::{label, Write};
    let d = engine
        .details_prepare(id, e, a)
        .await
        .map_err(|err| match err {
            super::engine::EngineError::Side(s) => AuditError::Side(s),
            super::engine::EngineError::Store(s) => AuditError::Redis(s),
        })?;
    match &d.komm {
        None => r.info("Kommunikation: not synced (a side carries no list)".into()),
        Some(k) => {
            for put in &k.plan.advoware_puts {
                r.diff(format!(
                    "Kommunikation: Advoware entry {} would be set to {:?}",
                    put.id, put.tlf
                ));
            }
            for post in &k.plan.advoware_posts {
                r.diff(format!(
                    "Kommunikation: {:?} (kommKz {}) only in EspoCRM, would be added to Advoware",
                    post.tlf,
                    post.kommkz.code()
                ));
            }
            if let Some(list) = &k.plan.espo {
                let before = crate::sync::beteiligte::kommunikation::from_espo(
                    e.email_address_data.as_deref().unwrap_or(&[]),
                    e.phone_number_data.as_deref().unwrap_or(&[]),
                );
                for v in list.iter().filter(|v| !before.contains(v)) {
                    r.diff(format!(
                        "Kommunikation: {:?} would be written to EspoCRM (from Advoware)",
                        v.value
                    ));
                }
                for v in before.iter().filter(|v| !list.contains(v)) {
                    r.diff(format!(
                        "Kommunikation: {:?} would be removed from EspoCRM (removed in Advoware)",
                        v.value
                    ));
                }
            }
            for c in &k.plan.conflicts {
                r.diff(format!(
                    "Kommunikation: changed on both sides (last synced {:?}, EspoCRM {:?}, Advoware {:?})",
                    c.base, c.espo, c.advoware
                ));
            }
        }
    }
    match &d.adressen {
        None => r.info("Adressen: not synced (a side carries no list)".into()),
        Some(ad) => {
            for w in &ad.plan.writes {
                r.diff(match w {
                    Write::AdvowarePost { espo_id, fields } => format!(
                        "Adressen: {} (EspoCRM {espo_id}) only in EspoCRM, would be added to Advoware",
                        label(fields)
                    ),
                    Write::AdvowarePut { advoware_id, fields } => format!(
                        "Adressen: Advoware address {advoware_id} would be set to {}",
                        label(fields)
                    ),
                    Write::EspoCreate { advoware_id, fields } => format!(
                        "Adressen: {} (Advoware {advoware_id}) only in Advoware, would be added to EspoCRM",
                        label(fields)
                    ),
                    Write::EspoUpdate { espo_id, fields } => format!(
                        "Adressen: EspoCRM address {espo_id} would be set to {}",
                        label(fields)
                    ),
                });
            }
            let name = super::details::display_name(e);
            for t in &ad.plan.tasks {
                r.diff(format!("Adressen: open manual task: {}", t.message(&name)));
            }
        }
    }
    Ok(())
}
