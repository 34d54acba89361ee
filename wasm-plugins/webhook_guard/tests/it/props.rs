//! Property tests through the wasm filter: arbitrary bodies and credential
//! headers never trap it (a trap is HTTP 500 in Kong).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use proxy_wasm_host::{BodyMode, HttpRequest};

use crate::utils::*;

const CASES: u32 = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn allowed(status: u16) -> bool {
    matches!(status, 200 | 202 | 400 | 401 | 404 | 413 | 415)
}

#[test]
fn arbitrary_bodies_and_signature_headers_never_trap() {
    let rt = runtime();
    let espo = rt.block_on(Fixture::with_mode(
        with(
            espo_config(),
            serde_json::json!({"max_body_bytes": 512, "dedup_window_secs": 60}),
        ),
        BodyMode::Streamed,
    ));
    let std = rt.block_on(Fixture::new(std_config()));
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..700),
        any::<String>(),
        any::<String>(),
        1usize..5,
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(body, sig, ts, parts, sign)| {
            // EspoCRM route, body split into `parts` chunks; signed correctly
            // half of the time so the JSON/shape/dedup paths see the bytes too.
            let signature = if sign {
                espo_signature(ESPO_ID, ESPO_NEW, &body)
            } else {
                sig.clone()
            };
            let step = body.len().div_ceil(parts).max(1);
            let chunks: Vec<Vec<u8>> = body.chunks(step).map(<[u8]>::to_vec).collect();
            let req = HttpRequest::post("/vmh/webhook/beteiligte/update", Vec::new())
                .header("content-type", "application/json")
                .header("Signature", &signature)
                .header("X-Signature", &sig)
                .chunks(chunks);
            let r = rt.block_on(espo.send(req));
            prop_assert!(allowed(r.status), "status {} body {:?}", r.status, r.text());
            if !sign && !body.is_empty() {
                prop_assert!(
                    r.status != 202 && r.status != 200 || body.len() > 512,
                    "unsigned accepted"
                );
            }
            // Standard Webhooks route with arbitrary header values
            let req = HttpRequest::post("/api/leads/vermieterhelden", body.clone())
                .header("content-type", "application/json")
                .header("webhook-id", &sig)
                .header("webhook-timestamp", &ts)
                .header("webhook-signature", &sig);
            let r = rt.block_on(std.send(req));
            prop_assert!(allowed(r.status), "status {} body {:?}", r.status, r.text());
            prop_assert!(r.status != 202, "unsigned accepted");
            Ok(())
        })
        .unwrap();
    assert!(
        !espo.host.log_text().contains("trapped"),
        "{}",
        espo.host.log_text()
    );
    assert!(!std.host.log_text().contains("trapped"));
}

/// One EspoCRM-like batch item with escapes, non-ASCII text and numbers.
fn batch_item() -> impl Strategy<Value = serde_json::Value> {
    (
        "[a-f0-9]{17}",
        any::<String>(),
        proptest::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 0..4),
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(|(id, text, nums, int, flag)| {
            serde_json::json!({
                "id": id, "name": text, "amounts": nums, "n": int, "dirty": flag,
                "nested": {"x": null, "ü": [text.len(), "€\u{1}\"\\"]}
            })
        })
}

/// Renders `v` with whitespace and keys in reverse order (a different byte
/// layout of the same JSON value).
fn reversed(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Array(items) => {
            out.push_str("[ ");
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" ,\n");
                }
                reversed(it, out);
            }
            out.push(']');
        }
        serde_json::Value::Object(m) => {
            out.push_str("{ ");
            for (i, (k, it)) in m.iter().rev().enumerate() {
                if i > 0 {
                    out.push_str(",\t");
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(" : ");
                reversed(it, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[test]
fn dedup_key_and_gateway_signature_match_native_code() {
    let rt = runtime();
    let espo = rt.block_on(Fixture::new(with(
        espo_config(),
        serde_json::json!({"max_body_bytes": 65536}),
    )));
    let strategy = proptest::collection::vec(batch_item(), 1..12);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |items| {
            let value = serde_json::Value::Array(items);
            let compact = value.to_string().into_bytes();
            let mut spaced = String::new();
            reversed(&value, &mut spaced);
            let want = bitbylaw_core::canonical::dedup_key(&compact).unwrap();
            for body in [compact.clone(), spaced.into_bytes()] {
                let r = rt.block_on(espo.send(espo_request(
                    "/vmh/webhook/beteiligte/update",
                    &body,
                    ESPO_NEW,
                )));
                let up = assert_forwarded(&r, "vmh.beteiligte.update", &body);
                prop_assert_eq!(up.header("x-dedup-key"), Some(want.as_str()));
                // a fresh id per request keeps the edge dedup memory out of the way
                rt.block_on(espo.advance(3600));
            }
            Ok(())
        })
        .unwrap();
}
