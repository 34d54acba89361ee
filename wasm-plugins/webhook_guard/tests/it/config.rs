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
