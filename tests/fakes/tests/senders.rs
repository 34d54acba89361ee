//! The Vermieterhelden and 3CX senders, checked against independently computed signatures.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bitbylaw_fakes::receiver;
use bitbylaw_fakes::threecx;
use bitbylaw_fakes::vermieterhelden::{self, SendOptions};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn expected_signature(
    secret: &str,
    id: &str,
    ts: &str,
    body: &[u8],
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let key = B64.decode(secret.trim_start_matches("whsec_"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

fn lead() -> Value {
    json!({"type": "lead.created", "data": {"firstName": "Erika", "lastName": "Musterfrau", "email": "erika@example.org"}})
}

#[tokio::test]
async fn vermieterhelden_lead_is_signed_per_standard_webhooks() -> TestResult {
    let target = receiver::start_ok().await?;
    let secret = vermieterhelden::generate_secret();
    let res =
        vermieterhelden::send_lead(&target.url("/api/leads/vermieterhelden"), &secret, &lead())
            .await?;
    assert_eq!(res.status(), 200);
    let got = target.controls().last_request().ok_or("request")?;
    let id = got.header("webhook-id").ok_or("id")?;
    let ts = got.header("webhook-timestamp").ok_or("ts")?;
    let now = chrono::Utc::now().timestamp();
    assert!((ts.parse::<i64>()? - now).abs() < 5);
    assert_eq!(
        got.header("webhook-signature"),
        Some(expected_signature(&secret, id, ts, &got.body)?.as_str())
    );
    assert_eq!(serde_json::from_slice::<Value>(&got.body)?, lead());
    Ok(())
}

#[tokio::test]
async fn vermieterhelden_options_spoil_exactly_one_thing() -> TestResult {
    let target = receiver::start_ok().await?;
    let secret = vermieterhelden::generate_secret();
    let url = target.url("/lead");

    let stale = SendOptions {
        timestamp_offset_secs: -600,
        ..SendOptions::default()
    };
    let (_, sent) = vermieterhelden::send_lead_with(&url, &secret, &lead(), &stale).await?;
    assert!(chrono::Utc::now().timestamp() - sent.timestamp >= 599);
    let got = target.controls().last_request().ok_or("request")?;
    let ts = sent.timestamp.to_string();
    assert_eq!(
        got.header("webhook-signature"),
        Some(expected_signature(&secret, &sent.message_id, &ts, &got.body)?.as_str()),
        "stale but validly signed"
    );

    let tampered = SendOptions {
        tamper_body: true,
        ..SendOptions::default()
    };
    let (_, sent) = vermieterhelden::send_lead_with(&url, &secret, &lead(), &tampered).await?;
    let got = target.controls().last_request().ok_or("request")?;
    let ts = sent.timestamp.to_string();
    assert_ne!(
        got.header("webhook-signature"),
        Some(expected_signature(&secret, &sent.message_id, &ts, &got.body)?.as_str())
    );

    let rotated = SendOptions {
        extra_signatures: vec!["v1,AAAA".into()],
        message_id: Some("msg_fixed".into()),
        ..SendOptions::default()
    };
    vermieterhelden::send_lead_with(&url, &secret, &lead(), &rotated).await?;
    let got = target.controls().last_request().ok_or("request")?;
    assert!(got
        .header("webhook-signature")
        .is_some_and(|s| s.starts_with("v1,AAAA v1,")));
    assert_eq!(got.header("webhook-id"), Some("msg_fixed"));

    let unsigned = SendOptions {
        omit_signature: true,
        ..SendOptions::default()
    };
    vermieterhelden::send_lead_with(&url, &secret, &lead(), &unsigned).await?;
    assert!(target
        .controls()
        .last_request()
        .ok_or("request")?
        .header("webhook-signature")
        .is_none());
    Ok(())
}

#[tokio::test]
async fn threecx_report_call_and_lookup() -> TestResult {
    let target = receiver::start_ok().await?;
    let call: Value = serde_json::from_str(include_str!("data/3cx-reportcall.json"))?;
    let res = threecx::report_call(&target.url("/3cx/calls"), "x-api-key", "k-123", &call).await?;
    assert_eq!(res.status(), 200);
    let got = target.controls().last_request().ok_or("request")?;
    assert_eq!(got.method, "POST");
    assert_eq!(got.header("x-api-key"), Some("k-123"));
    assert_eq!(got.json(), Some(call));
    threecx::lookup(&target.url("/3cx/lookup"), "k-123", "+49 511 12345").await?;
    let got = target.controls().last_request().ok_or("request")?;
    assert_eq!(got.method, "GET");
    assert_eq!(got.query_param("phone").as_deref(), Some("+49 511 12345"));
    assert_eq!(got.header("x-api-key"), Some("k-123"));
    Ok(())
}
