//! Filling the 3CX lookup index (`keys::phone`) outside of calls, so a caller's first ring is
//! answered warm:
//!
//! - [`put_preferring`]: the sync handlers (leads today) put the person they wrote or read under
//!   its number — without displacing an entry of a higher-priority entity type
//!   ([`super::matching::PERSON_ENTITIES`]: a Lead never hides the Contact of the same number).
//! - [`refresh`]: the scheduled full refresh (`telephony.index.refresh`, schedule
//!   `threecx-index-refresh`, nightly) pages EspoCRM's Leads, CBeteiligte and Contacts (lowest
//!   priority first, so the best entity is written last and wins) and indexes every record with
//!   a usable `phoneNumber`, normalised by the shared normaliser. Entries live
//!   [`super::lookup::INDEX_TTL_SECS`], longer than the refresh interval, so a failed night
//!   leaves yesterday's index in place.

use redis::aio::ConnectionManager;
use serde_json::Value;

use super::lookup::{index_get, index_put};
use super::matching::{Match, PERSON_ENTITIES, SELECT};
use crate::clients::espocrm::{EspoCrmClient, EspoCrmError, ListQuery, Order, Where};
use crate::sync::contact::{normalize_phone, Region};

fn rank(entity: &str) -> usize {
    PERSON_ENTITIES
        .iter()
        .position(|e| *e == entity)
        .unwrap_or(PERSON_ENTITIES.len())
}

/// Indexes `m` under `e164` unless the entry there is another record of a higher-priority type.
pub async fn put_preferring(
    conn: ConnectionManager,
    e164: &str,
    m: &Match,
) -> redis::RedisResult<bool> {
    if let Some(existing) = index_get(conn.clone(), e164).await? {
        if existing.id() != m.id() && rank(existing.entity) < rank(m.entity) {
            return Ok(false);
        }
    }
    index_put(conn, e164, m).await.map(|()| true)
}

/// What a full refresh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    pub records: usize,
    pub indexed: usize,
    /// Records whose `phoneNumber` the normaliser refused.
    pub unusable: usize,
}

/// Pages every person entity and indexes its numbers (see the module docs).
pub async fn refresh(
    crm: &EspoCrmClient,
    conn: ConnectionManager,
    region: Region,
) -> Result<RefreshStats, RefreshError> {
    let q = ListQuery::new()
        .filter(Where::is_not_null("phoneNumber"))
        .select(SELECT)
        .order_by("createdAt", Order::Desc);
    let mut stats = RefreshStats::default();
    for entity in PERSON_ENTITIES.into_iter().rev() {
        // Within one type the oldest record wins (the lookup's rule), so it is written last.
        let records: Vec<Value> = crm.list_all(entity, &q).await?;
        for record in records {
            stats.records += 1;
            let Some(raw) = record.get("phoneNumber").and_then(Value::as_str) else {
                continue;
            };
            let Ok(e164) = normalize_phone(raw, region) else {
                stats.unusable += 1;
                continue;
            };
            index_put(conn.clone(), &e164, &Match { entity, record }).await?;
            stats.indexed += 1;
        }
    }
    Ok(stats)
}

/// Why a refresh stopped (the job is retried by the queue's policy).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Crm(#[from] EspoCrmError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}
