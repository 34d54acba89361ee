//! The two systems of the Bankverbindungen sync behind [`BankEspo`] and [`BankAdvoware`],
//! implemented by the real clients. Errors are the Beteiligte sync's [`SideError`], with every
//! message passed through [`mask_ibans`] (an Advoware error body may echo the IBAN we sent).

use bitbylaw_core::ids::{BetNr, EspoId};
use futures::future::BoxFuture;
use redis::aio::ConnectionLike;
use serde_json::Value;

use crate::clients::advoware::{expand, template_problems, AdvowareClient, AdvowareError, Method};
use crate::clients::espocrm::{EspoCrmClient, EspoCrmError, NewNotification};
pub use crate::handlers::beteiligte::sides::{SideError, System};
use crate::sync::bankverbindungen::{espo_fields, mask_ibans, EspoBankverbindung, KontoId};

/// Advoware paths of a Beteiligter's Bankverbindungen (`[bankverbindungen.paths]`,
/// `BANKVERBINDUNGEN_PATH_*`). Not documented publicly (FACTS §1); the defaults follow the
/// Kommunikationen sub-resource (`…/Beteiligte/{betnr}/Kommunikationen[/{id}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankPaths {
    /// `GET`: all entries of a Beteiligter (a JSON array); `{betnr}`.
    pub list: String,
    /// `POST`: a new entry; `{betnr}`. The answer carries its id.
    pub create: String,
    /// `PUT`: replace an entry; `{betnr}`, `{id}`.
    pub update: String,
    /// `DELETE`: an entry; `{betnr}`, `{id}`.
    pub delete: String,
}

impl Default for BankPaths {
    fn default() -> Self {
        Self {
            list: "api/v1/advonet/Beteiligte/{betnr}/Bankverbindungen".into(),
            create: "api/v1/advonet/Beteiligte/{betnr}/Bankverbindungen".into(),
            update: "api/v1/advonet/Beteiligte/{betnr}/Bankverbindungen/{id}".into(),
            delete: "api/v1/advonet/Beteiligte/{betnr}/Bankverbindungen/{id}".into(),
        }
    }
}

impl BankPaths {
    /// Setting name and the placeholders it must have.
    pub const SETTINGS: [(&'static str, &'static [&'static str]); 4] = [
        ("list", &["betnr"]),
        ("create", &["betnr"]),
        ("update", &["betnr", "id"]),
        ("delete", &["betnr", "id"]),
    ];

    pub fn get_mut(&mut self, name: &str) -> Option<&mut String> {
        match name {
            "list" => Some(&mut self.list),
            "create" => Some(&mut self.create),
            "update" => Some(&mut self.update),
            "delete" => Some(&mut self.delete),
            _ => None,
        }
    }

    fn get(&self, name: &str) -> &str {
        match name {
            "list" => &self.list,
            "create" => &self.create,
            "update" => &self.update,
            _ => &self.delete,
        }
    }

    /// Every problem of every template, each naming its setting.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, required) in Self::SETTINGS {
            let template = self.get(name);
            for p in template_problems(template, required) {
                out.push(format!(
                    "bankverbindungen.paths.{name} / BANKVERBINDUNGEN_PATH_{}: {p} (in {template:?})",
                    name.to_ascii_uppercase()
                ));
            }
        }
        out
    }
}

/// What a `DELETE` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// 404: nothing there (deleted before, or by a person).
    AlreadyGone,
    /// 403: Advoware does not let the API delete it (as for Kommunikationen and Adressen).
    Refused,
}

fn failed(system: System, message: String, retryable: bool, status: Option<u16>) -> SideError {
    SideError::Failed {
        system,
        message: mask_ibans(&message),
        retryable,
        retry_after: None,
        status,
    }
}

/// The Beteiligte sync's classification, with the message masked.
fn masked(e: SideError) -> SideError {
    match e {
        SideError::Failed {
            system,
            message,
            retryable,
            retry_after,
            status,
        } => SideError::Failed {
            system,
            message: mask_ibans(&message),
            retryable,
            retry_after,
            status,
        },
        SideError::Unanswered { system, message } => SideError::Unanswered {
            system,
            message: mask_ibans(&message),
        },
        other => other,
    }
}

fn espo_error(e: EspoCrmError) -> SideError {
    masked(crate::handlers::beteiligte::sides::espo_error(e))
}

