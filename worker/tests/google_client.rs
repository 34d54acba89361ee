//! The Google Calendar client against the Google fake (`bitbylaw-fakes`) over loopback and a real
//! `redis-server`: service-account token flow, calendar lookup, event CRUD, incremental sync,
//! quota backoff shared through Redis, 5xx retries, key file errors.
#![allow(clippy::expect_used, clippy::unwrap_used)] // In tests a failed expect is a failed test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bitbylaw_fakes::google_calendar::{self, GoogleCalendarConfig, GoogleCalendarFake, RateLimit};
use bitbylaw_fakes::redis_server::RedisServer;
use bitbylaw_worker::clients::google::{
    EventChange, GoogleCalendarClient, GoogleError, CALENDAR_SCOPE,
};
use bitbylaw_worker::config::GoogleSettings;
use bitbylaw_worker::keys::GOOGLE_BACKOFF;
use bitbylaw_worker::ratelimit::TokenBucket;
use bitbylaw_worker::sync::calendar::mapping::{EventData, EventTime, FRNR_PROPERTY, TIME_ZONE};
use chrono::{NaiveDate, TimeZone, Utc};
use futures::StreamExt as _;
use redis::aio::MultiplexedConnection;
use serde_json::json;

const CLIENT_EMAIL: &str = "bitbylaw-sync@fake-project.iam.gserviceaccount.com";
const SUBJECT: &str = "kalender@fake-kanzlei.test";

type Client = GoogleCalendarClient<MultiplexedConnection>;

struct Env {
    fake: GoogleCalendarFake,
    redis: RedisServer,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let fake = google_calendar::start(GoogleCalendarConfig::default())
        .await
        .expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    // A fresh RSA key per run (openssl), never one stored in git.
    let written = fake
        .write_service_account_key(dir.path(), CLIENT_EMAIL)
        .expect("service-account key");
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(written).expect("read key")).expect("json");
    // Deliberately the real endpoint: the settings' token_uri must override it.
    key["token_uri"] = json!("https://oauth2.googleapis.com/token");
    std::fs::write(dir.path().join("key.json"), key.to_string()).expect("write key");
    Env {
        fake,
        redis: RedisServer::start(false),
        dir,
    }
}

impl Env {
    fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.json")
    }

    fn settings(&self) -> GoogleSettings {
        GoogleSettings {
            service_account_path: Some(self.key_path()),
            subject: Some(SUBJECT.into()),
            api_base_url: self.fake.api_base_url(),
            root_url: self.fake.root_url(),
            token_uri: Some(self.fake.token_url()),
            requests_per_minute: 6000,
            rate_limit_retries: 4,
        }
    }

    async fn client_with(&self, settings: &GoogleSettings) -> Result<Client, GoogleError> {
        let bucket = TokenBucket::new(self.redis.conn().await, settings.requests_per_minute);
        Ok(GoogleCalendarClient::from_settings(settings, bucket)
            .await?
            .with_backoff_base(Duration::from_millis(10)))
    }

    async fn client(&self) -> Client {
        self.client_with(&self.settings()).await.expect("client")
    }
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, d).expect("date")
}

fn timed(d: u32, h: u32) -> EventTime {
    EventTime::DateTime {
        utc: Utc
            .with_ymd_and_hms(2026, 12, d, h, 0, 0)
            .single()
            .expect("time"),
        tz: TIME_ZONE.into(),
    }
}

fn data(title: &str, fr_nr: u32, d: u32) -> EventData {
    EventData {
        summary: Some(title.into()),
        description: Some(format!("Notiz {title}")),
        location: Some("Kanzlei".into()),
        start: timed(d, 8),
        end: timed(d, 9),
        recurrence: vec![],
        private_properties: BTreeMap::from([(FRNR_PROPERTY.into(), fr_nr.to_string())]),
    }
}

#[tokio::test]
async fn service_account_token_from_the_fake_endpoint() {
    let env = env().await;
    let client = env.client().await;
    assert!(client.calendar_exists("primary").await.expect("exists"));
    assert!(client
        .calendar_exists("primary")
        .await
        .expect("exists again"));
    assert_eq!(env.fake.token_requests(), 1, "token is cached");
    let tokens = env.fake.issued_tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].iss, CLIENT_EMAIL);
    assert_eq!(tokens[0].sub.as_deref(), Some(SUBJECT));
    assert_eq!(tokens[0].scope, CALENDAR_SCOPE);
}

#[tokio::test]
async fn find_or_create_calendar_creates_once_then_finds() {
    let env = env().await;
    let client = env.client().await;
    let before = env.fake.calendar_ids().len();
    let id = client
        .find_or_create_calendar("Advoware SB")
        .await
        .expect("create");
    assert_eq!(env.fake.calendar_ids().len(), before + 1);
    let again = client
        .find_or_create_calendar("Advoware SB")
        .await
        .expect("find");
    assert_eq!(again, id);
    assert_eq!(
        env.fake.calendar_ids().len(),
        before + 1,
        "no second insert"
    );
    assert!(client.calendar_exists(&id).await.expect("exists"));
    assert!(!client
        .calendar_exists("nichtda@group.calendar.google.com")
        .await
        .expect("404 is false"));
}

