//! The Google Calendar fake over real HTTP: auth, event validation, paging and incremental sync.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use bitbylaw_fakes::google_calendar::{self, GoogleCalendarConfig, GoogleCalendarFake, RateLimit};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Api {
    fake: GoogleCalendarFake,
    client: reqwest::Client,
    token: String,
}

impl Api {
    async fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let fake = google_calendar::start(GoogleCalendarConfig::default()).await?;
        let token = fake.config().static_token.clone().ok_or("static token")?;
        Ok(Self {
            fake,
            client: reqwest::Client::new(),
            token,
        })
    }

    fn events_url(&self, cal: &str) -> String {
        format!(
            "{}calendars/{}/events",
            self.fake.api_base_url(),
            url_escape(cal)
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
        let res = req.bearer_auth(&self.token).send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn insert(&self, cal: &str, event: Value) -> Result<(u16, Value), reqwest::Error> {
        self.send(self.client.post(self.events_url(cal)).json(&event))
            .await
    }

    async fn list(
        &self,
        cal: &str,
        query: &[(&str, &str)],
    ) -> Result<(u16, Value), reqwest::Error> {
        self.send(self.client.get(self.events_url(cal)).query(query))
            .await
    }
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn timed(summary: &str, day: u32) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": format!("2026-12-{day:02}T09:30:00+01:00"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("2026-12-{day:02}T10:15:00+01:00"), "timeZone": "Europe/Berlin"},
        "extendedProperties": {"private": {"advowareFrNr": format!("{day}")}},
    })
}

#[tokio::test]
async fn examples_insert_and_invalid_events_are_rejected() -> TestResult {
    let api = Api::new().await?;
    let examples: Value = serde_json::from_str(include_str!("data/google-events.json"))?;
    for (name, event) in examples.as_object().ok_or("object")? {
        let (status, body) = api.insert("primary", event.clone()).await?;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["sequence"], 0);
        assert!(body["etag"].as_str().is_some_and(|e| e.starts_with('"')));
        assert_eq!(body["status"], "confirmed");
    }
    let mut no_tz = examples["recurring_weekly"].clone();
    no_tz["start"]
        .as_object_mut()
        .ok_or("object")?
        .remove("timeZone");
    let (status, body) = api.insert("primary", no_tz).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["errors"][0]["reason"], "required");
    let (status, _) = api
        .insert(
            "primary",
            json!({"summary": "no end", "start": {"date": "2026-12-01"}}),
        )
        .await?;
    assert_eq!(status, 400);
    let (status, _) = api.insert("primary", json!({"id": "UPPER-case", "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"}})).await?;
    assert_eq!(status, 400);
    let with_id =
        json!({"id": "advo48213", "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"}});
    assert_eq!(api.insert("primary", with_id.clone()).await?.0, 200);
    assert_eq!(api.insert("primary", with_id).await?.0, 409);
    assert_eq!(api.fake.live_events("primary").len(), 5);
    Ok(())
}

#[tokio::test]
async fn auth_is_required() -> TestResult {
    let api = Api::new().await?;
    let res = api.client.get(api.events_url("primary")).send().await?;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await?;
    assert_eq!(body["error"]["errors"][0]["reason"], "authError");
    let res = api
        .client
        .get(api.events_url("primary"))
        .bearer_auth("nope")
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    Ok(())
}

