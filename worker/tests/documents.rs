//! The document sync (issue 15) through the real worker binary and queue, against the EspoCRM
//! and xAI fakes and a real `redis-server`: a storm of link and update events, content change and
//! rename, a failed write-back after the upload, 429 with `Retry-After`, an oversized attachment,
//! delete, a closed case, the `documents audit|resync` CLI, the entity create hook and crashes
//! around a collection's creation — and no key in the (debug) logs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // In tests a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_fakes::xai::{self, XaiConfig, XaiFake};
use common::{metric, metrics_text, post_event, sha256_hex, wait_for, RedisServer, Worker};
use redis::AsyncCommands;
use serde_json::{json, Value};

const DOC: &str = "CDokumente";
const CASE: &str = "Raeumungsklage";
const PARTY: &str = "CBeteiligte";

struct Env {
    redis: RedisServer,
    espo: EspoCrmFake,
    xai: XaiFake,
    vars: Vec<(String, String)>,
}

async fn env() -> Env {
    let redis = RedisServer::start(false);
    let espo = espocrm::start(EspoCrmConfig::default()).await.unwrap();
    let xai = xai::start(XaiConfig::default()).await.unwrap();
    let vars = common::documents_env(&espo, &xai, "debug");
    Env {
        redis,
        espo,
        xai,
        vars,
    }
}

impl Env {
    fn worker(&self, extra: &[(&str, &str)]) -> Worker {
        let mut o: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        o.extend_from_slice(extra);
        Worker::spawn(&self.redis.url(), &o, &[])
    }

    fn insert(&self, entity: &str, record: Value) -> String {
        let stored = self.espo.insert(entity, record).unwrap();
        stored["id"].as_str().unwrap().to_owned()
    }

    /// A case, a party and a document linked to both.
    fn case_party_document(&self, content: &[u8]) -> (String, String, String) {
        let case = self.insert(
            CASE,
            json!({"name": "Räumung Musterstraße 1", "status": "Offen"}),
        );
        let party = self.insert(PARTY, json!({"lastName": "Mustermann"}));
        let doc = self.document("Klageschrift.pdf", content);
        assert!(self.espo.relate(DOC, &doc, "raeumungsklagen", &case));
        assert!(self.espo.relate(DOC, &doc, "beteiligte", &party));
        (case, party, doc)
    }

    fn document(&self, name: &str, content: &[u8]) -> String {
        let att = self
            .espo
            .insert_attachment("application/pdf", content.to_vec());
        self.insert(
            DOC,
            json!({"name": name, "dokumentId": att, "fileStatus": "new"}),
        )
    }

    fn record(&self, entity: &str, id: &str) -> Value {
        self.espo.get(entity, id).unwrap()
    }

