//! Shared test helpers: an independent implementation of every MAC the
//! senders and the gateway compute (RustCrypto `hmac`/`sha2` directly, not
//! `bitbylaw-core`), route configurations, and a host fixture that runs the
//! built `webhook_guard.wasm`.

#![allow(dead_code)]

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use proxy_wasm_host::{
    BodyMode, Chain, Clock, FilterSpec, Host, HttpRequest, HttpResponse, Upstream, UpstreamRequest,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const FILTER: &str = "webhook_guard";
/// Test clock start (2026-11-23T13:22:00Z), unix seconds.
pub const T0: u64 = 1_795_442_520;
pub const GATEWAY_SECRET: &str = "gw-secret-for-tests-0123456789";

pub const ESPO_ID: &str = "6745a1b2c3d4e5f6a";
pub const ESPO_OLD: &str = "espo-secret-OLD-9f8e7d";
pub const ESPO_NEW: &str = "espo-secret-NEW-1a2b3c";
/// The route's delete webhook: bound to `delete` only, while [`ESPO_ID`]
/// delivers `create` and `update`.
pub const ESPO_DELETE_ID: &str = "6745a1b2c3d4e5f6d";
pub const ESPO_DELETE_SECRET: &str = "espo-secret-DEL-4d5e6f";
/// whsec_ + base64("vermieterhelden-key-old-0001") / (…new…)
pub const WHSEC_OLD: &str = "whsec_dmVybWlldGVyaGVsZGVuLWtleS1vbGQtMDAwMQ==";
pub const WHSEC_NEW: &str = "whsec_dmVybWlldGVyaGVsZGVuLWtleS1uZXctMDAwMQ==";
pub const HMAC_KEY_OLD: &str = "hmac-key-OLD-5566";
pub const HMAC_KEY_NEW: &str = "hmac-key-NEW-7788";
pub const TOKEN_OLD: &str = "3cx-token-OLD-abcdef012345";
pub const TOKEN_NEW: &str = "3cx-token-NEW-fedcba987654";

/// Every secret above (for "never in the logs" checks).
pub const ALL_SECRETS: &[&str] = &[
    GATEWAY_SECRET,
    ESPO_OLD,
    ESPO_NEW,
    ESPO_DELETE_SECRET,
    WHSEC_OLD,
    WHSEC_NEW,
    "dmVybWlldGVyaGVsZGVuLWtleS1",
    "vermieterhelden-key",
    HMAC_KEY_OLD,
    HMAC_KEY_NEW,
    TOKEN_OLD,
    TOKEN_NEW,
];

/// A real-looking EspoCRM batch (shared/examples/espocrm-webhook-cbeteiligte-update.http).
pub const ESPO_BATCH: &str = r#"[{"id":"6745a1b2c3d4e5f60","name":"Max Mustermann","modifiedAt":"2026-11-23 13:58:02","syncStatus":"dirty"},{"id":"6745a1b2c3d4e5f61","lastName":"Beispiel GmbH","modifiedAt":"2026-11-23 13:58:04"}]"#;

pub const LEAD: &str = r#"{"type":"lead.created","timestamp":"2026-11-23T14:02:00Z","data":{"leadType":"vermieter","firstName":"Erika","lastName":"Musterfrau","email":"Erika.Musterfrau@Example.org","phone":"0511 / 123 45-67","message":"Mieter zahlt seit 3 Monaten keine Miete.","postalCode":"30159","source":"vermieterhelden.de/kontakt","utm":{"campaign":"herbst"}}}"#;

pub const REPORT_CALL: &str = r#"{"CallType":"Inbound","CallDirection":"Inbound","Number":"+4951112345","Name":"Max Mustermann","EntityId":"6745a1b2c3d4e5f60","Agent":"201","AgentEmail":"sb@example-kanzlei.de","Duration":"00:04:12","DateTime":"2026-11-23 14:02:00","CallStartTimeUTC":"2026-11-23T13:02:00Z","CallEstablishedTimeUTC":"2026-11-23T13:02:09Z","CallEndTimeUTC":"2026-11-23T13:06:21Z"}"#;

// ---------------------------------------------------------------------------
// Independent MACs

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// EspoCRM ≥ 9: `base64(id ":" hex(hmac))`.
pub fn espo_signature(id: &str, secret: &str, body: &[u8]) -> String {
    STANDARD.encode(format!(
        "{id}:{}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    ))
}

/// Legacy EspoCRM: `base64(id ":" raw hmac)`.
pub fn espo_legacy(id: &str, secret: &str, body: &[u8]) -> String {
    let mut raw = format!("{id}:").into_bytes();
    raw.extend_from_slice(&hmac_sha256(secret.as_bytes(), body));
    STANDARD.encode(raw)
}

/// Standard Webhooks `v1,<base64>` for a `whsec_` secret.
pub fn std_signature(whsec: &str, id: &str, ts: u64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(whsec.trim_start_matches("whsec_"))
        .expect("test secret is base64");
    let mut msg = format!("{id}.{ts}.").into_bytes();
    msg.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &msg)))
}

