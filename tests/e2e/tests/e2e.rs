//! The product end to end: the repository's kong.yaml rendered and served by gateway
//! mode with the built `.wasm` filters, in front of the real worker binary on real
//! Redis, with the fake Advoware and EspoCRM. Assertions are on HTTP responses,
//! what the fakes received, and the worker's queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bitbylaw_fakes::redis_server::{free_port, RedisServer};
use bitbylaw_fakes::{advoware, espocrm, threecx, vermieterhelden};
use common::*;
use proxy_wasm_host::gateway::{
    parse_nginx_size, Gateway, GatewayOptions, DEPLOYED_CLIENT_BODY_BUFFER_SIZE,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_yaml_filters_exist_validate_against_their_schema_and_are_accepted_by_on_configure() {
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let config = render(&vars(
        &adv,
        "http://127.0.0.1:9",
        &placeholder_hooks(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ));
    let chains = config
        .services
        .iter()
        .flat_map(|s| s.routes.iter())
        .filter(|r| !r.filter_chains.is_empty())
        .count();
    assert!(
        chains >= 6,
        "every webhook route and the Advoware proxy carry a filter chain"
    );
    // Gateway::start configures every chain on every worker and fails if any
    // filter's on_configure rejects its config.
    let gw = Gateway::start(GatewayOptions::new(config))
        .await
        .expect("every filter accepts its kong.yaml config");
    drop(gw);
}

fn queue_stats(redis_url: &str) -> Value {
    let out = Command::new(worker_bin())
        .args(["queue", "stats", "--json"])
        .env("REDIS_URL", redis_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_flow_through_gateway_filters_worker_and_redis() {
    let redis = RedisServer::start(true);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    adv.seed_demo();
    let espo = espocrm::start(espocrm::EspoCrmConfig::default())
        .await
        .unwrap();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    // Jobs stay queued: no consumers, so the queue shows exactly what intake accepted.
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .args(["serve", "--no-consumers", "--no-schedules"])
            .env("REDIS_URL", redis.url())
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/health")).await;

    // Gateway on a fixed free port, so EspoCRM's webhooks can point at it.
    let gw_port = free_port();
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    let hooks = espo_hooks(&espo, &gw_url);
    let lead_secret = vermieterhelden::generate_secret();
    let config = render(&vars(&adv, &worker_url, &hooks, &lead_secret));
    let _gw = deployed_gateway(config, gw_port).await;
    let client = reqwest::Client::new();

    // Advoware proxy: the client's key never reaches Advoware; the filter's token does.
    let resp = client
        .get(format!("{gw_url}/advoware/proxy?endpoint=Mitarbeiter"))
        .header("apikey", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let at_advoware = adv.controls().requests_to("/api/v1/advonet/Mitarbeiter");
    let last = at_advoware.last().expect("request reached Advoware");
    assert!(last
        .header("authorization")
        .unwrap_or_default()
        .starts_with("Bearer "));
    assert_eq!(last.header("apikey"), None);
    assert_eq!(adv.token_stats().succeeded, 1);
    let resp = client
        .get(format!("{gw_url}/advoware/proxy?endpoint=Mitarbeiter"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "key-auth before the filter");
    let resp = client
        .get(format!("{gw_url}/advoware/proxy?endpoint=../secret"))
        .header("apikey", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // EspoCRM: a record created and updated in the CRM reaches the worker's queue.
    let created = espo
        .insert("CBeteiligte", json!({"name": "Muster GmbH"}))
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    espo.edit("CBeteiligte", &id, json!({"name": "Muster GmbH & Co. KG"}));
    let deliveries = espo.flush_webhooks().await;
    assert!(!deliveries.is_empty());
    assert!(
        deliveries.iter().all(|d| d.status == Some(202)),
        "{deliveries:?}"
    );

    // A forged EspoCRM batch is refused at the edge.
    let resp = espocrm::send_webhook(
        &format!("{gw_url}/vmh/webhook/beteiligte/update"),
        "forged",
        "nope",
        &json!([{"id": id}]),
        espocrm::SignatureStyle::Current,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);

    // Lead, then the same lead again: the duplicate is answered at the edge.
    let lead = json!({"firstName": "Erika", "lastName": "Mustermann", "emailAddress": "erika@example.org"});
    let r = vermieterhelden::send_lead(
        &format!("{gw_url}/api/leads/vermieterhelden"),
        &lead_secret,
        &lead,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let r = vermieterhelden::send_lead(
        &format!("{gw_url}/api/leads/vermieterhelden"),
        &lead_secret,
        &lead,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");

    // 3CX call report with the static key; a wrong key is refused.
    let call = json!({"CallType": "Inbound", "Number": "+49301234567", "Duration": "00:01:05", "DateTime": "2026-11-23 10:00:00"});
    let r = threecx::report_call(
        &format!("{gw_url}/3cx/calls"),
        "x-api-key",
        THREECX_KEY,
        &call,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let r = threecx::report_call(&format!("{gw_url}/3cx/calls"), "x-api-key", "wrong", &call)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Manual calendar sync through key-auth.
    let r = client
        .post(format!("{gw_url}/advoware/calendar/sync"))
        .header("apikey", CLIENT_KEY)
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // What intake accepted is durable in Redis.
    let stats = queue_stats(&redis.url()).to_string();
    for topic in [
        "vmh.beteiligte.create",
        "vmh.beteiligte.update",
        "leads.vermieterhelden.received",
        "telephony.call.reported",
        "calendar.sync.all",
    ] {
        assert!(stats.contains(topic), "{topic} missing in {stats}");
    }
}

/// The calendar sync as operators run it: a trigger through Kong's route (key-auth) reaches
/// the worker, which syncs the employee's Advoware appointments into Google (service account
/// against the Google fake's token endpoint) and the audit then reports "in sync".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_sync_triggered_through_kong_reaches_google() {
    let redis = RedisServer::start(false);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    adv.seed_demo();
    let google = bitbylaw_fakes::google_calendar::start(
        bitbylaw_fakes::google_calendar::GoogleCalendarConfig {
            static_token: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = google
        .write_service_account_key(dir.path(), "sync@e2e.iam.gserviceaccount.com")
        .unwrap();
    let c = adv.config().clone();
    let worker_env: Vec<(String, String)> = [
        ("REDIS_URL", redis.url()),
        ("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET.to_string()),
        ("WORKER_ROLES", "intake,consumers".into()),
        ("ADVOWARE_API_BASE_URL", adv.api_base_url()),
        ("ADVOWARE_SECURITY_GATEWAY_URL", adv.security_gateway_url()),
        ("ADVOWARE_KANZLEI", c.kanzlei.clone()),
        ("ADVOWARE_DATABASE", c.database.clone()),
        ("ADVOWARE_USER", c.user.clone()),
        ("ADVOWARE_APP_ID", c.app_id.clone()),
        ("ADVOWARE_PASSWORD", c.password.clone()),
        ("ADVOWARE_API_KEY", c.api_key_b64.clone()),
        (
            "GOOGLE_CALENDAR_SERVICE_ACCOUNT_PATH",
            key.display().to_string(),
        ),
        ("GOOGLE_CALENDAR_API_BASE_URL", google.api_base_url()),
        ("GOOGLE_CALENDAR_ROOT_URL", google.root_url()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .arg("serve")
            .env_clear()
            .envs(worker_env.iter().map(|(k, v)| (k, v)))
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/health")).await;
    let lead_secret = vermieterhelden::generate_secret();
    let config = render(&vars(&adv, &worker_url, &placeholder_hooks(), &lead_secret));
    let gw = deployed_gateway(config, free_port()).await;

    let r = reqwest::Client::new()
        .post(format!("{}/advoware/calendar/sync", gw.base_url()))
        .header("apikey", CLIENT_KEY)
        .json(&json!({"kuerzel": "SB"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let events = loop {
        let found = google
            .calendar_ids()
            .into_iter()
            .map(|id| google.live_events(&id))
            .find(|evs| evs.len() == 3);
        if let Some(evs) = found {
            break evs;
        }
        assert!(std::time::Instant::now() < deadline, "no calendar synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut titles: Vec<&str> = events
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or(""))
        .collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        [
            "Mandantengespräch Müller ./. Schmidt",
            "Urlaub",
            "Wochenbesprechung Team Mietrecht"
        ]
    );
    assert!(events
        .iter()
        .all(|e| e["extendedProperties"]["private"]["advowareFrNr"].is_string()));

    // The run records its state right after each write; wait until it has finished.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = reqwest::get(format!("{worker_url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("bitbylaw_worker_calendar_sync_runs_total{kind=\"ok\"} 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run not finished:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(worker_bin())
        .args(["calendar", "audit", "--kuerzel", "SB"])
        .env_clear()
        .envs(worker_env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("in sync"), "{stdout}");
}

#[test]
fn compose_deploys_the_body_buffer_the_tests_assume() {
    // The sandbox and these tests run the gateway with the deployed
    // client_body_buffer_size; docker/compose.yaml must say the same.
    let compose = std::fs::read_to_string(root().join("docker/compose.yaml")).unwrap();
    let value = compose
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE:")
        })
        .expect("docker/compose.yaml sets KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE")
        .trim()
        .trim_matches('"');
    assert_eq!(
        parse_nginx_size(value).unwrap(),
        DEPLOYED_CLIENT_BODY_BUFFER_SIZE
    );
}
