//! Calendar sync benchmark (issue #6): the real Advoware and Google clients against the stateful
//! fakes over loopback, a real `redis-server` for state, mirror and the shared Google budget.
//!
//! Measures, for N employees × M appointments (default 10 × 1,000, ~80 % timed, ~10 % all-day or
//! multi-day, ~10 % weekly/monthly recurring, seeded): the first sync with an unthrottled budget
//! (4 employees at a time like the worker's default concurrency, and sequentially), a no-change
//! resync (PASS/FAIL: ≤ 2 list calls and 0 writes per employee, under 1 s in total), and one
//! employee's first sync at the production budget of 600 requests/min next to the time the token
//! bucket alone dictates, extrapolated to N × M. Wall times, API calls per side, peak RSS.
//!
//! Run: `cargo bench -p bitbylaw-worker --bench calendar_sync`
//! Smaller: `CAL_BENCH_EMPLOYEES=2 CAL_BENCH_APPOINTMENTS=100 CAL_BENCH_PACED_APPOINTMENTS=20
//! CAL_BENCH_SEQUENTIAL=0 cargo bench -p bitbylaw-worker --bench calendar_sync`
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitbylaw_fakes::advoware::AdvowareFake;
use bitbylaw_fakes::google_calendar::{CallCounts, GoogleCalendarFake};
use bitbylaw_fakes::redis_server::RedisServer;
use bitbylaw_fakes::RecordedRequest;
use bitbylaw_worker::config::CalendarSettings;
use bitbylaw_worker::handlers::calendar::engine::{AdvowareApi, Engine, GoogleApi, SyncReport};
use bitbylaw_worker::handlers::calendar::run_options;
use bitbylaw_worker::handlers::calendar::store::CalendarStore;
use bitbylaw_worker::ratelimit::BucketSize;
use bitbylaw_worker::sync::calendar::diff::{self, GoogleEvent};
use bitbylaw_worker::sync::calendar::scope::{scope, Window};
use chrono::Days;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde_json::{json, Value};

use common::sides::{adate, day, kz, Aw, Gc, Sides};

/// The worker's default per-topic concurrency.
const CONCURRENCY: usize = 4;
/// A budget so high the bucket never waits: the engine's own cost.
const UNTHROTTLED_RPM: u32 = 10_000_000;
/// The production budget, shared by all workers.
const PRODUCTION_RPM: u32 = 600;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// One isolated setup: its own redis-server, fakes and clients.
struct Env {
    _redis: RedisServer,
    advoware: AdvowareFake,
    google: GoogleCalendarFake,
    conn: MultiplexedConnection,
    aw: Arc<Aw>,
    gc: Arc<Gc>,
    settings: Arc<CalendarSettings>,
    /// frNr → Kürzel of every seeded appointment (to attribute Advoware calls).
    owners: HashMap<i64, String>,
}

impl Env {
    async fn new(requests_per_minute: u32) -> Env {
        let Sides {
            redis,
            advoware,
            google,
            conn,
            aw,
            gc,
        } = Sides::start(requests_per_minute).await;
        Env {
            _redis: redis,
            advoware,
            google,
            conn,
            aw,
            gc,
            settings: Arc::new(CalendarSettings::default()),
            owners: HashMap::new(),
        }
    }

    /// Seeds `n` appointments for `k`; returns how many of each kind.
    fn seed(&mut self, k: &str, n: usize, rng: &mut StdRng) -> [usize; 3] {
        let mut kinds = [0; 3];
        for i in 0..n {
            let (kind, mut t) = random_termin(rng, &format!("{k} Termin {i}"));
            kinds[kind] += 1;
            t["kuerzel"] = json!(k);
            let frnr = self.advoware.insert_termin(t);
            self.owners.insert(frnr, k.to_owned());
        }
        kinds
    }

    async fn calendar_of(&self, k: &str) -> Option<String> {
        let mut c = self.conn.clone();
        c.hget(format!("bbl:cal:{k}:meta"), "calendar_id")
            .await
            .expect("redis hget")
    }

