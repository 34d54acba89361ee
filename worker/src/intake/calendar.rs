//! `POST /calendar/sync {"kuerzel": "ABC" | "ALL", "full_content": bool?}`: the manual calendar
//! trigger of the old system. One employee → a `calendar.sync.employee` job (coalesced per
//! Kürzel); `ALL` → one `calendar.sync.all` job. `full_content` is passed through; the handler
//! lets it narrow (busy blocks only) but never widen the configured `CALENDAR_BUSY_ONLY` list.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::events::enqueue;
use super::{read_body, AppState};
use crate::error::ApiError;
use crate::queue::NewJob;
use crate::topics;
use bitbylaw_core::ids::Kuerzel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSyncRequest {
    pub kuerzel: String,
    #[serde(default)]
    pub full_content: Option<bool>,
}

/// A Kürzel is a short employee abbreviation; it ends up in keys and job entities. The rule is
/// the one of [`Kuerzel`], so a trigger accepted here never fails later in the handler.
pub fn valid_kuerzel(k: &str) -> bool {
    Kuerzel::new(k).is_ok()
}

/// The job a calendar trigger becomes: `(topic, job)`. Shared with `sync calendar` on the CLI.
pub fn calendar_job(req: &CalendarSyncRequest) -> Result<(&'static str, NewJob), ApiError> {
    let mut payload = serde_json::Map::new();
    if let Some(fc) = req.full_content {
        payload.insert("full_content".into(), fc.into());
    }
    payload.insert("trigger".into(), "manual".into());
    if req.kuerzel.eq_ignore_ascii_case("ALL") {
        return Ok((
            topics::CALENDAR_SYNC_ALL,
            NewJob::new("all", payload.into()),
        ));
    }
    if !valid_kuerzel(&req.kuerzel) {
        return Err(ApiError::bad_request(
            "invalid_kuerzel",
            "kuerzel must be 1-16 letters or digits, or \"ALL\"",
        ));
    }
    payload.insert("kuerzel".into(), req.kuerzel.clone().into());
    Ok((
        topics::CALENDAR_SYNC_EMPLOYEE,
        NewJob::new(req.kuerzel.clone(), payload.into()),
    ))
}

pub async fn post_calendar_sync(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        super::check_admin_token(&s.config, &headers)?;
        let body = read_body(&headers, body, s.config.max_body_bytes).await?;
        let req: CalendarSyncRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_payload",
                format!("expected {{\"kuerzel\": \"ABC\"|\"ALL\", \"full_content\": bool?}}: {e}"),
            )
        })?;
        let (topic, job) = calendar_job(&req)?;
        let jobs = enqueue(&s.queue, &s.metrics, topic, vec![job]).await?;
        Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "topic": topic, "jobs": jobs })),
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        s.metrics.reject(e.code);
        e.into_response()
    })
}
