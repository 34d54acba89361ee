//! Part 3 of the filter: the HTTP context (one per request).
//!
//! `on_request_headers`:
//! 1. invalid configuration → 500 JSON `filter_misconfigured`;
//! 2. with `consumers` configured, the consumer (Kong's key-auth sets
//!    `X-Consumer-Username`) must have a scope allowing the method and the
//!    mapped Advoware path → else 403 JSON (`consumer_unknown`,
//!    `outside_scope`), before any token is read and nothing goes upstream;
//!    `endpoint` → upstream `:path` (bitbylaw-core; in Kong also
//!    `$upstream_uri`, see README "Path rewrite in Kong"), the client's `apikey`
//!    (header and query) and `Authorization` removed, `Host` set if
//!    configured; a bad endpoint → 400 JSON with the core error code;
//! 3. a usable cached token → `Authorization: Bearer …`, continue;
//! 4. no usable token, lock free → take the lock, dispatch the token call
//!    from this context and pause; the host resumes the request once the
//!    call has answered (`on_http_call_response` stores the token, releases
//!    the lock and sets the header, or answers 502/504);
//! 5. no usable token, lock held by another context → 503
//!    `token_refresh_in_progress` with `Retry-After: 1`. ngx_wasm_module
//!    cannot wake this request when the other context's call answers
//!    (`proxy_set_effective_context` is a no-op and `proxy_continue_stream`
//!    only resumes the request being executed), so waiting is impossible.
//!
//! `on_response_headers`: an upstream 401 for the token we injected may mean
//! Advoware revoked it early — or that this one request is not allowed (a
//! right of the API user), which must not cost every other client a refresh.
//! So the shared token is discarded only when it is at least
//! `rejected_token_min_age_secs` old *and* no other 401 forced a refresh in the
//! last `forced_refresh_min_interval_secs` (CAS on `<prefix>/forced`, then on
//! the token, only if it is still the one we used); then the answer becomes 503
//! `upstream_token_rejected` with `Retry-After: 1` and the client's retry mints a
//! fresh token (one fetch, guarded by the lock). Otherwise Advoware's 401 is
//! passed through and the token stays.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use crate::cache::{judge_rejection, refresh_already_forced, Rejection};
use crate::config::Config;
use crate::host::{self, Metric};
use crate::proxy::{check_scope, consumer_scope, endpoint_message, error_body, map_request};
use crate::root::RootShared;
use crate::shm::{self, LockOutcome};
use crate::token::{interpret_token_response, FetchError};

/// `Retry-After` for "another fetch is running" and "token was rejected".
const QUICK_RETRY_SECS: &str = "1";

pub struct AdvowareHttp {
    shared: Rc<RootShared>,
    /// The bearer token this request carries upstream (for the 401 check).
    token_used: Option<String>,
    /// The token call this request waits for: (call token id, lock owner).
    fetch: Option<(u32, u64)>,
    /// A local response was sent (the host accepts only one).
    responded: bool,
}

impl AdvowareHttp {
    pub fn new(shared: Rc<RootShared>) -> Self {
        AdvowareHttp {
            shared,
            token_used: None,
            fetch: None,
            responded: false,
        }
    }

    fn config(&self) -> Option<Rc<Config>> {
        self.shared.config.as_ref().ok().cloned()
    }

    /// Sends a JSON error once; later attempts are ignored.
    fn respond(&mut self, status: u32, code: &str, message: &str, retry_after: Option<&str>) {
        if self.responded {
            return;
        }
        self.responded = true;
        let body = error_body(code, message, retry_after.is_some());
        let mut headers = vec![
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ];
        if let Some(ra) = retry_after {
            headers.push(("retry-after", ra));
        }
        if let Err(s) = hostcalls::send_http_response(status, headers, Some(&body)) {
            host::log(
                LogLevel::Error,
                &format!("sending the {status} answer failed: {s:?}"),
            );
        }
    }

    fn fail_fetch(&mut self, cfg: &Config, e: &FetchError) {
        self.shared.metrics.inc(Metric::TokenFetchFailures);
        host::log(
            LogLevel::Warn,
            &format!("token fetch failed: {} ({})", e.code(), e.message()),
        );
        let retry_after = cfg.failure_retry_after_secs.to_string();
        self.respond(e.http_status(), e.code(), &e.message(), Some(&retry_after));
    }

    fn use_token(&mut self, token: String) {
        let value = format!("Bearer {token}");
        if let Err(s) =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", Some(&value))
        {
            host::log(
                LogLevel::Error,
                &format!("setting Authorization failed: {s:?}"),
            );
        }
        self.token_used = Some(token);
    }

