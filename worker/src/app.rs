//! `serve`: wires configuration, Redis, metrics and the three roles (intake, consumers,
//! schedules) together and runs them until shutdown.

use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::info;

use crate::config::Config;
use crate::handlers::{Clients, Registry};
use crate::intake::{self, AppState};
use crate::locks::Locks;
use crate::ops::health::{ClientsState, Health};
use crate::ops::metrics::Metrics;
use crate::queue::consumer::{self, ConsumerDeps};
use crate::queue::{Queue, QueueError, Redis};
use crate::schedule;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("http server: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Builds the queue handle the CLI and `serve` share.
pub fn queue_for(config: &Config) -> Result<Queue, QueueError> {
    let redis = Arc::new(Redis::open(
        config.redis_url.expose(),
        config.queue.redis_timeout,
    )?);
    Ok(
        Queue::new(redis, config.queue.group.clone(), config.queue.coalesce_ttl)
            .with_dlq_max_entries(config.retention.dlq_max_entries.unwrap_or(0)),
    )
}

pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let queue = queue_for(&config)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let registry = Arc::new(Registry::from_config(&config));

    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen_addr,
            source,
        })?;
    info!(addr = %config.listen_addr, roles = ?config.roles, handlers = ?registry, "worker listening");
    if let Some(w) = config.admin_token_warning() {
        tracing::warn!(addr = %config.listen_addr, "{w}");
    }

    let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
    let state = AppState {
        config: config.clone(),
        queue: queue.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        lookup: intake::threecx::LookupService::from_config(&config),
        outbound: crate::handlers::telephony::outbound::OutboundService::from_config(&config),
    };
    if config.roles.consumers {
        // Known before the first `/ready` answer: a probe that arrives while start-up is still
        // wiring must not see "ready" with zero expected consumers or unreported clients.
        health.expect_consumers(registry.topics().len());
        let clients = Clients::default();
        if crate::handlers::calendar::configured(&config) {
            crate::handlers::calendar::spawn_build(
                config.clone(),
                queue.clone(),
                clients.calendar.clone(),
                health.clone(),
                metrics.clone(),
            );
        }
        if crate::handlers::beteiligte::configured(&config) {
            crate::handlers::beteiligte::spawn_build(
                config.clone(),
                queue.clone(),
                clients.beteiligte.clone(),
                health.clone(),
            );
        }
        if crate::handlers::documents::configured(&config) {
            // No Redis needed: built now; a configuration problem fails the document jobs.
            let built = crate::handlers::documents::build_sides(&config);
            health.set_clients(
                "documents",
                match &built {
                    Ok(_) => ClientsState::Ready,
                    Err(e) => {
                        tracing::error!(error = %e, "document sync clients cannot be built");
                        ClientsState::Failed(e.to_string())
                    }
                },
            );
            let _ = clients.documents.set(built);
        }
        if crate::handlers::bankverbindungen::configured(&config) {
            crate::handlers::bankverbindungen::spawn_build(
                config.clone(),
                queue.clone(),
                clients.bankverbindungen.clone(),
                health.clone(),
            );
        }
        let deps = Arc::new(ConsumerDeps {
            config: config.clone(),
            queue: queue.clone(),
            locks: Locks::new(queue.redis().clone()),
            registry,
            clients: Arc::new(clients),
            metrics: metrics.clone(),
            health: health.clone(),
            consumer_name: format!(
                "{}-{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        });
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            consumer::run(deps, shutdown).await;
            Ok(())
        });
    }
    if config.roles.schedules {
        let (specs, queue, metrics, shutdown) = (
            config.schedules.clone(),
            queue.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            schedule::run(specs, queue, metrics, shutdown).await;
            Ok(())
        });
    }
    // Serve only now: every consumer and client state `/ready` reports is registered. The
    // listener is bound since the start, so early connections wait in its backlog.
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, intake::router(state))
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await
                .map_err(ServeError::Http)
        });
    }
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            first_error.get_or_insert(e);
        }
    }
    info!("worker stopped");
    first_error.map_or(Ok(()), Err)
}
