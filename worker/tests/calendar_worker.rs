//! The calendar sync through the real worker binary: `calendar.sync.all` fan-out with the
//! service-account flow against the Google fake, failure isolation per employee, the employee
//! lock, and the `calendar audit` / `calendar run` commands with their exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::process::Command;
use std::time::Duration;

use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake};
use bitbylaw_fakes::google_calendar::{self, GoogleCalendarConfig, GoogleCalendarFake};
use bitbylaw_worker::handlers::calendar::berlin_today;
use chrono::Days;
use common::{bin, client, metric, metrics_text, wait_for, RedisServer, Worker};
use redis::AsyncCommands;
use serde_json::{json, Value};

struct Env {
    redis: RedisServer,
    advoware: AdvowareFake,
    google: GoogleCalendarFake,
    _dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

async fn env() -> Env {
    let redis = RedisServer::start(false);
    let advoware = advoware::start(AdvowareConfig::default()).await.unwrap();
    let google = google_calendar::start(GoogleCalendarConfig {
        static_token: None,
        ..GoogleCalendarConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = google
        .write_service_account_key(dir.path(), "sync@fake-project.iam.gserviceaccount.com")
        .unwrap();
    let mut vars = common::advoware_env(&advoware);
    vars.extend(
        [
            (
                "GOOGLE_CALENDAR_SERVICE_ACCOUNT_PATH",
                key.display().to_string(),
            ),
            (
                "GOOGLE_CALENDAR_SUBJECT",
                "kalender@fake-kanzlei.test".into(),
            ),
            ("GOOGLE_CALENDAR_API_BASE_URL", google.api_base_url()),
            ("GOOGLE_CALENDAR_ROOT_URL", google.root_url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v)),
    );
    Env {
        redis,
        advoware,
        google,
        _dir: dir,
        vars,
    }
}

impl Env {
    fn spawn(&self, extra: &[(&str, &str)]) -> Worker {
        let mut o: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        o.extend_from_slice(extra);
        Worker::spawn(&self.redis.url(), &o, &[])
    }

    /// The CLI with the same configuration, ready to run.
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

    /// Runs the CLI with the same configuration; returns (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    fn seed(&self, k: &str, n: u64) {
        self.advoware
            .add_mitarbeiter(k, &format!("Mitarbeiter {k}"), json!({}));
        for i in 0..n {
            let d = berlin_today() + Days::new(1 + i);
            let date = format!("{}T00:00:00", d.format("%Y-%m-%d"));
            self.advoware.insert_termin(json!({
                "kuerzel": k, "datum": date, "uhrzeitVon": "09:00:00", "datumBis": date,
                "uhrzeitBis": "10:00:00", "text": format!("{k} Termin {i}")
            }));
        }
    }

    /// The calendar the sync recorded for `k` (if the fake has it).
    async fn calendar_of(&self, k: &str) -> Option<String> {
        let mut c = self.redis.conn().await;
        let id: Option<String> = c
            .hget(format!("bbl:cal:{k}:meta"), "calendar_id")
            .await
            .unwrap();
        id.filter(|id| self.google.calendar_ids().contains(id))
    }

    async fn events_of(&self, k: &str) -> usize {
        match self.calendar_of(k).await {
            Some(c) => self.google.live_events(&c).len(),
            None => 0,
        }
    }
}

async fn trigger(w: &Worker, kuerzel: &str) {
    let r = client()
        .post(format!("{}/calendar/sync", w.base))
        .json(&json!({ "kuerzel": kuerzel }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_all_fans_out_and_one_failing_employee_does_not_stop_the_others() {
    let e = env().await;
    e.seed("SB", 3);
    e.seed("AB", 2);
    e.seed("CD", 4);
    // AB's recorded calendar was deleted in Google: its first attempt fails, the others go on.
    let mut c = e.redis.conn().await;
    let _: () = c
        .hset("bbl:cal:AB:meta", "calendar_id", "deleted-calendar@fake")
        .await
        .unwrap();
    let w = e.spawn(&[]);
    trigger(&w, "ALL").await;
    wait_for("SB and CD synced", Duration::from_secs(20), || async {
        (e.events_of("SB").await == 3 && e.events_of("CD").await == 4).then_some(())
    })
    .await;
    wait_for(
        "AB synced after its retry",
        Duration::from_secs(20),
        || async { (e.events_of("AB").await == 2).then_some(()) },
    )
    .await;
    // Metrics and the sync record are written right after a run's last Google write.
    let m = wait_for("runs counted", Duration::from_secs(10), || async {
        let m = metrics_text(&w.base).await;
        let ok = metric(
            &m,
            "bitbylaw_worker_calendar_sync_runs_total",
            "kind=\"ok\"",
        );
        (ok >= 3.0).then_some(m)
    })
    .await;
    assert!(
        metric(
            &m,
            "bitbylaw_worker_calendar_sync_runs_total",
            "kind=\"retryable\""
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_calendar_sync_writes_total",
            "kind=\"create_google\""
        ),
        9.0
    );
    // Every employee is recorded as synced; the service account was used with its subject.
    let synced: Vec<String> = c.zrange("bbl:cal:last_sync", 0, -1).await.unwrap();
    assert_eq!(synced.len(), 3, "{synced:?}");
    let tokens = e.google.issued_tokens();
    assert!(!tokens.is_empty());
    assert!(tokens
        .iter()
        .all(|t| t.sub.as_deref() == Some("kalender@fake-kanzlei.test")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_employee_lock_keeps_a_second_sync_out() {
    let e = env().await;
    e.seed("SB", 2);
    let mut c = e.redis.conn().await;
    // Another worker holds SB.
    let _: () = redis::cmd("SET")
        .arg("bbl:lock:calendar:employee:SB")
        .arg("other-worker")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c)
        .await
        .unwrap();
    let w = e.spawn(&[("WORKER_LOCK_BUSY_DELAY_MS", "200")]);
    trigger(&w, "SB").await;
    wait_for("lock contention seen", Duration::from_secs(10), || async {
        let m = metrics_text(&w.base).await;
        (metric(
            &m,
            "bitbylaw_worker_lock_contention_total",
            "calendar.sync.employee",
        ) >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        e.events_of("SB").await,
        0,
        "nothing written while the other worker holds SB"
    );
    let _: () = c.del("bbl:lock:calendar:employee:SB").await.unwrap();
    wait_for(
        "SB synced once the lock is free",
        Duration::from_secs(20),
        || async { (e.events_of("SB").await == 2).then_some(()) },
    )
    .await;
    // The run releases the lock right after its last writes (no waiting for the TTL).
    wait_for(
        "lock released after the run",
        Duration::from_secs(5),
        || {
            let mut c = c.clone();
            async move {
                let lock: Option<String> = c.get("bbl:lock:calendar:employee:SB").await.unwrap();
                lock.is_none().then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_run_stops_when_its_lock_is_taken_over() {
    let e = env().await;
    e.seed("SB", 8);
    // A short lock TTL (extended every 200 ms) and a Google budget that paces the run over seconds.
    let child = e
        .command(&["calendar", "run", "--kuerzel", "SB"])
        .env("WORKER_LOCK_TTL_MS", "600")
        .env("GOOGLE_CALENDAR_REQUESTS_PER_MINUTE", "120")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let key = "bbl:lock:calendar:employee:SB";
    let mut c = e.redis.conn().await;
    wait_for("run holds the lock", Duration::from_secs(20), || {
        let mut c = c.clone();
        async move { c.exists::<_, bool>(key).await.unwrap().then_some(()) }
    })
    .await;
    // Another worker takes SB over (the lock was lost, e.g. expired during a stall).
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("other-worker")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c)
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("lock") && err.contains("stopped"), "{err}");
    let owner: Option<String> = c.get(key).await.unwrap();
    assert_eq!(
        owner.as_deref(),
        Some("other-worker"),
        "the new owner's lock stays"
    );
    assert!(
        e.events_of("SB").await < 8,
        "the run stopped before its end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_job_stops_when_its_lock_is_taken_over() {
    let e = env().await;
    e.seed("SB", 8);
    let w = e.spawn(&[
        ("WORKER_LOCK_TTL_MS", "600"),
        ("GOOGLE_CALENDAR_REQUESTS_PER_MINUTE", "120"),
    ]);
    trigger(&w, "SB").await;
    let key = "bbl:lock:calendar:employee:SB";
    let mut c = e.redis.conn().await;
    wait_for("job holds the lock", Duration::from_secs(20), || {
        let mut c = c.clone();
        async move { c.exists::<_, bool>(key).await.unwrap().then_some(()) }
    })
    .await;
    let _: () = c.del(key).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("other-worker")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c)
        .await
        .unwrap();
    wait_for(
        "run stopped as lock_lost",
        Duration::from_secs(20),
        || async {
            let m = metrics_text(&w.base).await;
            (metric(
                &m,
                "bitbylaw_worker_calendar_sync_runs_total",
                "kind=\"lock_lost\"",
            ) >= 1.0)
                .then_some(())
        },
    )
    .await;
    let owner: Option<String> = c.get(key).await.unwrap();
    assert_eq!(owner.as_deref(), Some("other-worker"));
    assert!(
        e.events_of("SB").await < 8,
        "the run stopped before its end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_sync_every_employee_once_without_duplicates() {
    let e = env().await;
    for k in ["SB", "AB", "CD", "EF"] {
        e.seed(k, 5);
    }
    let w1 = e.spawn(&[]);
    let w2 = e.spawn(&[]);
    trigger(&w1, "ALL").await;
    trigger(&w2, "ALL").await;
    for w in [&w1, &w2] {
        trigger(w, "SB").await;
        trigger(w, "AB").await;
    }
    wait_for("all synced", Duration::from_secs(30), || async {
        for k in ["SB", "AB", "CD", "EF"] {
            if e.events_of(k).await != 5 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let total_writes = || async {
        let mut total = 0.0;
        for w in [&w1, &w2] {
            let m = metrics_text(&w.base).await;
            total += metric(&m, "bitbylaw_worker_calendar_sync_writes_total", "");
        }
        total
    };
    wait_for("writes counted", Duration::from_secs(10), || async {
        (total_writes().await >= 20.0).then_some(())
    })
    .await;
    // Let any queued repeats run; they must find nothing to do.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for k in ["SB", "AB", "CD", "EF"] {
        assert_eq!(e.events_of(k).await, 5, "{k}: duplicates");
    }
    assert_eq!(
        total_writes().await,
        20.0,
        "each appointment written exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_run_commands_report_and_exit_as_documented() {
    let e = env().await;
    e.seed("SB", 3);
    // Never synced: the audit lists every appointment as missing in Google → exit 1.
    let (code, out, err) = e.cli(&["calendar", "audit", "--kuerzel", "SB"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(out.matches("DIFF: missing in Google").count(), 3, "{out}");

    let (code, out, err) = e.cli(&["calendar", "run", "--kuerzel", "SB"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("[3/3]"), "progress on stderr: {err}");
    assert!(out.contains("create_google=3"), "{out}");

    let (code, out, err) = e.cli(&["calendar", "audit", "--kuerzel", "SB"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("in sync"), "{out}");

    // A user edits an event in Google: out of sync until the next run.
    let cal = e.calendar_of("SB").await.unwrap();
    let ev: Value = e.google.live_events(&cal)[0].clone();
    e.google
        .user_patch_event(
            &cal,
            ev["id"].as_str().unwrap(),
            json!({"summary": "geändert"}),
        )
        .unwrap();
    let (code, out, _) = e.cli(&["calendar", "audit", "--kuerzel", "SB"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DIFF: Advoware appointment"), "{out}");
    let (code, _, _) = e.cli(&["calendar", "run", "--kuerzel", "SB"]);
    assert_eq!(code, 0);
    assert_eq!(e.cli(&["calendar", "audit", "--kuerzel", "SB"]).0, 0);

    // Advoware unreachable: the comparison itself fails → exit 2, and says why.
    e.advoware.fail_next(100, 503, None);
    let (code, _, err) = e.cli(&["calendar", "audit", "--kuerzel", "SB"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Advoware"), "{err}");
    assert!(
        !err.contains(&e.advoware.config().password),
        "no secrets in errors"
    );

    let (code, _, err) = e.cli(&["calendar", "audit", "--kuerzel", "S B"]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_the_calendar_clients() {
    let e = env().await;
    let ready = |w: &Worker| {
        let url = format!("{}/ready", w.base);
        async move {
            let r = client().get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let good = e.spawn(&[]);
    let (status, body) = wait_for("clients built", Duration::from_secs(10), || async {
        let (s, b) = ready(&good).await;
        (b["checks"]["calendar_clients"] == "ready").then_some((s, b))
    })
    .await;
    assert_eq!(status, 200, "{body}");

    // A key file that is not a service-account key: not ready, and the reason is given.
    let bad_key = e._dir.path().join("broken.json");
    std::fs::write(&bad_key, r#"{"type": "service_account"}"#).unwrap();
    let bad = e.spawn(&[(
        "GOOGLE_CALENDAR_SERVICE_ACCOUNT_PATH",
        bad_key.to_str().unwrap(),
    )]);
    let (status, body) = wait_for("failure reported", Duration::from_secs(10), || async {
        let (s, b) = ready(&bad).await;
        b["checks"]["calendar_clients"]
            .as_str()
            .is_some_and(|c| c.starts_with("failed"))
            .then_some((s, b))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["message"], "calendar sync clients cannot be built");
}

/// Issue 16 item 10 through the real binary: a single read configured in a form this Advoware
/// does not serve (405) is counted in `advoware_endpoint_mismatches`, and the employee's run
/// still succeeds instead of failing on every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_single_read_is_counted_and_the_run_succeeds() {
    let e = env().await;
    e.seed("SB", 2);
    let w = e.spawn(&[("ADVOWARE_PATH_TERMIN_GET", "api/v1/advonet/Termine/{frnr}")]);
    let runs_ok = |m: &str| metric(m, "bitbylaw_worker_calendar_sync_runs_total", "kind=\"ok\"");
    trigger(&w, "SB").await;
    wait_for("first run", Duration::from_secs(20), || async {
        (runs_ok(&metrics_text(&w.base).await) >= 1.0).then_some(())
    })
    .await;
    assert_eq!(e.events_of("SB").await, 2);
    let gone = e
        .advoware
        .termine()
        .first()
        .and_then(|t| t["frNr"].as_i64())
        .unwrap();
    e.advoware.remove_termin(gone);
    trigger(&w, "SB").await;
    let m = wait_for("second run", Duration::from_secs(20), || async {
        let m = metrics_text(&w.base).await;
        (runs_ok(&m) >= 2.0).then_some(m)
    })
    .await;
    assert_eq!(
        metric(&m, "bitbylaw_worker_advoware_endpoint_mismatches_total", ""),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_calendar_sync_runs_total",
            "kind=\"permanent\""
        ) + metric(
            &m,
            "bitbylaw_worker_calendar_sync_runs_total",
            "kind=\"retryable\""
        ),
        0.0,
        "{m}"
    );
    assert_eq!(
        e.events_of("SB").await,
        2,
        "unconfirmed deletion: left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_in_a_row_are_exported_per_employee_until_a_success() {
    let e = env().await;
    e.seed("SB", 2);
    // Advoware answers 500 to everything: each attempt of SB's run fails until the job is
    // dead-lettered (3 attempts in the test environment).
    e.advoware.fail_next(10_000, 500, None);
    let w = e.spawn(&[]);
    // Every attempt reaches the sync (none waits for the clients to be built): `/ready` is 200
    // while they are still `starting`, so wait for the check itself.
    wait_for(
        "calendar clients ready",
        Duration::from_secs(30),
        || async {
            let r = client()
                .get(format!("{}/ready", w.base))
                .send()
                .await
                .ok()?;
            let b: serde_json::Value = r.json().await.ok()?;
            (b["checks"]["calendar_clients"] == "ready").then_some(())
        },
    )
    .await;
    trigger(&w, "SB").await;
    let m = wait_for("SB dead-lettered", Duration::from_secs(30), || async {
        let m = metrics_text(&w.base).await;
        (metric(&m, "bitbylaw_worker_dlq_depth", "") == 1.0).then_some(m)
    })
    .await;
    let failed = metric(
        &m,
        "bitbylaw_worker_calendar_sync_runs_total",
        "kind=\"retryable\"",
    );
    assert_eq!(failed, 3.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_calendar_sync_failures_in_a_row",
            "kuerzel=\"SB\""
        ),
        3.0,
        "{m}"
    );

    // Advoware is back; the replayed job succeeds and ends the streak.
    e.advoware.controls().clear_failures();
    let (code, out, err) = e.cli(&["dlq", "replay", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    let m = wait_for("SB synced", Duration::from_secs(20), || async {
        let m = metrics_text(&w.base).await;
        let ok = metric(
            &m,
            "bitbylaw_worker_calendar_sync_runs_total",
            "kind=\"ok\"",
        );
        (ok == 1.0).then_some(m)
    })
    .await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_calendar_sync_failures_in_a_row",
            "kuerzel=\"SB\""
        ),
        0.0,
        "{m}"
    );
    let last = metric(
        &m,
        "bitbylaw_worker_calendar_sync_last_success_timestamp_seconds",
        "kuerzel=\"SB\"",
    );
    assert!(last > 1.7e9, "{m}");
    // Google requests are counted against the shared budget.
    assert!(
        metric(&m, "bitbylaw_worker_google_requests_granted_total", "") >= 2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "bitbylaw_worker_google_budget_requests_per_minute", ""),
        600.0
    );
}