fn advoware_error(e: AdvowareError) -> SideError {
    masked(crate::handlers::beteiligte::sides::advoware_error(e))
}

/// 405 (and a 404 where the Beteiligter cannot be meant): the path setting does not fit.
fn mismatch(setting: &str, method: Method, e: &AdvowareError) -> SideError {
    crate::clients::advoware::ENDPOINT_MISMATCHES.inc();
    failed(
        System::Advoware,
        format!(
            "Advoware answered {} to {} for Bankverbindungen: the configured path does not fit this Advoware; check bankverbindungen.paths.{setting} / BANKVERBINDUNGEN_PATH_{} (README)",
            e.status().unwrap_or(0),
            method.as_str(),
            setting.to_ascii_uppercase()
        ),
        false,
        e.status(),
    )
}

/// EspoCRM as the sync needs it.
pub trait BankEspo: Send + Sync {
    /// The `CBankverbindungen` record; `None` on 404 (deleted).
    fn get_bank<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<EspoBankverbindung>, SideError>>;
    /// Partial update of the record.
    fn update_bank<'a>(
        &'a self,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<(), SideError>>;
    /// The linked `CBeteiligte`'s `betnr`: `None` = no such record, `Some(None)` = not yet in Advoware.
    fn betnr<'a>(
        &'a self,
        beteiligte: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<Option<BetNr>>, SideError>>;
    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), SideError>>;
    /// Every `CBankverbindungen` linked to `beteiligte` (for the audit).
    fn list_for<'a>(
        &'a self,
        beteiligte: &'a EspoId,
    ) -> BoxFuture<'a, Result<Vec<EspoBankverbindung>, SideError>>;
}

/// Advoware as the sync needs it.
pub trait BankAdvoware: Send + Sync {
    /// The Beteiligter's entries; `None` when Advoware answers 404 (no such Beteiligter).
    fn list(&self, bet_nr: BetNr) -> BoxFuture<'_, Result<Option<Vec<Value>>, SideError>>;
    /// `POST`; the stored entry. No usable answer → [`SideError::Unanswered`].
    fn create<'a>(
        &'a self,
        bet_nr: BetNr,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>>;
    /// `PUT` of the whole entry.
    fn update<'a>(
        &'a self,
        bet_nr: BetNr,
        id: &'a KontoId,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<(), SideError>>;
    fn delete<'a>(
        &'a self,
        bet_nr: BetNr,
        id: &'a KontoId,
    ) -> BoxFuture<'a, Result<Deleted, SideError>>;
}

impl BankEspo for EspoCrmClient {
    fn get_bank<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<EspoBankverbindung>, SideError>> {
        Box::pin(async move {
            match EspoCrmClient::get::<Value>(self, espo_fields::ENTITY, id).await {
                Ok(v) => serde_json::from_value(v).map(Some).map_err(|e| {
                    failed(
                        System::EspoCrm,
                        format!("unreadable CBankverbindungen record: {e}"),
                        false,
                        None,
                    )
                }),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(espo_error(e)),
            }
        })
    }

    fn update_bank<'a>(
        &'a self,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<(), SideError>> {
        Box::pin(async move {
            EspoCrmClient::update::<Value, _>(self, espo_fields::ENTITY, id, patch)
                .await
                .map(|_| ())
                .map_err(espo_error)
        })
    }

    fn betnr<'a>(
        &'a self,
        beteiligte: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<Option<BetNr>>, SideError>> {
        Box::pin(async move {
            let v = match EspoCrmClient::get::<Value>(self, "CBeteiligte", beteiligte).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(espo_error(e)),
            };
            Ok(Some(crate::sync::beteiligte::espo_betnr(&v)))
        })
    }

    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), SideError>> {
        Box::pin(async move {
            self.create_notification(n)
                .await
                .map(|_| ())
                .map_err(espo_error)
        })
    }

    fn list_for<'a>(
        &'a self,
        beteiligte: &'a EspoId,
    ) -> BoxFuture<'a, Result<Vec<EspoBankverbindung>, SideError>> {
        use crate::clients::espocrm::{ListQuery, Where};
        Box::pin(async move {
            let query = ListQuery::new().filter(Where::Equals(
                espo_fields::BETEILIGTE_ID.into(),
                beteiligte.to_string(),
            ));
            self.list_all::<EspoBankverbindung>(espo_fields::ENTITY, &query)
                .await
                .map_err(espo_error)
        })
    }
}

