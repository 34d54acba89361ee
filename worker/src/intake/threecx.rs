//! `GET /3cx/lookup?phone=…`: the contact lookup of our 3CX CRM template (screen pop).
//!
//! The number is normalised with the shared normaliser ([`crate::sync::contact`]) after
//! [`lookup_number`] removed what 3CX puts around it; the person comes from the Redis index when
//! warm, else from EspoCRM under `threecx.lookup_deadline_ms` (past it: "no match", so 3CX never
//! times out on us). No match, an unusable number or an unconfigured EspoCRM all answer the empty
//! answer with 200: 3CX then shows an unknown caller. The number is never logged above debug.
//!
//! Authentication: the route's `webhook_guard` (verify-only) checks the 3CX API key, strips it and
//! signs the forward like an event ([`super::signature::verify_forward`]): topic
//! [`LOOKUP_TOPIC`], and as body the path and query as forwarded, so the number is covered. A
//! request without a valid signature is 401 and nothing is looked up (personal data).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::debug;

use super::signature::{verify_forward, LOOKUP_TOPIC};
use super::AppState;
use crate::clients::espocrm::{ClientSettings, EspoCrmClient};
use crate::config::Config;
use crate::error::ApiError;
use crate::handlers::telephony::lookup::{answer, empty_answer, index_get, index_put, ui_base};
use crate::handlers::telephony::matching::{find_person, Found};
use crate::sync::contact::{normalize_phone, Region};

/// What the lookup needs, built once at start-up.
pub struct LookupService {
    crm: Option<EspoCrmClient>,
    ui_base: String,
}

impl LookupService {
    pub fn from_config(config: &Config) -> Arc<Self> {
        let crm = config
            .espocrm
            .api_base_url
            .as_ref()
            .and_then(|_| ClientSettings::from_settings(&config.espocrm).ok())
            .and_then(|s| EspoCrmClient::new(s).ok());
        let ui = config
            .threecx
            .crm_url
            .clone()
            .or_else(|| config.espocrm.api_base_url.as_deref().map(ui_base))
            .unwrap_or_default();
        Arc::new(Self { crm, ui_base: ui })
    }
}

/// The E.164 form of what 3CX put into `[Number]`: national, `+`, `00`, `+49 (0)30 …`, and the
/// forms 3CX adds around a number — a `tel:`/`sip:` URI (`sip:+4930…@pbx`), an extension suffix
/// (`030 1234567 x201`, `…;ext=201`) and the outside-line prefix configured as
/// `threecx.dial_prefix` (`0` + `0301234567`). `None`: not a number we can look up.
pub fn lookup_number(raw: &str, region: Region, dial_prefix: Option<&str>) -> Option<String> {
    let mut s = raw.trim();
    for scheme in ["tel:", "sip:", "sips:"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest;
        }
    }
    s = s.split(['@', ';']).next().unwrap_or_default().trim();
    if let Ok(n) = normalize_phone(s, region) {
        return Some(n);
    }
    if let Some(p) = dial_prefix.filter(|p| !p.is_empty()) {
        if let Some(rest) = s.strip_prefix(p) {
            if let Ok(n) = normalize_phone(rest, region) {
                return Some(n);
            }
        }
    }
    // An extension after the number: "030 1234567 x201" / "…#201" ("-201" cannot be told from
    // the number's own formatting, so it is not read as an extension).
    for sep in ["x", "X", "#"] {
        if let Some((number, ext)) = s.rsplit_once(sep) {
            if !ext.is_empty() && ext.len() <= 6 && ext.trim().bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(n) = normalize_phone(number, region) {
                    return Some(n);
                }
            }
        }
    }
    None
}

pub async fn get_lookup(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // The filter signed the request target exactly as it forwarded it.
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let verified = verify_forward(&s.config, &headers, target.as_bytes()).and_then(|f| {
        if f.topic == LOOKUP_TOPIC {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "invalid or expired gateway signature",
            ))
        }
    });
    if let Err(e) = verified {
        s.metrics.threecx_lookup("unauthorized");
        return e.into_response();
    }
    let settings = &s.config.threecx;
    let searched = q.get("phone").map(String::as_str).unwrap_or_default();
    let Some(number) = lookup_number(
        searched,
        settings.default_region,
        settings.dial_prefix.as_deref(),
    ) else {
        s.metrics.threecx_lookup("unusable_number");
        return Json(empty_answer()).into_response();
    };
    let svc = &s.lookup;
    let conn = s.queue.redis().conn().await.ok();
    if let Some(conn) = &conn {
        if let Ok(Some(m)) = index_get(conn.clone(), &number).await {
            s.metrics.threecx_lookup("hit_index");
            return Json(answer(&m, searched, &number, &svc.ui_base)).into_response();
        }
    }
    let Some(crm) = &svc.crm else {
        s.metrics.threecx_lookup("no_crm");
        return Json(empty_answer()).into_response();
    };
    let search = find_person(crm, &number, settings.default_region, None);
    match tokio::time::timeout(settings.lookup_deadline, search).await {
        Ok(Ok(Found { best: Some(m), .. })) => {
            if let Some(conn) = conn {
                let _ = index_put(conn, &number, &m).await;
            }
            s.metrics.threecx_lookup("hit_crm");
            Json(answer(&m, searched, &number, &svc.ui_base)).into_response()
        }
        Ok(Ok(_)) => {
            s.metrics.threecx_lookup("miss");
            Json(empty_answer()).into_response()
        }
        Ok(Err(e)) => {
            debug!(error = %e, "3CX lookup: EspoCRM search failed");
            s.metrics.threecx_lookup("error");
            Json(empty_answer()).into_response()
        }
        Err(_) => {
            s.metrics.threecx_lookup("deadline");
            Json(empty_answer()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        let table: [(&str, Option<&str>); 14] = [
            ("+49 30 1234567", Some("+49301234567")),
            ("030/1234567", Some("+49301234567")),
            ("0049301234567", Some("+49301234567")),
            ("+49 (0)30 1234567", Some("+49301234567")),
            ("+49301234567", Some("+49301234567")),
            ("030 1234567", Some("+49301234567")),
            ("9030 1234567", Some("+49301234567")), // outside-line prefix 9 + national
            ("tel:+49301234567", Some("+49301234567")),
            ("sip:+49301234567@ralup.my3cx.de", Some("+49301234567")),
            ("+49 30 1234567;ext=201", Some("+49301234567")),
            ("030 1234567 x201", Some("+49301234567")),
            ("201", None), // an internal extension
            ("anonymous", None),
            ("", None),
        ];
        for (raw, want) in table {
            assert_eq!(
                lookup_number(raw, Region::DE, Some("9")).as_deref(),
                want,
                "{raw}"
            );
        }
    }
}
