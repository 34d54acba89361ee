//! xAI Files and Collections (FACTS §7; xAI's REST reference), as two servers sharing one state.
//!
//! - **Files host** (`/v1/files…`, `Authorization: Bearer <api key>`): multipart upload with an
//!   optional `purpose` and `expires_after` (seconds) that must come *before* the `file` part
//!   (xAI refuses it after: 400), a size limit (413 above it), get, content, delete.
//! - **Management host** (`/v1/collections…`, `Authorization: Bearer <management key>`): create
//!   (`collection_name` required, `field_definitions`), get, list, delete; documents: add an
//!   uploaded file (404 for an unknown file or collection), list, get, remove (the file stays).
//!   A document starts `DOCUMENT_STATUS_PROCESSING` and is `PROCESSED` from the next read on,
//!   so a poller sees both states.
//!
//! Each host accepts only its own key: the inference key on the management host (or the other
//! way round) is a 401, which is how tests prove the client never mixes them. 429 with
//! `Retry-After` is injected per host through [`Controls`]; a collection create can be carried out
//! with its answer lost ([`XaiFake::lose_next_collection_create_responses`]). Counters (`uploads`, `adds`,
//! `removes`) let sync tests assert "one upload, one add per collection".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::server::{constant_time_eq, json as json_response, random_string};
use crate::{Controls, RunningServer, StartError};

/// xAI's upload limit as the fake enforces it by default.
pub const DEFAULT_MAX_FILE_BYTES: usize = 48_000_000;

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct XaiConfig {
    /// Inference key, accepted only by the files host.
    pub api_key: String,
    /// Management key, accepted only by the management host.
    pub management_key: String,
    pub max_file_bytes: usize,
}

impl Default for XaiConfig {
    fn default() -> Self {
        Self {
            api_key: "xai-test-inference-key".into(),
            management_key: "xai-test-management-key".into(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// An uploaded file.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: String,
    pub filename: String,
    pub purpose: Option<String>,
    pub content_type: Option<String>,
    pub content: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A file's membership in a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// False until the document has been read once after being added.
    pub processed: bool,
}

/// A collection.
#[derive(Debug, Clone)]
pub struct StoredCollection {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub field_definitions: Value,
    /// file id → membership.
    pub documents: BTreeMap<String, Membership>,
}

/// Write counters (successful calls only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub uploads: usize,
    pub file_deletes: usize,
    pub collection_creates: usize,
    pub adds: usize,
    pub removes: usize,
}

#[derive(Debug, Default)]
struct XaiState {
    files: BTreeMap<String, StoredFile>,
    collections: BTreeMap<String, StoredCollection>,
    counters: Counters,
    /// Collection creates still to commit but answer as failed (the response "lost").
    lost_create_responses: usize,
}

#[derive(Clone)]
struct Shared {
    config: Arc<XaiConfig>,
    state: Arc<Mutex<XaiState>>,
}

/// The running fake: both hosts and their controls.
pub struct XaiFake {
    files: RunningServer,
    management: RunningServer,
    files_controls: Controls,
    management_controls: Controls,
    shared: Shared,
}

impl std::fmt::Debug for XaiFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XaiFake")
            .field("files", &self.files.addr())
            .field("management", &self.management.addr())
            .finish()
    }
}

/// Starts both hosts on free loopback ports.
pub async fn start(config: XaiConfig) -> Result<XaiFake, StartError> {
    let shared = Shared {
        config: Arc::new(config),
        state: Arc::new(Mutex::new(XaiState::default())),
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let files_router = Router::new()
        .route("/v1/files", post(upload).get(list_files))
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(file_content))
        .fallback(not_found)
        .with_state(shared.clone());
    let management_router = Router::new()
        .route(
            "/v1/collections",
            post(create_collection).get(list_collections),
        )
        .route(
            "/v1/collections/{cid}",
            get(get_collection).delete(delete_collection),
        )
        .route("/v1/collections/{cid}/documents", get(list_documents))
        .route(
            "/v1/collections/{cid}/documents/{fid}",
            get(get_document).post(add_document).delete(remove_document),
        )
        .fallback(not_found)
        .with_state(shared.clone());
    let files_controls = Controls::default();
    let management_controls = Controls::default();
    let files =
        RunningServer::spawn(loopback, files_router, files_controls.clone(), error_shape).await?;
    let management = RunningServer::spawn(
        loopback,
        management_router,
        management_controls.clone(),
        error_shape,
    )
    .await?;
    Ok(XaiFake {
        files,
        management,
        files_controls,
        management_controls,
        shared,
    })
}

