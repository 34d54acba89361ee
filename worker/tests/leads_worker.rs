//! Vermieterhelden leads through the real worker binary: signed events (as the edge forwards
//! them, `X-Event-Id` = the sender's `webhook-id`) → queue → leads handler → fake EspoCRM.
//! Each lead type arrives; the same `webhook-id` again (at intake, and re-queued) stays one
//! Lead; invalid payloads land in the dead-letter stream naming the field, with nothing
//! written; no personal data in the info-level log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use bitbylaw_fakes::espocrm::{self, EspoCrmConfig};
use common::{gateway_request, now_secs, wait_for, RedisServer, Worker, SECRET};
use redis::AsyncCommands;
use serde_json::{json, Value};

const TOPIC: &str = "leads.vermieterhelden.received";

fn lead(t: &str, i: usize) -> Value {
    json!({
        "schema_version": "1",
        "event": if t == "kontakt" { "contact.submitted" } else { "lead.created" },
        "lead_type": t,
        "contact": {"first_name": "Erika", "last_name": format!("Geheimname{i}"),
                    "email": format!("erika.{i}@privat-example.de"), "phone": format!("0176 5550 12{i}")},
        "message": "Kündigung erhalten",
        "consent": {"newsletter": t == "newsletter", "text_version": "nl-1", "given_at": "2026-05-01T08:00:00Z"}
    })
}

async fn post(base: &str, id: &str, body: &[u8]) -> u16 {
    gateway_request(base, TOPIC, id, body, now_secs(), SECRET)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn dlq(redis: &RedisServer) -> Vec<(Value, String)> {
    let mut c = redis.conn().await;
    let r: redis::streams::StreamRangeReply = c.xrange_all("bbl:dlq").await.unwrap();
    r.ids
        .iter()
        .map(|e| {
            let job: String = e.get("job").unwrap_or_default();
            let err: String = e.get("error").unwrap_or_default();
            (serde_json::from_str(&job).unwrap_or(Value::Null), err)
        })
        .collect()
}

#[tokio::test]
async fn leads_end_to_end_through_the_worker() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let list = fake
        .insert("TargetList", json!({"name": "Newsletter"}))
        .unwrap();
    let list_id = list["id"].as_str().unwrap().to_owned();
    let api = fake.api_url();
    let key = fake.config().api_key.clone();
    let w = Worker::spawn(
        &redis.url(),
        &[
            ("ESPOCRM_API_BASE_URL", &api),
            ("ESPOCRM_API_KEY", &key),
            ("LEADS_NEWSLETTER_TARGET_LIST_ID", &list_id),
            ("LEADS_ASSIGN_MIETER_USER_ID", "userMieter"),
        ],
        &[],
    );

    let types = ["mieter", "vermieter", "kontakt", "newsletter"];
    for (i, t) in types.iter().enumerate() {
        let body = serde_json::to_vec(&lead(t, i)).unwrap();
        assert_eq!(post(&w.base, &format!("msg_{t}"), &body).await, 202);
    }
    let leads = wait_for("four leads", Duration::from_secs(20), || async {
        let all = fake.all("Lead");
        (all.len() == 4).then_some(all)
    })
    .await;
    for (i, t) in types.iter().enumerate() {
        let l = leads
            .iter()
            .find(|l| l["emailAddress"] == format!("erika.{i}@privat-example.de"))
            .unwrap_or_else(|| panic!("{t} lead"));
        assert_eq!(l["phoneNumber"], format!("+4917655501{}", 20 + i));
        assert_eq!(l["lastName"], format!("Geheimname{i}"));
        assert!(l["description"]
            .as_str()
            .unwrap()
            .ends_with(&format!("[vermieterhelden:msg_{t}]")));
    }
    assert_eq!(fake.related("TargetList", &list_id, "leads").len(), 1);
    wait_for("the mieter task", Duration::from_secs(10), || async {
        (fake.all("Task").len() == 1).then_some(())
    })
    .await;

    // The same webhook-id again: answered as a duplicate at intake…
    let body = serde_json::to_vec(&lead("mieter", 0)).unwrap();
    assert_eq!(post(&w.base, "msg_mieter", &body).await, 200);
    // …and, once intake has forgotten it, queued again but absorbed by the handler.
    let mut c = redis.conn().await;
    let _: i64 = c.del(format!("bbl:seen:{TOPIC}:msg_mieter")).await.unwrap();
    let done_before: i64 = c.hlen("bbl:lead:msg_mieter").await.unwrap();
    assert_eq!(post(&w.base, "msg_mieter", &body).await, 202);

    // Invalid payloads → DLQ naming the field; nothing written to EspoCRM.
    let writes_before = fake.total_writes();
    let mut no_contact = lead("mieter", 7);
    no_contact["contact"] = json!({"name": "Erika Geheimname7"});
    let mut bad_email = lead("mieter", 8);
    bad_email["contact"]["email"] = json!("erika(at)privat-example.de");
    let mut unknown_type = lead("mieter", 9);
    unknown_type["lead_type"] = json!("kaeufer");
    let mut oversized = lead("mieter", 6);
    oversized["message"] = json!("x".repeat(10_001));
    let invalid = [
        ("bad_contact", no_contact, "contact.email"),
        ("bad_email", bad_email, "contact.email"),
        ("bad_type", unknown_type, "lead_type"),
        ("bad_size", oversized, "message"),
    ];
    for (id, body, _) in &invalid {
        assert_eq!(
            post(&w.base, id, &serde_json::to_vec(body).unwrap()).await,
            202
        );
    }
    let dead = wait_for("four dead letters", Duration::from_secs(20), || async {
        let d = dlq(&redis).await;
        (d.len() == 4).then_some(d)
    })
    .await;
    for (id, _, field) in &invalid {
        let (_, err) = dead
            .iter()
            .find(|(job, _)| job["event_id"] == *id)
            .unwrap_or_else(|| panic!("{id} in the DLQ"));
        assert!(
            err.contains(&format!("field {field}")),
            "{id}: {err} should name {field}"
        );
        assert!(!err.contains("privat-example"), "{err}");
    }
    // Non-UTF-8 never reaches the queue.
    let raw = b"{\"event\":\"lead.created\",\"lead_type\":\"mieter\",\"message\":\"\xff\"}";
    assert_eq!(post(&w.base, "bad_utf8", raw).await, 400);

    // The re-queued duplicate has run by now (same topic, earlier in the stream).
    wait_for(
        "re-queued duplicate processed",
        Duration::from_secs(10),
        || async {
            let mut c = redis.conn().await;
            let len: i64 = c.xlen(format!("bbl:q:{TOPIC}")).await.unwrap_or(1);
            (len == 0).then_some(())
        },
    )
    .await;
    let done_after: i64 = c.hlen("bbl:lead:msg_mieter").await.unwrap();
    assert_eq!(done_before, done_after);
    assert_eq!(fake.all("Lead").len(), 4, "still one Lead per webhook-id");
    assert_eq!(fake.writes("Lead"), 4);
    assert_eq!(fake.all("Task").len(), 1);
    assert_eq!(
        fake.total_writes(),
        writes_before,
        "invalid payloads wrote nothing"
    );

    // No personal data in the log at info level.
    let log = w.log_text();
    assert!(log.contains("lead written to EspoCRM"), "{log}");
    for needle in ["privat-example", "Geheimname", "+49176", "0176", "Erika"] {
        assert!(!log.contains(needle), "log contains {needle}:\n{log}");
    }
}

