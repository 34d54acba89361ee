//! `advoware_auth.wasm` driven through the Kong-like test host
//! (`proxy-wasm-host`) against the stateful Advoware fake (`bitbylaw-fakes`).
//!
//! Build the filters first:
//! `cargo build --release --target wasm32-wasip1 -p advoware-auth`

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the failure

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake};
use proxy_wasm_host::testing::EchoServer;
use proxy_wasm_host::{Chain, Clock, FilterSpec, Host, HttpRequest, HttpResponse, Upstream};
use serde_json::{json, Value};

const FILTER: &str = "advoware_auth";
const TOKEN_KEY: &str = "advoware_auth/token";
const LOCK_KEY: &str = "advoware_auth/lock";
const TICK_MS: u64 = 1000;

fn counter(host: &Host, name: &str) -> u64 {
    host.counter(&format!("pw:advoware_auth:{name}"))
}

struct Env {
    host: Arc<Host>,
    chain: Chain,
    fake: AdvowareFake,
}

fn config_for(fake_cfg: &AdvowareConfig, target: &str, extra: Value) -> Value {
    let mut cfg = json!({
        "token_target": target,
        "token_scheme": "http",
        "token_authority": "security.advo-net.test",
        "kanzlei": fake_cfg.kanzlei,
        "database": fake_cfg.database,
        "user": fake_cfg.user,
        "app_id": fake_cfg.app_id,
        "password": fake_cfg.password,
        "api_key": fake_cfg.api_key_b64,
        "dispatch_timeout_ms": 2000,
        "tick_period_ms": TICK_MS,
        // Plain ngx_wasm_module semantics (`:path` reaches the upstream);
        // the Kong mode has its own test below.
        "kong_upstream_uri": false,
    });
    if let (Some(o), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    cfg
}

fn build_host(workers: usize) -> Host {
    Host::builder()
        .filter(FILTER)
        .workers(workers)
        .clock(Clock::manual())
        .build()
        .expect(
            "build the filter first: cargo build --release --target wasm32-wasip1 -p advoware-auth",
        )
}

async fn env_with(workers: usize, fake_cfg: AdvowareConfig, extra: Value) -> Env {
    let fake = advoware::start(fake_cfg).await.expect("fake starts");
    fake.seed_demo();
    let host = Arc::new(build_host(workers));
    let cfg = config_for(fake.config(), &fake.addr().to_string(), extra);
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &cfg)])
        .await
        .expect("chain");
    assert_eq!(chain.configured, vec![true]);
    Env { host, chain, fake }
}

async fn env(workers: usize) -> Env {
    env_with(workers, AdvowareConfig::default(), json!({})).await
}

impl Env {
    fn upstream(&self) -> Upstream {
        Upstream::url(&self.fake.base_url())
    }

    async fn get(&self, worker: usize, uri: &str) -> HttpResponse {
        self.host
            .request(
                worker,
                &self.chain,
                HttpRequest::get(uri).header("apikey", "client-key"),
                self.upstream(),
            )
            .await
            .expect("request")
    }

    /// Moves the host and the fake clock together and fires due ticks.
    async fn advance(&self, by: Duration) {
        self.fake.clock().advance(by);
        self.host.advance_clock(by).await;
    }

    /// Fires the first tick (due one period after configuration; the zero
    /// advance also arms ticks on hosts that arm them lazily) and waits until
    /// the token it fetched is stored.
    async fn warm(&self) -> String {
        self.advance(Duration::ZERO).await;
        self.advance(Duration::from_millis(TICK_MS)).await;
        wait_for(|| cached_token(&self.host))
            .await
            .expect("tick stored a token")
    }

    fn token_fetches_at_fake(&self) -> usize {
        self.fake.token_stats().succeeded
    }

    fn assert_no_secrets(&self, extra: &[&str]) {
        let logs = self.host.log_text();
        let cfg = self.fake.config();
        let mut secrets = vec![
            cfg.password.clone(),
            cfg.api_key_b64.clone(),
            "fake-advoware-api-key".to_string(),
        ];
        secrets.extend(extra.iter().map(|s| (*s).to_string()));
        if let Some(t) = cached_token(&self.host) {
            secrets.push(t);
        }
        for s in secrets.iter().filter(|s| s.len() >= 6) {
            assert!(!logs.contains(s.as_str()), "secret {s:?} in logs:\n{logs}");
        }
    }
}

