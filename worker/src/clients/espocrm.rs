//! EspoCRM REST client (FACTS §2): `X-Api-Key`, list with typed `where[]` filters, `select` and
//! paging over all pages, get, create (409 duplicate as a typed error), partial update (`PUT`
//! with only the changed attributes, as EspoCRM merges it), in-app notifications, and attachment
//! downloads with a size limit.
//!
//! # Errors
//!
//! [`EspoCrmError`] is what the queue and the handlers branch on: 429, 5xx and connection
//! failures are retryable (429/503 carry `Retry-After`); other 4xx are permanent and carry
//! EspoCRM's reason, which it sends in the `X-Status-Reason` header (bodies are mostly empty);
//! 404 and 409 have their own variants because handlers act on them (`deleted`, `duplicate`).
//!
//! # Transport
//!
//! Unlike the Advoware client this one talks to `reqwest` directly: it needs a response header
//! (`X-Status-Reason`) the shared transport seam in [`super::advoware`] does not carry yet, and
//! its tests run against the stateful fake over loopback, which covers every error path.
//! The API key travels only in the `X-Api-Key` header; reqwest's error texts name the URL,
//! never headers, so no error or log line can contain it.

use std::fmt;
use std::time::Duration;

use bitbylaw_core::ids::EspoId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;

use super::advoware::parse_retry_after;
use crate::config::{EspoCrmSettings, Secret};

/// EspoCRM refuses list requests with `maxSize` above 200 (403).
pub const MAX_PAGE_SIZE: usize = 200;

/// Default overall timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the EspoCRM client. A concrete enum: the queue branches on
/// [`EspoCrmError::is_retryable`] / [`EspoCrmError::retry_after`], handlers on `NotFound` and
/// `Duplicate`. No variant carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum EspoCrmError {
    /// 429 or 503: EspoCRM (or its web server) asks us to slow down.
    #[error("EspoCRM rate limited {path} (status {status}, retry after {retry_after:?})")]
    RateLimited {
        path: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    /// 404: the record (or entity type) does not exist.
    #[error("EspoCRM has no {path}: {reason}")]
    NotFound { path: String, reason: String },
    /// 409 on create: EspoCRM's duplicate check found similar records (their ids and names).
    #[error("EspoCRM refused {path} as a duplicate of {} record(s)", duplicates.len())]
    Duplicate {
        path: String,
        duplicates: Vec<DuplicateRef>,
    },
    /// Any other non-success status. 5xx (and 408) are retryable; 4xx are permanent, `reason`
    /// is EspoCRM's `X-Status-Reason` (e.g. `validationFailure`) plus the body's field, if any.
    #[error("EspoCRM answered {status} on {path}: {reason}")]
    Upstream {
        path: String,
        status: u16,
        reason: String,
    },
    /// Connection refused, timeout, broken connection…
    #[error("transport error talking to EspoCRM ({path}): {message}")]
    Transport { path: String, message: String },
    /// The settings are incomplete or invalid.
    #[error("EspoCRM client configuration: {0}")]
    Config(String),
    /// A success answer whose body is not what we expect.
    #[error("unexpected EspoCRM answer on {path}: {message}")]
    Decode { path: String, message: String },
    /// An attachment over the caller's limit (xAI takes ~48 MB at most); `size` is the announced
    /// length, or how far the download got when it stopped.
    #[error(
        "EspoCRM attachment {path} has at least {size} bytes, over the limit of {limit} bytes"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
}

impl EspoCrmError {
    /// Whether the queue should try the job again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport { .. } => true,
            Self::Upstream { status, .. } => *status >= 500 || *status == 408,
            Self::NotFound { .. }
            | Self::Duplicate { .. }
            | Self::Config(_)
            | Self::Decode { .. }
            | Self::TooLarge { .. } => false,
        }
    }

    /// The delay EspoCRM asked for (`Retry-After`), if any; the queue bounds it by its policy.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, if the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::RateLimited { status, .. } | Self::Upstream { status, .. } => Some(*status),
            Self::NotFound { .. } => Some(404),
            Self::Duplicate { .. } => Some(409),
            _ => None,
        }
    }

    /// True for 404 (the record is gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// One record EspoCRM named in a 409 duplicate answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DuplicateRef {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Settings