/// The X-Gateway-Signature the worker expects, computed from the wire format
/// documented in core/src/gateway.rs.
pub fn gateway_signature(
    secret: &str,
    topic: &str,
    event_id: &str,
    received_at: &str,
    body: &[u8],
) -> String {
    let mut msg = format!("bitbylaw-gateway-v1\n{topic}\n{event_id}\n{received_at}\n").into_bytes();
    msg.extend_from_slice(body);
    format!("v1={}", hex::encode(hmac_sha256(secret.as_bytes(), &msg)))
}

// ---------------------------------------------------------------------------
// Configurations

pub fn espo_config() -> Value {
    json!({
        "route": "espocrm_beteiligte",
        "scheme": "espocrm",
        "webhooks": [
            {"id": ESPO_ID, "secret": ESPO_OLD, "actions": ["create", "update"]},
            {"id": ESPO_ID, "secret": ESPO_NEW, "actions": ["create", "update"]},
            {"id": ESPO_DELETE_ID, "secret": ESPO_DELETE_SECRET, "actions": ["delete"]}
        ],
        "topic": "vmh.beteiligte.{action}",
        "path_pattern": "/vmh/webhook/beteiligte/{action}",
        "gateway_secret": GATEWAY_SECRET,
        "forward_path": "/events"
    })
}

pub fn std_config() -> Value {
    json!({
        "route": "vermieterhelden",
        "scheme": "standard-webhooks",
        "secrets": [WHSEC_OLD, WHSEC_NEW],
        "topic": "leads.vermieterhelden.received",
        "gateway_secret": GATEWAY_SECRET
    })
}

pub fn hmac_config() -> Value {
    json!({
        "route": "generic_hmac",
        "scheme": "hmac-sha256",
        "signature_header": "X-Hub-Signature-256",
        "signature_prefix": "sha256=",
        "signature_encoding": "hex",
        "secrets": [HMAC_KEY_OLD, HMAC_KEY_NEW],
        "topic": "tools.generic.received",
        "payload": "any",
        "gateway_secret": GATEWAY_SECRET
    })
}

pub fn report_call_config() -> Value {
    json!({
        "route": "threecx_report",
        "scheme": "shared-token",
        "token_header": "x-api-key",
        "secrets": [TOKEN_OLD, TOKEN_NEW],
        "topic": "telephony.call.reported",
        "gateway_secret": GATEWAY_SECRET
    })
}

pub fn lookup_config() -> Value {
    json!({
        "route": "threecx_lookup",
        "mode": "verify-only",
        "scheme": "shared-token",
        "token_header": "x-api-key",
        "secrets": [TOKEN_OLD, TOKEN_NEW],
        "topic": LOOKUP_TOPIC,
        "gateway_secret": GATEWAY_SECRET
    })
}

/// The fixed topic verify-only forwards of [`lookup_config`] are signed under.
pub const LOOKUP_TOPIC: &str = "threecx.lookup";

/// A verify-only forward carries exactly one of each gateway header, signed
/// over `LOOKUP_TOPIC` and the forwarded path and query; no dedup key.
pub fn assert_signed_lookup(path: &str, headers: &[(String, String)]) {
    let one = |h: &str| {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(h))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(values.len(), 1, "exactly one {h} upstream: {values:?}");
        values[0]
    };
    assert_eq!(one("x-event-topic"), LOOKUP_TOPIC);
    let id = one("x-event-id");
    assert!(is_uuid_v4(id), "{id}");
    let at = one("x-received-at");
    assert_eq!(
        one("x-gateway-signature"),
        gateway_signature(GATEWAY_SECRET, LOOKUP_TOPIC, id, at, path.as_bytes()),
        "signature over the forwarded path and query"
    );
    assert!(
        headers
            .iter()
            .all(|(k, v)| !k.eq_ignore_ascii_case("x-dedup-key") || v.is_empty()),
        "no dedup key on a verify-only forward"
    );
}

