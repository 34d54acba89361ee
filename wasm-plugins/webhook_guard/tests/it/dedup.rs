//! Canonical dedup keys and the edge dedup window.

use std::time::Duration;

use proxy_wasm_host::{Clock, FilterSpec, Host, HttpRequest, Upstream};
use serde_json::json;

use crate::utils::*;

const PATH: &str = "/vmh/webhook/beteiligte/update";
const TOPIC: &str = "vmh.beteiligte.update";

fn key_of(r: &proxy_wasm_host::HttpResponse) -> String {
    r.upstream_request
        .as_ref()
        .expect("forwarded")
        .header("x-dedup-key")
        .expect("key")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_hash_is_stable_and_sensitive() {
    let f = Fixture::new(espo_config()).await;
    let variants = [
        r#"[{"id":"a1","name":"Max","n":1.50,"tags":["x","y"]}]"#,
        r#"[ { "name" : "Max", "tags":["x","y"], "id":"a1", "n":1.5 } ]"#,
        "[\n  {\"tags\": [\"x\", \"y\"],\n   \"n\": 15e-1,\n   \"id\": \"\\u0061\\u0031\",\n   \"name\": \"Max\"}\n]\n",
    ];
    let mut keys = Vec::new();
    for v in variants {
        let r = f.send(espo_request(PATH, v.as_bytes(), ESPO_NEW)).await;
        assert_forwarded(&r, TOPIC, v.as_bytes());
        keys.push(key_of(&r));
    }
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    // the canonical form is known: its SHA-256 is the key
    let canonical = r#"[{"id":"a1","n":1.5,"name":"Max","tags":["x","y"]}]"#;
    assert_eq!(keys[0], sha256_hex(canonical.as_bytes()));
    // any value change gives another key
    for changed in [
        r#"[{"id":"a2","name":"Max","n":1.5,"tags":["x","y"]}]"#,
        r#"[{"id":"a1","name":"Max ","n":1.5,"tags":["x","y"]}]"#,
        r#"[{"id":"a1","name":"Max","n":1.51,"tags":["x","y"]}]"#,
        r#"[{"id":"a1","name":"Max","n":1.5,"tags":["y","x"]}]"#,
        r#"[{"id":"a1","name":"Max","n":1.5,"tags":["x","y"],"extra":null}]"#,
    ] {
        let r = f
            .send(espo_request(PATH, changed.as_bytes(), ESPO_NEW))
            .await;
        assert_ne!(key_of(&r), keys[0], "{changed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_within_the_window_are_answered_at_the_edge() {
    let f = Fixture::new(with(espo_config(), json!({"dedup_window_secs": 600}))).await;
    let body = ESPO_BATCH.as_bytes();
    let first = f.send(espo_request(PATH, body, ESPO_NEW)).await;
    let key = assert_forwarded(&first, TOPIC, body)
        .header("x-dedup-key")
        .unwrap()
        .to_string();
    // exact re-delivery, on the other worker too (shared memory)
    for w in [0, 1] {
        let r = f.send_on(w, espo_request(PATH, body, ESPO_OLD)).await;
        assert_eq!(r.status, 200);
        assert!(r.local_response && r.upstream_request.is_none());
        assert_eq!(r.json().unwrap(), json!({"status": "duplicate"}));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-dedup-key"), Some(key.as_str()));
    }
    // same JSON, other spelling: also a duplicate
    let spaced = ESPO_BATCH.replace(",\"", ", \"");
    assert_eq!(
        f.send(espo_request(PATH, spaced.as_bytes(), ESPO_NEW))
            .await
            .status,
        200
    );
    // the same body on another topic is not
    let r = f
        .send(espo_request(
            "/vmh/webhook/beteiligte/create",
            body,
            ESPO_NEW,
        ))
        .await;
    assert_forwarded(&r, "vmh.beteiligte.create", body);
    // an unsigned copy is still rejected, not "duplicate"
    assert_error(
        &f.send(espo_request(PATH, body, "wrong")).await,
        401,
        "invalid_signature",
    );
    assert_eq!(f.counter("espocrm_beteiligte", "duplicate"), 3);
    assert_eq!(f.counter("espocrm_beteiligte", "accepted"), 2);
    // the window expires by the host clock
    f.advance(599).await;
    assert_eq!(f.send(espo_request(PATH, body, ESPO_NEW)).await.status, 200);
    f.advance(1).await;
    let r = f.send(espo_request(PATH, body, ESPO_NEW)).await;
    assert_forwarded(&r, TOPIC, body);
    assert_eq!(
        r.upstream_request.unwrap().header("x-received-at"),
        Some((T0 + 600).to_string().as_str())
    );
    // and is re-armed by the new acceptance
    assert_eq!(f.send(espo_request(PATH, body, ESPO_NEW)).await.status, 200);
    assert_eq!(f.counter("espocrm_beteiligte", "duplicate"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_events_the_worker_accepted_are_remembered() {
    let host = Host::builder()
        .filter(FILTER)
        .workers(1)
        .clock(Clock::manual_at(T0 * 1_000_000_000))
        .build()
        .unwrap();
    let cfg = with(espo_config(), json!({"dedup_window_secs": 600}));
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &cfg)])
        .await
        .unwrap();
    let body = ESPO_BATCH.as_bytes();
    // the worker fails: EspoCRM will retry, which must reach the worker again
    let r = host
        .request(
            0,
            &chain,
            espo_request(PATH, body, ESPO_NEW),
            Upstream::fixed(503, "busy"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    let r = host
        .request(
            0,
            &chain,
            espo_request(PATH, body, ESPO_NEW),
            Upstream::fixed(200, "{}"),
        )
        .await
        .unwrap();
    assert!(
        r.upstream_request.is_some(),
        "retry after a failure is forwarded"
    );
    let r = host
        .request(
            0,
            &chain,
            espo_request(PATH, body, ESPO_NEW),
            Upstream::fixed(200, "{}"),
        )
        .await
        .unwrap();
    assert!(r.upstream_request.is_none(), "now it is a duplicate");
    assert_eq!(r.status, 200);
    // the stored value: expiry, topic, key
    let stored: Vec<_> = (0..1024)
        .filter_map(|i| host.shared_data(&format!("webhook_guard/dedup/espocrm_beteiligte/{i}")))
        .collect();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8(stored[0].clone()).unwrap();
    assert!(
        text.starts_with(&format!("{} {TOPIC} ", T0 + 600)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_memory_is_bounded_by_the_slot_count() {
    let f = Fixture::new(with(
        espo_config(),
        json!({"dedup_window_secs": 600, "dedup_slots": 8}),
    ))
    .await;
    for i in 0..60 {
        let body = format!(r#"[{{"id":"evt{i}"}}]"#);
        assert_eq!(
            f.send_on(i % 2, espo_request(PATH, body.as_bytes(), ESPO_NEW))
                .await
                .status,
            202
        );
    }
    assert!(
        f.host.shared_entries() <= 8,
        "{} entries",
        f.host.shared_entries()
    );
    // the most recent event is still caught
    let body = r#"[{"id":"evt59"}]"#;
    assert_eq!(
        f.send(espo_request(PATH, body.as_bytes(), ESPO_NEW))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dedup_no_shared_memory_zone_is_needed() {
    let host = Host::builder()
        .filter(FILTER)
        .default_shm_zone(false)
        .build()
        .unwrap();
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &espo_config())])
        .await
        .unwrap();
    let body = ESPO_BATCH.as_bytes();
    for _ in 0..2 {
        let r = host
            .request(
                0,
                &chain,
                espo_request(PATH, body, ESPO_NEW),
                Upstream::fixed(202, ""),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 202);
    }
    // with a dedicated zone named after the filter, the keys live there
    let host = Host::builder()
        .filter(FILTER)
        .default_shm_zone(false)
        .shm_zone("webhook_guard")
        .build()
        .unwrap();
    let chain = host
        .add_chain(&[FilterSpec::json(
            FILTER,
            &with(espo_config(), json!({"dedup_window_secs": 60})),
        )])
        .await
        .unwrap();
    for want in [202, 200] {
        let r = host
            .request(
                0,
                &chain,
                espo_request(PATH, body, ESPO_NEW),
                Upstream::fixed(202, ""),
            )
            .await
            .unwrap();
        assert_eq!(r.status, want);
    }
    let _ = HttpRequest::get("/");
    let _ = Duration::from_secs(1);
}
