//! The real `google-calendar3` client against the fake: proves the fake speaks the dialect the
//! worker's client uses (paths, `alt=json`, JSON shapes, date-time formats, error bodies).

use std::collections::HashMap;

use bitbylaw_fakes::google_calendar::{self, GoogleCalendarConfig, GoogleCalendarFake};
use chrono::TimeZone;
use google_calendar3::api::{Event, EventDateTime, EventExtendedProperties};
use google_calendar3::{hyper_rustls, hyper_util, CalendarHub};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

fn hub(
    fake: &GoogleCalendarFake,
    token: &str,
) -> Result<CalendarHub<Connector>, Box<dyn std::error::Error>> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let mut hub = CalendarHub::new(client, token.to_owned());
    hub.base_url(fake.api_base_url());
    hub.root_url(fake.root_url());
    Ok(hub)
}

fn event(summary: &str, day: u32, fr_nr: &str) -> Result<Event, Box<dyn std::error::Error>> {
    let at = |h: u32, m: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, day, h, m, 0)
            .single()
            .ok_or("valid date")
    };
    Ok(Event {
        summary: Some(summary.to_owned()),
        start: Some(EventDateTime {
            date_time: Some(at(8, 30)?),
            time_zone: Some("Europe/Berlin".into()),
            ..Default::default()
        }),
        end: Some(EventDateTime {
            date_time: Some(at(9, 15)?),
            time_zone: Some("Europe/Berlin".into()),
            ..Default::default()
        }),
        extended_properties: Some(EventExtendedProperties {
            private: Some(HashMap::from([(
                "advowareFrNr".to_owned(),
                fr_nr.to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn google_calendar3_full_and_incremental_sync() -> TestResult {
    let fake = google_calendar::start(GoogleCalendarConfig::default()).await?;
    let token = fake.config().static_token.clone().ok_or("static token")?;
    let hub = hub(&fake, &token)?;

    let mut ids = Vec::new();
    for (i, day) in [1u32, 2, 3].iter().enumerate() {
        let (_, created) = hub
            .events()
            .insert(
                event(&format!("T{i}"), *day, &format!("4821{i}"))?,
                "primary",
            )
            .doit()
            .await?;
        assert_eq!(created.sequence, Some(0));
        assert!(created.updated.is_some() && created.etag.is_some());
        ids.push(created.id.ok_or("id")?);
    }
    // Full sync in pages of two.
    let (_, page1) = hub.events().list("primary").max_results(2).doit().await?;
    assert_eq!(page1.items.as_ref().map(Vec::len), Some(2));
    let page_token = page1.next_page_token.ok_or("next page")?;
    let (_, page2) = hub
        .events()
        .list("primary")
        .max_results(2)
        .page_token(&page_token)
        .doit()
        .await?;
    let sync_token = page2.next_sync_token.ok_or("sync token on last page")?;

    // Change one, delete one; the incremental list shows both.
    let patch = Event {
        summary: Some("geändert".into()),
        ..Default::default()
    };
    let (_, patched) = hub.events().patch(patch, "primary", &ids[0]).doit().await?;
    assert_eq!(patched.summary.as_deref(), Some("geändert"));
    assert_eq!(
        patched
            .extended_properties
            .and_then(|p| p.private)
            .and_then(|p| p.get("advowareFrNr").cloned())
            .as_deref(),
        Some("48210")
    );
    hub.events().delete("primary", &ids[1]).doit().await?;
    let (_, changes) = hub
        .events()
        .list("primary")
        .sync_token(&sync_token)
        .doit()
        .await?;
    let items = changes.items.unwrap_or_default();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .any(|e| e.id.as_deref() == Some(ids[1].as_str())
            && e.status.as_deref() == Some("cancelled")));

    // An invalidated sync token surfaces as a 410 error body the client can read.
    fake.invalidate_sync_tokens();
    let err = hub
        .events()
        .list("primary")
        .sync_token(&sync_token)
        .doit()
        .await
        .err()
        .ok_or("expected 410")?;
    match err {
        google_calendar3::Error::BadRequest(body) => assert_eq!(body["error"]["code"], 410),
        other => return Err(format!("unexpected error {other:?}").into()),
    }
    assert_eq!(fake.calls("primary").writes, 5);
    Ok(())
}

#[tokio::test]
async fn google_calendar3_calendars_and_bad_token() -> TestResult {
    let fake = google_calendar::start(GoogleCalendarConfig::default()).await?;
    let token = fake.config().static_token.clone().ok_or("static token")?;
    let hub = hub(&fake, &token)?;
    let cal = google_calendar3::api::Calendar {
        summary: Some("AB".into()),
        ..Default::default()
    };
    let (_, created) = hub.calendars().insert(cal).doit().await?;
    let id = created.id.ok_or("id")?;
    let (_, list) = hub.calendar_list().list().doit().await?;
    assert!(list
        .items
        .unwrap_or_default()
        .iter()
        .any(|c| c.id.as_deref() == Some(id.as_str())));
    hub.events().insert(event("x", 4, "1")?, &id).doit().await?;
    assert_eq!(fake.live_events(&id).len(), 1);

    let wrong = self::hub(&fake, "not-a-token")?;
    assert!(wrong.events().list(&id).doit().await.is_err());
    Ok(())
}
