//! `worker/openapi.json`: valid OpenAPI 3.1, exactly the routes the router serves, and served by
//! the real binary at `GET /openapi.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use bitbylaw_worker::intake::{routes, OPENAPI_JSON};
use common::{client, RedisServer, Worker};
use serde_json::Value;

const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("worker/openapi.json is JSON")
}

/// `(path, method)` of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for key in OPERATION_KEYS {
            if item.get(key).is_some() {
                ops.insert((path.clone(), key.to_string()));
            }
        }
    }
    ops
}

/// Every `$ref` in `v` (they are all local: `#/components/...`).
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn openapi_document_is_valid_openapi_3_1() {
    // The OpenAPI Initiative's JSON Schema of 3.1 documents (schemas/v3.1/schema.json).
    let path = common::repo_root().join("worker/tests/data/openapi-3.1.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the OAS 3.1 schema compiles");
    let doc = document();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    // The schema check has teeth: an operation without responses is refused.
    let mut broken = doc.clone();
    broken["paths"]["/health"]["get"]["responses"] = Value::String("200".into());
    assert!(!validator.is_valid(&broken));

    // The schema does not resolve references; every one must point into this document.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn openapi_describes_exactly_the_routes_the_router_serves() {
    let served: BTreeSet<(String, String)> = routes(true)
        .iter()
        .map(|r| (r.path.to_string(), r.method.openapi_key().to_string()))
        .collect();
    assert_eq!(documented(&document()), served);
    // Without the intake role only operations routes remain, all of them documented.
    assert!(routes(false)
        .iter()
        .all(|r| served.contains(&(r.path.to_string(), r.method.openapi_key().to_string()))));
}

#[tokio::test]
async fn the_worker_serves_its_openapi_document_and_every_documented_operation() {
    let redis = RedisServer::start(false);
    let w = Worker::spawn(&redis.url(), &[], &[]);
    let http = client();

    let resp = http
        .get(format!("{}/openapi.json", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(resp.json::<Value>().await.unwrap(), document());

    // Each documented operation is routed (an empty request may be refused, but never as an
    // unknown route or method), and answers one of its documented status codes.
    let doc = document();
    for (path, method) in documented(&doc) {
        let url = format!("{}{path}", w.base);
        let req = match method.as_str() {
            "get" => http.get(&url),
            "post" => http.post(&url).header("content-type", "application/json"),
            other => panic!("the worker has no {other} routes"),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16().to_string();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"not_found\"") && !body.contains("\"method_not_allowed\""),
            "{method} {path} is documented but not routed: {body}"
        );
        assert!(
            doc["paths"][&path][&method]["responses"]
                .get(&status)
                .is_some(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
    }
    // Something the document does not list is not served.
    let resp = http
        .get(format!("{}/3cx/nothing-here?phone=1", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
