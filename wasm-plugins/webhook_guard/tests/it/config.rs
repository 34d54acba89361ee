//! Configuration handling inside the host, and the Kong meta file.

use proxy_wasm_host::{FilterSpec, Host};
use serde_json::{json, Value};

use crate::utils::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_fails_on_configure_with_one_line_and_no_secrets() {
    let host = Host::builder().filter(FILTER).build().unwrap();
    let bad = json!({
        "route": "Bad Route",
        "scheme": "standard-webhooks",
        "secrets": ["whsec_!!!", TOKEN_NEW, 42],
        "topic": "vmh.{x}",
        "gateway_secret": "too-short",
        "max_body_bytes": -1
    });
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &bad)])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
    let lines: Vec<_> = host
        .logs()
        .into_iter()
        .filter(|l| l.message.contains("invalid configuration"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per worker/root: {lines:?}");
    let line = &lines[0].message;
    for part in [
        "route must match",
        "secrets[0]",
        "secrets[2] must be a string",
        "path_pattern is required",
        "gateway_secret must be",
        "max_body_bytes",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    assert!(!host.log_text().contains(TOKEN_NEW));
    assert!(!host.log_text().contains("too-short"));
    // not JSON at all
    let chain = host
        .add_chain(&[FilterSpec::new(FILTER, Some("{nope"))])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
    let chain = host
        .add_chain(&[FilterSpec::new(FILTER, None)])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
}

/// Issue 16 item 1: action bindings are checked against `path_pattern` in
/// `on_configure`, every problem in the one log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_action_bindings_are_validated_on_configure() {
    let host = Host::builder().filter(FILTER).build().unwrap();
    let bad = with(
        espo_config(),
        json!({"webhooks": [
            {"id": "a", "secret": ESPO_NEW},
            {"id": "b", "secret": ESPO_OLD, "actions": ["Update", "up.date"]},
            {"id": "c", "secret": ESPO_OLD, "actions": ["update"]},
            {"id": "c", "secret": ESPO_NEW, "actions": ["delete"]}
        ]}),
    );
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &bad)])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
    let log = host.log_text();
    for part in [
        "webhooks[0].actions is required",
        "webhooks[1].actions[0]: path segment for \"action\" is not [a-z0-9_-]+",
        "webhooks[1].actions[1]",
        "webhooks[3].actions differ from an earlier entry with the same id",
    ] {
        assert!(log.contains(part), "{part} missing in {log}");
    }
    assert!(!log.contains(ESPO_NEW) && !log.contains(ESPO_OLD));
    // a second placeholder would let a bound webhook pick the entity
    let two = with(
        espo_config(),
        json!({"topic": "vmh.{entity}.{action}", "path_pattern": "/vmh/webhook/{entity}/{action}"}),
    );
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &two)])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
    assert!(host
        .log_text()
        .contains("placeholder \"entity\" is not {action}"));
    // schemes without webhook ids cannot take the topic from the path
    let hmac = with(
        hmac_config(),
        json!({"topic": "tools.{action}", "path_pattern": "/tools/{action}"}),
    );
    let chain = host
        .add_chain(&[FilterSpec::json(FILTER, &hmac)])
        .await
        .unwrap();
    assert_eq!(chain.configured, vec![false]);
    assert!(host
        .log_text()
        .contains("topic placeholders need scheme espocrm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_configuration_is_accepted() {
    let host = Host::builder().filter(FILTER).build().unwrap();
    for cfg in [
        espo_config(),
        std_config(),
        hmac_config(),
        report_call_config(),
        lookup_config(),
    ] {
        let chain = host
            .add_chain(&[FilterSpec::json(FILTER, &cfg)])
            .await
            .unwrap();
        assert!(chain.all_configured(), "{cfg}: {}", host.log_text());
    }
}

fn walk(v: &Value, f: &mut dyn FnMut(&serde_json::Map<String, Value>)) {
    match v {
        Value::Object(o) => {
            f(o);
            o.values().for_each(|c| walk(c, f));
        }
        Value::Array(a) => a.iter().for_each(|c| walk(c, f)),
        _ => {}
    }
}

#[test]
fn meta_json_is_a_kong_compatible_schema_covering_the_parser() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/webhook_guard.meta.json"
    ))
    .unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    let schema = &meta["config_schema"];
    assert_eq!(schema["type"], "object");
    walk(schema, &mut |o| {
        if let Some(r) = o.get("required") {
            assert!(
                r.as_array().is_some_and(|a| !a.is_empty()),
                "Kong rejects \"required\": []"
            );
        }
    });
    // every field the parser knows is described, and vice versa
    let props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    for cfg in [
        espo_config(),
        std_config(),
        hmac_config(),
        report_call_config(),
        lookup_config(),
    ] {
        for k in cfg.as_object().unwrap().keys() {
            assert!(props.contains(&k), "{k} not in meta.json");
        }
    }
    assert_eq!(schema["additionalProperties"], false);
}
