//! The worker's manual endpoints (`POST /calendar/sync`, `POST /3cx/call`, `GET /3cx/call/{id}`)
//! behind the repository's kong.yaml in gateway mode: Kong's request-transformer drops the
//! client's `Authorization` and injects `Bearer $WORKER_ADMIN_TOKEN`. Checked on the wire here:
//! a recording upstream in place of the worker sees exactly the configured bearer, never a
//! client's, never the API key. End to end against the real worker with the token set:
//! `threecx.rs`, `outbound_call_through_kong_needs_the_api_key`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitbylaw_fakes::redis_server::free_port;
use bitbylaw_fakes::{advoware, receiver, vermieterhelden};
use common::*;
use serde_json::json;

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

    // Refused at the edge: the transformer runs after key-auth, so a request without a valid
    // key never gets the bearer — nothing reaches the upstream, whatever it carries.
    let r = http
        .post(format!("{base}/3cx/call"))
        .header("authorization", expected.as_str())
        .json(&json!({"phone": "0511 12345", "extension": "201"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(upstream.requests().len(), 4);
}
