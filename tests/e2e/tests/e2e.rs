//! The product end to end: the repository's kong.yaml rendered and served by gateway
//! mode with the built `.wasm` filters, in front of the real worker binary on real
//! Redis, with the fake Advoware and EspoCRM. Assertions are on HTTP responses,
//! what the fakes received, and the worker's queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
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
        LEAD_SECRET,
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
            .env("WORKER_ADMIN_TOKEN", ADMIN_TOKEN)
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
    // Each consumer has its own scope: outside it → 403 from the filter, nothing sent on.
    let before = adv.controls().requests().len();
    for (key, method, endpoint) in [
        (CLIENT_KEY, reqwest::Method::DELETE, "Termine/100001"),
        ("crm-readonly-key", reqwest::Method::GET, "Mitarbeiter"),
    ] {
        let resp = client
            .request(
                method,
                format!("{gw_url}/advoware/proxy?endpoint={endpoint}"),
            )
            .header("apikey", key)
            .header("x-consumer-username", "api-client") // forged: key-auth overwrites it
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "outside_scope");
    }
    assert_eq!(
        adv.controls().requests().len(),
        before,
        "nothing reached Advoware"
    );

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

    // A genuine update delivery re-addressed to the delete path is refused too (issue 16
    // item 1): the update webhook is bound to `update` in kong.yaml.
    let resp = espocrm::send_webhook(
        &format!("{gw_url}/vmh/webhook/beteiligte/delete"),
        &hooks["ESPOCRM_WEBHOOK_BETEILIGTE_UPDATE_ID"],
        &hooks["ESPOCRM_WEBHOOK_BETEILIGTE_UPDATE_SECRET"],
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
    // A key without the `calendar-sync` ACL group cannot start a sync.
    let r = client
        .post(format!("{gw_url}/advoware/calendar/sync"))
        .header("apikey", "crm-readonly-key")
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

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
        ("WORKER_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
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

// ---------------------------------------------------------------------------
// Operations (issue 17): the dashboard, the alert rules and the compose stack that
// provisions them.

/// What a dashboard panel or an alert may refer to: the names the code exports.
struct Exported {
    /// Series names in the real worker's `/metrics`, with the suffixes each type gets.
    worker: BTreeSet<String>,
    /// The filters' counters as Kong's prometheus plugin names them: ngx_wasm_module keeps
    /// `pw.<filter>.<name>` (the test host `pw:<filter>:<name>`), the plugin turns the
    /// separators into `_`.
    filters: BTreeSet<String>,
    /// Names recorded by the rule file itself.
    recorded: BTreeSet<String>,
}

impl Exported {
    fn contains(&self, name: &str) -> bool {
        // `up` is written by Prometheus for every scrape target.
        name == "up"
            || self.worker.contains(name)
            || self.filters.contains(name)
            || self.recorded.contains(name)
    }
}

/// Series names of a Prometheus text exposition, from its samples and its `# TYPE` lines.
fn exposition_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            if let Some(name) = line.split(['{', ' ']).next() {
                names.insert(name.to_string());
            }
        }
    }
    names
}

const PROMQL_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
];