#[tokio::test]
async fn service_account_token_endpoint_checks_the_jwt() -> TestResult {
    let api = Api::new().await?;
    let now = chrono::Utc::now().timestamp();
    let jwt = |claims: Value| {
        format!(
            "{}.{}.{}",
            B64URL.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            B64URL.encode(claims.to_string()),
            B64URL.encode(b"not-a-real-signature")
        )
    };
    let good = jwt(json!({
        "iss": "sync@fake-project.iam.gserviceaccount.com",
        "scope": "https://www.googleapis.com/auth/calendar",
        "aud": api.fake.token_url(),
        "sub": "kalender@fake-kanzlei.test",
        "iat": now,
        "exp": now + 3600,
    }));
    let form = |assertion: &str| {
        format!(
            "grant_type={}&assertion={}",
            url_escape("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            url_escape(assertion)
        )
    };
    let post = |body: String| {
        api.client
            .post(api.fake.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let res = post(form(&good)).await?;
    assert_eq!(res.status(), 200);
    let token: Value = res.json().await?;
    assert_eq!(token["token_type"], "Bearer");
    let access = token["access_token"].as_str().ok_or("token")?;
    let res = api
        .client
        .get(api.events_url("primary"))
        .bearer_auth(access)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(
        api.fake.issued_tokens()[0].sub.as_deref(),
        Some("kalender@fake-kanzlei.test")
    );

    let expired =
        jwt(json!({"iss": "x", "scope": "s", "aud": "a", "iat": now - 7200, "exp": now - 3600}));
    assert_eq!(post(form(&expired)).await?.status(), 400);
    let no_scope = jwt(json!({"iss": "x", "aud": "a", "exp": now + 600}));
    assert_eq!(post(form(&no_scope)).await?.status(), 400);
    assert_eq!(post(form("only.two")).await?.status(), 400);
    assert_eq!(
        post(format!("grant_type=client_credentials&assertion={good}"))
            .await?
            .status(),
        400
    );
    // The fake clock expires issued tokens.
    api.fake.clock().advance_secs(3600);
    let res = api
        .client
        .get(api.events_url("primary"))
        .bearer_auth(access)
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    Ok(())
}

#[tokio::test]
async fn paging_then_incremental_sync_with_cancelled_events() -> TestResult {
    let api = Api::new().await?;
    let mut ids = Vec::new();
    for day in 1..=5 {
        let (_, ev) = api
            .insert("primary", timed(&format!("T{day}"), day))
            .await?;
        ids.push(ev["id"].as_str().ok_or("id")?.to_owned());
    }
    let (status, page1) = api.list("primary", &[("maxResults", "2")]).await?;
    assert_eq!(status, 200);
    assert_eq!(page1["items"].as_array().map(Vec::len), Some(2));
    assert!(page1.get("nextSyncToken").is_none());
    let mut page = page1;
    let mut seen = 2;
    let sync_token = loop {
        let token = page["nextPageToken"]
            .as_str()
            .ok_or("page token")?
            .to_owned();
        let (_, next) = api
            .list("primary", &[("maxResults", "2"), ("pageToken", &token)])
            .await?;
        seen += next["items"].as_array().map(Vec::len).unwrap_or(0);
        if let Some(sync) = next["nextSyncToken"].as_str() {
            assert!(next.get("nextPageToken").is_none());
            break sync.to_owned();
        }
        page = next;
    };
    assert_eq!(seen, 5);

    // Nothing changed: empty incremental list.
    let (_, empty) = api.list("primary", &[("syncToken", &sync_token)]).await?;
    assert_eq!(empty["items"].as_array().map(Vec::len), Some(0));

    // A user deletes one event in Google, we patch another.
    api.fake.user_delete_event("primary", &ids[0])?;
    let url = format!("{}/{}", api.events_url("primary"), ids[1]);
    let (status, patched) = api
        .send(api.client.patch(&url).json(&json!({"summary": "neu"})))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        patched["sequence"], 0,
        "summary changes do not bump sequence"
    );
    let (_, moved) = api
        .send(
            api.client
                .patch(&url)
                .json(&json!({"start": {"date": "2026-12-02"}, "end": {"date": "2026-12-03"}})),
        )
        .await?;
    assert_eq!(moved["sequence"], 1);
    assert!(moved["start"].get("dateTime").is_none());

    let (_, changes) = api.list("primary", &[("syncToken", &sync_token)]).await?;
    let items = changes["items"].as_array().ok_or("items")?;
    assert_eq!(items.len(), 2);
    let cancelled = items
        .iter()
        .find(|e| e["id"] == ids[0].as_str())
        .ok_or("deleted event listed")?;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(
        cancelled.get("extendedProperties").is_none(),
        "deleted events carry only id/status"
    );
    assert!(changes["nextSyncToken"].is_string());

    // Deleting again: 410 deleted. A full list hides cancelled events unless showDeleted.
    let gone = api
        .send(
            api.client
                .delete(format!("{}/{}", api.events_url("primary"), ids[0])),
        )
        .await?;
    assert_eq!(gone.0, 410);
    let (_, full) = api.list("primary", &[]).await?;
    assert_eq!(full["items"].as_array().map(Vec::len), Some(4));
    let (_, full) = api.list("primary", &[("showDeleted", "true")]).await?;
    assert_eq!(full["items"].as_array().map(Vec::len), Some(5));
    Ok(())
}

#[tokio::test]
async fn sync_token_rules_and_invalidation() -> TestResult {
    let api = Api::new().await?;
    api.insert("primary", timed("a", 1)).await?;
    let (_, full) = api.list("primary", &[]).await?;
    let token = full["nextSyncToken"]
        .as_str()
        .ok_or("sync token")?
        .to_owned();
    let (status, body) = api
        .list(
            "primary",
            &[("syncToken", &token), ("timeMin", "2026-01-01T00:00:00Z")],
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api.list("primary", &[("syncToken", "garbage")]).await?;
    assert_eq!(status, 400);
    api.fake.invalidate_sync_tokens();
    let (status, body) = api.list("primary", &[("syncToken", &token)]).await?;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["errors"][0]["reason"], "fullSyncRequired");
    // A fresh full sync yields a working token again.
    let (_, full) = api.list("primary", &[]).await?;
    let token = full["nextSyncToken"]
        .as_str()
        .ok_or("sync token")?
        .to_owned();
    assert_eq!(api.list("primary", &[("syncToken", &token)]).await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn time_window_filter() -> TestResult {
    let api = Api::new().await?;
    for day in [1, 10, 20] {
        api.insert("primary", timed("x", day)).await?;
    }
    let (_, list) = api
        .list(
            "primary",
            &[
                ("timeMin", "2026-12-05T00:00:00Z"),
                ("timeMax", "2026-12-15T00:00:00Z"),
            ],
        )
        .await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        list["items"][0]["extendedProperties"]["private"]["advowareFrNr"],
        "10"
    );
    let (_, by_prop) = api
        .list("primary", &[("privateExtendedProperty", "advowareFrNr=20")])
        .await?;
    assert_eq!(by_prop["items"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn quota_errors_and_counters() -> TestResult {
    let api = Api::new().await?;
    let cal = api.fake.add_calendar("SB");
    api.fake.rate_limit_next(1, RateLimit::Forbidden403);
    let (status, body) = api.list(&cal, &[]).await?;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
    api.fake.rate_limit_next(1, RateLimit::TooManyRequests429);
    assert_eq!(api.list(&cal, &[]).await?.0, 429);
    assert_eq!(api.list(&cal, &[]).await?.0, 200);
    api.insert(&cal, timed("x", 3)).await?;
    let counts = api.fake.calls(&cal);
    assert_eq!((counts.lists, counts.writes), (1, 1));
    assert_eq!(api.fake.calls("primary").writes, 0);
    api.fake.fail_next(1, 503, Some(1));
    let res = api
        .client
        .get(api.events_url(&cal))
        .bearer_auth(&api.token)
        .send()
        .await?;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    Ok(())
}

#[tokio::test]
async fn calendars_insert_list_get_delete() -> TestResult {
    let api = Api::new().await?;
    let base = api.fake.api_base_url();
    let (status, created) = api
        .send(
            api.client
                .post(format!("{base}calendars"))
                .json(&json!({"summary": "SB"})),
        )
        .await?;
    assert_eq!(status, 200);
    let id = created["id"].as_str().ok_or("id")?.to_owned();
    let (_, list) = api
        .send(api.client.get(format!("{base}users/me/calendarList")))
        .await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let one = format!("{base}calendars/{}", url_escape(&id));
    assert_eq!(api.send(api.client.get(&one)).await?.0, 200);
    assert_eq!(api.send(api.client.delete(&one)).await?.0, 204);
    assert_eq!(api.send(api.client.get(&one)).await?.0, 404);
    assert_eq!(api.list(&id, &[]).await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn put_replaces_and_keeps_server_fields() -> TestResult {
    let api = Api::new().await?;
    let (_, ev) = api.insert("primary", timed("alt", 4)).await?;
    let id = ev["id"].as_str().ok_or("id")?;
    let url = format!("{}/{id}", api.events_url("primary"));
    let replacement =
        json!({"summary": "neu", "start": {"date": "2026-12-04"}, "end": {"date": "2026-12-05"}});
    let (status, put) = api.send(api.client.put(&url).json(&replacement)).await?;
    assert_eq!(status, 200);
    assert_eq!(put["id"], ev["id"]);
    assert_eq!(put["created"], ev["created"]);
    assert_ne!(put["etag"], ev["etag"]);
    assert!(
        put.get("extendedProperties").is_none(),
        "PUT replaces the whole event"
    );
    let (status, _) = api
        .send(
            api.client
                .put(format!("{}/doesnotexist1", api.events_url("primary")))
                .json(&replacement),
        )
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn single_events_expands_series() -> TestResult {
    let api = Api::new().await?;
    let examples: Value = serde_json::from_str(include_str!("data/google-events.json"))?;
    let (_, master) = api
        .insert("primary", examples["recurring_weekly"].clone())
        .await?;
    api.insert("primary", timed("single", 9)).await?;
    let (status, list) = api
        .list(
            "primary",
            &[
                ("singleEvents", "true"),
                ("orderBy", "startTime"),
                ("timeMax", "2026-12-22T00:00:00Z"),
            ],
        )
        .await?;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().ok_or("items")?;
    let starts: Vec<&str> = items
        .iter()
        .filter_map(|i| i["start"]["dateTime"].as_str())
        .collect();
    assert_eq!(
        starts,
        vec![
            "2026-12-07T08:00:00+01:00",
            "2026-12-09T09:30:00+01:00",
            "2026-12-14T08:00:00+01:00",
            "2026-12-21T08:00:00+01:00"
        ]
    );
    assert_eq!(items[0]["recurringEventId"], master["id"]);
    assert!(items[0].get("recurrence").is_none());
    // The whole series (UNTIL 2027-03-29, across the DST switch) without a window.
    let (_, all) = api
        .list(
            "primary",
            &[("singleEvents", "true"), ("maxResults", "2500")],
        )
        .await?;
    let series: Vec<&Value> = all["items"]
        .as_array()
        .ok_or("items")?
        .iter()
        .filter(|i| i["recurringEventId"] == master["id"])
        .collect();
    assert_eq!(series.len(), 17);
    assert_eq!(series[16]["start"]["dateTime"], "2027-03-29T08:00:00+02:00");

    let odd = json!({
        "start": {"date": "2026-12-04"}, "end": {"date": "2026-12-05"},
        "recurrence": ["RRULE:FREQ=MONTHLY;BYDAY=1FR"],
    });
    assert_eq!(api.insert("primary", odd).await?.0, 200);
    assert_eq!(
        api.list("primary", &[("singleEvents", "true")]).await?.0,
        501,
        "loud, not wrong"
    );
    Ok(())
}
