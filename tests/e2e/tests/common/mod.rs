//! Shared by the end-to-end tests and the gateway benchmark: kong.yaml rendered for the fakes,
//! the worker binary, the gateway as deployed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use bitbylaw_fakes::{advoware, espocrm};
use proxy_wasm_host::gateway::{Gateway, GatewayOptions, DEPLOYED_CLIENT_BODY_BUFFER_SIZE};

pub const CLIENT_KEY: &str = "e2e-client-key";
pub const GATEWAY_SECRET: &str = "e2e-gateway-signing-secret";
pub const THREECX_KEY: &str = "e2e-3cx-key";
/// `WORKER_ADMIN_TOKEN`: set on the workers under test and rendered into kong.yaml, whose
/// manual-endpoint routes inject it as the bearer.
pub const ADMIN_TOKEN: &str = "e2e-worker-admin-token";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn worker_bin() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let bin = target.join("debug/bitbylaw-worker");
    assert!(
        bin.exists(),
        "build the worker first: cargo build -p bitbylaw-worker ({})",
        bin.display()
    );
    bin
}

/// Values for every variable kong.yaml needs.
pub fn vars(
    advoware: &advoware::AdvowareFake,
    worker_url: &str,
    espo_hooks: &HashMap<String, String>,
    lead_secret: &str,
) -> HashMap<String, String> {
    let c = advoware.config();
    let mut v: HashMap<String, String> = [
        ("KONG_API_CLIENT_KEY", CLIENT_KEY.to_string()),
        ("KONG_CRM_READONLY_KEY", "crm-readonly-key".to_string()),
        ("ADVOWARE_API_BASE_URL", advoware.base_url()),
        ("ADVOWARE_TOKEN_TARGET", advoware.addr().to_string()),
        ("ADVOWARE_TOKEN_SCHEME", "http".to_string()),
        ("ADVOWARE_KANZLEI", c.kanzlei.clone()),
        ("ADVOWARE_DATABASE", c.database.clone()),
        ("ADVOWARE_USER", c.user.clone()),
        ("ADVOWARE_APP_ID", c.app_id.clone()),
        ("ADVOWARE_PASSWORD", c.password.clone()),
        ("ADVOWARE_API_KEY", c.api_key_b64.clone()),
        ("WORKER_URL", worker_url.to_string()),
        ("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET.to_string()),
        ("VERMIETERHELDEN_WEBHOOK_SECRET", lead_secret.to_string()),
        ("THREECX_API_KEY", THREECX_KEY.to_string()),
        ("WORKER_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    v.extend(espo_hooks.clone());
    v
}

pub fn placeholder_hooks() -> HashMap<String, String> {
    let mut m = HashMap::new();
    let crud = ["CREATE", "UPDATE", "DELETE"].as_slice();
    let links = ["LINK", "UNLINK", "CREATE"].as_slice();
    for (entity, actions) in [
        ("BETEILIGTE", crud),
        ("BANKVERBINDUNGEN", crud),
        ("DOCUMENT", crud),
        ("ENTITY", links),
    ] {
        for action in actions {
            m.insert(
                format!("ESPOCRM_WEBHOOK_{entity}_{action}_ID"),
                format!("{entity}{action}id").to_lowercase(),
            );
            m.insert(
                format!("ESPOCRM_WEBHOOK_{entity}_{action}_SECRET"),
                format!("secret-{entity}-{action}"),
            );
        }
    }
    m
}

pub fn render(vars: &HashMap<String, String>) -> kong_config::model::KongConfig {
    let template = std::fs::read_to_string(root().join("kong.yaml")).unwrap();
    let rendered = kong_config::render(&template, &|name| vars.get(name).cloned()).unwrap();
    let filters_dir = proxy_wasm_host::host::default_filters_dir();
    let meta = root().join("wasm-plugins");
    match kong_config::validate_document(&rendered, &filters_dir, &[meta.as_path()]) {
        Ok(c) => c,
        Err(problems) => panic!("rendered kong.yaml invalid: {problems:#?}"),
    }
}

pub fn espo_hooks(espo: &espocrm::EspoCrmFake, gw_url: &str) -> HashMap<String, String> {
    let mut hooks = HashMap::new();
    let crud = ["create", "update", "delete"].as_slice();
    for (entity, espo_entity, actions) in [
        ("BETEILIGTE", "CBeteiligte", crud),
        ("BANKVERBINDUNGEN", "CBankverbindungen", crud),
        ("DOCUMENT", "CDokumente", crud),
        // The seeds' custom link hook: registered like the others so its id and secret exist.
        ("ENTITY", "CDokumente", ["link", "unlink"].as_slice()),
        // The entity create hook: EspoCRM's own create webhook of cases.
        ("ENTITY", "Raeumungsklage", ["create"].as_slice()),
    ] {
        for action in actions {
            let hook = espo.add_webhook(
                &format!("{espo_entity}.{action}"),
                &format!("{gw_url}/vmh/webhook/{}/{action}", entity.to_lowercase()),
            );
            hooks.insert(
                format!("ESPOCRM_WEBHOOK_{entity}_{}_ID", action.to_uppercase()),
                hook.id,
            );
            hooks.insert(
                format!("ESPOCRM_WEBHOOK_{entity}_{}_SECRET", action.to_uppercase()),
                hook.secret_key,
            );
        }
    }
    hooks
}

pub struct WorkerProcess(pub Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The worker binary serving intake and consumers on a free port against `redis_url`, with the
/// gateway secret and `env`; returns the process and its base URL once `/health` answers.
pub async fn spawn_worker(redis_url: &str, env: &[(&str, String)]) -> (WorkerProcess, String) {
    let port = bitbylaw_fakes::redis_server::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = std::process::Command::new(worker_bin())
        .arg("serve")
        .env_clear()
        .env("REDIS_URL", redis_url)
        .env("GATEWAY_SIGNING_SECRET", GATEWAY_SECRET)
        .env("WORKER_ROLES", "intake,consumers")
        .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let worker = WorkerProcess(child);
    wait_ready(&format!("{url}/health")).await;
    (worker, url)
}

pub async fn wait_ready(url: &str) {
    for _ in 0..200 {
        if reqwest::get(url)
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} not ready");
}

/// The gateway as deployed (Kong node settings from docker/compose.yaml) on `port`.
pub async fn deployed_gateway(config: kong_config::model::KongConfig, port: u16) -> Gateway {
    let mut opts = GatewayOptions::new(config);
    opts.listen = format!("127.0.0.1:{port}").parse().unwrap();
    opts.client_body_buffer_size = DEPLOYED_CLIENT_BODY_BUFFER_SIZE;
    Gateway::start(opts).await.unwrap()
}

/// The Vermieterhelden signing secret of the end-to-end tests: obviously not a real one
/// (`whsec_` + base64 of "test-only-lead-secret-do-not-use").
#[allow(dead_code)] // not every test file signs leads
pub const LEAD_SECRET: &str = "whsec_dGVzdC1vbmx5LWxlYWQtc2VjcmV0LWRvLW5vdC11c2U=";