/// The metric names and `__name__` regexes a PromQL expression refers to.
fn promql_metrics(expr: &str) -> (Vec<String>, Vec<String>) {
    let name_regex = regex::Regex::new(r#"__name__\s*=~\s*"((?:[^"\\]|\\.)*)""#).unwrap();
    let regexes = name_regex
        .captures_iter(expr)
        .map(|c| c[1].replace("\\\\", "\\"))
        .collect();
    // Drop strings, label matchers, ranges and grouping label lists, then every identifier
    // left that is not a function call or a keyword is a metric name.
    let mut s = regex::Regex::new(r#""(?:[^"\\]|\\.)*""#)
        .unwrap()
        .replace_all(expr, "\"\"")
        .into_owned();
    for pattern in [
        r"\{[^}]*\}",
        r"\[[^\]]*\]",
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
        // Numbers and durations (`offset 15m`, `1e3`).
        r"\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?\b",
    ] {
        s = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&s, " ")
            .into_owned();
    }
    let ident = regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?").unwrap();
    let names = ident
        .captures_iter(&s)
        .filter(|c| c.get(1).is_none())
        .map(|c| c[0].to_string())
        .filter(|n| !PROMQL_KEYWORDS.contains(&n.to_ascii_lowercase().as_str()))
        .collect();
    (names, regexes)
}

/// Checks one expression; returns the problems found.
fn check_expr(place: &str, expr: &str, exported: &Exported) -> Vec<String> {
    let (names, regexes) = promql_metrics(expr);
    let mut problems = Vec::new();
    if names.is_empty() && regexes.is_empty() {
        problems.push(format!("{place}: refers to no metric: {expr}"));
    }
    for n in names {
        if !exported.contains(&n) {
            problems.push(format!("{place}: `{n}` is not exported"));
        }
    }
    for r in regexes {
        let re = regex::Regex::new(&format!("^(?:{r})$")).unwrap();
        if !exported
            .worker
            .iter()
            .chain(&exported.filters)
            .any(|n| re.is_match(n))
        {
            problems.push(format!(
                "{place}: __name__ regex `{r}` matches no exported metric"
            ));
        }
    }
    problems
}

fn alert_rules() -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join("docker/prometheus/alerts.yml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn rules_of(doc: &serde_yaml::Value) -> Vec<&serde_yaml::Value> {
    doc["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .collect()
}

/// The names the running worker and the filters (configured from kong.yaml) export.
async fn exported_metrics(rules: &serde_yaml::Value) -> Exported {
    // A sandbox-like run: the worker with every role over real Redis behind the gateway
    // (kong.yaml, real filters); a 3CX call report goes through both.
    let redis = RedisServer::start(false);
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .args(["serve"])
            .env("REDIS_URL", redis.url())
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/health")).await;

    // The filters define their counters in on_configure, once per configured chain.
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let config = render(&vars(&adv, &worker_url, &placeholder_hooks(), LEAD_SECRET));
    let gw = Gateway::start(GatewayOptions::new(config)).await.unwrap();
    let call = json!({"CallType": "Inbound", "Number": "+49301234567", "Duration": "00:00:42"});
    let r = threecx::report_call(
        &format!("{}/3cx/calls", gw.base_url()),
        "x-api-key",
        THREECX_KEY,
        &call,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let filters: BTreeSet<String> = gw
        .host
        .metrics()
        .keys()
        .map(|k| k.replace([':', '.'], "_"))
        .collect();
    assert!(
        filters.iter().any(|n| n.starts_with("pw_webhook_guard_"))
            && filters.iter().any(|n| n.starts_with("pw_advoware_auth_")),
        "{filters:?}"
    );

    let text = reqwest::get(format!("{worker_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("bitbylaw_worker_events_received_total{topic=\"telephony.call.reported\"} 1"),
        "{text}"
    );
    let worker = exposition_names(&text);
    let recorded = rules_of(rules)
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect();
    Exported {
        worker,
        filters,
        recorded,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_rules_use_only_metrics_the_code_exports() {
    let rules = alert_rules();
    let exported = exported_metrics(&rules).await;
    let mut problems = Vec::new();

    for rule in rules_of(&rules) {
        let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
        let expr = rule["expr"].as_str().unwrap();
        problems.extend(check_expr(&format!("rule {name}"), expr, &exported));
        if rule["alert"].is_string() {
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or("");
            if !runbook.contains("bitbylaw-worker") && !runbook.contains("kong") {
                problems.push(format!("alert {name}: runbook names no command to run"));
            }
        }
    }

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docker/grafana/dashboards/bitbylaw.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            queries += 1;
            let expr = t["expr"].as_str().unwrap();
            problems.extend(check_expr(&format!("panel {title:?}"), expr, &exported));
        }
    }
    assert!(queries >= 20, "{queries} queries");
    assert!(problems.is_empty(), "{problems:#?}");

    // The checker itself catches a name the code does not export.
    assert!(!check_expr(
        "probe",
        "rate(bitbylaw_worker_jobs_lost_total[5m])",
        &exported
    )
    .is_empty());
    assert!(!check_expr(
        "probe",
        r#"{__name__=~"pw_webhook_guard_.+_teleported"}"#,
        &exported
    )
    .is_empty());
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("docker/prometheus"))
        .output()
        .expect("promtool (Debian package `prometheus`; scripts/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    // DLQ growth, queue age per topic (threshold, `for`, calendar override) and the
    // webhook_guard recording rule with the signature-spike alert.
    let out = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = std::fs::read_to_string(root().join("docker/prometheus/alerts.test.yml")).unwrap();
    for alert in ["DeadLetterQueueGrowing", "QueuedJobTooOld"] {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} untested"
        );
    }
}

/// The host port of a `host:port` listen address.
fn port_of(addr: &str) -> &str {
    addr.trim_matches('"').rsplit(':').next().unwrap()
}

#[test]
fn compose_provisions_prometheus_grafana_dashboard_and_rules() {
    let compose_path = root().join("docker/compose.yaml");
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&compose_path).unwrap()).unwrap();
    let services = &compose["services"];
    let docker = root().join("docker");
    // Every bind mount of the monitoring services points at a file or folder in the repository.
    let mounts = |service: &str| -> Vec<(PathBuf, String)> {
        services[service]["volumes"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{service} has volumes"))
            .iter()
            .filter_map(|v| {
                let v = v.as_str()?;
                let mut parts = v.split(':');
                let (src, dst) = (parts.next()?, parts.next()?);
                src.starts_with('.')
                    .then(|| (docker.join(src), dst.to_string()))
            })
            .collect()
    };
    for service in ["prometheus", "grafana"] {
        let m = mounts(service);
        assert!(
            !m.is_empty(),
            "{service} mounts nothing from the repository"
        );
        for (src, _) in &m {
            assert!(src.exists(), "{service} mounts missing {}", src.display());
        }
    }

    // Prometheus loads the rule file it is given and scrapes the worker and Kong's status API.
    let prom_mounts = mounts("prometheus");
    let config_src = &prom_mounts
        .iter()
        .find(|(_, dst)| dst == "/etc/prometheus/prometheus.yml")
        .expect("prometheus.yml mounted")
        .0;
    let prom: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(config_src).unwrap()).unwrap();
    for rule_file in prom["rule_files"].as_sequence().unwrap() {
        let (src, _) = prom_mounts
            .iter()
            .find(|(_, dst)| Some(dst.as_str()) == rule_file.as_str())
            .unwrap_or_else(|| panic!("rule file {rule_file:?} is not mounted"));
        assert!(src.ends_with("prometheus/alerts.yml"));
    }
    let targets: BTreeSet<String> = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|c| c["static_configs"].as_sequence().unwrap())
        .flat_map(|s| s["targets"].as_sequence().unwrap())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let env = |service: &str, key: &str| -> String {
        services[service]["environment"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{service} sets {key}"))
            .to_string()
    };
    let worker_target = format!("worker:{}", port_of(&env("worker", "WORKER_LISTEN_ADDR")));
    let kong_status = env("kong", "KONG_STATUS_LISTEN");
    let kong_target = format!("kong:{}", port_of(kong_status.split(',').next().unwrap()));
    assert_eq!(
        targets,
        BTreeSet::from([worker_target, kong_target]),
        "Prometheus scrapes the worker and Kong's Status API"
    );
    // Kong serves /metrics on the Status API only with its prometheus plugin enabled.
    let kong: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("kong.yaml")).unwrap()).unwrap();
    assert!(kong["plugins"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "prometheus"));

    // Grafana: the provisioned datasource is the one the dashboard refers to, and the
    // dashboard provider's folder is where the dashboards are mounted.
    let graf = mounts("grafana");
    let prov = &graf
        .iter()
        .find(|(_, d)| d == "/etc/grafana/provisioning")
        .expect("provisioning mounted")
        .0;
    let ds: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(prov.join("datasources/prometheus.yaml")).unwrap(),
    )
    .unwrap();
    let ds_uid = ds["datasources"][0]["uid"].as_str().unwrap();
    assert_eq!(
        ds["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let providers: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(prov.join("dashboards/bitbylaw.yaml")).unwrap(),
    )
    .unwrap();
    let dash_dir = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let (dash_src, _) = graf
        .iter()
        .find(|(_, d)| d == dash_dir)
        .expect("the provider's dashboard folder is mounted");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dash_src.join("bitbylaw.json")).unwrap())
            .unwrap();
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], ds_uid, "panel {}", p["title"]);
        }
    }

    // Where the docker compose plugin exists, it must accept the file too (no daemon needed).
    let has_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_compose {
        let out = Command::new("docker")
            .args(["compose", "-f"])
            .arg(&compose_path)
            .args(["config", "--quiet"])
            .env("GATEWAY_SIGNING_SECRET", "compose-config-check")
            .env("GRAFANA_ADMIN_PASSWORD", "compose-config-check")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `(in, name)` of the credentials a security requirement list of an operation names.
fn documented_credentials(doc: &Value, op: &Value) -> BTreeSet<(String, String)> {
    op["security"]
        .as_array()
        .map(|reqs| {
            reqs.iter()
                .flat_map(|r| r.as_object().unwrap().keys())
                .map(|name| {
                    let s = &doc["components"]["securitySchemes"][name];
                    assert_eq!(s["type"], "apiKey", "scheme {name}");
                    (
                        s["in"].as_str().unwrap().to_string(),
                        s["name"].as_str().unwrap().to_ascii_lowercase(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gateway_openapi_describes_every_public_kong_route_with_its_authentication() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("openapi.gateway.json")).unwrap(),
    )
    .unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("worker/tests/data/openapi-3.1.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let kong = kong_config::model::KongConfig::parse(
        &std::fs::read_to_string(root().join("kong.yaml")).unwrap(),
    )
    .unwrap();
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut problems = Vec::new();
    for service in &kong.services {
        for route in &service.routes {
            // The credentials Kong and the filters check on this route.
            let mut creds: BTreeSet<(String, String)> = BTreeSet::new();
            let plugins = route
                .plugins
                .iter()
                .chain(&service.plugins)
                .chain(&kong.plugins);
            for p in plugins.filter(|p| p.name == "key-auth" && p.enabled) {
                let names: Vec<String> = p.config["key_names"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_else(|| vec!["apikey".into()]);
                for n in names {
                    creds.insert(("header".into(), n.clone()));
                    creds.insert(("query".into(), n));
                }
            }
            let filters = service
                .filter_chains
                .iter()
                .chain(&route.filter_chains)
                .flat_map(|c| &c.filters);
            for f in filters.filter(|f| f.name == "webhook_guard") {
                let cfg = f.config.as_ref().unwrap();
                let headers: Vec<String> = match cfg["scheme"].as_str().unwrap() {
                    "espocrm" => vec!["signature".into(), "x-signature".into()],
                    "standard-webhooks" => vec!["webhook-signature".into()],
                    "shared-token" => vec![cfg["token_header"].as_str().unwrap().to_string()],
                    other => panic!("kong.yaml uses webhook_guard scheme {other}; describe it"),
                };
                creds.extend(headers.into_iter().map(|h| ("header".to_string(), h)));
            }
            let methods = route
                .methods
                .clone()
                .expect("every public route names its methods");
            for path in &route.paths {
                for m in &methods {
                    let m = m.to_ascii_lowercase();
                    expected.insert((path.clone(), m.clone()));
                    let op = &doc["paths"][path][&m];
                    if op.is_null() {
                        continue;
                    }
                    let documented = documented_credentials(&doc, op);
                    if documented != creds {
                        problems.push(format!(
                            "{m} {path}: documented credentials {documented:?}, kong.yaml checks {creds:?}"
                        ));
                    }
                }
            }
        }
    }
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            described.insert((path.clone(), m.clone()));
        }
    }
    assert_eq!(described, expected, "documented vs kong.yaml routes");
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Issue 13: each Vermieterhelden form (`docs/leads/examples`) through Kong's route (Standard
/// Webhooks verified at the edge) → worker → leads handler → fake EspoCRM, fields enriched; a
/// resend with the same `webhook-id` stays one Lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vermieterhelden_leads_through_kong_reach_espocrm() {
    let redis = RedisServer::start(false);
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let espo = espocrm::start(espocrm::EspoCrmConfig::default())
        .await
        .unwrap();
    let list = espo
        .insert("TargetList", json!({"name": "Newsletter"}))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let worker_port = free_port();
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    let _worker = WorkerProcess(
        Command::new(worker_bin())
            .arg("serve")
            .env_clear()
            .env("REDIS_URL", redis.url())
            .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
            .env("WORKER_ROLES", "intake,consumers")
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("ESPOCRM_API_BASE_URL", espo.api_url())
            .env("ESPOCRM_API_KEY", &espo.config().api_key)
            .env("LEADS_NEWSLETTER_TARGET_LIST_ID", &list)
            .env("LEADS_ASSIGN_VERMIETER_USER_ID", "userVermieter")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{worker_url}/health")).await;
    let lead_secret = vermieterhelden::generate_secret();
    let config = render(&vars(&adv, &worker_url, &placeholder_hooks(), &lead_secret));
    let gw = deployed_gateway(config, free_port()).await;
    let url = format!("{}/api/leads/vermieterhelden", gw.base_url());

    // (form, e-mail, E.164 phone) as the examples give them.
    let forms = [
        (
            "mieter",
            Some("erika.musterfrau@example.org"),
            Some("+495111234567"),
        ),
        (
            "vermieter",
            Some("max@mustermann-immobilien.example"),
            Some("+493098765432"),
        ),
        ("kontakt", None, Some("+4917655501234")),
        ("newsletter", Some("leser@example.org"), None),
    ];
    for (form, _, _) in forms {
        let text = std::fs::read_to_string(root().join(format!("docs/leads/examples/{form}.json")))
            .unwrap();
        let lead: Value = serde_json::from_str(&text).unwrap();
        let options = vermieterhelden::SendOptions {
            message_id: Some(format!("msg_e2e_{form}")),
            ..Default::default()
        };
        let (r, _) = vermieterhelden::send_lead_with(&url, &lead_secret, &lead, &options)
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{form}: {:?}", r.text().await);
    }
    // The WordPress plugin retries a delivery with the same webhook-id.
    let text = std::fs::read_to_string(root().join("docs/leads/examples/mieter.json")).unwrap();
    let options = vermieterhelden::SendOptions {
        message_id: Some("msg_e2e_mieter".into()),
        ..Default::default()
    };
    let (r, _) = vermieterhelden::send_lead_with(
        &url,
        &lead_secret,
        &serde_json::from_str(&text).unwrap(),
        &options,
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{:?}", r.status());

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let leads = loop {
        let all = espo.all("Lead");
        let linked = espo.related("TargetList", &list, "leads").len();
        if all.len() >= 4 && espo.all("Task").len() == 1 && linked == 1 {
            break all;
        }
        assert!(std::time::Instant::now() < deadline, "leads: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(leads.len(), 4, "one Lead per webhook-id");
    for (form, email, phone) in forms {
        let marker = format!("[vermieterhelden:msg_e2e_{form}]");
        let l = leads
            .iter()
            .find(|l| l["description"].as_str().unwrap_or("").contains(&marker))
            .unwrap_or_else(|| panic!("{form} lead"));
        assert_eq!(l["emailAddress"].as_str(), email, "{form}");
        assert_eq!(l["phoneNumber"].as_str(), phone, "{form}");
        assert_eq!(l["source"], "Web Site");
    }
    let vermieter = leads
        .iter()
        .find(|l| l["assignedUserId"] == "userVermieter")
        .unwrap();
    assert_eq!(vermieter["accountName"], "Mustermann Immobilien GmbH");
    assert_eq!(espo.related("TargetList", &list, "leads").len(), 1);

    // A correctly signed body that is not UTF-8 is refused at the edge with a clear error.
    let raw =
        b"{\"event\":\"lead.created\",\"lead_type\":\"mieter\",\"message\":\"\xff\"}".to_vec();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = vermieterhelden::sign(&lead_secret, "msg_e2e_latin1", ts, &raw).unwrap();
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "msg_e2e_latin1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid_json"));
    assert_eq!(espo.all("Lead").len(), 4);
}

/// Issue 15 item 2: the entity link/unlink hook routes of kong.yaml — a signed `link` delivery
/// reaches the worker as topic `vmh.entity.link`; the same delivery re-addressed to the
/// `unlink` path is refused (the link webhook is bound to `link`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_link_hooks_through_kong_carry_their_topic_and_action_binding() {
    let worker = bitbylaw_fakes::receiver::start_ok().await.unwrap();
    let adv = advoware::start(advoware::AdvowareConfig::default())
        .await
        .unwrap();
    let hooks = placeholder_hooks();
    let config = render(&vars(&adv, &worker.base_url(), &hooks, LEAD_SECRET));
    let gw = Gateway::start(GatewayOptions::new(config)).await.unwrap();
    let body = json!([{"id": "6745a1b2c3d4e5f60", "entityType": "Raeumungsklage",
                       "link": "dokumente", "foreignId": "6745a1b2c3d4e5f61"}]);
    let r = espocrm::send_webhook(
        &format!("{}/vmh/webhook/entity/link", gw.base_url()),
        &hooks["ESPOCRM_WEBHOOK_ENTITY_LINK_ID"],
        &hooks["ESPOCRM_WEBHOOK_ENTITY_LINK_SECRET"],
        &body,
        espocrm::SignatureStyle::Current,
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let forwarded = worker.requests();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].path, "/events");
    assert_eq!(
        forwarded[0].header("x-event-topic"),
        Some("vmh.entity.link")
    );

    let r = espocrm::send_webhook(
        &format!("{}/vmh/webhook/entity/unlink", gw.base_url()),
        &hooks["ESPOCRM_WEBHOOK_ENTITY_LINK_ID"],
        &hooks["ESPOCRM_WEBHOOK_ENTITY_LINK_SECRET"],
        &json!([{"id": "6745a1b2c3d4e5f60"}]),
        espocrm::SignatureStyle::Current,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(worker.requests().len(), 1, "nothing more forwarded");
}

/// The default deployment protects the worker's manual endpoints: compose refuses to start
/// without `WORKER_ADMIN_TOKEN` (`:?`) and gives it to the worker, whose listener is beyond
/// loopback there; kong.yaml renders the same variable into the routes' bearer.
#[test]
fn compose_requires_the_worker_admin_token() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("docker/compose.yaml")).unwrap())
            .unwrap();
    let env = &compose["services"]["worker"]["environment"];
    let token = env["WORKER_ADMIN_TOKEN"].as_str().unwrap_or_default();
    assert!(token.starts_with("${WORKER_ADMIN_TOKEN:?"), "{token:?}");
    let listen = env["WORKER_LISTEN_ADDR"].as_str().unwrap_or_default();
    assert!(!listen.starts_with("127."), "{listen}");
    let template = std::fs::read_to_string(root().join("kong.yaml")).unwrap();
    assert!(kong_config::template_vars(&template)
        .unwrap()
        .iter()
        .any(|v| v.name == "WORKER_ADMIN_TOKEN" && v.default.is_none()));
}
