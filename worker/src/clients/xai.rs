//! xAI Files and Collections client (FACTS §7): the document sync's target.
//!
//! Two hosts, two keys, never mixed: the **Files API** (`POST /files` multipart upload, get,
//! content, delete) lives on the inference host and takes `XAI_API_KEY`; the **Collections API**
//! (create/get collections, list/add/remove documents, document status) lives on the management
//! host and takes the management key. Each request picks its [`Host`], and the host decides the
//! base URL and the key, so no call can send a key to the wrong host.
//!
//! # Errors
//!
//! [`XaiError`] is what the queue and the sync branch on: 429 is [`XaiError::RateLimited`] with
//! xAI's `Retry-After`; 5xx, 408 and connection failures are retryable; other 4xx are permanent
//! and carry xAI's message; 404 is its own variant (a file or collection that is gone); a file
//! over the configured limit is [`XaiError::TooLarge`] before a byte is sent. No variant, log
//! line or `Debug` output carries a key: keys travel only in the `Authorization` header and
//! reqwest's error texts are taken `without_url`, naming no header.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;

use super::advoware::parse_retry_after;
use crate::config::{Secret, XaiSettings, XAI_MAX_FILE_BYTES};

/// Which xAI host a request goes to; the host decides base URL and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// `api.x.ai`: Files API, inference key.
    Files,
    /// `management-api.x.ai`: Collections API, management key.
    Management,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Host::Files => "files",
            Host::Management => "management",
        })
    }
}

/// Errors of the xAI client. A concrete enum: the queue branches on [`XaiError::is_retryable`] /
/// [`XaiError::retry_after`], the sync on [`XaiError::is_not_found`] and `TooLarge`.
#[derive(Debug, thiserror::Error)]
pub enum XaiError {
    /// 429: over xAI's rate limit; back off for `retry_after` if given.
    #[error("xAI {host} host rate limited {path} (retry after {retry_after:?})")]
    RateLimited {
        host: Host,
        path: String,
        retry_after: Option<Duration>,
    },
    /// 404: the file, collection or document does not exist (any more).
    #[error("xAI {host} host has no {path}: {message}")]
    NotFound {
        host: Host,
        path: String,
        message: String,
    },
    /// Any other non-success status: 5xx and 408 retryable, other 4xx permanent.
    #[error("xAI {host} host answered {status} on {path}: {message}")]
    Upstream {
        host: Host,
        path: String,
        status: u16,
        message: String,
    },
    /// Connection refused, timeout, broken connection…
    #[error("transport error talking to xAI {host} host ({path}): {message}")]
    Transport {
        host: Host,
        path: String,
        message: String,
    },
    /// The file is larger than the configured limit (xAI refuses ~48 MB and more).
    #[error("file {filename:?} has {size} bytes, over the upload limit of {limit} bytes")]
    TooLarge {
        filename: String,
        size: u64,
        limit: u64,
    },
    /// The settings are incomplete or invalid.
    #[error("xAI client configuration: {0}")]
    Config(String),
    /// A success answer whose body is not what we expect.
    #[error("unexpected xAI answer on {path}: {message}")]
    Decode { path: String, message: String },
}

impl XaiError {
    /// Whether the queue should try the job again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport { .. } => true,
            Self::Upstream { status, .. } => *status >= 500 || *status == 408,
            Self::NotFound { .. }
            | Self::TooLarge { .. }
            | Self::Config(_)
            | Self::Decode { .. } => false,
        }
    }

    /// The delay xAI asked for (`Retry-After`), if any; the queue bounds it by its policy.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, if the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::RateLimited { .. } => Some(429),
            Self::NotFound { .. } => Some(404),
            Self::Upstream { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

/// Validated client settings, built from the worker's [`XaiSettings`]. `Debug` redacts the keys.
#[derive(Clone)]
pub struct ClientSettings {
    pub files_base_url: url::Url,
    pub management_base_url: url::Url,
    pub api_key: Secret,
    pub management_key: Secret,
    pub timeout: Duration,
    pub max_file_bytes: u64,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("files_base_url", &self.files_base_url.as_str())
            .field("management_base_url", &self.management_base_url.as_str())
            .field("api_key", &self.api_key)
            .field("management_key", &self.management_key)
            .field("timeout", &self.timeout)
            .field("max_file_bytes", &self.max_file_bytes)
            .finish()
    }
}

