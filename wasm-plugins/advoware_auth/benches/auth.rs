//! Benchmarks of `advoware_auth` (criterion, `cargo bench -p advoware-auth`).
//!
//! Build the filters first:
//! `cargo build --release --target wasm32-wasip1 -p advoware-auth -p noop-filter`
//!
//! 1. `request/noop_filter` vs `request/advoware_auth_cached`: one request
//!    through the test host with a canned upstream (`Upstream::fixed`), the
//!    token already cached. The ratio is the filter's per-request overhead
//!    relative to the smallest possible filter (target ≤ 1.5×).
//! 2. `mint/native`: one token request body (UUID nonce, timestamp,
//!    HMAC-SHA512 signature, JSON) built natively with the same code the
//!    filter runs (`advoware_auth::token::token_request_body`).
//! 3. The printed summary (plain timing, 200 sequential requests each):
//!    a request that must mint inside wasm (the previous request got a 401
//!    from the canned upstream, so the filter discarded the token; the token
//!    endpoint is a fast local server with a canned answer) minus a cached
//!    request = mint + dispatch round trip + shared-data writes; minus a
//!    native loopback exchange with the same token server ≈ the in-wasm work.
//!    The host cannot call into the module's internals, so subtraction is
//!    the way to isolate the wasm mint cost; treat it as an estimate.
//! 4. Without any network: `mint/wasm_request_mint_then_dispatch_fails`
//!    (token host unresolvable: lock, mint, dispatch, immediate
//!    `resolver failure`, unlock, 502) vs `mint/wasm_request_lock_held_no_mint`
//!    (lock held by a request whose token call never answers: 503, no mint).
//!    Their difference ≈ mint + lock/unlock + dispatch bookkeeping in wasm —
//!    This difference includes the host's dispatch messaging.
//! 5. The direct figure: the filter logs (debug) how long each signing took
//!    inside wasm, read from the host clock; this host runs with the real
//!    clock (`Clock::System`), so the summary's median of those log lines is
//!    the in-wasm mint time (nonce + timestamp + HMAC-SHA512 + JSON), to
//!    compare with `mint/native`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench setup: failing loudly is right

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use proxy_wasm_host::{Chain, Clock, FilterSpec, Host, HttpRequest, Upstream};
use serde_json::json;

const N_INNER: usize = 200;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A token endpoint that answers instantly with a fixed token.
async fn fast_token_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                // Read headers and the announced body.
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = find(&got, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = r#"{"access_token":"bench-token-0123456789","token_type":"bearer","expires_in":3600}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn config(token_target: &str, prefix: &str) -> serde_json::Value {
    json!({
        "token_target": token_target, "token_scheme": "http",
        "kanzlei": "k", "database": "db", "user": "API", "app_id": "app",
        "password": "bench-password", "api_key": "YmVuY2gta2V5",
        "tick_period_ms": 0, "shared_key_prefix": prefix, "kong_upstream_uri": false
    })
}

struct Setup {
    host: Arc<Host>,
    noop: Chain,
    auth: Chain,
    mint: Chain,
    /// Token target unresolvable: every request mints, dispatches, fails at once (502).
    fail: Chain,
    /// Lock held by a request whose token call never answers: every request gets 503 without minting.
    held: Chain,
    token_addr: SocketAddr,
}

/// A token endpoint that accepts connections and never answers.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    addr
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    rt.block_on(async {
        let token_addr = fast_token_server().await;
        let host = Arc::new(
            Host::builder()
                .clock(Clock::System) // real time, so the filter can time its own signing
                .filter("advoware_auth")
                .filter("noop_filter")
                .build()
                .expect("build the filters first: cargo build --release --target wasm32-wasip1 -p advoware-auth -p noop-filter"),
        );
        let noop = host.add_chain(&[FilterSpec::new("noop_filter", None)]).await.expect("noop chain");
        let auth = host.add_chain(&[FilterSpec::json("advoware_auth", &config(&token_addr.to_string(), "bench"))]).await.expect("chain");
        let mint = host.add_chain(&[FilterSpec::json("advoware_auth", &config(&token_addr.to_string(), "mint"))]).await.expect("chain");
        let fail = host.add_chain(&[FilterSpec::json("advoware_auth", &config("security.invalid:443", "fail"))]).await.expect("chain");
        let mut held_cfg = config(&silent_server().await.to_string(), "held");
        held_cfg["dispatch_timeout_ms"] = json!(60_000);
        let held = host.add_chain(&[FilterSpec::json("advoware_auth", &held_cfg)]).await.expect("chain");
        let h = Arc::clone(&host);
        let hc = held.clone();
        tokio::spawn(async move {
            let _ = h.request(0, &hc, req(), Upstream::fixed(200, "ok")).await; // holds the lock for 60 s
        });
        while host.shared_data("held/lock").is_none_or(|v| v.is_empty()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Warm the cache of `auth`.
        let r = host.request(0, &auth, req(), Upstream::fixed(200, "ok")).await.expect("warm");
        assert_eq!(r.status, 200, "{}", r.text());
        Setup { host, noop, auth, mint, fail, held, token_addr }
    })
}

fn req() -> HttpRequest {
    HttpRequest::get("/advoware/proxy?endpoint=Termine&kuerzel=AB&from=2026-01-01")
        .header("apikey", "client-key")
}

