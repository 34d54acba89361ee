//! The two systems of the Beteiligte sync behind [`EspoSide`] and [`AdvowareSide`], implemented
//! by the real clients. Errors collapse into [`SideError`]: what the engine branches on (gone,
//! duplicate) plus retryable/permanent for the queue.

use std::time::Duration;

use bitbylaw_core::ids::{BetNr, EspoId};
use futures::future::BoxFuture;
use redis::aio::ConnectionLike;
use serde_json::Value;

use crate::clients::advoware::{AdvowareClient, AdvowareError};
use crate::clients::espocrm::{EspoCrmClient, EspoCrmError, ListQuery, NewNotification};
use crate::sync::beteiligte::model::espo_fields;
use crate::sync::beteiligte::{AdvowareBeteiligter, EspoBeteiligte};

/// Which system failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    EspoCrm,
    Advoware,
}

/// A failed call on one side. No variant carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// EspoCRM's duplicate check refused a create (ids of the similar records).
    #[error("EspoCRM duplicate of {0:?}")]
    Duplicate(Vec<String>),
    /// A write whose answer never arrived or could not be read (timeout, connection lost): it
    /// may have been carried out. Retryable; the engine does not repeat a create after it.
    #[error("{system:?}: no usable answer to a write: {message}")]
    Unanswered { system: System, message: String },
    /// Anything else.
    #[error("{system:?}: {message}")]
    Failed {
        system: System,
        message: String,
        /// Worth retrying later (network, 5xx, 429).
        retryable: bool,
        /// The side's own hint.
        retry_after: Option<Duration>,
        /// The HTTP status, if there was an answer (404 on an update: the record is gone).
        status: Option<u16>,
    },
}

impl SideError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Failed {
                retryable: true,
                ..
            } | Self::Unanswered { .. }
        )
    }
    /// Whether the failed call may still have written (no answer to it arrived).
    pub fn may_have_written(&self) -> bool {
        matches!(self, Self::Unanswered { .. })
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Failed { retry_after, .. } => *retry_after,
            Self::Duplicate(_) | Self::Unanswered { .. } => None,
        }
    }
}

pub(crate) fn espo_error(e: EspoCrmError) -> SideError {
    match e {
        EspoCrmError::Duplicate { duplicates, .. } => {
            SideError::Duplicate(duplicates.into_iter().map(|d| d.id).collect())
        }
        e => SideError::Failed {
            system: System::EspoCrm,
            retryable: e.is_retryable(),
            retry_after: e.retry_after(),
            status: e.status(),
            message: e.to_string(),
        },
    }
}

pub(crate) fn advoware_error(e: AdvowareError) -> SideError {
    SideError::Failed {
        system: System::Advoware,
        retryable: e.is_retryable(),
        retry_after: e.retry_after(),
        status: e.status(),
        message: e.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(system: System, v: Value) -> Result<T, SideError> {
    serde_json::from_value(v).map_err(|e| SideError::Failed {
        system,
        message: format!("unreadable record: {e}"),
        retryable: false,
        retry_after: None,
        status: None,
    })
}

/// EspoCRM as the sync needs it.
pub trait EspoSide: Send + Sync {
    /// The current record; `None` when EspoCRM answers 404 (deleted meanwhile).
    fn get<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<EspoBeteiligte>, SideError>>;
    /// Partial update (`patch` is a JSON object of attributes); returns the record after it.
    fn update<'a>(
        &'a self,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<EspoBeteiligte, SideError>>;
    /// All records matching the query (the 15-minute check).
    fn list<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<EspoBeteiligte>, SideError>>;
    /// An in-app notification.
    fn notify<'a>(&'a self, n: &'a NewNotification) -> BoxFuture<'a, Result<(), SideError>>;

    /// The `CAdressen` records of a Beteiligter (issue 12); `None` when this EspoCRM keeps no
    /// such entity (404), which switches the Adressen sync off for it. A side that does not
    /// implement it (a test double) answers `None`.
    fn list_adressen<'a>(
        &'a self,
        _id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<Vec<Value>>, SideError>> {
        Box::pin(async { Ok(None) })
    }
    /// Creates a `CAdressen` record (`body` carries the link attribute).
    fn create_adresse<'a>(&'a self, _body: &'a Value) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async { Err(unsupported(System::EspoCrm, "create_adresse")) })
    }
    /// Partial update of a `CAdressen` record.
    fn update_adresse<'a>(
        &'a self,
        _id: &'a str,
        _patch: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async { Err(unsupported(System::EspoCrm, "update_adresse")) })
    }
}

