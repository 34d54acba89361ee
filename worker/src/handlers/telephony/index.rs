//! Filling the 3CX lookup index (`keys::phone`) outside of calls, so a caller's first ring is
//! answered warm. Every number of a person counts: the primary `phoneNumber` and each entry of
//! EspoCRM's `phoneNumberData[]` ([`record_numbers`]), and for a `CBeteiligte` also the
//! phone-type entries of the linked Advoware Beteiligter's `kommunikation[]`.
//!
//! - [`put_preferring`]: the sync handlers put the person they wrote or read under its numbers
//!   — without displacing an entry of a higher-priority entity type
//!   ([`super::matching::PERSON_ENTITIES`]: a Lead never hides the Contact of the same number).
//!   The leads handler indexes the lead it wrote; the Beteiligte run goes through
//!   [`beteiligte_sides`], which observes both sides' reads and writes.
//! - [`refresh`]: the scheduled full refresh (`telephony.index.refresh`, schedule
//!   `threecx-index-refresh`, nightly) pages EspoCRM's Leads, CBeteiligte and Contacts (lowest
//!   priority first, so the best entity is written last and wins) and indexes every usable
//!   number of every record, normalised by the shared normaliser. Entries live
//!   [`super::lookup::INDEX_TTL_SECS`], longer than the refresh interval, so a failed night
//!   leaves yesterday's index in place. Advoware has no search endpoint (FACTS §1), so its
//!   Kommunikation numbers enter only through Beteiligte runs (the 15-minute check revisits
//!   every linked record within `check_clean_age`).

use redis::aio::ConnectionManager;
use serde_json::Value;

use bitbylaw_core::ids::{BetNr, EspoId};
use futures::future::BoxFuture;

use super::lookup::{index_get, index_put};
use super::matching::{Match, PERSON_ENTITIES, SELECT};
use crate::clients::espocrm::{
    EspoCrmClient, EspoCrmError, ListQuery, NewNotification, Order, Where,
};
use crate::handlers::beteiligte::sides::{AdvowareSide, EspoSide, SideError};
use crate::sync::beteiligte::kommunikation::{AdvowareKomm, EspoKind};
use crate::sync::beteiligte::{AdvowareBeteiligter, EspoBeteiligte};
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

/// Every number a record holds, as typed, each once: `phoneNumber` (EspoCRM's primary) and the
/// `phoneNumber` of each `phoneNumberData[]` entry (FACTS §2; the array carries all of them).
pub fn record_numbers(record: &Value) -> Vec<&str> {
    let primary = record.get("phoneNumber").and_then(Value::as_str);
    let data = record
        .get("phoneNumberData")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("phoneNumber").and_then(Value::as_str));
    let mut out: Vec<&str> = Vec::new();
    for n in primary.into_iter().chain(data) {
        if !n.trim().is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// The distinct E.164 forms of `numbers`, and how many the normaliser refused.
fn normalised<'a>(
    numbers: impl IntoIterator<Item = &'a str>,
    region: Region,
) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut refused = 0;
    for raw in numbers {
        match normalize_phone(raw, region) {
            Ok(e164) if !out.contains(&e164) => out.push(e164),
            Ok(_) => {}
            Err(_) => refused += 1,
        }
    }
    (out, refused)
}

/// What a full refresh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    pub records: usize,
    /// Numbers indexed (a record with three numbers counts three).
    pub indexed: usize,
    /// Numbers the normaliser refused.
    pub unusable: usize,
}

/// Pages every person entity and indexes its numbers (see the module docs).
pub async fn refresh(
    crm: &EspoCrmClient,
    conn: ConnectionManager,
    region: Region,
) -> Result<RefreshStats, RefreshError> {
    // Every record with a number has a primary one, so the filter loses none.
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
            let (numbers, refused) = normalised(record_numbers(&record), region);
            stats.unusable += refused;
            let m = Match { entity, record };
            for e164 in numbers {
                index_put(conn.clone(), &e164, &m).await?;
                stats.indexed += 1;
            }
        }
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// The Beteiligte run's two sides, observed for the index
// ---------------------------------------------------------------------------------------------

/// Both sides of one Beteiligte run (the job's `CBeteiligte` `espo_id`), indexing what they
/// read or write: the EspoCRM record's numbers and the phone-type Kommunikation of the linked
/// Advoware Beteiligter, all pointing at the `CBeteiligte` (the lookup answers EspoCRM URLs).
/// No extra request; an index failure never fails the sync. The engine only ever reads the
/// Advoware record linked to the job's EspoCRM record, which is what makes the pointer right.
///
/// Both wrappers forward every trait method: a method added to [`EspoSide`] or
/// [`AdvowareSide`] with a default body must be forwarded here too.
pub fn beteiligte_sides<'a>(
    espo: &'a dyn EspoSide,
    advoware: &'a dyn AdvowareSide,
    index: Option<ConnectionManager>,
    region: Region,
    espo_id: &EspoId,
) -> BeteiligteSides<'a> {
    let target = BeteiligteTarget {
        index,
        region,
        espo_id: espo_id.clone(),
    };
    BeteiligteSides {
        espo: IndexingEspo {
            inner: espo,
            target: target.clone(),
        },
        advoware: IndexingAdvoware {
            inner: advoware,
            target,
        },
    }
}

