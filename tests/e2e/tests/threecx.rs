//! 3CX through the repository's kong.yaml in gateway mode, the real worker and real Redis, with
//! the fake EspoCRM: the CRM template's lookup with the key answers the Contact, without or with
//! a wrong key the edge answers 401 (the worker never sees it), and the worker answers 401 to a
//! lookup that bypasses the gateway (no gateway signature); a `ReportCall` becomes one
//! EspoCRM Call on the matched Contact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bitbylaw_fakes::redis_server::{free_port, RedisServer};
use bitbylaw_fakes::{advoware, espocrm, threecx, vermieterhelden};
use common::*;
use serde_json::{json, Value};

const FORGED: &str = "Bearer forged-by-the-client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threecx_lookup_and_report_call_through_kong() {
    let redis = RedisServer::start(false);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let espo = espocrm::start(espocrm::EspoCrmConfig::default())
        .await
        .unwrap();
    let contact = espo
        .insert(
            "Contact",
            json!({"firstName": "Max", "lastName": "Mustermann", "phoneNumber": "+4951112345"}),
        )
        .unwrap();
    let cid = contact["id"].as_str().unwrap().to_owned();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .arg("serve")
            .env_clear()
            .env("REDIS_URL", redis.url())
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .env("WORKER_ROLES", "intake,consumers")
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("ESPOCRM_API_BASE_URL", espo.api_url())
            .env("ESPOCRM_API_KEY", &espo.config().api_key)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/health")).await;
    let config = render(&vars(
        &adv,
        &worker_url,
        &placeholder_hooks(),
        &vermieterhelden::generate_secret(),
    ));
    let gw = deployed_gateway(config, free_port()).await;
    let lookup_url = format!("{}/3cx/lookup", gw.base_url());

    let r = threecx::lookup(&lookup_url, THREECX_KEY, "0511 12345")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["contacts"][0]["EntityId"], cid.as_str(), "{v}");
    assert_eq!(v["contacts"][0]["LastName"], "Mustermann");
    assert_eq!(v["contacts"][0]["PhoneBusiness"], "0511 12345");

    let r = threecx::lookup(&lookup_url, "wrong-key", "0511 12345")
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(&lookup_url)
        .query(&[("phone", "0511 12345")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The worker itself refuses a lookup that did not come through the filter (unsigned), even
    // with the 3CX key: the personal data is only answered to signed forwards.
    let r = threecx::lookup(
        &format!("{worker_url}/3cx/lookup"),
        THREECX_KEY,
        "0511 12345",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);

    let call: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/3cx-reportcall.json")).unwrap(),
    )
    .unwrap();
    let r = threecx::report_call(
        &format!("{}/3cx/calls", gw.base_url()),
        "x-api-key",
        THREECX_KEY,
        &call,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let calls = loop {
        let all = espo.all("Call");
        if !all.is_empty() {
            break all;
        }
        assert!(std::time::Instant::now() < deadline, "no Call in EspoCRM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["parentId"], cid.as_str());
    assert_eq!(calls[0]["status"], "Held");
}

/// Outbound calls through Kong's key-auth route `/3cx/call`: without an API key 401 at the edge
/// (the worker and 3CX see nothing), a key without the `telephony` group 403, the API client's
/// key places the call at the 3CX fake (the key never reaches the worker's upstream request to
/// 3CX), and `GET /3cx/call/{id}` through the same route follows the participant. The worker has
/// `WORKER_ADMIN_TOKEN`: requests straight to it without that bearer (or with a client's own)
/// are 401, while Kong's request-transformer replaces a forged `Authorization` by the bearer, so
/// the API client's requests pass (the manual calendar trigger too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_through_kong_needs_the_api_key() {
    let redis = RedisServer::start(false);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let pbx = threecx::start_call_control(threecx::CallControlConfig::default())
        .await
        .unwrap();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .arg("serve")
            .env_clear()
            .env("REDIS_URL", redis.url())
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .env("WORKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("WORKER_ROLES", "intake")
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("THREECX_API_BASE_URL", pbx.base_url())
            .env("THREECX_CLIENT_ID", &pbx.config().client_id)
            .env("THREECX_CLIENT_SECRET", &pbx.config().client_secret)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/health")).await;
    let config = render(&vars(
        &adv,
        &worker_url,
        &placeholder_hooks(),
        &vermieterhelden::generate_secret(),
    ));
    let gw = deployed_gateway(config, free_port()).await;
    let url = format!("{}/3cx/call", gw.base_url());
    let http = reqwest::Client::new();
    let body = json!({"phone": "0511 12345", "extension": "201"});

    // Straight to the worker: no bearer, or the client's own, is 401 on every manual endpoint.
    for auth in [None, Some(FORGED)] {
        let with = |rb: reqwest::RequestBuilder| match auth {
            Some(a) => rb.header("authorization", a),
            None => rb,
        };
        for rb in [
            http.post(format!("{worker_url}/3cx/call")).json(&body),
            http.get(format!("{worker_url}/3cx/call/some-id")),
            http.post(format!("{worker_url}/calendar/sync"))
                .json(&json!({"kuerzel": "ALL"})),
        ] {
            let r = with(rb).send().await.unwrap();
            assert_eq!(r.status(), 401, "{auth:?}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"], "unauthorized", "{v}");
        }
    }

    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "{:?}", r.text().await);
    let r = http
        .post(&url)
        .header("apikey", "wrong-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .header("apikey", "crm-readonly-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a key outside the telephony group");
    assert!(pbx.participants().is_empty());
    assert!(pbx.controls().requests().is_empty(), "3CX saw nothing");

    // A forged `Authorization` next to a valid key: Kong replaces it by the worker's bearer.
    let r = http
        .post(&url)
        .header("apikey", CLIENT_KEY)
        .header("authorization", FORGED)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let placed: Value = r.json().await.unwrap();
    let parts = pbx.participants();
    assert_eq!(parts.len(), 1);
    assert_eq!(
        (parts[0].dn.as_str(), parts[0].party_dn.as_str()),
        ("201", "+4951112345")
    );
    let mk = &pbx.controls().requests_to("/callcontrol/201/makecall")[0];
    assert!(mk.header("apikey").is_none());

    pbx.set_status("201", parts[0].id, "Connected");
    let id = placed["id"].as_str().unwrap();
    let r = http
        .get(format!("{url}/{id}"))
        .header("apikey", CLIENT_KEY)
        .header("authorization", FORGED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "Connected", "{v}");
    let r = http.get(format!("{url}/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{worker_url}/3cx/call/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the bearer alone opens the worker");

    let r = http
        .post(format!("{}/advoware/calendar/sync", gw.base_url()))
        .header("apikey", CLIENT_KEY)
        .header("authorization", FORGED)
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    assert_eq!(
        pbx.participants().len(),
        1,
        "only Kong's request placed a call"
    );
}
