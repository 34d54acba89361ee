//! The Beteiligte sync through the real worker binary and queue: the fake EspoCRM sends its real
//! webhooks (signed JSON arrays) to a relay standing in for the gateway, which forwards them to
//! `/events` signed like the edge filter. Covers the webhook storm, a failure between the
//! Advoware create and the write-back, bad input, zero writes for our own echo, delete, the
//! 15-minute check and the `beteiligte` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::process::Command;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake, BETEILIGTE};
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::sync::beteiligte::{
    advoware_to_stammdaten, espo_to_stammdaten, AdvowareBeteiligter, EspoBeteiligte,
};
use common::{
    bin, gateway_request, metric, metrics_text, now_secs, wait_for, RedisServer, Worker, SECRET,
};
use redis::AsyncCommands;
use serde_json::{json, Value};

const ENTITY: &str = "CBeteiligte";
const NOTIFY_USER: &str = "admin1";

struct Env {
    redis: RedisServer,
    advoware: AdvowareFake,
    espo: EspoCrmFake,
    vars: Vec<(String, String)>,
}

async fn env() -> Env {
    let redis = RedisServer::start(false);
    let advoware = advoware::start(AdvowareConfig::default()).await.unwrap();
    let espo = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let mut vars = common::advoware_env(&advoware);
    vars.extend(
        [
            ("ESPOCRM_API_BASE_URL", espo.api_url()),
            ("ESPOCRM_API_KEY", espo.config().api_key.clone()),
            ("BETEILIGTE_NOTIFY_USER_ID", NOTIFY_USER.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v)),
    );
    Env {
        redis,
        advoware,
        espo,
        vars,
    }
}

