//! Test utilities: a real `redis-server` on a free port, the real worker binary, signed requests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

pub use bitbylaw_fakes::redis_server::{free_port, RedisServer};

pub mod sides;

pub const SECRET: &str = "test-gateway-secret-0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bitbylaw-worker")
}

/// Environment of a worker under test: fast timeouts, test handlers, no default schedules.
pub fn base_env(redis_url: &str, port: u16) -> Vec<(String, String)> {
    [
        ("REDIS_URL", redis_url.to_string()),
        ("WORKER_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("GATEWAY_SIGNING_SECRET", SECRET.to_string()),
        ("WORKER_TEST_HANDLERS", "1".to_string()),
        ("WORKER_ROLES", "intake,consumers".to_string()),
        ("WORKER_VISIBILITY_TIMEOUT_MS", "2000".to_string()),
        ("WORKER_RETRY_DELAYS_MS", "100,200".to_string()),
        ("WORKER_RETRY_MAX_ATTEMPTS", "3".to_string()),
        ("WORKER_LOCK_BUSY_DELAY_MS", "200".to_string()),
        ("WORKER_PROMOTE_INTERVAL_MS", "50".to_string()),
        ("WORKER_LOG_LEVEL", "info".to_string()),
        ("WORKER_LOG_FORMAT", "json".to_string()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The real worker binary, killed on drop.
pub struct Worker {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Worker {
    pub fn spawn(redis_url: &str, overrides: &[(&str, &str)], args: &[&str]) -> Worker {
        let port = free_port();
        let mut env = base_env(redis_url, port);
        for (k, v) in overrides {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("worker.log");
        let logfile = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .env_clear()
            .envs(env)
            .arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .unwrap();
        let w = Worker {
            child: Some(child),
            port,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _logdir: logdir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "worker did not listen; log:\n{}",
                w.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- worker log (port {}) ----\n{}",
                self.port,
                self.log_text()
            );
        }
        self.kill9();
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Signs like the edge filter does and posts to `/events`.
pub async fn post_event(base: &str, topic: &str, body: &[u8]) -> (u16, serde_json::Value) {
    post_event_at(base, topic, body, now_secs(), SECRET).await
}

/// [`post_event`] under a given event id (the sender's id: the idempotency key of leads); the
/// status only.
pub async fn post_event_as(base: &str, topic: &str, event_id: &str, body: &[u8]) -> u16 {
    gateway_request(base, topic, event_id, body, now_secs(), SECRET)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub async fn post_event_at(
    base: &str,
    topic: &str,
    body: &[u8],
    at: u64,
    secret: &str,
) -> (u16, serde_json::Value) {
    let event_id = format!("evt-{}", uuid::Uuid::new_v4().simple());
    let resp = gateway_request(base, topic, &event_id, body, at, secret)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let json = resp
        .json::<serde_json::Value>()
        .await
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

pub fn job_ids(v: &serde_json::Value) -> Vec<String> {
    v["jobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|j| j["job_id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn metrics_text(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `GET {base}/ready`: its JSON body, whatever the status (200 ready, 503 not ready).
pub async fn ready_json(base: &str) -> serde_json::Value {
    client()
        .get(format!("{base}/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Value of a sample `name{labels…}` whose label set contains `label` (e.g. `topic="test.record"`).
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| label.is_empty() || l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Runs an admin CLI command against `redis_url`; returns (success, stdout, stderr).
pub fn cli(redis_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .env_clear()
        .env("REDIS_URL", redis_url)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs an admin CLI command with a configuration (`vars`); returns (exit code, stdout, stderr).
pub fn cli_with(
    redis_url: &str,
    vars: &[(String, String)],
    args: &[&str],
) -> (i32, String, String) {
    let out = Command::new(bin())
        .env_clear()
        .env("REDIS_URL", redis_url)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A `POST /events` signed like the edge filter signs it, ready to send (or to
/// add headers to).
pub fn gateway_request(
    base: &str,
    topic: &str,
    event_id: &str,
    body: &[u8],
    at: u64,
    secret: &str,
) -> reqwest::RequestBuilder {
    let sig = bitbylaw_worker::intake::signature::sign_gateway_event(
        secret.as_bytes(),
        topic,
        event_id,
        at,
        body,
    )
    .unwrap();
    client()
        .post(format!("{base}/events"))
        .header("content-type", "application/json")
        .header("x-event-topic", topic)
        .header("x-event-id", event_id)
        .header("x-dedup-key", sha256_hex(body))
        .header("x-received-at", at.to_string())
        .header("x-gateway-signature", sig)
        .body(body.to_vec())
}

/// `GET {base}/3cx/lookup?phone=…` as Kong's `webhook_guard` (verify-only) forwards it: signed
/// under `topic` over the request target (path and query) with `secret`.
pub fn signed_lookup(
    base: &str,
    phone: &str,
    topic: &str,
    secret: &str,
) -> reqwest::RequestBuilder {
    signed_lookup_on(&client(), base, phone, topic, secret)
}

/// [`signed_lookup`] on a given client (benches reuse one).
pub fn signed_lookup_on(
    http: &reqwest::Client,
    base: &str,
    phone: &str,
    topic: &str,
    secret: &str,
) -> reqwest::RequestBuilder {
    let url = reqwest::Url::parse_with_params(&format!("{base}/3cx/lookup"), &[("phone", phone)])
        .unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let at = now_secs();
    let event_id = "lookup-test-1";
    let sig = bitbylaw_worker::intake::signature::sign_gateway_event(
        secret.as_bytes(),
        topic,
        event_id,
        at,
        target.as_bytes(),
    )
    .unwrap();
    http.get(url)
        .header("x-event-topic", topic)
        .header("x-event-id", event_id)
        .header("x-received-at", at.to_string())
        .header("x-gateway-signature", sig)
}

/// Worker environment of the EspoCRM client against the fake (`ESPOCRM_*`).
pub fn espocrm_env(fake: &bitbylaw_fakes::espocrm::EspoCrmFake) -> Vec<(String, String)> {
    vec![
        ("ESPOCRM_API_BASE_URL".into(), fake.api_url()),
        ("ESPOCRM_API_KEY".into(), fake.config().api_key.clone()),
    ]
}

/// `(name, value)` pairs as [`Worker::spawn`] takes them.
pub fn env_refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Worker environment of the Advoware client against the fake (`ADVOWARE_*`).
pub fn advoware_env(fake: &bitbylaw_fakes::advoware::AdvowareFake) -> Vec<(String, String)> {
    let c = fake.config().clone();
    [
        ("ADVOWARE_API_BASE_URL", fake.api_base_url()),
        ("ADVOWARE_SECURITY_GATEWAY_URL", fake.security_gateway_url()),
        ("ADVOWARE_KANZLEI", c.kanzlei.clone()),
        ("ADVOWARE_DATABASE", c.database.clone()),
        ("ADVOWARE_USER", c.user.clone()),
        ("ADVOWARE_ROLE", c.role.to_string()),
        ("ADVOWARE_PRODUCT", c.product.to_string()),
        ("ADVOWARE_APP_ID", c.app_id.clone()),
        ("ADVOWARE_PASSWORD", c.password.clone()),
        ("ADVOWARE_API_KEY", c.api_key_b64.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Worker environment of the document sync against the EspoCRM and xAI fakes; documents wait
/// for collections by retrying, so the retry budget leaves the event storm room.
pub fn documents_env(
    espo: &bitbylaw_fakes::espocrm::EspoCrmFake,
    xai: &bitbylaw_fakes::xai::XaiFake,
    log_level: &str,
) -> Vec<(String, String)> {
    let mut vars = espocrm_env(espo);
    vars.extend(
        [
            ("XAI_FILES_BASE_URL", xai.files_url()),
            ("XAI_MANAGEMENT_BASE_URL", xai.management_url()),
            ("XAI_API_KEY", xai.config().api_key.clone()),
            (
                "XAI_MANAGEMENT_API_KEY",
                xai.config().management_key.clone(),
            ),
            ("WORKER_RETRY_MAX_ATTEMPTS", "12".into()),
            ("WORKER_LOG_LEVEL", log_level.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v)),
    );
    vars
}