#[tokio::test]
async fn insert_full_list_then_incremental_changes() {
    let env = env().await;
    let client = env.client().await;
    let cal = client.find_or_create_calendar("Sync").await.expect("cal");
    let a = client
        .insert_event(&cal, &data("A", 1, 1))
        .await
        .expect("insert a");
    let b = client
        .insert_event(&cal, &data("B", 2, 2))
        .await
        .expect("insert b");
    assert_eq!(a.data, data("A", 1, 1));
    assert!(a.updated.is_some() && !a.id.is_empty());

    let full = client.list_events(&cal, None).await.expect("full");
    assert_eq!(full.changes.len(), 2);
    assert!(full.changes.contains(&EventChange::Live(a.clone())));
    assert!(full.changes.contains(&EventChange::Live(b.clone())));

    let none = client
        .list_events(&cal, Some(&full.next_sync_token))
        .await
        .expect("nothing changed");
    assert!(none.changes.is_empty());

    env.fake
        .user_delete_event(&cal, &b.id)
        .expect("user delete");
    let user = env
        .fake
        .user_insert_event(
            &cal,
            json!({"summary": "vom Nutzer", "start": {"date": "2026-12-05"}, "end": {"date": "2026-12-06"}}),
        )
        .expect("user insert");
    let changes = client
        .list_events(&cal, Some(&full.next_sync_token))
        .await
        .expect("incremental");
    assert_eq!(changes.changes.len(), 2, "{:?}", changes.changes);
    assert!(changes
        .changes
        .contains(&EventChange::Cancelled(b.id.clone())));
    let live = changes
        .changes
        .iter()
        .find_map(|c| match c {
            EventChange::Live(e) => Some(e),
            _ => None,
        })
        .expect("user event");
    assert_eq!(live.id, user["id"].as_str().expect("id"));
    assert_eq!(live.data.start, EventTime::Date(day(5)));
    assert_eq!(live.data.summary.as_deref(), Some("vom Nutzer"));
    assert_ne!(changes.next_sync_token, full.next_sync_token);
}

#[tokio::test]
async fn update_clears_fields_and_keeps_user_properties() {
    let env = env().await;
    let client = env.client().await;
    let cal = client.find_or_create_calendar("Sync").await.expect("cal");
    let mut series = data("Serie", 7, 7);
    series.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=5".into()];
    let created = client.insert_event(&cal, &series).await.expect("insert");
    env.fake
        .user_patch_event(
            &cal,
            &created.id,
            json!({
                "extendedProperties": {"private": {"userTag": "behalten"}},
                "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 5}]},
                "colorId": "5",
            }),
        )
        .expect("user patch");

    let mut wanted = data("Serie (geändert)", 7, 8);
    wanted.description = None;
    wanted.location = None;
    wanted.recurrence = vec![];
    wanted.start = EventTime::Date(day(8));
    wanted.end = EventTime::Date(day(9));
    let updated = client
        .update_event(&cal, &created.id, &wanted)
        .await
        .expect("update");
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.data.description, None);
    assert_eq!(updated.data.recurrence, Vec::<String>::new());
    assert_eq!(updated.data.start, EventTime::Date(day(8)));
    assert_eq!(
        updated
            .data
            .private_properties
            .get("userTag")
            .map(String::as_str),
        Some("behalten")
    );

    let stored = env.fake.event(&cal, &created.id).expect("stored");
    assert!(stored.get("description").is_none(), "{stored}");
    assert!(stored.get("location").is_none(), "{stored}");
    assert!(
        stored["recurrence"].as_array().is_none_or(Vec::is_empty),
        "{stored}"
    );
    assert_eq!(stored["summary"], "Serie (geändert)");
    assert_eq!(stored["start"], json!({"date": "2026-12-08"}));
    assert_eq!(
        stored["extendedProperties"]["private"]["userTag"],
        "behalten"
    );
    assert_eq!(stored["extendedProperties"]["private"][FRNR_PROPERTY], "7");
    assert_eq!(stored["reminders"]["overrides"][0]["minutes"], 5);
    assert_eq!(stored["colorId"], "5");
}

#[tokio::test]
async fn delete_twice_and_unknown_are_ok() {
    let env = env().await;
    let client = env.client().await;
    let cal = client.find_or_create_calendar("Sync").await.expect("cal");
    let e = client
        .insert_event(&cal, &data("weg", 3, 3))
        .await
        .expect("insert");
    client.delete_event(&cal, &e.id).await.expect("delete");
    client
        .delete_event(&cal, &e.id)
        .await
        .expect("delete again (410)");
    client
        .delete_event(&cal, "unbekannt123")
        .await
        .expect("unknown (404)");
    assert!(env.fake.live_events(&cal).is_empty());
}