    /// Google calls per calendar since the last reset.
    async fn google_calls(&self, k: &str) -> CallCounts {
        match self.calendar_of(k).await {
            Some(cal) => self.google.calls(&cal),
            None => CallCounts::default(),
        }
    }

    /// Takes the request logs of both fakes (and clears them).
    fn take_requests(&self) -> (Vec<RecordedRequest>, Vec<RecordedRequest>) {
        let aw = self.advoware.requests();
        self.advoware.controls().clear_requests();
        let g = self.google.controls().requests();
        self.google.controls().clear_requests();
        (aw, g)
    }
}

/// 0 = timed single (~80 %), 1 = all-day / multi-day (~10 %), 2 = weekly/monthly series (~10 %).
fn random_termin(rng: &mut StdRng, text: &str) -> (usize, Value) {
    let roll = rng.random_range(0..100);
    if roll < 10 {
        let start = day(rng.random_range(-30..360));
        let end = start + Days::new(rng.random_range(0..5));
        let t = json!({"datum": adate(start), "uhrzeitVon": "00:00:00", "datumBis": adate(end),
                       "uhrzeitBis": "23:59:00", "text": text, "notiz": "", "ort": "",
                       "dauertermin": 1, "turnus": 0, "turnusArt": 0});
        (1, t)
    } else if roll < 20 {
        let start = day(rng.random_range(-30..250));
        let end = start + Days::new(rng.random_range(30..300));
        let weekly = rng.random_bool(0.6);
        let (turnus, art) = if weekly {
            (rng.random_range(1..3), 2)
        } else {
            (1, 3)
        };
        let h = rng.random_range(7..17);
        let t = json!({"datum": adate(start), "uhrzeitVon": format!("{h:02}:00:00"),
                       "datumBis": adate(end), "uhrzeitBis": format!("{h:02}:45:00"),
                       "text": text, "notiz": "Serie", "ort": "Kanzlei",
                       "dauertermin": 0, "turnus": turnus, "turnusArt": art});
        (2, t)
    } else {
        let d = day(rng.random_range(-30..366));
        let start_min = rng.random_range(7 * 4..18 * 4) * 15;
        let end_min = start_min + rng.random_range(1..9) * 15;
        let hm = |m: u32| format!("{:02}:{:02}:00", m / 60, m % 60);
        let notiz = if rng.random_bool(0.5) {
            format!("Akte {}/{}", rng.random_range(1..999), 26)
        } else {
            String::new()
        };
        let ort = ["", "Kanzlei", "Amtsgericht", "Landgericht Saal 3"][rng.random_range(0..4)];
        let t = json!({"datum": adate(d), "uhrzeitVon": hm(start_min), "datumBis": adate(d),
                       "uhrzeitBis": hm(end_min), "text": text, "notiz": notiz, "ort": ort,
                       "dauertermin": 0, "turnus": 0, "turnusArt": 0});
        (0, t)
    }
}

/// One employee's sync with the worker's run options; returns its report and wall time.
async fn sync_one(
    aw: Arc<Aw>,
    gc: Arc<Gc>,
    settings: Arc<CalendarSettings>,
    conn: MultiplexedConnection,
    k: String,
) -> (String, SyncReport, Duration) {
    let kuerzel = kz(&k);
    let opts = run_options(&settings, &kuerzel, &json!({}));
    let engine = Engine {
        advoware: aw.as_ref(),
        google: gc.as_ref(),
        settings: &settings,
    };
    let mut store = CalendarStore::new(conn, kuerzel.clone());
    let t = Instant::now();
    let report = match engine
        .sync_employee(&mut store, &kuerzel, &opts, &mut |_| {})
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("sync of {k} failed: {e}"),
    };
    (k, report, t.elapsed())
}

