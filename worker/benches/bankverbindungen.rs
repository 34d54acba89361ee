//! Bankverbindungen sync benchmark (issue 12): the engine in process with the real clients, a
//! real `redis-server` and the EspoCRM and Advoware fakes over loopback.
//!
//! 1. Pure checks: IBAN parse + mask per call; `mask_ibans` over a 300-character error body.
//! 2. Create: one run per new record (read record, Beteiligter, Advoware list, `POST`, write-back);
//!    p50/p99 and API calls per run on each side.
//! 3. Re-sync of an unchanged, clean record (what our own write-back's webhook costs): p50/p99,
//!    API calls per run and writes (goal: reads only, no write).
//!
//! Run: `cargo bench -p bitbylaw-worker --bench bankverbindungen`
//! Smaller: `BANK_BENCH_N=50 cargo bench -p bitbylaw-worker --bench bankverbindungen`
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use bitbylaw_core::ids::EspoId;
use bitbylaw_fakes::advoware::{self, AdvowareConfig, BANKVERBINDUNGEN};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use bitbylaw_worker::handlers::bankverbindungen::engine::{BankSettings, Engine, Outcome};
use bitbylaw_worker::handlers::bankverbindungen::sides::{AdvowareBank, BankPaths};
use bitbylaw_worker::handlers::bankverbindungen::store::BankStore;
use bitbylaw_worker::sync::bankverbindungen::{iban, mask_ibans, Iban};
use common::sides::{advoware_client, advoware_settings, espo_client};
use common::RedisServer;
use serde_json::json;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BANK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);

    // 1. Pure.
    let ibans: Vec<String> = (0..1000u32)
        .map(|i| {
            iban::with_check_digits(
                "DE",
                &format!("{:018}", 370_400_440_532_013_000u64 + u64::from(i)),
            )
        })
        .collect();
    let t = Instant::now();
    let mut ok = 0usize;
    for _ in 0..100 {
        for s in &ibans {
            if let Ok(i) = Iban::parse(s) {
                ok += i.masked().len();
            }
        }
    }
    let per = t.elapsed().as_nanos() as f64 / 100_000.0;
    assert!(ok > 0);
    let body = format!(
        "Advoware answered 400 on api/v1/advonet/Beteiligte/50001/Bankverbindungen: {{\"Message\":\"Die IBAN {} ist ungültig; bitte prüfen Sie Kontoinhaber, BIC COBADEFFXXX und die Bank.\"}} {}",
        ibans[0],
        "x".repeat(120)
    );
    let t = Instant::now();
    for _ in 0..10_000 {
        assert!(!mask_ibans(&body).contains(&ibans[0]));
    }
    let per_mask = t.elapsed().as_nanos() as f64 / 10_000.0;
    println!(
        "IBAN parse + mask: {per:.0} ns/call; mask_ibans over {} chars: {per_mask:.0} ns/call",
        body.len()
    );

    // 2./3. The engine against the fakes.
    let redis = RedisServer::start(false);
    let adv = advoware::start(AdvowareConfig::default()).await.unwrap();
    let espo_fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let espo = espo_client(&espo_fake);
    let conn = redis.conn().await;
    let bank = AdvowareBank {
        client: advoware_client(&advoware_settings(&adv), conn.clone()),
        paths: BankPaths::default(),
    };
    let store = BankStore::new(conn);
    let settings = BankSettings::default();
    let engine = Engine {
        espo: &espo,
        advoware: &bank,
        store: &store,
        settings: &settings,
    };
    let mut ids = Vec::new();
    for (i, iban) in ibans.iter().take(n).enumerate() {
        let bet_nr = adv.insert_beteiligter(json!({"name": format!("Person {i}")}));
        let bet = espo_fake
            .insert(
                "CBeteiligte",
                json!({"lastName": format!("Person {i}"), "betnr": bet_nr}),
            )
            .unwrap();
        let rec = espo_fake
            .insert(
                "CBankverbindungen",
                json!({"name": "Giro", "iban": iban, "bic": "COBADEFFXXX", "bankname": "Commerzbank",
                    "beteiligteId": bet["id"]}),
            )
            .unwrap();
        ids.push(EspoId::new(rec["id"].as_str().unwrap()).unwrap());
    }
    // Warm the token.
    let _ = adv.issue_token();

    for (label, expect_create) in [("create", true), ("re-sync unchanged", false)] {
        adv.controls().clear_requests();
        espo_fake.controls().clear_requests();
        adv.reset_counters();
        let espo_writes = espo_fake.writes("CBankverbindungen");
        let mut times = Vec::with_capacity(n);
        for id in &ids {
            let t = Instant::now();
            let outcome = engine.sync(id, chrono::Utc::now()).await.unwrap();
            times.push(ms(t.elapsed()));
            assert_eq!(
                matches!(outcome, Outcome::Created(_)),
                expect_create,
                "{outcome:?}"
            );
        }
        times.sort_by(f64::total_cmp);
        let adv_calls = adv
            .requests()
            .iter()
            .filter(|r| r.path.contains("/Bankverbindungen"))
            .count() as f64
            / n as f64;
        let espo_calls = espo_fake.controls().requests().len() as f64 / n as f64;
        println!(
            "{label}: {n} runs, p50 {:.2} ms, p99 {:.2} ms; per run {adv_calls:.1} Advoware + {espo_calls:.1} EspoCRM calls; writes: Advoware {}, EspoCRM {}",
            pct(&times, 0.5),
            pct(&times, 0.99),
            adv.writes(BANKVERBINDUNGEN),
            espo_fake.writes("CBankverbindungen") - espo_writes,
        );
    }
}
