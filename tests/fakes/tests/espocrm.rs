//! The EspoCRM fake over real HTTP, and its webhook sender checked against independent HMAC code.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake, SignatureStyle};
use bitbylaw_fakes::receiver;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Api {
    fake: EspoCrmFake,
    client: reqwest::Client,
}

impl Api {
    async fn new() -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Self {
            fake: espocrm::start(EspoCrmConfig::default()).await?,
            client: reqwest::Client::new(),
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.fake.api_url()))
            .header("X-Api-Key", &self.fake.config().api_key)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

#[tokio::test]
async fn api_key_is_required() -> TestResult {
    let api = Api::new().await?;
    let res = api
        .client
        .get(format!("{}Lead", api.fake.api_url()))
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    let res = api
        .client
        .get(format!("{}Lead", api.fake.api_url()))
        .header("X-Api-Key", "wrong")
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    assert_eq!(
        api.send(api.req(reqwest::Method::GET, "Lead")).await?.0,
        200
    );
    assert_eq!(
        api.send(api.req(reqwest::Method::GET, "Opportunity"))
            .await?
            .0,
        404
    );
    Ok(())
}

#[tokio::test]
async fn lead_create_duplicate_update_delete() -> TestResult {
    let api = Api::new().await?;
    let lead = json!({"firstName": "Erika", "lastName": "Musterfrau", "emailAddress": "Erika.Musterfrau@Example.org", "source": "Web Site"});
    let (status, created) = api
        .send(api.req(reqwest::Method::POST, "Lead").json(&lead))
        .await?;
    assert_eq!(status, 200);
    let id = created["id"].as_str().ok_or("id")?.to_owned();
    assert_eq!(id.len(), 17);
    assert_eq!(created["name"], "Erika Musterfrau");
    let created_at = created["createdAt"].as_str().ok_or("createdAt")?;
    assert!(chrono::NaiveDateTime::parse_from_str(created_at, "%Y-%m-%d %H:%M:%S").is_ok());

    let again = json!({"lastName": "X", "emailAddress": "erika.musterfrau@example.org"});
    let (status, dupes) = api
        .send(api.req(reqwest::Method::POST, "Lead").json(&again))
        .await?;
    assert_eq!(status, 409);
    assert_eq!(dupes[0]["id"], id.as_str());
    let (status, _) = api
        .send(
            api.req(reqwest::Method::POST, "Lead")
                .header("X-Skip-Duplicate-Check", "true")
                .json(&again),
        )
        .await?;
    assert_eq!(status, 200);

    let (status, _) = api
        .send(
            api.req(reqwest::Method::POST, "Lead")
                .json(&json!({"firstName": "NoLast"})),
        )
        .await?;
    assert_eq!(status, 400);

    let (status, updated) = api
        .send(
            api.req(reqwest::Method::PUT, &format!("Lead/{id}"))
                .json(&json!({"status": "Assigned"})),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(updated["status"], "Assigned");
    assert_eq!(updated["firstName"], "Erika", "PUT is a partial update");
    assert_eq!(
        api.send(api.req(reqwest::Method::DELETE, &format!("Lead/{id}")))
            .await?
            .0,
        200
    );
    assert_eq!(
        api.send(api.req(reqwest::Method::GET, &format!("Lead/{id}")))
            .await?
            .0,
        404
    );
    assert_eq!(api.fake.writes("Lead"), 6);
    Ok(())
}

#[tokio::test]
async fn list_with_where_select_and_paging() -> TestResult {
    let api = Api::new().await?;
    for (i, status) in ["New", "Assigned", "New", "Dead"].iter().enumerate() {
        api.fake.insert("Lead", json!({"lastName": format!("L{i}"), "status": status, "phoneNumber": format!("+49511{i}")}));
    }
    let (status, body) = api
        .send(api.req(reqwest::Method::GET, "Lead").query(&[
            ("where[0][type]", "in"),
            ("where[0][attribute]", "status"),
            ("where[0][value][]", "new"),
            ("where[0][value][]", "Assigned"),
            ("select", "lastName,status"),
            ("orderBy", "lastName"),
            ("order", "asc"),
            ("maxSize", "2"),
        ]))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 3);
    let list = body["list"].as_array().ok_or("list")?;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["lastName"], "L0");
    assert!(
        list[0].get("phoneNumber").is_none(),
        "select limits attributes"
    );
    assert!(list[0].get("id").is_some());
    let (_, eq) = api
        .send(api.req(reqwest::Method::GET, "Lead").query(&[
            ("where[0][type]", "equals"),
            ("where[0][attribute]", "phoneNumber"),
            ("where[0][value]", "+495113"),
        ]))
        .await?;
    assert_eq!(eq["total"], 1);
    let (status, _) = api
        .send(
            api.req(reqwest::Method::GET, "Lead")
                .query(&[("maxSize", "201")]),
        )
        .await?;
    assert_eq!(status, 403);
    let (status, _) = api
        .send(
            api.req(reqwest::Method::GET, "Lead")
                .query(&[("where[0][type]", "fuzzy"), ("where[0][attribute]", "x")]),
        )
        .await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test]
