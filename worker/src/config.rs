//! Configuration: defaults, then an optional TOML file (`--config` / `WORKER_CONFIG`), then the
//! environment — parsed and validated once at start.
//!
//! [`Config::load`] never stops at the first problem: it collects every one so `config check` can
//! list them all at once. Secrets are wrapped in [`Secret`], whose `Debug` prints `***`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::queue::retry::RetryPolicy;
use crate::topics;

/// A secret value; never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Which parts of `serve` run in this instance, so instances can be split by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub intake: bool,
    pub consumers: bool,
    pub schedules: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Consumer group shared by all instances.
    pub group: String,
    /// A delivered job idle this long (no heartbeat) belongs to a dead consumer and is reclaimed.
    pub visibility_timeout: Duration,
    /// How long one blocking read waits for new entries.
    pub block: Duration,
    /// How often due retries are moved from the delayed set back to their streams.
    pub promote_interval: Duration,
    pub default_concurrency: usize,
    pub concurrency: BTreeMap<String, usize>,
    /// Safety TTL of coalescing markers (they are normally removed when the job starts).
    pub coalesce_ttl: Duration,
    /// Delay before retrying a job whose entity lock is busy (not counted as a failure).
    pub lock_busy_delay: Duration,
    /// How long shutdown waits for in-flight jobs before leaving them to be reclaimed.
    pub shutdown_deadline: Duration,
    /// A job handed out this often without finishing (it keeps crashing its worker, or outlives
    /// the visibility timeout) is dead-lettered instead of taking down worker after worker.
    pub max_deliveries: u64,
    /// Upper bound on Redis calls made while answering an HTTP request.
    pub redis_timeout: Duration,
}

impl QueueSettings {
    pub fn concurrency_for(&self, topic: &str) -> usize {
        self.concurrency
            .get(topic)
            .copied()
            .unwrap_or(self.default_concurrency)
    }
}

/// How long queue data (job payloads, with personal data) stays in Redis, and when consumer
/// names are forgotten. `None` switches a limit off. Applied at start and every `interval` by
/// each consumer instance; pending or not yet delivered jobs are never trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// How often the retention pass runs.
    pub interval: Duration,
    /// Acked entries older than this leave the topic streams (they are normally deleted on ack).
    pub stream_acked_max_age: Option<Duration>,
    /// A topic stream longer than this loses its oldest acked entries.
    pub stream_max_len: Option<u64>,
    /// Dead jobs beyond this many (oldest first) are dropped.
    pub dlq_max_entries: Option<u64>,
    /// Dead jobs older than this are dropped.
    pub dlq_max_age: Option<Duration>,
    /// Consumers without pending jobs idle this long are deleted from the group.
    pub consumer_max_idle: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            stream_acked_max_age: Some(Duration::from_secs(3600)),
            stream_max_len: Some(100_000),
            dlq_max_entries: Some(10_000),
            dlq_max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            consumer_max_idle: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RetrySettings {
    pub default: RetryPolicy,
    pub topics: BTreeMap<String, RetryPolicy>,
}

impl RetrySettings {
    pub fn for_topic(&self, topic: &str) -> &RetryPolicy {
        self.topics.get(topic).unwrap_or(&self.default)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    /// Cron expression with seconds (`sec min hour dom mon dow`); 5-field expressions get `0` seconds.
    pub cron: String,
    pub topic: String,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub struct AdvowareSettings {
    pub api_base_url: Option<String>,
    pub security_gateway_url: Option<String>,
    pub kanzlei: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub role: Option<u32>,
    pub product: Option<u32>,
    pub app_id: Option<String>,
    pub password: Option<Secret>,
    pub api_key: Option<Secret>,
    /// Every resource path and query parameter name (`[advoware.paths]`, `ADVOWARE_PATH_*`).
    pub paths: crate::clients::advoware::Paths,
}

#[derive(Debug, Clone, Default)]
pub struct EspoCrmSettings {
    pub api_base_url: Option<String>,
    pub api_key: Option<Secret>,
    /// Overall timeout of one request (connect timeout is the smaller of this and 10 s).
    pub timeout: Option<Duration>,
    /// `maxSize` of list pages, 1–200 (EspoCRM refuses more than 200).
    pub page_size: Option<usize>,
}

/// xAI Files (inference host, `XAI_API_KEY`) and Collections (management host, its own key):
/// the document sync's target (FACTS §7). Both keys together, or neither.
#[derive(Debug, Clone)]
pub struct XaiSettings {
    /// Files API base, ending in `/` (default `https://api.x.ai/v1/`).
    pub files_base_url: String,
    /// Collections API base, ending in `/` (default `https://management-api.x.ai/v1/`).
    pub management_base_url: String,
    /// Inference key, sent only to the files host.
    pub api_key: Option<Secret>,
    /// Management key, sent only to the management host.
    pub management_key: Option<Secret>,
    /// Overall timeout of one request (uploads included).
    pub timeout: Duration,
    /// Largest file the client uploads; never above [`XAI_MAX_FILE_BYTES`].
    pub max_file_bytes: u64,
}

/// xAI's upload limit ("~48 MB", FACTS §7); larger files are refused before any byte is sent.
pub const XAI_MAX_FILE_BYTES: u64 = 48_000_000;

impl Default for XaiSettings {
    fn default() -> Self {
        Self {
            files_base_url: "https://api.x.ai/v1/".into(),
            management_base_url: "https://management-api.x.ai/v1/".into(),
            api_key: None,
            management_key: None,
            timeout: Duration::from_secs(120),
            max_file_bytes: XAI_MAX_FILE_BYTES,
        }
    }
}

/// The document sync's knobs (issue 15): when an entity's xAI collection is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentsSettings {
    /// When the collection manager deletes an entity's collection.
    pub collection_removal: CollectionRemoval,
    /// Entity `status` values that mean "closed" (used by `deleted_or_closed`).
    pub closed_statuses: Vec<String>,
}

/// When an entity's collection is removed (the files stay in xAI either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionRemoval {
    /// Collections are kept until someone deletes them.
    Never,
    /// Removed when the entity is deleted in EspoCRM.
    Deleted,
    /// Removed when the entity is deleted or its `status` is one of `closed_statuses`.
    DeletedOrClosed,
}

impl std::str::FromStr for CollectionRemoval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "never" => Ok(Self::Never),
            "deleted" => Ok(Self::Deleted),
            "deleted_or_closed" => Ok(Self::DeletedOrClosed),
            other => Err(format!(
                "{other:?} is not one of never, deleted, deleted_or_closed"
            )),
        }
    }
}

impl Default for DocumentsSettings {
    fn default() -> Self {
        Self {
            collection_removal: CollectionRemoval::Deleted,
            closed_statuses: vec!["Abgeschlossen".into(), "Closed".into()],
        }
    }
}

/// Google Calendar API access. Base URLs and the token URI are configurable so that tests and
/// the local sandbox point the real client at fakes over loopback.
#[derive(Debug, Clone)]
pub struct GoogleSettings {
    /// Service-account key file (JSON as downloaded from the Cloud console).
    pub service_account_path: Option<PathBuf>,
    /// Domain-wide delegation: the user the service account acts as.
    pub subject: Option<String>,
    /// Calendar API base, ending in `/` (default `https://www.googleapis.com/calendar/v3/`).
    pub api_base_url: String,
    /// API root, ending in `/` (default `https://www.googleapis.com/`).
    pub root_url: String,
    /// Overrides the key file's `token_uri`.
    pub token_uri: Option<String>,
    /// The shared budget of all workers together (Google's default quota is 600/min/user).
    pub requests_per_minute: u32,
    /// Attempts on 403 `rateLimitExceeded` / 429 before the job itself is retried later.
    pub rate_limit_retries: u32,
}

impl Default for GoogleSettings {
    fn default() -> Self {
        Self {
            service_account_path: None,
            subject: None,
            api_base_url: "https://www.googleapis.com/calendar/v3/".into(),
            root_url: "https://www.googleapis.com/".into(),
            token_uri: None,
            requests_per_minute: 600,
            rate_limit_retries: 4,
        }
    }
}

/// The calendar sync's knobs (issue #6 *Policy*); documented in the README.
#[derive(Debug, Clone)]
pub struct CalendarSettings {
    /// Days before today whose appointments are synced.
    pub window_past_days: u32,
    /// Days after today whose appointments are synced.
    pub window_future_days: u32,
    /// Name of each employee's Google calendar; `{kuerzel}` is replaced.
    pub calendar_name: String,
    /// May appointments created in Google be deleted in Advoware when deleted in Google?
    pub advoware_delete_allowed: bool,
    /// Recreate Google events deleted in Google while the appointment still exists.
    pub recreate_deleted_in_google: bool,
    /// Refuse to sync when one side suddenly returns nothing.
    pub empty_side_guard: bool,
    /// Known pairs from which an empty side counts as an outage.
    pub empty_side_min_known: usize,
    /// Employees whose Google calendar shows only busy blocks (the seeds' `full_content=false`).
    pub busy_only: Vec<String>,
    /// The neutral title of busy-only events.
    pub busy_title: String,
    /// Only these employees are synced by `calendar.sync.all` (empty = every employee).
    pub employees: Vec<String>,
}

impl Default for CalendarSettings {
    fn default() -> Self {
        Self {
            window_past_days: 30,
            window_future_days: 365,
            calendar_name: "Advoware {kuerzel}".into(),
            advoware_delete_allowed: false,
            recreate_deleted_in_google: true,
            empty_side_guard: true,
            empty_side_min_known: 5,
            busy_only: Vec::new(),
            busy_title: "Termin (belegt)".into(),
            employees: Vec::new(),
        }
    }
}

/// The Beteiligte sync's knobs (issue 11); documented in the README and the example config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeteiligteSettings {
    /// Who wins when both sides changed (seeds: EspoCRM).
    pub conflict_policy: crate::sync::beteiligte::ConflictPolicy,
    /// Failed runs until a record is `permanently_failed` (seeds: 5).
    pub max_retries: u32,
    /// A `permanently_failed` record unchanged this long is reset by the check (seeds: 24 h).
    pub reset_after: Duration,
    /// EspoCRM user id that receives the in-app notifications; `None` = log only.
    pub notify_user_id: Option<String>,
    /// How many unclean records (`pending_sync`, `dirty`, `failed`) one check enqueues.
    pub check_unclean_limit: usize,
    /// How many clean records whose last sync is older than `check_clean_age` one check enqueues.
    pub check_clean_limit: usize,
    /// Clean records are re-checked once their last sync is this old.
    pub check_clean_age: Duration,
    /// Region of national phone numbers when Kommunikation values are compared (issue 12).
    pub default_region: crate::sync::contact::Region,
}

impl Default for BeteiligteSettings {
    fn default() -> Self {
        Self {
            conflict_policy: crate::sync::beteiligte::ConflictPolicy::EspocrmWins,
            max_retries: 5,
            reset_after: Duration::from_secs(24 * 3600),
            notify_user_id: None,
            check_unclean_limit: 100,
            check_clean_limit: 50,
            check_clean_age: Duration::from_secs(24 * 3600),
            default_region: crate::sync::contact::Region::DE,
        }
    }
}

