//! Shared token (3CX CRM template): ReportCall POST events and the
//! synchronous contact-lookup GET (verify-only).

use proxy_wasm_host::testing::EchoServer;
use proxy_wasm_host::{HttpRequest, Upstream};
use serde_json::json;

use crate::utils::*;

const TOPIC: &str = "telephony.call.reported";

fn report(token: Option<&str>) -> HttpRequest {
    let r = HttpRequest::post("/3cx/report-call", REPORT_CALL.as_bytes().to_vec())
        .header("content-type", "application/json");
    match token {
        Some(t) => r.header("x-api-key", t),
        None => r,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_call_post() {
    let f = Fixture::new(report_call_config()).await;
    let body = REPORT_CALL.as_bytes();
    for t in [TOKEN_OLD, TOKEN_NEW] {
        let up = assert_forwarded(&f.send(report(Some(t))).await, TOPIC, body);
        assert!(is_uuid_v4(up.header("x-event-id").unwrap()));
    }
    // wrong / prefix of the token / missing: 401 from the header hook, body never read
    for t in [Some("3cx-token-NEW"), Some("wrong"), Some(""), None] {
        let r = f.send(report(t)).await;
        assert_error(&r, 401, "invalid_signature");
        assert!(!r.trace.iter().any(|x| x.contains("proxy_on_request_body")));
    }
    assert_eq!(f.counter("threecx_report", "bad_signature"), 4);
    f.assert_no_secrets_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_lookup_get_is_verified_and_passed_through() {
    let echo = EchoServer::start().await.unwrap();
    let f = Fixture::new(lookup_config()).await;
    let up = Upstream::url(&echo.base_url());
    let req = HttpRequest::get("/3cx/lookup?phone=%2B4951112345").header("x-api-key", TOKEN_NEW);
    let r = f.host.request(0, &f.chain, req, up.clone()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &echo.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/3cx/lookup?phone=%2B4951112345");
    assert_eq!(seen.header("x-api-key"), Some(""), "blanked on the wire");
    assert_signed_lookup(&seen.path, &seen.headers);
    // wrong and missing key
    for req in [
        HttpRequest::get("/3cx/lookup?phone=1").header("x-api-key", "nope"),
        HttpRequest::get("/3cx/lookup?phone=1"),
    ] {
        let r = f.host.request(1, &f.chain, req, up.clone()).await.unwrap();
        assert_error(&r, 401, "invalid_signature");
    }
    assert_eq!(echo.requests().len(), 1);
    assert_eq!(f.counter("threecx_lookup", "accepted"), 1);
    assert_eq!(f.counter("threecx_lookup", "bad_signature"), 2);
    f.assert_no_secrets_logged();
}

/// A client's own gateway headers never reach the worker on the lookup
/// route: the filter's signed values replace them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_lookup_client_gateway_headers_are_replaced() {
    let f = Fixture::new(lookup_config()).await;
    let forged = gateway_signature(GATEWAY_SECRET, LOOKUP_TOPIC, "forged-id", "1", b"/x");
    let req = HttpRequest::get("/3cx/lookup?phone=030123")
        .header("x-api-key", TOKEN_OLD)
        .header("x-gateway-signature", &forged)
        .header("x-event-id", "forged-id")
        .header("x-received-at", "1")
        .header("x-dedup-key", "forged");
    let r = f
        .host
        .request(0, &f.chain, req, Upstream::fixed(200, "{}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let up = r.upstream_request.unwrap();
    assert_eq!(up.path, "/3cx/lookup?phone=030123");
    assert_signed_lookup(&up.path, &up.headers);
    assert_ne!(up.header("x-gateway-signature"), Some(forged.as_str()));
    assert_ne!(up.header("x-event-id"), Some("forged-id"));
    f.assert_no_secrets_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_query_parameter_is_removed_from_the_path() {
    let cfg = json!({
        "route": "threecx_lookup_q", "mode": "verify-only", "scheme": "shared-token",
        "token_query": "token", "secrets": [TOKEN_OLD, TOKEN_NEW], "forward_path": "/telephony/lookup",
        "topic": LOOKUP_TOPIC, "gateway_secret": GATEWAY_SECRET
    });
    let f = Fixture::new(cfg).await;
    let req = HttpRequest::get(&format!("/3cx/lookup?phone=0511&token={TOKEN_OLD}&x=1"));
    let r = f
        .host
        .request(0, &f.chain, req, Upstream::fixed(200, "{}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let up = r.upstream_request.unwrap();
    assert_eq!(up.path, "/telephony/lookup?phone=0511&x=1");
    assert_signed_lookup(&up.path, &up.headers);
    // percent-encoded token is decoded before comparing
    let enc = TOKEN_NEW.replace('-', "%2D");
    let r = f
        .send(HttpRequest::get(&format!("/3cx/lookup?token={enc}")))
        .await;
    assert_eq!(r.upstream_request.unwrap().path, "/telephony/lookup");
    // twice → rejected
    let r = f
        .send(HttpRequest::get(&format!(
            "/3cx/lookup?token={TOKEN_OLD}&token={TOKEN_OLD}"
        )))
        .await;
    assert_error(&r, 401, "invalid_signature");
    let r = f.send(HttpRequest::get("/3cx/lookup?token=bad")).await;
    assert_error(&r, 401, "invalid_signature");
    f.assert_no_secrets_logged();
}

/// In Kong the upstream receives `$upstream_uri`, computed before the filter
/// runs: the filter must change it (through `ngx.upstream_uri`) or the token
/// removed from `:path` would still reach the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kong_the_token_is_removed_from_the_upstream_uri_too() {
    let cfg = json!({
        "route": "threecx_lookup_k", "mode": "verify-only", "scheme": "shared-token",
        "token_query": "token", "secrets": [TOKEN_OLD], "forward_path": "/3cx/lookup",
        "topic": LOOKUP_TOPIC, "gateway_secret": GATEWAY_SECRET
    });
    let f = Fixture::new(cfg).await;
    let req = HttpRequest::get(&format!("/3cx/lookup?phone=0511&token={TOKEN_OLD}"))
        .kong_upstream_uri("/3cx/lookup");
    let r = f
        .host
        .request(0, &f.chain, req, Upstream::fixed(200, "{}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let up = r.upstream_request.unwrap();
    assert_eq!(up.path, "/3cx/lookup?phone=0511");
    assert_signed_lookup(&up.path, &up.headers);
}