/// See [`beteiligte_sides`].
pub struct BeteiligteSides<'a> {
    pub espo: IndexingEspo<'a>,
    pub advoware: IndexingAdvoware<'a>,
}

/// Marks an index entry written from the Advoware copy of a `CBeteiligte` (the lookup's answer
/// ignores it).
pub const FROM_ADVOWARE: &str = "fromAdvoware";

#[derive(Clone)]
struct BeteiligteTarget {
    /// `None`: no index (Redis unavailable when the run started).
    index: Option<ConnectionManager>,
    region: Region,
    espo_id: EspoId,
}

impl BeteiligteTarget {
    /// Puts `record` (a `CBeteiligte` of the run) under each of `numbers`. With `keep_same` (the
    /// Advoware side), an entry written from EspoCRM's copy of this record stays as it is (only
    /// its lifetime is renewed): the record as EspoCRM shows it wins over Advoware's copy. An
    /// entry written from Advoware ([`FROM_ADVOWARE`]) is rewritten, so a renamed party shows
    /// the new name.
    async fn put(&self, numbers: &[String], record: Value, keep_same: bool) {
        let Some(conn) = &self.index else { return };
        let (numbers, _) = normalised(numbers.iter().map(String::as_str), self.region);
        let m = Match {
            entity: "CBeteiligte",
            record,
        };
        for e164 in numbers {
            let current = match keep_same {
                true => index_get(conn.clone(), &e164).await,
                false => Ok(None),
            };
            let written = match current {
                Ok(Some(existing))
                    if existing.entity == m.entity
                        && existing.id() == m.id()
                        && existing.record.get(FROM_ADVOWARE).is_none() =>
                {
                    index_put(conn.clone(), &e164, &existing).await
                }
                _ => put_preferring(conn.clone(), &e164, &m).await.map(drop),
            };
            if let Err(e) = written {
                // Best effort: the next run or the nightly refresh writes it.
                tracing::debug!(espo_id = %self.espo_id.as_str(), error = %e, "3CX index write failed");
            }
        }
    }

    async fn espo(&self, b: &EspoBeteiligte) {
        let Some(id) = &b.id else { return };
        let mut record = serde_json::json!({
            "id": id.as_str(),
            "firstName": b.first_name,
            "lastName": b.last_name,
            "name": b.firmenname,
            "accountName": b.firmenname,
            "phoneNumber": b.phone_number,
            // The primary e-mail (the first entry when none is flagged), for the answer's Email.
            "emailAddress": b.email_address_data.as_ref().and_then(|list| {
                list.iter()
                    .find(|e| e.primary)
                    .or(list.first())
                    .map(|e| e.email_address.as_str())
            }),
        });
        if let Some(data) = &b.phone_number_data {
            record["phoneNumberData"] = serde_json::to_value(data).unwrap_or_default();
        }
        let numbers: Vec<String> = record_numbers(&record)
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.put(&numbers, record, false).await;
    }

    async fn advoware(&self, b: &AdvowareBeteiligter) {
        let numbers = kommunikation_phones(b);
        if numbers.is_empty() {
            return;
        }
        let name = b.name.as_deref().unwrap_or_default();
        let record = match b.vorname.as_deref().filter(|v| !v.trim().is_empty()) {
            Some(first) => serde_json::json!({
                "id": self.espo_id.as_str(), "firstName": first, "lastName": name,
                FROM_ADVOWARE: true,
            }),
            // No first name: a company (or a name kept in one field).
            None => serde_json::json!({
                "id": self.espo_id.as_str(), "name": name, "accountName": name,
                FROM_ADVOWARE: true,
            }),
        };
        self.put(&numbers, record, true).await;
    }
}

/// The numbers of the phone-type entries (phone, mobile, fax; [`crate::sync::beteiligte::kommunikation::KOMMKZ_TABLE`])
/// in an Advoware Beteiligter's `kommunikation[]` (which comes inside `GET Beteiligte`,
/// FACTS §1). An entry that does not parse or has an e-mail or unknown `kommKz` is skipped.
pub fn kommunikation_phones(b: &AdvowareBeteiligter) -> Vec<String> {
    b.other
        .get("kommunikation")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| serde_json::from_value::<AdvowareKomm>(e.clone()).ok())
        .filter(|k| matches!(k.kommkz.espo_kind(), Some(EspoKind::Phone(_))))
        .map(|k| k.tlf)
        .filter(|t| !t.trim().is_empty())
        .collect()
}

