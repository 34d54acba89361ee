//! The Advoware client against the fake Advoware (`bitbylaw-fakes`) and a real `redis-server`,
//! over loopback: token minting and sharing, refresh on 401, error classification, Termine CRUD.
#![allow(clippy::expect_used)] // In tests a failed expect is a failed test.

use std::time::Duration;

use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake};
use bitbylaw_worker::clients::advoware::{AdvowareClient, AdvowareError, ClientSettings};
use bitbylaw_worker::config::Secret;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

mod common;

use common::sides::{advoware_client as client, advoware_settings as settings_for};
use common::RedisServer;

struct Env {
    fake: AdvowareFake,
    redis: RedisServer,
}

async fn env() -> Env {
    let fake = advoware::start(AdvowareConfig::default())
        .await
        .expect("fake");
    fake.seed_demo();
    Env {
        fake,
        redis: RedisServer::start(false),
    }
}

impl Env {
    async fn client(&self) -> AdvowareClient<MultiplexedConnection> {
        client(&settings_for(&self.fake), self.redis.conn().await)
    }
}

#[tokio::test]
async fn token_minted_once_shared_via_redis_with_ttl() {
    let env = env().await;
    let a = env.client().await;
    let b = env.client().await;
    let list = a.list_mitarbeiter().await.expect("list a");
    assert!(!list.is_empty());
    b.list_mitarbeiter().await.expect("list b");
    a.list_mitarbeiter().await.expect("list a again");
    assert_eq!(
        env.fake.token_stats().succeeded,
        1,
        "{:?}",
        env.fake.last_token_error()
    );

    let key = &a.settings().token.redis_key;
    assert_eq!(key, "bbl:advoware:token:API");
    let mut conn = env.redis.conn().await;
    let token: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("get");
    assert!(token.is_some_and(|t| !t.is_empty()));
    let ttl: i64 = redis::cmd("TTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("ttl");
    // Fake lifetime 3600 s, capped at 55 min, minus the 2 min margin.
    assert!(ttl > 3000 && ttl <= 3180, "ttl {ttl}");
}

#[tokio::test]
async fn revoked_token_is_refreshed_once() {
    let env = env().await;
    let c = env.client().await;
    let other = env.client().await;
    c.list_mitarbeiter().await.expect("first");
    other
        .list_mitarbeiter()
        .await
        .expect("other holds the same token locally");
    let mut conn = env.redis.conn().await;
    let key = c.settings().token.redis_key.clone();
    let old: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("get");

    env.fake.revoke_all();
    c.list_mitarbeiter().await.expect("after revoke");
    assert_eq!(env.fake.token_stats().succeeded, 2);
    let new: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_ne!(old, new);

    // The other instance's local copy is still the revoked token: its 401 must not delete the
    // newer token from Redis (compare-and-delete), and it picks that one up instead of minting.
    other.list_mitarbeiter().await.expect("other after revoke");
    assert_eq!(
        env.fake.token_stats().succeeded,
        2,
        "other instance reused the new token"
    );
    let still: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(still, new);
}

#[tokio::test]
async fn persistent_401_does_not_loop() {
    let env = env().await;
    let c = env.client().await;
    c.list_mitarbeiter().await.expect("first");

    // The resource keeps refusing even a fresh token: one refresh, then Unauthorized.
    env.fake
        .controls()
        .fail_next_on("/api/v1/advonet", 2, 401, None);
    let before = env.fake.requests().len();
    let err = c.list_mitarbeiter().await.expect_err("401");
    assert!(matches!(err, AdvowareError::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(
        env.fake.requests().len() - before,
        3,
        "call, token, retried call"
    );
    assert_eq!(env.fake.token_stats().succeeded, 2);

    // Token endpoint refusing too: call (401) → token request (401) → Token error, no loop.
    env.fake.fail_next(10, 401, None);
    let before = env.fake.requests().len();
    let err = c.list_mitarbeiter().await.expect_err("401 everywhere");
    assert!(matches!(err, AdvowareError::Token(_)), "{err:?}");
    assert_eq!(env.fake.requests().len() - before, 2);
}

#[tokio::test]
async fn rate_limit_and_upstream_errors_are_classified() {
    let env = env().await;
    let c = env.client().await;
    c.list_mitarbeiter().await.expect("mint first");

    env.fake.controls().fail_next(1, 503, Some(7));
    let err = c.list_mitarbeiter().await.expect_err("503");
    assert!(
        matches!(err, AdvowareError::RateLimited { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    env.fake.controls().fail_next(1, 429, None);
    let err = c.list_mitarbeiter().await.expect_err("429");
    assert!(err.is_retryable() && err.retry_after().is_none());

    env.fake.controls().fail_next(1, 500, None);
    let err = c.list_mitarbeiter().await.expect_err("500");
    assert!(
        matches!(err, AdvowareError::Upstream { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());

    let err = c
        .update_termin(999_999, &json!({"text": "x"}))
        .await
        .expect_err("404");
    assert_eq!(err.status(), Some(404));
    assert!(!err.is_retryable());
    assert!(
        c.get_termin(999_999).await.expect("read").is_none(),
        "absent: an empty list"
    );

    // A 503 on the token endpoint is retryable as well.
    let fresh = client(&settings_for(&env.fake), env.redis.conn().await);
    let mut conn = env.redis.conn().await;
    let _: () = redis::cmd("DEL")
        .arg(&fresh.settings().token.redis_key)
        .query_async(&mut conn)
        .await
        .expect("del");
    env.fake.controls().fail_next(1, 503, Some(3));
    let err = fresh.list_mitarbeiter().await.expect_err("token 503");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)), "{err:?}");
    assert_eq!(env.fake.token_stats().succeeded, 1);
    assert_eq!(c.list_mitarbeiter().await.map(|_| ()).ok(), Some(()));
}

#[tokio::test]
async fn wrong_api_key_is_a_token_error_without_secrets() {
    let env = env().await;
    let mut settings = settings_for(&env.fake);
    let wrong_key = "d3JvbmctYnV0LXZhbGlkLWJhc2U2NC1rZXk="; // base64 "wrong-but-valid-base64-key"
    settings.api_key = Some(Secret::new(wrong_key));
    let c = client(&settings, env.redis.conn().await);
    let err = c.list_mitarbeiter().await.expect_err("wrong key");
    assert!(matches!(err, AdvowareError::Token(_)), "{err:?}");
    assert!(!err.is_retryable());
    let password = env.fake.config().password.clone();
    for text in [err.to_string(), format!("{err:?}"), format!("{c:?}")] {
        assert!(!text.contains(wrong_key), "{text}");
        assert!(!text.contains(&password), "{text}");
        assert!(!text.contains("wrong-but-valid"), "{text}");
    }
    assert_eq!(env.fake.token_stats().succeeded, 0);

    settings.api_key = Some(Secret::new("%%% not base64"));
    let err = ClientSettings::from_settings(&settings).expect_err("bad base64");
    assert!(!err.to_string().contains("%%%"), "{err}");
}

#[tokio::test]
async fn termin_round_trip() {
    let env = env().await;
    let c = env.client().await;
    let created = c
        .create_termin(&json!({
            "kuerzel": "SB",
            "datum": "2026-12-01T00:00:00",
            "uhrzeitVon": "09:00:00",
            "uhrzeitBis": "10:00:00",
            "text": "Mandantengespräch",
        }))
        .await
        .expect("create");
    let fr_nr = created.get("frNr").and_then(Value::as_i64).expect("frNr");

    let from = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).expect("date");
    let to = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).expect("date");
    let list = c.list_termine("sb", from, to).await.expect("list");
    assert!(list.iter().any(|t| t["frNr"] == json!(fr_nr)), "{list:?}");

    c.update_termin(fr_nr, &json!({"text": "verlegt", "uhrzeitVon": "11:00:00"}))
        .await
        .expect("update");
    let got = c.get_termin(fr_nr).await.expect("get").expect("present");
    assert_eq!(got["text"], "verlegt");
    assert_eq!(got["kuerzel"], "SB");

    let err = c
        .update_termin(fr_nr, &json!({"turnusArt": 9}))
        .await
        .expect_err("validation");
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_retryable());

    c.delete_termin(fr_nr).await.expect("delete");
    assert!(env.fake.termin(fr_nr).is_none());
    assert!(c.get_termin(fr_nr).await.expect("read").is_none(), "gone");
    assert_eq!(env.fake.token_stats().succeeded, 1);
}

/// Issue 16 item 10: a single read the configured Advoware does not serve is an
/// `EndpointMismatch` naming the setting and the path — a 405 always, a 404 when `{frnr}` is
/// only in the query (a missing appointment is an empty list there, not a 404).
#[tokio::test]
async fn a_405_or_impossible_404_on_the_single_read_is_an_endpoint_mismatch() {
    let env = env().await;
    let mut settings = settings_for(&env.fake);
    settings.paths.termin_get = "api/v1/advonet/Termine/{frnr}".into();
    let c = client(&settings, env.redis.conn().await);
    match c.get_termin(48215).await {
        Err(AdvowareError::EndpointMismatch {
            setting,
            method,
            path,
            status,
            ..
        }) => {
            assert_eq!(
                (setting, method, path.as_str(), status),
                ("termin_get", "GET", "api/v1/advonet/Termine/48215", 405)
            );
        }
        other => panic!("expected EndpointMismatch, got {other:?}"),
    }
    settings.paths.termin_get = "api/v1/advonet/Terminliste?frnr={frnr}".into();
    let c = client(&settings, env.redis.conn().await);
    let err = c.get_termin(48215).await.expect_err("404");
    assert!(
        matches!(err, AdvowareError::EndpointMismatch { status: 404, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("ADVOWARE_PATH_TERMIN_GET"),
        "{err}"
    );
    // The documented form finds it.
    let c = client(&settings_for(&env.fake), env.redis.conn().await);
    let got = c.get_termin(48215).await.expect("read").expect("present");
    assert_eq!(got["frNr"], 48215);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_of_one_client_log_in_once() {
    let env = env().await;
    let client = env.client().await;
    let calls = (0..8).map(|_| client.list_mitarbeiter());
    for result in futures::future::join_all(calls).await {
        result.expect("list");
    }
    assert_eq!(env.fake.token_stats().succeeded, 1);
}
