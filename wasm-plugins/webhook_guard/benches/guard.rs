//! verify + hash + forward through the proxy-wasm host (the built
//! `webhook_guard.wasm` under wasmtime, driven like Kong) for 1 KiB, 16 KiB
//! and 256 KiB EspoCRM batches, next to native HMAC-SHA256 + SHA-256 and
//! native HMAC-SHA256 + canonical `dedup_key` over the same bytes.
//!
//! Run: `cargo build --release --target wasm32-wasip1 -p webhook-guard && cargo bench -p webhook-guard`
//! (`GUARD_AB_BASE=<other webhook_guard.wasm>`: interleaved A/B instead, see `ab_compare`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use proxy_wasm_host::gateway::DEPLOYED_CLIENT_BODY_BUFFER_SIZE;
use proxy_wasm_host::{Clock, FilterSpec, Host, HostBuilder, HttpRequest, Upstream};
use serde_json::json;
use sha2::{Digest, Sha256};

const ID: &str = "6745a1b2c3d4e5f6a";
const SECRET: &str = "espo-secret-bench-0001";
const PATH: &str = "/vmh/webhook/beteiligte/update";

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

/// An EspoCRM-like batch of about `size` bytes.
fn batch(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut len = 2;
    let mut i = 0;
    while len < size {
        let item = format!(
            r#"{{"id":"6745a1b2c3d{i:06}","name":"Max Mustermann {i}","modifiedAt":"2026-11-23 13:58:02","syncStatus":"dirty","emailAddress":"max{i}@example.org","description":"Änderung über das Portal, Rückruf erbeten.","amount":{}.5}}"#,
            i * 3
        );
        len += item.len() + 1;
        items.push(item);
        i += 1;
    }
    format!("[{}]", items.join(",")).into_bytes()
}

/// One worker, a fixed clock and the deployed body buffer (16 and 256 KiB stay readable).
fn bench_host() -> HostBuilder {
    Host::builder()
        .filter("webhook_guard")
        .workers(1)
        .clock(Clock::manual_at(1_795_442_520_000_000_000))
        .client_body_buffer_size(DEPLOYED_CLIENT_BODY_BUFFER_SIZE)
}

