//! The worker's manual endpoints (`POST /calendar/sync`, `POST /3cx/call`, `GET /3cx/call/{id}`)
//! behind the repository's kong.yaml in gateway mode: Kong's request-transformer drops the
//! client's `Authorization` and injects `Bearer $WORKER_ADMIN_TOKEN`. Checked twice: on the wire
//! (a recording upstream in place of the worker sees exactly the configured bearer, never a
//! client's, never the API key) and end to end (a worker with the token set accepts what Kong
//! forwards, refuses a direct request without the bearer, and nothing reaches 3CX for it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use bitbylaw_fakes::redis_server::{free_port, RedisServer};
use bitbylaw_fakes::{advoware, receiver, threecx, vermieterhelden};
use common::*;
use serde_json::{json, Value};

const FORGED: &str = "Bearer forged-by-the-client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_replaces_the_clients_authorization_with_the_admin_bearer() {
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let upstream = receiver::start_ok().await.unwrap();
    let config = render(&vars(
        &adv,
        &upstream.base_url(),
        &placeholder_hooks(),
        &vermieterhelden::generate_secret(),
    ));
    let gw = deployed_gateway(config, free_port()).await;
    let http = reqwest::Client::new();
    let base = gw.base_url();

    // Without a forged header, with one, and with two (every value must go).
    let sends = [
        http.post(format!("{base}/advoware/calendar/sync"))
            .header("apikey", CLIENT_KEY)
            .json(&json!({"kuerzel": "ALL"})),
        http.post(format!("{base}/advoware/calendar/sync"))
            .header("apikey", CLIENT_KEY)
            .header("authorization", FORGED)
            .json(&json!({"kuerzel": "ALL"})),
        http.post(format!("{base}/3cx/call"))
            .header("apikey", CLIENT_KEY)
            .header("Authorization", FORGED)
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}x"))
            .json(&json!({"phone": "0511 12345", "extension": "201"})),
        http.get(format!("{base}/3cx/call/some-id"))
            .header("apikey", CLIENT_KEY)
            .header("authorization", FORGED),
    ];
    for send in sends {
        let r = send.send().await.unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let seen = upstream.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/calendar/sync",
            "/calendar/sync",
            "/3cx/call",
            "/3cx/call/some-id"
        ]
    );
    let expected = format!("Bearer {ADMIN_TOKEN}");
    for r in &seen {
        let auth: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(auth, [expected.as_str()], "{} {}", r.method, r.path);
        assert!(r.header("apikey").is_none(), "key hidden from the worker");
    }

    // Refused at the edge: the transformer runs after key-auth and acl, so a request without a
    // valid key (or outside the group) never gets the bearer — nothing reaches the upstream.
    let r = http
        .post(format!("{base}/3cx/call"))
        .header("authorization", expected.as_str())
        .json(&json!({"phone": "0511 12345", "extension": "201"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/advoware/calendar/sync"))
        .header("apikey", "crm-readonly-key")
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(upstream.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_with_the_admin_token_accepts_kong_and_refuses_direct_requests() {
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
            .args(["serve", "--no-consumers", "--no-schedules"])
            .env_clear()
            .env("REDIS_URL", redis.url())
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("WORKER_ADMIN_TOKEN", ADMIN_TOKEN)
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
    let http = reqwest::Client::new();
    let base = gw.base_url();
    let call = json!({"phone": "0511 12345", "extension": "201"});

    // Direct to the worker: no bearer, or the client's own, is 401 — nothing queued or placed.
    for auth in [None, Some(FORGED)] {
        let with = |rb: reqwest::RequestBuilder| match auth {
            Some(a) => rb.header("authorization", a),
            None => rb,
        };
        let r = with(http.post(format!("{worker_url}/calendar/sync")))
            .json(&json!({"kuerzel": "ALL"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = with(http.post(format!("{worker_url}/3cx/call")))
            .json(&call)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "unauthorized", "{v}");
        let r = with(http.get(format!("{worker_url}/3cx/call/some-id")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert!(pbx.controls().requests().is_empty(), "3CX saw nothing");

    // Through Kong with the API key (and a forged header Kong drops): accepted.
    let r = http
        .post(format!("{base}/advoware/calendar/sync"))
        .header("apikey", CLIENT_KEY)
        .header("authorization", FORGED)
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let r = http
        .post(format!("{base}/3cx/call"))
        .header("apikey", CLIENT_KEY)
        .header("authorization", FORGED)
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let placed: Value = r.json().await.unwrap();
    assert_eq!(pbx.participants().len(), 1);
    let id = placed["id"].as_str().unwrap();
    let r = http
        .get(format!("{base}/3cx/call/{id}"))
        .header("apikey", CLIENT_KEY)
        .header("authorization", FORGED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // The placed call's state is readable directly only with the bearer.
    let r = http
        .get(format!("{worker_url}/3cx/call/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The calendar trigger queued exactly the one job Kong forwarded.
    let out = Command::new("redis-cli")
        .args(["-u", &redis.url(), "XLEN", "bbl:q:calendar.sync.all"])
        .output()
        .unwrap();
    let len = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(len, "1");
}
