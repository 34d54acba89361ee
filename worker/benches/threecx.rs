//! 3CX benchmark (issue 14), through the real worker binary on a real `redis-server` with the
//! EspoCRM fake:
//!
//! - Lookup latency cold (first lookup of a number: EspoCRM search) and warm (Redis index):
//!   p50 / p99 (goals: warm p99 < 20 ms, cold < 1 s).
//! - Warm lookups/s with 16 concurrent callers.
//! - ReportCall (signed event as the edge forwards it) → EspoCRM `Call`: p50 / p99; and for a
//!   Beteiligter linked to Advoware → `Call` + the optional Advoware call note: p50 / p99.
//! - Outbound `POST /3cx/call` → 3CX Call Control fake (cached token, makecall): p50 / p99.
//!
//! Run: `cargo bench -p bitbylaw-worker --bench threecx`; smaller:
//! `THREECX_BENCH_SAMPLES=50 THREECX_BENCH_CONCURRENT=1000 cargo bench -p bitbylaw-worker --bench threecx`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use bitbylaw_fakes::advoware::{self, AdvowareConfig, NOTIZEN_PATH};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use bitbylaw_worker::intake::signature::LOOKUP_TOPIC;
use common::{signed_lookup_on, RedisServer, Worker, SECRET};
use futures::StreamExt;
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn number(i: usize) -> String {
    format!("+4930{:07}", 1_000_000 + i)
}

/// Numbers of the Beteiligte (a range of their own, never a Contact's).
fn party_number(i: usize) -> String {
    format!("+4940{:07}", 1_000_000 + i)
}