/// The Advoware client with the Bankverbindungen paths.
#[derive(Debug, Clone)]
pub struct AdvowareBank<C> {
    pub client: AdvowareClient<C>,
    pub paths: BankPaths,
}

impl<C> BankAdvoware for AdvowareBank<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn list(&self, bet_nr: BetNr) -> BoxFuture<'_, Result<Option<Vec<Value>>, SideError>> {
        Box::pin(async move {
            let n = bet_nr.to_string();
            let e = expand(&self.paths.list, &[("betnr", &n)]);
            match self.client.send_expanded(Method::Get, &e, None).await {
                Ok(Value::Null) => Ok(Some(Vec::new())),
                Ok(Value::Array(items)) => Ok(Some(items)),
                Ok(_) => Err(failed(
                    System::Advoware,
                    format!("unexpected answer on {}: not a list", e.path),
                    false,
                    None,
                )),
                Err(err) if err.status() == Some(404) && e.placeholder_in_path => Ok(None),
                Err(err) if matches!(err.status(), Some(404 | 405)) => {
                    Err(mismatch("list", Method::Get, &err))
                }
                Err(err) => Err(advoware_error(err)),
            }
        })
    }

    fn create<'a>(
        &'a self,
        bet_nr: BetNr,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async move {
            let n = bet_nr.to_string();
            let e = expand(&self.paths.create, &[("betnr", &n)]);
            match self
                .client
                .send_expanded(Method::Post, &e, Some(body))
                .await
            {
                Ok(v) => Ok(v),
                // The POST went out (token and body were fine) but no usable answer came.
                Err(err @ (AdvowareError::Transport { .. } | AdvowareError::Decode { .. })) => {
                    Err(SideError::Unanswered {
                        system: System::Advoware,
                        message: mask_ibans(&err.to_string()),
                    })
                }
                Err(err) if err.status() == Some(405) => {
                    Err(mismatch("create", Method::Post, &err))
                }
                Err(err) => Err(advoware_error(err)),
            }
        })
    }

    fn update<'a>(
        &'a self,
        bet_nr: BetNr,
        id: &'a KontoId,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<(), SideError>> {
        Box::pin(async move {
            let n = bet_nr.to_string();
            let e = expand(&self.paths.update, &[("betnr", &n), ("id", id.as_str())]);
            match self.client.send_expanded(Method::Put, &e, Some(body)).await {
                Ok(_) => Ok(()),
                Err(err) if err.status() == Some(405) => Err(mismatch("update", Method::Put, &err)),
                Err(err) => Err(advoware_error(err)),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        bet_nr: BetNr,
        id: &'a KontoId,
    ) -> BoxFuture<'a, Result<Deleted, SideError>> {
        Box::pin(async move {
            let n = bet_nr.to_string();
            let e = expand(&self.paths.delete, &[("betnr", &n), ("id", id.as_str())]);
            match self.client.send_expanded(Method::Delete, &e, None).await {
                Ok(_) => Ok(Deleted::Deleted),
                Err(err) if err.status() == Some(404) => Ok(Deleted::AlreadyGone),
                Err(err) if err.status() == Some(403) => Ok(Deleted::Refused),
                Err(err) if err.status() == Some(405) => {
                    Err(mismatch("delete", Method::Delete, &err))
                }
                Err(err) => Err(advoware_error(err)),
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn default_paths_are_valid_and_problems_name_the_setting() {
        assert!(BankPaths::default().problems().is_empty());
        let mut p = BankPaths::default();
        *p.get_mut("update").unwrap() = "api/v1/advonet/Beteiligte/{betnr}/Bankverbindungen".into();
        *p.get_mut("list").unwrap() = "http://x/{betnr}".into();
        let problems = p.problems().join("\n");
        assert!(
            problems.contains("bankverbindungen.paths.update"),
            "{problems}"
        );
        assert!(problems.contains("must contain {id}"), "{problems}");
        assert!(
            problems.contains("BANKVERBINDUNGEN_PATH_LIST"),
            "{problems}"
        );
        assert!(p.get_mut("nope").is_none());
    }
}
