//! Beteiligte sync benchmark (issue 11): the real worker binary, a real `redis-server`, the
//! EspoCRM and Advoware fakes over loopback.
//!
//! 1. Webhook → Advoware write: a signed `vmh.beteiligte.create` event (as the gateway forwards
//!    EspoCRM's webhook) to the Advoware `POST` arriving at the fake (its own arrival timestamp),
//!    and to the write-back in EspoCRM (`betnr` set); sequential events, p50/p99/max.
//! 2. `sync_check` over N clean, unchanged records last synced 30 h ago: wall time until every
//!    record's `advowareLastSync` is refreshed, and API calls per record on each side.
//!
//! 3. Re-sync of one unchanged Beteiligter with 10 Kommunikation entries and 3 addresses
//!    (issue 12): the engine in process with the real clients over loopback; API calls per
//!    re-sync on each side (goal: reads only, no writes) and time per re-sync.
//!
//! Run: `cargo bench -p bitbylaw-worker --bench beteiligte_sync`
//! Smaller: `BET_BENCH_EVENTS=50 BET_BENCH_CHECK=200 cargo bench -p bitbylaw-worker --bench beteiligte_sync`
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use bitbylaw_fakes::advoware::{self, AdvowareConfig};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use common::{gateway_request, now_secs, RedisServer, Worker, SECRET};
use redis::AsyncCommands;
use serde_json::{json, Value};