impl ClientSettings {
    /// Requires both keys; URLs get a trailing `/` so relative paths join below them.
    pub fn from_settings(s: &XaiSettings) -> Result<Self, XaiError> {
        let url = |name: &str, raw: &str| {
            let raw = raw.trim();
            let with_slash = if raw.ends_with('/') {
                raw.to_owned()
            } else {
                format!("{raw}/")
            };
            url::Url::parse(&with_slash)
                .map_err(|e| XaiError::Config(format!("{name} is not a URL: {e}")))
        };
        let key = |name: &str, k: &Option<Secret>| {
            k.clone()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| XaiError::Config(format!("{name} is not set")))
        };
        if s.max_file_bytes == 0 || s.max_file_bytes > XAI_MAX_FILE_BYTES {
            return Err(XaiError::Config(format!(
                "max_file_bytes must be 1–{XAI_MAX_FILE_BYTES}"
            )));
        }
        Ok(Self {
            files_base_url: url("files_base_url", &s.files_base_url)?,
            management_base_url: url("management_base_url", &s.management_base_url)?,
            api_key: key("api_key", &s.api_key)?,
            management_key: key("management_key", &s.management_key)?,
            timeout: s.timeout,
            max_file_bytes: s.max_file_bytes,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types

/// A file as the Files API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct XaiFile {
    /// `file_…`
    pub id: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// One metadata field a collection's documents carry (e.g. `entityType`, `entityId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDefinition {
    pub key: String,
    #[serde(default)]
    pub required: bool,
    /// Whether the value is put into each chunk's text, so the model sees it.
    #[serde(default)]
    pub inject_into_chunk: bool,
}

/// `POST /collections` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewCollection {
    pub collection_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection_description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub field_definitions: Vec<FieldDefinition>,
}

/// A collection as the Collections API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Collection {
    pub collection_id: String,
    #[serde(default)]
    pub collection_name: String,
    #[serde(default)]
    pub collection_description: Option<String>,
    #[serde(default)]
    pub field_definitions: Vec<FieldDefinition>,
    #[serde(default)]
    pub documents_count: Option<u64>,
}

/// Processing state of a document in a collection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum DocumentStatus {
    #[serde(rename = "DOCUMENT_STATUS_PROCESSING")]
    Processing,
    #[serde(rename = "DOCUMENT_STATUS_PROCESSED")]
    Processed,
    #[serde(rename = "DOCUMENT_STATUS_FAILED")]
    Failed,
    /// A status this client does not know yet (kept so a new value does not fail the listing).
    #[serde(other)]
    Unknown,
}

/// The file a document refers to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DocumentFile {
    pub file_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// A file as a member of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CollectionDocument {
    pub file_metadata: DocumentFile,
    pub status: DocumentStatus,
    #[serde(default)]
    pub fields: serde_json::Map<String, Value>,
    #[serde(default)]
    pub error_message: Option<String>,
}

impl CollectionDocument {
    pub fn file_id(&self) -> &str {
        &self.file_metadata.file_id
    }
}

#[derive(Deserialize)]
struct DocumentPage {
    #[serde(default)]
    documents: Vec<CollectionDocument>,
    #[serde(default)]
    pagination_token: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Client

/// The xAI client. Cheap to clone.
#[derive(Clone)]
pub struct XaiClient {
    settings: Arc<ClientSettings>,
    http: reqwest::Client,
}

impl fmt::Debug for XaiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XaiClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Delete,
}

/// A request body: JSON or a multipart form with its content type. The form is kept as head,
/// content and tail so the file's bytes are sent as they are, never copied into a second buffer.
enum Body {
    None,
    Json(Vec<u8>),
    Multipart {
        content_type: String,
        head: Vec<u8>,
        content: UploadContent,
        tail: Vec<u8>,
    },
}

/// What an upload sends as the file part: bytes held in memory, or a spooled file read chunk by
/// chunk while it is sent (the document sync spools attachments, so a large file is never held
/// in memory whole).
#[derive(Debug)]
pub enum UploadContent {
    Bytes(bytes::Bytes),
    /// An open file positioned at its start, and its length.
    File {
        file: tokio::fs::File,
        len: u64,
    },
}

impl UploadContent {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::File { len, .. } => *len,
        }
    }
}

impl From<Vec<u8>> for UploadContent {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v.into())
    }
}

impl From<bytes::Bytes> for UploadContent {
    fn from(b: bytes::Bytes) -> Self {
        Self::Bytes(b)
    }
}