/// What the configuration is loaded for: admin commands only talk to Redis, so they do not
/// insist on the intake's signing secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Serve,
    Admin,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub redis_url: Secret,
    /// Current secret first, then the previous one during rotation.
    pub gateway_secrets: Vec<Secret>,
    pub signature_tolerance: Duration,
    pub max_body_bytes: usize,
    /// When set, the manual endpoints (`POST /calendar/sync`, `/3cx/call`) require
    /// `Authorization: Bearer <token>` (Kong injects it); see [`Config::admin_endpoints`].
    pub admin_token: Option<Secret>,
    /// The token being rotated out, accepted beside [`Self::admin_token`] until Kong's routes
    /// inject the new one (`WORKER_ADMIN_TOKEN_PREVIOUS`; README "Rotating the admin token").
    pub admin_token_previous: Option<Secret>,
    pub roles: Roles,
    pub queue: QueueSettings,
    pub retention: RetentionSettings,
    pub retry: RetrySettings,
    pub lock_ttl: Duration,
    pub schedules: Vec<ScheduleSpec>,
    /// Registers the `test.*` handlers (tests and benchmarks only).
    pub test_handlers: bool,
    pub log_format: LogFormat,
    pub log_level: String,
    pub advoware: AdvowareSettings,
    pub espocrm: EspoCrmSettings,
    pub google: GoogleSettings,
    pub calendar: CalendarSettings,
    pub leads: LeadsSettings,
    pub beteiligte: BeteiligteSettings,
    pub threecx: ThreeCxSettings,
    pub xai: XaiSettings,
    pub documents: DocumentsSettings,
    pub bankverbindungen: BankverbindungenSettings,
}

/// How the manual endpoints (`POST /calendar/sync`, `POST /3cx/call`, `GET /3cx/call/{id}`)
/// are guarded: they start syncs and place paid phone calls, so without a bearer token only
/// a loopback listener (reachable by local processes alone) leaves them open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminEndpoints {
    /// `WORKER_ADMIN_TOKEN` set: `Authorization: Bearer <token>` required.
    Bearer,
    /// No token, loopback listener: open to every local process.
    OpenOnLoopback,
    /// No token, listener beyond loopback: refused (503 `admin_token_unset`) — fail closed
    /// rather than let anyone who reaches the worker past Kong trigger them.
    Closed,
}

impl Config {
    pub fn admin_endpoints(&self) -> AdminEndpoints {
        if self.admin_token.is_some() {
            AdminEndpoints::Bearer
        } else if self.listen_addr.ip().is_loopback() {
            AdminEndpoints::OpenOnLoopback
        } else {
            AdminEndpoints::Closed
        }
    }

    /// The warning `config check` prints and `serve` logs when the manual endpoints have no
    /// bearer token (never the token itself); `None` when they do or intake is off.
    pub fn admin_token_warning(&self) -> Option<String> {
        if !self.roles.intake {
            return None;
        }
        match self.admin_endpoints() {
            AdminEndpoints::Bearer => None,
            AdminEndpoints::OpenOnLoopback => Some(format!(
                "WORKER_ADMIN_TOKEN is unset: POST /calendar/sync and /3cx/call on {} are open to \
                 every local process; set it (Kong's routes inject it)",
                self.listen_addr
            )),
            AdminEndpoints::Closed => Some(format!(
                "WORKER_ADMIN_TOKEN is unset and {} is reachable beyond loopback: POST \
                 /calendar/sync and /3cx/call answer 503 admin_token_unset until it is set \
                 (Kong's routes inject it)",
                self.listen_addr
            )),
        }
    }
}

/// Every problem found while loading; `Display` lists one per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