/// Stands in for the gateway: `POST /{topic}` with EspoCRM's body → signed `POST /events`.
async fn relay(State(worker): State<String>, Path(topic): Path<String>, body: Bytes) -> StatusCode {
    let event_id = format!("evt-{}", uuid::Uuid::new_v4().simple());
    match gateway_request(&worker, &topic, &event_id, &body, now_secs(), SECRET)
        .send()
        .await
    {
        Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

struct Running {
    worker: Worker,
    _relay: tokio::task::JoinHandle<()>,
}

impl Env {
    /// The worker with the Beteiligte sync configured, and EspoCRM's webhooks pointed at it.
    async fn start(&self, extra: &[(&str, &str)]) -> Running {
        let mut o: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        o.extend_from_slice(extra);
        let worker = Worker::spawn(&self.redis.url(), &o, &[]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/{topic}", post(relay))
            .with_state(worker.base.clone());
        let relay = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        for action in ["create", "update", "delete"] {
            self.espo.add_webhook(
                &format!("{ENTITY}.{action}"),
                &format!("{relay_url}/vmh.beteiligte.{action}"),
            );
        }
        wait_for(
            "Beteiligte clients ready",
            Duration::from_secs(20),
            || async {
                let r = common::client()
                    .get(format!("{}/ready", worker.base))
                    .send()
                    .await
                    .ok()?;
                let v: Value = r.json().await.ok()?;
                (v["checks"]["beteiligte_clients"] == "ready").then_some(())
            },
        )
        .await;
        Running {
            worker,
            _relay: relay,
        }
    }

    fn person(&self, extra: Value) -> String {
        let mut record = json!({"firstName": "Erika", "lastName": "Mustermann",
            "salutationName": "Ms.", "dateOfBirth": "1964-08-12", "syncStatus": "pending_sync"});
        if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        let stored = self.espo.insert(ENTITY, record).unwrap();
        stored["id"].as_str().unwrap().to_owned()
    }

    fn record(&self, id: &str) -> Value {
        self.espo.get(ENTITY, id).unwrap()
    }

    fn advoware_creates(&self) -> usize {
        self.advoware
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Beteiligte"))
            .count()
    }

    /// No job queued, in flight or delayed on any Beteiligte topic.
    async fn idle(&self) -> bool {
        let mut c = self.redis.conn().await;
        for t in ["create", "update", "delete", "sync_check"] {
            let n: u64 = c.xlen(format!("bbl:q:vmh.beteiligte.{t}")).await.unwrap();
            if n > 0 {
                return false;
            }
        }
        let delayed: u64 = c.zcard("bbl:delayed").await.unwrap();
        delayed == 0
    }

    async fn wait_idle(&self) {
        wait_for("queue idle", Duration::from_secs(30), || async {
            self.idle().await.then_some(())
        })
        .await;
    }

    /// Delivers EspoCRM's webhooks and lets the worker finish, until no event is left; returns
    /// the number of delivery rounds. A ping-pong would never end: bounded at 6.
    async fn settle(&self) -> usize {
        let mut rounds = 0;
        loop {
            self.wait_idle().await;
            let deliveries = self.espo.flush_webhooks().await;
            if deliveries.is_empty() {
                return rounds;
            }
            assert!(
                deliveries.iter().all(|d| d.status == Some(202)),
                "relay refused: {deliveries:?}"
            );
            rounds += 1;
            assert!(rounds <= 6, "webhooks keep coming: ping-pong");
        }
    }

    /// Both sides map to the same master data; EspoCRM is `clean` and linked.
    fn assert_equal_both_sides(&self, id: &str) -> i64 {
        let espo = self.record(id);
        assert_eq!(espo["syncStatus"], "clean", "{espo}");
        let bet_nr = espo["betnr"].as_i64().expect("betnr written back");
        let aw = self.advoware.beteiligter(bet_nr).expect("in Advoware");
        let e: EspoBeteiligte = serde_json::from_value(espo.clone()).unwrap();
        let a: AdvowareBeteiligter = serde_json::from_value(aw.clone()).unwrap();
        assert_eq!(
            espo_to_stammdaten(&e).unwrap(),
            advoware_to_stammdaten(&a).unwrap(),
            "EspoCRM {espo}\nAdvoware {aw}"
        );
        assert_eq!(espo["advowareRowId"], aw["rowId"]);
        bet_nr
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("REDIS_URL", self.redis.url())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WORKER_LOG_LEVEL", "warn")
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(args);
        cmd
    }

    /// The CLI with the same configuration: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
}

async fn post_signed(base: &str, topic: &str, body: &Value) -> u16 {
    let event_id = format!("evt-{}", uuid::Uuid::new_v4().simple());
    gateway_request(
        base,
        topic,
        &event_id,
        body.to_string().as_bytes(),
        now_secs(),
        SECRET,
    )
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

async fn runs(w: &Worker, outcome: &str) -> f64 {
    metric(
        &metrics_text(&w.base).await,
        "bitbylaw_worker_beteiligte_sync_runs_total",
        &format!("outcome=\"{outcome}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_storm_creates_exactly_one_advoware_record() {
    let e = env().await;
    let run = e.start(&[]).await;
    let id = e.person(json!({}));
    let full = json!([e.record(&id)]);
    let mut tasks = Vec::new();
    // 10 identical create events …
    for _ in 0..10 {
        let (base, body) = (run.worker.base.clone(), full.clone());
        tasks.push(tokio::spawn(async move {
            post_signed(&base, "vmh.beteiligte.create", &body).await
        }));
    }
    // … and 10 interleaved create/update events, with edits in the CRM among them.
    for i in 0..10 {
        if i % 3 == 0 {
            e.espo
                .edit(ENTITY, &id, json!({"firstName": format!("Erika{i}")}));
        }
        let (topic, body) = if i % 2 == 0 {
            ("vmh.beteiligte.create", json!([e.record(&id)]))
        } else {
            (
                "vmh.beteiligte.update",
                json!([{"id": id, "firstName": e.record(&id)["firstName"]}]),
            )
        };
        let base = run.worker.base.clone();
        tasks.push(tokio::spawn(async move {
            post_signed(&base, topic, &body).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    e.settle().await;
    assert_eq!(e.advoware_creates(), 1, "exactly one Advoware create");
    e.assert_equal_both_sides(&id);
    assert_eq!(
        e.record(&id)["firstName"],
        "Erika9",
        "the last edit reached both sides"
    );
    assert!(runs(&run.worker, "created").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_back_after_the_advoware_create_is_resumed_without_a_second_record() {
    let e = env().await;
    // A record whose earlier run wrote `syncing` and died: the next EspoCRM write of this run is
    // the write-back after the Advoware POST, and it fails once.
    let run = e.start(&[]).await;
    let id = e.person(json!({"syncStatus": "syncing"}));
    e.espo
        .controls()
        .fail_next_method_on("PUT", &format!("/api/v1/{ENTITY}/{id}"), 1, 503, None);
    e.settle().await;
    assert_eq!(
        e.advoware_creates(),
        1,
        "the retry adopted the first create"
    );
    e.assert_equal_both_sides(&id);
    assert!(runs(&run.worker, "retryable").await >= 1.0);
    assert!(runs(&run.worker, "created").await >= 1.0);
    let mut c = e.redis.conn().await;
    let created: Option<String> = c.hget(format!("bbl:bet:{id}"), "created").await.unwrap();
    assert_eq!(
        created, None,
        "the create intent is dropped once written back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_write_back_webhooks_cause_no_writes() {
    let e = env().await;
    let run = e.start(&[]).await;
    let id = e.person(json!({}));
    // The create event → Advoware create; `syncing` and the write-back in EspoCRM. EspoCRM then
    // sends update webhooks for those two writes (in the same or the next delivery round).
    let rounds = e.settle().await;
    assert!(
        rounds <= 2,
        "create, then one round of echoes at most: {rounds}"
    );
    assert_eq!(e.advoware.writes(BETEILIGTE), 1, "only the create");
    assert_eq!(
        e.espo.writes(ENTITY),
        2,
        "only `syncing` and the write-back; the echo runs wrote nothing"
    );
    assert!(e.espo.pending_events(&e.espo.webhooks()[1].id).is_empty());
    e.assert_equal_both_sides(&id);
    assert!(runs(&run.worker, "no_change").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_failed_with_the_reason_and_in_the_dlq() {
    let e = env().await;
    // A person without last name cannot be a Beteiligter in Advoware.
    let run = e.start(&[]).await;
    let id = e.person(json!({"lastName": null}));
    e.settle().await;
    let rec = e.record(&id);
    assert_eq!(rec["syncStatus"], "failed", "{rec}");
    assert!(
        rec["syncErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("lastName")),
        "{rec}"
    );
    assert_eq!(
        rec["syncRetryCount"], 1,
        "our own failure write is no new attempt"
    );
    assert_eq!(e.advoware.writes(BETEILIGTE), 0, "nothing written half");
    let mut c = e.redis.conn().await;
    let dead: u64 = c.xlen("bbl:dlq").await.unwrap();
    assert_eq!(dead, 1);
    assert!(runs(&run.worker, "invalid_data").await >= 1.0);
    assert_eq!(
        runs(&run.worker, "skipped").await,
        1.0,
        "the echo was skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_in_espocrm_unlinks_and_notifies_but_keeps_the_advoware_record() {
    let e = env().await;
    let run = e.start(&[]).await;
    let id = e.person(json!({}));
    e.settle().await;
    let bet_nr = e.assert_equal_both_sides(&id);
    let aw_writes = e.advoware.writes(BETEILIGTE);
    let sent = |m: &str| {
        metric(
            m,
            "bitbylaw_worker_notifications_sent_total",
            "related=\"CBeteiligte\"",
        )
    };
    assert_eq!(sent(&metrics_text(&run.worker.base).await), 0.0);
    e.espo.remove(ENTITY, &id);
    e.settle().await;
    assert!(
        e.advoware.beteiligter(bet_nr).is_some(),
        "never deleted in Advoware"
    );
    assert_eq!(e.advoware.writes(BETEILIGTE), aw_writes);
    let mut c = e.redis.conn().await;
    let exists: bool = c.exists(format!("bbl:bet:{id}")).await.unwrap();
    assert!(!exists, "the link is dropped");
    let notes = e.espo.all("Notification");
    assert!(
        notes.iter().any(|n| n["userId"] == NOTIFY_USER
            && n["relatedId"] == id.as_str()
            && n["message"]
                .as_str()
                .is_some_and(|m| m.contains(&bet_nr.to_string()))),
        "{notes:?}"
    );
    // Counted for the operator: something a person has to look at.
    assert_eq!(sent(&metrics_text(&run.worker.base).await), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_check_picks_up_unclean_stale_and_resets_permanent_failures() {
    let e = env().await;
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(30);
    let espo_time = long_ago.format("%Y-%m-%d %H:%M:%S").to_string();
    // Created before any webhook was registered: only the check can find them.
    let pending = e.person(json!({"lastName": "Pending"}));
    let dirty = e.person(json!({"lastName": "Dirty", "syncStatus": "dirty"}));
    // 30 h ago (EspoCRM's clock): a permanent failure, and a clean record synced then, whose
    // Advoware side was edited since (Advoware sends no webhooks).
    e.espo.clock().set_now(long_ago);
    let stuck = e.person(
        json!({"lastName": "Stuck", "syncStatus": "permanently_failed",
        "syncRetryCount": 5, "syncErrorMessage": "Advoware down"}),
    );
    // A run that died after writing `syncing`, its job long gone.
    let abandoned = e.person(json!({"lastName": "Abandoned", "syncStatus": "syncing"}));
    let bet_nr = e
        .advoware
        .insert_beteiligter(json!({"name": "Alt", "vorname": "Anna"}));
    let row_id = e.advoware.beteiligter(bet_nr).unwrap()["rowId"].clone();
    let stale = e.person(
        json!({"firstName": "Anna", "lastName": "Alt", "salutationName": null,
        "dateOfBirth": null, "betnr": bet_nr, "syncStatus": "clean", "advowareRowId": row_id,
        "advowareLastSync": espo_time}),
    );
    // … and one whose Advoware side is unchanged.
    let same_nr = e
        .advoware
        .insert_beteiligter(json!({"name": "Gleich", "vorname": "Gerd"}));
    let same_row = e.advoware.beteiligter(same_nr).unwrap()["rowId"].clone();
    let same = e.person(
        json!({"firstName": "Gerd", "lastName": "Gleich", "salutationName": null,
        "dateOfBirth": null, "betnr": same_nr, "syncStatus": "clean", "advowareRowId": same_row,
        "advowareLastSync": espo_time}),
    );
    e.espo.clock().set_offset_secs(0);
    e.advoware.edit_beteiligter(bet_nr, json!({"name": "Neu"}));
    // Synced just now: not due.
    let fresh_aw = e.advoware.insert_beteiligter(json!({"name": "Frisch"}));
    let fresh_row = e.advoware.beteiligter(fresh_aw).unwrap()["rowId"].clone();
    let recent = e.espo.clock().now().format("%Y-%m-%d %H:%M:%S").to_string();
    let fresh = e.person(
        json!({"firstName": null, "lastName": "Frisch", "salutationName": null,
        "dateOfBirth": null, "betnr": fresh_aw, "syncStatus": "clean",
        "advowareRowId": fresh_row, "advowareLastSync": recent}),
    );
    e.advoware
        .edit_beteiligter(fresh_aw, json!({"name": "Frischer"}));

    let _run = e.start(&[]).await;
    // The schedule enqueues exactly this job every 15 minutes; fire it by hand.
    let (code, out, err) = e.cli(&["beteiligte", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    e.settle().await;
    e.assert_equal_both_sides(&pending);
    e.assert_equal_both_sides(&dirty);
    e.assert_equal_both_sides(&abandoned);
    e.assert_equal_both_sides(&stuck);
    assert_eq!(e.record(&stuck)["syncRetryCount"], 0);
    assert_eq!(e.assert_equal_both_sides(&stale), bet_nr);
    assert_eq!(
        e.record(&stale)["lastName"],
        "Neu",
        "the Advoware edit flowed back"
    );
    assert_eq!(e.advoware_creates(), 4);
    assert_eq!(
        e.record(&fresh)["lastName"],
        "Frisch",
        "a recent sync is not re-checked"
    );
    // The unchanged one: checked with one Advoware GET, its last sync refreshed (so the next
    // check moves on), and the webhook of that refresh skipped without a second GET.
    let same_rec = e.record(&same);
    assert_eq!(same_rec["syncStatus"], "clean");
    assert_ne!(same_rec["advowareLastSync"], json!(espo_time), "refreshed");
    let gets = e
        .advoware
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/Beteiligte/{same_nr}")))
        .count();
    assert_eq!(gets, 1, "one Advoware GET per unchanged record");
    assert_eq!(e.advoware.beteiligter(same_nr).unwrap()["rowId"], same_row);

    // The operator surface on the same data.
    let (code, out, _) = e.cli(&["beteiligte", "audit", &stale]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("equal"), "{out}");
    let (code, out, _) = e.cli(&["beteiligte", "audit", &fresh]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DIFF name"), "{out}");
    let (code, _, err) = e.cli(&["beteiligte", "audit", "nosuchrecord00000"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = e.cli(&["beteiligte", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["counts"]["clean"], 7, "{status}");
    assert_eq!(status["oldest_unclean"], Value::Null, "{status}");
    let (code, out, err) = e.cli(&["beteiligte", "sync", &fresh]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("advoware_newer"), "{out}");
    assert_eq!(e.record(&fresh)["lastName"], "Frischer");
    let (code, out, err) = e.cli(&["beteiligte", "reset", &fresh]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reset to failed"), "{out}");
    // The enqueued job (and the reset's own webhook) sync it again: clean, nothing to write.
    e.settle().await;
    e.assert_equal_both_sides(&fresh);
    assert_eq!(e.record(&fresh)["syncRetryCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_advoware_settings_make_the_worker_not_ready_and_fail_jobs_permanently() {
    let e = env().await;
    // EspoCRM and an Advoware URL, but no Advoware credentials.
    let w = Worker::spawn(
        &e.redis.url(),
        &[
            ("ADVOWARE_API_BASE_URL", e.advoware.api_base_url().as_str()),
            ("ESPOCRM_API_BASE_URL", e.espo.api_url().as_str()),
            ("ESPOCRM_API_KEY", e.espo.config().api_key.as_str()),
        ],
        &[],
    );
    let body = wait_for("not ready", Duration::from_secs(20), || async {
        let r = common::client()
            .get(format!("{}/ready", w.base))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.ok()?;
        (status == 503
            && v["checks"]["beteiligte_clients"]
                .as_str()
                .is_some_and(|s| s.starts_with("failed")))
        .then_some(v)
    })
    .await;
    assert_eq!(
        body["checks"]["calendar_clients"], "not_configured",
        "{body}"
    );
    let id = e.person(json!({}));
    assert_eq!(
        post_signed(&w.base, "vmh.beteiligte.create", &json!([e.record(&id)])).await,
        202
    );
    wait_for("job dead-lettered", Duration::from_secs(20), || async {
        let mut c = e.redis.conn().await;
        let n: u64 = c.xlen("bbl:dlq").await.ok()?;
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(e.advoware.writes(BETEILIGTE), 0);
}

/// Status machine through the real worker, policy `manual`: a change on both sides ends in
/// `conflict` (nothing written, a notification); further webhooks, `beteiligte sync` and the
/// 15-minute check leave it so; once a person has made Advoware agree (Advoware sends no
/// webhook), `beteiligte reset` brings it to `clean` without a write to Advoware.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_conflict_stays_until_reset_then_ends_clean() {
    let mut e = env().await;
    // Worker and CLI alike: the policy is configuration of both.
    e.vars
        .push(("BETEILIGTE_CONFLICT_POLICY".into(), "manual".into()));
    let _run = e.start(&[]).await;
    let id = e.person(json!({}));
    e.settle().await;
    let bet_nr = e.assert_equal_both_sides(&id);

    e.advoware
        .edit_beteiligter(bet_nr, json!({"name": "Advoseite"}));
    e.espo.edit(ENTITY, &id, json!({"lastName": "Esposeite"}));
    e.settle().await;
    let rec = e.record(&id);
    assert_eq!(rec["syncStatus"], "conflict", "{rec}");
    assert_eq!(rec["lastName"], "Esposeite", "EspoCRM left as it is");
    assert_eq!(e.advoware.beteiligter(bet_nr).unwrap()["name"], "Advoseite");
    let aw_writes = e.advoware.writes(BETEILIGTE);
    let conflict_notes = || {
        e.espo
            .all("Notification")
            .iter()
            .filter(|n| {
                n["relatedId"] == id.as_str()
                    && n["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("Konflikt") && m.contains("lastName"))
            })
            .count()
    };
    assert_eq!(conflict_notes(), 1);

    // Stays: another user edit in EspoCRM, a manual sync, the 15-minute check.
    e.espo
        .edit(ENTITY, &id, json!({"firstName": "Erika Maria"}));
    e.settle().await;
    let (code, out, err) = e.cli(&["beteiligte", "sync", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("conflict"), "{out}");
    let (code, out, err) = e.cli(&["beteiligte", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    e.settle().await;
    assert_eq!(e.record(&id)["syncStatus"], "conflict");
    assert_eq!(e.advoware.writes(BETEILIGTE), aw_writes, "nothing written");
    assert_eq!(conflict_notes(), 1, "notified once, not on every run");

    // A person makes Advoware agree; only the reset tells the sync.
    e.advoware.edit_beteiligter(
        bet_nr,
        json!({"name": "Esposeite", "vorname": "Erika Maria"}),
    );
    assert_eq!(e.record(&id)["syncStatus"], "conflict");
    let (code, out, err) = e.cli(&["beteiligte", "reset", &id]);
    assert_eq!(code, 0, "{out}{err}");
    e.settle().await;
    e.assert_equal_both_sides(&id);
    assert_eq!(e.record(&id)["syncRetryCount"], 0);
    assert_eq!(
        e.advoware.writes(BETEILIGTE),
        aw_writes,
        "the sync never wrote Advoware during the conflict"
    );
}
