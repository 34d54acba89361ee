//! The fakes' Bankverbindungen over real HTTP: Advoware's sub-resource of a Beteiligter (token,
//! 404 for an unknown Beteiligter, 400 for a bad IBAN/BIC, PUT replaces, DELETE and its 403
//! switch) and EspoCRM's `CBankverbindungen` with its link to `CBeteiligte`.

use bitbylaw_fakes::advoware::{self, AdvowareConfig, BANKVERBINDUNGEN};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn advoware_bankverbindungen_behave_like_their_siblings() -> TestResult {
    let fake = advoware::start(AdvowareConfig::default()).await?;
    let token = fake.issue_token();
    let bet_nr = fake.insert_beteiligter(json!({"name": "Mustermann"}));
    let row_before = fake.beteiligter(bet_nr).ok_or("seeded")?["rowId"].clone();
    let base = format!(
        "{}api/v1/advonet/Beteiligte/{bet_nr}/Bankverbindungen",
        fake.api_base_url()
    );
    let http = reqwest::Client::new();

    assert_eq!(http.get(&base).send().await?.status(), 401);
    let list: Value = http
        .get(&base)
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list, json!([]));
    let unknown = base.replace(&bet_nr.to_string(), "999");
    assert_eq!(
        http.get(&unknown)
            .bearer_auth(&token)
            .send()
            .await?
            .status(),
        404
    );

    for bad in [
        json!({"iban": "DE89370400440532013001"}),
        json!({"bic": "COBADEFF"}),
        json!({"iban": "DE89370400440532013000", "bic": "COBA"}),
    ] {
        let r = http
            .post(&base)
            .bearer_auth(&token)
            .json(&bad)
            .send()
            .await?;
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await?;
        assert!(body["Message"].is_string());
    }
    let r = http
        .post(&base)
        .bearer_auth(&token)
        .json(
            &json!({"iban": "DE89370400440532013000", "bic": "COBADEFFXXX", "bank": "Commerzbank",
            "id": 1, "rowId": "forged"}),
        )
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await?;
    let id = created["id"].as_i64().ok_or("id")?;
    assert_ne!(id, 1, "id is the server's");
    assert_ne!(created["rowId"], "forged");
    assert_ne!(
        fake.beteiligter(bet_nr).ok_or("b")?["rowId"],
        row_before,
        "a write changes the Beteiligter's rowId"
    );

    // PUT replaces: `bank` missing from the body is gone.
    let put = |path: String, body: Value| http.put(path).bearer_auth(&token).json(&body).send();
    let r = put(
        format!("{base}/{id}"),
        json!({"iban": "GB82 WEST 1234 5698 7654 32"}),
    )
    .await?;
    assert_eq!(r.status(), 200);
    let stored = fake.bankverbindungen(bet_nr);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["iban"], "GB82 WEST 1234 5698 7654 32");
    assert!(stored[0].get("bank").is_none());
    assert_eq!(stored[0]["id"], id);
    let r = put(
        format!("{base}/424242"),
        json!({"iban": "DE89370400440532013000"}),
    )
    .await?;
    assert_eq!(r.status(), 404);

    // DELETE works, then 404; with the switch, 403 like Kommunikationen.
    let other = fake.insert_bankverbindung(bet_nr, json!({"iban": "NL91ABNA0417164300"}));
    let delete = |n: i64| {
        http.delete(format!("{base}/{n}"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(delete(id).await?.status(), 200);
    assert_eq!(delete(id).await?.status(), 404);
    fake.deny_bank_delete();
    assert_eq!(delete(other).await?.status(), 403);
    assert_eq!(fake.bankverbindungen(bet_nr).len(), 1);
    assert_eq!(fake.writes(BANKVERBINDUNGEN), 9);
    Ok(())
}

#[tokio::test]
async fn espocrm_bankverbindungen_validate_sync_fields_and_link_their_beteiligter() -> TestResult {
    let fake = espocrm::start(EspoCrmConfig::default()).await?;
    let key = fake.config().api_key.clone();
    let http = reqwest::Client::new();
    let bet = fake
        .insert("CBeteiligte", json!({"lastName": "Mustermann"}))
        .ok_or("insert")?;
    let bet_id = bet["id"].as_str().ok_or("id")?;
    let r = http
        .post(format!("{}CBankverbindungen", fake.api_url()))
        .header("X-Api-Key", &key)
        .json(&json!({"name": "Giro", "iban": "DE89370400440532013000", "syncStatus": "nonsense"}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}CBankverbindungen", fake.api_url()))
        .header("X-Api-Key", &key)
        .json(
            &json!({"name": "Giro", "iban": "DE89370400440532013000", "syncStatus": "pending_sync",
            "advowareLastSync": "2026-12-01 10:00:00"}),
        )
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let bank: Value = r.json().await?;
    let bank_id = bank["id"].as_str().ok_or("id")?;
    // Link it from the Beteiligter's side: stored as the foreign key on the bank account.
    let r = http
        .post(format!(
            "{}CBeteiligte/{bet_id}/bankverbindungen",
            fake.api_url()
        ))
        .header("X-Api-Key", &key)
        .json(&json!({"id": bank_id}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        fake.get("CBankverbindungen", bank_id).ok_or("stored")?["beteiligteId"],
        bet_id
    );
    let related: Value = http
        .get(format!(
            "{}CBeteiligte/{bet_id}/bankverbindungen",
            fake.api_url()
        ))
        .header("X-Api-Key", &key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(related["total"], 1);
    assert_eq!(related["list"][0]["id"], bank_id);
    Ok(())
}
