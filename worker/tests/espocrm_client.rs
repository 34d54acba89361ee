//! The EspoCRM client against the stateful fake EspoCRM over loopback: paging over several
//! pages, `where` filters evaluated by the fake, get/create/update, 404, 409 duplicate, 429 with
//! `Retry-After`, 500, 400 with EspoCRM's reason, Notification create, and the API key never in
//! `Debug` or log output.
#![allow(clippy::expect_used)] // In tests a failed expect is a failed test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitbylaw_core::ids::EspoId;
use bitbylaw_fakes::espocrm::{self, EspoCrmConfig, EspoCrmFake};
use bitbylaw_worker::clients::espocrm::{
    ClientSettings, EspoCrmClient, EspoCrmError, ListQuery, NewNotification, Order, Where,
};
use bitbylaw_worker::config::{EspoCrmSettings, Secret};
use bitbylaw_worker::sync::beteiligte::{EspoBeteiligte, SyncStatus};
use serde_json::{json, Value};

const KEY: &str = "espo-test-key-7f3a9c";

async fn fake() -> EspoCrmFake {
    espocrm::start(EspoCrmConfig {
        api_key: KEY.into(),
        ..EspoCrmConfig::default()
    })
    .await
    .expect("fake")
}

fn client_for(fake: &EspoCrmFake, page_size: usize) -> EspoCrmClient {
    let settings = ClientSettings::from_settings(&EspoCrmSettings {
        api_base_url: Some(fake.api_url()),
        api_key: Some(Secret::new(KEY)),
        timeout: Some(Duration::from_secs(5)),
        page_size: Some(page_size),
    })
    .expect("settings");
    EspoCrmClient::new(settings).expect("client")
}

fn seed(fake: &EspoCrmFake, n: usize, status: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = fake
                .insert(
                    "CBeteiligte",
                    json!({"firstName": format!("P{i}"), "lastName": "Muster", "syncStatus": status}),
                )
                .expect("insert");
            r["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn list_all_follows_pages_and_sends_the_key() {
    let fake = fake().await;
    let mut ids = seed(&fake, 7, "dirty");
    let client = client_for(&fake, 3);
    let query = ListQuery::new()
        .select(["syncStatus", "lastName"])
        .order_by("firstName", Order::Asc);
    let got: Vec<Value> = client.list_all("CBeteiligte", &query).await.expect("list");
    let mut got_ids: Vec<String> = got
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(got.len(), 7);
    got_ids.sort();
    ids.sort();
    assert_eq!(got_ids, ids);
    // select honoured: firstName not returned.
    assert!(got
        .iter()
        .all(|r| r.get("firstName").is_none() && r["lastName"] == "Muster"));
    let lists = fake.controls().requests_to("/api/v1/CBeteiligte");
    let offsets: Vec<String> = lists
        .iter()
        .map(|r| r.query_param("offset").expect("offset"))
        .collect();
    assert_eq!(offsets, ["0", "3", "6"]);
    assert!(lists
        .iter()
        .all(|r| r.header("x-api-key") == Some(KEY)
            && r.query_param("maxSize").as_deref() == Some("3")));

    // limit stops early, asking only for what is still wanted.
    let first5: Vec<Value> = client
        .list_all("CBeteiligte", &ListQuery::new().limit(5))
        .await
        .expect("limited");
    assert_eq!(first5.len(), 5);
}

#[tokio::test]
async fn where_filters_select_the_records_the_sync_check_needs() {
    let fake = fake().await;
    seed(&fake, 2, "clean");
    let dirty = seed(&fake, 2, "dirty");
    let failed = seed(&fake, 1, "failed");
    seed(&fake, 1, "conflict");
    let client = client_for(&fake, 200);
    let unclean: Vec<EspoBeteiligte> = client
        .list_all(
            "CBeteiligte",
            &ListQuery::new().filter(Where::is_in(
                "syncStatus",
                ["pending_sync", "dirty", "failed"],
            )),
        )
        .await
        .expect("unclean");
    let mut got: Vec<String> = unclean
        .iter()
        .map(|r| r.id.as_ref().expect("id").to_string())
        .collect();
    got.sort();
    let mut want = [dirty, failed].concat();
    want.sort();
    assert_eq!(got, want);
    assert!(unclean
        .iter()
        .all(|r| r.sync_status.is_some_and(SyncStatus::is_unclean)));

    // Stale clean ones: advowareLastSync before a cut-off; nulls do not match `before`.
    let old = fake
        .insert("CBeteiligte", json!({"lastName": "Alt", "syncStatus": "clean", "advowareLastSync": "2026-01-01 08:00:00"}))
        .expect("old");
    fake.insert("CBeteiligte", json!({"lastName": "Neu", "syncStatus": "clean", "advowareLastSync": "2026-03-01 08:00:00"}))
        .expect("new");
    let stale: Vec<Value> = client
        .list_all(
            "CBeteiligte",
            &ListQuery::new()
                .filter(Where::equals("syncStatus", "clean"))
                .filter(Where::before("advowareLastSync", "2026-02-01 00:00:00")),
        )
        .await
        .expect("stale");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0]["id"], old["id"]);
    let without_betnr: Vec<Value> = client
        .list_all(
            "CBeteiligte",
            &ListQuery::new().filter(Where::is_null("betnr")),
        )
        .await
        .expect("isNull");
    assert_eq!(without_betnr.len(), 8);
}