/// Per-request wall times of `n` rounds, A and B interleaved: (min, p10, median) each.
fn ab_rounds(n: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> [[Duration; 3]; 2] {
    let mut times = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for _ in 0..n {
        for (i, f) in [&mut a as &mut dyn FnMut(), &mut b].into_iter().enumerate() {
            let t = std::time::Instant::now();
            f();
            times[i].push(t.elapsed());
        }
    }
    times.map(|mut t| {
        t.sort();
        [t[0], t[t.len() / 10], t[t.len() / 2]]
    })
}

/// `GUARD_AB_BASE=<other webhook_guard.wasm> cargo bench -p webhook-guard`:
/// interleaves requests through that build and the current one in one host
/// and prints per-request min / p10 / median, which stay comparable on a
/// busy machine where criterion's means drift between runs.
fn ab_compare(base: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = bench_host()
        .filter_file("webhook_guard_base", base)
        .build()
        .unwrap();
    // A fixed topic: builds from before `webhooks[].actions` existed accept this config too.
    let cfg = json!({
        "route": "bench", "scheme": "espocrm", "webhooks": [{"id": ID, "secret": SECRET}],
        "topic": "vmh.beteiligte.update",
        "gateway_secret": "gateway-secret-bench-0123456789", "max_body_bytes": 1_048_576
    });
    let new = rt
        .block_on(host.add_chain(&[FilterSpec::json("webhook_guard", &cfg)]))
        .unwrap();
    let old = rt
        .block_on(host.add_chain(&[FilterSpec::json("webhook_guard_base", &cfg)]))
        .unwrap();
    for size in [1024usize, 16 * 1024, 256 * 1024] {
        let body = batch(size);
        let sig = STANDARD.encode(format!(
            "{ID}:{}",
            hex::encode(hmac_sha256(SECRET.as_bytes(), &body))
        ));
        let req = HttpRequest::post(PATH, body.clone())
            .header("content-type", "application/json")
            .header("Signature", &sig);
        let send = |chain| {
            let r = rt
                .block_on(host.request(0, chain, req.clone(), Upstream::fixed(202, "")))
                .unwrap();
            assert_eq!(r.status, 202);
        };
        let unsigned = HttpRequest::post(PATH, body.clone()).header("content-type", "text/plain");
        let host_alone = || {
            let r = rt
                .block_on(host.request(0, &new, unsigned.clone(), Upstream::fixed(202, "")))
                .unwrap();
            assert_eq!(r.status, 415);
        };
        let native_sha = || {
            std::hint::black_box((hmac_sha256(SECRET.as_bytes(), &body), Sha256::digest(&body)));
        };
        let native_key = || {
            std::hint::black_box((
                hmac_sha256(SECRET.as_bytes(), &body),
                bitbylaw_core::canonical::dedup_key(&body).unwrap(),
            ));
        };
        let rounds = if size > 100_000 { 60 } else { 400 };
        let [base_t, cur_t] = ab_rounds(rounds, || send(&old), || send(&new));
        let [host_t, _] = ab_rounds(rounds, host_alone, || ());
        let [sha_t, key_t] = ab_rounds(rounds, native_sha, native_key);
        println!("A/B {} KiB (min / p10 / median per request)", size / 1024);
        for (name, t) in [
            ("base filter", base_t),
            ("current filter", cur_t),
            ("host alone (415)", host_t),
            ("native HMAC + SHA-256", sha_t),
            ("native HMAC + dedup_key", key_t),
        ] {
            println!(
                "  {name:<24} {:>10.1?} {:>10.1?} {:>10.1?}",
                t[0], t[1], t[2]
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    if let Ok(base) = std::env::var("GUARD_AB_BASE") {
        ab_compare(&base);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = bench_host().build().expect(
        "build the filter first: cargo build --release --target wasm32-wasip1 -p webhook-guard",
    );
    let cfg = json!({
        "route": "bench", "scheme": "espocrm",
        "webhooks": [{"id": ID, "secret": SECRET, "actions": ["update"]}],
        "topic": "vmh.beteiligte.{action}", "path_pattern": "/vmh/webhook/beteiligte/{action}",
        "gateway_secret": "gateway-secret-bench-0123456789", "max_body_bytes": 1_048_576
    });
    let chain = rt
        .block_on(host.add_chain(&[FilterSpec::json("webhook_guard", &cfg)]))
        .unwrap();
    assert!(chain.all_configured());

    let mut group = c.benchmark_group("guard");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for size in [1024usize, 16 * 1024, 256 * 1024] {
        let body = batch(size);
        let sig = STANDARD.encode(format!(
            "{ID}:{}",
            hex::encode(hmac_sha256(SECRET.as_bytes(), &body))
        ));
        let req = HttpRequest::post(PATH, body.clone())
            .header("content-type", "application/json")
            .header("Signature", &sig);
        // sanity: accepted
        let r = rt
            .block_on(host.request(0, &chain, req.clone(), Upstream::fixed(202, "")))
            .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        let label = format!("{}KiB", size / 1024);
        group.throughput(Throughput::Bytes(body.len() as u64));

        group.bench_with_input(
            BenchmarkId::new("wasm_filter_accept", &label),
            &req,
            |b, req| {
                b.iter(|| {
                    let r = rt
                        .block_on(host.request(0, &chain, req.clone(), Upstream::fixed(202, "")))
                        .unwrap();
                    assert_eq!(r.status, 202);
                })
            },
        );
        // The host's own cost for the same request: rejected in the header
        // hook (wrong content type → 415), so no body work happens in the filter.
        let unsigned = HttpRequest::post(PATH, body.clone()).header("content-type", "text/plain");
        group.bench_with_input(
            BenchmarkId::new("wasm_host_reject_headers", &label),
            &unsigned,
            |b, req| {
                b.iter(|| {
                    let r = rt
                        .block_on(host.request(0, &chain, req.clone(), Upstream::fixed(202, "")))
                        .unwrap();
                    assert_eq!(r.status, 415);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("native_hmac_sha256", &label),
            &body,
            |b, body| {
                b.iter(|| {
                    let mac = hmac_sha256(SECRET.as_bytes(), body);
                    let digest = Sha256::digest(body);
                    std::hint::black_box((mac, digest))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("native_hmac_dedup_key", &label),
            &body,
            |b, body| {
                b.iter(|| {
                    let mac = hmac_sha256(SECRET.as_bytes(), body);
                    let key = bitbylaw_core::canonical::dedup_key(body).unwrap();
                    std::hint::black_box((mac, key))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