/// Syncs all employees with at most `concurrency` running at once (tokio tasks sharing the
/// clients, like the worker's consumers); returns the per-employee results and the wall time.
async fn sync_all(
    env: &Env,
    employees: &[String],
    concurrency: usize,
) -> (BTreeMap<String, (SyncReport, Duration)>, Duration) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in employees {
        let permit_src = sem.clone();
        let (aw, gc, settings, conn, k) = (
            env.aw.clone(),
            env.gc.clone(),
            env.settings.clone(),
            env.conn.clone(),
            k.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit_src.acquire_owned().await.expect("semaphore");
            sync_one(aw, gc, settings, conn, k).await
        }));
    }
    let mut out = BTreeMap::new();
    for t in tasks {
        let (k, r, d) = t.await.expect("sync task");
        out.insert(k, (r, d));
    }
    (out, start.elapsed())
}

/// Advoware calls (token requests excluded) per employee: (lists, gets, writes).
fn advoware_by_employee(
    reqs: &[RecordedRequest],
    owners: &HashMap<i64, String>,
) -> (BTreeMap<String, [usize; 3]>, usize) {
    let mut by: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut unattributed = 0;
    for r in reqs.iter().filter(|r| !r.path.ends_with("/Token")) {
        let last = r.path.rsplit('/').next().unwrap_or("");
        let owner = if let Ok(frnr) = last.parse::<i64>() {
            owners.get(&frnr).cloned()
        } else if r.method == "GET" {
            r.query.as_deref().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("kuerzel="))
                    .map(str::to_owned)
            })
        } else {
            serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["kuerzel"].as_str().map(str::to_owned))
        };
        let slot = match (r.method.as_str(), last.parse::<i64>().is_ok()) {
            ("GET", false) => 0,
            ("GET", true) => 1,
            _ => 2,
        };
        match owner {
            Some(k) => by.entry(k).or_default()[slot] += 1,
            None => unattributed += 1,
        }
    }
    (by, unattributed)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn kinds_of(writes: &BTreeMap<&'static str, usize>) -> String {
    if writes.is_empty() {
        return "-".into();
    }
    writes
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Prints one phase's per-employee table; returns (google lists, google writes, google gets,
/// advoware calls) summed over the employees.
async fn print_phase(
    env: &Env,
    title: &str,
    results: &BTreeMap<String, (SyncReport, Duration)>,
    wall: Duration,
) -> PhaseTotals {
    let (aw_reqs, g_reqs) = env.take_requests();
    let (aw_by, aw_unattributed) = advoware_by_employee(&aw_reqs, &env.owners);
    println!();
    println!("### {title}: wall {:.3} s", secs(wall));
    println!(
        "| employee | wall s  | G lists | G gets | G writes | AW lists | AW gets | AW writes | engine writes |"
    );
    println!(
        "|----------|---------|---------|--------|----------|----------|---------|-----------|---------------|"
    );
    let mut t = PhaseTotals {
        wall,
        ..PhaseTotals::default()
    };
    for (k, (report, d)) in results {
        let g = env.google_calls(k).await;
        let a = aw_by.get(k).copied().unwrap_or_default();
        println!(
            "| {k:<8} | {:>7.3} | {:>7} | {:>6} | {:>8} | {:>8} | {:>7} | {:>9} | {} |",
            secs(*d),
            g.lists,
            g.gets,
            g.writes,
            a[0],
            a[1],
            a[2],
            kinds_of(&report.writes)
        );
        t.g_lists += g.lists;
        t.g_gets += g.gets;
        t.g_writes += g.writes;
        t.aw_lists += a[0];
        t.aw_gets += a[1];
        t.aw_writes += a[2];
        t.engine_writes += report.total_writes();
        t.per_employee.push(PerEmployee {
            kuerzel: k.clone(),
            wall: *d,
            lists: g.lists + a[0],
            writes: g.writes + a[2] + report.total_writes(),
            report: report.summary(),
        });
    }
    t.g_http = g_reqs.len();
    t.aw_http = aw_reqs
        .iter()
        .filter(|r| !r.path.ends_with("/Token"))
        .count();
    let aw_token = aw_reqs.len() - t.aw_http;
    println!(
        "| total    | {:>7.3} | {:>7} | {:>6} | {:>8} | {:>8} | {:>7} | {:>9} | {} |",
        secs(wall),
        t.g_lists,
        t.g_gets,
        t.g_writes,
        t.aw_lists,
        t.aw_gets,
        t.aw_writes,
        t.engine_writes
    );
    println!(
        "HTTP requests: Google {} (of which {} calendar-level: calendarList/calendars), Advoware {} (+{} token, {} unattributed)",
        t.g_http,
        t.g_http.saturating_sub(t.g_lists + t.g_gets + t.g_writes),
        t.aw_http,
        aw_token,
        aw_unattributed
    );
    env.google.reset_calls();
    t
}

struct PerEmployee {
    kuerzel: String,
    wall: Duration,
    lists: usize,
    writes: usize,
    report: String,
}

#[derive(Default)]
struct PhaseTotals {
    wall: Duration,
    g_lists: usize,
    g_gets: usize,
    g_writes: usize,
    g_http: usize,
    aw_lists: usize,
    aw_gets: usize,
    aw_writes: usize,
    aw_http: usize,
    engine_writes: usize,
    per_employee: Vec<PerEmployee>,
}

/// Checks the resync targets; prints PASS/FAIL lines and returns whether all passed.
fn check_resync(t: &PhaseTotals, label: &str) -> bool {
    let mut walls: Vec<Duration> = t.per_employee.iter().map(|p| p.wall).collect();
    walls.sort();
    let (min, med, max) = (
        walls.first().copied().unwrap_or_default(),
        walls.get(walls.len() / 2).copied().unwrap_or_default(),
        walls.last().copied().unwrap_or_default(),
    );
    println!(
        "{label}: per employee wall min {:.1} ms / median {:.1} ms / max {:.1} ms",
        secs(min) * 1e3,
        secs(med) * 1e3,
        secs(max) * 1e3
    );
    let mut ok = true;
    for p in &t.per_employee {
        let pass = p.lists <= 2 && p.writes == 0;
        ok &= pass;
        if !pass {
            println!(
                "  FAIL {}: {} list calls (≤ 2 allowed), {} writes: {}",
                p.kuerzel, p.lists, p.writes, p.report
            );
        }
    }
    println!(
        "  {} every employee ≤ 2 list calls and 0 writes ({} employees)",
        if ok { "PASS" } else { "FAIL" },
        t.per_employee.len()
    );
    let fast = t.wall < Duration::from_secs(1);
    println!(
        "  {} whole resync under 1 s ({:.3} s)",
        if fast { "PASS" } else { "FAIL" },
        secs(t.wall)
    );
    ok && fast
}

/// Times the pieces of one employee's no-change resync (the engine's steps, called one by one),
/// to show where the time goes. Read-only apart from one incremental Google list.
async fn breakdown(env: &Env, k: &str) {
    let kuerzel = kz(k);
    let opts = run_options(&env.settings, &kuerzel, &json!({}));
    let engine = Engine {
        advoware: env.aw.as_ref(),
        google: env.gc.as_ref(),
        settings: &env.settings,
    };
    let window = Window::around(
        opts.today,
        env.settings.window_past_days,
        env.settings.window_future_days,
    );
    let mut store = CalendarStore::new(env.conn.clone(), kuerzel.clone());
    let mut lap = Instant::now();
    let mut laps: Vec<(&str, f64)> = Vec::new();
    let mut mark = |name: &'static str, lap: &mut Instant| {
        laps.push((name, lap.elapsed().as_secs_f64() * 1e3));
        *lap = Instant::now();
    };
    let meta = store.meta().await.expect("meta");
    let cal = meta.calendar_id.expect("calendar id");
    mark("load meta", &mut lap);
    let mirror = store.load_mirror().await.expect("mirror");
    mark("load mirror (HGETALL + JSON)", &mut lap);
    let changes = GoogleApi::list_events(env.gc.as_ref(), &cal, meta.sync_token.as_deref())
        .await
        .expect("google list");
    mark("Google incremental list", &mut lap);
    let state = store.load_state().await.expect("state");
    mark("load state (pairs etc.)", &mut lap);
    let termine = AdvowareApi::list_termine(env.aw.as_ref(), &kuerzel, window)
        .await
        .expect("advoware list");
    mark("Advoware list (HTTP + JSON + mapping)", &mut lap);
    let google: Vec<GoogleEvent> = mirror.values().cloned().collect();
    let scoped = scope(&state, &termine, &google, &window);
    mark("scope", &mut lap);
    let plan = diff::plan(
        &scoped.state,
        &termine,
        &scoped.google,
        &engine.policy(&opts),
    )
    .expect("plan");
    mark("plan (three-way diff, hashes)", &mut lap);
    println!(
        "breakdown of one no-change resync of {k} ({} appointments, {} mirrored events, {} changes listed, {} plan steps):",
        termine.len(),
        mirror.len(),
        changes.changes.len(),
        plan.steps.len()
    );
    for (name, ms) in &laps {
        println!("  {name:<40} {ms:>8.1} ms");
    }
    env.google.reset_calls();
    let _ = env.take_requests();
}

