//! The local sandbox: the whole product on loopback, with fakes for the outside world.
//!
//! It starts a `redis-server` (AOF on), stateful fakes of Advoware, EspoCRM,
//! Google Calendar (and 3CX/WordPress senders), the real worker binary, renders
//! the repository's `kong.yaml` with sandbox values and serves it through gateway
//! mode (the Kong stand-in) with the real `.wasm` filters. Then it walks through a
//! short demo — an Advoware proxy call, EspoCRM webhooks, the four Vermieterhelden lead
//! forms arriving in the EspoCRM fake (and a duplicate absorbed), a 3CX call report, a manual
//! calendar sync, a Beteiligter typed into EspoCRM appearing in Advoware (with its e-mail and
//! phone as marked Kommunikation entries) and an Advoware edit flowing back, two bank accounts
//! (one synced, one with a mistyped IBAN refused, masked) — printing each exchange, and keeps
//! running so you can send your own requests (`curl` lines are printed).
//!
//! Ports: gateway 127.0.0.1:8000, worker :18080, Advoware fake :18001,
//! EspoCRM fake :18002, Google fake :18003, Redis :16379 (override with --base-port).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bitbylaw_fakes::{advoware, espocrm, google_calendar, threecx, vermieterhelden, xai};
use clap::Parser;
use proxy_wasm_host::gateway::{Gateway, GatewayOptions, DEPLOYED_CLIENT_BODY_BUFFER_SIZE};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Run bitbylaw gateway locally against fakes")]
struct Args {
    /// Gateway listen address.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Skip the scripted demo.
    #[arg(long)]
    no_demo: bool,
    /// Stop after the demo instead of serving until Ctrl-C.
    #[arg(long)]
    exit_after_demo: bool,
}

/// Sandbox credentials: not secrets, shared by the fakes and the rendered kong.yaml.
const CLIENT_KEY: &str = "sandbox-client-key";
const GATEWAY_SECRET: &str = "sandbox-gateway-signing-secret";
const THREECX_KEY: &str = "sandbox-3cx-key";
/// `WORKER_ADMIN_TOKEN` of the sandbox worker; Kong's manual-endpoint routes inject it.
const ADMIN_TOKEN: &str = "sandbox-worker-admin-token";

