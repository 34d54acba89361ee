//! Integration tests: the real binary against a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn completed(r: &RedisServer, job_id: &str) -> i64 {
    let mut c = r.conn().await;
    c.hget::<_, _, Option<i64>>("bbl:test:completed", job_id)
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn started(r: &RedisServer) -> Vec<String> {
    let mut c = r.conn().await;
    c.lrange("bbl:test:started", 0, -1).await.unwrap()
}

async fn xlen(r: &RedisServer, topic: &str) -> u64 {
    let mut c = r.conn().await;
    c.xlen(format!("bbl:q:{topic}")).await.unwrap()
}

#[tokio::test]
async fn intake_refuses_bad_requests_with_json_errors() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(
        &redis.url(),
        &[("WORKER_MAX_BODY_BYTES", "4096")],
        &["--no-consumers"],
    );
    let body = br#"[{"id":"a1"}]"#;

    // no gateway headers at all
    let resp = client()
        .post(format!("{}/events", w.base))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "unauthorized");
    assert!(v["message"].as_str().is_some());

    // a correctly signed event with a second X-Event-Topic: refused, whatever the order
    let resp = gateway_request(
        &w.base,
        "vmh.beteiligte.update",
        "evt-dup",
        body,
        now_secs(),
        SECRET,
    )
    .header("x-event-topic", "calendar.sync.all")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("more than once"),
        "{v}"
    );

    // wrong secret, stale timestamp
    let (s, v) = post_event_at(
        &w.base,
        "vmh.beteiligte.update",
        body,
        now_secs(),
        "wrong-secret-0123456789",
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
    let (s, _) = post_event_at(
        &w.base,
        "vmh.beteiligte.update",
        body,
        now_secs() - 3600,
        SECRET,
    )
    .await;
    assert_eq!(s, 401);

    // topic and payload shape
    let cases: &[(&str, &[u8], &str)] = &[
        ("vmh.nothing.update", body, "unknown_topic"),
        ("calendar.sync.all", b"{}", "internal_topic"),
        (
            "vmh.beteiligte.update",
            b"{\"id\":\"a1\"}",
            "invalid_payload",
        ),
        (
            "vmh.beteiligte.update",
            b"[{\"name\":\"x\"}]",
            "invalid_payload",
        ),
        ("vmh.beteiligte.update", b"[]", "invalid_payload"),
        ("vmh.beteiligte.update", b"not json", "invalid_json"),
        (
            "leads.vermieterhelden.received",
            b"[1,2]",
            "invalid_payload",
        ),
    ];
    for (topic, body, code) in cases {
        let (s, v) = post_event(&w.base, topic, body).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some(*code)),
            "{topic} {}",
            String::from_utf8_lossy(body)
        );
    }

    // size limit
    let big = format!("[{{\"id\":\"a1\",\"pad\":\"{}\"}}]", "x".repeat(5000));
    let (s, v) = post_event(&w.base, "vmh.beteiligte.update", big.as_bytes()).await;
    assert_eq!((s, v["error"].as_str()), (413, Some("payload_too_large")));

    // unknown route and method are JSON too
    let resp = client()
        .get(format!("{}/nope", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "not_found"
    );

    // nothing was queued by any of this
    assert_eq!(xlen(&redis, "vmh.beteiligte.update").await, 0);
    let m = metrics_text(&w.base).await;
    assert!(
        metric(
            &m,
            "bitbylaw_worker_events_rejected_total",
            "reason=\"unauthorized\""
        ) >= 3.0,
        "{m}"
    );
}

