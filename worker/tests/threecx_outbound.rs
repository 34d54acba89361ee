//! Outbound calls (issue 14): the real worker binary against the stateful 3CX Call Control fake,
//! the fake EspoCRM and a real `redis-server`. Token cached across calls (one issue for N calls),
//! a 401 → exactly one refresh then success, 401 again → 502, busy → 409, invalid numbers
//! (ours and 3CX's) → 422, the shared budget → 429 with `Retry-After`, `lead_id` resolved through
//! EspoCRM, the admin token, idempotent repeats, and a 3CX that never answers (no second call).
#![allow(clippy::expect_used, clippy::unwrap_used)] // In tests a failed expect is a failed test.

mod common;

use std::time::Duration;

use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_fakes::threecx::{self, CallControlConfig, CallControlFake};
use common::{client, RedisServer, Worker};
use serde_json::{json, Value};

struct Env {
    _redis: RedisServer,
    pbx: CallControlFake,
    espo: EspoCrmFake,
    w: Worker,
}

async fn env(extra: &[(&str, &str)]) -> Env {
    let redis = RedisServer::start(false);
    let pbx = threecx::start_call_control(CallControlConfig::default())
        .await
        .expect("3cx fake");
    let espo = espocrm::start(EspoCrmConfig::default())
        .await
        .expect("espocrm fake");
    let base = pbx.base_url();
    let api = espo.api_url();
    let key = espo.config().api_key.clone();
    let mut vars: Vec<(&str, &str)> = vec![
        ("THREECX_API_BASE_URL", &base),
        ("THREECX_CLIENT_ID", &pbx.config().client_id),
        ("THREECX_CLIENT_SECRET", &pbx.config().client_secret),
        ("ESPOCRM_API_BASE_URL", &api),
        ("ESPOCRM_API_KEY", &key),
        // A burst of 10 (the default 60/min allows one call per second); the budget test sets 2.
        ("THREECX_CALLS_PER_MINUTE", "600"),
    ];
    vars.extend_from_slice(extra);
    let w = Worker::spawn(&redis.url(), &vars, &[]);
    Env {
        _redis: redis,
        pbx,
        espo,
        w,
    }
}

impl Env {
    async fn call(&self, body: Value) -> (u16, Value) {
        self.call_with(body, &[]).await
    }

    async fn call_with(&self, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = client()
            .post(format!("{}/3cx/call", self.w.base))
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self, id: &str) -> (u16, Value) {
        let resp = client()
            .get(format!("{}/3cx/call/{id}", self.w.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn makecalls(&self) -> usize {
        self.pbx
            .controls()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/makecall"))
            .count()
    }
}

#[tokio::test]
async fn token_is_cached_across_calls_and_the_status_follows_the_participant() {
    let env = env(&[]).await;
    let mut ids = Vec::new();
    for ext in ["201", "202", "203"] {
        let (status, body) = env
            .call(json!({"phone": "030 1234567", "extension": ext}))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["destination"], "+49301234567");
        assert_eq!(body["status"], "Dialing");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let c = env.pbx.counters();
    assert_eq!((c.token_issues, c.calls_placed), (1, 3), "{c:?}");
    let parts = env.pbx.participants();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.party_dn == "+49301234567"));
    // The token request is a form with the client credentials; the API calls carry the bearer.
    let token_req = &env.pbx.controls().requests_to("/connect/token")[0];
    assert_eq!(
        token_req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let mk = env.pbx.controls().requests_to("/callcontrol/201/makecall");
    assert_eq!(mk[0].json().unwrap()["destination"], "+49301234567");
    assert!(mk[0]
        .header("authorization")
        .unwrap()
        .starts_with("Bearer "));

    // Status: Dialing → Connected → Ended (3CX removed the participant).
    let p = parts.iter().find(|p| p.dn == "201").unwrap();
    let (s, v) = env.status(&ids[0]).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("Dialing")), "{v}");
    assert!(env.pbx.set_status("201", p.id, "Connected"));
    let (_, v) = env.status(&ids[0]).await;
    assert_eq!(
        (v["status"].as_str(), v["active"].as_bool()),
        (Some("Connected"), Some(true))
    );
    assert!(env.pbx.hang_up("201", p.id));
    let (_, v) = env.status(&ids[0]).await;
    assert_eq!(
        (v["status"].as_str(), v["active"].as_bool()),
        (Some("Ended"), Some(false))
    );
    let (s, v) = env.status("0123456789abcdef0123456789abcdef").await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_call")));
    // Still the one token; neither secret nor token in the log.
    assert_eq!(env.pbx.counters().token_issues, 1);
    let log = env.w.log_text();
    assert!(
        !log.contains(&env.pbx.config().client_secret),
        "secret logged"
    );
    assert!(!log.contains("+49301234567"), "number logged above debug");
}