    /// The entity's `xaiCollectionId`.
    fn collection_of(&self, entity: &str, id: &str) -> String {
        self.record(entity, id)["xaiCollectionId"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// No job queued, in flight or delayed on any document topic.
    async fn idle(&self) -> bool {
        let mut c = self.redis.conn().await;
        for t in [
            "vmh.document.create",
            "vmh.document.update",
            "vmh.document.delete",
            "vmh.entity.link",
            "vmh.entity.unlink",
            "vmh.entity.create",
        ] {
            let n: u64 = c.xlen(format!("bbl:q:{t}")).await.unwrap();
            if n > 0 {
                return false;
            }
        }
        let delayed: u64 = c.zcard("bbl:delayed").await.unwrap();
        delayed == 0
    }

    async fn wait_idle(&self) {
        // Twice, a moment apart: a job may be between ack and its follow-up's enqueue.
        for _ in 0..2 {
            wait_for("document queues idle", Duration::from_secs(40), || async {
                self.idle().await.then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        wait_for("document queues idle", Duration::from_secs(40), || async {
            self.idle().await.then_some(())
        })
        .await;
    }

    async fn dlq_len(&self) -> u64 {
        let mut c = self.redis.conn().await;
        c.xlen("bbl:dlq").await.unwrap()
    }

    async fn dlq_errors(&self) -> String {
        let mut c = self.redis.conn().await;
        let v: redis::Value = redis::cmd("XRANGE")
            .arg("bbl:dlq")
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        format!("{v:?}")
    }

    fn keys(&self) -> [String; 3] {
        [
            self.espo.config().api_key.clone(),
            self.xai.config().api_key.clone(),
            self.xai.config().management_key.clone(),
        ]
    }

    fn assert_no_key_in(&self, log: &str) {
        assert!(!log.is_empty(), "the worker logged nothing");
        for k in self.keys() {
            assert!(!log.contains(&k), "a key leaked into the logs");
        }
    }

    /// `documents …` CLI with this environment; (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        common::cli_with(&self.redis.url(), &self.vars, args)
    }
}

async fn link(worker: &Worker, entity_type: &str, id: &str) {
    let body = json!([{"id": id, "entityType": entity_type}]).to_string();
    let (status, v) = post_event(&worker.base, "vmh.entity.link", body.as_bytes()).await;
    assert_eq!(status, 202, "{v}");
}

/// The seeds' entity create hook: `[{id, entityType}]` on `vmh.entity.create`.
async fn created(worker: &Worker, entity_type: &str, id: &str) {
    let body = json!([{"id": id, "entityType": entity_type}]).to_string();
    let (status, v) = post_event(&worker.base, "vmh.entity.create", body.as_bytes()).await;
    assert_eq!(status, 202, "{v}");
}

async fn update(worker: &Worker, doc: &str) {
    let body = json!([{"id": doc}]).to_string();
    let (status, v) = post_event(&worker.base, "vmh.document.update", body.as_bytes()).await;
    assert_eq!(status, 202, "{v}");
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Storm: both links plus five updates → one upload, one add per collection, state clean.
async fn synced(e: &Env, worker: &Worker, content: &[u8]) -> (String, String, String) {
    let (case, party, doc) = e.case_party_document(content);
    link(worker, CASE, &case).await;
    for _ in 0..5 {
        update(worker, &doc).await;
    }
    link(worker, PARTY, &party).await;
    e.wait_idle().await;
    (case, party, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_links_and_updates_uploads_once_and_adds_once_per_collection() {
    let e = env().await;
    let worker = e.worker(&[]);
    // Built at start-up, before `/ready` answers at all.
    let ready = common::ready_json(&worker.base).await;
    assert_eq!(ready["checks"]["documents_clients"], "ready", "{ready}");
    let content = b"%PDF-1.7 Klageschrift".to_vec();
    let (case, party, doc) = synced(&e, &worker, &content).await;

    let c = e.xai.counters();
    assert_eq!(c.uploads, 1, "{c:?}");
    assert_eq!(c.collection_creates, 2, "{c:?}");
    assert_eq!(c.adds, 2, "one add per collection: {c:?}");
    let case_col = e.collection_of(CASE, &case);
    let party_col = e.collection_of(PARTY, &party);
    let d = e.record(DOC, &doc);
    let file = d["xaiId"].as_str().unwrap().to_owned();
    // Spooled through a temporary file and sent from it: xAI holds exactly the attachment.
    assert_eq!(e.xai.file(&file).expect("in xAI").content, content);
    assert_eq!(d["xaiSyncStatus"], "clean");
    assert_eq!(d["fileStatus"], "synced");
    assert_eq!(d["xaiSyncedHash"], sha256_hex(&content));
    let mut want = vec![case_col.clone(), party_col.clone()];
    want.sort();
    assert_eq!(strings(&d["xaiCollections"]), want);
    assert_eq!(e.xai.members(&case_col), vec![file.clone()]);
    assert_eq!(e.xai.members(&party_col), vec![file.clone()]);
    assert_eq!(e.xai.file(&file).unwrap().content, content);
    // The collection names its entity.
    assert_eq!(
        e.xai.collection(&case_col).unwrap().name,
        format!("{CASE} {case}")
    );
    assert_eq!(e.dlq_len().await, 0, "{}", e.dlq_errors().await);

    // The CLI audit agrees: exit 0.
    let (code, out, err) = e.cli(&["documents", "audit"]);
    assert_eq!(code, 0, "{out}{err}");
    e.assert_no_key_in(&worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_uploads_nothing_and_a_content_change_moves_the_collections_to_a_new_file() {
    let e = env().await;
    let worker = e.worker(&[]);
    let (case, _party, doc) = synced(&e, &worker, b"version 1").await;
    let before = e.xai.counters();
    let old_file = e.record(DOC, &doc)["xaiId"].as_str().unwrap().to_owned();

    // Rename only: not even a download (same attachment, clean record).
    let downloads = || {
        e.espo
            .controls()
            .requests_to("/api/v1/Attachment/file/")
            .len()
    };
    let downloaded = downloads();
    e.espo
        .edit(DOC, &doc, json!({"name": "Klageschrift (final).pdf"}));
    update(&worker, &doc).await;
    e.wait_idle().await;
    assert_eq!(e.xai.counters(), before, "a rename changes nothing in xAI");
    assert_eq!(downloads(), downloaded, "the cheap check needs no download");

    // New content: EspoCRM stores a new attachment.
    let att = e
        .espo
        .insert_attachment("application/pdf", b"version 2".to_vec());
    e.espo.edit(
        DOC,
        &doc,
        json!({"dokumentId": att, "fileStatus": "changed"}),
    );
    update(&worker, &doc).await;
    e.wait_idle().await;
    let after = e.xai.counters();
    assert_eq!(after.uploads, before.uploads + 1, "{after:?}");
    let d = e.record(DOC, &doc);
    let new_file = d["xaiId"].as_str().unwrap().to_owned();
    assert_ne!(new_file, old_file);
    assert_eq!(d["xaiSyncedHash"], sha256_hex(b"version 2"));
    assert_eq!(d["fileStatus"], "synced");
    let case_col = e.collection_of(CASE, &case);
    assert_eq!(e.xai.members(&case_col), vec![new_file]);
    for c in strings(&d["xaiCollections"]) {
        assert!(!e.xai.members(&c).contains(&old_file));
    }
    assert!(e.xai.file(&old_file).is_some(), "the old file is kept");
    e.assert_no_key_in(&worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_back_after_the_upload_is_retried_with_the_same_file() {
    let e = env().await;
    let worker = e.worker(&[]);
    // The document's first write to EspoCRM (the write-back after upload and adds) fails.
    e.espo
        .controls()
        .fail_next_method_on("PUT", &format!("/api/v1/{DOC}/"), 1, 500, None);
    let (_case, _party, doc) = synced(&e, &worker, b"crash me").await;

    let c = e.xai.counters();
    assert_eq!(c.uploads, 1, "the retry reused the uploaded file: {c:?}");
    assert_eq!(e.xai.file_count(), 1);
    let puts: Vec<_> = e
        .espo
        .controls()
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with(&format!("/api/v1/{DOC}/")))
        .collect();
    assert!(
        puts.len() >= 2,
        "the injected failure happened and was retried"
    );
    let d = e.record(DOC, &doc);
    assert_eq!(d["xaiSyncStatus"], "clean");
    assert!(e.xai.file(d["xaiId"].as_str().unwrap()).is_some());
    let m = metrics_text(&worker.base).await;
    assert_eq!(
        metric(
            &m,
            "bitbylaw_worker_documents_sync_runs_total",
            "outcome=\"resumed\""
        ),
        1.0,
        "{m}"
    );
    // Nothing pending any more in Redis.
    let mut r = e.redis.conn().await;
    let pending: Option<String> = r.hget(format!("bbl:doc:{doc}"), "upload").await.unwrap();
    assert_eq!(pending, None);
    e.assert_no_key_in(&worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xai_429_retry_after_is_honoured() {
    let e = env().await;
    let worker = e.worker(&[]);
    e.xai
        .files_controls()
        .fail_next_method_on("POST", "/v1/files", 1, 429, Some(2));
    let (_case, _party, doc) = synced(&e, &worker, b"rate limited").await;
    let uploads: Vec<_> = e
        .xai
        .files_controls()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/files")
        .collect();
    assert_eq!(uploads.len(), 2, "one 429, one success");
    let waited = uploads[1].at - uploads[0].at;
    assert!(
        waited >= chrono::Duration::milliseconds(1900),
        "retried after {waited:?}, before xAI's Retry-After of 2 s"
    );
    assert_eq!(e.xai.counters().uploads, 1);
    assert_eq!(e.record(DOC, &doc)["xaiSyncStatus"], "clean");
    e.assert_no_key_in(&worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_attachment_fails_permanently_naming_size_and_limit() {
    let e = env().await;
    let worker = e.worker(&[("XAI_MAX_FILE_BYTES", "1000")]);
    let case = e.insert(CASE, json!({"name": "Räumung", "status": "Offen"}));
    let doc = e.document("big.pdf", &[7u8; 5000]);
    assert!(e.espo.relate(DOC, &doc, "raeumungsklagen", &case));
    link(&worker, CASE, &case).await;
    e.wait_idle().await;

    assert_eq!(e.xai.counters().uploads, 0);
    let d = e.record(DOC, &doc);
    assert_eq!(d["xaiSyncStatus"], "failed");
    let err = d["xaiSyncError"].as_str().unwrap();
    assert!(err.contains("5000") && err.contains("1000"), "{err}");
    let dead = e.dlq_errors().await;
    assert!(dead.contains("5000") && dead.contains("1000"), "{dead}");
    assert_eq!(e.dlq_len().await, 1, "permanent: straight to the DLQ once");
    e.assert_no_key_in(&worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_leaves_every_collection_and_keeps_the_file() {
    let e = env().await;
    let worker = e.worker(&[]);
    let (case, party, doc) = synced(&e, &worker, b"to be deleted").await;
    let file = e.record(DOC, &doc)["xaiId"].as_str().unwrap().to_owned();
    e.espo.remove(DOC, &doc);
    let body = json!([{"id": doc}]).to_string();
    let (status, _) = post_event(&worker.base, "vmh.document.delete", body.as_bytes()).await;
    assert_eq!(status, 202);
    e.wait_idle().await;
    for (t, id) in [(CASE, &case), (PARTY, &party)] {
        let col = e.collection_of(t, id);
        assert!(
            e.xai.members(&col).is_empty(),
            "{t} collection still has it"
        );
    }
    assert!(e.xai.file(&file).is_some(), "the file stays");
    assert_eq!(e.dlq_len().await, 0, "{}", e.dlq_errors().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_case_loses_its_collection_and_its_documents_follow() {
    let e = env().await;
    let worker = e.worker(&[("DOCUMENTS_COLLECTION_REMOVAL", "deleted_or_closed")]);
    let (case, party, doc) = synced(&e, &worker, b"closing").await;
    let case_col = e.collection_of(CASE, &case);
    e.espo.edit(CASE, &case, json!({"status": "Abgeschlossen"}));
    link(&worker, CASE, &case).await;
    e.wait_idle().await;
    assert!(e.xai.collection(&case_col).is_none(), "collection removed");
    assert!(e.record(CASE, &case)["xaiCollectionId"].is_null());
    let party_col = e.collection_of(PARTY, &party);
    let d = e.record(DOC, &doc);
    assert_eq!(strings(&d["xaiCollections"]), vec![party_col]);
    assert_eq!(d["xaiSyncStatus"], "clean");
    assert_eq!(e.xai.counters().uploads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_finds_stale_missing_and_orphaned_and_resync_repairs() {
    let e = env().await;
    let worker = e.worker(&[]);
    let (case, _party, doc) = synced(&e, &worker, b"audited").await;
    let only = format!("--entity={CASE}:{case}");
    let (code, out, err) = e.cli(&["documents", "audit", &only]);
    assert_eq!(code, 0, "{out}{err}");

    // Changed in EspoCRM without an event reaching us: stale.
    let att = e
        .espo
        .insert_attachment("application/pdf", b"edited".to_vec());
    e.espo.edit(DOC, &doc, json!({"dokumentId": att}));
    // A second document linked without an event: missing.
    let other = e.document("Anlage.pdf", b"anlage");
    assert!(e.espo.relate(DOC, &other, "raeumungsklagen", &case));
    let (code, out, err) = e.cli(&["documents", "audit", &only]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("stale") && out.contains(&doc), "{out}");
    assert!(out.contains("missing") && out.contains(&other), "{out}");

    // `documents resync` repairs both.
    for id in [&doc, &other] {
        let (code, out, err) = e.cli(&["documents", "resync", id]);
        assert_eq!(code, 0, "{out}{err}");
    }
    e.wait_idle().await;
    let (code, out, err) = e.cli(&["documents", "audit", &only]);
    assert_eq!(code, 0, "{out}{err}");

    // Unlinked without an event: its file is orphaned in the case's collection.
    let other_file = e.record(DOC, &other)["xaiId"].as_str().unwrap().to_owned();
    e.espo.unrelate(DOC, &other, "raeumungsklagen", &case);
    let (code, out, err) = e.cli(&["documents", "audit", &only]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("orphaned") && out.contains(&other_file),
        "{out}"
    );
    let (code, out, err) = e.cli(&["documents", "resync", &other]);
    assert_eq!(code, 0, "{out}{err}");
    e.wait_idle().await;
    let (code, out, err) = e.cli(&["documents", "audit", &only]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(e.record(DOC, &other)["xaiCollections"]
        .as_array()
        .is_some_and(|a| a.is_empty()));

    let (code, _, err) = e.cli(&["documents", "audit", "--entity=Nope:1"]);
    assert_eq!(code, 2, "{err}");
    e.assert_no_key_in(&worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_add_takes_back_the_other_adds_keeps_the_file_and_marks_failed() {
    let e = env().await;
    let worker = e.worker(&[]);
    // Both collections exist before the document is linked.
    let case = e.insert(CASE, json!({"name": "Räumung", "status": "Offen"}));
    let party = e.insert(PARTY, json!({"lastName": "Mustermann"}));
    link(&worker, CASE, &case).await;
    link(&worker, PARTY, &party).await;
    e.wait_idle().await;
    let mut cols: Vec<String> = [(CASE, &case), (PARTY, &party)]
        .iter()
        .map(|(t, id)| e.collection_of(t, id))
        .collect();
    cols.sort();
    // Adds go in collection-id order: the first succeeds, the second is refused (400).
    e.xai.management_controls().fail_next_method_on(
        "POST",
        &format!("/v1/collections/{}/documents/", cols[1]),
        1,
        400,
        None,
    );
    let doc = e.document("Vertrag.pdf", b"contract");
    assert!(e.espo.relate(DOC, &doc, "raeumungsklagen", &case));
    assert!(e.espo.relate(DOC, &doc, "beteiligte", &party));
    update(&worker, &doc).await;
    e.wait_idle().await;

    let c = e.xai.counters();
    assert_eq!((c.uploads, c.adds, c.removes), (1, 1, 1), "{c:?}");
    assert!(
        e.xai.members(&cols[0]).is_empty(),
        "the first add was taken back"
    );
    assert!(e.xai.members(&cols[1]).is_empty());
    assert_eq!(e.xai.file_count(), 1, "the uploaded file stays");
    let d = e.record(DOC, &doc);
    assert_eq!(d["xaiSyncStatus"], "failed");
    assert!(d["xaiSyncError"].as_str().unwrap().contains("400"), "{d}");
    assert_eq!(e.dlq_len().await, 1, "a 400 is permanent");

    // The next event syncs with the file already uploaded.
    update(&worker, &doc).await;
    e.wait_idle().await;
    let d = e.record(DOC, &doc);
    assert_eq!(d["xaiSyncStatus"], "clean");
    assert_eq!(e.xai.counters().uploads, 1, "no second upload");
    let file = d["xaiId"].as_str().unwrap().to_owned();
    for c in &cols {
        assert_eq!(e.xai.members(c), vec![file.clone()]);
    }
    e.assert_no_key_in(&worker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlink_takes_the_document_out_of_that_collection_only() {
    let e = env().await;
    let worker = e.worker(&[]);
    let (case, party, doc) = synced(&e, &worker, b"unlinked later").await;
    let col = |t: &str, id: &str| e.collection_of(t, id);
    let (case_col, party_col) = (col(CASE, &case), col(PARTY, &party));
    let file = e.record(DOC, &doc)["xaiId"].as_str().unwrap().to_owned();
    // Unlinked in EspoCRM: the case no longer lists the document, only its collection has it.
    e.espo.unrelate(DOC, &doc, "raeumungsklagen", &case);
    let body = json!([{"id": case, "entityType": CASE}]).to_string();
    let (status, v) = post_event(&worker.base, "vmh.entity.unlink", body.as_bytes()).await;
    assert_eq!(status, 202, "{v}");
    e.wait_idle().await;
    assert!(
        e.xai.members(&case_col).is_empty(),
        "left the case's collection"
    );
    assert_eq!(e.xai.members(&party_col), vec![file.clone()]);
    let d = e.record(DOC, &doc);
    assert_eq!(strings(&d["xaiCollections"]), vec![party_col]);
    assert_eq!(d["xaiSyncStatus"], "clean");
    assert_eq!(e.xai.counters().uploads, 1);
    assert!(e.xai.file(&file).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_case_loses_its_collection_and_its_documents_follow() {
    let e = env().await;
    let worker = e.worker(&[]);
    let (case, party, doc) = synced(&e, &worker, b"case deleted").await;
    let case_col = e.collection_of(CASE, &case);
    e.espo.remove(CASE, &case);
    link(&worker, CASE, &case).await;
    e.wait_idle().await;
    assert!(e.xai.collection(&case_col).is_none(), "collection removed");
    let party_col = e.collection_of(PARTY, &party);
    let d = e.record(DOC, &doc);
    assert_eq!(strings(&d["xaiCollections"]), vec![party_col]);
    assert_eq!(d["xaiSyncStatus"], "clean");
    assert_eq!(e.dlq_len().await, 0, "{}", e.dlq_errors().await);
}

/// Issue 15 item 2: an entity's create hook gets it its collection (no document linked yet),
/// `xaiCollectionId` is written back; a body without `entityType` (EspoCRM's own create
/// webhook) finds the entity's type; a redelivery of the hook creates no second collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_create_gets_its_collection_once_even_when_redelivered() {
    let e = env().await;
    let worker = e.worker(&[]);
    let case = e.insert(
        CASE,
        json!({"name": "Räumung Hauptstraße 2", "status": "Offen"}),
    );
    let party = e.insert(PARTY, json!({"lastName": "Beispiel"}));
    let account = e.insert("Account", json!({"name": "Hausverwaltung Beispiel GmbH"}));
    let entities = [(CASE, &case), (PARTY, &party), ("Account", &account)];
    created(&worker, CASE, &case).await;
    created(&worker, PARTY, &party).await;
    // EspoCRM's own `Account.create` webhook: the record, without `entityType`.
    let body = json!([{"id": account, "name": "Hausverwaltung Beispiel GmbH"}]).to_string();
    let (status, v) = post_event(&worker.base, "vmh.entity.create", body.as_bytes()).await;
    assert_eq!(status, 202, "{v}");
    e.wait_idle().await;
    let first: Vec<String> = entities
        .iter()
        .map(|(t, id)| e.collection_of(t, id))
        .collect();
    for ((t, id), c) in entities.iter().zip(&first) {
        let col = e
            .xai
            .collection(c)
            .expect("the written-back collection exists in xAI");
        assert_eq!(col.name, format!("{t} {id}"));
        let meta: Value = serde_json::from_str(col.description.as_deref().unwrap()).unwrap();
        assert_eq!(meta, json!({"entityType": t, "entityId": id}));
    }
    assert_eq!(e.xai.collections().len(), 3);

    // EspoCRM redelivers (its job retries on timeouts): same entities, new event ids.
    for (t, id) in entities {
        created(&worker, t, id).await;
    }
    e.wait_idle().await;
    assert_eq!(
        e.xai.counters().collection_creates,
        3,
        "no second collection"
    );
    assert_eq!(e.xai.collections().len(), 3);
    for ((t, id), c) in entities.iter().zip(&first) {
        assert_eq!(&e.collection_of(t, id), c);
    }
    let m = metrics_text(&worker.base).await;
    let runs = |o: &str| {
        metric(
            &m,
            "bitbylaw_worker_documents_sync_runs_total",
            &format!("outcome=\"{o}\""),
        )
    };
    assert_eq!(runs("collection_created"), 3.0, "{m}");
    assert_eq!(runs("collection_exists"), 3.0, "{m}");
    assert_eq!(e.dlq_len().await, 0, "{}", e.dlq_errors().await);
    e.assert_no_key_in(&worker.log_text());
}

/// Crash between xAI creating the collection and anything recording it: the create is carried
/// out but its answer is lost. The retry finds the collection by its name and reuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_created_but_unrecorded_is_found_and_reused_on_retry() {
    let e = env().await;
    e.xai.lose_next_collection_create_responses(1);
    let worker = e.worker(&[]);
    let case = e.insert(
        CASE,
        json!({"name": "Räumung Ringstraße 3", "status": "Offen"}),
    );
    created(&worker, CASE, &case).await;
    e.wait_idle().await;

    let all = e.xai.collections();
    assert_eq!(all.len(), 1, "no second collection: {all:?}");
    assert_eq!(e.xai.counters().collection_creates, 1);
    let creates = e
        .xai
        .management_controls()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/collections")
        .count();
    assert_eq!(creates, 1, "the retry did not create again");
    let m = metrics_text(&worker.base).await;
    let failed = metric(
        &m,
        "bitbylaw_worker_documents_sync_runs_total",
        "outcome=\"retryable\"",
    );
    assert_eq!(failed, 1.0, "the lost answer failed the first run: {m}");
    assert_eq!(e.collection_of(CASE, &case), all[0].id);
    let mut r = e.redis.conn().await;
    let recorded: Option<String> = r.get(format!("bbl:doccol:{CASE}:{case}")).await.unwrap();
    assert_eq!(recorded.as_deref(), Some(all[0].id.as_str()));
    assert_eq!(e.dlq_len().await, 0, "{}", e.dlq_errors().await);
}

/// Crash after the collection is recorded in Redis and before EspoCRM learns it (the
/// write-back fails): the retry takes the collection from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_collection_write_back_is_retried_with_the_same_collection() {
    let e = env().await;
    let worker = e.worker(&[]);
    let case = e.insert(
        CASE,
        json!({"name": "Räumung Ringstraße 4", "status": "Offen"}),
    );
    e.espo
        .controls()
        .fail_next_method_on("PUT", &format!("/api/v1/{CASE}/"), 1, 500, None);
    created(&worker, CASE, &case).await;
    e.wait_idle().await;

    let puts = e
        .espo
        .controls()
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with(&format!("/api/v1/{CASE}/")))
        .count();
    assert!(puts >= 2, "the injected failure happened and was retried");
    let all = e.xai.collections();
    assert_eq!(all.len(), 1, "no second collection: {all:?}");
    assert_eq!(e.xai.counters().collection_creates, 1);
    assert_eq!(e.collection_of(CASE, &case), all[0].id);
    assert_eq!(e.dlq_len().await, 0, "{}", e.dlq_errors().await);
}

/// An untyped create event for an id no owning entity has: a permanent failure naming the id,
/// nothing created in xAI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untyped_create_of_an_unknown_entity_fails_permanently_and_creates_nothing() {
    let e = env().await;
    let worker = e.worker(&[]);
    let body = json!([{"id": "6745a1b2c3d4e5f99"}]).to_string();
    let (status, v) = post_event(&worker.base, "vmh.entity.create", body.as_bytes()).await;
    assert_eq!(status, 202, "{v}");
    wait_for(
        "the event dead-lettered",
        Duration::from_secs(40),
        || async { (e.dlq_len().await == 1).then_some(()) },
    )
    .await;
    let errors = e.dlq_errors().await;
    assert!(
        errors.contains("no Raeumungsklage, CBeteiligte or Account 6745a1b2c3d4e5f99"),
        "{errors}"
    );
    assert!(e.xai.collections().is_empty());
}
