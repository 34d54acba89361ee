//! The real clients behind the engine's [`AdvowareApi`] and [`GoogleApi`].

use bitbylaw_core::ids::{FrNr, Kuerzel};
use futures::future::BoxFuture;
use redis::aio::ConnectionLike;
use serde_json::Value;

use super::engine::{AdvowareApi, GoogleApi, SideError};
use crate::clients::advoware::{AdvowareClient, AdvowareError};
use crate::clients::google::{GoogleCalendarClient, GoogleError};
use crate::sync::calendar::diff::{GoogleEvent, Side};
use crate::sync::calendar::mapping::{AdvowareTermin, EventData};
use crate::sync::calendar::scope::{EventChanges, Window};

fn advoware_error(e: AdvowareError) -> SideError {
    if let AdvowareError::EndpointMismatch { .. } = e {
        return SideError::Misconfigured {
            side: Side::Advoware,
            message: e.to_string(),
        };
    }
    SideError::Failed {
        side: Side::Advoware,
        retryable: e.is_retryable(),
        retry_after: e.retry_after(),
        message: e.to_string(),
    }
}

/// Reads one listed appointment. A record that does not deserialise keeps its `frNr` (if it
/// has one) with nothing else, so the planner reports it as unreadable and leaves its pair
/// alone instead of taking it for deleted.
pub fn termin_from_value(v: Value) -> Option<AdvowareTermin> {
    let fr_nr = v
        .get("frNr")
        .and_then(|f| serde_json::from_value::<FrNr>(f.clone()).ok());
    match serde_json::from_value::<AdvowareTermin>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(frnr = ?fr_nr, error = %e, "unreadable Advoware appointment");
            fr_nr.map(|f| AdvowareTermin {
                fr_nr: Some(f),
                ..Default::default()
            })
        }
    }
}

impl<C> AdvowareApi for AdvowareClient<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn list_employees(&self) -> BoxFuture<'_, Result<Vec<Kuerzel>, SideError>> {
        Box::pin(async move {
            let list = self.list_mitarbeiter().await.map_err(advoware_error)?;
            Ok(list
                .iter()
                .filter_map(|m| m.get("kuerzel").and_then(Value::as_str))
                .filter_map(|k| match Kuerzel::new(k) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        tracing::warn!(kuerzel = k, error = %e, "employee with an unusable Kürzel skipped");
                        None
                    }
                })
                .collect())
        })
    }

    fn list_termine<'a>(
        &'a self,
        kuerzel: &'a Kuerzel,
        window: Window,
    ) -> BoxFuture<'a, Result<Vec<AdvowareTermin>, SideError>> {
        Box::pin(async move {
            let list = AdvowareClient::list_termine(self, kuerzel.as_str(), window.from, window.to)
                .await
                .map_err(advoware_error)?;
            Ok(list.into_iter().filter_map(termin_from_value).collect())
        })
    }

    fn get_termin(&self, frnr: FrNr) -> BoxFuture<'_, Result<Option<AdvowareTermin>, SideError>> {
        Box::pin(async move {
            // The client decides what means "deleted" (FACTS §1 read form, see `termin_get`).
            match AdvowareClient::get_termin(self, frnr.0 as i64).await {
                Ok(v) => Ok(v.and_then(termin_from_value)),
                Err(e) => Err(advoware_error(e)),
            }
        })
    }

    fn create_termin<'a>(
        &'a self,
        t: &'a AdvowareTermin,
    ) -> BoxFuture<'a, Result<FrNr, SideError>> {
        Box::pin(async move {
            let body = serde_json::to_value(t).map_err(|e| SideError::Failed {
                side: Side::Advoware,
                message: format!("cannot encode appointment: {e}"),
                retryable: false,
                retry_after: None,
            })?;
            let answer = AdvowareClient::create_termin(self, &body)
                .await
                .map_err(advoware_error)?;
            answer
                .get("frNr")
                .and_then(|f| serde_json::from_value::<FrNr>(f.clone()).ok())
                .ok_or_else(|| SideError::Failed {
                    side: Side::Advoware,
                    // Retryable: the appointment may exist now; the pending marker makes the
                    // next run adopt it instead of creating it twice.
                    message: "create answer carries no frNr".into(),
                    retryable: true,
                    retry_after: None,
                })
        })
    }

    fn update_termin<'a>(
        &'a self,
        frnr: FrNr,
        t: &'a AdvowareTermin,
    ) -> BoxFuture<'a, Result<(), SideError>> {
        Box::pin(async move {
            let mut body = serde_json::to_value(t).map_err(|e| SideError::Failed {
                side: Side::Advoware,
                message: format!("cannot encode appointment: {e}"),
                retryable: false,
                retry_after: None,
            })?;
            if let Some(o) = body.as_object_mut() {
                o.insert("frNr".into(), Value::from(frnr.0));
            }
            AdvowareClient::update_termin(self, frnr.0 as i64, &body)
                .await
                .map(|_| ())
                .map_err(advoware_error)
        })
    }

    fn delete_termin(&self, frnr: FrNr) -> BoxFuture<'_, Result<(), SideError>> {
        Box::pin(async move {
            match AdvowareClient::delete_termin(self, frnr.0 as i64).await {
                Ok(()) => Ok(()),
                Err(e) if e.status() == Some(404) => Ok(()),
                Err(e) => Err(advoware_error(e)),
            }
        })
    }
}