// ---- the file layer: everything optional, unknown keys rejected ----

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen_addr: Option<String>,
    redis_url: Option<Secret>,
    gateway_signing_secret: Option<Secret>,
    gateway_signing_secret_previous: Option<Secret>,
    signature_tolerance_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    admin_token: Option<Secret>,
    admin_token_previous: Option<Secret>,
    roles: Option<Vec<String>>,
    test_handlers: Option<bool>,
    log_format: Option<String>,
    log_level: Option<String>,
    queue: FileQueue,
    retention: FileRetention,
    retry: FileRetry,
    schedules: Option<Vec<ScheduleSpec>>,
    advoware: FileAdvoware,
    espocrm: FileEspo,
    google: FileGoogle,
    calendar: FileCalendar,
    leads: FileLeads,
    beteiligte: FileBeteiligte,
    threecx: FileThreeCx,
    xai: FileXai,
    bankverbindungen: FileBankverbindungen,
    documents: FileDocuments,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileDocuments {
    collection_removal: Option<String>,
    closed_statuses: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileQueue {
    group: Option<String>,
    visibility_timeout_ms: Option<u64>,
    block_ms: Option<u64>,
    promote_interval_ms: Option<u64>,
    default_concurrency: Option<usize>,
    concurrency: BTreeMap<String, usize>,
    coalesce_ttl_secs: Option<u64>,
    lock_busy_delay_ms: Option<u64>,
    lock_ttl_ms: Option<u64>,
    shutdown_deadline_ms: Option<u64>,
    redis_timeout_ms: Option<u64>,
    max_deliveries: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileRetention {
    interval_secs: Option<u64>,
    stream_acked_max_age_secs: Option<u64>,
    stream_max_len: Option<u64>,
    dlq_max_entries: Option<u64>,
    dlq_max_age_secs: Option<u64>,
    consumer_max_idle_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileRetry {
    default: Option<RetryPolicy>,
    topics: BTreeMap<String, RetryPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileAdvoware {
    api_base_url: Option<String>,
    security_gateway_url: Option<String>,
    kanzlei: Option<String>,
    database: Option<String>,
    user: Option<String>,
    role: Option<u32>,
    product: Option<u32>,
    app_id: Option<String>,
    password: Option<Secret>,
    api_key: Option<Secret>,
    /// `[advoware.paths]`: setting name → template; names checked by [`advoware_paths`].
    paths: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileEspo {
    api_base_url: Option<String>,
    api_key: Option<Secret>,
    timeout_secs: Option<u64>,
    page_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileXai {
    files_base_url: Option<String>,
    management_base_url: Option<String>,
    api_key: Option<Secret>,
    management_key: Option<Secret>,
    timeout_secs: Option<u64>,
    max_file_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileGoogle {
    service_account_path: Option<PathBuf>,
    subject: Option<String>,
    api_base_url: Option<String>,
    root_url: Option<String>,
    token_uri: Option<String>,
    requests_per_minute: Option<u32>,
    rate_limit_retries: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileCalendar {
    window_past_days: Option<u32>,
    window_future_days: Option<u32>,
    calendar_name: Option<String>,
    advoware_delete_allowed: Option<bool>,
    recreate_deleted_in_google: Option<bool>,
    empty_side_guard: Option<bool>,
    empty_side_min_known: Option<usize>,
    busy_only: Option<Vec<String>>,
    busy_title: Option<String>,
    employees: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileBeteiligte {
    conflict_policy: Option<String>,
    max_retries: Option<u32>,
    reset_after_hours: Option<u64>,
    notify_user_id: Option<String>,
    check_unclean_limit: Option<usize>,
    check_clean_limit: Option<usize>,
    check_clean_age_hours: Option<u64>,
    default_region: Option<String>,
}

/// The two schedules of the old system (every 15 minutes, on the quarter hour) and the nightly
/// refresh of the 3CX lookup index.
pub fn default_schedules() -> Vec<ScheduleSpec> {
    vec![
        ScheduleSpec {
            name: "calendar-sync-all".into(),
            cron: "0 */15 * * * *".into(),
            topic: topics::CALENDAR_SYNC_ALL.into(),
            payload: None,
        },
        ScheduleSpec {
            name: "beteiligte-sync-check".into(),
            cron: "0 */15 * * * *".into(),
            topic: topics::BETEILIGTE_SYNC_CHECK.into(),
            payload: None,
        },
        // The 3CX lookup index's full refresh (issue 14), nightly.
        ScheduleSpec {
            name: "threecx-index-refresh".into(),
            cron: "0 30 3 * * *".into(),
            topic: topics::PHONE_INDEX_REFRESH.into(),
            payload: None,
        },
    ]
}

/// Collects problems while reading values; keeps `load` linear.
struct Reader<'a> {
    env: &'a HashMap<String, String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn str(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
    fn parse<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let raw = self.str(name)?;
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems
                    .push(format!("{name}: cannot parse {raw:?}: {e}"));
                None
            }
        }
    }
    fn flag(&mut self, name: &str) -> Option<bool> {
        let raw = self.str(name)?;
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => {
                self.problems.push(format!(
                    "{name}: expected a boolean (1/0/true/false), got {raw:?}"
                ));
                None
            }
        }
    }
}

impl Config {
    /// Loads from the process environment and the optional file.
    pub fn from_env(path: Option<&Path>, purpose: Purpose) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_for(path, &env, purpose)
    }

    /// Loads for `serve` from an explicit environment map (tests pass their own).
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::load_for(path, env, Purpose::Serve)
    }

    pub fn load_for(
        path: Option<&Path>,
        env: &HashMap<String, String>,
        purpose: Purpose,
    ) -> Result<Self, ConfigError> {
        let mut r = Reader {
            env,
            problems: Vec::new(),
        };
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| r.str("WORKER_CONFIG").map(PathBuf::from));
        let file = match &path {
            None => FileConfig::default(),
            Some(p) => match std::fs::read_to_string(p) {
                Err(e) => {
                    r.problems.push(format!("config file {}: {e}", p.display()));
                    FileConfig::default()
                }
                Ok(text) => match toml::from_str::<FileConfig>(&text) {
                    Ok(f) => f,
                    Err(e) => {
                        r.problems
                            .push(format!("config file {}: {}", p.display(), e.message()));
                        FileConfig::default()
                    }
                },
            },
        };

        // listen address
        let listen_raw = r
            .str("WORKER_LISTEN_ADDR")
            .or(file.listen_addr)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen_addr = match listen_raw.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(e) => {
                r.problems.push(format!(
                    "WORKER_LISTEN_ADDR / listen_addr: {listen_raw:?}: {e}"
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };

        // redis: REDIS_URL, else the seeds' REDIS_HOST/REDIS_PORT, else the file, else localhost
        let redis_url = r
            .str("REDIS_URL")
            .map(Secret::new)
            .or_else(|| {
                r.str("REDIS_HOST").map(|h| {
                    Secret::new(format!(
                        "redis://{h}:{}/",
                        r.str("REDIS_PORT").unwrap_or_else(|| "6379".into())
                    ))
                })
            })
            .or(file.redis_url)
            .unwrap_or_else(|| Secret::new("redis://127.0.0.1:6379/"));
        match url::Url::parse(redis_url.expose()) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "unix" | "redis+unix") => {}
            Ok(u) => r
                .problems
                .push(format!("REDIS_URL: unsupported scheme {:?}", u.scheme())),
            Err(e) => r.problems.push(format!("REDIS_URL: not a URL: {e}")),
        }

        // roles
        let roles_list: Option<Vec<String>> = r
            .str("WORKER_ROLES")
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .or(file.roles);
        let roles = match roles_list {
            None => Roles {
                intake: true,
                consumers: true,
                schedules: true,
            },
            Some(list) => {
                let mut roles = Roles {
                    intake: false,
                    consumers: false,
                    schedules: false,
                };
                for role in list {
                    match role.as_str() {
                        "intake" => roles.intake = true,
                        "consumers" => roles.consumers = true,
                        "schedules" => roles.schedules = true,
                        other => r.problems.push(format!(
                            "WORKER_ROLES / roles: unknown role {other:?} (expected intake, consumers, schedules)"
                        )),
                    }
                }
                roles
            }
        };

        // gateway signature
        let current = r
            .str("GATEWAY_SIGNING_SECRET")
            .map(Secret::new)
            .or(file.gateway_signing_secret);
        let previous = r
            .str("GATEWAY_SIGNING_SECRET_PREVIOUS")
            .map(Secret::new)
            .or(file.gateway_signing_secret_previous);
        let mut gateway_secrets = Vec::new();
        match current {
            Some(s) if s.expose().len() < 16 => r
                .problems
                .push("GATEWAY_SIGNING_SECRET: must be at least 16 bytes".into()),
            Some(s) => gateway_secrets.push(s),
            None if roles.intake && purpose == Purpose::Serve => r
                .problems
                .push("GATEWAY_SIGNING_SECRET: required when the intake role is enabled".into()),
            None => {}
        }
        match previous.filter(|p| !p.is_empty()) {
            // The previous secret verifies signatures as fully as the current one during a
            // rotation, so it must be as strong.
            Some(p) if p.expose().len() < 16 => r
                .problems
                .push("GATEWAY_SIGNING_SECRET_PREVIOUS: must be at least 16 bytes".into()),
            Some(p) => gateway_secrets.push(p),
            None => {}
        }
        let signature_tolerance_secs = r
            .parse::<u64>("WORKER_SIGNATURE_TOLERANCE_SECS")
            .or(file.signature_tolerance_secs)
            .unwrap_or(300);
        let max_body_bytes = r
            .parse::<usize>("WORKER_MAX_BODY_BYTES")
            .or(file.max_body_bytes)
            .unwrap_or(1024 * 1024);
        if max_body_bytes == 0 {
            r.problems
                .push("WORKER_MAX_BODY_BYTES: must be greater than 0".into());
        }
        let admin_token = r
            .str("WORKER_ADMIN_TOKEN")
            .map(Secret::new)
            .or(file.admin_token)
            .filter(|s| !s.is_empty());
        let admin_token_previous = r
            .str("WORKER_ADMIN_TOKEN_PREVIOUS")
            .map(Secret::new)
            .or(file.admin_token_previous)
            .filter(|s| !s.is_empty());
        if admin_token_previous.is_some() && admin_token.is_none() {
            // Alone it would not guard anything (the endpoints would follow the no-token rule)
            // while looking like it does.
            r.problems.push(
                "WORKER_ADMIN_TOKEN_PREVIOUS: set without WORKER_ADMIN_TOKEN (rotation keeps both)"
                    .into(),
            );
        }

        // queue
        let q = file.queue;
        let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
        let visibility_ms = r
            .parse::<u64>("WORKER_VISIBILITY_TIMEOUT_MS")
            .or(q.visibility_timeout_ms);
        let default_concurrency = r
            .parse::<usize>("WORKER_CONCURRENCY")
            .or(q.default_concurrency)
            .unwrap_or(4);
        let queue = QueueSettings {
            group: r
                .str("WORKER_CONSUMER_GROUP")
                .or(q.group)
                .unwrap_or_else(|| "workers".into()),
            visibility_timeout: ms(visibility_ms, 5 * 60 * 1000),
            block: ms(q.block_ms, 1000),
            promote_interval: ms(
                r.parse::<u64>("WORKER_PROMOTE_INTERVAL_MS")
                    .or(q.promote_interval_ms),
                250,
            ),
            default_concurrency,
            concurrency: q.concurrency,
            coalesce_ttl: Duration::from_secs(q.coalesce_ttl_secs.unwrap_or(24 * 3600)),
            lock_busy_delay: ms(
                r.parse::<u64>("WORKER_LOCK_BUSY_DELAY_MS")
                    .or(q.lock_busy_delay_ms),
                5000,
            ),
            shutdown_deadline: ms(
                r.parse::<u64>("WORKER_SHUTDOWN_DEADLINE_MS")
                    .or(q.shutdown_deadline_ms),
                30_000,
            ),
            redis_timeout: ms(q.redis_timeout_ms, 2000),
            max_deliveries: r
                .parse::<u64>("WORKER_MAX_DELIVERIES")
                .or(q.max_deliveries)
                .unwrap_or(5),
        };
        if queue.max_deliveries == 0 {
            r.problems
                .push("queue.max_deliveries / WORKER_MAX_DELIVERIES: must be at least 1".into());
        }
        let lock_ttl = ms(
            r.parse::<u64>("WORKER_LOCK_TTL_MS").or(q.lock_ttl_ms),
            300_000,
        );
        if queue.default_concurrency == 0 {
            r.problems
                .push("queue.default_concurrency / WORKER_CONCURRENCY: must be at least 1".into());
        }
        for (topic, n) in &queue.concurrency {
            if *n == 0 {
                r.problems
                    .push(format!("queue.concurrency.\"{topic}\": must be at least 1"));
            }
            if topics::kind(topic).is_none() {
                r.problems
                    .push(format!("queue.concurrency: unknown topic {topic:?}"));
            }
        }
        if queue.visibility_timeout < Duration::from_millis(500) {
            r.problems
                .push("visibility timeout must be at least 500 ms".into());
        }
        if queue.block.is_zero() || queue.block >= queue.visibility_timeout {
            r.problems
                .push("queue.block_ms must be > 0 and shorter than the visibility timeout".into());
        }

        // retention (0 switches a limit off)
        let fr = file.retention;
        let rd = RetentionSettings::default();
        let secs = |v: u64| Duration::from_secs(v);
        let limit = |v: Option<u64>, d: Option<u64>| match v {
            Some(0) => None,
            Some(n) => Some(n),
            None => d,
        };
        let interval_secs = r
            .parse::<u64>("WORKER_RETENTION_INTERVAL_SECS")
            .or(fr.interval_secs);
        let consumer_idle_secs = r
            .parse::<u64>("WORKER_CONSUMER_MAX_IDLE_SECS")
            .or(fr.consumer_max_idle_secs);
        let retention = RetentionSettings {
            interval: interval_secs.map_or(rd.interval, secs),
            stream_acked_max_age: limit(
                r.parse::<u64>("WORKER_STREAM_ACKED_MAX_AGE_SECS")
                    .or(fr.stream_acked_max_age_secs),
                rd.stream_acked_max_age.map(|d| d.as_secs()),
            )
            .map(secs),
            stream_max_len: limit(
                r.parse::<u64>("WORKER_STREAM_MAX_LEN")
                    .or(fr.stream_max_len),
                rd.stream_max_len,
            ),
            dlq_max_entries: limit(
                r.parse::<u64>("WORKER_DLQ_MAX_ENTRIES")
                    .or(fr.dlq_max_entries),
                rd.dlq_max_entries,
            ),
            dlq_max_age: limit(
                r.parse::<u64>("WORKER_DLQ_MAX_AGE_SECS")
                    .or(fr.dlq_max_age_secs),
                rd.dlq_max_age.map(|d| d.as_secs()),
            )
            .map(secs),
            consumer_max_idle: consumer_idle_secs.map_or(rd.consumer_max_idle, secs),
        };
        if retention.interval.is_zero() {
            r.problems.push(
                "retention.interval_secs / WORKER_RETENTION_INTERVAL_SECS: must be at least 1"
                    .into(),
            );
        }
        // A live consumer reads at least every `block_ms`; only one silent for much longer is gone.
        if retention.consumer_max_idle < queue.visibility_timeout {
            r.problems.push(format!(
                "retention.consumer_max_idle_secs / WORKER_CONSUMER_MAX_IDLE_SECS: must be at least the visibility timeout ({} s)",
                queue.visibility_timeout.as_secs_f64().ceil()
            ));
        }

        // retry
        let mut retry = RetrySettings {
            default: file.retry.default.unwrap_or_default(),
            topics: file.retry.topics,
        };
        if let Some(raw) = r.str("WORKER_RETRY_DELAYS_MS") {
            let parsed: Result<Vec<u64>, _> =
                raw.split(',').map(|p| p.trim().parse::<u64>()).collect();
            match parsed {
                Ok(delays) => retry.default.delays_ms = delays,
                Err(e) => r
                    .problems
                    .push(format!("WORKER_RETRY_DELAYS_MS: {raw:?}: {e}")),
            }
        }
        if let Some(n) = r.parse::<u32>("WORKER_RETRY_MAX_ATTEMPTS") {
            retry.default.max_attempts = n;
        }
        for p in retry.default.problems() {
            r.problems.push(format!("retry.default: {p}"));
        }
        for (topic, policy) in &retry.topics {
            if topics::kind(topic).is_none() {
                r.problems
                    .push(format!("retry.topics: unknown topic {topic:?}"));
            }
            for p in policy.problems() {
                r.problems.push(format!("retry.topics.\"{topic}\": {p}"));
            }
        }

        // schedules
        let mut schedules = file.schedules.unwrap_or_else(default_schedules);
        for s in &mut schedules {
            let var = format!(
                "WORKER_SCHEDULE_{}_CRON",
                s.name.to_ascii_uppercase().replace(['-', '.'], "_")
            );
            if let Some(cron) = r.str(&var) {
                s.cron = cron;
            }
            if let Err(e) = crate::schedule::parse_cron(&s.cron) {
                r.problems.push(format!(
                    "schedule {:?}: invalid cron {:?}: {e}",
                    s.name, s.cron
                ));
            }
            if topics::kind(&s.topic).is_none() {
                r.problems.push(format!(
                    "schedule {:?}: unknown topic {:?}",
                    s.name, s.topic
                ));
            }
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                r.problems.push(format!(
                    "schedule {:?}: name must be [A-Za-z0-9_-]+",
                    s.name
                ));
            }
        }

        let test_handlers = r
            .flag("WORKER_TEST_HANDLERS")
            .or(file.test_handlers)
            .unwrap_or(false);
        let log_format = match r.str("WORKER_LOG_FORMAT").or(file.log_format).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                r.problems.push(format!(
                    "WORKER_LOG_FORMAT: expected json or text, got {other:?}"
                ));
                LogFormat::Json
            }
        };
        let log_level = r
            .str("WORKER_LOG_LEVEL")
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            r.problems
                .push(format!("WORKER_LOG_LEVEL: invalid filter {log_level:?}"));
        }

        // outside systems: optional until their handlers exist, but well-formed when given
        let fa = file.advoware;
        let advoware = AdvowareSettings {
            api_base_url: r.str("ADVOWARE_API_BASE_URL").or(fa.api_base_url),
            security_gateway_url: r
                .str("ADVOWARE_SECURITY_GATEWAY_URL")
                .or(fa.security_gateway_url),
            kanzlei: r.str("ADVOWARE_KANZLEI").or(fa.kanzlei),
            database: r.str("ADVOWARE_DATABASE").or(fa.database),
            user: r.str("ADVOWARE_USER").or(fa.user),
            role: r.parse::<u32>("ADVOWARE_ROLE").or(fa.role),
            product: r.parse::<u32>("ADVOWARE_PRODUCT").or(fa.product),
            app_id: r.str("ADVOWARE_APP_ID").or(fa.app_id),
            password: r.str("ADVOWARE_PASSWORD").map(Secret::new).or(fa.password),
            api_key: r.str("ADVOWARE_API_KEY").map(Secret::new).or(fa.api_key),
            paths: advoware_paths(&mut r, fa.paths),
        };
        for (name, v) in [
            ("ADVOWARE_API_BASE_URL", &advoware.api_base_url),
            (
                "ADVOWARE_SECURITY_GATEWAY_URL",
                &advoware.security_gateway_url,
            ),
        ] {
            check_http_url(&mut r.problems, name, v.as_deref());
        }
        if let Some(key) = &advoware.api_key {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(key.expose())
                .is_err()
            {
                r.problems.push(
                    "ADVOWARE_API_KEY: must be base64 (it is decoded to the HMAC key)".into(),
                );
            }
        }
        let fe = file.espocrm;
        let espocrm = EspoCrmSettings {
            api_base_url: r.str("ESPOCRM_API_BASE_URL").or(fe.api_base_url),
            api_key: r.str("ESPOCRM_API_KEY").map(Secret::new).or(fe.api_key),
            timeout: r
                .parse::<u64>("ESPOCRM_API_TIMEOUT_SECONDS")
                .or(fe.timeout_secs)
                .map(Duration::from_secs),
            page_size: r.parse::<usize>("ESPOCRM_PAGE_SIZE").or(fe.page_size),
        };
        check_http_url(
            &mut r.problems,
            "ESPOCRM_API_BASE_URL",
            espocrm.api_base_url.as_deref(),
        );
        if espocrm.api_base_url.is_some() && espocrm.api_key.as_ref().is_none_or(Secret::is_empty) {
            r.problems
                .push("ESPOCRM_API_KEY: required when ESPOCRM_API_BASE_URL is set".into());
        }
        if espocrm
            .timeout
            .is_some_and(|t| t.is_zero() || t > Duration::from_secs(300))
        {
            r.problems
                .push("ESPOCRM_API_TIMEOUT_SECONDS: must be 1–300".into());
        }
        if espocrm.page_size.is_some_and(|n| n == 0 || n > 200) {
            r.problems
                .push("ESPOCRM_PAGE_SIZE: must be 1–200 (EspoCRM refuses larger pages)".into());
        }
        let fx = file.xai;
        let xd = XaiSettings::default();
        let slash = |u: String| if u.ends_with('/') { u } else { format!("{u}/") };
        let xai = XaiSettings {
            files_base_url: slash(
                r.str("XAI_FILES_BASE_URL")
                    .or(fx.files_base_url)
                    .unwrap_or(xd.files_base_url),
            ),
            management_base_url: slash(
                r.str("XAI_MANAGEMENT_BASE_URL")
                    .or(fx.management_base_url)
                    .unwrap_or(xd.management_base_url),
            ),
            api_key: r.str("XAI_API_KEY").map(Secret::new).or(fx.api_key),
            management_key: r
                .str("XAI_MANAGEMENT_API_KEY")
                .map(Secret::new)
                .or(fx.management_key),
            timeout: r
                .parse::<u64>("XAI_TIMEOUT_SECONDS")
                .or(fx.timeout_secs)
                .map_or(xd.timeout, Duration::from_secs),
            max_file_bytes: r
                .parse::<u64>("XAI_MAX_FILE_BYTES")
                .or(fx.max_file_bytes)
                .unwrap_or(xd.max_file_bytes),
        };
        check_http_url(
            &mut r.problems,
            "XAI_FILES_BASE_URL",
            Some(&xai.files_base_url),
        );
        check_http_url(
            &mut r.problems,
            "XAI_MANAGEMENT_BASE_URL",
            Some(&xai.management_base_url),
        );
        let has = |k: &Option<Secret>| k.as_ref().is_some_and(|k| !k.is_empty());
        if has(&xai.api_key) != has(&xai.management_key) {
            r.problems.push(
                "XAI_API_KEY and XAI_MANAGEMENT_API_KEY: set both (files and collections) or neither"
                    .into(),
            );
        }
        if xai.timeout.is_zero() || xai.timeout > Duration::from_secs(600) {
            r.problems.push("XAI_TIMEOUT_SECONDS: must be 1–600".into());
        }
        if xai.max_file_bytes == 0 || xai.max_file_bytes > XAI_MAX_FILE_BYTES {
            r.problems.push(format!(
                "XAI_MAX_FILE_BYTES: must be 1–{XAI_MAX_FILE_BYTES} (xAI refuses larger uploads)"
            ));
        }
        let fd = file.documents;
        let dd = DocumentsSettings::default();
        let documents = DocumentsSettings {
            collection_removal: match r
                .str("DOCUMENTS_COLLECTION_REMOVAL")
                .or(fd.collection_removal)
            {
                None => dd.collection_removal,
                Some(raw) => raw.parse().unwrap_or_else(|e: String| {
                    r.problems
                        .push(format!("DOCUMENTS_COLLECTION_REMOVAL: {e}"));
                    dd.collection_removal
                }),
            },
            closed_statuses: r
                .str("DOCUMENTS_CLOSED_STATUSES")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .or(fd.closed_statuses)
                .unwrap_or(dd.closed_statuses),
        };
        let fg = file.google;
        let gd = GoogleSettings::default();
        let with_slash = |u: String| if u.ends_with('/') { u } else { format!("{u}/") };
        let google = GoogleSettings {
            service_account_path: r
                .str("GOOGLE_CALENDAR_SERVICE_ACCOUNT_PATH")
                .map(PathBuf::from)
                .or(fg.service_account_path),
            subject: r.str("GOOGLE_CALENDAR_SUBJECT").or(fg.subject),
            api_base_url: with_slash(
                r.str("GOOGLE_CALENDAR_API_BASE_URL")
                    .or(fg.api_base_url)
                    .unwrap_or(gd.api_base_url),
            ),
            root_url: with_slash(
                r.str("GOOGLE_CALENDAR_ROOT_URL")
                    .or(fg.root_url)
                    .unwrap_or(gd.root_url),
            ),
            token_uri: r.str("GOOGLE_CALENDAR_TOKEN_URI").or(fg.token_uri),
            requests_per_minute: r
                .parse::<u32>("GOOGLE_CALENDAR_REQUESTS_PER_MINUTE")
                .or(fg.requests_per_minute)
                .unwrap_or(gd.requests_per_minute),
            rate_limit_retries: r
                .parse::<u32>("GOOGLE_CALENDAR_RATE_LIMIT_RETRIES")
                .or(fg.rate_limit_retries)
                .unwrap_or(gd.rate_limit_retries),
        };
        if let Some(p) = &google.service_account_path {
            if !p.is_file() {
                r.problems.push(format!(
                    "GOOGLE_CALENDAR_SERVICE_ACCOUNT_PATH: {} is not a readable file",
                    p.display()
                ));
            }
        }
        for (name, v) in [
            ("GOOGLE_CALENDAR_API_BASE_URL", Some(&google.api_base_url)),
            ("GOOGLE_CALENDAR_ROOT_URL", Some(&google.root_url)),
            ("GOOGLE_CALENDAR_TOKEN_URI", google.token_uri.as_ref()),
        ] {
            check_http_url(&mut r.problems, name, v.map(String::as_str));
        }
        if google.requests_per_minute < 2 {
            r.problems
                .push("GOOGLE_CALENDAR_REQUESTS_PER_MINUTE: must be at least 2".into());
        }

        let fc = file.calendar;
        let cd = CalendarSettings::default();
        let list = |raw: Option<String>| {
            raw.map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
            })
        };
        let busy_only = list(r.str("CALENDAR_BUSY_ONLY"))
            .or(fc.busy_only)
            .unwrap_or_default();
        let employees = list(r.str("CALENDAR_EMPLOYEES"))
            .or(fc.employees)
            .unwrap_or_default();
        let calendar = CalendarSettings {
            window_past_days: r
                .parse::<u32>("CALENDAR_WINDOW_PAST_DAYS")
                .or(fc.window_past_days)
                .unwrap_or(cd.window_past_days),
            window_future_days: r
                .parse::<u32>("CALENDAR_WINDOW_FUTURE_DAYS")
                .or(fc.window_future_days)
                .unwrap_or(cd.window_future_days),
            calendar_name: r
                .str("CALENDAR_NAME")
                .or(fc.calendar_name)
                .unwrap_or(cd.calendar_name),
            advoware_delete_allowed: r
                .flag("CALENDAR_ADVOWARE_DELETE_ALLOWED")
                .or(fc.advoware_delete_allowed)
                .unwrap_or(cd.advoware_delete_allowed),
            recreate_deleted_in_google: r
                .flag("CALENDAR_RECREATE_DELETED_IN_GOOGLE")
                .or(fc.recreate_deleted_in_google)
                .unwrap_or(cd.recreate_deleted_in_google),
            empty_side_guard: r
                .flag("CALENDAR_EMPTY_SIDE_GUARD")
                .or(fc.empty_side_guard)
                .unwrap_or(cd.empty_side_guard),
            empty_side_min_known: r
                .parse::<usize>("CALENDAR_EMPTY_SIDE_MIN_KNOWN")
                .or(fc.empty_side_min_known)
                .unwrap_or(cd.empty_side_min_known),
            busy_only,
            busy_title: r
                .str("CALENDAR_BUSY_TITLE")
                .or(fc.busy_title)
                .unwrap_or(cd.busy_title),
            employees,
        };
        if !calendar.calendar_name.contains("{kuerzel}") {
            r.problems.push(format!(
                "CALENDAR_NAME: {:?} must contain {{kuerzel}} (one calendar per employee)",
                calendar.calendar_name
            ));
        }
        if calendar.window_future_days > 3650 || calendar.window_past_days > 3650 {
            r.problems
                .push("CALENDAR_WINDOW_*_DAYS: at most 3650 days".into());
        }
        for k in calendar.busy_only.iter().chain(&calendar.employees) {
            if !crate::intake::calendar::valid_kuerzel(k) {
                r.problems.push(format!(
                    "CALENDAR_BUSY_ONLY / CALENDAR_EMPLOYEES: invalid Kürzel {k:?}"
                ));
            }
        }
        let leads = load_leads(&mut r, file.leads);

        let fb = file.beteiligte;
        let bd = BeteiligteSettings::default();
        let conflict_policy = match r.str("BETEILIGTE_CONFLICT_POLICY").or(fb.conflict_policy) {
            None => bd.conflict_policy,
            Some(raw) => raw.parse().unwrap_or_else(|e: String| {
                r.problems.push(format!("BETEILIGTE_CONFLICT_POLICY: {e}"));
                bd.conflict_policy
            }),
        };
        let hours = |h: Option<u64>, d: Duration| h.map_or(d, |h| Duration::from_secs(h * 3600));
        let raw = r.str("BETEILIGTE_DEFAULT_REGION").or(fb.default_region);
        let bet_region =
            region_setting(&mut r, "BETEILIGTE_DEFAULT_REGION", raw, bd.default_region);
        let beteiligte = BeteiligteSettings {
            default_region: bet_region,
            conflict_policy,
            max_retries: r
                .parse::<u32>("BETEILIGTE_MAX_RETRIES")
                .or(fb.max_retries)
                .unwrap_or(bd.max_retries),
            reset_after: hours(
                r.parse::<u64>("BETEILIGTE_RESET_AFTER_HOURS")
                    .or(fb.reset_after_hours),
                bd.reset_after,
            ),
            notify_user_id: r
                .str("BETEILIGTE_NOTIFY_USER_ID")
                .or(fb.notify_user_id)
                .filter(|u| !u.trim().is_empty()),
            check_unclean_limit: r
                .parse::<usize>("BETEILIGTE_CHECK_UNCLEAN_LIMIT")
                .or(fb.check_unclean_limit)
                .unwrap_or(bd.check_unclean_limit),
            check_clean_limit: r
                .parse::<usize>("BETEILIGTE_CHECK_CLEAN_LIMIT")
                .or(fb.check_clean_limit)
                .unwrap_or(bd.check_clean_limit),
            check_clean_age: hours(
                r.parse::<u64>("BETEILIGTE_CHECK_CLEAN_AGE_HOURS")
                    .or(fb.check_clean_age_hours),
                bd.check_clean_age,
            ),
        };
        if !(1..=100).contains(&beteiligte.max_retries) {
            r.problems
                .push("BETEILIGTE_MAX_RETRIES: must be 1–100".into());
        }
        if beteiligte.reset_after.is_zero() || beteiligte.check_clean_age.is_zero() {
            r.problems.push(
                "BETEILIGTE_RESET_AFTER_HOURS / BETEILIGTE_CHECK_CLEAN_AGE_HOURS: must be at least 1"
                    .into(),
            );
        }
        for (name, n) in [
            (
                "BETEILIGTE_CHECK_UNCLEAN_LIMIT",
                beteiligte.check_unclean_limit,
            ),
            ("BETEILIGTE_CHECK_CLEAN_LIMIT", beteiligte.check_clean_limit),
        ] {
            if n > 10_000 {
                r.problems
                    .push(format!("{name}: at most 10000 records per check (0 = off)"));
            }
        }
        if let Some(u) = &beteiligte.notify_user_id {
            if !crate::topics::valid_entity_id(u) {
                r.problems.push(format!(
                    "BETEILIGTE_NOTIFY_USER_ID: {u:?} is not an EspoCRM id"
                ));
            }
        }

        let threecx = load_threecx(&mut r, file.threecx);
        if threecx.advoware_note.is_some() && advoware.api_base_url.is_none() {
            r.problems.push(
                "THREECX_ADVOWARE_NOTE_PATH: call notes need the Advoware settings (ADVOWARE_API_BASE_URL, …)"
                    .into(),
            );
        }
        let bankverbindungen = load_bankverbindungen(&mut r, file.bankverbindungen);

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }
        Ok(Config {
            listen_addr,
            redis_url,
            gateway_secrets,
            signature_tolerance: Duration::from_secs(signature_tolerance_secs),
            max_body_bytes,
            admin_token,
            admin_token_previous,
            roles,
            queue,
            retention,
            retry,
            lock_ttl,
            schedules,
            test_handlers,
            log_format,
            log_level,
            advoware,
            espocrm,
            google,
            calendar,
            leads,
            beteiligte,
            threecx,
            xai,
            documents,
            bankverbindungen,
        })
    }
}

