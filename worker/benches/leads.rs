//! Leads benchmark (issue 13): signed `POST /events` (as the edge forwards a Vermieterhelden
//! form) → queue → leads handler → `POST Lead` at the EspoCRM fake, through the real worker
//! binary on a real `redis-server`.
//!
//! - Latency: one lead at a time, from sending the event until the Lead exists in the fake
//!   (polled every 0.5 ms): p50 / p99 / max (goal: p99 < 500 ms).
//! - Burst: 1,000 leads sent by 32 concurrent senders; leads/s until all 1,000 exist.
//!
//! Run: `cargo bench -p bitbylaw-worker --bench leads` (needs `cargo build -p bitbylaw-worker`
//! first only if the binary is stale; cargo builds it for benches). Smaller:
//! `LEADS_BENCH_SAMPLES=50 LEADS_BENCH_BURST=200 cargo bench -p bitbylaw-worker --bench leads`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use common::{gateway_request, now_secs, RedisServer, Worker, SECRET};
use futures::StreamExt;
use serde_json::json;

const TOPIC: &str = "leads.vermieterhelden.received";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schema_version": "1",
        "event": "lead.created",
        "lead_type": if i % 2 == 0 { "mieter" } else { "vermieter" },
        "contact": {"name": format!("Bench Person{i}"), "email": format!("bench{i}@example.org"),
                    "phone": format!("030 {:07}", 1_000_000 + i)},
        "message": "Benchmark",
        "utm": {"source": "bench"}
    }))
    .unwrap()
}

async fn send(base: &str, i: usize) {
    let r = gateway_request(
        base,
        TOPIC,
        &format!("msg_bench_{i}"),
        &body(i),
        now_secs(),
        SECRET,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let samples = env_usize("LEADS_BENCH_SAMPLES", 200);
        let burst = env_usize("LEADS_BENCH_BURST", 1000);
        let redis = RedisServer::start(false);
        let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
        let api = fake.api_url();
        let key = fake.config().api_key.clone();
        let w = Worker::spawn(
            &redis.url(),
            &[
                ("ESPOCRM_API_BASE_URL", &api),
                ("ESPOCRM_API_KEY", &key),
                ("WORKER_LOG_LEVEL", "warn"),
                ("WORKER_PROMOTE_INTERVAL_MS", "50"),
            ],
            &[],
        );

        let mut lat = Vec::with_capacity(samples);
        for i in 0..samples {
            let t0 = Instant::now();
            send(&w.base, i).await;
            while fake.all("Lead").len() < i + 1 {
                assert!(t0.elapsed() < Duration::from_secs(10), "lead {i} never arrived");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            lat.push(t0.elapsed());
        }
        lat.sort();
        let p99 = pct(&lat, 0.99);
        println!(
            "latency intake → EspoCRM Lead ({samples} sequential): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  [{}: p99 < 500 ms]",
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            lat[lat.len() - 1].as_secs_f64() * 1e3,
            if p99 < Duration::from_millis(500) { "PASS" } else { "FAIL" }
        );

        let start = samples;
        let t0 = Instant::now();
        futures::stream::iter(start..start + burst)
            .for_each_concurrent(32, |i| {
                let base = w.base.clone();
                async move { send(&base, i).await }
            })
            .await;
        let sent = t0.elapsed();
        while fake.all("Lead").len() < start + burst {
            assert!(t0.elapsed() < Duration::from_secs(300), "burst did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let all = t0.elapsed();
        println!(
            "burst of {burst}: accepted in {:.2} s, all in EspoCRM after {:.2} s → {:.0} leads/s",
            sent.as_secs_f64(),
            all.as_secs_f64(),
            burst as f64 / all.as_secs_f64()
        );
        assert_eq!(fake.writes("Lead"), samples + burst, "one create per lead");
    });
}
