//! Generic HMAC-SHA256: configurable header, hex or base64, optional prefix
//! and timestamp header.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proxy_wasm_host::HttpRequest;
use serde_json::json;

use crate::utils::*;

const TOPIC: &str = "tools.generic.received";
const PATH: &str = "/hooks/generic";

fn req(body: &[u8], header_value: &str) -> HttpRequest {
    HttpRequest::post(PATH, body.to_vec())
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", header_value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_with_prefix_and_rotation() {
    let f = Fixture::new(hmac_config()).await;
    let body = br#"{"event":"push","n":[1,2,3]}"#;
    for key in [HMAC_KEY_OLD, HMAC_KEY_NEW] {
        let sig = format!("sha256={}", hex::encode(hmac_sha256(key.as_bytes(), body)));
        assert_forwarded(&f.send(req(body, &sig)).await, TOPIC, body);
        // prefix and hex are case-insensitive
        let upper = format!(
            "SHA256={}",
            hex::encode_upper(hmac_sha256(key.as_bytes(), body))
        );
        assert_forwarded(&f.send(req(body, &upper)).await, TOPIC, body);
    }
    let good = hex::encode(hmac_sha256(HMAC_KEY_NEW.as_bytes(), body));
    // prefix required
    assert_error(&f.send(req(body, &good)).await, 401, "invalid_signature");
    // wrong key, tampered body, missing header
    let wrong = format!("sha256={}", hex::encode(hmac_sha256(b"wrong", body)));
    assert_error(&f.send(req(body, &wrong)).await, 401, "invalid_signature");
    assert_error(
        &f.send(req(
            br#"{"event":"pull","n":[1,2,3]}"#,
            &format!("sha256={good}"),
        ))
        .await,
        401,
        "invalid_signature",
    );
    let missing = HttpRequest::post(PATH, body.to_vec()).header("content-type", "application/json");
    assert_error(&f.send(missing).await, 401, "invalid_signature");
    assert_eq!(f.counter("generic_hmac", "bad_signature"), 4);
    f.assert_no_secrets_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_with_timestamp_header() {
    let cfg = with(
        hmac_config(),
        json!({"signature_encoding": "base64", "signature_prefix": null, "timestamp_header": "X-Timestamp"}),
    );
    let f = Fixture::new(cfg).await;
    let body = br#"{"a":1}"#;
    let sign = |ts: u64, key: &str| {
        let mut msg = format!("{ts}.").into_bytes();
        msg.extend_from_slice(body);
        STANDARD.encode(hmac_sha256(key.as_bytes(), &msg))
    };
    let send = |ts: u64, sig: String| req(body, &sig).header("X-Timestamp", &ts.to_string());
    assert_forwarded(&f.send(send(T0, sign(T0, HMAC_KEY_OLD))).await, TOPIC, body);
    let up = f
        .send(send(T0 + 10, sign(T0 + 10, HMAC_KEY_NEW)))
        .await
        .upstream_request
        .unwrap();
    assert_eq!(
        up.header("x-timestamp"),
        Some(""),
        "timestamp header is blanked"
    );
    // body-only MAC does not pass when a timestamp header is configured
    let body_only = STANDARD.encode(hmac_sha256(HMAC_KEY_NEW.as_bytes(), body));
    assert_error(&f.send(send(T0, body_only)).await, 401, "invalid_signature");
    // stale / future
    assert_error(
        &f.send(send(T0 - 301, sign(T0 - 301, HMAC_KEY_NEW))).await,
        401,
        "invalid_signature",
    );
    assert_error(
        &f.send(send(T0 + 301, sign(T0 + 301, HMAC_KEY_NEW))).await,
        401,
        "invalid_signature",
    );
    assert_eq!(f.counter("generic_hmac", "stale"), 2);
    // missing timestamp header
    assert_error(
        &f.send(req(body, &sign(T0, HMAC_KEY_NEW))).await,
        401,
        "invalid_signature",
    );
    // the signed timestamp: changing it breaks the MAC
    assert_error(
        &f.send(send(T0 + 1, sign(T0, HMAC_KEY_NEW))).await,
        401,
        "invalid_signature",
    );
}