/// `[advoware.paths]` over the defaults, `ADVOWARE_PATH_<NAME>` over both; every unknown name
/// and every problem of every template is reported.
fn advoware_paths(
    r: &mut Reader<'_>,
    file: BTreeMap<String, String>,
) -> crate::clients::advoware::Paths {
    use crate::clients::advoware::Paths;
    let mut paths = Paths::default();
    for (name, template) in file {
        match paths.get_mut(&name) {
            Some(slot) => *slot = template,
            None => r.problems.push(format!(
                "advoware.paths: unknown setting {name:?} (known: {})",
                Paths::SETTINGS.map(|(n, _)| n).join(", ")
            )),
        }
    }
    for (name, _) in Paths::SETTINGS {
        let var = format!("ADVOWARE_PATH_{}", name.to_ascii_uppercase());
        if let (Some(template), Some(slot)) = (r.str(&var), paths.get_mut(name)) {
            *slot = template;
        }
    }
    r.problems.extend(paths.problems());
    paths
}

/// What the leads handler does with a submission whose e-mail or phone matches an existing
/// Lead or Contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingPolicy {
    /// Append the inquiry to the existing record (fill its empty fields); no new Lead.
    Update,
    /// Create a new Lead anyway (EspoCRM's duplicate check skipped), naming the existing record.
    NewLead,
}