pub fn with(mut base: Value, patch: Value) -> Value {
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

// ---------------------------------------------------------------------------
// Host fixture

pub use proxy_wasm_host::gateway::DEPLOYED_CLIENT_BODY_BUFFER_SIZE as DEPLOYED_BODY_BUFFER;

pub struct Fixture {
    pub host: Host,
    pub chain: Chain,
}

impl Fixture {
    pub async fn new(config: Value) -> Fixture {
        Self::with_mode(config, BodyMode::Kong).await
    }

    pub async fn with_mode(config: Value, mode: BodyMode) -> Fixture {
        Self::build(config, mode, DEPLOYED_BODY_BUFFER).await
    }

    /// A host with nginx's `client_body_buffer_size` set to `bytes`.
    pub async fn with_body_buffer(config: Value, bytes: usize) -> Fixture {
        Self::build(config, BodyMode::Kong, bytes).await
    }

    async fn build(config: Value, mode: BodyMode, body_buffer: usize) -> Fixture {
        let host = Host::builder()
            .filter(FILTER)
            .workers(2)
            .clock(Clock::manual_at(T0 * 1_000_000_000))
            .body_mode(mode)
            .client_body_buffer_size(body_buffer)
            .build()
            .expect("build the filter first: cargo build --release --target wasm32-wasip1 -p webhook-guard");
        let chain = host
            .add_chain(&[FilterSpec::json(FILTER, &config)])
            .await
            .expect("chain");
        assert!(
            chain.all_configured(),
            "configuration rejected: {}",
            host.log_text()
        );
        Fixture { host, chain }
    }

    pub async fn send(&self, req: HttpRequest) -> HttpResponse {
        self.send_on(0, req).await
    }

    pub async fn send_on(&self, worker: usize, req: HttpRequest) -> HttpResponse {
        self.host
            .request(
                worker,
                &self.chain,
                req,
                Upstream::fixed(202, "{\"queued\":true}"),
            )
            .await
            .expect("request")
    }

    pub async fn advance(&self, secs: u64) {
        self.host.advance_clock(Duration::from_secs(secs)).await;
    }

    pub fn counter(&self, route: &str, outcome: &str) -> u64 {
        self.host
            .counter(&format!("pw:webhook_guard:{route}_{outcome}"))
    }

    pub fn assert_no_secrets_logged(&self) {
        let logs = self.host.log_text();
        for s in ALL_SECRETS {
            assert!(!logs.contains(s), "secret {s:?} leaked into logs:\n{logs}");
        }
    }
}

pub fn espo_request(path: &str, body: &[u8], secret: &str) -> HttpRequest {
    HttpRequest::post(path, body.to_vec())
        .header("content-type", "application/json")
        .header("Signature", &espo_signature(ESPO_ID, secret, body))
}

pub fn std_request(body: &[u8], id: &str, ts: u64, whsec: &str) -> HttpRequest {
    HttpRequest::post("/api/leads/vermieterhelden", body.to_vec())
        .header("content-type", "application/json; charset=utf-8")
        .header("webhook-id", id)
        .header("webhook-timestamp", &ts.to_string())
        .header("webhook-signature", &std_signature(whsec, id, ts, body))
}

/// A local JSON error with the given status and code, nothing upstream.
pub fn assert_error(resp: &HttpResponse, status: u16, code: &str) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    assert!(resp.local_response, "expected a local response");
    assert!(resp.upstream_request.is_none(), "nothing may go upstream");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp
        .json()
        .unwrap_or_else(|| panic!("JSON error body, got {:?}", resp.text()));
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].is_string(), "{v}");
}

/// The request went upstream as an accepted event; checks every gateway
/// header with the independent implementation and returns it.
pub fn assert_forwarded(resp: &HttpResponse, topic: &str, body: &[u8]) -> UpstreamRequest {
    assert_eq!(resp.status, 202, "body: {}", resp.text());
    let up = resp.upstream_request.clone().expect("forwarded upstream");
    assert_eq!(up.method, "POST");
    assert_eq!(up.path, "/events");
    assert_eq!(up.body, body, "body must be forwarded untouched");
    assert_eq!(up.header("x-event-topic"), Some(topic));
    let id = up.header("x-event-id").expect("x-event-id");
    let at = up.header("x-received-at").expect("x-received-at");
    assert!(at.parse::<u64>().is_ok(), "{at}");
    let key = up.header("x-dedup-key").expect("x-dedup-key");
    assert_eq!(key.len(), 64);
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let sig = up
        .header("x-gateway-signature")
        .expect("x-gateway-signature");
    assert_eq!(
        sig,
        gateway_signature(GATEWAY_SECRET, topic, id, at, body),
        "gateway signature"
    );
    for h in [
        "signature",
        "x-signature",
        "webhook-signature",
        "webhook-id",
        "webhook-timestamp",
        "x-api-key",
        "x-hub-signature-256",
    ] {
        // Blanked, not removed: in ngx_wasm_module a removed request header
        // is still proxied with its value (the host reproduces that).
        let values: Vec<&str> = up
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(h))
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(
            values.len() <= 1 && values.iter().all(|v| v.is_empty()),
            "sender header {h} must reach the upstream without its value: {values:?}"
        );
    }
    for h in [
        "x-event-topic",
        "x-event-id",
        "x-dedup-key",
        "x-received-at",
        "x-gateway-signature",
    ] {
        let n = up
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(h))
            .count();
        assert_eq!(n, 1, "exactly one {h} upstream");
    }
    up
}

pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.bytes()
            .filter(|c| *c != b'-')
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}