#[tokio::test]
async fn get_create_update_and_404() {
    let fake = fake().await;
    let client = client_for(&fake, 200);
    let created: EspoBeteiligte = client
        .create(
            "CBeteiligte",
            &json!({"firstName": "Erika", "lastName": "Mustermann", "syncStatus": "pending_sync"}),
            false,
        )
        .await
        .expect("create");
    let id = created.id.clone().expect("id");
    assert!(created.modified_at.is_some());

    fake.clock().advance_secs(90);
    let updated: EspoBeteiligte = client
        .update(
            "CBeteiligte",
            &id,
            &json!({"betnr": 50001, "syncStatus": "clean", "advowareLastSync": "2026-03-01 10:00:00"}),
        )
        .await
        .expect("update");
    // Partial: untouched attributes stay, modifiedAt moves.
    assert_eq!(updated.first_name.as_deref(), Some("Erika"));
    assert_eq!(updated.betnr.map(|b| b.get()), Some(50001));
    assert_eq!(updated.sync_status, Some(SyncStatus::Clean));
    assert_ne!(updated.modified_at, created.modified_at);
    let put = fake.controls().last_request().expect("put");
    assert_eq!(put.method, "PUT");
    assert_eq!(
        put.json().expect("body").as_object().map(|m| m.len()),
        Some(3)
    );

    let read: EspoBeteiligte = client.get("CBeteiligte", &id).await.expect("get");
    assert_eq!(read, updated);

    let missing = EspoId::new("doesnotexist1").expect("id");
    let err = client
        .get::<Value>("CBeteiligte", &missing)
        .await
        .expect_err("404");
    assert!(err.is_not_found(), "{err}");
    assert!(!err.is_retryable());
    let err = client
        .update::<Value, _>("CBeteiligte", &missing, &json!({"titel": "Dr."}))
        .await
        .expect_err("404 on update");
    assert!(err.is_not_found());
}

