//! Who is on the phone: the EspoCRM person with a number, shared by the call journal and the
//! 3CX lookup.
//!
//! # Priority between several matches
//!
//! 1. The record 3CX names as `EntityId` (our own lookup answered it when the call started).
//! 2. `Contact` (a client) before `CBeteiligte` (a party in an Advoware file) before `Lead`.
//! 3. Within one entity type the oldest record (`createdAt` ascending).
//!
//! EspoCRM keeps numbers as typed; the search asks for the usual spellings of the E.164 number
//! (`+4930…`, `004930…`, `030…` for the default region) with `in`, so a record typed nationally
//! is found as well as one written by our syncs (E.164).

use serde_json::Value;

use crate::clients::espocrm::{EspoCrmError, ListQuery, Order, Where};
use crate::handlers::leads::crm::LeadsCrm;
use crate::sync::contact::Region;

/// Entity types searched, in priority order.
pub const PERSON_ENTITIES: [&str; 3] = ["Contact", "CBeteiligte", "Lead"];

/// Attributes read for a match (what the lookup answers).
pub const SELECT: [&str; 8] = [
    "id",
    "name",
    "firstName",
    "lastName",
    "accountName",
    "emailAddress",
    "phoneNumber",
    "createdAt",
];

/// A matched record.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub entity: &'static str,
    pub record: Value,
}

impl Match {
    pub fn id(&self) -> &str {
        self.record
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The spellings of an E.164 number EspoCRM may hold: `+4930…`, `004930…` and, for the default
/// region, the national `030…`.
pub fn spellings(e164: &str, region: Region) -> Vec<String> {
    let digits = e164.trim_start_matches('+');
    let mut v = vec![e164.to_owned(), format!("00{digits}")];
    if let Some(national) = digits.strip_prefix(region.calling_code) {
        v.push(format!("0{national}"));
    }
    v
}

/// The best match for `e164` per the module's priority, `preferred` being 3CX's `EntityId`.
pub async fn find_person(
    crm: &dyn LeadsCrm,
    e164: &str,
    region: Region,
    preferred: Option<&str>,
) -> Result<Option<Match>, EspoCrmError> {
    let q = ListQuery::new()
        .filter(Where::is_in("phoneNumber", spellings(e164, region)))
        .select(SELECT)
        .order_by("createdAt", Order::Asc)
        .limit(5);
    let mut best: Option<Match> = None;
    for entity in PERSON_ENTITIES {
        let found = crm.find(entity, &q).await?;
        if let Some(p) = preferred {
            if let Some(rec) = found
                .iter()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(p))
            {
                return Ok(Some(Match {
                    entity,
                    record: rec.clone(),
                }));
            }
        }
        if best.is_none() {
            best = found
                .into_iter()
                .next()
                .map(|record| Match { entity, record });
            if best.is_some() && preferred.is_none() {
                break;
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_a_german_number() {
        assert_eq!(
            spellings("+4930123456", Region::DE),
            ["+4930123456", "004930123456", "030123456"]
        );
        assert_eq!(
            spellings("+43123456789", Region::DE),
            ["+43123456789", "0043123456789"]
        );
    }
}
