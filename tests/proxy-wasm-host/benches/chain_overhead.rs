//! Per-request cost of the host: an empty chain vs one no-op filter.
//!
//! Later filters report their overhead as a ratio to `noop_filter` here.
//! Run: `cargo bench -p proxy-wasm-host --bench chain_overhead`
//! (build the fixtures first: `cargo build --release --target wasm32-wasip1 -p noop-filter`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

use criterion::{criterion_group, criterion_main, Criterion};
use proxy_wasm_host::{FilterSpec, Host, HttpRequest, Upstream};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let host = Host::builder()
        .filter("noop_filter")
        .build()
        .expect("build noop_filter for wasm32-wasip1 first");
    let empty = rt.block_on(host.add_chain(&[])).expect("chain");
    let noop = rt
        .block_on(host.add_chain(&[FilterSpec::new("noop_filter", None)]))
        .expect("chain");
    let request = HttpRequest::post("/bench?x=1", vec![b'a'; 1024])
        .header("content-type", "application/json");
    let upstream = Upstream::fixed(200, "ok");
    let mut group = c.benchmark_group("host_request_1KiB");
    group.bench_function("empty_chain", |b| {
        b.iter(|| {
            rt.block_on(host.request(0, &empty, request.clone(), upstream.clone()))
                .expect("response")
        })
    });
    group.bench_function("noop_filter", |b| {
        b.iter(|| {
            rt.block_on(host.request(0, &noop, request.clone(), upstream.clone()))
                .expect("response")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
