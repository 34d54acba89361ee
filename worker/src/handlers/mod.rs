//! The handler registry: topic → handler, and the context a handler gets.
//!
//! Handlers must be idempotent: delivery is at least once (a job can run again after a crash or a
//! lost ack). They fetch the current state of their entity rather than trusting the event payload,
//! which is also what makes coalescing safe. Sync handlers for Advoware, EspoCRM, Google Calendar
//! and 3CX are registered here as later issues add them; topics without a handler stay queued.

pub mod bankverbindungen;
pub mod beteiligte;
pub mod calendar;
pub mod documents;
pub mod leads;
pub mod telephony;
pub mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::Config;
use crate::locks::{LockError, LockGuard, Locks};
use crate::queue::{Enqueued, Job, NewJob, Queue, QueueError};

/// How a handler failed, which decides what happens to the job.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt (network, 5xx, 429). `retry_after` carries an upstream's hint.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (invalid payload, 4xx): straight to the dead-letter stream.
    #[error("{0}")]
    Permanent(String),
    /// The entity is being worked on by another job: try later, not counted as a failure.
    #[error("lock busy: {0}")]
    LockBusy(String),
}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// Retryable (with the upstream's `Retry-After`) or permanent, as a sync's error says.
    pub fn classified(
        retryable: bool,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        if retryable {
            HandlerError::Retryable {
                message: message.into(),
                retry_after,
            }
        } else {
            HandlerError::Permanent(message.into())
        }
    }
}

impl From<QueueError> for HandlerError {
    fn from(e: QueueError) -> Self {
        HandlerError::retryable(e.to_string())
    }
}

impl From<redis::RedisError> for HandlerError {
    fn from(e: redis::RedisError) -> Self {
        HandlerError::retryable(format!("redis: {e}"))
    }
}

impl From<LockError> for HandlerError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Busy(key) => HandlerError::LockBusy(key),
            LockError::Queue(q) => q.into(),
        }
    }
}

pub type HandlerResult = Result<(), HandlerError>;

/// A job handler. Implemented for plain functions returning a boxed future, too.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult>;
}

impl<F> Handler for F
where
    F: for<'a> Fn(&'a JobContext, &'a Job) -> BoxFuture<'a, HandlerResult> + Send + Sync + 'static,
{
    fn handle<'a>(&'a self, ctx: &'a JobContext, job: &'a Job) -> BoxFuture<'a, HandlerResult> {
        self(ctx, job)
    }
}

/// Outside systems' clients, built once at start-up from [`Config`]. A handler whose system is
/// not configured fails its jobs permanently with a message saying so.
#[derive(Default)]
pub struct Clients {
    /// Advoware and Google Calendar for the calendar sync.
    pub calendar: ClientSlot<calendar::CalendarSides>,
    /// EspoCRM and Advoware for the Beteiligte sync.
    pub beteiligte: ClientSlot<beteiligte::BeteiligteSides>,
    /// EspoCRM and xAI for the document sync.
    pub documents: ClientSlot<documents::engine::DocumentsSides>,
    /// EspoCRM and Advoware for the Bankverbindungen sync.
    pub bankverbindungen: ClientSlot<bankverbindungen::BankSides>,
}

/// A sync's clients, set once built in the background (they need Redis), or the reason they
/// cannot be built (free of secrets).
pub type ClientSlot<T> = Arc<tokio::sync::OnceCell<Result<T, String>>>;

/// Why a sync's clients could not be built (one type for every sync).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Redis is not reachable yet (worth waiting for).
    #[error("redis: {0}")]
    Redis(String),
    /// Advoware settings are incomplete or invalid.
    #[error("Advoware: {0}")]
    Advoware(#[from] crate::clients::advoware::AdvowareError),
    #[error("EspoCRM: {0}")]
    EspoCrm(#[from] crate::clients::espocrm::EspoCrmError),
    /// The Google service account cannot be used.
    #[error("Google: {0}")]
    Google(#[from] crate::clients::google::GoogleError),
    /// The HTTP client cannot be built (TLS roots).
    #[error("HTTP client: {0}")]
    Http(String),
}

/// Redis not reachable yet is worth waiting for; everything else is a configuration problem.
impl From<BuildError> for BuildAttempt {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Redis(e) => BuildAttempt::WaitForRedis(e),
            e => BuildAttempt::Failed(e.to_string()),
        }
    }
}

/// The Advoware client every sync uses: settings validated, the token shared by all workers
/// through Redis, 30 s per request.
pub async fn advoware_client(
    config: &Config,
    queue: &crate::queue::Queue,
) -> Result<crate::clients::advoware::AdvowareClient<redis::aio::ConnectionManager>, BuildError> {
    use crate::clients::advoware::{AdvowareClient, ClientSettings};
    use crate::clients::http::ReqwestTransport;
    let settings = ClientSettings::from_settings(&config.advoware)?;
    let conn = queue
        .redis()
        .conn()
        .await
        .map_err(|e| BuildError::Redis(e.to_string()))?;
    let http = ReqwestTransport::new(Duration::from_secs(30))
        .map_err(|e| BuildError::Http(e.to_string()))?;
    Ok(AdvowareClient::new(settings, conn, Arc::new(http)))
}

/// Why one attempt to build a sync's clients did not succeed.
#[derive(Debug)]
pub enum BuildAttempt {
    /// Redis is not reachable yet: worth waiting for.
    WaitForRedis(String),
    /// The configuration cannot work: final, reported by `/ready` and to every job.
    Failed(String),
}

