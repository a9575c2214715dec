//! The audit log (read-only over HTTP; entries are appended by every mutation).

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
use serde_json::{Value, json};
use wrale_core::Timestamp;
use wrale_core::fleet::access::Action;

use super::{Access, ApiRoutes, query_pairs};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::AuditFilter;

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().route(
        Method::GET,
        "/api/v1/audit",
        Access::Action(Action::ReadFleet),
        query_audit,
    )
}

/// `GET /api/v1/audit`: filters `actor`, `target`, `action` (exact, or a prefix
/// ending in `.`), `since`, `until` (RFC 3339); `limit` (default 100, at most
/// 1000) and `before` (a `seq`, from `next_before`). Newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])),
    params(("actor" = Option<String>, Query), ("target" = Option<String>, Query), ("action" = Option<String>, Query),
           ("since" = Option<String>, Query), ("until" = Option<String>, Query), ("limit" = Option<u32>, Query), ("before" = Option<i64>, Query)),
    responses((status = 200, description = "`{items, next_before}`"), (status = 400, description = "`invalid_query`")))]
pub async fn query_audit(State(s): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let mut f = AuditFilter {
        limit: 100,
        ..Default::default()
    };
    let time = |k: &str, v: &str| {
        Timestamp::parse_rfc3339(v).map_err(|e| ApiError::invalid_query(k, format!("{k}: {e}")))
    };
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "actor" => f.actor = Some(v),
            "target" => f.target = Some(v),
            "action" => f.action = Some(v),
            "since" => f.since = Some(time(&k, &v)?),
            "until" => f.until = Some(time(&k, &v)?),
            "limit" => {
                f.limit = super::page_limit(&v)?;
            }
            "before" => {
                f.before = Some(v.parse().map_err(|_| {
                    ApiError::invalid_query("before", "before: must be a seq number")
                })?)
            }
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    format!(
                        "unknown parameter `{other}` (expected actor, target, action, since, until, limit, before)"
                    ),
                ));
            }
        }
    }
    let limit = f.limit;
    let items = s.store(move |st| st.query_audit(&f)).await?;
    let next_before = (items.len() == limit)
        .then(|| items.last().map(|e| e.seq))
        .flatten();
    Ok(Json(json!({ "items": items, "next_before": next_before })))
}
