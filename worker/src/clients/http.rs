//! The production [`HttpTransport`]: `reqwest` with rustls and the system's root certificates
//! (HTTPS to Advoware's security gateway), plain HTTP allowed for loopback fakes.

use std::time::Duration;

use futures::future::BoxFuture;

use super::advoware::{HttpRequest, HttpResponse, HttpTransport, Method};

/// `reqwest::Client` behind the transport seam. Errors are reqwest's messages, which name the
/// URL but never headers or bodies, so they carry no secrets.
#[derive(Debug, Clone)]
pub struct ReqwestTransport(reqwest::Client);

impl ReqwestTransport {
    /// A client with connect and overall timeouts, so a hanging upstream turns into a
    /// retryable error instead of a stuck job.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build()?;
        Ok(Self(client))
    }

    /// Wraps an existing client (tests share one).
    pub fn from_client(client: reqwest::Client) -> Self {
        Self(client)
    }
}

impl HttpTransport for ReqwestTransport {
    fn send(&self, r: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, String>> {
        Box::pin(async move {
            let method = match r.method {
                Method::Get => reqwest::Method::GET,
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
                Method::Delete => reqwest::Method::DELETE,
            };
            let mut builder = self.0.request(method, &r.url);
            for (k, v) in &r.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            if let Some(body) = r.body {
                builder = builder.body(body);
            }
            let resp = builder.send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
            Ok(HttpResponse {
                status,
                retry_after,
                body,
            })
        })
    }
}

/// The headers of an authorised JSON API request: `Authorization: Bearer …`, `Accept`, and
/// `Content-Type` when a body is sent (Advoware and 3CX Call Control alike).
pub fn bearer_json_headers(token: &str, json_body: bool) -> Vec<(String, String)> {
    let mut headers = vec![
        ("Authorization".to_owned(), format!("Bearer {token}")),
        ("Accept".to_owned(), "application/json".to_owned()),
    ];
    if json_body {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    headers
}
