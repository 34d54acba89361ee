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
pub const SELECT: [&str; 9] = [
    "id",
    "name",
    "firstName",
    "lastName",
    "accountName",
    "emailAddress",
    "phoneNumber",
    "phoneNumberData",
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

/// What a search found: the record 3CX named (if it has the number) and the best one by
/// priority. The lookup and the index use `best`; the journal prefers `named`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub named: Option<Match>,
    pub best: Option<Match>,
}

impl Found {
    /// The Call's parent: the record 3CX named, else the best by priority.
    pub fn chosen(&self) -> Option<&Match> {
        self.named.as_ref().or(self.best.as_ref())
    }
}

/// Searches the person entities for `e164`; `named` is 3CX's `EntityId` (journal only).
pub async fn find_person(
    crm: &dyn LeadsCrm,
    e164: &str,
    region: Region,
    named: Option<&str>,
) -> Result<Found, EspoCrmError> {
    let q = ListQuery::new()
        .filter(Where::is_in("phoneNumber", spellings(e164, region)))
        .select(SELECT)
        .order_by("createdAt", Order::Asc)
        .limit(5);
    let mut found = Found::default();
    for entity in PERSON_ENTITIES {
        let list = crm.find(entity, &q).await?;
        if let Some(id) = named {
            if let Some(rec) = list
                .iter()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
            {
                found.named = Some(Match {
                    entity,
                    record: rec.clone(),
                });
            }
        }
        if found.best.is_none() {
            found.best = list
                .into_iter()
                .next()
                .map(|record| Match { entity, record });
        }
        if found.best.is_some() && (named.is_none() || found.named.is_some()) {
            break;
        }
    }
    Ok(found)
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
