//! Redis connections: one shared, multiplexed, self-reconnecting connection for short commands,
//! and dedicated connections for blocking stream reads (a `BLOCK` on the shared connection would
//! stall every command queued behind it).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::QueueError;

pub struct Redis {
    client: redis::Client,
    shared: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl Redis {
    /// Parses the URL; connects lazily, so the worker starts (and answers 503) while Redis is down.
    pub fn open(url: &str, timeout: Duration) -> Result<Self, QueueError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            shared: OnceCell::new(),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn manager_config(&self, response_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(response_timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000)
    }

    /// The shared connection (cheap clone).
    pub async fn conn(&self) -> Result<ConnectionManager, QueueError> {
        let cfg = self.manager_config(self.timeout);
        let fut = self.shared.get_or_try_init(|| async {
            ConnectionManager::new_with_config(self.client.clone(), cfg).await
        });
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(QueueError::Timeout),
        }
    }

    /// A connection of its own, for blocking reads of up to `block`.
    pub async fn dedicated(&self, block: Duration) -> Result<ConnectionManager, QueueError> {
        let cfg = self.manager_config(block + self.timeout);
        match tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(QueueError::Timeout),
        }
    }
}