/// The follow-up for the assignee of a new inquiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followup {
    /// An EspoCRM `Task` (due after `task_due_hours`) assigned to the user; EspoCRM notifies.
    Task,
    /// An in-app notification only.
    Notification,
    None,
}

/// The Vermieterhelden leads handler's knobs (issue 13); documented in the README.
#[derive(Debug, Clone)]
pub struct LeadsSettings {
    /// Region of national phone numbers (`0…`), ISO code; default DE.
    pub default_region: crate::sync::contact::Region,
    pub existing: ExistingPolicy,
    /// Lead type → EspoCRM user/team (newsletter sign-ups are never assigned).
    pub assign: crate::sync::leads::AssignmentRules,
    pub followup: Followup,
    pub task_due_hours: u32,
    /// The `TargetList` newsletter sign-ups are linked to; without it they fail permanently.
    pub newsletter_target_list_id: Option<String>,
}

impl Default for LeadsSettings {
    fn default() -> Self {
        Self {
            default_region: crate::sync::contact::Region::DE,
            existing: ExistingPolicy::Update,
            assign: Default::default(),
            followup: Followup::Task,
            task_due_hours: 24,
            newsletter_target_list_id: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileAssignee {
    user_id: Option<String>,
    team_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileLeads {
    default_region: Option<String>,
    existing_policy: Option<String>,
    followup: Option<String>,
    task_due_hours: Option<u32>,
    newsletter_target_list_id: Option<String>,
    assign: BTreeMap<String, FileAssignee>,
}

/// A default-region setting (`DE`, …): `default` when unset, a problem naming `name` and the
/// known regions when unknown.
fn region_setting(
    r: &mut Reader<'_>,
    name: &str,
    raw: Option<String>,
    default: crate::sync::contact::Region,
) -> crate::sync::contact::Region {
    match raw.as_deref().map(crate::sync::contact::Region::parse) {
        None => default,
        Some(Some(region)) => region,
        Some(None) => {
            let known: Vec<&str> = crate::sync::contact::REGIONS
                .iter()
                .map(|r| r.iso)
                .collect();
            r.problems.push(format!(
                "{name}: unknown region (known: {})",
                known.join(", ")
            ));
            default
        }
    }
}

/// `[leads]` and the `LEADS_*` variables; every problem goes to the reader's list.
fn load_leads(r: &mut Reader<'_>, f: FileLeads) -> LeadsSettings {
    use crate::sync::leads::{Assignee, LeadType};
    let d = LeadsSettings::default();
    let region_raw = r.str("LEADS_DEFAULT_REGION").or(f.default_region);
    let default_region = region_setting(r, "LEADS_DEFAULT_REGION", region_raw, d.default_region);
    let existing = match r
        .str("LEADS_EXISTING_POLICY")
        .or(f.existing_policy)
        .as_deref()
    {
        None | Some("update") => ExistingPolicy::Update,
        Some("new_lead") => ExistingPolicy::NewLead,
        Some(other) => {
            r.problems.push(format!(
                "LEADS_EXISTING_POLICY: {other:?} is not update or new_lead"
            ));
            d.existing
        }
    };
    let followup = match r.str("LEADS_FOLLOWUP").or(f.followup).as_deref() {
        None | Some("task") => Followup::Task,
        Some("notification") => Followup::Notification,
        Some("none") => Followup::None,
        Some(other) => {
            r.problems.push(format!(
                "LEADS_FOLLOWUP: {other:?} is not task, notification or none"
            ));
            d.followup
        }
    };
    let task_due_hours = r
        .parse::<u32>("LEADS_TASK_DUE_HOURS")
        .or(f.task_due_hours)
        .unwrap_or(d.task_due_hours);
    if !(1..=720).contains(&task_due_hours) {
        r.problems
            .push("LEADS_TASK_DUE_HOURS: must be 1–720".into());
    }
    let check_id = |r: &mut Reader<'_>, name: &str, v: Option<String>| {
        if let Some(id) = &v {
            if bitbylaw_core::ids::EspoId::new(id.clone()).is_err() {
                r.problems
                    .push(format!("{name}: not an EspoCRM id (letters and digits)"));
            }
        }
        v
    };
    let list = r
        .str("LEADS_NEWSLETTER_TARGET_LIST_ID")
        .or(f.newsletter_target_list_id);
    let newsletter_target_list_id = check_id(r, "LEADS_NEWSLETTER_TARGET_LIST_ID", list);
    let mut file_assign = f.assign;
    for key in file_assign.keys() {
        if !matches!(key.as_str(), "mieter" | "vermieter" | "kontakt") {
            r.problems.push(format!(
                "leads.assign.{key}: not an assignable lead type (mieter, vermieter, kontakt)"
            ));
        }
    }
    let mut assign = crate::sync::leads::AssignmentRules::new();
    for t in [LeadType::Mieter, LeadType::Vermieter, LeadType::Kontakt] {
        let upper = t.as_str().to_ascii_uppercase();
        let fa = file_assign.remove(t.as_str()).unwrap_or_default();
        let user_var = format!("LEADS_ASSIGN_{upper}_USER_ID");
        let team_var = format!("LEADS_ASSIGN_{upper}_TEAM_ID");
        let user = r.str(&user_var).or(fa.user_id);
        let user_id = check_id(r, &user_var, user);
        let team = r.str(&team_var).or(fa.team_id);
        let team_id = check_id(r, &team_var, team);
        if user_id.is_some() || team_id.is_some() {
            assign.insert(t, Assignee { user_id, team_id });
        }
    }
    LeadsSettings {
        default_region,
        existing,
        assign,
        followup,
        task_due_hours,
        newsletter_target_list_id,
    }
}

/// The 3CX telephony knobs (issue 14); documented in the README ("3CX telephony").
#[derive(Debug, Clone)]
pub struct ThreeCxSettings {
    /// Region of national numbers 3CX reports (`0…`); default DE.
    pub default_region: crate::sync::contact::Region,
    /// Agent extension or e-mail (lower case) → EspoCRM user id the Call is assigned to.
    pub agents: BTreeMap<String, String>,
    /// Assignee of calls whose agent is not in `agents` (none: unassigned).
    pub default_user_id: Option<String>,
    /// Hours until the call-back task of a missed call is due.
    pub task_due_hours: u32,
    /// EspoCRM's web address for `ContactUrl` (default: the API base without `api/v1/`).
    pub crm_url: Option<String>,
    /// Outside-line prefix 3CX may put before a number (e.g. `9`); stripped when the number
    /// does not parse with it.
    pub dial_prefix: Option<String>,
    /// How long a cold lookup may search EspoCRM before answering "no match".
    pub lookup_deadline: Duration,
    /// Outbound calls (`POST /3cx/call`): the Call Control API base, e.g. `https://ralup.my3cx.de`
    /// (none: the route answers 503 `not_configured`).
    pub api_base_url: Option<String>,
    /// The API client's id (3CX admin console → Integrations → API).
    pub client_id: Option<String>,
    /// The API client's key ("client secret"), shown once by 3CX.
    pub client_secret: Option<Secret>,
    /// Overall timeout of one Call Control request.
    pub api_timeout: Duration,
    /// Outbound calls per minute, all workers together (seeds: about 60).
    pub calls_per_minute: u32,
    /// How long 3CX rings the extension before giving up (makecall `timeout`); none: 3CX's default.
    pub ring_timeout_secs: Option<u32>,
    /// The optional Advoware call note for calls with a known Beteiligter; none: off.
    pub advoware_note: Option<CallNoteSettings>,
}

/// Where and how a call note goes into Advoware. FACTS documents no Advoware endpoint for notes,
/// so path and field names are configuration (README "Call notes in Advoware"); setting the
/// path switches the note on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallNoteSettings {
    /// `POST` template with `{betnr}`, e.g. `api/v1/advonet/Beteiligte/{betnr}/Notizen`.
    pub path: String,
    /// Field of the note's text.
    pub text_field: String,
    /// Field of the call's start (Europe/Berlin wall-clock time).
    pub date_field: String,
}

impl Default for ThreeCxSettings {
    fn default() -> Self {
        Self {
            default_region: crate::sync::contact::Region::DE,
            agents: BTreeMap::new(),
            default_user_id: None,
            task_due_hours: 4,
            crm_url: None,
            dial_prefix: None,
            lookup_deadline: Duration::from_millis(800),
            api_base_url: None,
            client_id: None,
            client_secret: None,
            api_timeout: Duration::from_secs(10),
            calls_per_minute: 60,
            ring_timeout_secs: None,
            advoware_note: None,
        }
    }
}

impl ThreeCxSettings {
    /// The EspoCRM user of an agent: by extension, then by e-mail, then the default.
    pub fn user_for(&self, extension: Option<&str>, email: Option<&str>) -> Option<&str> {
        extension
            .and_then(|e| self.agents.get(e))
            .or_else(|| email.and_then(|e| self.agents.get(&e.to_lowercase())))
            .map(String::as_str)
            .or(self.default_user_id.as_deref())
    }

    /// The Call Control client's settings, when `api_base_url`, id and secret are all set.
    pub fn call_control(&self) -> Option<crate::clients::threecx::CallControlSettings> {
        Some(crate::clients::threecx::CallControlSettings {
            base_url: self.api_base_url.clone()?,
            client_id: self.client_id.clone()?,
            client_secret: self.client_secret.clone().filter(|s| !s.is_empty())?,
            timeout: self.api_timeout,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileThreeCx {
    default_region: Option<String>,
    agents: BTreeMap<String, String>,
    default_user_id: Option<String>,
    task_due_hours: Option<u32>,
    crm_url: Option<String>,
    dial_prefix: Option<String>,
    lookup_deadline_ms: Option<u64>,
    api_base_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    api_timeout_ms: Option<u64>,
    calls_per_minute: Option<u32>,
    ring_timeout_secs: Option<u32>,
    advoware_note_path: Option<String>,
    advoware_note_text_field: Option<String>,
    advoware_note_date_field: Option<String>,
}

/// `[threecx]` and the `THREECX_*` variables; every problem goes to the reader's list.
fn load_threecx(r: &mut Reader<'_>, f: FileThreeCx) -> ThreeCxSettings {
    let d = ThreeCxSettings::default();
    let default_region = match r.str("THREECX_DEFAULT_REGION").or(f.default_region) {
        None => d.default_region,
        Some(raw) => crate::sync::contact::Region::parse(&raw).unwrap_or_else(|| {
            r.problems
                .push("THREECX_DEFAULT_REGION: unknown region (see leads.default_region)".into());
            d.default_region
        }),
    };
    let valid = |id: &str| bitbylaw_core::ids::EspoId::new(id.to_owned()).is_ok();
    let mut agents = BTreeMap::new();
    for (agent, user) in f.agents {
        if !valid(&user) {
            r.problems.push(format!(
                "threecx.agents.{agent}: not an EspoCRM user id (letters and digits)"
            ));
        }
        agents.insert(agent.trim().to_lowercase(), user);
    }
    let default_user_id = r
        .str("THREECX_DEFAULT_USER_ID")
        .or(f.default_user_id)
        .filter(|u| !u.trim().is_empty());
    if default_user_id.as_deref().is_some_and(|u| !valid(u)) {
        r.problems
            .push("THREECX_DEFAULT_USER_ID: not an EspoCRM user id (letters and digits)".into());
    }
    let task_due_hours = r
        .parse::<u32>("THREECX_TASK_DUE_HOURS")
        .or(f.task_due_hours)
        .unwrap_or(d.task_due_hours);
    if !(1..=720).contains(&task_due_hours) {
        r.problems
            .push("THREECX_TASK_DUE_HOURS: must be 1–720".into());
    }
    let crm_url = r.str("THREECX_CRM_URL").or(f.crm_url);
    check_http_url(&mut r.problems, "THREECX_CRM_URL", crm_url.as_deref());
    let crm_url = crm_url.map(|u| format!("{}/", u.trim_end_matches('/')));
    let dial_prefix = r
        .str("THREECX_DIAL_PREFIX")
        .or(f.dial_prefix)
        .filter(|p| !p.is_empty());
    if dial_prefix
        .as_deref()
        .is_some_and(|p| p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        r.problems
            .push("THREECX_DIAL_PREFIX: one to three digits".into());
    }
    let deadline_ms = r
        .parse::<u64>("THREECX_LOOKUP_DEADLINE_MS")
        .or(f.lookup_deadline_ms)
        .unwrap_or(800);
    if !(50..=5000).contains(&deadline_ms) {
        r.problems.push(
            "THREECX_LOOKUP_DEADLINE_MS: must be 50–5000 (3CX waits a few seconds at most)".into(),
        );
    }
    // Outbound calls (Call Control API): all three or none.
    let api_base_url = r
        .str("THREECX_API_BASE_URL")
        .or(f.api_base_url)
        .map(|u| u.trim_end_matches('/').to_owned());
    check_http_url(
        &mut r.problems,
        "THREECX_API_BASE_URL",
        api_base_url.as_deref(),
    );
    let client_id = r.str("THREECX_CLIENT_ID").or(f.client_id);
    let client_secret = r
        .str("THREECX_CLIENT_SECRET")
        .map(Secret::new)
        .or(f.client_secret)
        .filter(|s| !s.is_empty());
    if api_base_url.is_some() {
        if client_id.is_none() {
            r.problems
                .push("THREECX_CLIENT_ID: required when THREECX_API_BASE_URL is set".into());
        }
        if client_secret.is_none() {
            r.problems
                .push("THREECX_CLIENT_SECRET: required when THREECX_API_BASE_URL is set".into());
        }
    } else if client_id.is_some() || client_secret.is_some() {
        r.problems.push(
            "THREECX_API_BASE_URL: required when THREECX_CLIENT_ID / THREECX_CLIENT_SECRET are set"
                .into(),
        );
    }
    let api_timeout_ms = r
        .parse::<u64>("THREECX_API_TIMEOUT_MS")
        .or(f.api_timeout_ms)
        .unwrap_or(10_000);
    if !(500..=60_000).contains(&api_timeout_ms) {
        r.problems
            .push("THREECX_API_TIMEOUT_MS: must be 500–60000".into());
    }
    let calls_per_minute = r
        .parse::<u32>("THREECX_CALLS_PER_MINUTE")
        .or(f.calls_per_minute)
        .unwrap_or(d.calls_per_minute);
    if !(1..=6000).contains(&calls_per_minute) {
        r.problems
            .push("THREECX_CALLS_PER_MINUTE: must be 1–6000".into());
    }
    let ring_timeout_secs = r
        .parse::<u32>("THREECX_RING_TIMEOUT_SECS")
        .or(f.ring_timeout_secs);
    if ring_timeout_secs.is_some_and(|t| !(5..=300).contains(&t)) {
        r.problems
            .push("THREECX_RING_TIMEOUT_SECS: must be 5–300".into());
    }
    let advoware_note = r
        .str("THREECX_ADVOWARE_NOTE_PATH")
        .or(f.advoware_note_path)
        .filter(|p| !p.trim().is_empty())
        .map(|path| {
            for p in crate::clients::advoware::template_problems(&path, &["betnr"]) {
                r.problems.push(format!("THREECX_ADVOWARE_NOTE_PATH: {p}"));
            }
            let mut field = |var: &str, file: Option<String>, default: &str| {
                let v = r.str(var).or(file).unwrap_or_else(|| default.to_owned());
                let v = v.trim().to_owned();
                if v.is_empty() {
                    r.problems.push(format!("{var}: must not be empty"));
                }
                v
            };
            CallNoteSettings {
                path: path.trim().to_owned(),
                text_field: field(
                    "THREECX_ADVOWARE_NOTE_TEXT_FIELD",
                    f.advoware_note_text_field,
                    "text",
                ),
                date_field: field(
                    "THREECX_ADVOWARE_NOTE_DATE_FIELD",
                    f.advoware_note_date_field,
                    "datum",
                ),
            }
        });
    ThreeCxSettings {
        default_region,
        agents,
        default_user_id,
        task_due_hours,
        crm_url,
        dial_prefix,
        lookup_deadline: Duration::from_millis(deadline_ms),
        api_base_url,
        client_id,
        client_secret,
        api_timeout: Duration::from_millis(api_timeout_ms),
        calls_per_minute,
        ring_timeout_secs,
        advoware_note,
    }
}

fn check_http_url(problems: &mut Vec<String>, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        match url::Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => problems.push(format!(
                "{name}: expected http(s) URL, got scheme {:?}",
                u.scheme()
            )),
            Err(e) => problems.push(format!("{name}: not a URL: {e}")),
        }
    }
}

/// The Bankverbindungen sync's Advoware paths and field names (issue 12): not documented
/// publicly, so configuration with the most likely defaults (README, "Bankverbindungen").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BankverbindungenSettings {
    pub paths: crate::handlers::bankverbindungen::sides::BankPaths,
    pub fields: crate::sync::bankverbindungen::FieldNames,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileBankverbindungen {
    paths: BTreeMap<String, String>,
    fields: BTreeMap<String, String>,
}

/// `[bankverbindungen.paths|fields]` over the defaults, `BANKVERBINDUNGEN_PATH_<NAME>` /
/// `BANKVERBINDUNGEN_FIELD_<NAME>` over both; unknown names and every problem reported.
fn load_bankverbindungen(r: &mut Reader<'_>, f: FileBankverbindungen) -> BankverbindungenSettings {
    use crate::handlers::bankverbindungen::sides::BankPaths;
    use crate::sync::bankverbindungen::FieldNames;
    let mut s = BankverbindungenSettings::default();
    let path_names = BankPaths::SETTINGS.map(|(n, _)| n);
    for (name, value) in f.paths {
        match s.paths.get_mut(&name) {
            Some(slot) => *slot = value,
            None => r.problems.push(format!(
                "bankverbindungen.paths: unknown setting {name:?} (known: {})",
                path_names.join(", ")
            )),
        }
    }
    for (name, value) in f.fields {
        match s.fields.get_mut(&name) {
            Some(slot) => *slot = value.trim().to_owned(),
            None => r.problems.push(format!(
                "bankverbindungen.fields: unknown setting {name:?} (known: {})",
                FieldNames::SETTINGS.join(", ")
            )),
        }
    }
    for name in path_names {
        let var = format!("BANKVERBINDUNGEN_PATH_{}", name.to_ascii_uppercase());
        if let (Some(v), Some(slot)) = (r.str(&var), s.paths.get_mut(name)) {
            *slot = v;
        }
    }
    for name in FieldNames::SETTINGS {
        let var = format!("BANKVERBINDUNGEN_FIELD_{}", name.to_ascii_uppercase());
        // Set but empty turns an optional field off.
        if let (Some(v), Some(slot)) = (r.env.get(&var), s.fields.get_mut(name)) {
            *slot = v.trim().to_owned();
        }
    }
    r.problems.extend(s.paths.problems());
    r.problems.extend(s.fields.problems());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_with_secret() {
        let cfg = Config::load(
            None,
            &env(&[("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret")]),
        );
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.schedules.len(), 3);
        assert!(cfg.roles.intake && cfg.roles.consumers && cfg.roles.schedules);
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("0123456789abcdef-secret"),
            "secret leaked into Debug: {dbg}"
        );
    }

    #[test]
    fn xai_settings_are_validated_together() {
        let problems = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("XAI_API_KEY", "xai-inference-key"),
                ("XAI_MANAGEMENT_BASE_URL", "not a url"),
                ("XAI_TIMEOUT_SECONDS", "0"),
                ("XAI_MAX_FILE_BYTES", "60000000"),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
        .join("\n");
        for name in [
            "XAI_MANAGEMENT_API_KEY",
            "XAI_MANAGEMENT_BASE_URL",
            "XAI_TIMEOUT_SECONDS",
            "XAI_MAX_FILE_BYTES",
        ] {
            assert!(problems.contains(name), "{name} missing in {problems}");
        }
        let cfg = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("XAI_API_KEY", "xai-inference-key"),
                ("XAI_MANAGEMENT_API_KEY", "xai-management-key"),
                ("XAI_FILES_BASE_URL", "http://127.0.0.1:9/v1"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.xai.files_base_url, "http://127.0.0.1:9/v1/");
        assert_eq!(
            cfg.xai.management_base_url,
            "https://management-api.x.ai/v1/"
        );
        assert_eq!(cfg.xai.max_file_bytes, XAI_MAX_FILE_BYTES);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("xai-inference-key") && !dbg.contains("xai-management-key"));
    }

    #[test]
    fn documents_settings_parse_and_bad_removal_is_a_problem() {
        let problems = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("DOCUMENTS_COLLECTION_REMOVAL", "sometimes"),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
        .join("\n");
        assert!(
            problems.contains("DOCUMENTS_COLLECTION_REMOVAL"),
            "{problems}"
        );
        let cfg = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("DOCUMENTS_COLLECTION_REMOVAL", "deleted_or_closed"),
                ("DOCUMENTS_CLOSED_STATUSES", "Erledigt, Archiv"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.documents.collection_removal,
            CollectionRemoval::DeletedOrClosed
        );
        assert_eq!(cfg.documents.closed_statuses, vec!["Erledigt", "Archiv"]);
        let d = Config::load(
            None,
            &env(&[("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.documents, DocumentsSettings::default());
    }

    #[test]
    fn espocrm_settings_are_validated_together() {
        let problems = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("ESPOCRM_API_BASE_URL", "https://crm.example/api/v1/"),
                ("ESPOCRM_API_TIMEOUT_SECONDS", "0"),
                ("ESPOCRM_PAGE_SIZE", "500"),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
        .join("\n");
        for name in [
            "ESPOCRM_API_KEY",
            "ESPOCRM_API_TIMEOUT_SECONDS",
            "ESPOCRM_PAGE_SIZE",
        ] {
            assert!(problems.contains(name), "{name} missing in {problems}");
        }
        let cfg = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("ESPOCRM_API_BASE_URL", "https://crm.example/api/v1/"),
                ("ESPOCRM_API_KEY", "espo-key-123456"),
                ("ESPOCRM_PAGE_SIZE", "50"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.espocrm.page_size, Some(50));
        assert!(!format!("{cfg:?}").contains("espo-key-123456"));
    }

    #[test]
    fn beteiligte_settings_default_to_the_seeds_and_are_validated() {
        let cfg = Config::load(
            None,
            &env(&[("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.beteiligte, BeteiligteSettings::default());
        assert_eq!(
            cfg.beteiligte.conflict_policy,
            crate::sync::beteiligte::ConflictPolicy::EspocrmWins
        );
        assert_eq!(cfg.beteiligte.max_retries, 5);
        assert_eq!(cfg.beteiligte.reset_after, Duration::from_secs(24 * 3600));
        let problems = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("BETEILIGTE_CONFLICT_POLICY", "loudest_wins"),
                ("BETEILIGTE_MAX_RETRIES", "0"),
                ("BETEILIGTE_RESET_AFTER_HOURS", "0"),
                ("BETEILIGTE_NOTIFY_USER_ID", "not an id"),
                ("BETEILIGTE_DEFAULT_REGION", "XX"),
            ]),
        )
        .err()
        .map(|e| e.problems.join("\n"))
        .unwrap_or_default();
        for name in [
            "BETEILIGTE_CONFLICT_POLICY",
            "BETEILIGTE_MAX_RETRIES",
            "BETEILIGTE_RESET_AFTER_HOURS",
            "BETEILIGTE_NOTIFY_USER_ID",
            "BETEILIGTE_DEFAULT_REGION: unknown region",
        ] {
            assert!(problems.contains(name), "{name} missing in {problems}");
        }
        let cfg = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("BETEILIGTE_CONFLICT_POLICY", "manual"),
                ("BETEILIGTE_CHECK_CLEAN_LIMIT", "0"),
                ("BETEILIGTE_NOTIFY_USER_ID", "admin1"),
                ("BETEILIGTE_DEFAULT_REGION", "at"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.beteiligte.default_region.iso, "AT");
        assert_eq!(
            cfg.beteiligte.conflict_policy,
            crate::sync::beteiligte::ConflictPolicy::Manual
        );
        assert_eq!(cfg.beteiligte.check_clean_limit, 0);
        assert_eq!(cfg.beteiligte.notify_user_id.as_deref(), Some("admin1"));
    }

    #[test]
    fn lists_every_problem() {
        let err = Config::load(
            None,
            &env(&[
                ("WORKER_LISTEN_ADDR", "nope"),
                ("REDIS_URL", "http://x"),
                ("WORKER_ROLES", "intake,cooking"),
                ("ADVOWARE_API_KEY", "not base64!"),
                ("WORKER_SCHEDULE_CALENDAR_SYNC_ALL_CRON", "every day"),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
        let joined = err.join("\n");
        for needle in [
            "WORKER_LISTEN_ADDR",
            "REDIS_URL",
            "cooking",
            "GATEWAY_SIGNING_SECRET",
            "ADVOWARE_API_KEY",
            "calendar-sync-all",
        ] {
            assert!(joined.contains(needle), "missing {needle} in:\n{joined}");
        }
    }

    #[test]
    fn advoware_paths_default_to_facts_and_every_problem_is_listed() {
        let secret = ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret");
        let cfg = Config::load(None, &env(&[secret])).map_err(|e| e.to_string());
        let paths = cfg.map(|c| c.advoware.paths);
        assert_eq!(
            paths.as_ref().map(|p| p.termin_get.as_str()),
            Ok("api/v1/advonet/Termine?frnr={frnr}"),
            "FACTS §1: one appointment by the query parameter frnr"
        );
        let dir = std::env::temp_dir().join(format!("bbl-cfg-paths-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("w.toml");
        let _ = std::fs::write(
            &path,
            r#"
[advoware.paths]
termin_get = "api/v1/advonet/Termine/{frNr}"
termine_list = "https://evil.example/Termine?kuerzel={kuerzel}"
termin_bogus = "x"
"#,
        );
        let problems = Config::load(
            Some(&path),
            &env(&[
                secret,
                (
                    "ADVOWARE_PATH_TERMIN_DELETE",
                    "api/v1/advonet/../Termine/{frnr}",
                ),
                (
                    "ADVOWARE_PATH_MITARBEITER",
                    "api/v1/advonet/Mitarbeiter/{frnr}",
                ),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
        let joined = problems.join("\n");
        for needle in [
            "advoware.paths.termin_get / ADVOWARE_PATH_TERMIN_GET: bad placeholder {frNr}",
            "advoware.paths.termine_list / ADVOWARE_PATH_TERMINE_LIST: must be a path relative",
            "advoware.paths.termine_list / ADVOWARE_PATH_TERMINE_LIST: must contain {from}",
            "advoware.paths.termine_list / ADVOWARE_PATH_TERMINE_LIST: must contain {to}",
            "unknown setting \"termin_bogus\"",
            "ADVOWARE_PATH_TERMIN_DELETE: must not contain '.' or '..' segments",
            "ADVOWARE_PATH_MITARBEITER: takes no placeholders, found {frnr}",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
        let ok = Config::load(
            None,
            &env(&[
                secret,
                ("ADVOWARE_PATH_TERMIN_GET", "api/v1/advonet/Termine/{frnr}"),
            ]),
        )
        .map(|c| c.advoware.paths.termin_get)
        .map_err(|e| e.to_string());
        assert_eq!(ok.as_deref(), Ok("api/v1/advonet/Termine/{frnr}"));
    }

    /// Issue 11 leftover: the Beteiligte paths are settings like the appointment paths, and a
    /// bad template is a `config check` problem naming the setting and its variable.
    #[test]
    fn beteiligte_paths_are_settings_and_bad_templates_are_problems() {
        let secret = ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret");
        let defaults = Config::load(None, &env(&[secret]))
            .map(|c| c.advoware.paths)
            .map_err(|e| e.to_string());
        assert_eq!(
            defaults.as_ref().map(|p| {
                (
                    p.beteiligte_get.as_str(),
                    p.beteiligte_create.as_str(),
                    p.beteiligte_update.as_str(),
                )
            }),
            Ok((
                "api/v1/advonet/Beteiligte/{betnr}",
                "api/v1/advonet/Beteiligte",
                "api/v1/advonet/Beteiligte/{betnr}",
            ))
        );
        let problems = Config::load(
            None,
            &env(&[
                secret,
                (
                    "ADVOWARE_PATH_BETEILIGTE_GET",
                    "api/v1/advonet/Beteiligte/{betNr}",
                ),
                (
                    "ADVOWARE_PATH_BETEILIGTE_CREATE",
                    "api/v1/advonet/Beteiligte/{betnr}",
                ),
                (
                    "ADVOWARE_PATH_BETEILIGTE_UPDATE",
                    "api/v1/advonet/Beteiligte",
                ),
                (
                    "ADVOWARE_PATH_KOMMUNIKATION_UPDATE",
                    "api/v1/advonet/Beteiligte/{betnr}/Kommunikationen",
                ),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
        .join("\n");
        for needle in [
            "advoware.paths.beteiligte_get / ADVOWARE_PATH_BETEILIGTE_GET: bad placeholder {betNr}",
            "ADVOWARE_PATH_BETEILIGTE_CREATE: takes no placeholders, found {betnr}",
            "ADVOWARE_PATH_BETEILIGTE_UPDATE: must contain {betnr}",
            "ADVOWARE_PATH_KOMMUNIKATION_UPDATE: must contain {id}",
        ] {
            assert!(
                problems.contains(needle),
                "missing {needle:?} in:\n{problems}"
            );
        }
        let ok = Config::load(
            None,
            &env(&[
                secret,
                ("ADVOWARE_PATH_BETEILIGTE_GET", "api/v2/Beteiligte/{betnr}"),
            ]),
        )
        .map(|c| c.advoware.paths.beteiligte_get)
        .map_err(|e| e.to_string());
        assert_eq!(ok.as_deref(), Ok("api/v2/Beteiligte/{betnr}"));
    }

    #[test]
    fn file_then_env() {
        let dir = std::env::temp_dir().join(format!("bbl-cfg-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("w.toml");
        let _ = std::fs::write(
            &path,
            r#"
listen_addr = "127.0.0.1:9000"
gateway_signing_secret = "file-secret-0123456789"
[queue]
default_concurrency = 7
[retry.topics."test.record"]
delays_ms = [10]
max_attempts = 2
"#,
        );
        let cfg = Config::load(
            Some(&path),
            &env(&[("WORKER_LISTEN_ADDR", "127.0.0.1:9001")]),
        );
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.listen_addr.port(), 9001);
        assert_eq!(cfg.queue.default_concurrency, 7);
        assert_eq!(cfg.retry.for_topic("test.record").max_attempts, 2);
        assert_eq!(cfg.retry.for_topic("vmh.beteiligte.update").max_attempts, 6);
    }

    #[test]
    fn retention_limits_zero_is_off_and_problems_are_listed() {
        let cfg = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("WORKER_DLQ_MAX_ENTRIES", "0"),
                ("WORKER_STREAM_ACKED_MAX_AGE_SECS", "60"),
            ]),
        );
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.retention.dlq_max_entries, None);
        assert_eq!(
            cfg.retention.stream_acked_max_age,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            cfg.retention.dlq_max_age,
            RetentionSettings::default().dlq_max_age
        );
        let problems = Config::load(
            None,
            &env(&[
                ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret"),
                ("WORKER_RETENTION_INTERVAL_SECS", "0"),
                ("WORKER_CONSUMER_MAX_IDLE_SECS", "10"),
            ]),
        )
        .err()
        .map(|e| e.problems.join("\n"))
        .unwrap_or_default();
        assert!(
            problems.contains("WORKER_RETENTION_INTERVAL_SECS"),
            "{problems}"
        );
        assert!(
            problems.contains("WORKER_CONSUMER_MAX_IDLE_SECS"),
            "{problems}"
        );
    }

    #[test]
    fn threecx_settings_are_read_and_every_problem_listed() {
        let secret = ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret");
        let problems = Config::load(
            None,
            &env(&[
                secret,
                ("THREECX_DEFAULT_REGION", "XX"),
                ("THREECX_TASK_DUE_HOURS", "0"),
                ("THREECX_DEFAULT_USER_ID", "not an id"),
                ("THREECX_CRM_URL", "ftp://crm"),
                ("THREECX_DIAL_PREFIX", "+9"),
                ("THREECX_LOOKUP_DEADLINE_MS", "10"),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
        .join("\n");
        for name in [
            "THREECX_DEFAULT_REGION",
            "THREECX_TASK_DUE_HOURS",
            "THREECX_DEFAULT_USER_ID",
            "THREECX_CRM_URL",
            "THREECX_DIAL_PREFIX",
            "THREECX_LOOKUP_DEADLINE_MS",
        ] {
            assert!(problems.contains(name), "{name} missing in:\n{problems}");
        }
        let cfg = Config::load(
            None,
            &env(&[
                secret,
                ("THREECX_DEFAULT_USER_ID", "6745a1b2c3d4e5f60"),
                ("THREECX_CRM_URL", "https://crm.example.de/"),
            ]),
        );
        let t = cfg.map(|c| c.threecx).unwrap_or_default();
        assert_eq!(t.crm_url.as_deref(), Some("https://crm.example.de/"));
        assert_eq!(t.user_for(Some("201"), None), Some("6745a1b2c3d4e5f60"));
        assert_eq!(t.lookup_deadline, Duration::from_millis(800));
    }

    /// Issue 14, outbound calls: the Call Control settings come as a set, every problem listed,
    /// The optional Advoware call note: off by default; its path needs `{betnr}` and the
    /// Advoware settings must be there; field names default to `text` and `datum`.
    #[test]
    fn threecx_advoware_note_settings_are_validated() {
        let secret = ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret");
        let off = Config::load(None, &env(&[secret])).map(|c| c.threecx.advoware_note);
        assert!(matches!(off, Ok(None)), "{off:?}");
        let problems = Config::load(
            None,
            &env(&[
                secret,
                ("THREECX_ADVOWARE_NOTE_PATH", "api/v1/advonet/Notizen"),
            ]),
        )
        .err()
        .map(|e| e.problems.join("\n"))
        .unwrap_or_default();
        assert!(
            problems.contains("THREECX_ADVOWARE_NOTE_PATH: must contain {betnr}"),
            "{problems}"
        );
        assert!(
            problems.contains("call notes need the Advoware settings"),
            "{problems}"
        );
        let aw = [
            ("ADVOWARE_API_BASE_URL", "https://www2.advo-net.net:90/"),
            (
                "ADVOWARE_SECURITY_GATEWAY_URL",
                "https://security.advo-net.net",
            ),
            ("ADVOWARE_KANZLEI", "K"),
            ("ADVOWARE_DATABASE", "D"),
            ("ADVOWARE_USER", "U"),
            ("ADVOWARE_ROLE", "2"),
            ("ADVOWARE_PRODUCT", "64"),
            ("ADVOWARE_APP_ID", "app"),
            ("ADVOWARE_PASSWORD", "not-a-real-password"),
            ("ADVOWARE_API_KEY", "bm90LWEtcmVhbC1rZXk="),
        ];
        let mut vars = aw.to_vec();
        vars.push(secret);
        vars.push((
            "THREECX_ADVOWARE_NOTE_PATH",
            "api/v1/advonet/Beteiligte/{betnr}/Notizen",
        ));
        vars.push(("THREECX_ADVOWARE_NOTE_DATE_FIELD", "erstelltAm"));
        let note = Config::load(None, &env(&vars)).map(|c| c.threecx.advoware_note);
        assert_eq!(
            note.ok().flatten(),
            Some(CallNoteSettings {
                path: "api/v1/advonet/Beteiligte/{betnr}/Notizen".into(),
                text_field: "text".into(),
                date_field: "erstelltAm".into(),
            })
        );
    }

    /// and the secret never appears in a problem or in `Debug`.
    #[test]
    fn threecx_call_control_settings_are_validated() {
        let secret = ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret");
        let problems = Config::load(
            None,
            &env(&[
                secret,
                ("THREECX_API_BASE_URL", "ftp://pbx"),
                ("THREECX_API_TIMEOUT_MS", "5"),
                ("THREECX_CALLS_PER_MINUTE", "0"),
                ("THREECX_RING_TIMEOUT_SECS", "1"),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
        .join("\n");
        for name in [
            "THREECX_API_BASE_URL",
            "THREECX_CLIENT_ID",
            "THREECX_CLIENT_SECRET",
            "THREECX_API_TIMEOUT_MS",
            "THREECX_CALLS_PER_MINUTE",
            "THREECX_RING_TIMEOUT_SECS",
        ] {
            assert!(problems.contains(name), "{name} missing in:\n{problems}");
        }
        let orphan = Config::load(
            None,
            &env(&[secret, ("THREECX_CLIENT_SECRET", "s3cr3t-value-xyz")]),
        )
        .err()
        .map(|e| e.problems.join("\n"))
        .unwrap_or_default();
        assert!(orphan.contains("THREECX_API_BASE_URL"), "{orphan}");
        assert!(!orphan.contains("s3cr3t-value-xyz"), "{orphan}");
        let t = Config::load(
            None,
            &env(&[
                secret,
                ("THREECX_API_BASE_URL", "https://ralup.my3cx.de/"),
                ("THREECX_CLIENT_ID", "901"),
                ("THREECX_CLIENT_SECRET", "s3cr3t-value-xyz"),
            ]),
        )
        .map(|c| c.threecx)
        .unwrap_or_default();
        assert_eq!(t.calls_per_minute, 60);
        let Some(cc) = t.call_control() else {
            panic!("call control not configured")
        };
        assert_eq!(cc.base_url, "https://ralup.my3cx.de");
        assert!(!format!("{t:?}{cc:?}").contains("s3cr3t-value-xyz"));
    }

    #[test]
    fn leads_settings_are_read_and_every_problem_listed() {
        let secret = ("GATEWAY_SIGNING_SECRET", "0123456789abcdef-secret");
        let problems = Config::load(
            None,
            &env(&[
                secret,
                ("LEADS_DEFAULT_REGION", "XX"),
                ("LEADS_EXISTING_POLICY", "merge"),
                ("LEADS_FOLLOWUP", "email"),
                ("LEADS_TASK_DUE_HOURS", "0"),
                ("LEADS_ASSIGN_MIETER_USER_ID", "not an id"),
            ]),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
        .join("\n");
        for name in [
            "LEADS_DEFAULT_REGION",
            "LEADS_EXISTING_POLICY",
            "LEADS_FOLLOWUP",
            "LEADS_TASK_DUE_HOURS",
            "LEADS_ASSIGN_MIETER_USER_ID",
        ] {
            assert!(problems.contains(name), "{name} missing in {problems}");
        }
        let cfg = Config::load(
            None,
            &env(&[
                secret,
                ("LEADS_DEFAULT_REGION", "at"),
                ("LEADS_EXISTING_POLICY", "new_lead"),
                ("LEADS_ASSIGN_VERMIETER_TEAM_ID", "team1"),
                ("LEADS_NEWSLETTER_TARGET_LIST_ID", "list1"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.leads.default_region.calling_code, "43");
        assert_eq!(cfg.leads.existing, ExistingPolicy::NewLead);
        assert_eq!(cfg.leads.followup, Followup::Task);
        let rule = cfg
            .leads
            .assign
            .get(&crate::sync::leads::LeadType::Vermieter);
        assert_eq!(rule.and_then(|a| a.team_id.as_deref()), Some("team1"));
        assert_eq!(
            cfg.leads.newsletter_target_list_id.as_deref(),
            Some("list1")
        );
    }
}