#[tokio::test]
async fn stale_sync_token_is_sync_token_expired() {
    let env = env().await;
    let client = env.client().await;
    let full = client.list_events("primary", None).await.expect("full");
    env.fake.invalidate_sync_tokens();
    let err = client
        .list_events("primary", Some(&full.next_sync_token))
        .await
        .expect_err("410");
    assert!(matches!(err, GoogleError::SyncTokenExpired), "{err:?}");
    assert!(!err.is_retryable());
    client
        .list_events("primary", None)
        .await
        .expect("full sync works");
}

#[tokio::test]
async fn quota_429_is_waited_out_with_a_shared_backoff() {
    let env = env().await;
    let client = env.client().await;
    // Warm up: the token request is not subject to the injected quota errors anyway.
    client.calendar_exists("primary").await.expect("warm up");

    // Watch the backoff key: its TTL is the (tiny) backoff, so it is gone again by the time the
    // call succeeds; keyspace notifications prove it was written.
    let mut admin = env.redis.conn().await;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("K$")
        .query_async::<()>(&mut admin)
        .await
        .expect("notifications");
    let mut pubsub = redis::Client::open(env.redis.url())
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    pubsub
        .subscribe(format!("__keyspace@0__:{GOOGLE_BACKOFF}"))
        .await
        .expect("subscribe");

    env.fake.rate_limit_next(2, RateLimit::TooManyRequests429);
    let cal = client
        .find_or_create_calendar("Quota")
        .await
        .expect("after backoff");
    assert!(!cal.is_empty());

    let mut messages = pubsub.on_message();
    let mut sets = 0;
    while sets < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("backoff notifications")
            .expect("message");
        if msg.get_payload::<String>().expect("payload") == "set" {
            sets += 1;
        }
    }
    assert_eq!(sets, 2, "one backoff per quota answer");
}

#[tokio::test]
async fn quota_403_exhausts_retries_as_rate_limited() {
    let env = env().await;
    let mut settings = env.settings();
    settings.rate_limit_retries = 2;
    let client = env.client_with(&settings).await.expect("client");
    env.fake.rate_limit_next(10, RateLimit::Forbidden403);
    let err = client
        .list_events("primary", None)
        .await
        .expect_err("rate limited");
    assert!(matches!(err, GoogleError::RateLimited { .. }), "{err:?}");
    assert!(err.is_retryable());
    env.fake.rate_limit_next(0, RateLimit::Forbidden403);
    client
        .list_events("primary", None)
        .await
        .expect("recovered");
}

#[tokio::test]
async fn retry_after_is_reported_when_retries_are_exhausted() {
    let env = env().await;
    let mut settings = env.settings();
    settings.rate_limit_retries = 0;
    let client = env.client_with(&settings).await.expect("client");
    client.calendar_exists("primary").await.expect("warm up");
    env.fake
        .controls()
        .fail_next_on("/calendar/v3/", 1, 429, Some(7));
    let err = client
        .calendar_exists("primary")
        .await
        .expect_err("rate limited");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err:?}");
}

#[tokio::test]
async fn server_errors_are_retried() {
    let env = env().await;
    let client = env.client().await;
    client.calendar_exists("primary").await.expect("warm up");
    env.fake
        .controls()
        .fail_next_on("/calendar/v3/", 2, 500, None);
    client
        .list_events("primary", None)
        .await
        .expect("third attempt succeeds");
    env.fake
        .controls()
        .fail_next_on("/calendar/v3/", 3, 503, None);
    let err = client
        .list_events("primary", None)
        .await
        .expect_err("gives up after two retries");
    assert_eq!(err.status(), Some(503));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn bad_service_account_key_is_an_auth_error() {
    let env = env().await;
    let mut settings = env.settings();

    settings.service_account_path = Some(env.dir.path().join("missing.json"));
    let err = env.client_with(&settings).await.expect_err("missing file");
    assert!(matches!(err, GoogleError::Auth(_)), "{err:?}");
    assert!(!err.is_retryable());

    let garbage = env.dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").expect("write");
    settings.service_account_path = Some(garbage);
    let err = env.client_with(&settings).await.expect_err("garbage");
    assert!(matches!(err, GoogleError::Auth(_)), "{err:?}");

    let bad_key = env.dir.path().join("bad-key.json");
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.key_path()).expect("read"))
            .expect("json");
    key["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    std::fs::write(&bad_key, key.to_string()).expect("write");
    settings.service_account_path = Some(bad_key);
    let err = match env.client_with(&settings).await {
        Err(e) => e,
        // Some key problems only show when the first token is signed.
        Ok(client) => client
            .calendar_exists("primary")
            .await
            .expect_err("unusable key"),
    };
    assert!(matches!(err, GoogleError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
}
