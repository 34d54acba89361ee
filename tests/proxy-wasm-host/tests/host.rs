//! The host verified with a real Rust filter (`probe_filter.wasm`, built for
//! wasm32-wasip1 from tests/fixtures/probe_filter). Each test fails if the host
//! feature it names breaks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

use std::time::Duration;

use proxy_wasm_host::testing::{EchoServer, Recorded};
use proxy_wasm_host::{
    BodyMode, Chain, Clock, FilterSpec, Host, HostError, HttpRequest, HttpResponse, LogLevel,
    MetricValue, Upstream,
};
use serde_json::{json, Value};

const PROBE: &str = "probe_filter";

fn host() -> Host {
    Host::builder()
        .filter(PROBE)
        .filter("noop_filter")
        .build()
        .expect("build the fixture filters first (scripts/test.sh)")
}

async fn probe_chain(host: &Host, config: Value) -> Chain {
    host.add_chain(&[FilterSpec::json(PROBE, &config)])
        .await
        .unwrap()
}

fn upstream_of(server: &EchoServer) -> Upstream {
    Upstream::url(&server.base_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_runs_hooks_in_kong_order() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain = probe_chain(&host, json!({})).await;
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::post("/things?x=1", "hello"),
            upstream_of(&echo),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let hooks: Vec<&str> = resp
        .trace
        .iter()
        .map(|t| t.split(':').nth(1).unwrap())
        .collect();
    assert_eq!(
        hooks,
        [
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_response_headers",
            "proxy_on_response_body",
            "proxy_on_log",
            "proxy_on_done",
            "proxy_on_delete"
        ]
    );
    // eof is always false in header hooks (ngx_wasm_module limitation #1).
    assert_eq!(resp.header("x-probe-request-headers-eos"), Some("false"));
    assert_eq!(resp.header("x-probe-response-headers-eos"), Some("false"));
    let seen = &echo.requests()[0];
    assert_eq!(seen.path, "/things?x=1");
    assert_eq!(seen.body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_maps_include_pseudo_headers_and_edits_reach_upstream() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain = probe_chain(
        &host,
        json!({
            "echo_request_headers": true,
            "add_request_header": ["x-added", "1"],
            "replace_request_header": ["x-replace", "new"],
            "remove_request_header": "x-remove",
            "set_path": "/rewritten?q=2",
            "add_response_header": ["x-resp", "yes"]
        }),
    )
    .await;
    let req = HttpRequest::get("/orig?q=1")
        .header("X-Replace", "old")
        .header("x-remove", "gone")
        .header("x-keep", "k");
    let resp = host
        .request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    let seen: Vec<(String, String)> =
        serde_json::from_str(resp.header("x-probe-request-headers").unwrap()).unwrap();
    assert_eq!(
        &seen[..4],
        &[
            (":path".to_string(), "/orig?q=1".to_string()),
            (":method".to_string(), "GET".to_string()),
            (":scheme".to_string(), "http".to_string()),
            (":authority".to_string(), "kong:8000".to_string()),
        ]
    );
    let up = &echo.requests()[0];
    assert_eq!(up.path, "/rewritten?q=2");
    assert_eq!(up.header("x-added"), Some("1"));
    assert_eq!(up.header("x-replace"), Some("new"));
    // ngx_wasm_module only clears a removed request header (hash = 0); nginx's
    // proxy module still forwards it (measured against nginx 1.27.4).
    assert_eq!(up.header("x-remove"), Some("gone"));
    assert_eq!(up.header("x-keep"), Some("k"));
    assert_eq!(resp.header("x-resp"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_is_delivered_once_whole_in_kong_mode_and_not_without_body() {
    let host = host();
    let chain = probe_chain(&host, json!({"record_body_calls": true})).await;
    let req =
        HttpRequest::post("/", "").chunks(vec![b"abc".to_vec(), b"def".to_vec(), b"gh".to_vec()]);
    let resp = host
        .request(0, &chain, req, Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.header("x-probe-body-calls"), Some("8:true"));
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(
        resp.header("x-probe-body-calls"),
        None,
        "no body, no on_request_body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_mode_buffers_on_pause_and_body_rewrite_reaches_upstream() {
    let host = Host::builder()
        .filter(PROBE)
        .body_mode(BodyMode::Streamed)
        .build()
        .unwrap();
    let echo = EchoServer::start().await.unwrap();
    let chain = probe_chain(
        &host,
        json!({"record_body_calls": true, "buffer_request_body": true}),
    )
    .await;
    let req =
        HttpRequest::post("/", "").chunks(vec![b"abc".to_vec(), b"def".to_vec(), b"gh".to_vec()]);
    let resp = host
        .request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(
        resp.header("x-probe-body-calls"),
        Some("3:false,6:false,8:true")
    );
    let up = &echo.requests()[0];
    assert_eq!(up.body, b"ABCDEFGH");
    assert_eq!(up.header("content-length"), Some("8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_pauses_and_resumes_across_a_real_http_call() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let target = EchoServer::start().await.unwrap();
    let chain = probe_chain(
        &host,
        json!({"dispatch": {"target": target.target(), "path": "/token?a=b"}}),
    )
    .await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/x"), upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-probe-dispatch-status"), Some("200"));
    // The upstream only saw the request after the call answered.
    assert_eq!(echo.requests()[0].header("x-probe-dispatched"), Some("200"));
    let call = &target.requests()[0];
    assert_eq!(call.path, "/token?a=b");
    assert_eq!(
        call.header("host"),
        Some("probe.test"),
        ":authority becomes Host"
    );
    assert_eq!(call.header("connection"), Some("close"));
    let body: Value = serde_json::from_str(resp.header("x-probe-dispatch-body").unwrap()).unwrap();
    assert_eq!(body["path"], "/token?a=b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_and_chained_dispatches_resume_after_the_last_answer() {
    let host = host();
    let target = EchoServer::start().await.unwrap();
    let chain = probe_chain(
        &host,
        json!({"dispatch": {"target": target.target(), "count": 3}}),
    )
    .await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.header_all("x-probe-dispatch-status").len(), 3);
    assert_eq!(target.requests().len(), 3);

    let chain = probe_chain(
        &host,
        json!({"dispatch": {"target": target.target(), "chain_second": true}}),
    )
    .await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.header_all("x-probe-dispatch-status"), ["200", "200"]);
    assert_eq!(resp.header("x-probe-dispatch-chained"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_failures_set_dispatch_status() {
    let host = host();
    let slow = EchoServer::start().await.unwrap();
    let cases = [
        (
            json!({"target": slow.target(), "path": "/slow/3000", "timeout_ms": 100}),
            "timeout",
        ),
        (json!({"target": "localhost:80"}), "resolver failure"),
        (json!({"target": "my-upstream-cluster"}), "resolver failure"),
        (json!({"target": "127.0.0.1:1"}), "broken connection"),
    ];
    for (dispatch, expected) in cases {
        let chain = probe_chain(&host, json!({ "dispatch": dispatch })).await;
        let resp = host
            .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
            .await
            .unwrap();
        assert_eq!(
            resp.header("x-probe-dispatch-failure"),
            Some(expected),
            "{dispatch}"
        );
        assert_eq!(resp.header("x-probe-dispatch-nheaders"), Some("0"));
        assert_eq!(resp.status, 200);
    }
    // Without :method/:path, or without a target, the call traps: 500, and
    // the host logs the module's reason (measured by hand in ngx_wasm_module).
    for (dispatch, reason) in [
        (
            json!({"target": slow.target(), "omit_pseudo": true}),
            "dispatch failed: no :method",
        ),
        (
            json!({"target": slow.target(), "path": ""}),
            "dispatch failed: no :path",
        ),
        (
            json!({"target": ""}),
            "dispatch failed: tcp socket - no host",
        ),
    ] {
        let chain = probe_chain(&host, json!({ "dispatch": dispatch })).await;
        let resp = host
            .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
            .await
            .unwrap();
        assert_eq!(resp.status, 500, "{dispatch}");
        assert!(resp.upstream_request.is_none());
        assert!(host.log_text().contains(reason), "{}", host.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_dispatch_reports_ok_and_counts_only_real_headers() {
    // ngx_wasm_module: `:dispatch_status` is `ok` for an answered call and the
    // header count excludes `:status` (measured by hand: 4 for an answer with
    // Server, Date, Content-Type and Content-Length).
    let host = host();
    let target = EchoServer::start().await.unwrap();
    let chain = probe_chain(
        &host,
        json!({"dispatch": {"target": target.target(), "path": "/d"}}),
    )
    .await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.header("x-probe-dispatch-status"), Some("200"));
    assert_eq!(resp.header("x-probe-dispatch-failure"), Some("ok"));
    let n: usize = resp
        .header("x-probe-dispatch-nheaders")
        .unwrap()
        .parse()
        .unwrap();
    // asked like the dispatch asks (Connection: close), so the echo answers alike
    let direct = reqwest::Client::new()
        .get(format!("http://{}/d", target.target()))
        .header("connection", "close")
        .send()
        .await
        .unwrap();
    assert_eq!(n, direct.headers().len(), "real headers only, no :status");
    assert_eq!(
        resp.header("x-probe-dispatched"),
        None,
        "a request header, not a response one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_is_refused_with_a_trap_outside_allowed_hooks_and_host_keeps_serving() {
    let host = host();
    let target = EchoServer::start().await.unwrap();
    let chain = probe_chain(
        &host,
        json!({"dispatch": {"target": target.target(), "phase": "response_headers"}}),
    )
    .await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
    assert!(host
        .log_text()
        .contains("can only send HTTP dispatch during"));
    assert!(target.requests().is_empty());
    let ok_chain = probe_chain(&host, json!({})).await;
    let resp = host
        .request(
            0,
            &ok_chain,
            HttpRequest::get("/"),
            Upstream::fixed(200, "ok"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_response_short_circuits_the_chain_and_appends_a_newline() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain = host
        .add_chain(&[
            FilterSpec::json(
                PROBE,
                &json!({"id": "first", "local_response": {"status": 403, "body": "denied"}}),
            ),
            FilterSpec::json(PROBE, &json!({"id": "second"})),
        ])
        .await
        .unwrap();
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.body, b"denied\n");
    assert!(resp.local_response);
    assert_eq!(resp.header("x-probe-local"), Some("1"));
    assert!(echo.requests().is_empty(), "upstream never called");
    let request_hooks = resp
        .trace
        .iter()
        .filter(|t| t.contains("request_headers"))
        .count();
    assert_eq!(
        request_hooks, 1,
        "second filter's request hook skipped: {:?}",
        resp.trace
    );
    // Response-header hooks still run for both filters.
    let response_hooks = resp
        .trace
        .iter()
        .filter(|t| t.contains("response_headers"))
        .count();
    assert_eq!(response_hooks, 2, "{:?}", resp.trace);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_runs_filters_in_order() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain = host
        .add_chain(&[
            FilterSpec::json(
                PROBE,
                &json!({"id": "service", "add_request_header": ["x-order", "service"]}),
            ),
            FilterSpec::json(
                PROBE,
                &json!({"id": "route", "add_request_header": ["x-order", "route"]}),
            ),
        ])
        .await
        .unwrap();
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), upstream_of(&echo))
        .await
        .unwrap();
    let up = &echo.requests()[0];
    let order: Vec<&str> = up
        .headers
        .iter()
        .filter(|(k, _)| k == "x-order")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(order, ["service", "route"]);
    assert_eq!(resp.header_all("x-probe-id"), ["service", "route"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_cas_is_shared_by_instances_on_different_workers() {
    let host = Host::builder().filter(PROBE).workers(2).build().unwrap();
    let chain = probe_chain(&host, json!({"shared_counter": "hits"})).await;
    let mut handles = Vec::new();
    let host = std::sync::Arc::new(host);
    for i in 0..40 {
        let (host, chain) = (host.clone(), chain.clone());
        handles.push(tokio::spawn(async move {
            host.request(
                i % 2,
                &chain,
                HttpRequest::get("/"),
                Upstream::fixed(200, "ok"),
            )
            .await
            .unwrap()
        }));
    }
    let mut counts = Vec::new();
    for h in handles {
        let resp = h.await.unwrap();
        counts.push(
            resp.header("x-probe-counter")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    counts.sort();
    assert_eq!(
        counts,
        (1..=40).collect::<Vec<_>>(),
        "every increment unique: no lost update"
    );
    assert_eq!(host.shared_data("hits").unwrap(), b"40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_only_set_lets_exactly_one_worker_win() {
    let host = std::sync::Arc::new(Host::builder().filter(PROBE).workers(2).build().unwrap());
    let chain = probe_chain(&host, json!({"shared_insert": "lock"})).await;
    let a = host.request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"));
    let b = host.request(1, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"));
    let (a, b) = tokio::join!(a, b);
    let mut results = vec![
        a.unwrap().header("x-probe-insert").unwrap().to_string(),
        b.unwrap().header("x-probe-insert").unwrap().to_string(),
    ];
    results.sort();
    assert_eq!(results, ["Err(CasMismatch)", "Ok(())"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_without_a_zone_traps() {
    let host = Host::builder()
        .filter(PROBE)
        .default_shm_zone(false)
        .shm_zone("tokens")
        .build()
        .unwrap();
    let chain = probe_chain(&host, json!({"shared_counter": "hits"})).await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
    assert!(host.log_text().contains("no shm_kv zone"));
    let chain = probe_chain(&host, json!({"shared_counter": "tokens/hits"})).await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.header("x-probe-counter"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_follow_the_test_clock_on_every_worker() {
    let host = Host::builder().filter(PROBE).workers(2).build().unwrap();
    let _chain = probe_chain(&host, json!({"id": "t", "tick_ms": 1000})).await;
    host.advance_clock(Duration::from_millis(999)).await;
    assert_eq!(host.shared_data("probe/ticks/t"), None);
    host.advance_clock(Duration::from_millis(1)).await;
    assert_eq!(
        host.shared_data("probe/ticks/t").unwrap(),
        b"2",
        "one tick per worker"
    );
    host.advance_clock(Duration::from_millis(1000)).await;
    assert_eq!(host.shared_data("probe/ticks/t").unwrap(), b"4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_dispatch_answers_in_the_root_context() {
    let host = host();
    let target = EchoServer::start().await.unwrap();
    let _chain = probe_chain(&host, json!({"id": "t", "tick_ms": 10, "dispatch": {"target": target.target(), "phase": "tick", "path": "/from-tick"}})).await;
    host.advance_clock(Duration::from_millis(10)).await;
    for _ in 0..200 {
        if host.shared_data("probe/tick_dispatch").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let v = String::from_utf8(host.shared_data("probe/tick_dispatch").unwrap()).unwrap();
    assert!(v.starts_with("200:"), "{v}");
    assert_eq!(target.requests()[0].path, "/from-tick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_the_tick_period_twice_traps_and_the_filter_is_not_configured() {
    let host = host();
    let chain = probe_chain(&host, json!({"tick_ms": 100, "set_tick_twice": true})).await;
    assert!(!chain.all_configured());
    assert!(host.log_text().contains("tick_period already set"));
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_configuration_fails_requests_with_500() {
    let host = host();
    let chain = probe_chain(&host, json!({"reject_config": true})).await;
    assert_eq!(chain.configured, [false]);
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
    let bad_json = host
        .add_chain(&[FilterSpec::new(PROBE, Some("{not json"))])
        .await
        .unwrap();
    assert_eq!(bad_json.configured, [false]);
    assert!(host.log_text().contains("probe: bad config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_clock_drives_proxy_time_and_wasi_clock() {
    let host = Host::builder()
        .filter(PROBE)
        .clock(Clock::manual_at(1_700_000_000_000_000_000))
        .build()
        .unwrap();
    let chain = probe_chain(&host, json!({"report_time": true})).await;
    host.advance_clock(Duration::from_secs(5)).await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.header("x-probe-time"), Some("1700000005000000000"));
    assert_eq!(
        resp.header("x-probe-wasi-time"),
        Some("1700000005000000000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_random_produces_bytes() {
    let host = host();
    let chain = probe_chain(&host, json!({"report_random": true})).await;
    let a = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    let b = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_ne!(a.header("x-probe-random"), b.header("x-probe-random"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_match_ngx_wasm_module() {
    let host = host();
    let chain = probe_chain(
        &host,
        json!({"properties": ["request.path", "request.url_path", "request.query", "request.method", "request.scheme", "request.headers.x-thing", "plugin_name", "request.host", "no.such"]}),
    )
    .await;
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::new("PUT", "/a/b?c=d&e").header("X-Thing", "42"),
            Upstream::fixed(201, "ok"),
        )
        .await
        .unwrap();
    assert_eq!(resp.header("x-probe-prop-request-path"), Some("/a/b?c=d&e"));
    assert_eq!(resp.header("x-probe-prop-request-url_path"), Some("/a/b"));
    assert_eq!(resp.header("x-probe-prop-request-query"), Some("c=d&e"));
    assert_eq!(resp.header("x-probe-prop-request-method"), Some("PUT"));
    assert_eq!(resp.header("x-probe-prop-request-scheme"), Some("http"));
    assert_eq!(
        resp.header("x-probe-prop-request-headers-x-thing"),
        Some("42")
    );
    assert_eq!(resp.header("x-probe-prop-plugin_name"), Some(PROBE));
    assert_eq!(resp.header("x-probe-prop-request-host"), Some("localhost"));
    assert_eq!(resp.header("x-probe-prop-no-such"), Some("<none>"));
    assert_eq!(resp.header("x-probe-response-code"), Some("201"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_captured_per_level_including_wasi_stdout_and_stderr() {
    let host = host();
    let chain = probe_chain(&host, json!({"log": "hello"})).await;
    host.request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    let logs = host.logs();
    for level in [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Critical,
    ] {
        assert!(
            logs.iter()
                .any(|l| l.level == level && l.message == format!("{level:?}: hello")),
            "{level:?}"
        );
    }
    assert!(logs
        .iter()
        .any(|l| l.level == LogLevel::Info && l.message == "stdout: hello"));
    assert!(logs
        .iter()
        .any(|l| l.level == LogLevel::Error && l.message == "stderr: hello"));
    assert!(logs
        .iter()
        .all(|l| l.filter == PROBE || l.filter.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prefixed_and_shared_across_workers() {
    let host = Host::builder().filter(PROBE).workers(2).build().unwrap();
    let chain = probe_chain(&host, json!({"metric": "requests", "histogram": "sizes"})).await;
    for i in 0..6 {
        host.request(
            i % 2,
            &chain,
            HttpRequest::get("/"),
            Upstream::fixed(200, "ok"),
        )
        .await
        .unwrap();
    }
    assert_eq!(host.counter("pw:probe_filter:requests"), 6);
    match host.metrics().get("pw:probe_filter:sizes") {
        Some(MetricValue::Histogram { count, sum, .. }) => assert_eq!((*count, *sum), (6, 252)),
        other => panic!("histogram missing: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_that_request_with_500_and_a_fresh_instance_serves_the_next() {
    let host = host();
    let trap_chain = probe_chain(
        &host,
        json!({"trap": "request_headers", "shared_counter": "c"}),
    )
    .await;
    let resp = host
        .request(
            0,
            &trap_chain,
            HttpRequest::get("/"),
            Upstream::fixed(200, "ok"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.json().unwrap()["message"],
        "An unexpected error occurred"
    );
    assert!(host
        .log_text()
        .contains("trapped in proxy_on_request_headers"));
    let ok = probe_chain(&host, json!({"id": "after"})).await;
    let resp = host
        .request(0, &ok, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-probe-id"), Some("after"));
    // Traps in the response phase fail the request too.
    let late = probe_chain(&host, json!({"trap": "response_body"})).await;
    let resp = host
        .request(0, &late, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_rewrite_and_buffering() {
    let host = Host::builder()
        .filter(PROBE)
        .response_chunk_size(4)
        .build()
        .unwrap();
    let chain = probe_chain(&host, json!({"prepend_response_body": ">>"})).await;
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::get("/"),
            Upstream::fixed(200, "abcdefghij"),
        )
        .await
        .unwrap();
    // Prepended to each chunk the filter sees (abcd, efgh, ij).
    assert_eq!(resp.text(), ">>abcd>>efgh>>ij");
    assert_eq!(resp.header("content-length"), Some("16"));

    let chain = probe_chain(
        &host,
        json!({"prepend_response_body": ">>", "buffer_response_body": true}),
    )
    .await;
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::get("/"),
            Upstream::fixed(200, "abcdefghij"),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.text(),
        ">>abcdefghij",
        "buffered until eof, then one call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_in_response_headers_is_ignored_with_an_error() {
    let host = host();
    let chain = probe_chain(&host, json!({"pause_in_response_headers": true})).await;
    let resp = host
        .request(0, &chain, HttpRequest::get("/"), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ok");
    assert!(host
        .log_text()
        .contains("yielding not supported in response phases"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_effective_context_is_a_no_op_like_ngx_wasm_module() {
    let host = std::sync::Arc::new(host());
    let chain = probe_chain(
        &host,
        json!({"pause_forever": true, "set_effective_context_of_previous": true}),
    )
    .await;
    let (h, c) = (host.clone(), chain.clone());
    let first = tokio::spawn(async move {
        h.request(
            0,
            &c,
            HttpRequest::get("/first"),
            Upstream::fixed(200, "ok"),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The second request "resumes" the first through set_effective_context: in
    // ngx_wasm_module that resumes the *current* request instead.
    let second = host
        .request(
            0,
            &chain,
            HttpRequest::get("/second"),
            Upstream::fixed(200, "ok"),
        )
        .await
        .unwrap();
    assert_eq!(second.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!first.is_finished(), "the first request stays paused");
    first.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_gives_kongs_502() {
    let host = host();
    let chain = probe_chain(&host, json!({})).await;
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::get("/"),
            Upstream::url("http://127.0.0.1:1"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.json().unwrap()["message"],
        "An invalid response was received from the upstream server"
    );
}

#[test]
fn unsupported_imports_and_non_filters_are_clear_load_errors() {
    let dir = std::env::temp_dir().join(format!("pw-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_import = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .unwrap();
    std::fs::write(dir.join("bad_import.wasm"), bad_import).unwrap();
    let err = Host::builder()
        .filter_file("bad_import", dir.join("bad_import.wasm"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, HostError::UnsupportedImport { module, name, .. } if module == "wasi_snapshot_preview1" && name == "path_open"),
        "{err}"
    );
    let not_filter = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    std::fs::write(dir.join("plain.wasm"), not_filter).unwrap();
    let err = Host::builder()
        .filter_file("plain", dir.join("plain.wasm"))
        .build()
        .unwrap_err();
    assert!(matches!(err, HostError::NotAFilter { .. }), "{err}");
    let err = Host::builder()
        .filter_file("missing", dir.join("missing.wasm"))
        .build()
        .unwrap_err();
    assert!(matches!(err, HostError::ReadFilter { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_filter_passes_everything_through() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain = host
        .add_chain(&[FilterSpec::new("noop_filter", None)])
        .await
        .unwrap();
    assert!(chain.all_configured());
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::post("/n", "body"),
            upstream_of(&echo),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(echo.requests()[0].body, b"body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kong_mode_the_upstream_gets_upstream_uri_not_path() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let req = HttpRequest::get("/route/x?q=1").kong_upstream_uri("/svc/x");
    let plain = probe_chain(&host, json!({})).await;
    host.request(0, &plain, req.clone(), upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(
        echo.requests()[0].path,
        "/svc/x?q=1",
        "upstream_uri plus ?args"
    );
    let by_path = probe_chain(&host, json!({"set_path": "/by-path?z=9"})).await;
    host.request(0, &by_path, req.clone(), upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(
        echo.requests()[1].path,
        "/svc/x?z=9",
        ":path reaches Kong's upstream only through its args"
    );
    let by_var = probe_chain(&host, json!({"set_upstream_uri": "/svc/new"})).await;
    let resp = host
        .request(0, &by_var, req, upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(resp.header("x-probe-set-upstream-uri"), Some("Ok(())"));
    assert_eq!(echo.requests()[2].path, "/svc/new?q=1");
}

// Request header edits and big request bodies as measured by hand against
// nginx 1.27.4 + ngx_wasm_module 3bed278 (proxy_pass to an echo upstream).

/// A chain of a probe doing `edit` followed by a probe reporting the request
/// headers it sees in `on_request_headers`.
async fn edit_then_echo_chain(host: &Host, edit: Value) -> Chain {
    host.add_chain(&[
        FilterSpec::json(PROBE, &edit),
        FilterSpec::json(PROBE, &json!({"echo_request_headers": true})),
    ])
    .await
    .unwrap()
}

/// The regular (non-pseudo) request headers the echoing probe saw.
fn echoed_headers(resp: &proxy_wasm_host::HttpResponse) -> Vec<(String, String)> {
    let seen: Vec<(String, String)> =
        serde_json::from_str(resp.header("x-probe-request-headers").unwrap()).unwrap();
    seen.into_iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .collect()
}

fn values_of<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_request_header_is_hidden_from_filters_but_still_reaches_upstream() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain = edit_then_echo_chain(&host, json!({"remove_request_header": "x-remove-me"})).await;
    let req = HttpRequest::get("/")
        .header("X-Remove-Me", "secret1")
        .header("x-keep", "k");
    let resp = host
        .request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    let seen = echoed_headers(&resp);
    assert!(values_of(&seen, "x-remove-me").is_empty(), "{seen:?}");
    assert_eq!(values_of(&seen, "x-keep"), ["k"]);
    // nginx's proxy module copies cleared (hash = 0) elements too.
    let up = &echo.requests()[0];
    assert_eq!(up.header("x-remove-me"), Some("secret1"));
    assert_eq!(up.header("x-keep"), Some("k"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_single_request_header_updates_it_in_place_with_the_filters_spelling() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain =
        edit_then_echo_chain(&host, json!({"replace_request_header": ["X-Dup", "new"]})).await;
    let req = HttpRequest::get("/")
        .header("x-before", "1")
        .header("x-dup", "a")
        .header("x-after", "2");
    let resp = host
        .request(0, &chain, req.clone(), Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(values_of(&echoed_headers(&resp), "x-dup"), ["new"]);
    let sent = &resp.upstream_request.as_ref().unwrap().headers;
    let names: Vec<&str> = sent.iter().map(|(k, _)| k.as_str()).collect();
    let at = |n: &str| names.iter().position(|k| *k == n).unwrap();
    assert!(
        at("x-before") < at("X-Dup") && at("X-Dup") < at("x-after"),
        "{sent:?}"
    );
    assert_eq!(values_of(sent, "x-dup"), ["new"]);
    host.request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(values_of(&echo.requests()[0].headers, "x-dup"), ["new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_request_header_with_two_values_hides_it_but_forwards_both() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain =
        edit_then_echo_chain(&host, json!({"replace_request_header": ["x-dup", "new"]})).await;
    let req = HttpRequest::get("/")
        .header("x-dup", "a")
        .header("x-dup", "b");
    let resp = host
        .request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    // ngx_http_wasm_set_header_helper: the later match is cleared, the scan
    // restarts and, `found` being set, clears the element it just updated.
    assert!(values_of(&echoed_headers(&resp), "x-dup").is_empty());
    let sent = &resp.upstream_request.as_ref().unwrap().headers;
    assert_eq!(values_of(sent, "x-dup"), ["new", "b"]);
    assert_eq!(
        values_of(&echo.requests()[0].headers, "x-dup"),
        ["new", "b"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_request_header_appends_another_value() {
    let host = host();
    let chain = edit_then_echo_chain(&host, json!({"add_request_header": ["x-dup", "c"]})).await;
    let req = HttpRequest::get("/").header("x-dup", "a");
    let resp = host
        .request(0, &chain, req, Upstream::fixed(200, "ok"))
        .await
        .unwrap();
    assert_eq!(values_of(&echoed_headers(&resp), "x-dup"), ["a", "c"]);
    let sent = &resp.upstream_request.as_ref().unwrap().headers;
    assert_eq!(values_of(sent, "x-dup"), ["a", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_all_request_headers_hides_the_old_ones_but_still_forwards_them() {
    let host = host();
    let echo = EchoServer::start().await.unwrap();
    let chain = edit_then_echo_chain(
        &host,
        json!({"set_request_headers": [["x-only", "1"], ["x-old", "replaced"]]}),
    )
    .await;
    let req = HttpRequest::get("/")
        .header("x-old", "o")
        .header("x-other", "t");
    let resp = host
        .request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    let seen = echoed_headers(&resp);
    assert_eq!(
        seen,
        [
            ("x-only".to_string(), "1".to_string()),
            ("x-old".to_string(), "replaced".to_string())
        ]
    );
    let up = &echo.requests()[0];
    assert_eq!(values_of(&up.headers, "x-old"), ["o", "replaced"]);
    assert_eq!(up.header("x-other"), Some("t"));
    assert_eq!(up.header("x-only"), Some("1"));
    // Host is generated by the proxy module, never copied from the cleared list.
    assert_eq!(values_of(&up.headers, "host").len(), 1);
}

/// Posts `req` through a probe that records its body calls and upper-cases
/// the body it can read; returns the answer and what the upstream received.
async fn through_uppercasing_probe(host: &Host, req: HttpRequest) -> (HttpResponse, Recorded) {
    let echo = EchoServer::start().await.unwrap();
    let chain = probe_chain(
        host,
        json!({"record_body_calls": true, "buffer_request_body": true}),
    )
    .await;
    let resp = host
        .request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = echo.requests()[0].clone();
    (resp, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_client_body_buffer_size_is_unreadable_but_proxied_unchanged() {
    let host = host();
    let body = vec![b'a'; 8193];
    let (resp, up) = through_uppercasing_probe(&host, HttpRequest::post("/", body.clone())).await;
    // on_request_body still runs once with the whole size and eof.
    assert_eq!(resp.header("x-probe-body-calls"), Some("8193:true"));
    assert_eq!(up.body, body, "upstream gets the original body");
    assert_eq!(up.header("content-length"), Some("8193"));
    assert!(
        host.log_text().contains(
            "[wasm] cannot read request body buffered to file at \"/usr/local/kong/client_body_temp/"
        ),
        "{}",
        host.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_exactly_client_body_buffer_size_stays_readable() {
    let host = host();
    let (resp, up) =
        through_uppercasing_probe(&host, HttpRequest::post("/", vec![b'a'; 8192])).await;
    assert_eq!(resp.header("x-probe-body-calls"), Some("8192:true"));
    assert_eq!(up.body, vec![b'A'; 8192]);
    assert!(!host.log_text().contains("buffered to file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larger_client_body_buffer_size_keeps_a_big_body_readable() {
    let host = Host::builder()
        .filter(PROBE)
        .client_body_buffer_size(64 * 1024)
        .build()
        .unwrap();
    let (_, up) =
        through_uppercasing_probe(&host, HttpRequest::post("/", vec![b'a'; 20_000])).await;
    assert_eq!(up.body, vec![b'A'; 20_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_mode_ignores_client_body_buffer_size() {
    let host = Host::builder()
        .filter(PROBE)
        .body_mode(BodyMode::Streamed)
        .build()
        .unwrap();
    let echo = EchoServer::start().await.unwrap();
    let chain = probe_chain(&host, json!({"buffer_request_body": true})).await;
    let req = HttpRequest::post("/", "").chunks(vec![vec![b'a'; 6000], vec![b'b'; 6000]]);
    host.request(0, &chain, req, upstream_of(&echo))
        .await
        .unwrap();
    let mut want = vec![b'A'; 6000];
    want.extend(vec![b'B'; 6000]);
    assert_eq!(echo.requests()[0].body, want);
}
