//! The xAI client against the stateful xAI fake (two hosts, each checking its own key) over
//! loopback: upload with `expires_after` before the file part, get/content/delete, collection
//! create with field definitions, add/list/status/remove documents, 404, 429 with `Retry-After`,
//! 5xx, permanent 4xx with xAI's message, the size limit before any byte is sent, and no key in
//! `Debug`, errors or logs.
#![allow(clippy::expect_used)] // In tests a failed expect is a failed test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitbylaw_fakes::xai::{self, XaiConfig, XaiFake};
use bitbylaw_worker::clients::xai::{
    ClientSettings, DocumentStatus, FieldDefinition, Host, NewCollection, UploadContent, XaiClient,
    XaiError,
};
use bitbylaw_worker::config::{Secret, XaiSettings};

const API_KEY: &str = "xai-inference-key-4b1e";
const MGMT_KEY: &str = "xai-management-key-9c2d";

async fn fake() -> XaiFake {
    xai::start(XaiConfig {
        api_key: API_KEY.into(),
        management_key: MGMT_KEY.into(),
        ..XaiConfig::default()
    })
    .await
    .expect("fake")
}

fn settings(fake: &XaiFake) -> XaiSettings {
    XaiSettings {
        files_base_url: fake.files_url(),
        management_base_url: fake.management_url(),
        api_key: Some(Secret::new(API_KEY)),
        management_key: Some(Secret::new(MGMT_KEY)),
        timeout: Duration::from_secs(5),
        ..XaiSettings::default()
    }
}

fn client_with(s: &XaiSettings) -> XaiClient {
    XaiClient::new(ClientSettings::from_settings(s).expect("settings")).expect("client")
}

fn client(fake: &XaiFake) -> XaiClient {
    client_with(&settings(fake))
}

fn case_collection() -> NewCollection {
    NewCollection {
        collection_name: "Raeumungsklage 6745a1b2c3d4e5f60".into(),
        collection_description: Some("entityType=Raeumungsklage entityId=6745a1b2c3d4e5f60".into()),
        field_definitions: vec![
            FieldDefinition {
                key: "entityType".into(),
                required: true,
                inject_into_chunk: false,
            },
            FieldDefinition {
                key: "entityId".into(),
                required: true,
                inject_into_chunk: false,
            },
        ],
    }
}

#[tokio::test]
async fn upload_sends_expires_after_before_the_file_with_the_inference_key() {
    let fake = fake().await;
    let client = client(&fake);
    let file = client
        .upload_file(
            "Klage.pdf",
            "application/pdf",
            b"%PDF-1.7 body".to_vec(),
            Some(Duration::from_secs(3600)),
        )
        .await
        .expect("upload");
    assert!(file.id.starts_with("file_"));
    assert_eq!(file.bytes, 13);
    assert_eq!(file.filename, "Klage.pdf");
    assert!(file.expires_at.is_some());

    let stored = fake.file(&file.id).expect("stored");
    assert_eq!(stored.content, b"%PDF-1.7 body");
    assert_eq!(stored.content_type.as_deref(), Some("application/pdf"));
    let req = fake.files_controls().last_request().expect("request");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let expires = body
        .find("name=\"expires_after\"")
        .expect("expires_after part");
    let file_part = body.find("name=\"file\"").expect("file part");
    assert!(expires < file_part, "expires_after must precede the file");

    assert_eq!(client.get_file(&file.id).await.expect("get"), file);
    assert_eq!(
        client.file_content(&file.id).await.expect("content"),
        b"%PDF-1.7 body"
    );
    client.delete_file(&file.id).await.expect("delete");
    let gone = client.get_file(&file.id).await.expect_err("deleted");
    assert!(gone.is_not_found() && !gone.is_retryable(), "{gone:?}");
    assert_eq!(fake.counters().uploads, 1);
}

/// A spooled file is sent as the file part chunk by chunk (three 64 KiB reads and a rest here)
/// with an exact `Content-Length` — no chunked encoding — and arrives byte for byte; a file
/// shorter than announced fails as a transport error instead of sending a wrong length.
#[tokio::test]
async fn upload_from_a_spooled_file_sends_its_bytes_with_an_exact_length() {
    use std::io::Write as _;
    let fake = fake().await;
    let client = client(&fake);
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut spool = tempfile::tempfile().expect("spool");
    spool.write_all(&content).expect("write");
    std::io::Seek::rewind(&mut spool).expect("rewind");
    let file = client
        .upload_file(
            "Akte.pdf",
            "application/pdf",
            UploadContent::File {
                file: tokio::fs::File::from_std(spool.try_clone().expect("clone")),
                len: content.len() as u64,
            },
            None,
        )
        .await
        .expect("upload");
    assert_eq!(file.bytes, content.len() as u64);
    assert_eq!(fake.file(&file.id).expect("stored").content, content);
    let req = fake.files_controls().last_request().expect("request");
    assert_eq!(
        req.header("content-length"),
        Some(req.body.len().to_string().as_str())
    );
    assert_eq!(req.header("transfer-encoding"), None);

    std::io::Seek::rewind(&mut spool).expect("rewind");
    let err = client
        .upload_file(
            "Akte.pdf",
            "application/pdf",
            UploadContent::File {
                file: tokio::fs::File::from_std(spool),
                len: content.len() as u64 + 10,
            },
            None,
        )
        .await
        .expect_err("shorter than announced");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(fake.counters().uploads, 1);
}