/// Validated client settings, built from the worker's [`EspoCrmSettings`]. `Debug` redacts the key.
#[derive(Clone)]
pub struct ClientSettings {
    /// API base ending in `/api/v1/`-style trailing slash.
    pub api_base_url: url::Url,
    pub api_key: Secret,
    pub timeout: Duration,
    /// `maxSize` of list pages (1–200).
    pub page_size: usize,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("api_base_url", &self.api_base_url.as_str())
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("page_size", &self.page_size)
            .finish()
    }
}

impl ClientSettings {
    /// Requires base URL and API key; timeout and page size fall back to their defaults.
    pub fn from_settings(s: &EspoCrmSettings) -> Result<Self, EspoCrmError> {
        let raw = s
            .api_base_url
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| EspoCrmError::Config("api_base_url is not set".into()))?;
        let with_slash = if raw.ends_with('/') {
            raw.to_owned()
        } else {
            format!("{raw}/")
        };
        let api_base_url = url::Url::parse(&with_slash)
            .map_err(|e| EspoCrmError::Config(format!("api_base_url is not a URL: {e}")))?;
        let api_key = s
            .api_key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| EspoCrmError::Config("api_key is not set".into()))?;
        let page_size = s.page_size.unwrap_or(MAX_PAGE_SIZE);
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(EspoCrmError::Config(format!(
                "page_size must be 1–{MAX_PAGE_SIZE}"
            )));
        }
        Ok(Self {
            api_base_url,
            api_key,
            timeout: s.timeout.unwrap_or(DEFAULT_TIMEOUT),
            page_size,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Queries

/// One `where[]` item, in EspoCRM's names. Values are sent as strings, as EspoCRM's own UI does;
/// datetimes in EspoCRM's `YYYY-MM-DD HH:mm:ss` UTC (see [`espo_datetime`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    IsNull(String),
    IsNotNull(String),
    IsTrue(String),
    IsFalse(String),
    /// `before`: the attribute is earlier than the value (datetimes, dates).
    Before(String, String),
    /// `after`: the attribute is later than the value.
    After(String, String),
    LessThan(String, String),
    GreaterThan(String, String),
    Contains(String, String),
    StartsWith(String, String),
}

impl Where {
    pub fn equals(attr: &str, value: impl Into<String>) -> Self {
        Self::Equals(attr.into(), value.into())
    }
    pub fn is_in<I, S>(attr: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::In(attr.into(), values.into_iter().map(Into::into).collect())
    }
    pub fn before(attr: &str, value: impl Into<String>) -> Self {
        Self::Before(attr.into(), value.into())
    }
    pub fn after(attr: &str, value: impl Into<String>) -> Self {
        Self::After(attr.into(), value.into())
    }
    pub fn is_null(attr: &str) -> Self {
        Self::IsNull(attr.into())
    }
    pub fn is_not_null(attr: &str) -> Self {
        Self::IsNotNull(attr.into())
    }

    fn parts(&self) -> (&'static str, &str, Option<WhereValue<'_>>) {
        use WhereValue::{List, One};
        match self {
            Self::Equals(a, v) => ("equals", a, Some(One(v))),
            Self::NotEquals(a, v) => ("notEquals", a, Some(One(v))),
            Self::In(a, v) => ("in", a, Some(List(v))),
            Self::NotIn(a, v) => ("notIn", a, Some(List(v))),
            Self::IsNull(a) => ("isNull", a, None),
            Self::IsNotNull(a) => ("isNotNull", a, None),
            Self::IsTrue(a) => ("isTrue", a, None),
            Self::IsFalse(a) => ("isFalse", a, None),
            Self::Before(a, v) => ("before", a, Some(One(v))),
            Self::After(a, v) => ("after", a, Some(One(v))),
            Self::LessThan(a, v) => ("lessThan", a, Some(One(v))),
            Self::GreaterThan(a, v) => ("greaterThan", a, Some(One(v))),
            Self::Contains(a, v) => ("contains", a, Some(One(v))),
            Self::StartsWith(a, v) => ("startsWith", a, Some(One(v))),
        }
    }
}

enum WhereValue<'a> {
    One(&'a str),
    List(&'a [String]),
}

/// Sort direction of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A list request: filters (all must hold), selected attributes, order, and an optional cap on
/// the number of records [`EspoCrmClient::list_all`] fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub filters: Vec<Where>,
    /// Attributes to return (`id` always comes back); empty = all.
    pub select: Vec<String>,
    pub order_by: Option<(String, Order)>,
    /// Stop after this many records (the sync check's "≤ 100").
    pub limit: Option<usize>,
}

impl ListQuery {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn filter(mut self, w: Where) -> Self {
        self.filters.push(w);
        self
    }
    pub fn select<I, S>(mut self, attrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.select = attrs.into_iter().map(Into::into).collect();
        self
    }
    pub fn order_by(mut self, attr: &str, order: Order) -> Self {
        self.order_by = Some((attr.into(), order));
        self
    }
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// The query pairs of one page, in EspoCRM's `where[i][type|attribute|value]` form; list
    /// values as `where[i][value][]`.
    pub fn to_pairs(&self, max_size: usize, offset: usize) -> Vec<(String, String)> {
        let mut q = vec![
            ("maxSize".to_owned(), max_size.to_string()),
            ("offset".to_owned(), offset.to_string()),
        ];
        if !self.select.is_empty() {
            q.push(("select".into(), self.select.join(",")));
        }
        if let Some((attr, order)) = &self.order_by {
            q.push(("orderBy".into(), attr.clone()));
            let o = match order {
                Order::Asc => "asc",
                Order::Desc => "desc",
            };
            q.push(("order".into(), o.into()));
        }
        for (i, w) in self.filters.iter().enumerate() {
            let (kind, attr, value) = w.parts();
            q.push((format!("where[{i}][type]"), kind.into()));
            q.push((format!("where[{i}][attribute]"), attr.into()));
            match value {
                Some(WhereValue::One(v)) => q.push((format!("where[{i}][value]"), v.into())),
                Some(WhereValue::List(vs)) => {
                    for v in vs {
                        q.push((format!("where[{i}][value][]"), v.clone()));
                    }
                }
                None => {}
            }
        }
        q
    }
}

/// EspoCRM's datetime text: `YYYY-MM-DD HH:mm:ss`, UTC.
pub fn espo_datetime(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// One list page as EspoCRM answers it.
#[derive(Debug, Deserialize)]
struct Page<T> {
    #[serde(default)]
    total: Option<i64>,
    list: Vec<T>,
}

/// An in-app notification (the bell icon). `type` is EspoCRM's notification type; `message`
/// shows as text for type `Message`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewNotification {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Notifications created, by the record type they point to: what the syncs asked people to look
/// at. Process-wide because every sync builds its own client; `/metrics` exports it as
/// `notifications_sent`.
pub static NOTIFICATIONS_SENT: std::sync::LazyLock<
    prometheus_client::metrics::family::Family<
        crate::ops::metrics::RelatedLabel,
        prometheus_client::metrics::counter::Counter,
    >,
> = std::sync::LazyLock::new(Default::default);

/// An attachment's content as `GET Attachment/file/{id}` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// An attachment being read ([`EspoCrmClient::open_attachment`]).
#[derive(Debug)]
pub struct AttachmentStream {
    pub content_type: String,
    /// The length EspoCRM announced, if it did.
    pub announced: Option<u64>,
    resp: reqwest::Response,
    path: String,
    max_bytes: u64,
    read: u64,
}

impl AttachmentStream {
    /// The next piece of the body; `None` at its end. More than the limit in total is
    /// [`EspoCrmError::TooLarge`] with the size read so far.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, EspoCrmError> {
        let chunk = self
            .resp
            .chunk()
            .await
            .map_err(|e| EspoCrmError::Transport {
                path: self.path.clone(),
                message: e.without_url().to_string(),
            })?;
        if let Some(c) = &chunk {
            self.read += c.len() as u64;
            if self.read > self.max_bytes {
                return Err(EspoCrmError::TooLarge {
                    path: self.path.clone(),
                    size: self.read,
                    limit: self.max_bytes,
                });
            }
        }
        Ok(chunk)
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// The EspoCRM REST client. Cheap to clone.
#[derive(Clone)]
pub struct EspoCrmClient {
    settings: std::sync::Arc<ClientSettings>,
    http: reqwest::Client,
}

impl fmt::Debug for EspoCrmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspoCrmClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Put,
}

impl EspoCrmClient {
    /// A client with connect and overall timeouts from the settings.
    pub fn new(settings: ClientSettings) -> Result<Self, EspoCrmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| EspoCrmError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            settings: std::sync::Arc::new(settings),
            http,
        })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// `GET {Entity}/{id}`. A missing record is [`EspoCrmError::NotFound`].
    pub async fn get<T: DeserializeOwned>(
        &self,
        entity: &str,
        id: &EspoId,
    ) -> Result<T, EspoCrmError> {
        let path = format!("{entity}/{id}");
        self.call(Verb::Get, &path, &[], None, false).await
    }

    /// One page: `GET {Entity}?maxSize&offset&…` → (records, total).
    pub async fn list_page<T: DeserializeOwned>(
        &self,
        entity: &str,
        query: &ListQuery,
        max_size: usize,
        offset: usize,
    ) -> Result<(Vec<T>, Option<usize>), EspoCrmError> {
        let pairs = query.to_pairs(max_size.clamp(1, MAX_PAGE_SIZE), offset);
        let page: Page<T> = self.call(Verb::Get, entity, &pairs, None, false).await?;
        let total = page.total.and_then(|t| usize::try_from(t).ok());
        Ok((page.list, total))
    }

    /// All records matching `query`, page by page (`maxSize` = the configured page size), up to
    /// `query.limit`. Stops at `total` or at the first short page, whichever comes first, so an
    /// EspoCRM that omits `total` still terminates.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        entity: &str,
        query: &ListQuery,
    ) -> Result<Vec<T>, EspoCrmError> {
        let page_size = self.settings.page_size;
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut out: Vec<T> = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        loop {
            let want = page_size.min(limit - out.len());
            let (page, total) = self.list_page(entity, query, want, out.len()).await?;
            let got = page.len();
            out.extend(page);
            let done = got < want
                || out.len() >= limit
                || total.is_some_and(|t| out.len() >= t)
                || got == 0;
            if done {
                return Ok(out);
            }
        }
    }

    /// `POST {Entity}`. A 409 is [`EspoCrmError::Duplicate`]; `skip_duplicate_check` sends
    /// `X-Skip-Duplicate-Check: true` (only after a person confirmed it is not a duplicate).
    pub async fn create<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        entity: &str,
        body: &B,
        skip_duplicate_check: bool,
    ) -> Result<T, EspoCrmError> {
        let body = encode(entity, body)?;
        self.call(Verb::Post, entity, &[], Some(body), skip_duplicate_check)
            .await
    }

    /// `PUT {Entity}/{id}` with only the attributes to change (EspoCRM merges them); returns the
    /// whole record after the change.
    pub async fn update<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        entity: &str,
        id: &EspoId,
        patch: &B,
    ) -> Result<T, EspoCrmError> {
        let path = format!("{entity}/{id}");
        let body = encode(&path, patch)?;
        self.call(Verb::Put, &path, &[], Some(body), false).await
    }

    /// `POST Notification`; returns the new notification's id.
    pub async fn create_notification(
        &self,
        notification: &NewNotification,
    ) -> Result<EspoId, EspoCrmError> {
        #[derive(Deserialize)]
        struct Created {
            id: EspoId,
        }
        let created: Created = self.create("Notification", notification, false).await?;
        NOTIFICATIONS_SENT
            .get_or_create(&crate::ops::metrics::RelatedLabel {
                related: notification
                    .related_type
                    .clone()
                    .unwrap_or_else(|| "none".into()),
            })
            .inc();
        Ok(created.id)
    }

    /// `POST {Entity}/{id}/{link}` with `{"id": foreign}`: relates two records (e.g. a Lead to
    /// a `TargetList` via link `leads`). Relating an already related pair is harmless.
    pub async fn link(
        &self,
        entity: &str,
        id: &EspoId,
        link: &str,
        foreign_id: &EspoId,
    ) -> Result<(), EspoCrmError> {
        let path = format!("{entity}/{id}/{link}");
        let body = encode(&path, &serde_json::json!({ "id": foreign_id.as_str() }))?;
        let _: Value = self.call(Verb::Post, &path, &[], Some(body), false).await?;
        Ok(())
    }

    /// `GET {Entity}/{id}/{link}`: every record related through `link` (e.g. the documents of
    /// a case), page by page like [`Self::list_all`].
    pub async fn list_related<T: DeserializeOwned>(
        &self,
        entity: &str,
        id: &EspoId,
        link: &str,
    ) -> Result<Vec<T>, EspoCrmError> {
        let path = format!("{entity}/{id}/{link}");
        let page_size = self.settings.page_size;
        let mut out: Vec<T> = Vec::new();
        loop {
            let pairs = vec![
                ("maxSize".to_owned(), page_size.to_string()),
                ("offset".to_owned(), out.len().to_string()),
            ];
            let page: Page<T> = self.call(Verb::Get, &path, &pairs, None, false).await?;
            let got = page.list.len();
            let total = page.total.and_then(|t| usize::try_from(t).ok());
            out.extend(page.list);
            if got < page_size || got == 0 || total.is_some_and(|t| out.len() >= t) {
                return Ok(out);
            }
        }
    }

    /// `GET Attachment/file/{id}`: the attachment's bytes and content type, read chunk by chunk
    /// and abandoned as soon as they exceed `max_bytes` (or the announced length does), so an
    /// oversized file never sits in memory whole. For files that should not sit in memory at all,
    /// [`Self::open_attachment`].
    pub async fn download_attachment(
        &self,
        id: &EspoId,
        max_bytes: u64,
    ) -> Result<Attachment, EspoCrmError> {
        let mut stream = self.open_attachment(id, max_bytes).await?;
        // Sized once from the announced length: growing by doubling would briefly hold the
        // file twice.
        let announced = stream.announced.unwrap_or(0).min(max_bytes);
        let mut bytes = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = stream.next_chunk().await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(Attachment {
            content_type: stream.content_type,
            bytes,
        })
    }

    /// `GET Attachment/file/{id}` as a stream: the status and the announced length are checked
    /// here, the body is read with [`AttachmentStream::next_chunk`], which refuses more than
    /// `max_bytes` in total.
    pub async fn open_attachment(
        &self,
        id: &EspoId,
        max_bytes: u64,
    ) -> Result<AttachmentStream, EspoCrmError> {
        let path = format!("Attachment/file/{id}");
        let url = self
            .settings
            .api_base_url
            .join(&path)
            .map_err(|e| EspoCrmError::Config(format!("bad path {path:?}: {e}")))?;
        let resp = self
            .http
            .get(url)
            .header("X-Api-Key", self.settings.api_key.expose())
            .send()
            .await
            .map_err(|e| EspoCrmError::Transport {
                path: path.clone(),
                message: e.without_url().to_string(),
            })?;
        let status = resp.status().as_u16();
        debug!(path, status, "EspoCRM answered");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if !(200..300).contains(&status) {
            let (retry_after, reason) = (header("retry-after"), header("x-status-reason"));
            let bytes = resp.bytes().await.map_err(|e| EspoCrmError::Transport {
                path: path.clone(),
                message: e.without_url().to_string(),
            })?;
            return Err(error_for(&path, status, retry_after, reason, &bytes));
        }
        let content_type =
            header("content-type").unwrap_or_else(|| "application/octet-stream".into());
        let announced = resp.content_length();
        if let Some(size) = announced.filter(|n| *n > max_bytes) {
            return Err(EspoCrmError::TooLarge {
                path,
                size,
                limit: max_bytes,
            });
        }
        Ok(AttachmentStream {
            content_type,
            announced,
            resp,
            path,
            max_bytes,
            read: 0,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        verb: Verb,
        path: &str,
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        skip_duplicate_check: bool,
    ) -> Result<T, EspoCrmError> {
        let mut url = self
            .settings
            .api_base_url
            .join(path.trim_start_matches('/'))
            .map_err(|e| EspoCrmError::Config(format!("bad path {path:?}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter());
        }
        let mut req = match verb {
            Verb::Get => self.http.get(url),
            Verb::Post => self.http.post(url),
            Verb::Put => self.http.put(url),
        }
        .header("X-Api-Key", self.settings.api_key.expose())
        .header("Accept", "application/json");
        if skip_duplicate_check {
            req = req.header("X-Skip-Duplicate-Check", "true");
        }
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().await.map_err(|e| EspoCrmError::Transport {
            path: path.to_owned(),
            message: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        debug!(path, status, "EspoCRM answered");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let reason = header("x-status-reason");
        let bytes = resp.bytes().await.map_err(|e| EspoCrmError::Transport {
            path: path.to_owned(),
            message: e.without_url().to_string(),
        })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| EspoCrmError::Decode {
                path: path.to_owned(),
                message: e.to_string(),
            });
        }
        Err(error_for(path, status, retry_after, reason, &bytes))
    }
}

fn encode<B: Serialize + ?Sized>(path: &str, body: &B) -> Result<Vec<u8>, EspoCrmError> {
    serde_json::to_vec(body).map_err(|e| EspoCrmError::Decode {
        path: path.to_owned(),
        message: format!("cannot encode body: {e}"),
    })
}

/// Maps a non-2xx answer to its error.
fn error_for(
    path: &str,
    status: u16,
    retry_after: Option<String>,
    reason: Option<String>,
    body: &[u8],
) -> EspoCrmError {
    let path = path.to_owned();
    match status {
        429 | 503 => EspoCrmError::RateLimited {
            path,
            status,
            retry_after: retry_after.as_deref().and_then(parse_retry_after),
        },
        404 => EspoCrmError::NotFound {
            path,
            reason: reason.unwrap_or_else(|| "Not Found".into()),
        },
        409 => EspoCrmError::Duplicate {
            path,
            duplicates: serde_json::from_slice(body).unwrap_or_default(),
        },
        _ => EspoCrmError::Upstream {
            path,
            status,
            reason: describe(reason, body),
        },
    }
}

/// `X-Status-Reason` plus, for a `validationFailure` body, the field and rule it names.
fn describe(reason: Option<String>, body: &[u8]) -> String {
    let mut out = reason.unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let data = &v["messageTranslation"]["data"];
        if let (Some(field), Some(kind)) = (data["field"].as_str(), data["type"].as_str()) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&format!("field {field} fails {kind}"));
        }
    }
    if out.is_empty() {
        "no reason given".into()
    } else {
        out.chars().take(300).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_items_encode_as_espocrm_expects() {
        let q = ListQuery::new()
            .filter(Where::is_in("syncStatus", ["dirty", "failed"]))
            .filter(Where::before("advowareLastSync", "2026-01-01 00:00:00"))
            .filter(Where::is_null("betnr"))
            .select(["id", "syncStatus"])
            .order_by("createdAt", Order::Asc);
        let pairs = q.to_pairs(50, 100);
        let has = |k: &str, v: &str| pairs.iter().any(|(a, b)| a == k && b == v);
        assert!(has("maxSize", "50") && has("offset", "100"));
        assert!(has("select", "id,syncStatus"));
        assert!(has("orderBy", "createdAt") && has("order", "asc"));
        assert!(has("where[0][type]", "in") && has("where[0][attribute]", "syncStatus"));
        assert!(has("where[0][value][]", "dirty") && has("where[0][value][]", "failed"));
        assert!(has("where[1][type]", "before") && has("where[1][value]", "2026-01-01 00:00:00"));
        assert!(has("where[2][type]", "isNull"));
        assert!(!pairs.iter().any(|(k, _)| k == "where[2][value]"));
    }

    #[test]
    fn classification() {
        let e = error_for("X", 429, Some("7".into()), None, b"");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(error_for("X", 500, None, None, b"").is_retryable());
        assert!(error_for("X", 404, None, None, b"").is_not_found());
        let body = br#"{"messageTranslation":{"data":{"field":"name","type":"required"}}}"#;
        let e = error_for("X", 400, None, Some("validationFailure".into()), body);
        assert!(!e.is_retryable());
        assert!(e
            .to_string()
            .contains("validationFailure: field name fails required"));
        let e = error_for("X", 409, None, None, br#"[{"id":"a1","name":"Max"}]"#);
        assert!(
            matches!(&e, EspoCrmError::Duplicate { duplicates, .. } if duplicates[0].id == "a1")
        );
    }

    #[test]
    fn settings_validate_and_redact() {
        let s = EspoCrmSettings {
            api_base_url: Some("http://crm.example/api/v1".into()),
            api_key: Some(Secret::new("very-secret-key")),
            timeout: None,
            page_size: None,
        };
        let c = ClientSettings::from_settings(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.api_base_url.as_str(), "http://crm.example/api/v1/");
        assert!(!format!("{c:?}").contains("very-secret-key"));
        let missing = EspoCrmSettings::default();
        assert!(ClientSettings::from_settings(&missing).is_err());
    }
}