#[tokio::test]
async fn duplicate_is_a_typed_409_and_can_be_skipped() {
    let fake = fake().await;
    let client = client_for(&fake, 200);
    let first: Value = client
        .create(
            "CBeteiligte",
            &json!({"firmenname": "Muster Bau", "rechtsform": "GmbH"}),
            false,
        )
        .await
        .expect("first");
    let err = client
        .create::<Value, _>("CBeteiligte", &json!({"firmenname": "muster bau"}), false)
        .await
        .expect_err("duplicate");
    match &err {
        EspoCrmError::Duplicate { duplicates, .. } => {
            assert_eq!(duplicates.len(), 1);
            assert_eq!(Some(duplicates[0].id.as_str()), first["id"].as_str());
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(err.status(), Some(409));
    assert!(!err.is_retryable());
    let second: Value = client
        .create("CBeteiligte", &json!({"firmenname": "muster bau"}), true)
        .await
        .expect("skip duplicate check");
    assert_ne!(second["id"], first["id"]);
    assert_eq!(fake.all("CBeteiligte").len(), 2);
}

#[tokio::test]
async fn rate_limit_server_errors_and_bad_requests_are_classified() {
    let fake = fake().await;
    let client = client_for(&fake, 200);
    let q = ListQuery::new();

    fake.fail_next(1, 429, Some(17));
    let err = client
        .list_all::<Value>("CBeteiligte", &q)
        .await
        .expect_err("429");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));

    fake.fail_next(1, 500, None);
    let err = client
        .list_all::<Value>("CBeteiligte", &q)
        .await
        .expect_err("500");
    assert!(err.is_retryable() && err.retry_after().is_none());
    assert_eq!(err.status(), Some(500));

    // Validation failure: permanent, EspoCRM's reason (header) and field (body) in the message.
    let err = client
        .create::<Value, _>(
            "CBeteiligte",
            &json!({"lastName": "X", "syncStatus": "bogus"}),
            false,
        )
        .await
        .expect_err("400");
    assert!(!err.is_retryable());
    assert_eq!(err.status(), Some(400));
    let text = err.to_string();
    assert!(
        text.contains("validationFailure") && text.contains("syncStatus"),
        "{text}"
    );

    // Connection refused → retryable transport error.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let settings = ClientSettings::from_settings(&EspoCrmSettings {
        api_base_url: Some(format!("http://{dead}/api/v1/")),
        api_key: Some(Secret::new(KEY)),
        timeout: Some(Duration::from_secs(2)),
        page_size: None,
    })
    .expect("settings");
    let err = EspoCrmClient::new(settings)
        .expect("client")
        .list_all::<Value>("CBeteiligte", &q)
        .await
        .expect_err("refused");
    assert!(matches!(err, EspoCrmError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn wrong_key_is_permanent_401() {
    let fake = fake().await;
    let settings = ClientSettings::from_settings(&EspoCrmSettings {
        api_base_url: Some(fake.api_url()),
        api_key: Some(Secret::new("wrong")),
        timeout: None,
        page_size: None,
    })
    .expect("settings");
    let err = EspoCrmClient::new(settings)
        .expect("client")
        .list_all::<Value>("CBeteiligte", &ListQuery::new())
        .await
        .expect_err("401");
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn notification_is_created() {
    let fake = fake().await;
    let client = client_for(&fake, 200);
    let id = client
        .create_notification(&NewNotification {
            kind: "Message".into(),
            message: "Beteiligter in Advoware gelöscht".into(),
            user_id: "admin1".into(),
            related_type: Some("CBeteiligte".into()),
            related_id: Some("abc".into()),
            data: None,
        })
        .await
        .expect("notification");
    let stored = fake.get("Notification", id.as_str()).expect("stored");
    assert_eq!(stored["type"], "Message");
    assert_eq!(stored["userId"], "admin1");
    assert_eq!(stored["relatedType"], "CBeteiligte");
    assert!(
        stored.get("data").is_none(),
        "absent optional fields are not sent"
    );
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
async fn api_key_never_in_debug_errors_or_logs() {
    // A process-wide subscriber: a scoped one misses events whose callsites other tests of this
    // binary registered first (tracing caches their interest). Every test's client output lands
    // in the buffer then, which only widens the check.
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
    let client = client_for(&fake, 2);
    seed(&fake, 3, "dirty");
    let _: Vec<Value> = client
        .list_all("CBeteiligte", &ListQuery::new())
        .await
        .expect("list");
    fake.fail_next(1, 400, None);
    let err = client
        .list_all::<Value>("CBeteiligte", &ListQuery::new())
        .await
        .expect_err("400");

    let logs = String::from_utf8(buf.0.lock().expect("buf").clone()).expect("utf8");
    assert!(
        logs.contains("EspoCRM answered"),
        "the client logs its calls: {logs}"
    );
    for text in [
        logs,
        format!("{client:?}"),
        format!("{:?}", client.settings()),
        format!("{err:?} {err}"),
    ] {
        assert!(!text.contains(KEY), "key leaked: {text}");
    }
}

/// Issue 15 item 4: attachments come back byte for byte; one over the limit is a permanent
/// error naming size and limit; a missing one is `NotFound`.
#[tokio::test]
async fn attachments_download_with_a_size_limit() {
    let fake = fake().await;
    let client = client_for(&fake, 10);
    let content: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let id: EspoId = fake
        .insert_attachment("application/pdf", content.clone())
        .parse()
        .expect("id");
    let got = client
        .download_attachment(&id, 5000)
        .await
        .expect("download");
    assert_eq!(got.bytes, content);
    assert_eq!(got.content_type, "application/pdf");
    let req = fake.controls().last_request().expect("request");
    assert_eq!(req.path, format!("/api/v1/Attachment/file/{id}"));
    assert_eq!(req.header("x-api-key"), Some(KEY));

    let err = client
        .download_attachment(&id, 4999)
        .await
        .expect_err("over the limit");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("5000") && text.contains("4999"), "{text}");

    let missing: EspoId = "0123456789abcdef0".parse().expect("id");
    let err = client
        .download_attachment(&missing, 5000)
        .await
        .expect_err("missing");
    assert!(err.is_not_found(), "{err:?}");
}
