//! The 3CX contact lookup (`GET /3cx/lookup?phone=…`, screen pop while the phone rings).
//!
//! Warm path: the phone → person index in Redis (`keys::phone`, filled by the call journal, by
//! cold lookups and by [`super::index`]: the sync handlers and the nightly refresh, with every
//! EspoCRM number of a person and the Advoware Kommunikation numbers of a Beteiligter). Cold path: the EspoCRM search of [`super::matching`] under a deadline; past it
//! the answer is "no match" rather than a 3CX timeout. The answer is the JSON our CRM template
//! maps: a match carries `ContactUrl`, a name and the searched number (3CX accepts nothing less);
//! no match is `{"contacts": []}` with 200.

use redis::aio::ConnectionManager;
use redis::AsyncCommands as _;
use serde_json::{json, Value};

use super::matching::Match;
use crate::keys;

/// How long an index entry lives: numbers change rarely, and a stale entry only pops a name.
pub const INDEX_TTL_SECS: u64 = 7 * 24 * 3600;

/// Stores the person matched for `e164` in the lookup index.
pub async fn index_put(
    mut conn: ConnectionManager,
    e164: &str,
    m: &Match,
) -> redis::RedisResult<()> {
    let v = json!({"entity": m.entity, "record": m.record});
    conn.set_ex(keys::phone(e164), v.to_string(), INDEX_TTL_SECS)
        .await
}

/// The indexed person of `e164`, if any (an unreadable entry counts as none).
pub async fn index_get(
    mut conn: ConnectionManager,
    e164: &str,
) -> redis::RedisResult<Option<Match>> {
    let raw: Option<String> = conn.get(keys::phone(e164)).await?;
    Ok(raw.and_then(|r| {
        let v: Value = serde_json::from_str(&r).ok()?;
        let entity = super::matching::PERSON_ENTITIES
            .into_iter()
            .find(|e| v.get("entity").and_then(Value::as_str) == Some(*e))?;
        Some(Match {
            entity,
            record: v.get("record")?.clone(),
        })
    }))
}

/// EspoCRM's web UI base from its API base (`https://crm/api/v1/` → `https://crm/`).
pub fn ui_base(api_base: &str) -> String {
    let trimmed = api_base.trim_end_matches('/');
    let base = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
    format!("{base}/")
}

/// The empty answer: 3CX shows the caller as unknown.
pub fn empty_answer() -> Value {
    json!({"contacts": []})
}

/// The answer for a match. `searched` is the number exactly as 3CX sent it, `e164` its
/// normalised form (which decides mobile or business): 3CX accepts a match only when a phone
/// field equals the searched number, so the searched text is echoed whatever spelling
/// EspoCRM stores.
pub fn answer(m: &Match, searched: &str, e164: &str, ui_base: &str) -> Value {
    let s = |k: &str| {
        m.record
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut first = s("firstName");
    let mut last = s("lastName");
    if first.is_empty() && last.is_empty() {
        last = s("name");
    }
    if last.is_empty() && !first.is_empty() {
        std::mem::swap(&mut first, &mut last);
    }
    let id = m.id();
    let searched = searched.trim();
    let (business, mobile) = if e164.starts_with("+491") {
        // German mobile numbers start with 015x/016x/017x.
        (String::new(), searched.to_owned())
    } else {
        (searched.to_owned(), String::new())
    };
    json!({"contacts": [{
        "ContactID": id,
        "FirstName": first,
        "LastName": last,
        "CompanyName": s("accountName"),
        "Email": s("emailAddress"),
        "PhoneBusiness": business,
        "PhoneMobile": mobile,
        "ContactUrl": format!("{ui_base}#{}/view/{id}", m.entity),
        "EntityType": m.entity,
        "EntityId": id,
    }]})
}
