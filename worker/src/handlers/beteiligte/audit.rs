//! `beteiligte audit <espo-id>`: both sides of one record field by field, plus the sync
//! bookkeeping (status, `rowId`, the Redis base). Read-only.

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

/// Compares EspoCRM and Advoware for `id`.
pub async fn audit<C: ConnectionLike + Clone + Send + Sync>(
    espo: &dyn EspoSide,
    advoware: &dyn AdvowareSide,
    store: &BeteiligteStore<C>,
    id: &EspoId,
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
    let base = store.hash(id).await?;
    if es == as_ && base.as_deref() != Some(content_hash(&es).as_str()) {
        r.info(
            "note: the Redis base of the last sync is missing or older (the next run stores it)"
                .into(),
        );
    }
    Ok(r)
}