    /// 403 for a request outside its consumer's scope.
    fn deny(&mut self, denied: &crate::proxy::ScopeDenied) -> Action {
        self.shared.metrics.inc(Metric::ScopeDenied);
        self.respond(403, denied.code(), &denied.message(), None);
        Action::Pause
    }

    /// Decides what an upstream 401 for `used` does to the shared token.
    /// `Ok(true)`: the token is gone or replaced, tell the client to retry;
    /// `Ok(false)`: the token stays, pass Advoware's 401 through.
    fn handle_rejection(&self, cfg: &Config, used: &str) -> Result<bool, String> {
        let key = cfg.token_key();
        let now = host::now_ms();
        let current =
            shm::read_token(&key).map_err(|s| format!("reading the token cache failed: {s:?}"))?;
        match judge_rejection(
            current.as_ref(),
            used,
            now,
            cfg.rejected_token_min_age_secs * 1000,
        ) {
            Rejection::Replaced => Ok(true),
            Rejection::Young => Ok(false),
            Rejection::Old => {
                let fetched_at_ms = current.map_or(0, |t| t.fetched_at_ms);
                let refused = shm::claim_forced_refresh(
                    &cfg.forced_refresh_key(),
                    now,
                    cfg.forced_refresh_min_interval_secs * 1000,
                )
                .map_err(|s| format!("the forced-refresh record failed: {s:?}"))?;
                if let Some(last_at_ms) = refused {
                    return Ok(refresh_already_forced(last_at_ms, fetched_at_ms));
                }
                let dropped = shm::invalidate_token(&key, used)
                    .map_err(|s| format!("discarding the rejected token failed: {s:?}"))?;
                if dropped {
                    self.shared.metrics.inc(Metric::TokenInvalidations);
                    host::log(
                        LogLevel::Warn,
                        "Advoware rejected the cached token (401); discarded it",
                    );
                }
                Ok(true)
            }
        }
    }

    fn handle_request(&mut self, cfg: &Config) -> Result<Action, String> {
        // 1. Refuse what cannot be cleaned up in Kong: only the first value of
        //    a header can be replaced there (see kong_compat).
        let mut watched: Vec<&str> = cfg.key_names.iter().map(String::as_str).collect();
        watched.push("authorization");
        if cfg.consumers.is_some() {
            watched.push(&cfg.consumer_header);
        }
        if let Some(name) = kong_compat::repeated_request_header(&watched)
            .map_err(|s| format!("reading the request headers failed: {s:?}"))?
        {
            self.shared.metrics.inc(Metric::RejectedRequests);
            self.respond(
                400,
                "repeated_header",
                &format!("the {name} header was sent more than once"),
                None,
            );
            return Ok(Action::Pause);
        }

        // 2. The consumer's scope, then the rewrite.
        let header = |name: &str| {
            hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
                .map_err(|s| format!("reading {name} failed: {s:?}"))
        };
        let consumer = if cfg.consumers.is_some() {
            header(&cfg.consumer_header)?
        } else {
            None
        };
        let scope = match consumer_scope(cfg, consumer.as_deref()) {
            Ok(scope) => scope,
            Err(denied) => return Ok(self.deny(&denied)),
        };
        let uri = header(":path")?.unwrap_or_default();
        let mapped = match map_request(cfg, &uri) {
            Ok(m) => m,
            Err(e) => {
                self.shared.metrics.inc(Metric::RejectedRequests);
                self.respond(400, e.code(), &endpoint_message(&e), None);
                return Ok(Action::Pause);
            }
        };
        if let Some((name, scope)) = scope {
            let method = header(":method")?.unwrap_or_default();
            if let Err(denied) = check_scope(name, scope, &method, &mapped) {
                return Ok(self.deny(&denied));
            }
        }
        let path = mapped.upstream;
        let set = |name: &str, value: Option<&str>| {
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
                .map_err(|s| format!("setting {name} failed: {s:?}"))
        };
        if cfg.kong_upstream_uri {
            kong_compat::set_upstream_path(&path)
                .map_err(|s| format!("setting the upstream path failed: {s:?}"))?;
        } else {
            set(":path", Some(&path))?;
        }
        for name in &cfg.key_names {
            kong_compat::blank_request_header(name)
                .map_err(|s| format!("blanking {name} failed: {s:?}"))?;
        }
        // A client's Authorization is not removed here: in Kong the removed
        // value would still be proxied next to ours. `use_token` replaces it
        // in place, and no request goes upstream without a token.
        if let Some(h) = &cfg.upstream_host {
            set("host", Some(h))?;
        }

        // 3. A cached token?
        let now = host::now_ms();
        let key = cfg.token_key();
        let read = |key: &str| {
            shm::read_token(key).map_err(|s| format!("reading the token cache failed: {s:?}"))
        };
        if let Some(t) = read(&key)?.filter(|t| t.usable(now)) {
            self.use_token(t.token);
            return Ok(Action::Continue);
        }

        // 4. Fetch one ourselves, or tell the client to come back.
        let random = host::random16().ok_or("no randomness for the nonce")?;
        let owner = host::owner_id(&random);
        let lock = cfg.lock_key();
        let outcome = shm::try_lock(&lock, owner, now, cfg.lock_ttl_ms())
            .map_err(|s| format!("fetch lock failed: {s:?}"))?;
        if outcome == LockOutcome::Held {
            self.shared.metrics.inc(Metric::RefreshInProgress);
            self.respond(
                503,
                "token_refresh_in_progress",
                "an Advoware token is being fetched; retry after the Retry-After delay",
                Some(QUICK_RETRY_SECS),
            );
            return Ok(Action::Pause);
        }
        // Stored by someone else between the read and the lock?
        if let Some(t) = read(&key)?.filter(|t| t.usable(now)) {
            let _ = shm::unlock(&lock, owner);
            self.use_token(t.token);
            return Ok(Action::Continue);
        }
        self.shared.metrics.inc(Metric::TokenFetches);
        match host::dispatch_token_call(cfg, random) {
            Ok(id) => {
                self.fetch = Some((id, owner));
                Ok(Action::Pause)
            }
            Err(e) => {
                let _ = shm::unlock(&lock, owner);
                self.fail_fetch(cfg, &e);
                Ok(Action::Pause)
            }
        }
    }
}