impl XaiFake {
    /// Files API base, `http://127.0.0.1:PORT/v1/`.
    pub fn files_url(&self) -> String {
        format!("{}/v1/", self.files.base_url())
    }

    /// Collections API base, `http://127.0.0.1:PORT/v1/`.
    pub fn management_url(&self) -> String {
        format!("{}/v1/", self.management.base_url())
    }

    pub fn config(&self) -> &XaiConfig {
        &self.shared.config
    }

    /// Request log and failure injection of the files host.
    pub fn files_controls(&self) -> &Controls {
        &self.files_controls
    }

    /// Request log and failure injection of the management host.
    pub fn management_controls(&self) -> &Controls {
        &self.management_controls
    }

    pub fn counters(&self) -> Counters {
        self.shared.state.lock().counters
    }

    pub fn file(&self, id: &str) -> Option<StoredFile> {
        self.shared.state.lock().files.get(id).cloned()
    }

    pub fn file_count(&self) -> usize {
        self.shared.state.lock().files.len()
    }

    pub fn collection(&self, id: &str) -> Option<StoredCollection> {
        self.shared.state.lock().collections.get(id).cloned()
    }

    /// Every collection, in id order.
    pub fn collections(&self) -> Vec<StoredCollection> {
        self.shared
            .state
            .lock()
            .collections
            .values()
            .cloned()
            .collect()
    }

    /// The next `n` collection creates are carried out but answered 503, as when the worker
    /// crashes or the connection drops after xAI created the collection and before the caller
    /// could record its id.
    pub fn lose_next_collection_create_responses(&self, n: usize) {
        self.shared.state.lock().lost_create_responses = n;
    }

    /// The file ids in a collection (empty for an unknown collection).
    pub fn members(&self, collection_id: &str) -> Vec<String> {
        self.shared
            .state
            .lock()
            .collections
            .get(collection_id)
            .map(|c| c.documents.keys().cloned().collect())
            .unwrap_or_default()
    }
}

// ---- errors and auth ----

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "code": status.as_u16(), "error": message }))
}

fn error_shape(status: StatusCode) -> Response {
    error(
        status,
        status.canonical_reason().unwrap_or("injected failure"),
    )
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

fn bearer_is(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|v| constant_time_eq(v.as_bytes(), key.as_bytes()))
}

macro_rules! require {
    ($headers:expr, $key:expr) => {
        if !bearer_is(&$headers, &$key) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided for this host",
            );
        }
    };
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---- Files host ----

fn file_json(f: &StoredFile) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.content.len(),
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "expires_at": f.expires_at,
    })
}

/// One part of a multipart body.
struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A strict `multipart/form-data` parser: CRLF line breaks, `Content-Disposition: form-data`
/// with a `name` on every part, closing delimiter required.
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Part>, String> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or("multipart body without boundary")?;
    if !content_type.trim_start().starts_with("multipart/form-data") {
        return Err("expected multipart/form-data".into());
    }
    let delim = format!("--{boundary}").into_bytes();
    let next_delim = format!("\r\n--{boundary}").into_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    if !body.starts_with(&delim) {
        return Err("body does not start with the boundary".into());
    }
    let mut pos = delim.len();
    let mut parts = Vec::new();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(parts);
        }
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            return Err("malformed boundary line".into());
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("part without header end")?;
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let data_start = head_end + 4;
        let data_end = find(body, &next_delim, data_start).ok_or("missing closing boundary")?;
        let mut name = None;
        let mut filename = None;
        let mut ctype = None;
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':').ok_or("malformed part header")?;
            match k.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for attr in v.split(';').map(str::trim) {
                        if let Some(n) = attr.strip_prefix("name=") {
                            name = Some(n.trim_matches('"').to_owned());
                        } else if let Some(f) = attr.strip_prefix("filename=") {
                            filename = Some(f.trim_matches('"').to_owned());
                        }
                    }
                }
                "content-type" => ctype = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        parts.push(Part {
            name: name.ok_or("part without a name")?,
            filename,
            content_type: ctype,
            body: body[data_start..data_end].to_vec(),
        });
        pos = data_end + next_delim.len();
    }
}