/// The EspoCRM side of a Beteiligte run, indexing every record it reads or writes.
pub struct IndexingEspo<'a> {
    inner: &'a dyn EspoSide,
    target: BeteiligteTarget,
}

impl EspoSide for IndexingEspo<'_> {
    fn get<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<EspoBeteiligte>, SideError>> {
        Box::pin(async move {
            let got = self.inner.get(id).await?;
            if let Some(b) = &got {
                self.target.espo(b).await;
            }
            Ok(got)
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<EspoBeteiligte, SideError>> {
        Box::pin(async move {
            let b = self.inner.update(id, patch).await?;
            self.target.espo(&b).await;
            Ok(b)
        })
    }

    fn list<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<EspoBeteiligte>, SideError>> {
        self.inner.list(query)
    }

    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), SideError>> {
        self.inner.notify(n)
    }

    fn list_adressen<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<Vec<Value>>, SideError>> {
        self.inner.list_adressen(id)
    }

    fn create_adresse<'a>(&'a self, body: &'a Value) -> BoxFuture<'a, Result<Value, SideError>> {
        self.inner.create_adresse(body)
    }

    fn update_adresse<'a>(
        &'a self,
        id: &'a str,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        self.inner.update_adresse(id, patch)
    }
}

/// The Advoware side of a Beteiligte run, indexing the Kommunikation of every record it reads
/// or writes under the run's `CBeteiligte`.
pub struct IndexingAdvoware<'a> {
    inner: &'a dyn AdvowareSide,
    target: BeteiligteTarget,
}

impl AdvowareSide for IndexingAdvoware<'_> {
    fn get(&self, bet_nr: BetNr) -> BoxFuture<'_, Result<Option<AdvowareBeteiligter>, SideError>> {
        Box::pin(async move {
            let got = self.inner.get(bet_nr).await?;
            if let Some(b) = &got {
                self.target.advoware(b).await;
            }
            Ok(got)
        })
    }

    fn create<'a>(
        &'a self,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>> {
        Box::pin(async move {
            let created = self.inner.create(b).await?;
            self.target.advoware(&created).await;
            Ok(created)
        })
    }

    fn replace<'a>(
        &'a self,
        bet_nr: BetNr,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>> {
        Box::pin(async move {
            let stored = self.inner.replace(bet_nr, b).await?;
            self.target.advoware(&stored).await;
            Ok(stored)
        })
    }

    fn create_kommunikation<'a>(
        &'a self,
        bet_nr: BetNr,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        self.inner.create_kommunikation(bet_nr, body)
    }

    fn update_kommunikation<'a>(
        &'a self,
        bet_nr: BetNr,
        id: i64,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        self.inner.update_kommunikation(bet_nr, id, body)
    }

    fn create_adresse<'a>(
        &'a self,
        bet_nr: BetNr,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        self.inner.create_adresse(bet_nr, body)
    }

    fn update_adresse<'a>(
        &'a self,
        bet_nr: BetNr,
        id: i64,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        self.inner.update_adresse(bet_nr, id, body)
    }
}

/// Why a refresh stopped (the job is retried by the queue's policy).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Crm(#[from] EspoCrmError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_number_of_a_record_once_primary_first() {
        let r = json!({"phoneNumber": "030 1", "phoneNumberData": [
            {"phoneNumber": "030 1", "primary": true},
            {"phoneNumber": "0171 2"},
            {"phoneNumber": " "},
            {"type": "Fax"}]});
        assert_eq!(record_numbers(&r), ["030 1", "0171 2"]);
        assert_eq!(
            record_numbers(&json!({"phoneNumberData": "x"})),
            Vec::<&str>::new()
        );
        assert_eq!(record_numbers(&json!({})), Vec::<&str>::new());
    }

    #[test]
    fn phone_type_kommunikation_only() {
        let b: AdvowareBeteiligter = serde_json::from_value(json!({"name": "P", "kommunikation": [
            {"id": 1, "kommKz": 1, "tlf": "0511 1"},
            {"id": 2, "kommKz": 2, "tlf": "0511 2"},
            {"id": 3, "kommKz": 3, "tlf": "0171 3"},
            {"id": 4, "kommKz": 4, "tlf": "a@b.de"},
            {"id": 5, "kommKz": 5, "tlf": "www.b.de"},
            {"id": 6, "kommKz": 99, "tlf": "0511 6"},
            {"id": 7, "kommKz": 6, "tlf": ""},
            {"kommKz": 1, "tlf": "no id"},
            "garbage"]}))
        .unwrap_or_default();
        assert_eq!(kommunikation_phones(&b), ["0511 1", "0511 2", "0171 3"]);
        assert!(kommunikation_phones(&AdvowareBeteiligter::default()).is_empty());
    }
}
