//! Standard Webhooks (Vermieterhelden WordPress plugin): `whsec_` secrets,
//! `v1,` signatures, timestamp tolerance in both directions.

use proxy_wasm_host::HttpRequest;

use crate::utils::*;

const TOPIC: &str = "leads.vermieterhelden.received";
const ROUTE: &str = "vermieterhelden";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_and_rotated_secrets_forward_with_webhook_id_as_event_id() {
    let f = Fixture::new(std_config()).await;
    let body = LEAD.as_bytes();
    for (i, secret) in [WHSEC_OLD, WHSEC_NEW].iter().enumerate() {
        let id = format!("msg_2p8dZ3kq{i}");
        let r = f.send(std_request(body, &id, T0, secret)).await;
        let up = assert_forwarded(&r, TOPIC, body);
        assert_eq!(up.header("x-event-id"), Some(id.as_str()));
    }
    // several signatures in one header, one valid
    let sig = std_signature(WHSEC_NEW, "msg_multi", T0, body);
    let req = HttpRequest::post("/api/leads/vermieterhelden", body.to_vec())
        .header("content-type", "application/json")
        .header("webhook-id", "msg_multi")
        .header("webhook-timestamp", &T0.to_string())
        .header("webhook-signature", &format!("v1,AAAA v1a,xyz {sig}"));
    assert_forwarded(&f.send(req).await, TOPIC, body);
    assert_eq!(f.counter(ROUTE, "accepted"), 3);
    f.assert_no_secrets_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_wrong_secret_and_id_swap_are_401() {
    let f = Fixture::new(std_config()).await;
    let body = LEAD.as_bytes();
    let other = "whsec_b3RoZXItc2VjcmV0LWtleQ==";
    assert_error(
        &f.send(std_request(body, "msg_1", T0, other)).await,
        401,
        "invalid_signature",
    );
    let mut req = std_request(body, "msg_1", T0, WHSEC_NEW);
    let mut tampered = body.to_vec();
    *tampered.last_mut().unwrap() = b' ';
    req = req.body(tampered);
    assert_error(&f.send(req).await, 401, "invalid_signature");
    // the id is signed: replaying the signature under another id fails
    let mut req = std_request(body, "msg_1", T0, WHSEC_NEW);
    for (k, v) in req.headers.iter_mut() {
        if k == "webhook-id" {
            *v = "msg_2".into();
        }
    }
    assert_error(&f.send(req).await, 401, "invalid_signature");
    assert_eq!(f.counter(ROUTE, "bad_signature"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_future_timestamps() {
    let f = Fixture::new(std_config()).await;
    let body = LEAD.as_bytes();
    // boundaries: ±300 s pass
    assert_eq!(
        f.send(std_request(body, "m1", T0 - 300, WHSEC_NEW))
            .await
            .status,
        202
    );
    assert_eq!(
        f.send(std_request(body, "m2", T0 + 300, WHSEC_NEW))
            .await
            .status,
        202
    );
    // outside: same generic answer, counted as stale
    for ts in [T0 - 301, T0 + 301, 0, T0 + 86_400] {
        assert_error(
            &f.send(std_request(body, "m3", ts, WHSEC_NEW)).await,
            401,
            "invalid_signature",
        );
    }
    assert_eq!(f.counter(ROUTE, "stale"), 4);
    assert_eq!(f.counter(ROUTE, "bad_signature"), 0);
    assert!(f.host.log_text().contains("signature_stale"));
    // the host clock moves: a request signed now is stale 301 s later
    let req = std_request(body, "m4", T0, WHSEC_NEW);
    f.advance(301).await;
    assert_error(&f.send(req).await, 401, "invalid_signature");
    assert_eq!(f.counter(ROUTE, "stale"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_headers() {
    let f = Fixture::new(std_config()).await;
    let body = LEAD.as_bytes();
    for drop in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut req = std_request(body, "m", T0, WHSEC_NEW);
        req.headers.retain(|(k, _)| k != drop);
        assert_error(&f.send(req).await, 401, "invalid_signature");
    }
    let mut req = std_request(body, "m", T0, WHSEC_NEW);
    for (k, v) in req.headers.iter_mut() {
        if k == "webhook-timestamp" {
            *v = "17954425e2".into();
        }
    }
    assert_error(&f.send(req).await, 401, "invalid_signature");
    // an authentic but unusable webhook-id (space) cannot become an event id
    let r = f
        .send(std_request(body, "msg with space", T0, WHSEC_NEW))
        .await;
    assert_error(&r, 400, "invalid_event_id");
    // object payload required
    let arr = br#"[{"id":"x"}]"#;
    assert_error(
        &f.send(std_request(arr, "m5", T0, WHSEC_NEW)).await,
        400,
        "invalid_payload",
    );
}