impl XaiClient {
    /// A client with connect and overall timeouts from the settings.
    pub fn new(settings: ClientSettings) -> Result<Self, XaiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| XaiError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            settings: Arc::new(settings),
            http,
        })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    // ---- Files API (inference host) ----

    /// `POST /files` (multipart): `purpose`, then `expires_after` (seconds; xAI requires it
    /// *before* the file part), then the `file` part. Refuses files over `max_file_bytes`
    /// before sending anything. The content is sent from the buffer it arrives in (a `Vec` or
    /// `Bytes` converts without copying) or read from a spooled file while it is sent, with an
    /// exact `Content-Length` either way.
    pub async fn upload_file(
        &self,
        filename: &str,
        content_type: &str,
        content: impl Into<UploadContent>,
        expires_after: Option<Duration>,
    ) -> Result<XaiFile, XaiError> {
        let content: UploadContent = content.into();
        let size = content.len();
        if size > self.settings.max_file_bytes {
            return Err(XaiError::TooLarge {
                filename: filename.to_owned(),
                size,
                limit: self.settings.max_file_bytes,
            });
        }
        let boundary = format!("bitbylaw-{}", uuid::Uuid::new_v4().simple());
        let mut fields: Vec<(&str, String)> = vec![("purpose", "assistants".to_owned())];
        if let Some(e) = expires_after {
            fields.push(("expires_after", e.as_secs().to_string()));
        }
        let (head, tail) = multipart(&boundary, &fields, filename, content_type);
        let body = Body::Multipart {
            content_type: format!("multipart/form-data; boundary={boundary}"),
            head,
            content,
            tail,
        };
        self.call(Host::Files, Verb::Post, "files", body).await
    }

    /// `GET /files/{id}`.
    pub async fn get_file(&self, file_id: &str) -> Result<XaiFile, XaiError> {
        let path = format!("files/{}", segment(file_id)?);
        self.call(Host::Files, Verb::Get, &path, Body::None).await
    }

    /// `GET /files/{id}/content`: the raw bytes.
    pub async fn file_content(&self, file_id: &str) -> Result<Vec<u8>, XaiError> {
        let path = format!("files/{}/content", segment(file_id)?);
        self.send(Host::Files, Verb::Get, &path, Body::None).await
    }

    /// `DELETE /files/{id}`.
    pub async fn delete_file(&self, file_id: &str) -> Result<(), XaiError> {
        let path = format!("files/{}", segment(file_id)?);
        self.send(Host::Files, Verb::Delete, &path, Body::None)
            .await
            .map(drop)
    }

    // ---- Collections API (management host) ----

    /// `POST /collections`.
    pub async fn create_collection(&self, new: &NewCollection) -> Result<Collection, XaiError> {
        let body = encode("collections", new)?;
        self.call(Host::Management, Verb::Post, "collections", body)
            .await
    }

    /// `GET /collections/{cid}`.
    pub async fn get_collection(&self, collection_id: &str) -> Result<Collection, XaiError> {
        let path = format!("collections/{}", segment(collection_id)?);
        self.call(Host::Management, Verb::Get, &path, Body::None)
            .await
    }

    /// `GET /collections`: every collection of the team (the manager finds an entity's collection
    /// by its name when the id was never written back).
    pub async fn list_collections(&self) -> Result<Vec<Collection>, XaiError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            collections: Vec<Collection>,
        }
        let page: Page = self
            .call(Host::Management, Verb::Get, "collections", Body::None)
            .await?;
        Ok(page.collections)
    }

    /// `DELETE /collections/{cid}`: the collection goes, its files stay.
    pub async fn delete_collection(&self, collection_id: &str) -> Result<(), XaiError> {
        let path = format!("collections/{}", segment(collection_id)?);
        self.send(Host::Management, Verb::Delete, &path, Body::None)
            .await
            .map(drop)
    }

    /// `GET /collections/{cid}/documents`, following `pagination_token` over all pages.
    pub async fn list_documents(
        &self,
        collection_id: &str,
    ) -> Result<Vec<CollectionDocument>, XaiError> {
        let base = format!("collections/{}/documents", segment(collection_id)?);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(t) => format!(
                    "{base}?pagination_token={}",
                    url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
                ),
                None => base.clone(),
            };
            let page: DocumentPage = self
                .call(Host::Management, Verb::Get, &path, Body::None)
                .await?;
            out.extend(page.documents);
            match page.pagination_token.filter(|t| !t.is_empty()) {
                Some(t) if token.as_ref() != Some(&t) => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// `POST /collections/{cid}/documents/{file_id}`: adds an uploaded file to a collection.
    pub async fn add_document(&self, collection_id: &str, file_id: &str) -> Result<(), XaiError> {
        let path = document_path(collection_id, file_id)?;
        self.send(Host::Management, Verb::Post, &path, Body::None)
            .await
            .map(drop)
    }

    /// `DELETE /collections/{cid}/documents/{file_id}`: removes the file from the collection,
    /// keeping the file itself.
    pub async fn remove_document(
        &self,
        collection_id: &str,
        file_id: &str,
    ) -> Result<(), XaiError> {
        let path = document_path(collection_id, file_id)?;
        self.send(Host::Management, Verb::Delete, &path, Body::None)
            .await
            .map(drop)
    }

    /// `GET /collections/{cid}/documents/{file_id}`: the document with its processing status.
    pub async fn document(
        &self,
        collection_id: &str,
        file_id: &str,
    ) -> Result<CollectionDocument, XaiError> {
        let path = document_path(collection_id, file_id)?;
        self.call(Host::Management, Verb::Get, &path, Body::None)
            .await
    }

    // ---- plumbing ----

    async fn call<T: DeserializeOwned>(
        &self,
        host: Host,
        verb: Verb,
        path: &str,
        body: Body,
    ) -> Result<T, XaiError> {
        let bytes = self.send(host, verb, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| XaiError::Decode {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Sends one request to `host` with that host's key; the raw body of a 2xx answer.
    async fn send(
        &self,
        host: Host,
        verb: Verb,
        path: &str,
        body: Body,
    ) -> Result<Vec<u8>, XaiError> {
        let (base, key) = match host {
            Host::Files => (&self.settings.files_base_url, &self.settings.api_key),
            Host::Management => (
                &self.settings.management_base_url,
                &self.settings.management_key,
            ),
        };
        let url = base
            .join(path)
            .map_err(|e| XaiError::Config(format!("bad path {path:?}: {e}")))?;
        let mut req = match verb {
            Verb::Get => self.http.get(url),
            Verb::Post => self.http.post(url),
            Verb::Delete => self.http.delete(url),
        }
        .bearer_auth(key.expose());
        req = match body {
            Body::None => req,
            Body::Json(b) => req.header("Content-Type", "application/json").body(b),
            Body::Multipart {
                content_type,
                head,
                content,
                tail,
            } => req
                .header("Content-Type", content_type)
                .body(reqwest::Body::wrap(Chunks::new(head, content, tail))),
        };
        let transport = |e: reqwest::Error| XaiError::Transport {
            host,
            path: path.to_owned(),
            message: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        debug!(%host, path, status, "xAI answered");
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        let path = path.to_owned();
        Err(match status {
            429 => XaiError::RateLimited {
                host,
                path,
                retry_after,
            },
            404 => XaiError::NotFound {
                host,
                path,
                message: message(&bytes),
            },
            _ => XaiError::Upstream {
                host,
                path,
                status,
                message: message(&bytes),
            },
        })
    }
}

/// The multipart body: the head, the file part (from memory, or read from the spooled file in
/// 64 KiB chunks as the connection takes them), the tail. Its exact size is known up front, so
/// the request carries a `Content-Length` rather than chunked encoding.
struct Chunks {
    parts: std::collections::VecDeque<ChunkPart>,
    remaining: u64,
    buf: Vec<u8>,
}

enum ChunkPart {
    Bytes(bytes::Bytes),
    File { file: tokio::fs::File, left: u64 },
}

impl Chunks {
    fn new(head: Vec<u8>, content: UploadContent, tail: Vec<u8>) -> Self {
        let remaining = head.len() as u64 + content.len() + tail.len() as u64;
        let middle = match content {
            UploadContent::Bytes(b) => ChunkPart::Bytes(b),
            UploadContent::File { file, len } => ChunkPart::File { file, left: len },
        };
        let parts = [
            ChunkPart::Bytes(head.into()),
            middle,
            ChunkPart::Bytes(tail.into()),
        ]
        .into_iter()
        .filter(|p| match p {
            ChunkPart::Bytes(b) => !b.is_empty(),
            ChunkPart::File { left, .. } => *left > 0,
        })
        .collect();
        Self {
            parts,
            remaining,
            buf: Vec::new(),
        }
    }
}

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        const CHUNK: usize = 64 * 1024;
        let this = &mut *self;
        let data = match this.parts.front_mut() {
            None => return Poll::Ready(None),
            Some(ChunkPart::Bytes(_)) => match this.parts.pop_front() {
                Some(ChunkPart::Bytes(b)) => b,
                _ => return Poll::Ready(None),
            },
            Some(ChunkPart::File { file, left }) => {
                let want = usize::try_from(*left).unwrap_or(CHUNK).min(CHUNK);
                this.buf.resize(want, 0);
                let mut read = tokio::io::ReadBuf::new(&mut this.buf);
                match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(file), cx, &mut read) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(())) => {}
                }
                let n = read.filled().len();
                if n == 0 {
                    // Shorter than announced: the Content-Length would be a lie.
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "spooled file ended before its announced length",
                    ))));
                }
                *left -= n as u64;
                if *left == 0 {
                    this.parts.pop_front();
                }
                bytes::Bytes::copy_from_slice(&this.buf[..n])
            }
        };
        this.remaining = this.remaining.saturating_sub(data.len() as u64);
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Builds `multipart/form-data` around the file's bytes: the head (the text fields in order,
/// then the file part's headers) and the tail (the closing boundary).
fn multipart(
    boundary: &str,
    fields: &[(&str, String)],
    filename: &str,
    content_type: &str,
) -> (Vec<u8>, Vec<u8>) {
    // Quotes and line breaks would end the header value early; xAI only shows the name.
    let safe_name: String = filename
        .chars()
        .map(|c| {
            if matches!(c, '"' | '\r' | '\n' | '\\') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut out = Vec::with_capacity(512);
    for (name, value) in fields {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    (out, format!("\r\n--{boundary}--\r\n").into_bytes())
}

/// An id used as one path segment: ids are `[A-Za-z0-9_-]`, anything else would change the path.
fn segment(id: &str) -> Result<&str, XaiError> {
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(XaiError::Config(format!("invalid xAI id {id:?}")))
    }
}

fn document_path(collection_id: &str, file_id: &str) -> Result<String, XaiError> {
    Ok(format!(
        "collections/{}/documents/{}",
        segment(collection_id)?,
        segment(file_id)?
    ))
}

fn encode<B: Serialize + ?Sized>(path: &str, body: &B) -> Result<Body, XaiError> {
    serde_json::to_vec(body)
        .map(Body::Json)
        .map_err(|e| XaiError::Decode {
            path: path.to_owned(),
            message: format!("cannot encode body: {e}"),
        })
}

/// xAI's error text: `error` (string or `{message}`), `message`, or a short body excerpt.
fn message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let m = v
            .get("error")
            .and_then(|e| {
                e.as_str()
                    .or_else(|| e.get("message").and_then(Value::as_str))
            })
            .or_else(|| v.get("message").and_then(Value::as_str));
        if let Some(m) = m {
            return m.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    if out.is_empty() {
        "no body".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_puts_fields_before_the_file() {
        let (head, tail) = multipart(
            "B",
            &[
                ("purpose", "assistants".into()),
                ("expires_after", "60".into()),
            ],
            "a\"b.pdf",
            "application/pdf",
        );
        let body = [head, b"%PDF".to_vec(), tail].concat();
        let text = String::from_utf8_lossy(&body);
        let e = text.find("name=\"expires_after\"").unwrap_or(usize::MAX);
        let f = text.find("name=\"file\"").unwrap_or(0);
        assert!(e < f, "{text}");
        assert!(text.contains("filename=\"a_b.pdf\""));
        assert!(text.ends_with("\r\n--B--\r\n"));
    }

    #[test]
    fn ids_must_be_one_segment() {
        assert!(segment("file_abc-1").is_ok());
        assert!(segment("../x").is_err());
        assert!(segment("").is_err());
    }

    #[test]
    fn classifies_errors() {
        let up = |status| XaiError::Upstream {
            host: Host::Files,
            path: "files".into(),
            status,
            message: String::new(),
        };
        assert!(up(502).is_retryable());
        assert!(!up(400).is_retryable());
        assert!(XaiError::RateLimited {
            host: Host::Management,
            path: String::new(),
            retry_after: None
        }
        .is_retryable());
        assert_eq!(message(br#"{"error":"bad file"}"#), "bad file");
        assert_eq!(message(br#"{"error":{"message":"m"}}"#), "m");
    }
}