fn google_error(e: GoogleError) -> SideError {
    match e {
        GoogleError::SyncTokenExpired => SideError::SyncTokenExpired,
        e => SideError::Failed {
            side: Side::Google,
            retryable: e.is_retryable(),
            retry_after: e.retry_after(),
            message: e.to_string(),
        },
    }
}

impl<C> GoogleApi for GoogleCalendarClient<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn find_or_create_calendar<'a>(
        &'a self,
        summary: &'a str,
    ) -> BoxFuture<'a, Result<String, SideError>> {
        Box::pin(async move {
            GoogleCalendarClient::find_or_create_calendar(self, summary)
                .await
                .map_err(google_error)
        })
    }

    fn list_events<'a>(
        &'a self,
        calendar_id: &'a str,
        sync_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<EventChanges, SideError>> {
        Box::pin(async move {
            match GoogleCalendarClient::list_events(self, calendar_id, sync_token).await {
                Ok(c) => Ok(c),
                // Listing a calendar that does not exist: it was deleted by someone.
                Err(GoogleError::NotFound) => Err(SideError::CalendarNotFound),
                Err(e) => Err(google_error(e)),
            }
        })
    }

    fn insert_event<'a>(
        &'a self,
        calendar_id: &'a str,
        event: &'a EventData,
    ) -> BoxFuture<'a, Result<GoogleEvent, SideError>> {
        Box::pin(async move {
            GoogleCalendarClient::insert_event(self, calendar_id, event)
                .await
                .map_err(google_error)
        })
    }

    fn update_event<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
        event: &'a EventData,
    ) -> BoxFuture<'a, Result<GoogleEvent, SideError>> {
        Box::pin(async move {
            GoogleCalendarClient::update_event(self, calendar_id, event_id, event)
                .await
                .map_err(google_error)
        })
    }

    fn delete_event<'a>(
        &'a self,
        calendar_id: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SideError>> {
        Box::pin(async move {
            GoogleCalendarClient::delete_event(self, calendar_id, event_id)
                .await
                .map_err(google_error)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unreadable_appointments_keep_their_number() {
        let ok = termin_from_value(json!({"frNr": 5, "datum": "2026-12-01T00:00:00"})).unwrap();
        assert_eq!(ok.fr_nr, Some(FrNr(5)));
        let odd = termin_from_value(json!({"frNr": 6, "datum": 17})).unwrap();
        assert_eq!(
            odd,
            AdvowareTermin {
                fr_nr: Some(FrNr(6)),
                ..Default::default()
            }
        );
        assert!(termin_from_value(json!({"datum": 17})).is_none());
    }
}