#[tokio::test]
async fn a_refused_token_is_refreshed_exactly_once_then_the_call_succeeds() {
    let env = env(&[]).await;
    let (s, _) = env
        .call(json!({"phone": "+49301234567", "extension": "201"}))
        .await;
    assert_eq!(s, 201);
    // The PBX forgot its tokens (restart): one 401, one new token, the same request again.
    env.pbx.revoke_tokens();
    let (s, body) = env
        .call(json!({"phone": "+49301234567", "extension": "202"}))
        .await;
    assert_eq!(s, 201, "{body}");
    let c = env.pbx.counters();
    assert_eq!(
        (c.token_issues, c.unauthorized, c.calls_placed),
        (2, 1, 2),
        "{c:?}"
    );
}

#[tokio::test]
async fn a_401_after_the_refresh_is_a_clear_502_and_nothing_is_placed() {
    let env = env(&[]).await;
    env.pbx
        .controls()
        .fail_next_on("/callcontrol", 2, 401, None);
    let (s, body) = env
        .call(json!({"phone": "+49301234567", "extension": "201"}))
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (502, Some("threecx_unauthorized")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("Call Control"));
    let c = env.pbx.counters();
    assert_eq!(
        (c.token_issues, c.calls_placed),
        (2, 0),
        "one refresh, not a loop: {c:?}"
    );
    assert_eq!(env.makecalls(), 2);
    // The refusal removed the record: trying again places the call, with the cached token.
    let (s, _) = env
        .call(json!({"phone": "+49301234567", "extension": "201"}))
        .await;
    assert_eq!(s, 201);
    assert_eq!(env.pbx.counters().token_issues, 2);
}

#[tokio::test]
async fn wrong_client_credentials_are_a_clear_502() {
    let env = env(&[("THREECX_CLIENT_SECRET", "not-the-secret")]).await;
    let (s, body) = env
        .call(json!({"phone": "+49301234567", "extension": "201"}))
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (502, Some("threecx_credentials")),
        "{body}"
    );
    assert_eq!(env.makecalls(), 0);
    assert!(!env.w.log_text().contains("not-the-secret"));
}

#[tokio::test]
async fn a_busy_extension_is_409_and_a_repeat_may_place_the_call_later() {
    let env = env(&[]).await;
    env.pbx.set_busy("201", true);
    let key = [("idempotency-key", "crm-click-1")];
    let body = json!({"phone": "+49301234567", "extension": "201"});
    let (s, v) = env.call_with(body.clone(), &key).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("extension_busy")),
        "{v}"
    );
    assert!(env.pbx.participants().is_empty());
    env.pbx.set_busy("201", false);
    let (s, v) = env.call_with(body, &key).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(env.pbx.participants().len(), 1);
}