#[tokio::test]
async fn collections_take_the_management_key_and_track_membership() {
    let fake = fake().await;
    let client = client(&fake);
    let col = client
        .create_collection(&case_collection())
        .await
        .expect("create");
    assert_eq!(col.collection_name, "Raeumungsklage 6745a1b2c3d4e5f60");
    assert_eq!(col.field_definitions.len(), 2);
    let req = fake.management_controls().last_request().expect("request");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {MGMT_KEY}").as_str())
    );
    assert_eq!(
        req.json().expect("json")["field_definitions"][0]["key"],
        "entityType"
    );
    assert_eq!(
        client
            .get_collection(&col.collection_id)
            .await
            .expect("get"),
        col
    );

    let file = client
        .upload_file("a.txt", "text/plain", b"hello".to_vec(), None)
        .await
        .expect("upload");
    client
        .add_document(&col.collection_id, &file.id)
        .await
        .expect("add");
    assert_eq!(fake.members(&col.collection_id), vec![file.id.clone()]);
    let first = client
        .document(&col.collection_id, &file.id)
        .await
        .expect("status");
    assert_eq!(first.status, DocumentStatus::Processing);
    let docs = client
        .list_documents(&col.collection_id)
        .await
        .expect("list");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].file_id(), file.id);
    assert_eq!(docs[0].status, DocumentStatus::Processed);

    client
        .remove_document(&col.collection_id, &file.id)
        .await
        .expect("remove");
    assert!(fake.members(&col.collection_id).is_empty());
    assert!(fake.file(&file.id).is_some(), "removing keeps the file");
    let again = client
        .remove_document(&col.collection_id, &file.id)
        .await
        .expect_err("not a member");
    assert!(again.is_not_found());
    let unknown = client
        .add_document(&col.collection_id, "file_missing")
        .await
        .expect_err("unknown file");
    assert!(unknown.is_not_found(), "{unknown:?}");
    let c = fake.counters();
    assert_eq!((c.collection_creates, c.adds, c.removes), (1, 1, 1));
}

#[tokio::test]
async fn swapped_keys_are_refused_by_each_host() {
    let fake = fake().await;
    let mut s = settings(&fake);
    std::mem::swap(&mut s.api_key, &mut s.management_key);
    let swapped = client_with(&s);
    let err = swapped
        .upload_file("a.txt", "text/plain", b"x".to_vec(), None)
        .await
        .expect_err("management key on the files host");
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_retryable());
    let err = swapped
        .create_collection(&case_collection())
        .await
        .expect_err("inference key on the management host");
    assert_eq!(err.status(), Some(401));
    assert_eq!(fake.counters(), Default::default());
}

#[tokio::test]
async fn rate_limits_server_errors_and_refusals_are_classified() {
    let fake = fake().await;
    let client = client(&fake);
    fake.management_controls().fail_next(1, 429, Some(17));
    let err = client
        .create_collection(&case_collection())
        .await
        .expect_err("429");
    assert!(
        matches!(
            err,
            XaiError::RateLimited {
                host: Host::Management,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));

    fake.files_controls().fail_next(1, 503, None);
    let err = client
        .upload_file("a.txt", "text/plain", b"x".to_vec(), None)
        .await
        .expect_err("503");
    assert!(err.is_retryable() && err.status() == Some(503), "{err:?}");

    // A permanent refusal carries xAI's own message.
    let err = client
        .create_collection(&NewCollection {
            collection_name: String::new(),
            collection_description: None,
            field_definitions: vec![],
        })
        .await
        .expect_err("400");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("collection_name is required"),
        "{err}"
    );

    // Nothing listens on a closed port: a transport error, retryable.
    let mut s = settings(&fake);
    s.files_base_url = "http://127.0.0.1:1/v1/".into();
    let err = client_with(&s)
        .get_file("file_x")
        .await
        .expect_err("refused");
    assert!(matches!(err, XaiError::Transport { .. }) && err.is_retryable());
}

#[tokio::test]
async fn oversized_files_are_refused_before_sending() {
    let fake = fake().await;
    let mut s = settings(&fake);
    s.max_file_bytes = 1000;
    let client = client_with(&s);
    let err = client
        .upload_file("big.pdf", "application/pdf", vec![0u8; 1001], None)
        .await
        .expect_err("too large");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("1001") && text.contains("1000") && text.contains("big.pdf"),
        "{text}"
    );
    assert!(fake.files_controls().requests().is_empty(), "nothing sent");

    s.max_file_bytes = 60_000_000;
    let refused = ClientSettings::from_settings(&s).expect_err("above xAI's limit");
    assert!(refused.to_string().contains("max_file_bytes"));
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buf").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_never_in_debug_errors_or_logs() {
    // Process-wide, as in `espocrm_client.rs`: tracing caches callsite interest per binary.
    static LOGS: std::sync::OnceLock<Buf> = std::sync::OnceLock::new();
    let buf = LOGS
        .get_or_init(|| {
            let buf = Buf::default();
            let writer = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            buf
        })
        .clone();

    let fake = fake().await;
    let client = client(&fake);
    let file = client
        .upload_file("a.txt", "text/plain", b"x".to_vec(), None)
        .await
        .expect("upload");
    fake.management_controls().fail_next(1, 400, None);
    let err = client
        .add_document("collection_x", &file.id)
        .await
        .expect_err("400");

    let logs = String::from_utf8(buf.0.lock().expect("buf").clone()).expect("utf8");
    assert!(
        logs.contains("xAI answered"),
        "the client logs its calls: {logs}"
    );
    for text in [
        logs,
        format!("{client:?}"),
        format!("{:?}", client.settings()),
        format!("{err:?} {err}"),
    ] {
        assert!(
            !text.contains(API_KEY) && !text.contains(MGMT_KEY),
            "key leaked: {text}"
        );
    }
}