async fn call_validation_and_duration() -> TestResult {
    let api = Api::new().await?;
    let call = json!({"name": "Anruf", "status": "Held", "direction": "Inbound", "dateStart": "2026-11-23 13:02:00", "duration": 252});
    let (status, created) = api
        .send(api.req(reqwest::Method::POST, "Call").json(&call))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(created["dateEnd"], "2026-11-23 13:06:12");
    let bad = json!({"name": "Anruf", "status": "Done", "dateStart": "2026-11-23 13:02:00"});
    let (status, body) = api
        .send(api.req(reqwest::Method::POST, "Call").json(&bad))
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["messageTranslation"]["data"]["field"], "status");
    let iso = json!({"name": "Anruf", "dateStart": "2026-11-23T13:02:00Z"});
    assert_eq!(
        api.send(api.req(reqwest::Method::POST, "Call").json(&iso))
            .await?
            .0,
        400
    );
    Ok(())
}

fn hmac(secret: &str, body: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(body);
    Ok(mac.finalize().into_bytes().to_vec())
}

#[tokio::test]
async fn send_webhook_signs_like_espocrm() -> TestResult {
    let target = receiver::start_ok().await?;
    let batch = json!([{"id": "6745a1b2c3d4e5f60", "name": "Müller/Söhne", "modifiedAt": "2026-11-23 13:58:02"}]);
    let res = espocrm::send_webhook(
        &target.url("/vmh/webhook/beteiligte/update"),
        "wh123",
        "s3cret",
        &batch,
        SignatureStyle::Both,
    )
    .await?;
    assert_eq!(res.status(), 200);
    let got = target.controls().last_request().ok_or("request")?;
    assert_eq!(got.header("content-type"), Some("application/json"));
    let body = &got.body[..];
    assert!(
        std::str::from_utf8(body)?.contains(r"M\u00fcller\/S\u00f6hne"),
        "PHP-style escaping"
    );
    let parsed: Value = serde_json::from_slice(body)?;
    assert_eq!(parsed, batch);
    let mac = hmac("s3cret", body)?;
    let current = B64.decode(got.header("Signature").ok_or("Signature")?)?;
    assert_eq!(current, format!("wh123:{}", hex::encode(&mac)).into_bytes());
    let legacy = B64.decode(got.header("X-Signature").ok_or("X-Signature")?)?;
    let mut expected = b"wh123:".to_vec();
    expected.extend(&mac);
    assert_eq!(legacy, expected);

    espocrm::send_webhook(&target.url("/x"), "wh", "k", &batch, SignatureStyle::None).await?;
    let got = target.controls().last_request().ok_or("request")?;
    assert!(got.header("Signature").is_none() && got.header("X-Signature").is_none());
    Ok(())
}