#[tokio::test]
async fn invalid_numbers_and_extensions_are_refused_clearly() {
    let env = env(&[]).await;
    // Ours: not a number — 3CX is never asked.
    let (s, v) = env
        .call(json!({"phone": "call me maybe", "extension": "201"}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("invalid_number")),
        "{v}"
    );
    let (s, v) = env
        .call(json!({"phone": "030 1234567", "extension": "2O1"}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("unknown_extension")),
        "{v}"
    );
    let (s, v) = env
        .call(json!({"phone": "030 1234567", "lead_id": "abc", "extension": "201"}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_payload")),
        "{v}"
    );
    let (s, v) = env.call(json!({"phone": "030 1234567"})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_payload")),
        "{v}"
    );
    assert_eq!(env.makecalls(), 0);
    // 3CX's: a number its outbound rules cannot route, an extension the PBX does not have.
    env.pbx.set_undialable("+49309999999");
    let (s, v) = env
        .call(json!({"phone": "030 9999999", "extension": "201"}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("invalid_number")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("3CX refused"));
    let (s, v) = env
        .call(json!({"phone": "030 1234567", "extension": "299"}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("unknown_extension")),
        "{v}"
    );
    assert!(env.pbx.participants().is_empty());
}

#[tokio::test]
async fn the_budget_of_all_workers_answers_429_with_retry_after() {
    let env = env(&[("THREECX_CALLS_PER_MINUTE", "2")]).await;
    let (s, _) = env
        .call(json!({"phone": "+49301234567", "extension": "201"}))
        .await;
    assert_eq!(s, 201);
    let resp = client()
        .post(format!("{}/3cx/call", env.w.base))
        .json(&json!({"phone": "+49301234567", "extension": "202"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    assert_eq!(env.pbx.counters().calls_placed, 1);
}

#[tokio::test]
async fn lead_id_dials_the_leads_number_from_espocrm() {
    let env = env(&[]).await;
    let lead = env
        .espo
        .insert(
            "Lead",
            json!({"firstName": "Erika", "lastName": "Musterfrau", "phoneNumber": "0511 12345"}),
        )
        .unwrap();
    let id = lead["id"].as_str().unwrap();
    let (s, v) = env.call(json!({"lead_id": id, "extension": "201"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["destination"], "+4951112345");
    assert_eq!(env.pbx.participants()[0].party_dn, "+4951112345");
    let bare = env
        .espo
        .insert("Lead", json!({"lastName": "Ohne Nummer"}))
        .unwrap();
    let (s, v) = env
        .call(json!({"lead_id": bare["id"], "extension": "201"}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("lead_without_phone")),
        "{v}"
    );
    let (s, v) = env
        .call(json!({"lead_id": "0000000000000000a", "extension": "201"}))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (404, Some("lead_not_found")),
        "{v}"
    );
    assert_eq!(env.pbx.counters().calls_placed, 1);
}

#[tokio::test]
async fn without_the_admin_token_nothing_is_placed() {
    let env = env(&[("WORKER_ADMIN_TOKEN", "admin-tok-123")]).await;
    let body = json!({"phone": "+49301234567", "extension": "201"});
    let (s, v) = env.call(body.clone()).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let (s, _) = env
        .call_with(body.clone(), &[("authorization", "Bearer wrong")])
        .await;
    assert_eq!(s, 401);
    assert_eq!(env.makecalls(), 0);
    let (s, _) = env
        .call_with(body, &[("authorization", "Bearer admin-tok-123")])
        .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_first_call() {
    let env = env(&[]).await;
    let body = json!({"phone": "+49301234567", "extension": "201"});
    let key = [("idempotency-key", "crm:lead-7:click-1")];
    let (s1, first) = env.call_with(body.clone(), &key).await;
    let (s2, again) = env.call_with(body, &key).await;
    assert_eq!((s1, s2), (201, 200), "{first} {again}");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["replayed"], true);
    assert_eq!(env.pbx.counters().calls_placed, 1);
}

/// Injected failure: 3CX does not answer within `THREECX_API_TIMEOUT_MS`. The call may exist,
/// so the record stays `in_doubt` and a repeat with the same key is refused — never a second call.
#[tokio::test]
async fn a_3cx_that_never_answers_leaves_the_call_in_doubt_and_places_no_second() {
    let env = env(&[("THREECX_API_TIMEOUT_MS", "500")]).await;
    let body = json!({"phone": "+49301234567", "extension": "201"});
    let key = [("idempotency-key", "click-42")];
    // Token first (answered), then a makecall slower than our timeout.
    let (s, _) = env
        .call(json!({"phone": "+49301234567", "extension": "202"}))
        .await;
    assert_eq!(s, 201);
    env.pbx.controls().set_latency(Duration::from_millis(1500));
    let (s, v) = env.call_with(body.clone(), &key).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (504, Some("threecx_no_answer")),
        "{v}"
    );
    env.pbx.controls().set_latency(Duration::ZERO);
    let (s, v) = env.call_with(body, &key).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("call_in_doubt")),
        "{v}"
    );
    assert_eq!(env.makecalls(), 2, "the repeat never reached 3CX");
}

/// `config check` accepts the Call Control settings without printing the secret, and lists an
/// incomplete set (secret without base URL and id) without echoing it.
#[test]
fn config_check_validates_the_call_control_settings_without_printing_the_secret() {
    let check = |vars: &[(&str, &str)]| {
        std::process::Command::new(common::bin())
            .env_clear()
            .env("GATEWAY_SIGNING_SECRET", "a-very-secret-value-123")
            .envs(vars.iter().copied())
            .args(["config", "check"])
            .output()
            .unwrap()
    };
    let out = check(&[
        ("THREECX_API_BASE_URL", "https://ralup.my3cx.de"),
        ("THREECX_CLIENT_ID", "901"),
        ("THREECX_CLIENT_SECRET", "pbx-client-secret-xyz"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ralup.my3cx.de") && !text.contains("pbx-client-secret-xyz"),
        "{text}"
    );
    let out = check(&[("THREECX_CLIENT_SECRET", "pbx-client-secret-xyz")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("THREECX_API_BASE_URL"), "{err}");
    assert!(!err.contains("pbx-client-secret-xyz"), "{err}");
}
