//! The Advoware fake over real HTTP: token issuance rules and token-guarded resources.

use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake, KOMMUNIKATIONEN, TERMINE};
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn fake() -> Result<AdvowareFake, Box<dyn std::error::Error>> {
    Ok(advoware::start(AdvowareConfig::default()).await?)
}

fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn get_token(fake: &AdvowareFake, body: &Value) -> Result<(u16, Value), reqwest::Error> {
    let res = reqwest::Client::new()
        .post(fake.token_url())
        .json(body)
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await?))
}

async fn termine(fake: &AdvowareFake, token: &str) -> Result<reqwest::Response, reqwest::Error> {
    reqwest::Client::new()
        .get(format!("{}api/v1/advonet/Termine", fake.api_base_url()))
        .bearer_auth(token)
        .send()
        .await
}

#[tokio::test]
async fn valid_token_request_gives_a_working_token() -> TestResult {
    let fake = fake().await?;
    let body = fake
        .config()
        .token_request("6f1c1a3e-8a55-4d7e-9a3b-2f0c5b7e9d11", &now_ts())?;
    let (status, token) = get_token(&fake, &body).await?;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["expires_in"], 3600);
    assert!(token["expiration_utc"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    assert!(token["refresh_token"].is_string());
    let access = token["access_token"].as_str().ok_or("no access_token")?;
    assert_eq!(termine(&fake, access).await?.status(), 200);
    assert_eq!(fake.token_stats().succeeded, 1);
    Ok(())
}

#[tokio::test]
async fn wrong_hmac_is_401() -> TestResult {
    let fake = fake().await?;
    let mut body = fake.config().token_request("n-1", &now_ts())?;
    body["HMAC512Signature"] = json!(fake.config().sign("other-nonce", &now_ts())?);
    let (status, err) = get_token(&fake, &body).await?;
    assert_eq!(status, 401);
    assert_eq!(err["error"], "invalid_client");
    // Signing with the base64 text instead of the decoded key is a classic bug: rejected too.
    let wrong_key = AdvowareConfig {
        api_key_b64: base64_of(fake.config().api_key_b64.as_bytes()),
        ..fake.config().clone()
    };
    let (status, _) = get_token(&fake, &wrong_key.token_request("n-2", &now_ts())?).await?;
    assert_eq!(status, 401);
    assert_eq!(fake.token_stats().failed, 2);
    Ok(())
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn wrong_credentials_are_401_and_garbage_is_400() -> TestResult {
    let fake = fake().await?;
    let mut body = fake.config().token_request("n-1", &now_ts())?;
    body["Password"] = json!("wrong");
    assert_eq!(get_token(&fake, &body).await?.0, 401);
    let mut body = fake.config().token_request("n-2", &now_ts())?;
    body["Kanzlei"] = json!("other");
    assert_eq!(get_token(&fake, &body).await?.0, 401);
    let mut body = fake.config().token_request("n-3", &now_ts())?;
    body.as_object_mut().ok_or("object")?.remove("Nonce");
    assert_eq!(get_token(&fake, &body).await?.0, 400);
    let res = reqwest::Client::new()
        .post(fake.token_url())
        .body("not json")
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    assert_eq!(
        fake.token_stats(),
        advoware::TokenStats {
            succeeded: 0,
            failed: 4
        }
    );
    Ok(())
}

#[tokio::test]
async fn stale_or_unparseable_timestamp_is_rejected() -> TestResult {
    let fake = fake().await?;
    let stale =
        (Utc::now() - chrono::Duration::seconds(301)).to_rfc3339_opts(SecondsFormat::Millis, true);
    assert_eq!(
        get_token(&fake, &fake.config().token_request("n-1", &stale)?)
            .await?
            .0,
        401
    );
    let future =
        (Utc::now() + chrono::Duration::seconds(400)).to_rfc3339_opts(SecondsFormat::Millis, true);
    assert_eq!(
        get_token(&fake, &fake.config().token_request("n-2", &future)?)
            .await?
            .0,
        401
    );
    assert_eq!(
        get_token(&fake, &fake.config().token_request("n-3", "gestern")?)
            .await?
            .0,
        400
    );
    // Vendor-style 7-digit fraction within the window is fine.
    let now = Utc::now();
    let vendor = format!(
        "{}.{:07}Z",
        now.format("%Y-%m-%dT%H:%M:%S"),
        now.timestamp_subsec_nanos() / 100
    );
    assert_eq!(
        get_token(&fake, &fake.config().token_request("n-4", &vendor)?)
            .await?
            .0,
        200
    );
    // The fake clock decides: a timestamp one hour ahead becomes fresh when the clock moves.
    let ahead =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    fake.clock().advance_secs(3600);
    assert_eq!(
        get_token(&fake, &fake.config().token_request("n-5", &ahead)?)
            .await?
            .0,
        200
    );
    Ok(())
}

#[tokio::test]
async fn reused_nonce_is_401() -> TestResult {
    let fake = fake().await?;
    let body = fake.config().token_request("same-nonce", &now_ts())?;
    assert_eq!(get_token(&fake, &body).await?.0, 200);
    let (status, err) = get_token(&fake, &body).await?;
    assert_eq!(status, 401);
    assert_eq!(err["error_description"], "Nonce already used");
    Ok(())
}

#[tokio::test]
async fn revoked_expired_and_missing_tokens_are_401() -> TestResult {
    let fake = fake().await?;
    assert_eq!(
        reqwest::get(format!("{}/api/v1/advonet/Termine", fake.base_url()))
            .await?
            .status(),
        401
    );
    assert_eq!(termine(&fake, "made-up").await?.status(), 401);
    let a = fake.issue_token();
    let b = fake.issue_token();
    assert!(fake.revoke(&a));
    let res = termine(&fake, &a).await?;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await?;
    assert_eq!(
        body["Message"],
        "Authorization has been denied for this request."
    );
    assert_eq!(termine(&fake, &b).await?.status(), 200);
    fake.clock().advance_secs(3601);
    assert_eq!(
        termine(&fake, &b).await?.status(),
        401,
        "expired by the fake clock"
    );
    let c = fake.issue_token();
    fake.revoke_all();
    assert_eq!(termine(&fake, &c).await?.status(), 401);
    assert_eq!(fake.active_tokens(), 0);
    Ok(())
}

#[tokio::test]
async fn termine_crud_filters_and_counts_writes() -> TestResult {
    let fake = fake().await?;
    let examples: Value = serde_json::from_str(include_str!("data/advoware-termine.json"))?;
    for t in examples.as_array().ok_or("array")? {
        fake.insert_termin(t.clone());
    }
    fake.insert_termin(json!({"kuerzel": "AB", "datum": "2026-12-01T00:00:00", "text": "other"}));
    let token = fake.issue_token();
    let client = reqwest::Client::new();
    let api = format!("{}api/v1/advonet", fake.api_base_url());

    let list: Value = client
        .get(format!(
            "{api}/TermineActiveSync?from=2026-12-20&to=2026-12-31&kuerzel=sb"
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let nrs: Vec<i64> = list
        .as_array()
        .ok_or("array")?
        .iter()
        .filter_map(|t| t["frNr"].as_i64())
        .collect();
    assert_eq!(
        nrs,
        vec![48214, 48215],
        "Urlaub and the weekly series overlap late December"
    );
    assert_eq!(fake.total_writes(), 0);

    let created = client
        .post(format!("{api}/Termine"))
        .bearer_auth(&token)
        .json(&json!({"kuerzel": "SB", "datum": "2027-01-05", "uhrzeitVon": "10:00", "uhrzeitBis": "11:00:00", "text": "Neu"}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await?;
    let fr_nr = created["frNr"].as_i64().ok_or("frNr")?;
    assert_eq!(created["datum"], "2027-01-05T00:00:00");
    assert_eq!(created["uhrzeitVon"], "10:00:00");

    let res = client
        .put(format!("{api}/Termine/{fr_nr}"))
        .bearer_auth(&token)
        .json(&json!({"text": "Geändert"}))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(fake.termin(fr_nr).ok_or("stored")?["text"], "Geändert");
    let bad = client
        .post(format!("{api}/Termine"))
        .bearer_auth(&token)
        .json(&json!({"kuerzel": "SB", "datum": "05.01.2027"}))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    let res = client
        .delete(format!("{api}/Termine/{fr_nr}"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(res.status(), 204);
    let res = client
        .get(format!("{api}/Termine?frnr={fr_nr}"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await?,
        json!([]),
        "deleted: an empty list"
    );
    // FACTS §1: no GET on the item path.
    let res = client
        .get(format!("{api}/Termine/{fr_nr}"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("PUT, DELETE")
    );
    assert_eq!(fake.writes(TERMINE), 4);
    Ok(())
}

#[tokio::test]
async fn beteiligte_row_id_changes_and_kommunikation_delete_is_forbidden() -> TestResult {
    let fake = fake().await?;
    let bet_nr = fake.insert_beteiligter(json!({"name": "Mustermann", "vorname": "Max"}));
    let token = fake.issue_token();
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/advonet/Beteiligte/{bet_nr}", fake.base_url());
    let before: Value = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let after: Value = client
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({"name": "Musterfrau", "rowId": "ignored"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(after["name"], "Musterfrau");
    assert!(
        after.get("vorname").is_none(),
        "PUT replaces the record: vorname was not sent, so it is gone: {after}"
    );
    assert_eq!(after["betNr"], before["betNr"]);
    assert_eq!(after["kommunikation"], before["kommunikation"]);
    assert_ne!(after["rowId"], before["rowId"]);
    assert_ne!(after["rowId"], "ignored");

    let komm = client
        .post(format!("{url}/Kommunikationen"))
        .bearer_auth(&token)
        .json(&json!({"tlf": "max@example.org", "bemerkung": "[ESPOCRM:x:4]", "kommKz": 4, "online": true}))
        .send()
        .await?;
    assert_eq!(komm.status(), 201);
    let komm: Value = komm.json().await?;
    let id = komm["id"].as_i64().ok_or("id")?;
    let res = client
        .put(format!("{url}/Kommunikationen/{id}"))
        .bearer_auth(&token)
        .json(&json!({"tlf": "neu@example.org", "kommKz": 3}))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let stored = fake.beteiligter(bet_nr).ok_or("stored")?;
    assert_eq!(stored["kommunikation"][0]["tlf"], "neu@example.org");
    assert_eq!(
        stored["kommunikation"][0]["kommKz"], 4,
        "kommKz is read-only on PUT"
    );
    let res = client
        .delete(format!("{url}/Kommunikationen/{id}"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(res.status(), 403);
    assert_eq!(fake.writes(KOMMUNIKATIONEN), 3);
    let res = client
        .post(format!("{url}/Kommunikationen"))
        .bearer_auth(&token)
        .json(&json!({"tlf": "x", "kommKz": 13}))
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let missing = client
        .get(format!(
            "{}/api/v1/advonet/Beteiligte/999999",
            fake.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    Ok(())
}

#[tokio::test]
async fn unknown_paths_are_404_but_logged_with_raw_body() -> TestResult {
    let fake = fake().await?;
    let bytes: Vec<u8> = (0u8..=255).collect();
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/Akten/12/Dokumente?x=1", fake.base_url()))
        .header("x-trace", "abc")
        .body(bytes.clone())
        .send()
        .await?;
    assert_eq!(res.status(), 404);
    let logged = fake.controls().last_request().ok_or("logged")?;
    assert_eq!(logged.method, "POST");
    assert_eq!(logged.path, "/api/v1/Akten/12/Dokumente");
    assert_eq!(logged.query.as_deref(), Some("x=1"));
    assert_eq!(logged.header("X-Trace"), Some("abc"));
    assert_eq!(&logged.body[..], &bytes[..]);
    Ok(())
}

#[tokio::test]
async fn injected_failures_and_mitarbeiter() -> TestResult {
    let fake = fake().await?;
    fake.add_mitarbeiter("SB", "Sabine Beispiel", json!({}));
    let token = fake.issue_token();
    fake.controls()
        .fail_next_on("/api/v1/advonet/Mitarbeiter", 1, 503, Some(2));
    let url = format!("{}/api/v1/advonet/Mitarbeiter", fake.base_url());
    let client = reqwest::Client::new();
    let res = client.get(&url).bearer_auth(&token).send().await?;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let list: Value = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list[0]["kuerzel"], "SB");
    Ok(())
}

#[tokio::test]
async fn configurator_points_at_the_fake() -> TestResult {
    let fake = fake().await?;
    let url = format!(
        "{}/AdvonetConfigurator/api/Url?Kanzlei=fake-kanzlei",
        fake.base_url()
    );
    let body: Value = reqwest::get(url).await?.json().await?;
    assert_eq!(body["securityGateway"], fake.security_gateway_url());
    assert!(body["connectorUrl"].is_null());
    Ok(())
}

#[tokio::test]
async fn demo_seed_serves_employees_and_appointments() -> TestResult {
    let fake = fake().await?;
    fake.seed_demo();
    let token = fake.issue_token();
    let list: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/advonet/Mitarbeiter", fake.base_url()))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list.as_array().map(Vec::len), Some(3));
    let one: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/advonet/Termine?frnr=48215",
            fake.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one[0]["turnusArt"], 2);
    assert_eq!(fake.total_writes(), 0);
    Ok(())
}
