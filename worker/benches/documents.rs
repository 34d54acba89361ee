//! Document sync benchmark (issue 15): N documents of S bytes linked to one eviction case, one
//! `vmh.entity.link` event for the case → the collection is created and every document is
//! uploaded and added. The real worker binary, a real `redis-server`, the EspoCRM and xAI fakes
//! over loopback.
//!
//! Reports wall time until every document is `clean`, uploads, xAI and EspoCRM API calls per
//! document, and the worker's peak RSS (`VmHWM`), whose goal is < 64 MB while streaming.
//!
//! Run: `cargo bench -p bitbylaw-worker --bench documents`
//! Smaller: `DOC_BENCH_DOCS=20 DOC_BENCH_BYTES=262144 cargo bench -p bitbylaw-worker --bench documents`
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use bitbylaw_fakes::xai::{self, XaiConfig};
use common::{post_event, RedisServer, Worker};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let docs = env_usize("DOC_BENCH_DOCS", 100);
    let bytes = env_usize("DOC_BENCH_BYTES", 1 << 20);
    let redis = RedisServer::start(false);
    let espo = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let xai = xai::start(XaiConfig::default()).await.unwrap();
    let vars = common::documents_env(&espo, &xai, "warn");
    let o: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let worker = Worker::spawn(&redis.url(), &o, &[]);

    let case = espo
        .insert(
            "Raeumungsklage",
            json!({"name": "Bench", "status": "Offen"}),
        )
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ids = Vec::with_capacity(docs);
    for i in 0..docs {
        // Distinct content per document (same size).
        let mut content = vec![(i % 251) as u8; bytes];
        content[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let att = espo.insert_attachment("application/pdf", content);
        let id = espo
            .insert(
                "CDokumente",
                json!({"name": format!("Dokument {i}.pdf"), "dokumentId": att}),
            )
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        espo.relate("CDokumente", &id, "raeumungsklagen", &case);
        ids.push(id);
    }
    let rss_before = status_kib(worker.pid(), "VmRSS:");
    espo.controls().clear_requests();
    xai.files_controls().clear_requests();
    xai.management_controls().clear_requests();

    let start = Instant::now();
    let body = json!([{"id": case, "entityType": "Raeumungsklage"}]).to_string();
    let (status, v) = post_event(&worker.base, "vmh.entity.link", body.as_bytes()).await;
    assert_eq!(status, 202, "{v}");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let clean = ids
            .iter()
            .filter(|id| espo.get("CDokumente", id).unwrap()["xaiSyncStatus"] == "clean")
            .count();
        if clean == docs {
            break;
        }
        assert!(Instant::now() < deadline, "only {clean}/{docs} synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = start.elapsed();
    let peak = status_kib(worker.pid(), "VmHWM:");
    let c = xai.counters();
    let xai_calls =
        xai.files_controls().requests().len() + xai.management_controls().requests().len();
    let espo_calls = espo.controls().requests().len();
    let n = docs as f64;
    println!("documents: {docs} x {bytes} bytes linked to one case, one link event");
    println!(
        "  wall time until all clean: {:.2} s ({:.1} docs/s)",
        wall.as_secs_f64(),
        n / wall.as_secs_f64()
    );
    println!(
        "  uploads {}  collection creates {}  adds {}",
        c.uploads, c.collection_creates, c.adds
    );
    println!(
        "  API calls per document: xAI {:.2}, EspoCRM {:.2} (incl. the attachment download)",
        xai_calls as f64 / n,
        espo_calls as f64 / n
    );
    println!(
        "  worker RSS before {:.1} MiB, peak (VmHWM) {:.1} MiB",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