/// The token currently cached in shared data.
fn cached_token(host: &Host) -> Option<String> {
    let raw = host.shared_data(TOKEN_KEY)?;
    let text = String::from_utf8(raw).ok()?;
    // The token is the record's last field (it has no spaces).
    let token = text.rsplit(' ').next().filter(|_| text.contains(' '))?;
    (!token.is_empty()).then(|| token.to_string())
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..300 {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn bearer(resp: &HttpResponse) -> String {
    let up = resp
        .upstream_request
        .as_ref()
        .expect("request went upstream");
    up.header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("bearer injected")
        .to_string()
}

fn error_code(resp: &HttpResponse) -> String {
    resp.json()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn assert_json_error(resp: &HttpResponse, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert!(resp.local_response, "answered by the filter");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp
        .json()
        .unwrap_or_else(|| panic!("JSON body: {}", resp.text()));
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// Sends `req` until it is not a "come back in a second" 503 (the client's
/// side of the design), at most `max` times; returns the last answer and how
/// many 503s it saw.
async fn with_retries(
    env: &Env,
    worker: usize,
    make: impl Fn() -> HttpRequest,
    max: usize,
) -> (HttpResponse, usize) {
    let mut retries = 0;
    loop {
        let resp = env
            .host
            .request(worker, &env.chain, make(), env.upstream())
            .await
            .expect("request");
        let retryable = resp.status == 503 && resp.json().is_some_and(|v| v["retry"] == true);
        if !retryable || retries >= max {
            return (resp, retries);
        }
        assert_eq!(resp.header("retry-after"), Some("1"));
        retries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_concurrent_requests_on_two_workers_cause_one_token_fetch() {
    let env = Arc::new(env(2).await);
    let mut tasks = Vec::new();
    for i in 0..16usize {
        let env = Arc::clone(&env);
        tasks.push(tokio::spawn(async move {
            with_retries(
                &env,
                i % 2,
                || HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter").header("apikey", "k"),
                200,
            )
            .await
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let (resp, _) = t.await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        tokens.insert(bearer(&resp));
    }
    assert_eq!(env.token_fetches_at_fake(), 1, "exactly one token minted");
    assert_eq!(counter(&env.host, "token_fetches"), 1);
    assert_eq!(tokens.len(), 1, "everyone used the same token");
    env.assert_no_secrets(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_cache_serves_a_concurrent_burst_without_any_wait_or_fetch() {
    let env = Arc::new(env(3).await);
    let token = env.warm().await;
    assert_eq!(env.token_fetches_at_fake(), 1);
    assert_eq!(
        counter(&env.host, "tick_refreshes"),
        1,
        "one of three workers' ticks fetched"
    );
    let mut tasks = Vec::new();
    for i in 0..24usize {
        let env = Arc::clone(&env);
        tasks.push(tokio::spawn(async move {
            env.get(i % 3, "/advoware/proxy?endpoint=Mitarbeiter").await
        }));
    }
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(bearer(&resp), token);
    }
    assert_eq!(env.token_fetches_at_fake(), 1);
    assert_eq!(counter(&env.host, "refresh_in_progress"), 0);
    env.assert_no_secrets(&[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_reused_until_its_refresh_point_then_the_tick_refreshes_it() {
    // token_max_lifetime 3300 s (fake issues 3600 s), margin 300 s → refresh at 3000 s.
    let env = env(2).await;
    let t1 = env.warm().await;
    for w in 0..2 {
        assert_eq!(
            bearer(&env.get(w, "/advoware/proxy?endpoint=Mitarbeiter").await),
            t1
        );
    }
    // Just before the refresh point: ticks run, nothing is fetched.
    env.advance(Duration::from_secs(2990)).await;
    env.advance(Duration::from_millis(TICK_MS)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        env.token_fetches_at_fake(),
        1,
        "no refresh before the refresh point"
    );
    assert_eq!(
        bearer(&env.get(1, "/advoware/proxy?endpoint=Mitarbeiter").await),
        t1
    );
    // Past the refresh point (token still valid for ~10 min): the tick fetches.
    env.advance(Duration::from_secs(20)).await;
    let t2 = wait_for(|| cached_token(&env.host).filter(|t| *t != t1))
        .await
        .expect("tick refreshed the token");
    assert_eq!(env.token_fetches_at_fake(), 2);
    assert_eq!(counter(&env.host, "tick_refreshes"), 2);
    for w in 0..2 {
        let resp = env.get(w, "/advoware/proxy?endpoint=Mitarbeiter").await;
        assert_eq!(resp.status, 200);
        assert_eq!(bearer(&resp), t2, "requests use the refreshed token");
    }
    // No request ever had to wait or fetch.
    assert_eq!(counter(&env.host, "refresh_in_progress"), 0);
    assert_eq!(counter(&env.host, "token_fetches"), 2);
    env.assert_no_secrets(&[&t1, &t2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_gives_503_then_the_retry_succeeds_with_a_fresh_token_get_and_post() {
    let env = env(2).await;
    let t1 = env.warm().await;
    // Old enough (rejected_token_min_age_secs, 60 s) for a 401 to discard it.
    env.advance(Duration::from_secs(61)).await;
    env.fake.revoke_all();

    // GET: Advoware answers 401 → the filter discards the token and answers 503.
    let resp = env.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.header("www-authenticate"), None);
    let v = resp.json().expect("JSON body");
    assert_eq!(v["error"], "upstream_token_rejected");
    assert_eq!(v["retry"], true);
    assert_eq!(cached_token(&env.host), None, "rejected token discarded");
    assert_eq!(counter(&env.host, "upstream_401"), 1);
    assert_eq!(counter(&env.host, "token_invalidations"), 1);
    let resp = env.get(1, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let t2 = bearer(&resp);
    assert_ne!(t2, t1);
    assert_eq!(env.token_fetches_at_fake(), 2);

    // POST with a body: same, and the retried body arrives intact (once the
    // rate limit of forced refreshes, 300 s, has passed).
    env.advance(Duration::from_secs(301)).await;
    env.fake.revoke_all();
    let body = br#"{"name":"Muster GmbH","rechtsform":"GmbH"}"#.to_vec();
    let post = || {
        HttpRequest::post("/advoware/proxy?endpoint=Beteiligte", body.clone())
            .header("content-type", "application/json")
            .header("apikey", "client-key")
    };
    let resp = env
        .host
        .request(0, &env.chain, post(), env.upstream())
        .await
        .unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(error_code(&resp), "upstream_token_rejected");
    let resp = env
        .host
        .request(1, &env.chain, post(), env.upstream())
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let t3 = bearer(&resp);
    assert!(t3 != t1 && t3 != t2);
    let up = resp.upstream_request.as_ref().unwrap();
    assert_eq!(up.method, "POST");
    assert_eq!(up.body, body);
    let created = env
        .fake
        .controls()
        .requests_to("/api/v1/advonet/Beteiligte");
    assert!(created.iter().all(|r| r.body.as_ref() == body.as_slice()));
    assert_eq!(env.token_fetches_at_fake(), 3);
    env.assert_no_secrets(&[&t1, &t2, &t3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_under_concurrent_load_causes_no_stampede() {
    let env = Arc::new(env(2).await);
    let t1 = env.warm().await;
    env.advance(Duration::from_secs(61)).await;
    env.fake.revoke_all();
    let mut tasks = Vec::new();
    for i in 0..20usize {
        let env = Arc::clone(&env);
        tasks.push(tokio::spawn(async move {
            with_retries(
                &env,
                i % 2,
                || HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter").header("apikey", "k"),
                200,
            )
            .await
        }));
    }
    let mut saw_503 = 0;
    for t in tasks {
        let (resp, retries) = t.await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_ne!(bearer(&resp), t1);
        saw_503 += retries;
    }
    assert!(saw_503 >= 1);
    assert_eq!(
        env.token_fetches_at_fake(),
        2,
        "one fetch for the burst after the revocation"
    );
    assert_eq!(counter(&env.host, "token_fetches"), 2);
    env.assert_no_secrets(&[&t1]);
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_gives_502_then_recovers_when_it_is_back() {
    let addr = free_port(); // nothing listens there yet
    let fake_cfg = AdvowareConfig {
        bind: addr,
        ..AdvowareConfig::default()
    };
    let host = Arc::new(build_host(2));
    let chain = host
        .add_chain(&[FilterSpec::json(
            FILTER,
            &config_for(&fake_cfg, &addr.to_string(), json!({})),
        )])
        .await
        .unwrap();
    let echo = EchoServer::start().await.unwrap();
    for w in 0..2 {
        let resp = host
            .request(
                w,
                &chain,
                HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
                Upstream::url(&echo.base_url()),
            )
            .await
            .unwrap();
        assert_json_error(&resp, 502, "token_endpoint_unreachable");
        assert_eq!(resp.header("retry-after"), Some("5"));
        assert_eq!(resp.json().unwrap()["retry"], true);
        assert!(resp.upstream_request.is_none());
    }
    assert!(
        echo.requests().is_empty(),
        "no upstream call without a token"
    );
    assert_eq!(
        counter(&host, "token_fetch_failures"),
        2,
        "each request tried (lock released)"
    );
    assert_eq!(
        host.shared_data(LOCK_KEY).as_deref(),
        Some(&b""[..]),
        "lock released"
    );

    let fake = advoware::start(fake_cfg)
        .await
        .expect("fake on the same port");
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
            Upstream::url(&fake.base_url()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(fake.token_stats().succeeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_token_host_gives_502_with_the_reason() {
    let fake_cfg = AdvowareConfig::default();
    let host = build_host(1);
    let chain = host
        .add_chain(&[FilterSpec::json(
            FILTER,
            &config_for(&fake_cfg, "security.advo-net.invalid:443", json!({})),
        )])
        .await
        .unwrap();
    let resp = host
        .request(
            0,
            &chain,
            HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
            Upstream::fixed(200, "never"),
        )
        .await
        .unwrap();
    assert_json_error(&resp, 502, "token_endpoint_unreachable");
    assert!(resp.json().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("resolver failure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_token_endpoint_gives_504_within_the_timeout_then_recovers() {
    let env = env_with(
        1,
        AdvowareConfig::default(),
        json!({"dispatch_timeout_ms": 300}),
    )
    .await;
    env.fake.controls().set_latency(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let resp = env.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "bounded by the dispatch timeout"
    );
    assert_json_error(&resp, 504, "token_endpoint_timeout");
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert_eq!(counter(&env.host, "token_fetch_failures"), 1);
    env.fake.controls().set_latency(Duration::ZERO);
    let resp = env.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert_eq!(
        resp.status,
        200,
        "next request tries again: {}",
        resp.text()
    );
    env.assert_no_secrets(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_errors_and_garbage_give_502() {
    let env = env(1).await;
    env.fake
        .controls()
        .fail_next_on("/api/v1/Token", 1, 500, None);
    let resp = env.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert_json_error(&resp, 502, "token_endpoint_error");
    assert!(resp.text().contains("500"));
    // Wrong credentials → the fake's 401 on the token endpoint is a 502 for the client.
    let fake_cfg = AdvowareConfig {
        password: "wrong-password".into(),
        ..env.fake.config().clone()
    };
    let chain = env
        .host
        .add_chain(&[FilterSpec::json(
            FILTER,
            &config_for(
                &fake_cfg,
                &env.fake.addr().to_string(),
                json!({"shared_key_prefix": "other"}),
            ),
        )])
        .await
        .unwrap();
    let resp = env
        .host
        .request(
            0,
            &chain,
            HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
            env.upstream(),
        )
        .await
        .unwrap();
    assert_json_error(&resp, 502, "token_endpoint_error");
    assert!(resp.text().contains("401"));
    // An EchoServer "token endpoint" answers 200 with JSON that is no token.
    let echo = EchoServer::start().await.unwrap();
    let chain = env
        .host
        .add_chain(&[FilterSpec::json(
            FILTER,
            &config_for(
                env.fake.config(),
                &echo.target(),
                json!({"shared_key_prefix": "third"}),
            ),
        )])
        .await
        .unwrap();
    let resp = env
        .host
        .request(
            0,
            &chain,
            HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
            env.upstream(),
        )
        .await
        .unwrap();
    assert_json_error(&resp, 502, "token_response_invalid");
    // The echo shows what the token call looked like on the wire.
    let call = &echo.requests()[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/api/v1/Token");
    assert_eq!(call.header("host"), Some("security.advo-net.test"));
    assert_eq!(call.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&call.body).unwrap();
    let ts = body["RequestTimeStamp"].as_str().unwrap();
    let nonce = body["Nonce"].as_str().unwrap();
    assert_eq!(nonce.len(), 36);
    assert_eq!(&nonce[14..15], "4", "UUID v4");
    assert_eq!(
        body["HMAC512Signature"].as_str().unwrap(),
        env.fake.config().sign(nonce, ts).unwrap()
    );
    env.assert_no_secrets(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_are_400_with_the_core_code_and_never_go_upstream() {
    let env = env(1).await;
    let cases = [
        ("/advoware/proxy", "endpoint_missing"),
        ("/advoware/proxy?endpoint=", "endpoint_missing"),
        ("/advoware/proxy?kuerzel=AB", "endpoint_missing"),
        ("/advoware/proxy?endpoint=../Token", "endpoint_traversal"),
        (
            "/advoware/proxy?endpoint=Beteiligte/../../Token",
            "endpoint_traversal",
        ),
        (
            "/advoware/proxy?endpoint=%2e%2e%2fToken",
            "endpoint_traversal",
        ),
        (
            "/advoware/proxy?endpoint=%252e%252e/Token",
            "endpoint_traversal",
        ),
        (
            "/advoware/proxy?endpoint=http://evil.example/x",
            "endpoint_absolute",
        ),
        (
            "/advoware/proxy?endpoint=%2F%2Fevil.example",
            "endpoint_absolute",
        ),
        (
            "/advoware/proxy?endpoint=a%0d%0aX-Injected:1",
            "endpoint_control_chars",
        ),
        ("/advoware/proxy?endpoint=a%00b", "endpoint_control_chars"),
        ("/advoware/proxy?endpoint=a%5Cb", "endpoint_invalid"),
        (
            "/advoware/proxy?endpoint=a&endpoint=b",
            "endpoint_duplicate",
        ),
        // Issue 16 item 5: each of these used to reach Advoware.
        (
            "/advoware/proxy?endpoint=Termine/..;/..;/Token",
            "endpoint_traversal",
        ),
        (
            "/advoware/proxy?endpoint=Termine/..%20/x",
            "endpoint_traversal",
        ),
        (
            "/advoware/proxy?endpoint=Termine/%25c0%25ae%25c0%25ae/Token",
            "endpoint_not_utf8",
        ),
        (
            "/advoware/proxy?endpoint=Termine/5;jsessionid=x",
            "endpoint_path_parameter",
        ),
        (
            "/advoware/proxy?endpoint=Termine/%u002e%u002e/Token",
            "endpoint_double_encoded",
        ),
    ];
    for (uri, code) in cases {
        let resp = env.get(0, uri).await;
        assert_json_error(&resp, 400, code);
        assert!(resp.upstream_request.is_none(), "{uri}");
    }
    // With a valid configuration every endpoint that names no allowed prefix
    // is mapped *under* the default prefix (so `endpoint_not_allowed` cannot
    // happen at run time: a default prefix outside the allow-list is a
    // configuration error). Here only api/v1/Akten is allowed:
    let cfg = config_for(
        env.fake.config(),
        &env.fake.addr().to_string(),
        json!({"allowed_prefixes": ["api/v1/Akten"], "default_prefix": "api/v1/Akten"}),
    );
    let chain = env
        .host
        .add_chain(&[FilterSpec::json(FILTER, &cfg)])
        .await
        .unwrap();
    let resp = env
        .host
        .request(
            0,
            &chain,
            HttpRequest::get("/advoware/proxy?endpoint=api/v1/NewActivities"),
            env.upstream(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status,
        404,
        "mapped under api/v1/Akten, unknown to the fake: {}",
        resp.text()
    );
    assert_eq!(
        resp.upstream_request.as_ref().unwrap().path,
        "/api/v1/Akten/api/v1/NewActivities"
    );
    assert_eq!(counter(&env.host, "rejected_requests"), cases.len() as u64);
    assert!(
        env.fake
            .controls()
            .requests_to("/api/v1/advonet")
            .is_empty(),
        "nothing reached Advoware"
    );
    assert_eq!(
        env.token_fetches_at_fake(),
        1,
        "only the allowed request needed a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_request_has_path_query_method_body_and_only_the_bearer() {
    let env = env_with(
        2,
        AdvowareConfig::default(),
        json!({"upstream_host": "advoware-api.test"}),
    )
    .await;
    let token = env.warm().await;
    let req = HttpRequest::get("/advoware/proxy?endpoint=Termine&kuerzel=AB&apikey=client-key&from=2026-01-01&to=2026-12-31")
        .header("apikey", "client-key")
        .header("authorization", "Basic Y2xpZW50OnNlY3JldA==")
        .header("x-request-id", "r-1");
    let resp = env
        .host
        .request(0, &env.chain, req, env.upstream())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let up = resp.upstream_request.as_ref().unwrap();
    assert_eq!(up.method, "GET");
    assert_eq!(
        up.path,
        "/api/v1/advonet/Termine?kuerzel=AB&from=2026-01-01&to=2026-12-31"
    );
    // Blanked, not gone: ngx_wasm_module still proxies a removed request header
    // (Kong's key-auth `hide_credentials` removes it before the filter runs).
    assert_eq!(up.header("apikey"), Some(""));
    assert!(!up.headers.iter().any(|(_, v)| v.contains("client-key")));
    assert_eq!(
        up.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(
        up.headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .count(),
        1
    );
    assert_eq!(up.header("host"), Some("advoware-api.test"));
    assert_eq!(up.header("x-request-id"), Some("r-1"));
    let seen = env.fake.controls().last_request().unwrap();
    assert_eq!(seen.path, "/api/v1/advonet/Termine");
    assert_eq!(seen.query_param("kuerzel").as_deref(), Some("AB"));
    assert!(seen.header("apikey").unwrap_or_default().is_empty());

    // PUT and DELETE pass method and body through.
    let fr_nr = env
        .fake
        .insert_termin(json!({"datum": "2026-03-02", "kuerzel": "AB", "text": "Termin"}));
    let put = HttpRequest::new("PUT", &format!("/advoware/proxy?endpoint=Termine/{fr_nr}"))
        .body(br#"{"text":"verschoben"}"#.to_vec())
        .header("content-type", "application/json");
    let resp = env
        .host
        .request(1, &env.chain, put, env.upstream())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.upstream_request.as_ref().unwrap().body,
        br#"{"text":"verschoben"}"#
    );
    assert_eq!(env.fake.termin(fr_nr).unwrap()["text"], "verschoben");
    let del = HttpRequest::new(
        "DELETE",
        &format!("/advoware/proxy?endpoint=api/v1/advonet/Termine/{fr_nr}"),
    );
    let resp = env
        .host
        .request(0, &env.chain, del, env.upstream())
        .await
        .unwrap();
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(resp.upstream_request.as_ref().unwrap().method, "DELETE");
    assert!(env.fake.termin(fr_nr).is_none());
    env.assert_no_secrets(&[&token, "Y2xpZW50OnNlY3JldA=="]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused_by_on_configure_with_one_log_line_naming_every_problem() {
    let host = build_host(2);
    let bad = json!({"token_target": "https://gw/x", "kanzlei": "", "password": "hunter2-password", "api_key": "%%%", "tikc": 1});
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &bad)])
        .await
        .unwrap();
    assert_eq!(
        chain.configured,
        vec![false],
        "on_configure refuses, as Kong's deploy checks expect"
    );
    for w in 0..2 {
        let resp = host
            .request(
                w,
                &chain,
                HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
                Upstream::fixed(200, "never"),
            )
            .await;
        // The host fails a request on a refused filter like ngx_wasm_module (500).
        if let Ok(resp) = resp {
            assert_eq!(resp.status, 500, "{}", resp.text());
            assert!(resp.upstream_request.is_none());
        }
    }
    let lines: Vec<_> = host
        .logs()
        .into_iter()
        .filter(|l| l.message.contains("invalid advoware_auth configuration"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per worker (root context)");
    let line = &lines[0].message;
    for needle in [
        "`tikc`",
        "token_target",
        "`kanzlei`",
        "`database` is required",
        "`user` is required",
        "`app_id` is required",
        "`api_key`",
    ] {
        assert!(line.contains(needle), "{needle} not named in: {line}");
    }
    let text = host.log_text();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("%%%"));
    // Not JSON at all.
    let chain = host
        .add_chain(&[FilterSpec::new(FILTER, Some("not json"))])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_token_call_to_an_ip_without_a_host_name_authority_is_refused_by_on_configure() {
    // Kong's module takes the TLS server name of a dispatch from `:authority` and
    // refuses an IP ("could not derive tls sni from host"): every fetch would fail.
    let fake_cfg = AdvowareConfig::default();
    let host = build_host(1);
    let mut cfg = config_for(&fake_cfg, "10.0.0.5:443", json!({"token_scheme": "https"}));
    cfg.as_object_mut().unwrap().remove("token_authority");
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &cfg)])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
    let text = host.log_text();
    assert!(
        text.contains("could not derive tls sni from host")
            && text.contains("set `token_authority` to the security gateway's host name"),
        "{text}"
    );
    // Naming the host fixes it.
    cfg["token_authority"] = json!("security.advo-net.net");
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &cfg)])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_of_a_crashed_fetch_expires() {
    // A lock left behind (e.g. by an instance that trapped) blocks only until it expires.
    // Ticks off, so only requests take the lock here.
    let env = env_with(1, AdvowareConfig::default(), json!({"tick_period_ms": 0})).await;
    // Take the lock by starting a fetch against a token endpoint that never answers in time.
    env.fake.controls().set_latency(Duration::from_millis(800));
    let env = Arc::new(env);
    let e2 = Arc::clone(&env);
    let first =
        tokio::spawn(async move { e2.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await });
    let held = wait_for(|| env.host.shared_data(LOCK_KEY).filter(|v| !v.is_empty())).await;
    assert!(held.is_some(), "lock taken");
    // While held, a second request on the same worker is told to come back.
    let resp = env.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert_json_error(&resp, 503, "token_refresh_in_progress");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.json().unwrap()["retry"], true);
    // Pretend the fetching instance died: the lock's expiry (timeout + 1 s) frees it.
    env.advance(Duration::from_millis(2000 + 1000 + 1)).await;
    env.fake.controls().set_latency(Duration::ZERO);
    let resp = env.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert_eq!(resp.status, 200, "expired lock taken over: {}", resp.text());
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(env.token_fetches_at_fake(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_shm_zone_is_used_when_configured() {
    // kong.conf: nginx_wasm_shm_kv_advoware_auth = 1m and no default zone.
    let fake = advoware::start(AdvowareConfig::default()).await.unwrap();
    let host = Host::builder()
        .filter(FILTER)
        .workers(2)
        .clock(Clock::manual())
        .default_shm_zone(false)
        .shm_zone("advoware_auth")
        .build()
        .unwrap();
    let chain = host
        .add_chain(&[FilterSpec::json(
            FILTER,
            &config_for(fake.config(), &fake.addr().to_string(), json!({})),
        )])
        .await
        .unwrap();
    for w in 0..2 {
        let resp = host
            .request(
                w,
                &chain,
                HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
                Upstream::url(&fake.base_url()),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(
        fake.token_stats().succeeded,
        1,
        "both workers share the named zone"
    );
    assert!(cached_token(&host).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_pass_through_a_request_that_waited_for_its_own_fetch() {
    // Envoy-style chunked body delivery: the filter never touches the body,
    // also not when the request first paused for a token fetch.
    let fake = advoware::start(AdvowareConfig::default()).await.unwrap();
    let host = Host::builder()
        .filter(FILTER)
        .clock(Clock::manual())
        .body_mode(proxy_wasm_host::BodyMode::Streamed)
        .build()
        .unwrap();
    let chain = host
        .add_chain(&[FilterSpec::json(
            FILTER,
            &config_for(fake.config(), &fake.addr().to_string(), json!({})),
        )])
        .await
        .unwrap();
    let chunks = vec![br#"{"name":"#.to_vec(), br#""Streamed KG"}"#.to_vec()];
    let req = HttpRequest::new("POST", "/advoware/proxy?endpoint=Beteiligte")
        .chunks(chunks)
        .header("content-type", "application/json");
    let resp = host
        .request(0, &chain, req, Upstream::url(&fake.base_url()))
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(
        resp.upstream_request.as_ref().unwrap().body,
        br#"{"name":"Streamed KG"}"#
    );
    assert_eq!(fake.token_stats().succeeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kong_mode_the_rewritten_path_reaches_the_upstream_through_upstream_uri() {
    // Kong proxies to `$upstream_uri` (computed by its router before the
    // filter runs: `/` + the query, with strip_path); a `:path` write alone
    // would not reach Advoware.
    let env = env_with(
        2,
        AdvowareConfig::default(),
        json!({"kong_upstream_uri": true}),
    )
    .await;
    let token = env.warm().await;
    let uri = "/advoware/proxy?endpoint=Termine&kuerzel=AB&apikey=client-key";
    let req = HttpRequest::get(uri)
        .header("apikey", "client-key")
        .kong_upstream_uri("/");
    let resp = env
        .host
        .request(0, &env.chain, req, env.upstream())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = env.fake.controls().last_request().unwrap();
    assert_eq!(seen.path, "/api/v1/advonet/Termine");
    assert_eq!(seen.query.as_deref(), Some("kuerzel=AB"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    // Without Kong's variable (plain ngx_wasm_module, Envoy) only `:path` is
    // set: the filter checks for `ngx.upstream_uri` first instead of trapping.
    let resp = env
        .get(1, "/advoware/proxy?endpoint=Termine&kuerzel=AB")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = env.fake.controls().last_request().unwrap();
    assert_eq!(seen.path, "/api/v1/advonet/Termine");
    assert_eq!(seen.query.as_deref(), Some("kuerzel=AB"));
    env.assert_no_secrets(&[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_authorization_or_api_key_is_refused_before_advoware() {
    // In Kong only the first value of a repeated header can be replaced; the
    // others would be proxied next to the Bearer token, so such requests stop here.
    let env = env_with(2, AdvowareConfig::default(), json!({})).await;
    for (name, a, b) in [
        ("authorization", "Basic eDp5", "Bearer forged"),
        ("apikey", "client-key", "other-key"),
    ] {
        let req = HttpRequest::get("/advoware/proxy?endpoint=Termine&kuerzel=AB")
            .header(name, a)
            .header(name, b);
        let resp = env
            .host
            .request(0, &env.chain, req, env.upstream())
            .await
            .unwrap();
        assert_eq!(resp.status, 400, "{}", resp.text());
        let body = resp.json().unwrap();
        assert_eq!(body["error"], "repeated_header");
        assert!(body["message"].as_str().unwrap().contains(name));
        assert!(resp.upstream_request.is_none());
    }
    assert_eq!(counter(&env.host, "rejected_requests"), 2);
    assert_eq!(env.token_fetches_at_fake(), 0, "no token was fetched");
}

// --- consumer scopes (issue 16, item 4) ------------------------------------------------------

fn as_consumer(req: HttpRequest, consumer: &str) -> HttpRequest {
    req.header("apikey", "client-key")
        .header("x-consumer-username", consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_consumers_scope_get_403_before_any_token_or_upstream_call() {
    let env = env_with(
        2,
        AdvowareConfig::default(),
        json!({"consumers": {
            "calendar-reader": {"methods": ["GET"], "prefixes": ["api/v1/advonet/Termine", "api/v1/advonet/Mitarbeiter"]},
            "crm": {"methods": ["GET", "POST", "PUT"], "prefixes": ["api/v1/advonet/Beteiligte"]},
        }}),
    )
    .await;
    let send = |req: HttpRequest| env.host.request(0, &env.chain, req, env.upstream());
    let denied = [
        (
            as_consumer(
                HttpRequest::new("DELETE", "/advoware/proxy?endpoint=Termine/100001"),
                "calendar-reader",
            ),
            "outside_scope",
        ),
        (
            as_consumer(
                HttpRequest::get("/advoware/proxy?endpoint=Beteiligte/50001"),
                "calendar-reader",
            ),
            "outside_scope",
        ),
        (
            as_consumer(
                HttpRequest::get("/advoware/proxy?endpoint=api/v1/Akten/5"),
                "calendar-reader",
            ),
            "outside_scope",
        ),
        (
            as_consumer(
                HttpRequest::get("/advoware/proxy?endpoint=TermineActiveSync"),
                "calendar-reader",
            ),
            "outside_scope",
        ),
        (
            as_consumer(
                HttpRequest::new("DELETE", "/advoware/proxy?endpoint=Beteiligte/50001"),
                "crm",
            ),
            "outside_scope",
        ),
        (
            as_consumer(HttpRequest::get("/advoware/proxy?endpoint=Termine"), "crm"),
            "outside_scope",
        ),
        (
            as_consumer(
                HttpRequest::get("/advoware/proxy?endpoint=Termine"),
                "mallory",
            ),
            "consumer_unknown",
        ),
        (
            HttpRequest::get("/advoware/proxy?endpoint=Termine").header("apikey", "k"),
            "consumer_unknown",
        ),
    ];
    let n = denied.len() as u64;
    for (req, code) in denied {
        let resp = send(req).await.unwrap();
        assert_json_error(&resp, 403, code);
        assert!(resp.upstream_request.is_none());
    }
    // A second consumer header (only the first could be trusted) is refused too.
    let resp = send(
        HttpRequest::get("/advoware/proxy?endpoint=Termine")
            .header("x-consumer-username", "crm")
            .header("x-consumer-username", "calendar-reader"),
    )
    .await
    .unwrap();
    assert_json_error(&resp, 400, "repeated_header");
    assert_eq!(counter(&env.host, "scope_denied"), n);
    assert!(env.fake.requests().is_empty(), "nothing reached Advoware");
    assert_eq!(env.token_fetches_at_fake(), 0, "no token was fetched");
    assert_eq!(counter(&env.host, "token_fetches"), 0);

    // Inside the scope: proxied with the token.
    let resp = send(as_consumer(
        HttpRequest::get("/advoware/proxy?endpoint=Termine&kuerzel=AB"),
        "calendar-reader",
    ))
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.upstream_request.as_ref().unwrap().path,
        "/api/v1/advonet/Termine?kuerzel=AB"
    );
    let body = br#"{"name":"Muster GmbH"}"#.to_vec();
    let resp = send(as_consumer(
        HttpRequest::post("/advoware/proxy?endpoint=Beteiligte", body.clone())
            .header("content-type", "application/json"),
        "crm",
    ))
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(env.token_fetches_at_fake(), 1);
    env.assert_no_secrets(&[]);
}

// --- one client's 401 (issue 16, item 6) -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_one_path_keeps_the_shared_token_for_every_other_client() {
    // Advoware answers 401 on Beteiligte only (the API user has no right there).
    let env = env(2).await;
    let t1 = env.warm().await;
    env.fake.deny_path("/api/v1/advonet/Beteiligte");
    let others_use = |token: String| {
        let env = &env;
        async move {
            for w in 0..2 {
                let resp = env.get(w, "/advoware/proxy?endpoint=Mitarbeiter").await;
                assert_eq!(resp.status, 200, "{}", resp.text());
                assert_eq!(bearer(&resp), token);
            }
        }
    };

    // A fresh token refused is not an expired one: the 401 goes to that client only.
    let resp = env
        .get(0, "/advoware/proxy?endpoint=Beteiligte/50001")
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(!resp.local_response, "Advoware's own answer");
    assert_eq!(cached_token(&env.host).as_deref(), Some(t1.as_str()));
    others_use(t1.clone()).await;
    assert_eq!(env.token_fetches_at_fake(), 1, "nobody paid a refresh");
    assert_eq!(counter(&env.host, "upstream_401_kept"), 1);

    // Old enough and no forced refresh yet: this one 401 may force one.
    env.advance(Duration::from_secs(61)).await;
    let resp = env
        .get(1, "/advoware/proxy?endpoint=Beteiligte/50001")
        .await;
    assert_json_error(&resp, 503, "upstream_token_rejected");
    let (resp, _) = with_retries(
        &env,
        0,
        || HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
        50,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let t2 = bearer(&resp);
    assert_ne!(t2, t1);
    assert_eq!(env.token_fetches_at_fake(), 2);

    // The new token is old enough, but forced refreshes are rate-limited (300 s).
    env.advance(Duration::from_secs(120)).await;
    for w in 0..2 {
        let resp = env
            .get(w, "/advoware/proxy?endpoint=Beteiligte/50001")
            .await;
        assert_eq!(resp.status, 401, "{}", resp.text());
    }
    others_use(t2.clone()).await;
    assert_eq!(env.token_fetches_at_fake(), 2, "the rate limit held");
    assert_eq!(counter(&env.host, "upstream_401_kept"), 3);

    // A real revocation still recovers once the rate limit allows it again.
    env.advance(Duration::from_secs(200)).await;
    env.fake.revoke_all();
    let resp = env.get(0, "/advoware/proxy?endpoint=Mitarbeiter").await;
    assert_json_error(&resp, 503, "upstream_token_rejected");
    let (resp, _) = with_retries(
        &env,
        1,
        || HttpRequest::get("/advoware/proxy?endpoint=Mitarbeiter"),
        50,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(env.token_fetches_at_fake(), 3);
    env.assert_no_secrets(&[&t1, &t2]);
}