#[tokio::test]
async fn espo_batches_split_and_coalesce_while_queued() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    let (s, v) = post_event(
        &w.base,
        "vmh.beteiligte.update",
        br#"[{"id":"a1","name":"A"},{"id":"b2"},{"id":"a1","x":1}]"#,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[0]["coalesced"], false);
    assert_eq!(jobs[1]["coalesced"], false);
    assert_eq!(
        jobs[2]["coalesced"], true,
        "duplicate id within one batch coalesces"
    );
    assert_eq!(jobs[2]["job_id"], jobs[0]["job_id"]);

    // a storm of updates for a1 collapses into the queued job
    for _ in 0..5 {
        let (s, v) = post_event(&w.base, "vmh.beteiligte.update", br#"[{"id":"a1"}]"#).await;
        assert_eq!(s, 202);
        assert_eq!(v["jobs"][0]["job_id"], jobs[0]["job_id"]);
        assert_eq!(v["jobs"][0]["coalesced"], true);
    }
    // other topics of the same entity are separate jobs
    let (_, v) = post_event(&w.base, "vmh.beteiligte.delete", br#"[{"id":"a1"}]"#).await;
    assert_eq!(v["jobs"][0]["coalesced"], false);
    assert_eq!(xlen(&redis, "vmh.beteiligte.update").await, 2);
    assert_eq!(xlen(&redis, "vmh.beteiligte.delete").await, 1);

    // leads and calls: one job each, duplicates (same body) coalesce on the dedup key
    let lead = br#"{"type":"lead.created","data":{"firstName":"Erika"}}"#;
    let (s1, v1) = post_event(&w.base, "leads.vermieterhelden.received", lead).await;
    let (s2, v2) = post_event(&w.base, "leads.vermieterhelden.received", lead).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(v1["jobs"][0]["job_id"], v2["jobs"][0]["job_id"]);
    let (s, _) = post_event(
        &w.base,
        "telephony.call.reported",
        br#"{"CallType":"Inbound","Number":"+49511"}"#,
    )
    .await;
    assert_eq!(s, 202);

    let m = metrics_text(&w.base).await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_jobs_enqueued_total",
            "topic=\"vmh.beteiligte.update\""
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_jobs_coalesced_total",
            "topic=\"vmh.beteiligte.update\""
        ),
        6.0
    );
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_events_received_total",
            "topic=\"vmh.beteiligte.update\""
        ),
        6.0
    );
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_queue_depth",
            "topic=\"vmh.beteiligte.update\",state=\"queued\""
        ),
        2.0
    );

    // unhandled topics stay queued and show in `queue stats`
    let (ok, out, err) = cli(&redis.url(), &["queue", "stats", "--json"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "vmh.beteiligte.update")
        .unwrap()
        .clone();
    assert_eq!(row["stream_len"], 2);
}

/// Issue 16 item 9: the shared batch rule (`bitbylaw_core::batch`, also applied by
/// webhook_guard) queues the usable entries and reports the rest, so one bad id no longer
/// loses its whole batch (EspoCRM does not retry a 400).
#[tokio::test]
async fn espo_batch_with_unusable_entries_queues_the_rest_and_reports_them() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    let (s, v) = post_event(
        &w.base,
        "vmh.beteiligte.update",
        br#"[{"id":"a1"},{"id":"a b"},{"name":"x"},7,{"id":"b2","name":"B"}]"#,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        v["skipped"],
        json!([
            {"index": 1, "error": "invalid_id"},
            {"index": 2, "error": "no_string_id"},
            {"index": 3, "error": "not_object"}
        ])
    );
    // the usable entities are queued in Redis, under their own ids
    assert_eq!(xlen(&redis, "vmh.beteiligte.update").await, 2);
    let mut c = redis.conn().await;
    for (entity, job) in [("a1", &v["jobs"][0]), ("b2", &v["jobs"][1])] {
        let queued: Option<String> = c
            .get(format!("bbl:coalesce:vmh.beteiligte.update:{entity}"))
            .await
            .unwrap();
        assert_eq!(queued.as_deref(), job["job_id"].as_str(), "{entity}");
    }
    let m = metrics_text(&w.base).await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_batch_entries_skipped_total",
            "topic=\"vmh.beteiligte.update\""
        ),
        3.0,
        "{m}"
    );

    // nothing usable, or more than the shared bound: refused whole, nothing queued
    let too_many = format!(
        "[{}]",
        (0..=bitbylaw_core::batch::MAX_BATCH_ENTRIES)
            .map(|i| format!(r#"{{"id":"e{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    for body in [&br#"[{"id":""},{"id":"a/b"}]"#[..], too_many.as_bytes()] {
        let (s, v) = post_event(&w.base, "vmh.beteiligte.create", body).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_payload")),
            "{v}"
        );
    }
    assert_eq!(xlen(&redis, "vmh.beteiligte.create").await, 0);
}