async fn upload(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    require!(headers, s.config.api_key);
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parts = match parse_multipart(ct, &body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let Some(file_idx) = parts.iter().position(|p| p.name == "file") else {
        return error(StatusCode::BAD_REQUEST, "missing file part");
    };
    if parts[file_idx + 1..]
        .iter()
        .any(|p| p.name == "expires_after")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "expires_after must be sent before the file part",
        );
    }
    let field = |n: &str| {
        parts
            .iter()
            .find(|p| p.name == n)
            .map(|p| String::from_utf8_lossy(&p.body).into_owned())
    };
    let expires_after = match field("expires_after").map(|v| v.parse::<i64>()) {
        None => None,
        Some(Ok(secs)) if secs > 0 => Some(secs),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "expires_after must be a positive number of seconds",
            )
        }
    };
    let file = &parts[file_idx];
    if file.body.len() > s.config.max_file_bytes {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "file is {} bytes, the limit is {}",
                file.body.len(),
                s.config.max_file_bytes
            ),
        );
    }
    let created_at = now();
    let stored = StoredFile {
        id: format!("file_{}", random_string(24)),
        filename: file.filename.clone().unwrap_or_else(|| "upload".into()),
        purpose: field("purpose"),
        content_type: file.content_type.clone(),
        content: file.body.clone(),
        created_at,
        expires_at: expires_after.map(|e| created_at + e),
    };
    let out = file_json(&stored);
    let mut st = s.state.lock();
    st.counters.uploads += 1;
    st.files.insert(stored.id.clone(), stored);
    json_response(StatusCode::OK, out)
}

async fn list_files(State(s): State<Shared>, headers: HeaderMap) -> Response {
    require!(headers, s.config.api_key);
    let st = s.state.lock();
    let data: Vec<Value> = st.files.values().map(file_json).collect();
    json_response(StatusCode::OK, json!({ "data": data }))
}

async fn get_file(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    require!(headers, s.config.api_key);
    match s.state.lock().files.get(&id) {
        Some(f) => json_response(StatusCode::OK, file_json(f)),
        None => error(StatusCode::NOT_FOUND, "file not found"),
    }
}

async fn file_content(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    require!(headers, s.config.api_key);
    match s.state.lock().files.get(&id) {
        Some(f) => (StatusCode::OK, f.content.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "file not found"),
    }
}

/// Deleting a file also takes it out of every collection.
async fn delete_file(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    require!(headers, s.config.api_key);
    let mut st = s.state.lock();
    if st.files.remove(&id).is_none() {
        return error(StatusCode::NOT_FOUND, "file not found");
    }
    for c in st.collections.values_mut() {
        c.documents.remove(&id);
    }
    st.counters.file_deletes += 1;
    json_response(StatusCode::OK, json!({ "id": id, "deleted": true }))
}

// ---- Management host ----

fn collection_json(c: &StoredCollection) -> Value {
    json!({
        "collection_id": c.id,
        "collection_name": c.name,
        "collection_description": c.description,
        "field_definitions": c.field_definitions,
        "documents_count": c.documents.len(),
    })
}

fn document_json(file: Option<&StoredFile>, file_id: &str, m: &Membership) -> Value {
    json!({
        "file_metadata": {
            "file_id": file_id,
            "name": file.map(|f| f.filename.clone()),
            "size_bytes": file.map(|f| f.content.len()),
        },
        "status": if m.processed { "DOCUMENT_STATUS_PROCESSED" } else { "DOCUMENT_STATUS_PROCESSING" },
        "fields": {},
    })
}