/// What a side without an optional call answers (test doubles only implement what they need).
fn unsupported(system: System, call: &str) -> SideError {
    SideError::Failed {
        system,
        message: format!("{call} is not supported by this side"),
        retryable: false,
        retry_after: None,
        status: None,
    }
}

/// Advoware as the sync needs it.
pub trait AdvowareSide: Send + Sync {
    /// The current record; `None` on 404 (deleted in Advoware).
    fn get(&self, bet_nr: BetNr) -> BoxFuture<'_, Result<Option<AdvowareBeteiligter>, SideError>>;
    /// `POST`: the created record with its `betNr` and `rowId`.
    fn create<'a>(
        &'a self,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>>;
    /// `PUT`, which replaces the whole record: pass the record from [`AdvowareSide::get`] with
    /// the synced fields changed (`sync::beteiligte::to_advoware`). Returns the stored record.
    fn replace<'a>(
        &'a self,
        bet_nr: BetNr,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>>;

    /// `POST …/Kommunikationen`: the stored entry with its id (issue 12).
    fn create_kommunikation<'a>(
        &'a self,
        _bet_nr: BetNr,
        _body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async { Err(unsupported(System::Advoware, "create_kommunikation")) })
    }
    /// `PUT …/Kommunikationen/{id}` (`kommKz` stays what it was; never DELETE: 403).
    fn update_kommunikation<'a>(
        &'a self,
        _bet_nr: BetNr,
        _id: i64,
        _body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async { Err(unsupported(System::Advoware, "update_kommunikation")) })
    }
    /// `POST …/Adressen`: every field; the stored address with its id.
    fn create_adresse<'a>(
        &'a self,
        _bet_nr: BetNr,
        _body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async { Err(unsupported(System::Advoware, "create_adresse")) })
    }
    /// `PUT …/Adressen/{id}`: only `strasse`, `plz`, `ort`, `anschrift` take effect.
    fn update_adresse<'a>(
        &'a self,
        _bet_nr: BetNr,
        _id: i64,
        _body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async { Err(unsupported(System::Advoware, "update_adresse")) })
    }
}

impl EspoSide for EspoCrmClient {
    fn get<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<EspoBeteiligte>, SideError>> {
        Box::pin(async move {
            match EspoCrmClient::get::<Value>(self, espo_fields::ENTITY, id).await {
                Ok(v) => decode(System::EspoCrm, v).map(Some),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(espo_error(e)),
            }
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a EspoId,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<EspoBeteiligte, SideError>> {
        Box::pin(async move {
            let v: Value = EspoCrmClient::update(self, espo_fields::ENTITY, id, patch)
                .await
                .map_err(espo_error)?;
            decode(System::EspoCrm, v)
        })
    }

    fn list<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<EspoBeteiligte>, SideError>> {
        Box::pin(async move {
            let list: Vec<Value> = self
                .list_all(espo_fields::ENTITY, query)
                .await
                .map_err(espo_error)?;
            // One unreadable record must not hide the others from the check.
            Ok(list
                .into_iter()
                .filter_map(|v| match serde_json::from_value::<EspoBeteiligte>(v) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable CBeteiligte record skipped");
                        None
                    }
                })
                .collect())
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

    fn list_adressen<'a>(
        &'a self,
        id: &'a EspoId,
    ) -> BoxFuture<'a, Result<Option<Vec<Value>>, SideError>> {
        Box::pin(async move {
            let query = ListQuery::new().filter(crate::clients::espocrm::Where::equals(
                espo_fields::ADRESSEN_LINK,
                id.as_str(),
            ));
            match self.list_all(espo_fields::ADRESSEN_ENTITY, &query).await {
                Ok(list) => Ok(Some(list)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(espo_error(e)),
            }
        })
    }

    fn create_adresse<'a>(&'a self, body: &'a Value) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async move {
            // An address is no person: EspoCRM's duplicate check does not apply.
            self.create(espo_fields::ADRESSEN_ENTITY, body, true)
                .await
                .map_err(espo_error)
        })
    }