/// Issue 15: the entity link hooks' topics come from the core catalogue and are EspoCRM
/// batches at intake — one job per entity in the body.
#[tokio::test]
async fn entity_link_topics_are_accepted_as_espocrm_batches() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    for topic in ["vmh.entity.link", "vmh.entity.unlink", "vmh.entity.create"] {
        let (s, v) = post_event(&w.base, topic, br#"[{"id":"case1"},{"id":"case2"}]"#).await;
        assert_eq!(s, 202, "{topic}: {v}");
        assert_eq!(v["jobs"].as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(xlen(&redis, topic).await, 2);
    }
    let (s, _) = post_event(&w.base, "vmh.entity.relink", br#"[{"id":"case1"}]"#).await;
    assert!((400..500).contains(&s), "unknown topic refused: {s}");
}

#[tokio::test]
async fn concurrent_events_for_one_entity_make_one_job() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let base = w.base.clone();
        tasks.push(tokio::spawn(async move {
            post_event(
                &base,
                "vmh.document.update",
                format!(r#"[{{"id":"doc1","rev":{i}}}]"#).as_bytes(),
            )
            .await
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 202);
        ids.insert(v["jobs"][0]["job_id"].as_str().unwrap().to_string());
        fresh += usize::from(v["jobs"][0]["coalesced"] == false);
    }
    assert_eq!(ids.len(), 1, "one job for the entity");
    assert_eq!(fresh, 1, "exactly one event created it");
    assert_eq!(xlen(&redis, "vmh.document.update").await, 1);
}

#[tokio::test]
async fn content_keyed_events_are_deduplicated_even_after_completion() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    // no "id": the entity is the dedup key, like leads and 3CX call reports
    let body = br#"{"lead":"Erika","at":"2026-11-23T14:02:00Z"}"#;
    let (_, v) = post_event(&w.base, "test.record", body).await;
    let job = job_ids(&v)[0].clone();
    wait_for("job completed", WAIT, || async {
        (completed(&redis, &job).await == 1).then_some(())
    })
    .await;
    let (s, v) = post_event(
        &w.base,
        "test.record",
        br#"{ "at": "2026-11-23T14:02:00Z", "lead": "Erika" }"#,
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(
        v["jobs"][0]["job_id"],
        job.as_str(),
        "same canonical content → same job"
    );
    assert_eq!(v["jobs"][0]["coalesced"], true);
    let (_, v) = post_event(
        &w.base,
        "test.record",
        br#"{"lead":"Erika","at":"2026-11-23T14:03:00Z"}"#,
    )
    .await;
    assert_ne!(
        v["jobs"][0]["job_id"],
        job.as_str(),
        "different content → new job"
    );
    let third = job_ids(&v)[0].clone();
    wait_for("new content completed", WAIT, || async {
        (completed(&redis, &third).await == 1).then_some(())
    })
    .await;
    assert_eq!(completed(&redis, &job).await, 1);
}

#[tokio::test]
async fn a_started_job_lets_new_events_queue_a_new_job() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let (_, v) = post_event(&w.base, "test.record", br#"{"id":"e1","sleep_ms":1500}"#).await;
    let first = job_ids(&v)[0].clone();
    wait_for("first job started", WAIT, || async {
        started(&redis).await.contains(&first).then_some(())
    })
    .await;

    let (_, v2) = post_event(&w.base, "test.record", br#"{"id":"e1","n":2}"#).await;
    let (_, v3) = post_event(&w.base, "test.record", br#"{"id":"e1","n":3}"#).await;
    let second = job_ids(&v2)[0].clone();
    assert_ne!(
        second, first,
        "an event after the start must not be absorbed by the running job"
    );
    // v3 either coalesced into the queued second job, or the second had already started
    let third = job_ids(&v3)[0].clone();
    wait_for("all jobs completed", WAIT, || async {
        (completed(&redis, &first).await == 1
            && completed(&redis, &second).await == 1
            && completed(&redis, &third).await == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_replayed_gateway_event_is_answered_as_a_duplicate() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let body = br#"{"id":"r1","sleep_ms":200}"#;
    let at = now_secs();
    let send = || async {
        let resp = gateway_request(&w.base, "test.record", "evt-replay-1", body, at, SECRET)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().await.unwrap())
    };
    let (s, v) = send().await;
    assert_eq!(s, 202, "{v}");
    let first = job_ids(&v)[0].clone();
    wait_for("first job completed", WAIT, || async {
        (completed(&redis, &first).await == 1).then_some(())
    })
    .await;

    // The captured request, byte for byte, after its job ran: no second job.
    let (s, v) = send().await;
    assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")), "{v}");
    assert_eq!(v["jobs"], json!([]));
    assert_eq!(xlen(&redis, "test.record").await, 0, "nothing new queued");
    assert_eq!(started(&redis).await, vec![first.clone()]);

    // The mark expires with the signature (tolerance 300 s by default, received_at = now).
    let mut c = redis.conn().await;
    let ttl: i64 = c.ttl("bbl:seen:test.record:evt-replay-1").await.unwrap();
    assert!((1..=300).contains(&ttl), "ttl {ttl}");
    // Another event id with the same content is a new event.
    let (s, v) = post_event(&w.base, "test.record", body).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        metric(
            &metrics_text(&w.base).await,
            "bitbylaw_worker_events_rejected_total",
            "reason=\"replayed_event\""
        ),
        1.0
    );
}

#[tokio::test]
async fn per_topic_concurrency_is_capped() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[("WORKER_CONCURRENCY", "2")], &[]);
    let mut ids = Vec::new();
    for i in 0..8 {
        let (s, v) = post_event(
            &w.base,
            "test.record",
            format!(r#"{{"id":"c{i}","sleep_ms":300,"track":true}}"#).as_bytes(),
        )
        .await;
        assert_eq!(s, 202);
        ids.extend(job_ids(&v));
    }
    for id in &ids {
        let (id, redis) = (id.clone(), &redis);
        wait_for("job completed", WAIT, move || {
            let id = id.clone();
            async move { (completed(redis, &id).await == 1).then_some(()) }
        })
        .await;
    }
    let mut c = redis.conn().await;
    let max: i64 = c.get("bbl:test:max_running").await.unwrap();
    assert_eq!(max, 2, "at most 2 at once, and the limit is actually used");
}

#[tokio::test]
async fn calendar_trigger_enqueues_jobs_that_wait_for_their_handler() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let c = client();
    let r = c
        .post(format!("{}/calendar/sync", w.base))
        .json(&json!({"kuerzel": "ABC", "full_content": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["topic"], "calendar.sync.employee");
    let r = c
        .post(format!("{}/calendar/sync", w.base))
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["topic"],
        "calendar.sync.all"
    );
    let r = c
        .post(format!("{}/calendar/sync", w.base))
        .json(&json!({"kuerzel": "A B"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_kuerzel"
    );
    let r = c
        .post(format!("{}/calendar/sync", w.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // the CLI trigger coalesces with the queued HTTP one
    let (ok, out, err) = cli(&redis.url(), &["sync", "calendar", "--kuerzel", "ABC"]);
    assert!(ok, "{err}");
    assert!(out.contains("(coalesced)"), "{out}");

    // no handler: the jobs stay queued (the consumers are running), payload passed through
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(xlen(&redis, "calendar.sync.employee").await, 1);
    assert_eq!(xlen(&redis, "calendar.sync.all").await, 1);
    let mut conn = redis.conn().await;
    let entries: redis::streams::StreamRangeReply = conn
        .xrange_all("bbl:q:calendar.sync.employee")
        .await
        .unwrap();
    let raw: String = redis::from_redis_value(&entries.ids[0].map["job"]).unwrap();
    let job: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(job["payload"]["kuerzel"], "ABC");
    assert_eq!(job["payload"]["full_content"], false);
}

#[tokio::test]
async fn admin_token_guards_the_calendar_trigger() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(
        &redis.url(),
        &[("WORKER_ADMIN_TOKEN", "tok-123")],
        &["--no-consumers"],
    );
    let c = client();
    let r = c
        .post(format!("{}/calendar/sync", w.base))
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    for wrong in ["tok-12", "tok-1234", "tok-124", ""] {
        let r = c
            .post(format!("{}/calendar/sync", w.base))
            .bearer_auth(wrong)
            .json(&json!({"kuerzel": "ALL"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{wrong:?}");
    }
    let r = c
        .post(format!("{}/calendar/sync", w.base))
        .bearer_auth("tok-123")
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test]
async fn redis_down_means_503_with_retry_after_and_not_ready() {
    let port = free_port(); // nothing listens here
    let w = Worker::spawn(&format!("redis://127.0.0.1:{port}/"), &[], &[]);
    let body = br#"[{"id":"a1"}]"#;
    let event_id = "evt-1";
    let at = now_secs();
    let sig = bitbylaw_worker::intake::signature::sign_gateway_event(
        SECRET.as_bytes(),
        "vmh.beteiligte.update",
        event_id,
        at,
        body,
    )
    .unwrap();
    let resp = client()
        .post(format!("{}/events", w.base))
        .header("x-event-topic", "vmh.beteiligte.update")
        .header("x-event-id", event_id)
        .header("x-dedup-key", sha256_hex(body))
        .header("x-received-at", at.to_string())
        .header("x-gateway-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "unavailable"
    );

    let r = client()
        .get(format!("{}/ready", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "not_ready"
    );
    let r = client()
        .get(format!("{}/health", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn ready_when_redis_and_consumers_run() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    wait_for("ready", WAIT, || async {
        let r = client()
            .get(format!("{}/ready", w.base))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
}

/// A probe that arrives the moment the port opens must not hear "ready" from an instance whose
/// consumers are not even registered yet (it once answered ready with 0 of 0 consumers).
#[tokio::test]
async fn the_first_ready_answer_already_counts_the_consumers_it_waits_for() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let first = ready_json(&w.base).await;
    let expected = first["checks"]["consumers"]["expected"].as_u64().unwrap();
    assert!(expected > 0, "{first}");
    let running = first["checks"]["consumers"]["running"].as_u64().unwrap();
    if running < expected {
        assert_eq!(first["error"], "not_ready", "{first}");
    }
}

#[tokio::test]
async fn sigkill_mid_job_redelivers_and_completes_once() {
    let redis = RedisServer::start(false);
    let mut a = Worker::spawn(&redis.url(), &[], &[]);
    let (s, v) = post_event(&a.base, "test.record", br#"{"id":"k1","sleep_ms":2500}"#).await;
    assert_eq!(s, 202);
    let job = job_ids(&v)[0].clone();
    wait_for("job started on A", WAIT, || async {
        started(&redis).await.contains(&job).then_some(())
    })
    .await;
    a.kill9();
    assert_eq!(completed(&redis, &job).await, 0);

    let b = Worker::spawn(&redis.url(), &[], &[]);
    wait_for("job completed on B", WAIT, || async {
        (completed(&redis, &job).await == 1).then_some(())
    })
    .await;
    wait_for("stream drained", WAIT, || async {
        (xlen(&redis, "test.record").await == 0).then_some(())
    })
    .await;
    assert_eq!(
        started(&redis).await.iter().filter(|j| **j == job).count(),
        2,
        "started on A, redelivered to B"
    );
    assert_eq!(completed(&redis, &job).await, 1, "completed exactly once");
    let m = metrics_text(&b.base).await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_jobs_reclaimed_total",
            "topic=\"test.record\""
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_jobs_processed_total",
            "topic=\"test.record\""
        ),
        1.0
    );
}

#[tokio::test]
async fn a_job_that_keeps_killing_workers_is_dead_lettered() {
    let redis = RedisServer::start(false);
    let env = [("WORKER_MAX_DELIVERIES", "1")];
    let mut a = Worker::spawn(&redis.url(), &env, &[]);
    let (_, v) = post_event(
        &a.base,
        "test.record",
        br#"{"id":"poison","sleep_ms":5000}"#,
    )
    .await;
    let job = job_ids(&v)[0].clone();
    wait_for("job started on A", WAIT, || async {
        started(&redis).await.contains(&job).then_some(())
    })
    .await;
    a.kill9();
    let _b = Worker::spawn(&redis.url(), &env, &[]);
    let dead = wait_for("poison job dead-lettered", WAIT, || async {
        let (_, out, _) = cli(&redis.url(), &["dlq", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        (list.as_array()?.len() == 1).then_some(list)
    })
    .await;
    assert_eq!(dead[0]["job"]["id"], job);
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("delivered 2 times"),
        "{dead}"
    );
    assert_eq!(started(&redis).await.len(), 1, "not run a second time");
    assert_eq!(xlen(&redis, "test.record").await, 0);
}

#[tokio::test]
async fn redis_restart_with_aof_loses_nothing() {
    let mut redis = RedisServer::start(true);
    let mut intake = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    let mut ids = Vec::new();
    for i in 0..20 {
        let (s, v) = post_event(
            &intake.base,
            "test.record",
            format!(r#"{{"id":"aof{i}"}}"#).as_bytes(),
        )
        .await;
        assert_eq!(s, 202);
        ids.extend(job_ids(&v));
    }
    intake.kill9();
    redis.restart(); // SIGKILL + restart: only the AOF brings the jobs back
    assert_eq!(xlen(&redis, "test.record").await, 20);
    let _consumer = Worker::spawn(&redis.url(), &[], &[]);
    for id in &ids {
        let id = id.clone();
        wait_for("job completed after restart", WAIT, || {
            let id = id.clone();
            let redis = &redis;
            async move { (completed(redis, &id).await == 1).then_some(()) }
        })
        .await;
    }
}

#[tokio::test]
async fn intake_survives_a_redis_restart() {
    let mut redis = RedisServer::start(true);
    let w = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    let (s, _) = post_event(&w.base, "test.record", br#"{"id":"r1"}"#).await;
    assert_eq!(s, 202);
    redis.restart();
    // the shared connection reconnects; the sender may see a 503 meanwhile and retries
    wait_for("intake accepts again", WAIT, || async {
        let (s, _) = post_event(&w.base, "test.record", br#"{"id":"r2"}"#).await;
        (s == 202).then_some(())
    })
    .await;
    assert_eq!(xlen(&redis, "test.record").await, 2);
}

#[tokio::test]
async fn two_workers_share_the_load_and_a_schedule_fires_once_per_tick() {
    let redis = RedisServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("worker.toml");
    std::fs::write(
        &cfg,
        r#"
[[schedules]]
name = "tick"
cron = "* * * * * *"
topic = "test.record"
"#,
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let env = [
        ("WORKER_ROLES", "intake,consumers,schedules"),
        ("WORKER_CONCURRENCY", "2"),
        ("WORKER_CONFIG", cfg.as_str()),
    ];
    let a = Worker::spawn(&redis.url(), &env, &[]);
    let b = Worker::spawn(&redis.url(), &env, &[]);
    let mut ids = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let (s, v) = post_event(
            base,
            "test.record",
            format!(r#"{{"id":"s{i}","sleep_ms":150}}"#).as_bytes(),
        )
        .await;
        assert_eq!(s, 202);
        ids.extend(job_ids(&v));
    }
    for id in &ids {
        let id = id.clone();
        let redis = &redis;
        wait_for("shared job completed", WAIT, move || {
            let id = id.clone();
            async move { (completed(redis, &id).await == 1).then_some(()) }
        })
        .await;
    }
    let pa = metric(
        &metrics_text(&a.base).await,
        "bitbylaw_worker_jobs_processed_total",
        "topic=\"test.record\"",
    );
    let pb = metric(
        &metrics_text(&b.base).await,
        "bitbylaw_worker_jobs_processed_total",
        "topic=\"test.record\"",
    );
    assert!(
        pa > 0.0 && pb > 0.0,
        "both workers must process jobs: a={pa} b={pb}"
    );

    let ticks: Vec<String> = wait_for("three schedule ticks", WAIT, || async {
        let mut c = redis.conn().await;
        let t: Vec<String> = c.lrange("bbl:test:ticks", 0, -1).await.unwrap();
        (t.len() >= 3).then_some(t)
    })
    .await;
    let unique: HashSet<&String> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    let fa = metric(
        &metrics_text(&a.base).await,
        "bitbylaw_worker_schedule_fired_total",
        "schedule=\"tick\"",
    );
    let fb = metric(
        &metrics_text(&b.base).await,
        "bitbylaw_worker_schedule_fired_total",
        "schedule=\"tick\"",
    );
    let mut c = redis.conn().await;
    let claimed: Vec<String> = c.keys("bbl:schedule:tick:*").await.unwrap();
    assert_eq!(
        (fa + fb) as usize,
        claimed.len(),
        "every claimed tick fired exactly one job across both workers"
    );
}

#[tokio::test]
async fn retries_back_off_then_dead_letter_then_replay() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let mut c = redis.conn().await;
    let _: () = c.set("bbl:test:fail:d1", 1).await.unwrap();
    let (_, v) = post_event(&w.base, "test.record", br#"{"id":"d1"}"#).await;
    let job = job_ids(&v)[0].clone();

    let dead = wait_for("job dead-lettered", WAIT, || async {
        let (ok, out, _) = cli(&redis.url(), &["dlq", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && list.as_array()?.len() == 1).then_some(list)
    })
    .await;
    assert_eq!(dead[0]["job"]["id"], job);
    assert_eq!(dead[0]["job"]["attempts"], 3);
    assert!(
        dead[0]["error"].as_str().unwrap().contains("told to fail"),
        "{dead}"
    );
    assert_eq!(
        started(&redis).await.len(),
        3,
        "three attempts (max_attempts = 3)"
    );

    let m = metrics_text(&w.base).await;
    let t = "topic=\"test.record\"";
    assert_eq!(metric(&m, "bitbylaw_worker_jobs_failed_total", t), 3.0);
    assert_eq!(metric(&m, "bitbylaw_worker_jobs_retried_total", t), 2.0);
    assert_eq!(
        metric(&m, "bitbylaw_worker_jobs_dead_lettered_total", t),
        1.0
    );
    assert_eq!(metric(&m, "bitbylaw_worker_jobs_processed_total", t), 0.0);
    assert_eq!(metric(&m, "bitbylaw_worker_dlq_depth", ""), 1.0);
    assert_eq!(
        metric(&m, "bitbylaw_worker_handler_duration_seconds_count", t),
        3.0,
        "one observation per attempt"
    );
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_queue_depth",
            "topic=\"test.record\",state=\"delayed\""
        ),
        0.0
    );

    // fix the cause, replay: the job completes and the DLQ is empty
    let _: () = c.del("bbl:test:fail:d1").await.unwrap();
    let (ok, out, err) = cli(&redis.url(), &["dlq", "replay", "--all"]);
    assert!(ok && out.contains("replayed 1"), "{out}{err}");
    wait_for("replayed job completed", WAIT, || async {
        (completed(&redis, &job).await == 1).then_some(())
    })
    .await;
    let (_, out, _) = cli(&redis.url(), &["dlq", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!([])
    );

    // permanent failures skip the retries
    let (_, v) = post_event(
        &w.base,
        "test.record",
        br#"{"id":"p1","fail_permanent":true}"#,
    )
    .await;
    let pjob = job_ids(&v)[0].clone();
    let dead = wait_for("permanent failure dead-lettered", WAIT, || async {
        let (_, out, _) = cli(&redis.url(), &["dlq", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        (list.as_array()?.len() == 1).then_some(list)
    })
    .await;
    assert_eq!(dead[0]["job"]["id"], pjob);
    assert_eq!(dead[0]["job"]["attempts"], 1);
    let (ok, out, _) = cli(&redis.url(), &["dlq", "purge", "--yes"]);
    assert!(ok && out.contains("purged 1"), "{out}");
    let (ok, _, _) = cli(&redis.url(), &["dlq", "purge"]);
    assert!(!ok, "purge without --yes must refuse");
}

#[tokio::test]
async fn busy_lock_delays_the_job_without_failing_it() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let mut c = redis.conn().await;
    let key = "bbl:lock:test_record:test:L1";
    let _: () = c.set_ex(key, "someone-else", 60).await.unwrap();
    let (ok, out, _) = cli(&redis.url(), &["locks", "list"]);
    assert!(
        ok && out.contains(key) && out.contains("someone-else"),
        "{out}"
    );

    let (_, v) = post_event(&w.base, "test.record", br#"{"id":"L1","lock":true}"#).await;
    let job = job_ids(&v)[0].clone();
    wait_for("lock contention seen", WAIT, || async {
        let m = metrics_text(&w.base).await;
        (metric(
            &m,
            "bitbylaw_worker_lock_contention_total",
            "topic=\"test.record\"",
        ) >= 2.0)
            .then_some(())
    })
    .await;
    assert_eq!(completed(&redis, &job).await, 0);
    let (ok, out, _) = cli(&redis.url(), &["locks", "clear", "test_record:test:L1"]);
    assert!(ok && out.contains("cleared 1"), "{out}");
    wait_for("job completed after lock freed", WAIT, || async {
        (completed(&redis, &job).await == 1).then_some(())
    })
    .await;
    let m = metrics_text(&w.base).await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_jobs_failed_total",
            "topic=\"test.record\""
        ),
        0.0
    );
    // our own lock was released safely after the job
    let exists: bool = c.exists(key).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_jobs_then_exits() {
    let redis = RedisServer::start(false);
    let mut w = Worker::spawn(&redis.url(), &[("WORKER_CONCURRENCY", "1")], &[]);
    let (_, v) = post_event(&w.base, "test.record", br#"{"id":"g1","sleep_ms":1500}"#).await;
    let job = job_ids(&v)[0].clone();
    let (_, v) = post_event(&w.base, "test.record", br#"{"id":"g2"}"#).await;
    let queued = job_ids(&v)[0].clone();
    wait_for("job started", WAIT, || async {
        started(&redis).await.contains(&job).then_some(())
    })
    .await;
    w.sigterm();
    let status = w
        .wait_exit(Duration::from_secs(20))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        completed(&redis, &job).await,
        1,
        "in-flight job finished before exit"
    );
    assert!(
        !started(&redis).await.contains(&queued),
        "no new job taken after SIGTERM"
    );
    assert_eq!(
        xlen(&redis, "test.record").await,
        1,
        "the unstarted job is still queued"
    );
}

#[tokio::test]
async fn sigterm_deadline_leaves_unfinished_jobs_unacked() {
    let redis = RedisServer::start(false);
    let mut w = Worker::spawn(&redis.url(), &[("WORKER_SHUTDOWN_DEADLINE_MS", "200")], &[]);
    let (_, v) = post_event(&w.base, "test.record", br#"{"id":"u1","sleep_ms":5000}"#).await;
    let job = job_ids(&v)[0].clone();
    wait_for("job started", WAIT, || async {
        started(&redis).await.contains(&job).then_some(())
    })
    .await;
    w.sigterm();
    assert!(w
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    assert_eq!(completed(&redis, &job).await, 0);
    assert_eq!(
        xlen(&redis, "test.record").await,
        1,
        "unfinished job stays in the stream, pending"
    );
    let _b = Worker::spawn(&redis.url(), &[], &[]);
    wait_for("abandoned job reclaimed and completed", WAIT, || async {
        (completed(&redis, &job).await == 1).then_some(())
    })
    .await;
}

#[test]
fn config_check_lists_every_problem() {
    let out = std::process::Command::new(bin())
        .env_clear()
        .env("WORKER_LISTEN_ADDR", "not-an-addr")
        .env("REDIS_URL", "ftp://x")
        .env("WORKER_ROLES", "intake,dancing")
        .env("ADVOWARE_PATH_TERMIN_GET", "api/v1/advonet/Termine")
        .env(
            "ADVOWARE_PATH_TERMINE_LIST",
            "http://x/Termine?kuerzel={kuerzel}&from={from}&to={to}",
        )
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "WORKER_LISTEN_ADDR",
        "REDIS_URL",
        "dancing",
        "GATEWAY_SIGNING_SECRET",
        "ADVOWARE_PATH_TERMIN_GET: must contain {frnr}",
        "ADVOWARE_PATH_TERMINE_LIST: must be a path relative to the base URL",
    ] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }

    // A rotation's previous secret verifies as fully as the current one: same minimum length.
    let out = std::process::Command::new(bin())
        .env_clear()
        .env("GATEWAY_SIGNING_SECRET", "a-very-secret-value-123")
        .env("GATEWAY_SIGNING_SECRET_PREVIOUS", "short-old")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("short-old"), "{err}");
    for needle in ["GATEWAY_SIGNING_SECRET_PREVIOUS", "16 bytes"] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }

    let out = std::process::Command::new(bin())
        .env_clear()
        .env("GATEWAY_SIGNING_SECRET", "a-very-secret-value-123")
        .env("ADVOWARE_PASSWORD", "hunter2-password")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("a-very-secret-value-123") && !text.contains("hunter2-password"),
        "{text}"
    );
}

#[test]
fn example_config_is_valid() {
    let path = repo_root().join("worker/config.example.toml");
    let out = std::process::Command::new(bin())
        .env_clear()
        .env("GATEWAY_SIGNING_SECRET", "example-secret-0123456789")
        .args(["--config", path.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `config check` warns (stderr, exit 0) when the manual endpoints have no bearer token, says
/// they are closed beyond loopback, and never prints a configured token.
#[test]
fn config_check_warns_about_unauthenticated_manual_endpoints() {
    // stdout and stderr of a successful `config check`.
    let check = |pairs: &[(&str, &str)]| {
        let out = std::process::Command::new(bin())
            .env_clear()
            .env("GATEWAY_SIGNING_SECRET", SECRET)
            .envs(pairs.iter().copied())
            .args(["config", "check"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let err = check(&[("WORKER_LISTEN_ADDR", "0.0.0.0:8080")]);
    assert!(
        err.contains("warning: WORKER_ADMIN_TOKEN is unset") && err.contains("admin_token_unset"),
        "{err}"
    );
    let err = check(&[("WORKER_LISTEN_ADDR", "127.0.0.1:8080")]);
    assert!(err.contains("open to every local process"), "{err}");
    let all = check(&[
        ("WORKER_LISTEN_ADDR", "0.0.0.0:8080"),
        ("WORKER_ADMIN_TOKEN", "admin-tok-0123456789"),
    ]);
    assert!(!all.contains("WORKER_ADMIN_TOKEN is unset"), "{all}");
    assert!(
        !all.contains("admin-tok-0123456789"),
        "token printed: {all}"
    );
}

/// `serve` logs the unauthenticated manual endpoints at WARN (never a token), and stays quiet
/// about them once `WORKER_ADMIN_TOKEN` is set.
#[tokio::test]
async fn serve_warns_when_the_manual_endpoints_have_no_token() {
    let redis = RedisServer::start(false);
    let open = Worker::spawn(&redis.url(), &[], &["--no-consumers"]);
    let line = wait_for("the admin-token warning", WAIT, || async {
        open.log_text()
            .lines()
            .find(|l| l.contains("WORKER_ADMIN_TOKEN is unset"))
            .map(str::to_owned)
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "WARN", "{line}");
    let guarded = Worker::spawn(
        &redis.url(),
        &[("WORKER_ADMIN_TOKEN", "tok-0123456789")],
        &["--no-consumers"],
    );
    wait_for("the guarded worker's start-up line", WAIT, || async {
        guarded
            .log_text()
            .contains("worker listening")
            .then_some(())
    })
    .await;
    let log = guarded.log_text();
    assert!(!log.contains("WORKER_ADMIN_TOKEN is unset"), "{log}");
    assert!(!log.contains("tok-0123456789"), "{log}");
}