/// Redis commands run so far, from `INFO commandstats` (command → calls).
async fn redis_commands(env: &Env) -> BTreeMap<String, u64> {
    let mut c = env.conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let n_emp = env_usize("CAL_BENCH_EMPLOYEES", 10);
    let n_app = env_usize("CAL_BENCH_APPOINTMENTS", 1_000);
    let n_paced = env_usize("CAL_BENCH_PACED_APPOINTMENTS", 200);
    let sequential = env_usize("CAL_BENCH_SEQUENTIAL", 1) != 0;
    let employees: Vec<String> = (0..n_emp).map(|i| format!("E{i:02}")).collect();
    println!(
        "calendar sync benchmark: {n_emp} employees × {n_app} appointments, window today−30…+365 d, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // 1 + 2: seed, first sync 4 at a time, unthrottled.
    let mut env = Env::new(UNTHROTTLED_RPM).await;
    let mut rng = StdRng::seed_from_u64(6);
    let mut kinds = [0; 3];
    for k in &employees {
        let s = env.seed(k, n_app, &mut rng);
        (0..3).for_each(|i| kinds[i] += s[i]);
    }
    println!(
        "seeded {} appointments: {} timed, {} all-day/multi-day, {} recurring (seed 6)",
        kinds.iter().sum::<usize>(),
        kinds[0],
        kinds[1],
        kinds[2]
    );
    let _ = env.take_requests();
    let (res, wall) = sync_all(&env, &employees, CONCURRENCY).await;
    let first = print_phase(
        &env,
        &format!("first sync, {CONCURRENCY} at a time, unthrottled ({UNTHROTTLED_RPM} rpm)"),
        &res,
        wall,
    )
    .await;

    // 3: no-change resync, 4 at a time (as the worker runs it), then sequentially.
    let (res, wall) = sync_all(&env, &employees, CONCURRENCY).await;
    let resync = print_phase(
        &env,
        &format!("no-change resync, {CONCURRENCY} at a time"),
        &res,
        wall,
    )
    .await;
    let resync_ok = check_resync(&resync, "resync (4 at a time)");
    let before = redis_commands(&env).await;
    let (res, wall) = sync_all(&env, &employees, 1).await;
    let after = redis_commands(&env).await;
    let resync_seq = print_phase(&env, "no-change resync, sequential", &res, wall).await;
    let resync_seq_ok = check_resync(&resync_seq, "resync (sequential)");
    let redis_used: Vec<String> = after
        .iter()
        .filter_map(|(k, n)| {
            let d = n - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k}={d}"))
        })
        .collect();
    println!(
        "Redis commands during the sequential resync (incl. INFO itself): {}",
        redis_used.join(" ")
    );
    if let Some(k) = employees.first() {
        breakdown(&env, k).await;
    }
    drop(env);

    // 2b: first sync sequentially, in a fresh setup with the same appointments.
    let first_seq = if sequential {
        let mut env = Env::new(UNTHROTTLED_RPM).await;
        let mut rng = StdRng::seed_from_u64(6);
        for k in &employees {
            env.seed(k, n_app, &mut rng);
        }
        let _ = env.take_requests();
        let (res, wall) = sync_all(&env, &employees, 1).await;
        Some(print_phase(&env, "first sync, sequential, unthrottled", &res, wall).await)
    } else {
        None
    };

    // 4: one employee at the production budget.
    let size = BucketSize::from_requests_per_minute(PRODUCTION_RPM);
    let paced = {
        let mut env = Env::new(PRODUCTION_RPM).await;
        let mut rng = StdRng::seed_from_u64(600);
        env.seed("P00", n_paced, &mut rng);
        let _ = env.take_requests();
        let (res, wall) = sync_all(&env, &["P00".to_owned()], 1).await;
        print_phase(
            &env,
            &format!("first sync, 1 employee × {n_paced}, at {PRODUCTION_RPM} rpm"),
            &res,
            wall,
        )
        .await
    };
    let dictated = |requests: usize| {
        requests.saturating_sub(size.capacity as usize) as f64 / size.refill_per_sec
    };
    let paced_dictated = dictated(paced.g_http);
    let full_dictated = dictated(first.g_http);

    println!();
    println!("## Summary");
    println!("| measurement | result | detail |");
    println!("|---|---|---|");
    let row = |m: &str, r: String, d: String| println!("| {m} | {r} | {d} |");
    row(
        &format!("first sync {n_emp}×{n_app}, {CONCURRENCY} at a time, unthrottled"),
        format!("{:.2} s", secs(first.wall)),
        format!(
            "Google {} req ({} lists, {} writes), Advoware {} req ({} lists, {} gets, {} writes); {:.0} Google writes/s",
            first.g_http,
            first.g_lists,
            first.g_writes,
            first.aw_http,
            first.aw_lists,
            first.aw_gets,
            first.aw_writes,
            first.g_writes as f64 / secs(first.wall)
        ),
    );
    if let Some(fs) = &first_seq {
        row(
            &format!("first sync {n_emp}×{n_app}, sequential, unthrottled"),
            format!("{:.2} s", secs(fs.wall)),
            format!(
                "Google {} req ({} writes), Advoware {} req; {:.0} Google writes/s",
                fs.g_http,
                fs.g_writes,
                fs.aw_http,
                fs.g_writes as f64 / secs(fs.wall)
            ),
        );
    }
    for (label, t, ok) in [
        (
            format!("no-change resync, {CONCURRENCY} at a time"),
            &resync,
            resync_ok,
        ),
        (
            "no-change resync, sequential".to_owned(),
            &resync_seq,
            resync_seq_ok,
        ),
    ] {
        row(
            &label,
            format!("{:.3} s", secs(t.wall)),
            format!(
                "{}: Google {} lists / {} writes, Advoware {} lists / {} gets / {} writes, engine writes {}",
                if ok { "PASS" } else { "FAIL" },
                t.g_lists,
                t.g_writes,
                t.aw_lists,
                t.aw_gets,
                t.aw_writes,
                t.engine_writes
            ),
        );
    }
    row(
        &format!("first sync 1×{n_paced} at {PRODUCTION_RPM} rpm"),
        format!("{:.2} s measured", secs(paced.wall)),
        format!(
            "{} Google requests; bucket alone dictates ({} − {} burst) ÷ {:.3}/s = {:.2} s; measured/dictated = {:.3}",
            paced.g_http,
            paced.g_http,
            size.capacity,
            size.refill_per_sec,
            paced_dictated,
            if paced_dictated > 0.0 {
                secs(paced.wall) / paced_dictated
            } else {
                f64::NAN
            }
        ),
    );
    row(
        &format!("EXTRAPOLATION: first sync {n_emp}×{n_app} at {PRODUCTION_RPM} rpm"),
        format!("≈ {:.1} min", full_dictated / 60.0),
        format!(
            "{} Google requests (measured above) at the bucket's rate; not run",
            first.g_http
        ),
    );
    row(
        "peak RSS (whole process: fakes, redis client, engine)",
        format!("{:.1} MiB", peak_rss_mib()),
        "VmHWM".into(),
    );
}
