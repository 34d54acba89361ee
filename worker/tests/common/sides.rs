//! Both sides of the calendar sync for in-process tests and the benchmark: a real
//! `redis-server`, the Advoware and Google fakes, and the real clients pointed at them.

use std::sync::Arc;

use bitbylaw_fakes::advoware::{self, AdvowareConfig, AdvowareFake};
use bitbylaw_fakes::google_calendar::{self, GoogleCalendarConfig, GoogleCalendarFake};
use bitbylaw_fakes::redis_server::RedisServer;
use bitbylaw_worker::clients::advoware::{AdvowareClient, ClientSettings};
use bitbylaw_worker::clients::google::GoogleCalendarClient;
use bitbylaw_worker::clients::http::ReqwestTransport;
use bitbylaw_worker::config::{AdvowareSettings, GoogleSettings, Secret};
use bitbylaw_worker::ratelimit::TokenBucket;
use redis::aio::MultiplexedConnection;

pub type Aw = AdvowareClient<MultiplexedConnection>;
pub type Gc = GoogleCalendarClient<MultiplexedConnection>;

/// The worker's Advoware settings for a running fake.
pub fn advoware_settings(fake: &AdvowareFake) -> AdvowareSettings {
    let c = fake.config();
    AdvowareSettings {
        api_base_url: Some(fake.api_base_url()),
        security_gateway_url: Some(fake.security_gateway_url()),
        kanzlei: Some(c.kanzlei.clone()),
        database: Some(c.database.clone()),
        user: Some(c.user.clone()),
        role: Some(u32::try_from(c.role).expect("role")),
        product: Some(u32::try_from(c.product).expect("product")),
        app_id: Some(c.app_id.clone()),
        password: Some(Secret::new(c.password.clone())),
        api_key: Some(Secret::new(c.api_key_b64.clone())),
        paths: Default::default(),
    }
}

/// The real Advoware client (reqwest transport, token in Redis) for `settings`.
pub fn advoware_client(settings: &AdvowareSettings, conn: MultiplexedConnection) -> Aw {
    AdvowareClient::new(
        ClientSettings::from_settings(settings).expect("advoware settings"),
        conn,
        Arc::new(ReqwestTransport::from_client(reqwest::Client::new())),
    )
}

/// The real EspoCRM client for a running fake.
pub fn espo_client(
    fake: &bitbylaw_fakes::espocrm::EspoCrmFake,
) -> bitbylaw_worker::clients::espocrm::EspoCrmClient {
    use bitbylaw_worker::clients::espocrm::{ClientSettings, EspoCrmClient};
    EspoCrmClient::new(
        ClientSettings::from_settings(&bitbylaw_worker::config::EspoCrmSettings {
            api_base_url: Some(fake.api_url()),
            api_key: Some(Secret::new(fake.config().api_key.clone())),
            timeout: Some(std::time::Duration::from_secs(5)),
            page_size: None,
        })
        .expect("espocrm settings"),
    )
    .expect("espocrm client")
}

/// Redis, both fakes and both real clients.
pub struct Sides {
    pub redis: RedisServer,
    pub advoware: AdvowareFake,
    pub google: GoogleCalendarFake,
    pub conn: MultiplexedConnection,
    pub aw: Arc<Aw>,
    pub gc: Arc<Gc>,
}

impl Sides {
    /// Starts everything; Google calls share a budget of `requests_per_minute` in Redis and
    /// use the fake's static token (the service-account flow has its own tests).
    pub async fn start(requests_per_minute: u32) -> Sides {
        let redis = RedisServer::start(false);
        let advoware = advoware::start(AdvowareConfig::default())
            .await
            .expect("advoware fake");
        let google = google_calendar::start(GoogleCalendarConfig::default())
            .await
            .expect("google fake");
        let conn = redis::Client::open(redis.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        let aw = advoware_client(&advoware_settings(&advoware), conn.clone());
        let gs = GoogleSettings {
            api_base_url: google.api_base_url(),
            root_url: google.root_url(),
            requests_per_minute,
            rate_limit_retries: 5,
            ..GoogleSettings::default()
        };
        let gc = GoogleCalendarClient::with_static_token(
            &gs,
            TokenBucket::new(conn.clone(), requests_per_minute),
            "fake-static-google-token".into(),
        )
        .expect("google client")
        .with_backoff_base(std::time::Duration::from_millis(20));
        Sides {
            redis,
            advoware,
            google,
            conn,
            aw: Arc::new(aw),
            gc: Arc::new(gc),
        }
    }
}

/// A valid Kürzel.
pub fn kz(k: &str) -> bitbylaw_core::ids::Kuerzel {
    bitbylaw_core::ids::Kuerzel::new(k).expect("valid Kürzel")
}

/// Today (Europe/Berlin) plus `offset` days: seeds stay inside the sync window on any date.
pub fn day(offset: i64) -> chrono::NaiveDate {
    let today = bitbylaw_worker::handlers::calendar::berlin_today();
    if offset >= 0 {
        today + chrono::Days::new(offset.unsigned_abs())
    } else {
        today - chrono::Days::new(offset.unsigned_abs())
    }
}

/// An Advoware date value (`YYYY-MM-DDT00:00:00`).
pub fn adate(d: chrono::NaiveDate) -> String {
    format!("{}T00:00:00", d.format("%Y-%m-%d"))
}
