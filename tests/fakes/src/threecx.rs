//! The requests 3CX's CRM integration template makes to our endpoints.
//!
//! 3CX has no generic outgoing webhooks; its server-side CRM template calls us: a contact lookup
//! `GET <url>?phone=<number>` and, at call end, the `ReportCall` journaling `POST` with the call's
//! variables as JSON. A static API key travels in a header named in the template (`x-api-key`).

use serde_json::Value;

/// Header name our template uses for the API key.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// POSTs a `ReportCall` body (see `shared/examples/3cx-reportcall.json`) with the key header.
pub async fn report_call(
    url: &str,
    api_key_header: &str,
    key: &str,
    call: &Value,
) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(url)
        .header(api_key_header, key)
        .header("content-type", "application/json")
        .body(call.to_string())
        .send()
        .await
}

/// Contact lookup as the template performs it: `GET {url}?phone={phone}` with `x-api-key`.
pub async fn lookup(url: &str, key: &str, phone: &str) -> reqwest::Result<reqwest::Response> {
    lookup_with_header(url, DEFAULT_API_KEY_HEADER, key, phone).await
}

/// [`lookup`] with a custom key header name.
pub async fn lookup_with_header(
    url: &str,
    api_key_header: &str,
    key: &str,
    phone: &str,
) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .get(url)
        .query(&[("phone", phone)])
        .header(api_key_header, key)
        .send()
        .await
}
