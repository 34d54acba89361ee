//! `POST /events`: verify, validate, split, coalesce, enqueue — and answer 202 only once Redis
//! has the jobs. Order of checks: size (413), signature (401), topic and payload (400), replay
//! (200 duplicate), Redis (503).
//!
//! Replays: a signed forward stays valid for the signature tolerance, so a captured request
//! could be sent again once its first job has started (coalescing covers only queued jobs).
//! The worker remembers each `(topic, X-Event-Id)` it enqueued until the signature can no
//! longer verify and answers a repeat like the edge answers a duplicate. The mark is written
//! *after* the enqueue, so a crash in between loses no event (the sender's retry goes through;
//! coalescing absorbs the rare concurrent twin).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tracing::{debug, warn};

use super::signature::{
    dedup_key as compute_dedup_key, header, verify_forward, Forward, HEADER_DEDUP_KEY,
};
use super::{read_body, AppState};
use crate::error::ApiError;
use crate::keys;
use crate::ops::metrics::Metrics;
use crate::queue::{Enqueued, NewJob, Queue};
use crate::topics::{self, TopicKind};
use bitbylaw_core::batch::{self, Entry, InvalidEntry};

pub async fn post_events(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept(&s, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            s.metrics.reject(e.code);
            e.into_response()
        }
    }
}

async fn accept(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = read_body(headers, body, s.config.max_body_bytes).await?;

    let Forward {
        topic,
        event_id,
        received_at,
        now,
    } = verify_forward(&s.config, headers, &body)?;

    // X-Dedup-Key is not covered by the signature; it keys coalescing of leads and calls, so the
    // worker recomputes it from the signed body (canonical JSON, same function as the filter).
    let dedup_key = compute_dedup_key(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    if let Some(sent) = header(headers, HEADER_DEDUP_KEY) {
        if !sent.eq_ignore_ascii_case(&dedup_key) {
            debug!(%sent, computed = %dedup_key, "X-Dedup-Key differs from the body's; using the computed key");
        }
    }
    let kind = match topics::kind(topic) {
        Some(TopicKind::Internal) => {
            return Err(ApiError::bad_request(
                "internal_topic",
                format!("topic {topic:?} is produced by the worker itself"),
            ))
        }
        Some(TopicKind::Test) if !s.config.test_handlers => None,
        k => k,
    }
    .ok_or_else(|| ApiError::bad_request("unknown_topic", format!("unknown topic {topic:?}")))?;

    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    let (jobs, skipped) = split(kind, value, &dedup_key)?;
    let jobs = jobs
        .into_iter()
        .map(|mut j| {
            j.event_id = Some(event_id.to_string());
            j.dedup_key = Some(dedup_key.clone());
            j.payload = crate::handlers::bankverbindungen::queued_payload(topic, j.payload);
            j
        })
        .collect::<Vec<_>>();

    s.metrics
        .received
        .get_or_create(&Metrics::topic(topic))
        .inc();
    let seen_key = keys::seen_event(topic, event_id);
    if already_seen(s, &seen_key).await? {
        debug!(%topic, %event_id, "event id seen before; answering as a duplicate");
        s.metrics.reject("replayed_event");
        return Ok((
            StatusCode::OK,
            Json(serde_json::json!({
                "status": "duplicate", "topic": topic, "event_id": event_id, "jobs": []
            })),
        )
            .into_response());
    }
    let enqueued = enqueue(&s.queue, &s.metrics, topic, jobs).await?;
    // Until the signature expires: received_at may lie up to `tolerance` in the future.
    let remember_secs = (received_at + s.config.signature_tolerance.as_secs())
        .saturating_sub(now)
        .max(1);
    remember_seen(s, &seen_key, remember_secs).await;
    let mut answer = serde_json::json!({ "topic": topic, "event_id": event_id, "jobs": enqueued });
    if !skipped.is_empty() {
        // Counted and logged only once the usable part is safely queued.
        let n = u64::try_from(skipped.len()).unwrap_or(u64::MAX);
        s.metrics
            .batch_entries_skipped
            .get_or_create(&Metrics::topic(topic))
            .inc_by(n);
        let list: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        warn!(%topic, %event_id, skipped = %list.join(", "), "unusable batch entries skipped (index:problem)");
        answer["skipped"] = skipped
            .iter()
            .map(|e| serde_json::json!({ "index": e.index, "error": e.problem.code() }))
            .collect();
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Whether `(topic, event id)` was enqueued before; Redis trouble becomes 503.
async fn already_seen(s: &AppState, key: &str) -> Result<bool, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        warn!(error = %e, "replay check failed; answering 503");
        ApiError::unavailable("the queue is unavailable; retry later")
    };
    let mut conn = s.queue.redis().conn().await.map_err(|e| unavailable(&e))?;
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut conn)
        .await
        .map_err(|e| unavailable(&e))
}