const ENTITY: &str = "CBeteiligte";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn idle(redis: &RedisServer) -> bool {
    let mut c = redis.conn().await;
    for t in ["create", "update", "sync_check"] {
        let n: u64 = c.xlen(format!("bbl:q:vmh.beteiligte.{t}")).await.unwrap();
        if n > 0 {
            return false;
        }
    }
    let delayed: u64 = c.zcard("bbl:delayed").await.unwrap();
    delayed == 0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = env_usize("BET_BENCH_EVENTS", 200);
    let check_n = env_usize("BET_BENCH_CHECK", 1000);
    let redis = RedisServer::start(false);
    let aw = advoware::start(AdvowareConfig::default()).await.unwrap();
    let espo = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let mut vars = common::advoware_env(&aw);
    vars.extend(common::espocrm_env(&espo));
    vars.push(("BETEILIGTE_CHECK_CLEAN_LIMIT".into(), check_n.to_string()));
    vars.push(("WORKER_LOG_LEVEL".into(), "warn".into()));
    let w = Worker::spawn(&redis.url(), &common::env_refs(&vars), &[]);
    let client = common::client();
    for _ in 0..200 {
        let ready: Option<Value> = match client.get(format!("{}/ready", w.base)).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if ready.is_some_and(|v| v["checks"]["beteiligte_clients"] == "ready") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. webhook → Advoware POST / write-back, one event at a time.
    let mut to_post = Vec::new();
    let mut to_writeback = Vec::new();
    for i in 0..events {
        let rec = espo
            .insert(
                ENTITY,
                json!({"firstName": "Bench", "lastName": format!("Person{i}"),
                    "dateOfBirth": "1970-01-01", "syncStatus": "pending_sync"}),
            )
            .unwrap();
        let id = rec["id"].as_str().unwrap().to_owned();
        let body = json!([rec]).to_string();
        let posts_before = aw.requests().iter().filter(|r| r.method == "POST").count();
        let t0 = chrono::Utc::now();
        let started = Instant::now();
        let resp = gateway_request(
            &w.base,
            "vmh.beteiligte.create",
            &format!("bench-{i}"),
            body.as_bytes(),
            now_secs(),
            SECRET,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        loop {
            if espo.get(ENTITY, &id).is_some_and(|r| r["betnr"].is_i64()) {
                to_writeback.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "event {i} not synced"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let post = aw
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .nth(posts_before)
            .expect("the Advoware POST");
        to_post.push((post.at - t0).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    for v in [&mut to_post, &mut to_writeback] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    }
    println!(
        "Beteiligte sync benchmark (worker + fakes on loopback, {events} sequential create events)"
    );
    println!(
        "  event → Advoware POST   p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms",
        pct(&to_post, 0.5),
        pct(&to_post, 0.99),
        pct(&to_post, 1.0)
    );
    println!(
        "  event → write-back done p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms",
        pct(&to_writeback, 0.5),
        pct(&to_writeback, 0.99),
        pct(&to_writeback, 1.0)
    );

    // 2. the check over clean, unchanged records synced 30 h ago.
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(30);
    let old = long_ago.format("%Y-%m-%d %H:%M:%S").to_string();
    espo.clock().set_now(long_ago);
    let mut ids = Vec::new();
    for i in 0..check_n {
        let bet_nr =
            aw.insert_beteiligter(json!({"name": format!("Check{i}"), "vorname": "Clean"}));
        let row = aw.beteiligter(bet_nr).unwrap()["rowId"].clone();
        let rec = espo
            .insert(
                ENTITY,
                json!({"firstName": "Clean", "lastName": format!("Check{i}"), "betnr": bet_nr,
                    "syncStatus": "clean", "advowareRowId": row, "advowareLastSync": old}),
            )
            .unwrap();
        ids.push(rec["id"].as_str().unwrap().to_owned());
    }
    espo.clock().set_offset_secs(0);
    while !idle(&redis).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    aw.controls().clear_requests();
    espo.controls().clear_requests();
    let started = Instant::now();
    let (ok, out, err) = common::cli(&redis.url(), &["beteiligte", "check"]);
    assert!(ok, "{out}{err}");
    loop {
        let done = ids
            .iter()
            .filter(|id| {
                espo.get(ENTITY, id)
                    .is_some_and(|r| r["advowareLastSync"] != json!(old))
            })
            .count();
        if done == ids.len() && idle(&redis).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "check not done: {done}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let count = |reqs: &[bitbylaw_fakes::RecordedRequest], m: &str, pred: &dyn Fn(&str) -> bool| {
        reqs.iter()
            .filter(|r| r.method == m && pred(&r.path))
            .count()
    };
    let ar = aw.requests();
    let er = espo.controls().requests();
    let n = check_n as f64;
    let aw_get = count(&ar, "GET", &|p| p.contains("/Beteiligte/"));
    let aw_write =
        count(&ar, "POST", &|p| p.contains("/Beteiligte")) + count(&ar, "PUT", &|_| true);
    let lists = count(&er, "GET", &|p| p.ends_with(&format!("/{ENTITY}")));
    let espo_get = count(&er, "GET", &|p| p.contains(&format!("/{ENTITY}/")));
    let espo_put = count(&er, "PUT", &|_| true);
    println!("sync_check over {check_n} clean, unchanged records (last sync 30 h ago)");
    println!(
        "  wall time {wall:.2} s ({:.2} ms per record)",
        wall * 1000.0 / n
    );
    println!(
        "  Advoware: {:.2} GET/record, {aw_write} writes; EspoCRM: {lists} list pages ({:.4}/record), {:.2} GET/record, {:.2} PUT/record (advowareLastSync refresh)",
        aw_get as f64 / n,
        lists as f64 / n,
        espo_get as f64 / n,
        espo_put as f64 / n
    );
    println!(
        "  (the refresh's own webhook is skipped without a GET when EspoCRM delivers it; this bench registers no webhooks)"
    );
    resync_details(&redis, &aw, &espo, env_usize("BET_BENCH_RESYNC", 200)).await;
    drop(w);
}

/// Part 3: one Beteiligter with 10 Kommunikation entries and 3 addresses, unchanged,
/// re-synced `n` times by the engine (the worker's code path without the queue).
async fn resync_details(
    redis: &RedisServer,
    aw: &bitbylaw_fakes::advoware::AdvowareFake,
    espo: &bitbylaw_fakes::espocrm::EspoCrmFake,
    n: usize,
) {
    use bitbylaw_core::ids::EspoId;
    use bitbylaw_worker::clients::espocrm::{ClientSettings, EspoCrmClient};
    use bitbylaw_worker::config::{EspoCrmSettings, Secret};
    use bitbylaw_worker::handlers::beteiligte::engine::{Engine, EngineSettings, Outcome};
    use bitbylaw_worker::handlers::beteiligte::store::BeteiligteStore;

    let advoware =
        common::sides::advoware_client(&common::sides::advoware_settings(aw), redis.conn().await);
    let espo_client = EspoCrmClient::new(
        ClientSettings::from_settings(&EspoCrmSettings {
            api_base_url: Some(espo.api_url()),
            api_key: Some(Secret::new(espo.config().api_key.clone())),
            timeout: Some(Duration::from_secs(5)),
            page_size: None,
        })
        .unwrap(),
    )
    .unwrap();
    let store = BeteiligteStore::new(redis.conn().await);
    let settings = EngineSettings::default();
    let engine = Engine {
        espo: &espo_client,
        advoware: &advoware,
        store: &store,
        settings: &settings,
    };
    let emails: Vec<Value> = (0..5)
        .map(|i| json!({"emailAddress": format!("person{i}@example.de"), "primary": i == 0}))
        .collect();
    let phones: Vec<Value> = (0..5)
        .map(|i| {
            let kind = ["Mobile", "Office", "Home", "Fax", "Other"][i];
            json!({"phoneNumber": format!("030 1234{i:03}"), "type": kind, "primary": i == 0})
        })
        .collect();
    let rec = espo
        .insert(
            ENTITY,
            json!({"firstName": "Resync", "lastName": "Bench", "syncStatus": "pending_sync",
                "emailAddressData": emails, "phoneNumberData": phones}),
        )
        .unwrap();
    let id = EspoId::new(rec["id"].as_str().unwrap()).unwrap();
    for i in 0..3 {
        espo.insert(
            "CAdressen",
            json!({"beteiligteId": id.as_str(), "strasse": format!("Weg {i}"), "plz": "10115",
                "ort": "Berlin", "land": "DE"}),
        )
        .unwrap();
    }
    let now = chrono::Utc::now();
    assert!(matches!(
        engine.sync_one(&id, now).await,
        Ok(Outcome::Created(_))
    ));
    assert_eq!(
        engine.sync_one(&id, now).await.ok(),
        Some(Outcome::WroteDetails)
    );
    let bet_nr = espo.get(ENTITY, id.as_str()).unwrap()["betnr"]
        .as_i64()
        .unwrap();
    let b = aw.beteiligter(bet_nr).unwrap();
    assert_eq!(b["kommunikation"].as_array().map(Vec::len), Some(10));
    assert_eq!(b["adressen"].as_array().map(Vec::len), Some(3));
    aw.controls().clear_requests();
    espo.controls().clear_requests();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let outcome = engine.sync_one(&id, now).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(outcome.ok(), Some(Outcome::NoChange { bookkeeping: false }));
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let per = |reqs: Vec<bitbylaw_fakes::RecordedRequest>, write: bool| {
        reqs.iter()
            .filter(|r| (r.method != "GET") == write && !r.path.ends_with("/Token"))
            .count() as f64
            / n.max(1) as f64
    };
    println!("re-sync of one unchanged Beteiligter with 10 Kommunikation entries and 3 addresses ({n} runs)");
    println!(
        "  per re-sync p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 1.0)
    );
    println!(
        "  Advoware: {:.2} GET (the Beteiligte GET, Kommunikation and Adressen inside it), {:.2} writes; EspoCRM: {:.2} GET (CBeteiligte + CAdressen list), {:.2} writes",
        per(aw.requests(), false),
        per(aw.requests(), true),
        per(espo.controls().requests(), false),
        per(espo.controls().requests(), true)
    );
}