/// Kills child processes when the sandbox ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn wait_http(url: &str) -> Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not become ready")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let root = repo_root();
    let state = tempfile::tempdir()?;
    let mut children = Children(Vec::new());

    // Redis with AOF, like production.
    let redis = Command::new("redis-server")
        .args([
            "--port",
            "16379",
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(state.path())
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (scripts/setup.sh installs it)")?;
    children.0.push(redis);

    // Fakes of the outside world.
    let adv = advoware::start(advoware::AdvowareConfig {
        bind: "127.0.0.1:18001".parse()?,
        ..Default::default()
    })
    .await?;
    adv.seed_demo();
    let espo = espocrm::start(espocrm::EspoCrmConfig {
        bind: "127.0.0.1:18002".parse()?,
        ..Default::default()
    })
    .await?;
    // The target list newsletter sign-ups are linked to (leads handler).
    let newsletter_list = espo
        .insert(
            "TargetList",
            json!({"name": "Newsletter vermieterhelden.de"}),
        )
        .and_then(|l| l["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let google = google_calendar::start(google_calendar::GoogleCalendarConfig {
        bind: "127.0.0.1:18003".parse()?,
        ..Default::default()
    })
    .await?;
    // 3CX Call Control API (outbound calls from the CRM).
    let pbx = threecx::start_call_control(threecx::CallControlConfig::default()).await?;
    // xAI Files + Collections (document sync).
    let xai_fake = xai::start(xai::XaiConfig::default()).await?;
    let ac = adv.config().clone();
    // A service-account key for the Google fake (fresh RSA key, token_uri → the fake).
    let key_dir = tempfile::tempdir()?;
    let sa_key = google
        .write_service_account_key(
            key_dir.path(),
            "calendar-sync@sandbox.iam.gserviceaccount.com",
        )
        .context("writing the service-account key (needs openssl)")?;

    // The worker, as it runs in production, pointed at the fakes.
    let worker_bin = root.join("target/debug/bitbylaw-worker");
    let worker_env: Vec<(&str, String)> = vec![
        ("REDIS_URL", "redis://127.0.0.1:16379/".into()),
        ("WORKER_LISTEN_ADDR", "127.0.0.1:18080".into()),
        ("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET.into()),
        // The manual endpoints want this bearer, as deployed (docker/compose.yaml).
        ("WORKER_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("WORKER_LOG_FORMAT", "text".into()),
        ("ADVOWARE_API_BASE_URL", adv.api_base_url()),
        ("ADVOWARE_SECURITY_GATEWAY_URL", adv.security_gateway_url()),
        ("ADVOWARE_KANZLEI", ac.kanzlei.clone()),
        ("ADVOWARE_DATABASE", ac.database.clone()),
        ("ADVOWARE_USER", ac.user.clone()),
        ("ADVOWARE_APP_ID", ac.app_id.clone()),
        ("ADVOWARE_PASSWORD", ac.password.clone()),
        ("ADVOWARE_API_KEY", ac.api_key_b64.clone()),
        ("ESPOCRM_API_BASE_URL", espo.api_url()),
        ("ESPOCRM_API_KEY", espo.config().api_key.clone()),
        ("LEADS_NEWSLETTER_TARGET_LIST_ID", newsletter_list.clone()),
        (
            "GOOGLE_CALENDAR_SERVICE_ACCOUNT_PATH",
            sa_key.display().to_string(),
        ),
        ("GOOGLE_CALENDAR_API_BASE_URL", google.api_base_url()),
        ("GOOGLE_CALENDAR_ROOT_URL", google.root_url()),
        ("THREECX_API_BASE_URL", pbx.base_url()),
        ("THREECX_CLIENT_ID", pbx.config().client_id.clone()),
        ("THREECX_CLIENT_SECRET", pbx.config().client_secret.clone()),
        // Burst of 2: the demo's call and its busy-extension call within one second.
        ("THREECX_CALLS_PER_MINUTE", "120".into()),
        // The optional Advoware call note, at the path the fake serves (an assumption, README).
        (
            "THREECX_ADVOWARE_NOTE_PATH",
            advoware::NOTIZEN_PATH.to_owned(),
        ),
        ("XAI_FILES_BASE_URL", xai_fake.files_url()),
        ("XAI_MANAGEMENT_BASE_URL", xai_fake.management_url()),
        ("XAI_API_KEY", xai_fake.config().api_key.clone()),
        (
            "XAI_MANAGEMENT_API_KEY",
            xai_fake.config().management_key.clone(),
        ),
    ];
    let worker = Command::new(&worker_bin)
        .arg("serve")
        .envs(worker_env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it: cargo build -p bitbylaw-worker)",
                worker_bin.display()
            )
        })?;
    children.0.push(worker);
    wait_http("http://127.0.0.1:18080/health").await?;

    // EspoCRM webhooks pointing at the gateway, as an admin would register them.
    let gw_url = format!("http://{}", args.listen);
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut link_hook: Option<espocrm::Webhook> = None;
    let crud = ["create", "update", "delete"].as_slice();
    for (entity, actions) in [
        ("beteiligte", crud),
        ("bankverbindungen", crud),
        ("document", crud),
        ("entity", ["link", "unlink", "create"].as_slice()),
    ] {
        let espo_entity = match entity {
            "beteiligte" => "CBeteiligte",
            "bankverbindungen" => "CBankverbindungen",
            _ => "CDokumente",
        };
        for action in actions {
            // The entity create hook: EspoCRM's own create webhook of cases.
            let espo_entity = if entity == "entity" && *action == "create" {
                "Raeumungsklage"
            } else {
                espo_entity
            };
            let hook = espo.add_webhook(
                &format!("{espo_entity}.{action}"),
                &format!("{gw_url}/vmh/webhook/{entity}/{action}"),
            );
            let prefix = format!(
                "ESPOCRM_WEBHOOK_{}_{}",
                entity.to_uppercase(),
                action.to_uppercase()
            );
            vars.insert(format!("{prefix}_ID"), hook.id.clone());
            vars.insert(format!("{prefix}_SECRET"), hook.secret_key.clone());
            if entity == "entity" && *action == "link" {
                link_hook = Some(hook.clone());
            }
        }
    }
    let lead_secret = vermieterhelden::generate_secret();
    for (k, v) in [
        ("KONG_API_CLIENT_KEY", CLIENT_KEY.to_string()),
        ("KONG_CRM_READONLY_KEY", "crm-readonly-key".to_string()),
        ("ADVOWARE_API_BASE_URL", adv.base_url()),
        ("ADVOWARE_TOKEN_TARGET", adv.addr().to_string()),
        ("ADVOWARE_TOKEN_SCHEME", "http".to_string()),
        ("ADVOWARE_KANZLEI", ac.kanzlei.clone()),
        ("ADVOWARE_DATABASE", ac.database.clone()),
        ("ADVOWARE_USER", ac.user.clone()),
        ("ADVOWARE_APP_ID", ac.app_id.clone()),
        ("ADVOWARE_PASSWORD", ac.password.clone()),
        ("ADVOWARE_API_KEY", ac.api_key_b64.clone()),
        ("WORKER_URL", "http://127.0.0.1:18080".to_string()),
        ("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET.to_string()),
        ("VERMIETERHELDEN_WEBHOOK_SECRET", lead_secret.clone()),
        ("THREECX_API_KEY", THREECX_KEY.to_string()),
        ("WORKER_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
    ] {
        vars.insert(k.to_string(), v);
    }
    let template = std::fs::read_to_string(root.join("kong.yaml"))?;
    let rendered = kong_config::render(&template, &|name| vars.get(name).cloned())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let filters_dir = proxy_wasm_host::host::default_filters_dir();
    let meta_dir = root.join("wasm-plugins");
    let config = kong_config::validate_document(&rendered, &filters_dir, &[meta_dir.as_path()])
        .map_err(|problems| {
            anyhow::anyhow!(
                "rendered kong.yaml is invalid:\n{}",
                problems
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
    let mut opts = GatewayOptions::new(config);
    opts.listen = args.listen;
    opts.filters_dir = filters_dir;
    opts.client_body_buffer_size = DEPLOYED_CLIENT_BODY_BUFFER_SIZE;
    let gateway = Gateway::start(opts).await?;
    println!("\n== bitbylaw sandbox ==");
    println!("gateway (Kong stand-in)  {}", gateway.base_url());
    println!("worker                   http://127.0.0.1:18080  (/health /ready /metrics)");
    println!("Advoware fake            {}", adv.base_url());
    println!("EspoCRM fake             {}", espo.base_url());
    println!("Google Calendar fake     {}", google.api_base_url());

    if !args.no_demo {
        demo(&gw_url, &espo, &google, &lead_secret).await?;
        outbound_demo(&gw_url, &espo, &pbx).await?;
        beteiligte_demo(&adv, &espo, &worker_bin, &worker_env).await?;
        if let Some(hook) = &link_hook {
            documents_demo(&gw_url, &espo, &xai_fake, hook).await?;
        }
        bankverbindungen_demo(&adv, &espo).await?;
        call_note_demo(&gw_url, &adv, &espo).await?;
    }
    println!("\nTry it yourself:");
    println!("  curl -s -H 'apikey: {CLIENT_KEY}' '{gw_url}/advoware/proxy?endpoint=Mitarbeiter'");
    println!("  curl -s -X POST -H 'apikey: {CLIENT_KEY}' -H 'content-type: application/json' -d '{{\"kuerzel\":\"ALL\"}}' {gw_url}/advoware/calendar/sync");
    println!("  curl -s -X POST -H 'x-api-key: {THREECX_KEY}' -H 'content-type: application/json' --data-binary @tests/fixtures/3cx-reportcall.json {gw_url}/3cx/calls");
    println!("  curl -s -H 'x-api-key: {THREECX_KEY}' '{gw_url}/3cx/lookup?phone=0511%2012345'");
    println!("  curl -s -X POST -H 'apikey: {CLIENT_KEY}' -H 'content-type: application/json' -d '{{\"phone\":\"0511 12345\",\"extension\":\"201\"}}' {gw_url}/3cx/call");
    println!("  curl -s http://127.0.0.1:18080/metrics | grep bitbylaw_");
    println!("  (worker env as above) target/debug/bitbylaw-worker calendar audit --kuerzel SB");
    println!("  (worker env as above) target/debug/bitbylaw-worker beteiligte status");
    println!("  (worker env as above) target/debug/bitbylaw-worker documents audit");
    println!(
        "  target/debug/bitbylaw-worker queue stats   (with REDIS_URL=redis://127.0.0.1:16379/)"
    );
    if args.exit_after_demo {
        return Ok(());
    }
    println!("\nCtrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    drop(children);
    Ok(())
}

/// A scripted walk through the main flows, printing what happened.
async fn demo(
    gw: &str,
    espo: &espocrm::EspoCrmFake,
    google: &google_calendar::GoogleCalendarFake,
    lead_secret: &str,
) -> Result<()> {
    let client = reqwest::Client::new();
    println!("\n-- Advoware proxy: GET /advoware/proxy?endpoint=Mitarbeiter (token minted inside the filter)");
    let r = client
        .get(format!("{gw}/advoware/proxy?endpoint=Mitarbeiter"))
        .header("apikey", CLIENT_KEY)
        .send()
        .await?;
    println!("   {} {}", r.status(), truncate(&r.text().await?));

    println!("-- Advoware proxy without API key");
    let r = client
        .get(format!("{gw}/advoware/proxy?endpoint=Mitarbeiter"))
        .send()
        .await?;
    println!("   {} {}", r.status(), r.text().await?);

    println!("-- Advoware proxy with a path traversal attempt");
    let r = client
        .get(format!("{gw}/advoware/proxy?endpoint=..%2F..%2Fadmin"))
        .header("apikey", CLIENT_KEY)
        .send()
        .await?;
    println!("   {} {}", r.status(), r.text().await?);

    println!("-- EspoCRM: a CBeteiligte is created and updated; EspoCRM's webhook job delivers signed batches");
    let created = espo
        .insert(
            "CBeteiligte",
            json!({"firmenname": "Muster GmbH", "rechtsform": "GmbH", "syncStatus": "pending_sync"}),
        )
        .unwrap_or_default();
    if let Some(id) = created.get("id").and_then(|v| v.as_str()) {
        espo.edit(
            "CBeteiligte",
            id,
            json!({"firmenname": "Muster GmbH & Co. KG", "rechtsform": "GmbH & Co. KG"}),
        );
    }
    for d in espo.flush_webhooks().await {
        println!(
            "   webhook {} → {:?} ({} events)",
            d.webhook_id, d.status, d.events
        );
    }

    println!("-- EspoCRM batch with a forged signature");
    let r = espocrm::send_webhook(
        &format!("{gw}/vmh/webhook/beteiligte/update"),
        "forged",
        "wrong-secret",
        &json!([{"id": "x1"}]),
        espocrm::SignatureStyle::Current,
    )
    .await?;
    println!("   {} {}", r.status(), r.text().await?);

    println!(
        "-- Vermieterhelden leads, one per form (docs/leads/examples, Standard Webhooks signature)"
    );
    let examples = [
        (
            "mieter",
            include_str!("../../../docs/leads/examples/mieter.json"),
        ),
        (
            "vermieter",
            include_str!("../../../docs/leads/examples/vermieter.json"),
        ),
        (
            "kontakt",
            include_str!("../../../docs/leads/examples/kontakt.json"),
        ),
        (
            "newsletter",
            include_str!("../../../docs/leads/examples/newsletter.json"),
        ),
    ];
    let url = format!("{gw}/api/leads/vermieterhelden");
    for (name, text) in examples {
        let lead: serde_json::Value = serde_json::from_str(text)?;
        let options = vermieterhelden::SendOptions {
            message_id: Some(format!("msg_sandbox_{name}")),
            ..Default::default()
        };
        match vermieterhelden::send_lead_with(&url, lead_secret, &lead, &options).await {
            Ok((r, _)) => println!("   {name}: {} {}", r.status(), r.text().await?),
            Err(e) => println!("   {name}: failed: {e}"),
        }
    }
    println!("-- the Mieter lead again, same webhook-id (a sender retry): absorbed");
    let lead: serde_json::Value = serde_json::from_str(examples[0].1)?;
    let options = vermieterhelden::SendOptions {
        message_id: Some("msg_sandbox_mieter".into()),
        ..Default::default()
    };
    match vermieterhelden::send_lead_with(&url, lead_secret, &lead, &options).await {
        Ok((r, _)) => println!("   {} {}", r.status(), r.text().await?),
        Err(e) => println!("   failed: {e}"),
    }
    for _ in 0..100 {
        if espo.all("Lead").len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("-- leads in the EspoCRM fake");
    for l in espo.all("Lead") {
        println!(
            "   {}  {} <{}> {}  status {}  assigned {}",
            l["id"].as_str().unwrap_or("?"),
            l["name"].as_str().unwrap_or(""),
            l["emailAddress"].as_str().unwrap_or("-"),
            l["phoneNumber"].as_str().unwrap_or("-"),
            l["status"].as_str().unwrap_or("?"),
            l["assignedUserId"].as_str().unwrap_or("-"),
        );
    }

    println!("-- 3CX lookup (CRM template, static API key): a hit, then an unknown number");
    espo.insert(
        "Contact",
        json!({"firstName": "Max", "lastName": "Mustermann", "phoneNumber": "+4951112345"}),
    );
    for phone in ["0511 12345", "+49 40 999999"] {
        let r = threecx::lookup(&format!("{gw}/3cx/lookup"), THREECX_KEY, phone).await?;
        println!("   {phone}: {} {}", r.status(), r.text().await?);
    }

    println!("-- 3CX ReportCall: a held call and a missed one (→ call-back task)");
    let held: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/3cx-reportcall.json"))?;
    let mut missed = held.clone();
    missed["CallType"] = json!("Missed");
    missed["CallStartTimeUTC"] = json!("2026-11-23T15:00:00Z");
    missed["CallEstablishedTimeUTC"] = json!("");
    missed["CallEndTimeUTC"] = json!("2026-11-23T15:00:25Z");
    missed["Duration"] = json!("");
    for call in [&held, &missed] {
        let r = threecx::report_call(&format!("{gw}/3cx/calls"), "x-api-key", THREECX_KEY, call)
            .await?;
        println!("   {} {}", r.status(), r.text().await?);
    }
    for _ in 0..100 {
        if espo.all("Call").len() >= 2 && !espo.all("Task").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for c in espo.all("Call") {
        println!(
            "   Call {}  {}  {}  {} → {}  parent {} {}",
            c["id"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or("?"),
            c["dateStart"].as_str().unwrap_or("?"),
            c["dateEnd"].as_str().unwrap_or("?"),
            c["parentType"].as_str().unwrap_or("-"),
            c["parentId"].as_str().unwrap_or("-"),
        );
    }
    for t in espo.all("Task") {
        println!(
            "   Task {}  {}  due {}",
            t["id"].as_str().unwrap_or("?"),
            t["name"].as_str().unwrap_or(""),
            t["dateEnd"].as_str().unwrap_or("?"),
        );
    }

    println!("-- manual calendar sync trigger");
    let r = client
        .post(format!("{gw}/advoware/calendar/sync"))
        .header("apikey", CLIENT_KEY)
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await?;
    println!("   {} {}", r.status(), r.text().await?);
    // Kong injected the worker's bearer; straight to the worker without it is refused.
    let r = client
        .post("http://127.0.0.1:18080/calendar/sync")
        .json(&json!({"kuerzel": "ALL"}))
        .send()
        .await?;
    println!(
        "   direct to the worker without the admin bearer: {} {}",
        r.status(),
        r.text().await?
    );
    // The worker fans out one job per employee and mirrors each calendar to Google.
    let mut shown = false;
    for _ in 0..100 {
        let cal = google
            .calendar_ids()
            .into_iter()
            .find(|id| google.live_events(id).len() >= 3);
        if let Some(cal) = cal {
            println!("-- calendar sync result: Google calendar {cal}");
            for e in google.live_events(&cal) {
                println!(
                    "   {}  {}  frNr {}",
                    e["start"]["dateTime"]
                        .as_str()
                        .or(e["start"]["date"].as_str())
                        .unwrap_or("?"),
                    e["summary"].as_str().unwrap_or(""),
                    e["extendedProperties"]["private"]["advowareFrNr"]
                        .as_str()
                        .unwrap_or("-")
                );
            }
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !shown {
        println!("   (no calendar synced yet; see the worker log)");
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = client
        .get("http://127.0.0.1:18080/metrics")
        .send()
        .await?
        .text()
        .await?;
    println!("-- worker metrics (excerpt)");
    for line in metrics
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.contains("received")
                    || l.contains("enqueued")
                    || l.contains("queue_depth")
                    || l.contains("calendar_sync"))
        })
        .take(16)
    {
        println!("   {line}");
    }
    Ok(())
}

/// Outbound calls: the CRM asks the gateway (key-auth) to call a lead from extension 201; the
/// worker resolves the lead's number in EspoCRM and asks the 3CX Call Control fake (token,
/// makecall); the status follows the participant; a busy extension is a clear 409.
async fn outbound_demo(
    gw: &str,
    espo: &espocrm::EspoCrmFake,
    pbx: &threecx::CallControlFake,
) -> Result<()> {
    let client = reqwest::Client::new();
    let lead_id = espo
        .insert(
            "Lead",
            json!({"firstName": "Erika", "lastName": "Rückruf", "phoneNumber": "0511 7654321"}),
        )
        .and_then(|l| l["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    println!("-- 3CX outbound call: POST /3cx/call {{lead_id, extension 201}} (Kong key-auth)");
    let r = client
        .post(format!("{gw}/3cx/call"))
        .header("apikey", CLIENT_KEY)
        .json(&json!({"lead_id": lead_id, "extension": "201"}))
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    println!("   {status} {body}");
    if let (Some(id), Some(p)) = (body["id"].as_str(), pbx.participants().first()) {
        pbx.set_status(&p.dn, p.id, "Connected");
        let r = client
            .get(format!("{gw}/3cx/call/{id}"))
            .header("apikey", CLIENT_KEY)
            .send()
            .await?;
        println!("   GET /3cx/call/{id}: {} {}", r.status(), r.text().await?);
    }
    println!("-- the same without an API key, then from a busy extension");
    let r = client
        .post(format!("{gw}/3cx/call"))
        .json(&json!({"phone": "0511 12345", "extension": "202"}))
        .send()
        .await?;
    println!("   {} {}", r.status(), r.text().await?);
    pbx.set_busy("202", true);
    let r = client
        .post(format!("{gw}/3cx/call"))
        .header("apikey", CLIENT_KEY)
        .json(&json!({"phone": "0511 12345", "extension": "202"}))
        .send()
        .await?;
    println!("   {} {}", r.status(), r.text().await?);
    let c = pbx.counters();
    println!(
        "   3CX fake: {} token(s) issued, {} call(s) placed",
        c.token_issues, c.calls_placed
    );
    Ok(())
}

/// The Beteiligte sync: a person typed into EspoCRM appears in Advoware with `betnr` written
/// back; an edit in Advoware flows back (here by `beteiligte sync`, in production by the
/// 15-minute check once the last sync is older than `BETEILIGTE_CHECK_CLEAN_AGE_HOURS`).
async fn beteiligte_demo(
    adv: &advoware::AdvowareFake,
    espo: &espocrm::EspoCrmFake,
    worker_bin: &Path,
    worker_env: &[(&str, String)],
) -> Result<()> {
    println!("-- Beteiligte sync: Erika Mustermann is typed into EspoCRM");
    let created = espo
        .insert(
            "CBeteiligte",
            json!({"firstName": "Erika", "lastName": "Mustermann", "salutationName": "Ms.",
                "dateOfBirth": "1964-08-12", "syncStatus": "pending_sync",
                "emailAddressData": [{"emailAddress": "erika@example.de", "primary": true}],
                "phoneNumberData": [{"phoneNumber": "030 1234567", "type": "Mobile", "primary": true}]}),
        )
        .unwrap_or_default();
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let mut bet_nr = None;
    for _ in 0..100 {
        // EspoCRM's webhook job runs every few minutes; here we deliver at once.
        espo.flush_webhooks().await;
        let rec = espo.get("CBeteiligte", &id).unwrap_or_default();
        if rec["syncStatus"] == "clean" {
            bet_nr = rec["betnr"].as_i64();
            println!(
                "   EspoCRM {id}: betnr {} syncStatus {} advowareRowId {}",
                rec["betnr"], rec["syncStatus"], rec["advowareRowId"]
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(bet_nr) = bet_nr else {
        println!("   (not synced yet; see the worker log)");
        return Ok(());
    };
    let aw = adv.beteiligter(bet_nr).unwrap_or_default();
    println!(
        "   Advoware Beteiligter {bet_nr}: {} {} ({}), born {}",
        aw["anrede"].as_str().unwrap_or(""),
        aw["vorname"].as_str().unwrap_or(""),
        aw["name"].as_str().unwrap_or(""),
        aw["geburtsdatum"].as_str().unwrap_or("")
    );
    // Let the echoes of the sync's own EspoCRM writes run first (they write nothing).
    for _ in 0..150 {
        espo.flush_webhooks().await;
        if beteiligte_queue_empty().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Issue 12: the run after the create (the write-back's webhook) brought the Kommunikation.
    let aw = adv.beteiligter(bet_nr).unwrap_or_default();
    for k in aw["kommunikation"].as_array().into_iter().flatten() {
        println!(
            "   Advoware Kommunikation {}: kommKz {} tlf {} bemerkung {}",
            k["id"], k["kommKz"], k["tlf"], k["bemerkung"]
        );
    }
    println!("-- an Advoware user corrects the name to Musterfrau; `beteiligte sync {id}`");
    adv.edit_beteiligter(bet_nr, json!({"name": "Musterfrau"}));
    let out = Command::new(worker_bin)
        .args(["beteiligte", "sync", &id])
        .envs(worker_env.iter().map(|(k, v)| (k, v)))
        .env("WORKER_LOG_LEVEL", "warn")
        .output()?;
    println!("   {}", String::from_utf8_lossy(&out.stdout).trim());
    let rec = espo.get("CBeteiligte", &id).unwrap_or_default();
    println!(
        "   EspoCRM {id}: lastName {} syncStatus {}",
        rec["lastName"], rec["syncStatus"]
    );
    Ok(())
}

/// The document sync: a document linked to an eviction case appears in the case's xAI
/// collection. The link hook is EspoCRM's custom `entity/link` webhook, sent through the gateway.
async fn documents_demo(
    gw: &str,
    espo: &espocrm::EspoCrmFake,
    xai_fake: &xai::XaiFake,
    hook: &espocrm::Webhook,
) -> Result<()> {
    println!("-- documents: Klageschrift.pdf is linked to an eviction case (Raeumungsklage)");
    let case = espo
        .insert(
            "Raeumungsklage",
            json!({"name": "Räumung Musterstraße 1", "status": "Offen"}),
        )
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let att = espo.insert_attachment("application/pdf", b"%PDF-1.7 Klageschrift".to_vec());
    let doc = espo
        .insert(
            "CDokumente",
            json!({"name": "Klageschrift.pdf", "dokumentId": att, "fileStatus": "new"}),
        )
        .and_then(|d| d["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    espo.relate("CDokumente", &doc, "raeumungsklagen", &case);
    let r = espocrm::send_webhook(
        &format!("{gw}/vmh/webhook/entity/link"),
        &hook.id,
        &hook.secret_key,
        &json!([{"id": case, "entityType": "Raeumungsklage"}]),
        espocrm::SignatureStyle::Both,
    )
    .await?;
    println!("   link hook → gateway: {}", r.status());
    for _ in 0..100 {
        let rec = espo.get("CDokumente", &doc).unwrap_or_default();
        if rec["xaiSyncStatus"] == "clean" {
            let col = espo
                .get("Raeumungsklage", &case)
                .and_then(|c| c["xaiCollectionId"].as_str().map(str::to_owned))
                .unwrap_or_default();
            println!(
                "   case {case}: xAI collection {col} holds {:?}",
                xai_fake.members(&col)
            );
            println!(
                "   CDokumente {doc}: xaiId {} xaiSyncStatus {} xaiSyncedHash {}",
                rec["xaiId"], rec["xaiSyncStatus"], rec["xaiSyncedHash"]
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("   (not synced yet; see the worker log)");
    Ok(())
}

/// The Bankverbindungen sync: a bank account typed into EspoCRM appears under its Beteiligter in
/// Advoware with the id written back; an invalid IBAN ends `failed` with a masked message and
/// nothing sent to Advoware.
async fn bankverbindungen_demo(
    adv: &advoware::AdvowareFake,
    espo: &espocrm::EspoCrmFake,
) -> Result<()> {
    println!("-- Bankverbindungen: two accounts of Max Beispiel (betnr in both systems) are typed into EspoCRM");
    let bet_nr = adv.insert_beteiligter(json!({"name": "Beispiel", "vorname": "Max"}));
    let bet = espo
        .insert(
            "CBeteiligte",
            json!({"firstName": "Max", "lastName": "Beispiel", "betnr": bet_nr, "syncStatus": "clean"}),
        )
        .unwrap_or_default();
    let mut ids = Vec::new();
    for (name, iban) in [
        ("Girokonto", "DE89 3704 0044 0532 0130 00"),
        ("Tippfehler", "DE89 3704 0044 0532 0130 01"),
    ] {
        let rec = espo
            .insert(
                "CBankverbindungen",
                json!({"name": name, "iban": iban, "bic": "COBADEFFXXX", "bankname": "Commerzbank",
                    "beteiligteId": bet["id"]}),
            )
            .unwrap_or_default();
        ids.push(rec["id"].as_str().unwrap_or_default().to_owned());
    }
    for _ in 0..100 {
        espo.flush_webhooks().await;
        let done = ids.iter().all(|id| {
            let st = espo.get("CBankverbindungen", id).unwrap_or_default()["syncStatus"].clone();
            st == "clean" || st == "failed"
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        let rec = espo.get("CBankverbindungen", id).unwrap_or_default();
        println!(
            "   EspoCRM {} {id}: syncStatus {} advowareKontoId {} {}",
            rec["name"],
            rec["syncStatus"],
            rec["advowareKontoId"],
            rec["syncErrorMessage"].as_str().unwrap_or("")
        );
    }
    for entry in adv.bankverbindungen(bet_nr) {
        println!(
            "   Advoware Beteiligter {bet_nr}: Bankverbindung {} bank {} (the worker log shows the IBAN only masked)",
            entry["id"], entry["bank"]
        );
    }
    Ok(())
}

/// No Beteiligte job queued, in flight or delayed (the worker's queue gauges).
/// A call of a Beteiligter linked to Advoware: the Call in EspoCRM and a note in Advoware.
async fn call_note_demo(
    gw: &str,
    adv: &advoware::AdvowareFake,
    espo: &espocrm::EspoCrmFake,
) -> Result<()> {
    println!("-- 3CX ReportCall of a Beteiligter linked to Advoware → Call in EspoCRM + note in Advoware");
    let bet_nr = adv.insert_beteiligter(json!({"name": "Vermieter GmbH"}));
    espo.insert(
        "CBeteiligte",
        json!({"firmenname": "Vermieter GmbH", "phoneNumber": "+49305550100", "betnr": bet_nr,
            "syncStatus": "clean"}),
    );
    let mut call: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/3cx-reportcall.json"))?;
    call["Number"] = json!("+49305550100");
    call["Name"] = json!("Vermieter GmbH");
    call["EntityId"] = json!("");
    call["CallStartTimeUTC"] = json!("2026-11-24T09:00:00Z");
    call["CallEstablishedTimeUTC"] = json!("2026-11-24T09:00:05Z");
    call["CallEndTimeUTC"] = json!("2026-11-24T09:03:00Z");
    let r =
        threecx::report_call(&format!("{gw}/3cx/calls"), "x-api-key", THREECX_KEY, &call).await?;
    println!("   {} {}", r.status(), r.text().await?);
    for _ in 0..100 {
        if !adv.notizen(bet_nr).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in adv.notizen(bet_nr) {
        println!(
            "   Advoware note on Beteiligter {bet_nr}: {} | {}",
            n["datum"].as_str().unwrap_or("?"),
            n["text"].as_str().unwrap_or("").replace('\n', " / "),
        );
    }
    Ok(())
}

async fn beteiligte_queue_empty() -> bool {
    let Ok(r) = reqwest::get("http://127.0.0.1:18080/metrics").await else {
        return false;
    };
    let Ok(text) = r.text().await else {
        return false;
    };
    text.lines()
        .filter(|l| l.starts_with("bitbylaw_worker_queue_depth{topic=\"vmh.beteiligte."))
        .all(|l| l.ends_with(" 0"))
}

fn truncate(s: &str) -> String {
    if s.len() > 300 {
        format!(
            "{}…",
            &s[..s
                .char_indices()
                .take_while(|(i, _)| *i < 300)
                .last()
                .map(|(i, c)| i + c.len_utf8())
                .unwrap_or(0)]
        )
    } else {
        s.to_string()
    }
}