/// Marks `(topic, event id)` as enqueued for `secs`. The jobs are in Redis already, so a
/// failure here is logged, not answered: the worst case is a replay absorbed by coalescing.
async fn remember_seen(s: &AppState, key: &str, secs: u64) {
    let result = match s.queue.redis().conn().await {
        Ok(mut conn) => redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("EX")
            .arg(secs)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = result {
        warn!(%error, "could not remember the event id; a replay would be enqueued again");
    }
}

/// Enqueues and counts; Redis trouble becomes 503 + `Retry-After`.
pub async fn enqueue(
    queue: &Queue,
    metrics: &Metrics,
    topic: &str,
    jobs: Vec<NewJob>,
) -> Result<Vec<Enqueued>, ApiError> {
    let enqueued = queue.enqueue(topic, jobs).await.map_err(|e| {
        warn!(%topic, error = %e, "enqueue failed; answering 503");
        ApiError::unavailable("the queue is unavailable; retry later")
    })?;
    let label = Metrics::topic(topic);
    for e in &enqueued {
        if e.coalesced {
            metrics.coalesced.get_or_create(&label).inc();
        } else {
            metrics.enqueued.get_or_create(&label).inc();
        }
    }
    Ok(enqueued)
}

/// Turns one event body into jobs according to the topic's payload shape; also returns the
/// EspoCRM batch entries skipped by the shared batch rule (`bitbylaw_core::batch`, the
/// same rule `webhook_guard` applies): the usable entries of a batch are never lost to a
/// bad neighbour, since EspoCRM does not redeliver after a 400.
fn split(
    kind: TopicKind,
    value: Value,
    dedup_key: &str,
) -> Result<(Vec<NewJob>, Vec<InvalidEntry>), ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_payload", m);
    let one = |jobs: Vec<NewJob>| (jobs, Vec::new());
    match kind {
        TopicKind::EspoBatch => {
            let verdict = batch::check_json(&value).map_err(|e| invalid(e.to_string()))?;
            let Value::Array(items) = value else {
                return Err(invalid("expected a JSON array".into()));
            };
            let jobs = items
                .into_iter()
                .filter_map(|item| {
                    let id = Entry::of_json(&item).entity_id().ok()?.to_owned();
                    Some(NewJob::new(id, item))
                })
                .collect();
            Ok((jobs, verdict.invalid))
        }
        TopicKind::SingleObject => {
            if !value.is_object() {
                return Err(invalid("expected a JSON object".into()));
            }
            Ok(one(vec![NewJob::new(dedup_key, value)]))
        }
        TopicKind::Test => {
            if !value.is_object() {
                return Err(invalid("expected a JSON object".into()));
            }
            let entity = match value.get("id") {
                Some(Value::String(id)) if topics::valid_entity_id(id) => id.clone(),
                _ => dedup_key.to_string(),
            };
            Ok(one(vec![NewJob::new(entity, value)]))
        }
        TopicKind::Internal => Err(ApiError::bad_request("internal_topic", "internal topic")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_espo_batches() {
        let v = serde_json::json!([{"id": "a1", "name": "x"}, {"id": "a b"}, {"id": "b2"}]);
        let (jobs, skipped) = split(TopicKind::EspoBatch, v, "k").unwrap_or_default();
        assert_eq!(
            jobs.iter().map(|j| j.entity.as_str()).collect::<Vec<_>>(),
            ["a1", "b2"]
        );
        assert_eq!(
            skipped.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["1:invalid_id"]
        );
        assert!(split(
            TopicKind::EspoBatch,
            serde_json::json!([{"name": "x"}]),
            "k"
        )
        .is_err());
        assert!(split(TopicKind::EspoBatch, serde_json::json!({"id": "x"}), "k").is_err());
        assert!(split(TopicKind::EspoBatch, serde_json::json!([]), "k").is_err());
        assert!(split(
            TopicKind::EspoBatch,
            serde_json::json!([{"id": "a b"}]),
            "k"
        )
        .is_err());
    }

    #[test]
    fn single_objects_key_on_dedup() {
        let (jobs, _) = split(
            TopicKind::SingleObject,
            serde_json::json!({"CallType": "Inbound"}),
            "abc",
        )
        .unwrap_or_default();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].entity, "abc");
        assert!(split(TopicKind::SingleObject, serde_json::json!([1]), "abc").is_err());
    }
}
