//! The Bankverbindungen of a Beteiligter: `GET`/`POST …/Beteiligte/{betNr}/Bankverbindungen`,
//! `PUT`/`DELETE …/Bankverbindungen/{id}`.
//!
//! Advoware does not document this resource (FACTS §1: path and fields uncertain). The fake
//! behaves like its documented siblings, with these choices (README of the fakes):
//! - entries `{id, iban, bic, bank, kontoinhaber, bemerkung, rowId}`; `id` and `rowId` are the
//!   server's (ignored in bodies);
//! - `POST` and `PUT` refuse (400, ASP.NET `{"Message"}`) a missing or invalid IBAN (checked here
//!   with the fake's own mod-97 code) and a BIC that is not 8 or 11 letters/digits;
//! - `PUT` replaces the entry like the Beteiligte `PUT` (fields missing from the body are gone);
//! - `DELETE` works (200) unless [`super::AdvowareFake::deny_bank_delete`] makes it answer 403
//!   as Kommunikationen and Adressen do;
//! - every write changes the Beteiligter's `rowId` (the assumption the Kommunikationen make).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{
    authorized, bad_request, fmt_local, message, not_found_entity, parse_json_body, set,
    unauthorized, Shared,
};
use crate::server::json as json_response;

/// Write counter name of this resource.
pub const BANKVERBINDUNGEN: &str = "Bankverbindungen";

/// The resource's state inside the fake's.
#[derive(Debug, Default)]
pub(super) struct BankState {
    /// `betNr` → entries.
    pub(super) entries: std::collections::BTreeMap<i64, Vec<Value>>,
    pub(super) next_id: i64,
    pub(super) deny_delete: bool,
}

impl BankState {
    pub(super) fn take_id(&mut self) -> i64 {
        if self.next_id == 0 {
            self.next_id = 7_001;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// The fake's own IBAN check (independent of the worker's): A–Z/0–9, 15–34 long, mod 97 = 1.
pub fn iban_ok(raw: &str) -> bool {
    let s: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let rearranged = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u64 = 0;
    for c in rearranged.chars() {
        let Some(v) = c.to_digit(36) else {
            return false;
        };
        for d in v.to_string().chars() {
            rem = (rem * 10 + u64::from(d.to_digit(10).unwrap_or(0))) % 97;
        }
    }
    rem == 1
}

fn validate(body: &Value) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err("The request body must be a JSON object.".into());
    };
    match obj.get("iban").and_then(Value::as_str) {
        Some(i) if iban_ok(i) => {}
        Some(_) => return Err("Die IBAN ist ungültig.".into()),
        None => return Err("The iban field is required.".into()),
    }
    if let Some(bic) = obj.get("bic").filter(|v| !v.is_null()) {
        let ok = bic.as_str().is_some_and(|b| {
            (b.len() == 8 || b.len() == 11) && b.chars().all(|c| c.is_ascii_alphanumeric())
        });
        if !ok {
            return Err("Die BIC ist ungültig.".into());
        }
    }
    Ok(())
}

fn clean_body(mut body: Value) -> Value {
    if let Some(m) = body.as_object_mut() {
        for f in ["id", "rowId", "betNr"] {
            m.remove(f);
        }
    }
    body
}

fn parse_bet_nr(raw: &str) -> Result<i64, Response> {
    raw.parse::<i64>()
        .map_err(|_| bad_request(&format!("The value '{raw}' is not valid for betNr.")))
}

/// A write changed the Beteiligter: new `rowId`, `geaendertAm`.
fn touch(shared: &Shared, bet_nr: i64) {
    let now = shared.config.clock.now_berlin();
    let mut state = shared.state.lock();
    let row_id = state.next_row_id();
    if let Some(b) = state.beteiligte.get_mut(&bet_nr) {
        set(b, "rowId", json!(row_id));
        set(b, "geaendertAm", json!(fmt_local(now)));
    }
}

pub(super) async fn list(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(bet_nr): Path<String>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let bet_nr = match parse_bet_nr(&bet_nr) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let state = shared.state.lock();
    if !state.beteiligte.contains_key(&bet_nr) {
        return not_found_entity("Beteiligter");
    }
    let list = state.bank.entries.get(&bet_nr).cloned().unwrap_or_default();
    json_response(StatusCode::OK, Value::Array(list))
}

pub(super) async fn create(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(bet_nr): Path<String>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(BANKVERBINDUNGEN);
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let bet_nr = match parse_bet_nr(&bet_nr) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let entry = match parse_json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(text) = validate(&entry) {
        return bad_request(&text);
    }
    let mut entry = clean_body(entry);
    {
        let mut state = shared.state.lock();
        if !state.beteiligte.contains_key(&bet_nr) {
            return not_found_entity("Beteiligter");
        }
        let id = state.bank.take_id();
        let row_id = state.next_row_id();
        set(&mut entry, "id", json!(id));
        set(&mut entry, "rowId", json!(row_id));
        state
            .bank
            .entries
            .entry(bet_nr)
            .or_default()
            .push(entry.clone());
    }
    touch(&shared, bet_nr);
    json_response(StatusCode::CREATED, entry)
}

pub(super) async fn update(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((bet_nr, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    shared.state.lock().count_write(BANKVERBINDUNGEN);
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let (Ok(bet_nr), Ok(id)) = (bet_nr.parse::<i64>(), id.parse::<i64>()) else {
        return bad_request("The request is invalid.");
    };
    let body = match parse_json_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(text) = validate(&body) {
        return bad_request(&text);
    }
    let mut replaced = clean_body(body);
    let stored = {
        let mut state = shared.state.lock();
        let row_id = state.next_row_id();
        let found = state
            .bank
            .entries
            .get_mut(&bet_nr)
            .and_then(|l| {
                l.iter_mut()
                    .find(|e| e.get("id").and_then(Value::as_i64) == Some(id))
            })
            .map(|e| {
                set(&mut replaced, "id", json!(id));
                set(&mut replaced, "rowId", json!(row_id));
                *e = replaced.clone();
                e.clone()
            });
        match found {
            Some(e) => e,
            None => return not_found_entity("Bankverbindung"),
        }
    };
    touch(&shared, bet_nr);
    json_response(StatusCode::OK, stored)
}

pub(super) async fn delete(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((bet_nr, id)): Path<(String, String)>,
) -> Response {
    shared.state.lock().count_write(BANKVERBINDUNGEN);
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let (Ok(bet_nr), Ok(id)) = (bet_nr.parse::<i64>(), id.parse::<i64>()) else {
        return bad_request("The request is invalid.");
    };
    {
        let mut state = shared.state.lock();
        if state.bank.deny_delete {
            return message(
                StatusCode::FORBIDDEN,
                "The requested resource does not support http method 'DELETE'.",
            );
        }
        let Some(list) = state.bank.entries.get_mut(&bet_nr) else {
            return not_found_entity("Bankverbindung");
        };
        let before = list.len();
        list.retain(|e| e.get("id").and_then(Value::as_i64) != Some(id));
        if list.len() == before {
            return not_found_entity("Bankverbindung");
        }
    }
    touch(&shared, bet_nr);
    json_response(StatusCode::OK, Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iban_check_is_mod_97() {
        assert!(iban_ok("DE89370400440532013000"));
        assert!(iban_ok("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_ok("DE89370400440532013001"));
        assert!(!iban_ok("DE89"));
    }
}