#[tokio::test]
async fn registered_webhooks_receive_batched_events() -> TestResult {
    let api = Api::new().await?;
    let target = receiver::start_ok().await?;
    let (status, hook) = api
        .send(
            api.req(reqwest::Method::POST, "Webhook")
                .json(&json!({"event": "CBeteiligte.update", "url": target.url("/hook")})),
        )
        .await?;
    assert_eq!(status, 200);
    let hook_id = hook["id"].as_str().ok_or("id")?.to_owned();
    let secret = hook["secretKey"].as_str().ok_or("secretKey")?.to_owned();
    let (status, _) = api
        .send(
            api.req(reqwest::Method::POST, "Webhook")
                .json(&json!({"event": "Nope.update", "url": target.url("/hook")})),
        )
        .await?;
    assert_eq!(status, 400);

    let mut ids = Vec::new();
    for i in 0..25 {
        let rec = api
            .fake
            .insert("CBeteiligte", json!({"name": format!("B{i}")}))
            .ok_or("insert")?;
        ids.push(rec["id"].as_str().ok_or("id")?.to_owned());
    }
    assert!(
        api.fake.pending_events(&hook_id).is_empty(),
        "create events do not match an update hook"
    );
    for id in &ids {
        api.fake
            .edit("CBeteiligte", id, json!({"syncStatus": "dirty"}))
            .ok_or("edit")?;
    }
    api.fake
        .edit("CBeteiligte", &ids[0], json!({"syncStatus": "dirty"}))
        .ok_or("edit")?;
    assert_eq!(
        api.fake.pending_events(&hook_id).len(),
        25,
        "no-op edits send nothing"
    );

    let deliveries = api.fake.flush_webhooks().await;
    assert_eq!(
        deliveries.iter().map(|d| d.events).collect::<Vec<_>>(),
        vec![20, 5]
    );
    let first = &target.requests()[0];
    let batch: Value = serde_json::from_slice(&first.body)?;
    assert_eq!(batch[0]["id"], ids[0].as_str());
    assert_eq!(batch[0]["syncStatus"], "dirty");
    assert!(
        batch[0].get("name").is_none(),
        "update events carry only changed attributes"
    );
    let sig = B64.decode(first.header("Signature").ok_or("Signature")?)?;
    assert_eq!(
        sig,
        format!("{hook_id}:{}", hex::encode(hmac(&secret, &first.body)?)).into_bytes()
    );

    // A 410 answer deletes the webhook, as EspoCRM does.
    api.fake
        .edit("CBeteiligte", &ids[1], json!({"syncStatus": "clean"}))
        .ok_or("edit")?;
    target.set_status(410);
    api.fake.flush_webhooks().await;
    assert!(api.fake.webhooks().is_empty());
    Ok(())
}