impl Context for AdvowareHttp {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some((id, owner)) = self.fetch else {
            return;
        };
        if id != token_id {
            return;
        }
        self.fetch = None;
        let Some(cfg) = self.config() else { return };
        let (dispatch_status, status, body) = host::call_outcome(body_size);
        let now = host::now_ms();
        match interpret_token_response(
            &cfg,
            dispatch_status.as_deref(),
            status.as_deref(),
            &body,
            now,
        ) {
            Ok(token) => {
                if let Err(s) = shm::store_token(&cfg.token_key(), &token) {
                    // This request still uses it; the next one fetches again.
                    host::log(LogLevel::Error, &format!("storing the token failed: {s:?}"));
                }
                let _ = shm::unlock(&cfg.lock_key(), owner);
                self.use_token(token.token);
                // The host resumes the request: its only dispatch has answered.
            }
            Err(e) => {
                let _ = shm::unlock(&cfg.lock_key(), owner);
                self.fail_fetch(&cfg, &e);
            }
        }
    }
}

impl HttpContext for AdvowareHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(cfg) = self.config() else {
            self.shared.metrics.inc(Metric::ConfigErrors);
            self.respond(
                500,
                "filter_misconfigured",
                "the advoware_auth filter has an invalid configuration; see the gateway error log",
                None,
            );
            return Action::Pause;
        };
        match self.handle_request(&cfg) {
            Ok(action) => action,
            Err(msg) => {
                host::log(LogLevel::Error, &msg);
                self.respond(
                    500,
                    "internal_error",
                    "the gateway could not process the request",
                    None,
                );
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(used) = self.token_used.take() else {
            return Action::Continue;
        };
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten();
        if status.as_deref() != Some("401") {
            return Action::Continue;
        }
        self.shared.metrics.inc(Metric::Upstream401);
        let Some(cfg) = self.config() else {
            return Action::Continue;
        };
        match self.handle_rejection(&cfg, &used) {
            Ok(true) => {}
            Ok(false) => {
                // One client's 401 stays that client's: the token is kept.
                self.shared.metrics.inc(Metric::Upstream401Kept);
                host::log(
                    LogLevel::Info,
                    "Advoware answered 401 to a request; the shared token is kept (too young, or forced refreshes rate-limited)",
                );
                return Action::Continue;
            }
            Err(msg) => {
                // Without a verdict, keep the token and pass the answer on.
                host::log(LogLevel::Error, &msg);
                return Action::Continue;
            }
        }
        // Within the response-header hook a local response overrides status
        // and body; its header argument is ignored, so set headers first.
        for name in [
            "content-length",
            "www-authenticate",
            "content-encoding",
            "transfer-encoding",
        ] {
            let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, name);
        }
        let _ = hostcalls::set_map_value(
            MapType::HttpResponseHeaders,
            "content-type",
            Some("application/json"),
        );
        let _ = hostcalls::set_map_value(
            MapType::HttpResponseHeaders,
            "retry-after",
            Some(QUICK_RETRY_SECS),
        );
        let _ = hostcalls::set_map_value(
            MapType::HttpResponseHeaders,
            "cache-control",
            Some("no-store"),
        );
        self.respond(
            503,
            "upstream_token_rejected",
            "Advoware rejected the gateway's token; a new one is fetched on your retry",
            Some(QUICK_RETRY_SECS),
        );
        Action::Continue
    }
}