async fn create_collection(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    require!(headers, s.config.management_key);
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let Some(name) = v
        .get("collection_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return error(StatusCode::BAD_REQUEST, "collection_name is required");
    };
    let fields = v.get("field_definitions").cloned().unwrap_or(json!([]));
    let fields_ok = fields.as_array().is_some_and(|a| {
        a.iter().all(|f| {
            f.get("key")
                .and_then(Value::as_str)
                .is_some_and(|k| !k.is_empty())
        })
    });
    if !fields_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "field_definitions must be a list of objects with a key",
        );
    }
    let c = StoredCollection {
        id: format!("collection_{}", random_string(24)),
        name: name.to_owned(),
        description: v
            .get("collection_description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        field_definitions: fields,
        documents: BTreeMap::new(),
    };
    let out = collection_json(&c);
    let mut st = s.state.lock();
    st.counters.collection_creates += 1;
    st.collections.insert(c.id.clone(), c);
    if st.lost_create_responses > 0 {
        st.lost_create_responses -= 1;
        return error_shape(StatusCode::SERVICE_UNAVAILABLE);
    }
    json_response(StatusCode::OK, out)
}

async fn list_collections(State(s): State<Shared>, headers: HeaderMap) -> Response {
    require!(headers, s.config.management_key);
    let st = s.state.lock();
    let list: Vec<Value> = st.collections.values().map(collection_json).collect();
    json_response(StatusCode::OK, json!({ "collections": list }))
}

async fn get_collection(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(cid): Path<String>,
) -> Response {
    require!(headers, s.config.management_key);
    match s.state.lock().collections.get(&cid) {
        Some(c) => json_response(StatusCode::OK, collection_json(c)),
        None => error(StatusCode::NOT_FOUND, "collection not found"),
    }
}

async fn delete_collection(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(cid): Path<String>,
) -> Response {
    require!(headers, s.config.management_key);
    match s.state.lock().collections.remove(&cid) {
        Some(_) => json_response(StatusCode::OK, json!({})),
        None => error(StatusCode::NOT_FOUND, "collection not found"),
    }
}

/// Lists the documents; each read moves PROCESSING documents on to PROCESSED (after answering).
async fn list_documents(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(cid): Path<String>,
) -> Response {
    require!(headers, s.config.management_key);
    let mut st = s.state.lock();
    let XaiState {
        files, collections, ..
    } = &mut *st;
    let Some(c) = collections.get_mut(&cid) else {
        return error(StatusCode::NOT_FOUND, "collection not found");
    };
    let docs: Vec<Value> = c
        .documents
        .iter()
        .map(|(fid, m)| document_json(files.get(fid), fid, m))
        .collect();
    for m in c.documents.values_mut() {
        m.processed = true;
    }
    json_response(StatusCode::OK, json!({ "documents": docs }))
}

async fn get_document(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((cid, fid)): Path<(String, String)>,
) -> Response {
    require!(headers, s.config.management_key);
    let mut st = s.state.lock();
    let XaiState {
        files, collections, ..
    } = &mut *st;
    let Some(m) = collections
        .get_mut(&cid)
        .and_then(|c| c.documents.get_mut(&fid))
    else {
        return error(StatusCode::NOT_FOUND, "document not found");
    };
    let out = document_json(files.get(&fid), &fid, m);
    m.processed = true;
    json_response(StatusCode::OK, out)
}

/// Adds an uploaded file; adding a member again changes nothing.
async fn add_document(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((cid, fid)): Path<(String, String)>,
) -> Response {
    require!(headers, s.config.management_key);
    let mut st = s.state.lock();
    if !st.files.contains_key(&fid) {
        return error(StatusCode::NOT_FOUND, "file not found");
    }
    let Some(c) = st.collections.get_mut(&cid) else {
        return error(StatusCode::NOT_FOUND, "collection not found");
    };
    c.documents
        .entry(fid)
        .or_insert(Membership { processed: false });
    st.counters.adds += 1;
    json_response(StatusCode::OK, json!({}))
}

async fn remove_document(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((cid, fid)): Path<(String, String)>,
) -> Response {
    require!(headers, s.config.management_key);
    let mut st = s.state.lock();
    let removed = st
        .collections
        .get_mut(&cid)
        .and_then(|c| c.documents.remove(&fid));
    if removed.is_none() {
        return error(StatusCode::NOT_FOUND, "document not found");
    }
    st.counters.removes += 1;
    json_response(StatusCode::OK, json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multipart_in_order() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B--\r\n";
        let parts = parse_multipart("multipart/form-data; boundary=B", body).unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].name, "file");
        assert_eq!(parts[1].filename.as_deref(), Some("a.txt"));
        assert_eq!(parts[1].body, b"hi");
        assert!(parse_multipart("multipart/form-data; boundary=B", b"--B\r\nx").is_err());
    }
}