#[tokio::test]
async fn cbeteiligte_sync_fields_are_validated_and_duplicates_refused() -> TestResult {
    let api = Api::new().await?;
    let post = |body: Value| api.send(api.req(reqwest::Method::POST, "CBeteiligte").json(&body));
    let (status, person) = post(json!({"firstName": "Max", "lastName": "Muster", "syncStatus": "pending_sync", "betnr": 50001})).await?;
    assert_eq!(status, 200);
    assert_eq!(
        person["name"], "Max Muster",
        "Person-type entity derives name"
    );
    // Same first + last name (any case) → 409 with the duplicate; skip header creates it.
    let (status, dupes) = post(json!({"firstName": "max", "lastName": "MUSTER"})).await?;
    assert_eq!(status, 409);
    assert_eq!(dupes[0]["id"], person["id"]);
    let (status, _) = post(json!({"lastName": "Muster"})).await?;
    assert_eq!(status, 200, "last name alone is no duplicate");
    let (status, firma) = post(json!({"firmenname": "Muster Bau", "rechtsform": "GmbH"})).await?;
    assert_eq!((status, firma["name"].as_str()), (200, Some("Muster Bau")));
    assert_eq!(post(json!({"firmenname": "muster bau"})).await?.0, 409);

    for bad in [
        json!({"lastName": "A", "syncStatus": "done"}),
        json!({"lastName": "B", "dateOfBirth": "12.08.1964"}),
        json!({"lastName": "C", "advowareLastSync": "2026-03-01T10:00:00Z"}),
        json!({"lastName": "D", "betnr": "abc"}),
        json!({"lastName": "E", "syncRetryCount": 1.5}),
    ] {
        let res = api
            .req(reqwest::Method::POST, "CBeteiligte")
            .json(&bad)
            .send()
            .await?;
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(
            res.headers()
                .get("x-status-reason")
                .and_then(|v| v.to_str().ok()),
            Some("validationFailure")
        );
    }
    // The same rules on a partial update; "" is the empty enum option.
    let id = person["id"].as_str().ok_or("id")?;
    let put = |body: Value| {
        api.send(
            api.req(reqwest::Method::PUT, &format!("CBeteiligte/{id}"))
                .json(&body),
        )
    };
    assert_eq!(put(json!({"syncStatus": "syncing"})).await?.0, 200);
    assert_eq!(put(json!({"syncStatus": ""})).await?.0, 200);
    assert_eq!(put(json!({"dateOfBirth": "1964-13-01"})).await?.0, 400);
    Ok(())
}

#[tokio::test]
async fn target_lists_relate_leads_and_contacts_like_espocrm() -> TestResult {
    use reqwest::Method;
    let api = Api::new().await?;
    let (s, list) = api
        .send(
            api.req(Method::POST, "TargetList")
                .json(&json!({"name": "Newsletter"})),
        )
        .await?;
    assert_eq!(s, 200);
    let list_id = list["id"].as_str().ok_or("id")?.to_owned();
    let lead = api
        .fake
        .insert("Lead", json!({"lastName": "Leser"}))
        .ok_or("lead")?;
    let lead_id = lead["id"].as_str().ok_or("id")?;
    let path = format!("TargetList/{list_id}/leads");
    let (s, body) = api
        .send(api.req(Method::POST, &path).json(&json!({"id": lead_id})))
        .await?;
    assert_eq!((s, body), (200, json!(true)));
    // Relating again is harmless; the relation is visible from both sides.
    let (s, _) = api
        .send(
            api.req(Method::POST, &path)
                .json(&json!({"ids": [lead_id]})),
        )
        .await?;
    assert_eq!(s, 200);
    let (s, listed) = api.send(api.req(Method::GET, &path)).await?;
    assert_eq!((s, listed["total"].clone()), (200, json!(1)));
    assert_eq!(listed["list"][0]["id"], lead_id);
    assert_eq!(
        api.fake.related("Lead", lead_id, "targetLists"),
        vec![list_id.clone()]
    );
    // Unknown records and links answer 404; a Task needs a name and a known status.
    let (s, _) = api
        .send(api.req(Method::POST, &path).json(&json!({"id": "nope"})))
        .await?;
    assert_eq!(s, 404);
    let (s, _) = api
        .send(
            api.req(Method::POST, &format!("TargetList/{list_id}/users"))
                .json(&json!({"id": lead_id})),
        )
        .await?;
    assert_eq!(s, 404);
    let (s, _) = api
        .send(
            api.req(Method::POST, "Task")
                .json(&json!({"name": "x", "status": "Done"})),
        )
        .await?;
    assert_eq!(s, 400);
    let (s, _) = api
        .send(
            api.req(Method::POST, "Lead")
                .json(&json!({"lastName": "x", "source": "Fax"})),
        )
        .await?;
    assert_eq!(s, 400);
    Ok(())
}