/// Average time of one request through `chain` (N_INNER sequential requests).
async fn per_request(host: &Host, chain: &Chain) -> Duration {
    let start = Instant::now();
    for _ in 0..N_INNER {
        let _ = timed(host, chain, Upstream::fixed(200, "ok"), 200).await;
    }
    start.elapsed() / N_INNER as u32
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let s = setup(&rt);

    let mut g = c.benchmark_group("request");
    g.sample_size(30);
    g.bench_function("noop_filter", |b| {
        b.iter(|| {
            rt.block_on(
                s.host
                    .request(0, &s.noop, req(), Upstream::fixed(200, "ok")),
            )
            .expect("req")
        })
    });
    g.bench_function("advoware_auth_cached", |b| {
        b.iter(|| {
            rt.block_on(
                s.host
                    .request(0, &s.auth, req(), Upstream::fixed(200, "ok")),
            )
            .expect("req")
        })
    });
    g.finish();

    let cfg =
        advoware_auth::config::Config::from_value(&config("127.0.0.1:1", "x")).expect("config");
    let mut g = c.benchmark_group("mint");
    g.bench_function("native", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let mut random = [7u8; 16];
            random[..8].copy_from_slice(&i.to_le_bytes());
            advoware_auth::token::token_request_body(&cfg, random, 1_788_048_000_000_000_000 + i)
        })
    });
    g.bench_function("wasm_request_mint_then_dispatch_fails", |b| {
        b.iter(|| {
            rt.block_on(
                s.host
                    .request(0, &s.fail, req(), Upstream::fixed(200, "ok")),
            )
            .expect("req")
        })
    });
    g.bench_function("wasm_request_lock_held_no_mint", |b| {
        b.iter(|| {
            rt.block_on(
                s.host
                    .request(0, &s.held, req(), Upstream::fixed(200, "ok")),
            )
            .expect("req")
        })
    });
    g.finish();

    // Plain timing, robust against a busy machine: the variants are
    // interleaved request by request and the median of each is reported.
    let m = rt.block_on(async {
        let mut t: [Vec<Duration>; 6] = Default::default();
        let _ = per_request(&s.host, &s.auth).await; // warm-up
        for _ in 0..N_INNER {
            t[0].push(timed(&s.host, &s.noop, Upstream::fixed(200, "ok"), 200).await);
            t[1].push(timed(&s.host, &s.auth, Upstream::fixed(200, "ok"), 200).await);
            // Forced mint: a 401 from the canned upstream discards the token
            // (answer 503), so the next request mints via the fast token server.
            let _ = timed(&s.host, &s.mint, Upstream::fixed(401, "no"), 0).await;
            t[2].push(timed(&s.host, &s.mint, Upstream::fixed(200, "ok"), 200).await);
            let start = Instant::now();
            raw_token_call(s.token_addr).await;
            t[3].push(start.elapsed());
            t[4].push(timed(&s.host, &s.fail, Upstream::fixed(200, "ok"), 502).await);
            t[5].push(timed(&s.host, &s.held, Upstream::fixed(200, "ok"), 503).await);
        }
        t.map(median)
    });
    let [noop, cached, minted, rtt, fail, held] = m;
    // The filter logs (debug) how long each signing took inside wasm.
    let signed: Vec<Duration> = s
        .host
        .logs()
        .iter()
        .filter_map(|l| l.message.split("token request signed in ").nth(1))
        .filter_map(|rest| rest.trim_end_matches(" ns").parse::<u64>().ok())
        .map(Duration::from_nanos)
        .collect();
    let n_signed = signed.len();
    let wasm_mint = median(signed);
    println!(
        "\nsummary (medians of {N_INNER} interleaved requests each): noop_filter {noop:?}, advoware_auth cached {cached:?} \
         → ratio {:.2}x",
        cached.as_secs_f64() / noop.as_secs_f64()
    );
    println!(
        "summary: forced-mint request {minted:?} − cached {cached:?} = {:?} (mint + loopback token call + cache writes); \
         native loopback token exchange alone {rtt:?}",
        minted.saturating_sub(cached)
    );
    println!(
        "summary: no-network mint path (token host unresolvable → 502) {fail:?} − lock-held path (503, no mint) {held:?} \
         = {:?} ≈ mint + lock/unlock + dispatch bookkeeping (includes the host's dispatch messaging)",
        fail.saturating_sub(held)
    );
    println!(
        "summary: mint inside wasm, timed by the filter itself (median of {n_signed} signings): {wasm_mint:?} \
         — compare mint/native"
    );
}

async fn timed(host: &Host, chain: &Chain, upstream: Upstream, status: u16) -> Duration {
    let start = Instant::now();
    let r = host
        .request(0, chain, req(), upstream)
        .await
        .expect("request");
    let took = start.elapsed();
    if status != 0 {
        assert_eq!(r.status, status, "{}", r.text());
    }
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One POST to the token server over a fresh connection (as the host's
/// dispatch does, `Connection: close`).
async fn raw_token_call(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut sock) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let body = "{}";
    let req = format!("POST /api/v1/Token HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}", body.len(), body);
    let _ = sock.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out).await;
}

criterion_group!(benches, bench);
criterion_main!(benches);
