//! Intake and queue benchmark against a local redis-server and the real worker binary.
//!
//! Run: `cargo bench -p bitbylaw-worker --bench intake`
//! Prints a table: intake throughput and latency for 1 KiB events at concurrency 1/16/64, p50/p99
//! at a paced 1,000 events/s, end-to-end jobs/s with the no-op `test.echo` handler, worker RSS idle
//! and under load, and `redis-benchmark` on the same machine for comparison.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use redis::AsyncCommands;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn body(i: usize) -> Vec<u8> {
    let head = format!(r#"{{"id":"b{i}","pad":""#);
    let pad = 1024 - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad)).into_bytes()
}

struct Signed {
    body: Vec<u8>,
    event_id: String,
    at: String,
    sig: String,
    dedup: String,
}

fn sign(i: usize) -> Signed {
    let body = body(i);
    let at = now_secs();
    let event_id = format!("bench-{i}");
    let sig = bitbylaw_worker::intake::signature::sign_gateway_event(
        SECRET.as_bytes(),
        "test.echo",
        &event_id,
        at,
        &body,
    )
    .unwrap();
    Signed {
        dedup: sha256_hex(&body),
        body,
        event_id,
        at: at.to_string(),
        sig,
    }
}

async fn send(client: &reqwest::Client, url: &str, s: &Signed) -> Duration {
    let t = Instant::now();
    let r = client
        .post(url)
        .header("x-event-topic", "test.echo")
        .header("x-event-id", &s.event_id)
        .header("x-dedup-key", &s.dedup)
        .header("x-received-at", &s.at)
        .header("x-gateway-signature", &s.sig)
        .body(s.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let _ = r.bytes().await;
    t.elapsed()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

/// Closed loop: `conc` tasks each sending their share back to back.
async fn closed_loop(
    url: &str,
    conc: usize,
    total: usize,
    offset: usize,
    pid: u32,
) -> (f64, f64, f64, u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()
        .unwrap();
    let per = total / conc;
    let reqs: Vec<Arc<Vec<Signed>>> = (0..conc)
        .map(|t| Arc::new((0..per).map(|i| sign(offset + t * per + i)).collect()))
        .collect();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let start = Instant::now();
    let mut handles = Vec::new();
    for r in reqs {
        let (client, url) = (client.clone(), url.to_string());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(r.len());
            for s in r.iter() {
                lat.push(send(&client, &url, s).await);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    sampler.abort();
    all.sort();
    (
        all.len() as f64 / elapsed,
        pct(&all, 0.5),
        pct(&all, 0.99),
        peak.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// Open loop: one request every 1/rate seconds regardless of answers.
async fn paced(url: &str, rate: u64, secs: u64, offset: usize) -> (f64, f64, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let n = (rate * secs) as usize;
    let reqs: Vec<Signed> = (0..n).map(|i| sign(offset + i)).collect();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut handles = Vec::with_capacity(n);
    for s in reqs {
        tick.tick().await;
        let (client, url) = (client.clone(), url.to_string());
        handles.push(tokio::spawn(async move { send(&client, &url, &s).await }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.push(h.await.unwrap());
    }
    all.sort();
    (pct(&all, 0.5), pct(&all, 0.99), all.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let redis = RedisServer::start(false);
    let quiet = [("WORKER_LOG_LEVEL", "warn")];
    let intake = Worker::spawn(&redis.url(), &quiet, &["--no-consumers"]);
    let url = format!("{}/events", intake.base);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = client().get(format!("{}/health", intake.base)).send().await;
    let rss_idle = rss_kib(intake.pid());

    let mut rows = Vec::new();
    let mut offset = 0;
    // warm-up
    closed_loop(&url, 4, 400, 1_000_000, intake.pid()).await;
    let mut peak_rss = 0;
    let mut cpu_rows = Vec::new();
    for (conc, total) in [(1usize, 3_000usize), (16, 20_000), (64, 20_000)] {
        let (w0, r0) = (cpu_secs(intake.pid()), cpu_secs(redis.pid()));
        let (rps, p50, p99, peak) = closed_loop(&url, conc, total, offset, intake.pid()).await;
        let (wcpu, rcpu) = (cpu_secs(intake.pid()) - w0, cpu_secs(redis.pid()) - r0);
        cpu_rows.push(format!(
            "| CPU per event, concurrency {conc:<3} | worker {:>5.1} µs | redis {:>5.1} µs |",
            wcpu * 1e6 / total as f64,
            rcpu * 1e6 / total as f64
        ));
        peak_rss = peak_rss.max(peak);
        offset += total;
        rows.push(format!("| intake, 1 KiB, concurrency {conc:<3} | {rps:>8.0} events/s | p50 {p50:.2} ms, p99 {p99:.2} ms |"));
    }
    let (p50, p99, n) = paced(&url, 1000, 5, offset).await;
    offset += n;
    rows.push(format!(
        "| intake, 1 KiB, paced 1,000/s   | {n:>8} events   | p50 {p50:.2} ms, p99 {p99:.2} ms |"
    ));

    // End to end: the intake runs above queued `offset + 400` jobs on test.echo; a consumer-only
    // worker drains them with the no-op handler.
    let mut c = redis.conn().await;
    let queued: u64 = c.xlen("bbl:q:test.echo").await.unwrap();
    let consumer = Worker::spawn(
        &redis.url(),
        &[("WORKER_LOG_LEVEL", "warn"), ("WORKER_CONCURRENCY", "64")],
        &["--no-intake"],
    );
    let start = Instant::now();
    let mut consumer_peak = 0;
    loop {
        consumer_peak = consumer_peak.max(rss_kib(consumer.pid()));
        let left: u64 = c.xlen("bbl:q:test.echo").await.unwrap();
        if left == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            panic!("consumer did not drain the queue ({left} left)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = start.elapsed().as_secs_f64();
    rows.push(format!("| end to end, no-op handler      | {:>8.0} jobs/s   | {queued} jobs drained in {drain:.2} s |", queued as f64 / drain));
    rows.extend(cpu_rows);
    rows.push(format!(
        "| worker RSS idle                | {:>8.1} MiB      | |",
        rss_idle as f64 / 1024.0
    ));
    rows.push(format!(
        "| worker RSS peak, intake c=64   | {:>8.1} MiB      | |",
        peak_rss as f64 / 1024.0
    ));
    rows.push(format!(
        "| worker RSS peak, consuming     | {:>8.1} MiB      | |",
        consumer_peak as f64 / 1024.0
    ));
    let _ = offset;

    let rb = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port.to_string(),
            "-q",
            "-n",
            "100000",
            "-t",
            "set",
        ])
        .output();
    let rbx = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port.to_string(),
            "-q",
            "-n",
            "100000",
            "XADD",
            "bench:stream",
            "MAXLEN",
            "~",
            "1000",
            "*",
            "f",
            "v",
        ])
        .output();

    println!();
    println!(
        "bitbylaw-worker benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measurement                    | result            | latency / detail |");
    println!("|--------------------------------|-------------------|------------------|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!("redis-benchmark (same redis-server):");
    for out in [rb, rbx].into_iter().flatten() {
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text
            .split(['\r', '\n'])
            .filter(|l| l.contains("requests per second"))
        {
            println!("  {}", line.trim());
        }
    }
}