    fn update_adresse<'a>(
        &'a self,
        id: &'a str,
        patch: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        Box::pin(async move {
            let id = EspoId::new(id).map_err(|e| SideError::Failed {
                system: System::EspoCrm,
                message: format!("invalid CAdressen id: {e}"),
                retryable: false,
                retry_after: None,
                status: None,
            })?;
            self.update(espo_fields::ADRESSEN_ENTITY, &id, patch)
                .await
                .map_err(espo_error)
        })
    }
}

impl<C> AdvowareSide for AdvowareClient<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn get(&self, bet_nr: BetNr) -> BoxFuture<'_, Result<Option<AdvowareBeteiligter>, SideError>> {
        Box::pin(async move {
            match self.get_beteiligter(bet_nr).await {
                Ok(Some(v)) => decode(System::Advoware, v).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(advoware_error(e)),
            }
        })
    }

    fn create<'a>(
        &'a self,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>> {
        Box::pin(async move {
            let body = encode(b)?;
            let unanswered = |message: String| SideError::Unanswered {
                system: System::Advoware,
                message,
            };
            let create_path = self.beteiligte_create_path();
            let v = self.create_beteiligter(&body).await.map_err(|e| match &e {
                // The POST went out (token and body were fine) but no usable answer came.
                AdvowareError::Transport { path, .. } | AdvowareError::Decode { path, .. }
                    if *path == create_path =>
                {
                    unanswered(e.to_string())
                }
                _ => advoware_error(e),
            })?;
            // A success answer we cannot use: the record exists, we cannot tell which.
            let created: AdvowareBeteiligter =
                decode(System::Advoware, v).map_err(|e| unanswered(e.to_string()))?;
            if created.bet_nr.is_none() {
                return Err(unanswered("create answer carries no betNr".into()));
            }
            Ok(created)
        })
    }

    fn replace<'a>(
        &'a self,
        bet_nr: BetNr,
        b: &'a AdvowareBeteiligter,
    ) -> BoxFuture<'a, Result<AdvowareBeteiligter, SideError>> {
        Box::pin(async move {
            let body = encode(b)?;
            let v = self
                .update_beteiligter(bet_nr, &body)
                .await
                .map_err(advoware_error)?;
            decode(System::Advoware, v)
        })
    }

    fn create_kommunikation<'a>(
        &'a self,
        bet_nr: BetNr,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        advoware_call(AdvowareClient::create_kommunikation(self, bet_nr, body))
    }

    fn update_kommunikation<'a>(
        &'a self,
        bet_nr: BetNr,
        id: i64,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        advoware_call(AdvowareClient::update_kommunikation(self, bet_nr, id, body))
    }

    fn create_adresse<'a>(
        &'a self,
        bet_nr: BetNr,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        advoware_call(AdvowareClient::create_adresse(self, bet_nr, body))
    }

    fn update_adresse<'a>(
        &'a self,
        bet_nr: BetNr,
        id: i64,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Value, SideError>> {
        advoware_call(AdvowareClient::update_adresse(self, bet_nr, id, body))
    }
}

/// A sub-record call of the client as a side call.
fn advoware_call<'a>(
    call: impl std::future::Future<Output = Result<Value, AdvowareError>> + Send + 'a,
) -> BoxFuture<'a, Result<Value, SideError>> {
    Box::pin(async move { call.await.map_err(advoware_error) })
}

fn encode(b: &AdvowareBeteiligter) -> Result<Value, SideError> {
    serde_json::to_value(b).map_err(|e| SideError::Failed {
        system: System::Advoware,
        message: format!("cannot encode Beteiligter: {e}"),
        retryable: false,
        retry_after: None,
        status: None,
    })
}