/// Builds a sync's clients (`what`, e.g. "calendar sync") in the background: retries while Redis
/// is unreachable (0.5 s doubling to 30 s), then fills `slot` and reports each state through
/// `report` (for `/ready`). One loop for every sync, so they all start and fail alike.
pub fn spawn_client_build<T, F, Fut>(
    what: &'static str,
    slot: ClientSlot<T>,
    report: impl Fn(crate::ops::health::ClientsState) + Send + 'static,
    mut build: F,
) where
    T: Send + Sync + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, BuildAttempt>> + Send,
{
    use crate::ops::health::ClientsState;
    report(ClientsState::Starting);
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            match build().await {
                Ok(sides) => {
                    let _ = slot.set(Ok(sides));
                    report(ClientsState::Ready);
                    tracing::info!("{what} clients ready");
                    return;
                }
                Err(BuildAttempt::WaitForRedis(e)) => {
                    tracing::warn!(error = %e, "{what} clients wait for Redis");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(BuildAttempt::Failed(e)) => {
                    tracing::error!(error = %e, "{what} clients cannot be built");
                    report(ClientsState::Failed(e.clone()));
                    let _ = slot.set(Err(e));
                    return;
                }
            }
        }
    });
}

/// [`spawn_client_build`] for a sync whose clients `build(config, queue)` makes, reported to
/// `/ready` as `<key>_clients`: the one start-up path of the Redis-backed syncs.
pub fn spawn_sides_build<T, F, Fut>(
    what: &'static str,
    key: &'static str,
    config: Arc<Config>,
    queue: Queue,
    slot: ClientSlot<T>,
    health: Arc<crate::ops::health::Health>,
    build: F,
) where
    T: Send + Sync + 'static,
    F: Fn(Arc<Config>, Queue) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, BuildError>> + Send,
{
    spawn_client_build(
        what,
        slot,
        move |state| health.set_clients(key, state),
        move || {
            let attempt = build(config.clone(), queue.clone());
            async move { attempt.await.map_err(BuildAttempt::from) }
        },
    );
}

/// A handler's view of its sync's clients: still starting → retryable, failed → permanent.
pub fn built_clients<'a, T>(slot: &'a ClientSlot<T>, what: &str) -> Result<&'a T, HandlerError> {
    match slot.get() {
        Some(Ok(sides)) => Ok(sides),
        Some(Err(problem)) => Err(HandlerError::Permanent(format!(
            "{what} clients could not be built: {problem}"
        ))),
        None => Err(HandlerError::retryable(format!(
            "{what} clients are still starting (waiting for Redis)"
        ))),
    }
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("calendar", &self.calendar.get().map(Result::is_ok))
            .field("beteiligte", &self.beteiligte.get().map(Result::is_ok))
            .field("documents", &self.documents.get().map(Result::is_ok))
            .field(
                "bankverbindungen",
                &self.bankverbindungen.get().map(Result::is_ok),
            )
            .finish()
    }
}

/// Everything a handler may use. Its tracing span carries topic, job id and entity.
pub struct JobContext {
    pub config: Arc<Config>,
    pub clients: Arc<Clients>,
    pub queue: Queue,
    pub locks: Locks,
    /// Name used in lock keys (`{handler}:{entity_type}:{entity_id}`).
    pub handler_name: String,
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    pub span: tracing::Span,
}

impl JobContext {
    /// Takes the entity lock with the configured TTL; busy → `Err(HandlerError::LockBusy)`, so
    /// `ctx.lock(..).await?` turns contention into a delayed retry.
    pub async fn lock(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<LockGuard, HandlerError> {
        Ok(self
            .locks
            .try_acquire(
                &self.handler_name,
                entity_type,
                entity_id,
                self.config.lock_ttl,
            )
            .await?)
    }

    /// Enqueues follow-up jobs (with coalescing).
    pub async fn enqueue(
        &self,
        topic: &str,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, HandlerError> {
        Ok(self.queue.enqueue(topic, jobs).await?)
    }

    pub async fn redis(&self) -> Result<redis::aio::ConnectionManager, HandlerError> {
        Ok(self.queue.redis().conn().await?)
    }
}

struct Entry {
    name: String,
    handler: Arc<dyn Handler>,
}

/// Topic → handler. Consumers run only for registered topics.
#[derive(Default)]
pub struct Registry {
    handlers: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    pub fn register(&mut self, topic: &str, name: &str, handler: impl Handler) {
        self.handlers.insert(
            topic.to_string(),
            Entry {
                name: name.to_string(),
                handler: Arc::new(handler),
            },
        );
    }

    pub fn get(&self, topic: &str) -> Option<(&str, Arc<dyn Handler>)> {
        self.handlers
            .get(topic)
            .map(|e| (e.name.as_str(), e.handler.clone()))
    }

    pub fn topics(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// The handlers this build ships for the given configuration.
    pub fn from_config(config: &Config) -> Self {
        let mut r = Registry::default();
        if config.test_handlers {
            testing::register(&mut r);
        }
        if calendar::configured(config) {
            calendar::register(&mut r);
        }
        if leads::configured(config) {
            leads::register(&mut r, config);
        }
        if beteiligte::configured(config) {
            beteiligte::register(&mut r);
        }
        if bankverbindungen::configured(config) {
            bankverbindungen::register(&mut r);
        }
        if telephony::configured(config) {
            telephony::register(&mut r, config);
        }
        if documents::configured(config) {
            documents::register(&mut r);
        }
        r
    }
}
