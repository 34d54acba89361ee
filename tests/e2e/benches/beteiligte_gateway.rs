//! Beteiligte sync through the whole product: EspoCRM's signed webhook → gateway mode (the
//! repository's kong.yaml, the built `.wasm` filters) → the real worker → Advoware `POST`, with
//! real Redis and the fakes on loopback. One Beteiligter at a time; p50/p99/max of the time from
//! EspoCRM's webhook job sending to the Advoware fake receiving the `POST` (its own arrival
//! timestamp), and to the `betnr` being written back in EspoCRM.
//!
//! Run: `cargo build -p bitbylaw-worker && cargo bench -p bitbylaw-e2e --bench beteiligte_gateway`
//! (`BET_GW_EVENTS=50` for fewer).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitbylaw_fakes::redis_server::{free_port, RedisServer};
use bitbylaw_fakes::{advoware, espocrm, vermieterhelden};
use common::*;
use serde_json::json;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BET_GW_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let redis = RedisServer::start(false);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let espo = espocrm::start(espocrm::EspoCrmConfig::default())
        .await
        .unwrap();
    let c = adv.config().clone();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .args(["serve", "--no-schedules"])
            .env("REDIS_URL", redis.url())
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .env("WORKER_LOG_LEVEL", "warn")
            .env("ADVOWARE_API_BASE_URL", adv.api_base_url())
            .env("ADVOWARE_SECURITY_GATEWAY_URL", adv.security_gateway_url())
            .env("ADVOWARE_KANZLEI", &c.kanzlei)
            .env("ADVOWARE_DATABASE", &c.database)
            .env("ADVOWARE_USER", &c.user)
            .env("ADVOWARE_APP_ID", &c.app_id)
            .env("ADVOWARE_PASSWORD", &c.password)
            .env("ADVOWARE_API_KEY", &c.api_key_b64)
            .env("ESPOCRM_API_BASE_URL", espo.api_url())
            .env("ESPOCRM_API_KEY", &espo.config().api_key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/ready")).await;
    let gw_port = free_port();
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    let hooks = espo_hooks(&espo, &gw_url);
    let config = render(&vars(
        &adv,
        &worker_url,
        &hooks,
        &vermieterhelden::generate_secret(),
    ));
    let _gw = deployed_gateway(config, gw_port).await;

    let mut to_post = Vec::new();
    let mut to_writeback = Vec::new();
    for i in 0..n {
        let rec = espo
            .insert(
                "CBeteiligte",
                json!({"firstName": "Gateway", "lastName": format!("Bench{i}"),
                    "dateOfBirth": "1970-01-01", "syncStatus": "pending_sync"}),
            )
            .unwrap();
        let id = rec["id"].as_str().unwrap().to_owned();
        let posts_before = adv
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Beteiligte"))
            .count();
        let t0 = now_micros();
        let started = Instant::now();
        // EspoCRM's webhook job: this event plus the echoes of the previous record's writes.
        for d in espo.flush_webhooks().await {
            assert_eq!(d.status, Some(202), "{d:?}");
        }
        loop {
            if espo
                .get("CBeteiligte", &id)
                .is_some_and(|r| r["betnr"].is_i64())
            {
                to_writeback.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{i} not synced"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let post = adv
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Beteiligte"))
            .nth(posts_before)
            .expect("the Advoware POST");
        to_post.push((post.at.timestamp_micros() - t0) as f64 / 1000.0);
    }
    for v in [&mut to_post, &mut to_writeback] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    }
    println!("Beteiligte through gateway mode + worker + fakes ({n} records, one at a time)");
    println!(
        "  EspoCRM webhook → Advoware POST  p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms",
        pct(&to_post, 0.5),
        pct(&to_post, 0.99),
        pct(&to_post, 1.0)
    );
    println!(
        "  EspoCRM webhook → betnr written  p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms",
        pct(&to_writeback, 0.5),
        pct(&to_writeback, 0.99),
        pct(&to_writeback, 1.0)
    );
}
