//! A Bankverbindung end to end (issue 12): EspoCRM's signed webhook through kong.yaml in gateway
//! mode (the `webhook_guard` filter) to the real worker, which creates the bank account in the
//! fake Advoware and writes its id back; a forged webhook is refused at the edge and never
//! reaches the worker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bitbylaw_fakes::redis_server::{free_port, RedisServer};
use bitbylaw_fakes::{advoware, espocrm, vermieterhelden};
use common::*;
use serde_json::json;

async fn received(worker_url: &str, topic: &str) -> f64 {
    let text = reqwest::get(format!("{worker_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("bitbylaw_worker_events_received_total{"))
        .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_espocrm_bankverbindung_webhook_reaches_advoware_and_a_forged_one_does_not() {
    let redis = RedisServer::start(false);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let espo = espocrm::start(espocrm::EspoCrmConfig::default())
        .await
        .unwrap();
    let c = adv.config().clone();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .args(["serve", "--no-schedules"])
            .env_clear()
            .env("REDIS_URL", redis.url())
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .env("WORKER_ROLES", "intake,consumers")
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("ADVOWARE_API_BASE_URL", adv.api_base_url())
            .env("ADVOWARE_SECURITY_GATEWAY_URL", adv.security_gateway_url())
            .env("ADVOWARE_KANZLEI", &c.kanzlei)
            .env("ADVOWARE_DATABASE", &c.database)
            .env("ADVOWARE_USER", &c.user)
            .env("ADVOWARE_APP_ID", &c.app_id)
            .env("ADVOWARE_PASSWORD", &c.password)
            .env("ADVOWARE_API_KEY", &c.api_key_b64)
            .env("ESPOCRM_API_BASE_URL", espo.api_url())
            .env("ESPOCRM_API_KEY", &espo.config().api_key)
            .env("WORKER_LOCK_BUSY_DELAY_MS", "100")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/health")).await;
    let gw_port = free_port();
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    let hooks = espo_hooks(&espo, &gw_url);
    let lead_secret = vermieterhelden::generate_secret();
    let config = render(&vars(&adv, &worker_url, &hooks, &lead_secret));
    let _gw = deployed_gateway(config, gw_port).await;

    let bet_nr = adv.insert_beteiligter(json!({"name": "Mustermann", "vorname": "Erika"}));
    let bet = espo
        .insert(
            "CBeteiligte",
            json!({"firstName": "Erika", "lastName": "Mustermann", "betnr": bet_nr}),
        )
        .unwrap();
    let bank = espo
        .insert(
            "CBankverbindungen",
            json!({"name": "Girokonto", "iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX",
                "bankname": "Commerzbank", "beteiligteId": bet["id"]}),
        )
        .unwrap();
    let id = bank["id"].as_str().unwrap().to_owned();
    let deliveries = espo.flush_webhooks().await;
    assert!(
        deliveries.iter().all(|d| d.status == Some(202)),
        "{deliveries:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let list = adv.bankverbindungen(bet_nr);
        let written_back = espo.get("CBankverbindungen", &id).unwrap()["advowareKontoId"].clone();
        if list.len() == 1 && written_back == list[0]["id"] {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "no Bankverbindung in Advoware: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored[0]["iban"], "DE89370400440532013000");

    // A forged batch (unknown webhook id, wrong secret) and a genuine update delivery
    // re-addressed to the create path are refused at the edge: intake never sees them.
    let topic = "vmh.bankverbindungen.create";
    let before = received(&worker_url, topic).await;
    let other = espo
        .insert(
            "CBankverbindungen",
            json!({"name": "Tagesgeld", "iban": "GB82 WEST 1234 5698 7654 32", "beteiligteId": bet["id"]}),
        )
        .unwrap();
    let batch = json!([{"id": other["id"]}]);
    for (hook_id, secret) in [
        ("forged", "nope"),
        (
            hooks["ESPOCRM_WEBHOOK_BANKVERBINDUNGEN_UPDATE_ID"].as_str(),
            hooks["ESPOCRM_WEBHOOK_BANKVERBINDUNGEN_UPDATE_SECRET"].as_str(),
        ),
    ] {
        let resp = espocrm::send_webhook(
            &format!("{gw_url}/vmh/webhook/bankverbindungen/create"),
            hook_id,
            secret,
            &batch,
            espocrm::SignatureStyle::Current,
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(received(&worker_url, topic).await, before);
    assert_eq!(adv.bankverbindungen(bet_nr).len(), 1);
}
