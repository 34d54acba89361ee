//! `POST /3cx/call {"lead_id" | "phone", "extension"}` and `GET /3cx/call/{id}`: outbound calls
//! through the 3CX Call Control API ([`crate::handlers::telephony::outbound`] does the work).
//!
//! Reached through Kong's key-auth route `/3cx/call` (consumers in the `telephony` ACL group);
//! with `WORKER_ADMIN_TOKEN` set the worker also wants that bearer, like `POST /calendar/sync`.
//! An optional `Idempotency-Key` header makes a repeated request answer the first call instead
//! of placing a second one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{check_admin_token, read_body, AppState};
use crate::error::ApiError;
use crate::handlers::telephony::outbound::{self, CallRequest, Refused};

async fn redis(s: &AppState) -> Result<redis::aio::ConnectionManager, ApiError> {
    s.queue
        .redis()
        .conn()
        .await
        .map_err(|e| ApiError::unavailable(format!("redis: {e}")))
}

pub async fn post_call(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        check_admin_token(&s.config, &headers).map_err(|e| Refused {
            error: e,
            outcome: "unauthorized_request",
        })?;
        let body = read_body(&headers, body, s.config.max_body_bytes).await?;
        let req: CallRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_payload",
                format!(
                    "expected {{\"lead_id\": \"…\" | \"phone\": \"…\", \"extension\": \"201\"}}: {e}"
                ),
            )
        })?;
        let key = headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        let conn = redis(&s).await?;
        outbound::place(&s.outbound, &s.config.threecx, conn, &req, key).await
    }
    .await;
    match result {
        Ok((status, body, outcome)) => {
            s.metrics.threecx_call(outcome);
            (status, Json(body)).into_response()
        }
        Err(r) => {
            s.metrics.threecx_call(r.outcome);
            r.error.into_response()
        }
    }
}

pub async fn get_call(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        check_admin_token(&s.config, &headers)?;
        let conn = redis(&s).await?;
        outbound::status(&s.outbound, conn, &id).await
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