/// `tools/send-lead/send-lead.sh` (the WordPress developers' reference) signs exactly as the
/// Standard Webhooks spec says: the gateway's own verifier accepts what it sends, byte for byte.
#[tokio::test]
async fn reference_sender_signs_like_standard_webhooks() {
    let receiver = bitbylaw_fakes::receiver::start_ok().await.unwrap();
    let url = receiver.url("/api/leads/vermieterhelden");
    let secret = bitbylaw_fakes::vermieterhelden::generate_secret();
    let root = common::repo_root();
    let script = root.join("tools/send-lead/send-lead.sh");
    let example = root.join("docs/leads/examples/vermieter.json");
    let s = secret.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .arg(url)
            .arg(example)
            .arg("msg_reference_1")
            .env("VERMIETERHELDEN_WEBHOOK_SECRET", s)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = receiver.requests().pop().expect("one request");
    assert_eq!(got.header("webhook-id"), Some("msg_reference_1"));
    assert_eq!(
        &got.body[..],
        std::fs::read(root.join("docs/leads/examples/vermieter.json")).unwrap()
    );
    bitbylaw_core::webhook::verify_standard_webhook(
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        got.header("webhook-signature"),
        &got.body,
        &[secret],
        now_secs(),
        300,
    )
    .expect("the gateway's verifier accepts the reference sender");
}

/// A lead run that outlasts the lock TTL (EspoCRM answering slowly) keeps its submission's lock:
/// it is extended while the run lasts and released at its end, so a redelivery of the same
/// `webhook-id` can never run beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_lead_run_keeps_its_lock_until_it_ends() {
    let redis = RedisServer::start(false);
    let fake = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let mut vars = common::espocrm_env(&fake);
    vars.push(("WORKER_LOCK_TTL_MS".into(), "600".into()));
    let w = Worker::spawn(&redis.url(), &common::env_refs(&vars), &[]);
    // Every EspoCRM call takes 1.2 s: the run's searches and create (≥ 3 calls) take ≥ 6 TTLs.
    fake.controls().set_latency(Duration::from_millis(1200));
    let body = serde_json::to_vec(&lead("mieter", 7)).unwrap();
    assert_eq!(post(&w.base, "msg_slow", &body).await, 202);
    let lock = wait_for("the run holds its lock", Duration::from_secs(20), || {
        keys_of(&redis, "bbl:lock:*msg_slow*")
    })
    .await;
    let mut c = redis.conn().await;
    // 2.5 TTLs later the run is still busy with EspoCRM and its lock still there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.all("Lead").is_empty(), "the run is still going");
    assert!(c.exists::<_, bool>(&lock).await.unwrap(), "lock kept alive");
    wait_for("the lead", Duration::from_secs(30), || async {
        (fake.all("Lead").len() == 1).then_some(())
    })
    .await;
    wait_for("lock released", Duration::from_secs(10), || {
        let mut c = c.clone();
        let lock = lock.clone();
        async move { (!c.exists::<_, bool>(&lock).await.unwrap()).then_some(()) }
    })
    .await;
}

async fn keys_of(redis: &RedisServer, pattern: &str) -> Option<String> {
    let mut c = redis.conn().await;
    let keys: Vec<String> = c.keys(pattern).await.unwrap();
    keys.into_iter().next()
}
