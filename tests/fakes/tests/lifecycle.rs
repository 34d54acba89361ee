//! Lifecycle shared by all fakes: fixed ports, stop and restart, drop, latency.

use std::time::{Duration, Instant};

use bitbylaw_fakes::advoware::{self, AdvowareConfig};
use bitbylaw_fakes::receiver;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn fixed_port_can_be_reused_after_stop() -> TestResult {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let fake = advoware::start(AdvowareConfig {
        bind,
        ..AdvowareConfig::default()
    })
    .await?;
    assert_eq!(fake.base_url(), format!("http://127.0.0.1:{port}"));
    // A keep-alive connection must not keep the server alive past stop().
    let client = reqwest::Client::new();
    client
        .get(format!("{}/api/v1/nothing", fake.base_url()))
        .send()
        .await?;
    fake.stop().await;
    let again = advoware::start(AdvowareConfig {
        bind,
        ..AdvowareConfig::default()
    })
    .await?;
    assert_eq!(
        client
            .get(format!("{}/api/v1/nothing", again.base_url()))
            .send()
            .await?
            .status(),
        404
    );
    Ok(())
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() -> TestResult {
    let target = receiver::start_ok().await?;
    let url = target.url("/x");
    drop(target);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
    Ok(())
}

#[tokio::test]
async fn latency_delays_answers() -> TestResult {
    let target = receiver::start_ok().await?;
    target.controls().set_latency(Duration::from_millis(300));
    let started = Instant::now();
    reqwest::get(target.url("/slow")).await?;
    assert!(started.elapsed() >= Duration::from_millis(300));
    Ok(())
}
