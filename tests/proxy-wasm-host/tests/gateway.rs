//! Gateway mode: real HTTP requests routed by a kong.yaml through filter chains.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

use proxy_wasm_host::gateway::{Gateway, GatewayOptions};
use proxy_wasm_host::testing::EchoServer;

async fn start(yaml: &str) -> Gateway {
    let config = kong_config::model::KongConfig::parse(yaml).unwrap();
    Gateway::start(GatewayOptions::new(config)).await.unwrap()
}

fn config(upstream: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
consumers:
  - username: client-app
    keyauth_credentials:
      - key: test-client-key
services:
  - name: backend
    url: {upstream}/base
    filter_chains:
      - name: service-chain
        filters:
          - name: probe_filter
            config: '{{"id":"service","add_request_header":["x-order","service"]}}'
    routes:
      - name: api
        paths: [/api]
        methods: [GET, POST]
        plugins:
          - name: key-auth
          - name: rate-limiting
            config: {{minute: 3, policy: local}}
        filter_chains:
          - filters:
              - name: probe_filter
                config: {{"id": "route", "add_request_header": ["x-order", "route"]}}
      - name: open
        paths: [/open]
        strip_path: false
        plugins:
          - name: request-size-limiting
            config: {{allowed_payload_size: 10, size_unit: bytes}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_authenticates_limits_and_runs_service_then_route_chain() {
    let echo = EchoServer::start().await.unwrap();
    let gw = start(&config(&echo.base_url())).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/things?x=1", gw.base_url());

    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["message"],
        "No API key found in request"
    );

    let resp = client
        .get(&url)
        .header("apikey", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let resp = client
        .get(&url)
        .header("apikey", "test-client-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-remaining-minute"], "2");
    let ids: Vec<_> = resp
        .headers()
        .get_all("x-probe-id")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["service", "route"]);
    let seen = &echo.requests()[0];
    assert_eq!(seen.path, "/base/things?x=1", "strip_path + service path");
    let order: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "x-order")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(order, ["service", "route"]);
    assert_eq!(seen.header("x-consumer-username"), Some("client-app"));

    for _ in 0..2 {
        assert_eq!(
            client
                .get(&url)
                .header("apikey", "test-client-key")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let resp = client
        .get(&url)
        .header("apikey", "test-client-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));

    let resp = client
        .get(format!("{}/nowhere", gw.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["message"],
        "no Route matched with those values"
    );

    let resp = client
        .post(format!("{}/open/x", gw.base_url()))
        .body("0123456789A")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = client
        .post(format!("{}/open/x", gw.base_url()))
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(echo.requests().last().unwrap().path, "/base/open/x");
}

#[test]
fn nginx_sizes_parse_like_ngx_parse_size() {
    use proxy_wasm_host::gateway::parse_nginx_size;
    assert_eq!(parse_nginx_size("8192").unwrap(), 8192);
    assert_eq!(parse_nginx_size("8k").unwrap(), 8192);
    assert_eq!(parse_nginx_size("16K").unwrap(), 16384);
    assert_eq!(parse_nginx_size("1m").unwrap(), 1 << 20);
    assert_eq!(parse_nginx_size("1G").unwrap(), 1 << 30);
    for bad in [
        "",
        "k",
        "8 k",
        "-1",
        "1.5m",
        "8kb",
        "abc",
        "99999999999999999999",
    ] {
        let err = parse_nginx_size(bad).unwrap_err().to_string();
        assert!(err.contains("invalid size"), "{bad:?}: {err}");
    }
}

#[test]
fn gateway_defaults_to_kongs_client_body_buffer_size() {
    let config = kong_config::model::KongConfig::parse("_format_version: \"3.0\"\n").unwrap();
    assert_eq!(GatewayOptions::new(config).client_body_buffer_size, 8192);
}