async fn lookup(http: &reqwest::Client, base: &str, phone: &str) -> Value {
    // Signed like Kong's filter forwards it (the worker refuses unsigned lookups).
    signed_lookup_on(http, base, phone, LOOKUP_TOPIC, SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn report(i: usize) -> Vec<u8> {
    report_from(&number(i), i)
}

fn report_from(from: &str, i: usize) -> Vec<u8> {
    let start = 1_800_000_000 + i as i64 * 600;
    let t = |s: i64| {
        chrono::DateTime::from_timestamp(s, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    serde_json::to_vec(&json!({
        "CallType": "Inbound", "CallDirection": "Inbound", "Number": from, "Name": "",
        "Agent": "201", "Duration": "00:01:00", "CallStartTimeUTC": t(start),
        "CallEstablishedTimeUTC": t(start + 5), "CallEndTimeUTC": t(start + 65)
    }))
    .unwrap()
}

fn line(what: &str, lat: &mut [Duration], goal: Duration) {
    lat.sort();
    let p99 = pct(lat, 0.99);
    println!(
        "{what} ({}): p50 {:.2} ms  p99 {:.2} ms  [{}: p99 < {} ms]",
        lat.len(),
        pct(lat, 0.5).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        if p99 < goal { "PASS" } else { "FAIL" },
        goal.as_millis()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let samples = env_usize("THREECX_BENCH_SAMPLES", 200);
        let concurrent = env_usize("THREECX_BENCH_CONCURRENT", 5000);
        let redis = RedisServer::start(false);
        let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
        for i in 0..samples {
            fake.insert(
                "Contact",
                json!({"firstName": "Bench", "lastName": format!("Person{i}"), "phoneNumber": number(i)}),
            )
            .unwrap();
        }
        // Beteiligte linked to Advoware, for the call-note measurement.
        let aw = advoware::start(AdvowareConfig::default()).await.unwrap();
        let parties: Vec<i64> = (0..samples)
            .map(|i| {
                let bet_nr = aw.insert_beteiligter(json!({"name": format!("Partei{i}")}));
                fake.insert(
                    "CBeteiligte",
                    json!({"firmenname": format!("Partei{i}"), "phoneNumber": party_number(i), "betnr": bet_nr}),
                )
                .unwrap();
                bet_nr
            })
            .collect();
        let mut vars = common::advoware_env(&aw);
        vars.extend(common::espocrm_env(&fake));
        vars.extend([
            ("WORKER_LOG_LEVEL".to_owned(), "warn".to_owned()),
            ("WORKER_PROMOTE_INTERVAL_MS".to_owned(), "50".to_owned()),
            ("THREECX_ADVOWARE_NOTE_PATH".to_owned(), NOTIZEN_PATH.to_owned()),
        ]);
        let w = Worker::spawn(&redis.url(), &common::env_refs(&vars), &["--no-schedules"]);
        let http = reqwest::Client::new();

        let mut cold = Vec::with_capacity(samples);
        for i in 0..samples {
            let t0 = Instant::now();
            let v = lookup(&http, &w.base, &number(i)).await;
            cold.push(t0.elapsed());
            assert_eq!(v["contacts"][0]["LastName"], format!("Person{i}"));
        }
        line("lookup cold (EspoCRM fake)", &mut cold, Duration::from_secs(1));
        let mut warm = Vec::with_capacity(samples);
        for i in 0..samples {
            let t0 = Instant::now();
            let v = lookup(&http, &w.base, &number(i)).await;
            warm.push(t0.elapsed());
            assert_eq!(v["contacts"][0]["LastName"], format!("Person{i}"));
        }
        line("lookup warm (Redis index)", &mut warm, Duration::from_millis(20));

        let t0 = Instant::now();
        futures::stream::iter(0..concurrent)
            .for_each_concurrent(16, |i| {
                let (http, base) = (http.clone(), w.base.clone());
                async move {
                    let v = lookup(&http, &base, &number(i % samples)).await;
                    assert!(v["contacts"][0].is_object());
                }
            })
            .await;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{concurrent} warm lookups, 16 concurrent: {:.2} s → {:.0} lookups/s",
            secs,
            concurrent as f64 / secs
        );

        let mut calls = Vec::with_capacity(samples);
        for i in 0..samples {
            let t0 = Instant::now();
            let status =
                common::post_event_as(&w.base, "telephony.call.reported", &format!("call_{i}"), &report(i))
                    .await;
            assert_eq!(status, 202);
            while fake.all("Call").len() < i + 1 {
                assert!(t0.elapsed() < Duration::from_secs(10), "call {i} never arrived");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            calls.push(t0.elapsed());
        }
        line("ReportCall → EspoCRM Call", &mut calls, Duration::from_millis(500));

        let mut noted = Vec::with_capacity(samples);
        for (i, bet_nr) in parties.iter().enumerate() {
            let t0 = Instant::now();
            let status =
                common::post_event_as(&w.base, "telephony.call.reported", &format!("party_call_{i}"), &report_from(&party_number(i), i))
                    .await;
            assert_eq!(status, 202);
            while aw.notizen(*bet_nr).is_empty() {
                assert!(t0.elapsed() < Duration::from_secs(10), "note {i} never arrived");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            noted.push(t0.elapsed());
        }
        line(
            "ReportCall → Call + Advoware note",
            &mut noted,
            Duration::from_millis(500),
        );
        outbound(&redis, samples).await;
    });
}

/// Outbound calls through a second worker pointed at the Call Control fake (at most 90 calls,
/// within the burst of the largest budget, 6,000/min → 100, so the limiter never answers 429;
/// extensions round-robin).
async fn outbound(redis: &RedisServer, samples: usize) {
    use bitbylaw_fakes::threecx::{self, CallControlConfig};
    let pbx = threecx::start_call_control(CallControlConfig::default())
        .await
        .unwrap();
    let base = pbx.base_url();
    let w = Worker::spawn(
        &redis.url(),
        &[
            ("THREECX_API_BASE_URL", &base),
            ("THREECX_CLIENT_ID", &pbx.config().client_id),
            ("THREECX_CLIENT_SECRET", &pbx.config().client_secret),
            ("THREECX_CALLS_PER_MINUTE", "6000"),
            ("WORKER_LOG_LEVEL", "warn"),
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let samples = samples.min(90);
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let ext = ["201", "202", "203"][i % 3];
        let t0 = Instant::now();
        let r = http
            .post(format!("{}/3cx/call", w.base))
            .json(&json!({"phone": number(i), "extension": ext}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        lat.push(t0.elapsed());
    }
    line(
        "POST /3cx/call → makecall (3CX fake)",
        &mut lat,
        Duration::from_millis(100),
    );
    println!(
        "  3CX fake: {} token issue(s) for {} calls",
        pbx.counters().token_issues,
        pbx.counters().calls_placed
    );
}
