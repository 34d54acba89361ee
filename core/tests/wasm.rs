//! Runs natively (`cargo test`) and inside wasm (`wasm-bindgen-test`):
//! the crypto and canonical JSON code must give identical answers on both.
//!
//! ```text
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   cargo test --target wasm32-unknown-unknown -p bitbylaw-core --test wasm
//! ```

// Under wasm these are `#[wasm_bindgen_test]` functions, which clippy's
// `allow-unwrap-in-tests` does not recognise as tests.
#![allow(clippy::unwrap_used)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;

use bitbylaw_core::{advoware, canonical, endpoint, gateway, webhook};

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn advoware_hmac_vector() {
    let sig = advoware::hmac512_signature(
        b"test-secret-key",
        64,
        "app-123",
        "nonce-abc",
        "2026-08-30T00:00:00.000Z",
    );
    assert_eq!(
        sig,
        "o7rz9KmoXZs550HfzO6ffiG17XwiPmlBHlksUYKZ3jcfolELow51Fw5KlrQqCK5y41aIValDjrh1iQ2GZ2WtqQ=="
    );
    let key = advoware::decode_api_key("dGVzdC1zZWNyZXQta2V5").unwrap();
    assert_eq!(key, b"test-secret-key");
    assert_eq!(
        advoware::format_request_timestamp(1_611_929_066_795_554_700),
        "2021-01-29T14:04:26.7955547Z"
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn gateway_signature_vector() {
    let body = br#"[{"id":"1"}]"#;
    let sig = gateway::sign_gateway_event(
        b"gateway-secret",
        "vmh.beteiligte.update",
        "evt-123",
        1_795_442_520,
        body,
    )
    .unwrap();
    assert_eq!(
        sig,
        "v1=ac2e263a986996869bf2809de64d8aec5cf9a4264f14d97f4b3b619e301060f8"
    );
    let secrets: [&[u8]; 2] = [b"old", b"gateway-secret"];
    assert_eq!(
        gateway::verify_gateway_event(
            &secrets,
            &sig,
            "vmh.beteiligte.update",
            "evt-123",
            1_795_442_520,
            body,
            1_795_442_600,
            300
        ),
        Ok(())
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn canonical_json_cases() {
    let c = |s: &str| String::from_utf8(canonical::canonicalize(s.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        c("[1e21, 0.000001, 1e-7, -0, 4.50]"),
        "[1e+21,0.000001,1e-7,0,4.5]"
    );
    assert_eq!(
        c(r#"{ "b": 1, "a": [true, null] }"#),
        r#"{"a":[true,null],"b":1}"#
    );
    assert_eq!(c(r#""\u20ac\u000f""#), "\"\u{20ac}\\u000f\"");
    assert_eq!(
        canonical::dedup_key(b" { \"a\" : 1.0 } ").unwrap(),
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    );
    assert!(canonical::canonicalize(br#"{"a":1,"a":2}"#).is_err());
    let deep = "[".repeat(10_000);
    assert_eq!(
        canonical::canonicalize(deep.as_bytes()),
        Err(canonical::CanonicalError::TooDeep)
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn webhook_standard_vector() {
    let key =
        webhook::decode_standard_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sig = webhook::sign_standard_webhook(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

/// The path rules (issue 16 item 5) give the same answers inside the filter's
/// target as natively.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn endpoint_rules() {
    let allowed = ["api/v1/advonet/".to_string(), "api/v1/Akten".to_string()];
    let code = |e: &str| {
        endpoint::advoware_path(e, &allowed, "api/v1/advonet/")
            .map_err(|e| e.code())
            .err()
    };
    assert_eq!(code("Termine/..;/..;/Token"), Some("endpoint_traversal"));
    assert_eq!(code("Termine/.. /x"), Some("endpoint_traversal"));
    assert_eq!(code("Termine/5;x"), Some("endpoint_path_parameter"));
    assert_eq!(code("%25c0%25ae"), Some("endpoint_not_utf8"));
    assert_eq!(code("Termine/%2541"), Some("endpoint_double_encoded"));
    assert_eq!(code("Termine/%C2%85"), Some("endpoint_control_chars"));
    assert_eq!(
        endpoint::advoware_path("Suche/M%C3%BCller", &allowed, "api/v1/advonet/").unwrap(),
        "/api/v1/advonet/Suche/M%C3%BCller"
    );
}
