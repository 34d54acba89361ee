//! `advoware_auth.meta.json` agrees with the configuration parser: the same
//! fields, the same required fields, the same defaults, and nothing Kong 3.9
//! rejects (`"required": []`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use advoware_auth::config::{Config, KNOWN_FIELDS};
use serde_json::{json, Value};

fn schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/advoware_auth.meta.json"
    ))
    .unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    meta["config_schema"].clone()
}

fn no_empty_required(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.iter().all(|(k, x)| {
            !(k == "required" && x.as_array().is_some_and(Vec::is_empty)) && no_empty_required(x)
        }),
        Value::Array(a) => a.iter().all(no_empty_required),
        _ => true,
    }
}

#[test]
fn schema_matches_the_parser() {
    let s = schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-04/schema#");
    assert_eq!(s["type"], "object");
    assert_eq!(s["additionalProperties"], false);
    assert!(no_empty_required(&s), "Kong 3.9 rejects \"required\": []");
    let props: Vec<&str> = s["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut a = props.clone();
    let mut b = KNOWN_FIELDS.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "schema properties == parser fields");

    // Required: leaving any one out fails the parser too.
    let full = json!({
        "token_target": "security.advo-net.test:443", "kanzlei": "k", "database": "d", "user": "u",
        "app_id": "a", "password": "p", "api_key": "dGVzdA=="
    });
    let required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut req_sorted = required.clone();
    req_sorted.sort_unstable();
    let mut full_keys: Vec<&str> = full
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    full_keys.sort_unstable();
    assert_eq!(req_sorted, full_keys);
    let cfg = Config::from_value(&full).unwrap();
    for name in &required {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(*name);
        let err = Config::from_value(&v).unwrap_err().to_string();
        assert!(err.contains(&format!("`{name}` is required")), "{err}");
    }

    // Defaults in the schema are the parser's defaults.
    let parsed = serde_json::json!({
        "token_scheme": cfg.token_scheme, "token_path": cfg.token_path, "role": cfg.credentials.role, "product": cfg.credentials.product,
        "token_max_lifetime_secs": cfg.token_max_lifetime_secs, "refresh_margin_secs": cfg.refresh_margin_secs,
        "dispatch_timeout_ms": cfg.dispatch_timeout_ms, "allowed_prefixes": cfg.allowed_prefixes,
        "default_prefix": cfg.default_prefix, "shared_key_prefix": cfg.shared_key_prefix,
        "tick_period_ms": cfg.tick_period_ms, "key_names": cfg.key_names,
        "failure_retry_after_secs": cfg.failure_retry_after_secs,
        "kong_upstream_uri": cfg.kong_upstream_uri, "consumer_header": cfg.consumer_header,
        "rejected_token_min_age_secs": cfg.rejected_token_min_age_secs,
        "forced_refresh_min_interval_secs": cfg.forced_refresh_min_interval_secs,
    });
    for (name, prop) in s["properties"].as_object().unwrap() {
        if let Some(default) = prop.get("default") {
            assert_eq!(Some(default), parsed.get(name), "default of {name}");
        }
        assert!(
            prop["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name} documented"
        );
    }
}

#[test]
fn readme_example_config_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("name: advoware_auth"));
    for field in KNOWN_FIELDS {
        assert!(
            readme.contains(&format!("`{field}`")),
            "README documents `{field}`"
        );
    }
}
