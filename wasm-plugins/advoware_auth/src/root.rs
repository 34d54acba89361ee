//! Part 2 of the filter: the root context (one per filter chain per worker).
//!
//! - `on_configure` parses the configuration once. Invalid → one error log
//!   line naming every problem and `false`, so the host refuses the filter
//!   (every request on the chain fails with the host's 500, and deploy checks
//!   that configure the chain see the refusal). A valid configuration sets the
//!   tick period (once per root: a second call traps in ngx_wasm_module).
//! - `on_tick` keeps the shared token warm: when there is no token or its
//!   refresh point has passed, it takes the fetch lock and dispatches the
//!   token call from the root context; the answer arrives in this root's
//!   `on_http_call_response` and is stored for all workers. The first tick
//!   fetches, so the cache is warm before traffic.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::cache::tick_needs_fetch;
use crate::config::Config;
use crate::host::{self, Metric, Metrics};
use crate::http::AdvowareHttp;
use crate::shm::{self, LockOutcome};
use crate::token::interpret_token_response;

/// What every HTTP context of a root shares.
#[derive(Debug)]
pub struct RootShared {
    /// The configuration, or the message describing why it is invalid.
    pub config: Result<Rc<Config>, String>,
    pub metrics: Metrics,
}

#[derive(Debug)]
pub struct AdvowareRoot {
    shared: Rc<RootShared>,
    tick_set: bool,
    /// The tick's token call in flight.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    call_id: u32,
    owner: u64,
    /// The configuration the call was made with.
    cfg: Rc<Config>,
    /// When to stop waiting for the answer (the lock's expiry).
    give_up_at_ms: u64,
}

impl AdvowareRoot {
    pub fn new() -> Self {
        AdvowareRoot {
            shared: Rc::new(RootShared {
                config: Err("not configured yet".into()),
                metrics: Metrics::default(),
            }),
            tick_set: false,
            pending: None,
        }
    }

    fn refresh_if_due(&mut self) -> Result<(), String> {
        let Ok(cfg) = &self.shared.config else {
            return Ok(());
        };
        let cfg = Rc::clone(cfg);
        let now = host::now_ms();
        // The host answers every call within its timeout; should an answer
        // never come (instance replaced, …), stop waiting when the lock expires.
        if self.pending.as_ref().is_some_and(|p| now < p.give_up_at_ms) {
            return Ok(());
        }
        self.pending = None;
        let key = cfg.token_key();
        let current =
            shm::read_token(&key).map_err(|s| format!("reading the token cache failed: {s:?}"))?;
        if !tick_needs_fetch(current.as_ref(), now) {
            return Ok(());
        }
        let random = host::random16().ok_or("no randomness for the nonce")?;
        let owner = host::owner_id(&random);
        let lock = cfg.lock_key();
        match shm::try_lock(&lock, owner, now, cfg.lock_ttl_ms())
            .map_err(|s| format!("fetch lock failed: {s:?}"))?
        {
            LockOutcome::Held => return Ok(()),
            LockOutcome::Acquired => {}
        }
        // Someone may have stored a fresh token between our read and the lock.
        let again =
            shm::read_token(&key).map_err(|s| format!("reading the token cache failed: {s:?}"))?;
        if !tick_needs_fetch(again.as_ref(), now) {
            let _ = shm::unlock(&lock, owner);
            return Ok(());
        }
        self.shared.metrics.inc(Metric::TokenFetches);
        match host::dispatch_token_call(&cfg, random) {
            Ok(id) => {
                let give_up_at_ms = now + cfg.lock_ttl_ms();
                self.pending = Some(Pending {
                    call_id: id,
                    owner,
                    cfg,
                    give_up_at_ms,
                });
                Ok(())
            }
            Err(e) => {
                let _ = shm::unlock(&lock, owner);
                self.shared.metrics.inc(Metric::TokenFetchFailures);
                Err(format!("token refresh failed: {}", e.message()))
            }
        }
    }
}

impl Default for AdvowareRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Context for AdvowareRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(p) = self.pending.take() else { return };
        if p.call_id != token_id {
            self.pending = Some(p);
            return;
        }
        let Pending { owner, cfg, .. } = p;
        let (dispatch_status, status, body) = host::call_outcome(body_size);
        let now = host::now_ms();
        let outcome = interpret_token_response(
            &cfg,
            dispatch_status.as_deref(),
            status.as_deref(),
            &body,
            now,
        );
        match outcome {
            Ok(token) => {
                if let Err(s) = shm::store_token(&cfg.token_key(), &token) {
                    host::log(
                        LogLevel::Error,
                        &format!("storing the refreshed token failed: {s:?}"),
                    );
                } else {
                    self.shared.metrics.inc(Metric::TickRefreshes);
                    host::log(
                        LogLevel::Info,
                        &format!(
                            "token refreshed by tick, valid for {} s",
                            (token.expires_at_ms.saturating_sub(now)) / 1000
                        ),
                    );
                }
            }
            Err(e) => {
                self.shared.metrics.inc(Metric::TokenFetchFailures);
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "token refresh by tick failed: {} ({})",
                        e.code(),
                        e.message()
                    ),
                );
            }
        }
        if let Err(s) = shm::unlock(&cfg.lock_key(), owner) {
            host::log(
                LogLevel::Warn,
                &format!("releasing the fetch lock failed: {s:?} (it expires on its own)"),
            );
        }
    }
}

impl RootContext for AdvowareRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let metrics = Metrics::define();
        let config = match Config::parse(&bytes) {
            Ok(cfg) => Ok(Rc::new(cfg)),
            Err(e) => {
                let msg = e.to_string();
                host::log(LogLevel::Error, &format!("{msg}; filter refused"));
                Err(msg)
            }
        };
        if let Ok(cfg) = &config {
            if cfg.tick_period_ms > 0 && !self.tick_set {
                let period = std::time::Duration::from_millis(cfg.tick_period_ms);
                match proxy_wasm::hostcalls::set_tick_period(period) {
                    Ok(()) => self.tick_set = true,
                    Err(s) => host::log(
                        LogLevel::Warn,
                        &format!("set_tick_period failed: {s:?}; no proactive refresh"),
                    ),
                }
            }
        }
        let ok = config.is_ok();
        self.shared = Rc::new(RootShared { config, metrics });
        ok
    }

    fn on_tick(&mut self) {
        if let Err(msg) = self.refresh_if_due() {
            host::log(LogLevel::Warn, &msg);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AdvowareHttp::new(Rc::clone(&self.shared))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
