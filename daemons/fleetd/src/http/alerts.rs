//! Alerts: raise, acknowledge, clear, list with filters.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use wrale_core::DeviceId;
use wrale_core::fleet::access::Action;
use wrale_core::model::Severity;

use super::{Access, ApiRoutes, query_pairs};
use crate::auth::Principal;
use crate::error::{ApiError, ApiJson};
use crate::state::{AppState, EventKind, now};
use crate::store::{AlertFilter, AlertRecord, AlertState, NewAlert};

pub(super) fn routes() -> ApiRoutes {
    use Access::Action as A;
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/v1/alerts",
            A(Action::ReadFleet),
            list_alerts,
        )
        .route(
            Method::POST,
            "/api/v1/alerts",
            A(Action::ManageAlerts),
            raise_alert,
        )
        .route(
            Method::POST,
            "/api/v1/alerts/{id}/ack",
            A(Action::ManageAlerts),
            ack_alert,
        )
        .route(
            Method::POST,
            "/api/v1/alerts/{id}/clear",
            A(Action::ManageAlerts),
            clear_alert,
        )
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    param: &str,
    v: &str,
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(v.to_owned())).map_err(|_| {
        ApiError::invalid_query(param, format!("{param}: {v:?} is not one of {expected}"))
    })
}

/// `GET /api/v1/alerts`: filters `state` (`raised`, `acked`, `cleared`, `active`),
/// `device`, `severity`; `limit` (default 100, at most 1000), `before` (an id).
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", security(("bearer" = [])),
    params(("state" = Option<String>, Query), ("device" = Option<String>, Query), ("severity" = Option<String>, Query),
           ("limit" = Option<u32>, Query), ("before" = Option<i64>, Query)),
    responses((status = 200, description = "`{items, next_before}`, newest first")))]
pub async fn list_alerts(
    State(s): State<AppState>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut f = AlertFilter {
        limit: 100,
        ..Default::default()
    };
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "state" if v == "active" => f.active_only = true,
            "state" => f.state = Some(parse_enum(&k, &v, "raised, acked, cleared, active")?),
            "device" => {
                f.device = Some(
                    DeviceId::new(v.as_str())
                        .map_err(|e| ApiError::invalid_query("device", e.to_string()))?,
                )
            }
            "severity" => {
                f.severity = Some(parse_enum::<Severity>(&k, &v, "info, warning, critical")?)
            }
            "limit" => {
                f.limit = super::page_limit(&v)?;
            }
            "before" => {
                f.before = Some(v.parse().map_err(|_| {
                    ApiError::invalid_query("before", "before: must be an alert id")
                })?)
            }
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    format!(
                        "unknown parameter `{other}` (expected state, device, severity, limit, before)"
                    ),
                ));
            }
        }
    }
    let limit = f.limit;
    let items = s.store(move |st| st.list_alerts(&f)).await?;
    let next_before = (items.len() == limit)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(Json(json!({ "items": items, "next_before": next_before })))
}

/// Body of `POST /api/v1/alerts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RaiseAlert {
    /// The device it is about.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub device: Option<DeviceId>,
    /// Stable code (snake_case).
    pub code: String,
    /// Severity.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// Message.
    pub message: String,
    /// De-duplication key (default `<device>/<code>`).
    #[serde(default)]
    pub key: Option<String>,
}

/// `POST /api/v1/alerts`: raises an alert (201), or returns the active one with the
/// same key (200).
#[utoipa::path(post, path = "/api/v1/alerts", tag = "alerts", security(("bearer" = [])), request_body = RaiseAlert,
    responses((status = 201, body = AlertRecord), (status = 200, body = AlertRecord, description = "an active alert with this key exists")))]
pub async fn raise_alert(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<RaiseAlert>,
) -> Result<(StatusCode, Json<AlertRecord>), ApiError> {
    let code_ok = !req.code.is_empty()
        && req.code.len() <= 64
        && req.code.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b':' | b'-')
        });
    if !code_ok {
        return Err(ApiError::invalid_body(
            Some("code"),
            "code: 1-64 characters of a-z, 0-9, '_', ':' and '-'",
        ));
    }
    if let Some(d) = &req.device {
        let id = d.clone();
        if s.store(move |st| st.get_device(&id)).await?.is_none() {
            return Err(ApiError::invalid_body(
                Some("device"),
                format!("device: no device {d}"),
            ));
        }
    }
    let key = req.key.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            req.device.as_ref().map_or("fleet", |d| d.as_str()),
            req.code
        )
    });
    let alert = NewAlert {
        device: req.device.clone(),
        code: req.code,
        severity: req.severity,
        message: req.message,
        key,
    };
    let (actor, t) = (p.actor(), now());
    let (rec, created) = s.store(move |st| st.raise_alert(&alert, &actor, t)).await?;
    if !created {
        return Ok((StatusCode::OK, Json(rec)));
    }
    s.audit_ok(
        &p,
        "alert.raise",
        &format!("alert:{}", rec.id),
        json!({"code": rec.code, "severity": rec.severity}),
        rec.device.clone(),
    )
    .await;
    s.publish(
        EventKind::Alert,
        rec.device.clone(),
        json!({"event": "raised", "alert": rec}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(rec)))
}

async fn transition(
    s: &AppState,
    p: &Principal,
    id: &str,
    ack: bool,
) -> Result<AlertRecord, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no alert {id:?}")))?;
    let (actor, t) = (p.actor(), now());
    let rec = s
        .store(move |st| {
            if ack {
                st.ack_alert(id, &actor, t)
            } else {
                st.clear_alert(id, &actor, t)
            }
        })
        .await?;
    let (action, event) = if ack {
        ("alert.ack", "acked")
    } else {
        ("alert.clear", "cleared")
    };
    debug_assert!(matches!(rec.state, AlertState::Acked | AlertState::Cleared));
    // A fleet alert, or a device alert the alert book follows, changes there too.
    crate::intel::alerts::on_transition(s, &rec, ack, &p.actor()).await;
    s.audit_ok(
        p,
        action,
        &format!("alert:{id}"),
        json!({"state": rec.state}),
        rec.device.clone(),
    )
    .await;
    s.publish(
        EventKind::Alert,
        rec.device.clone(),
        json!({"event": event, "alert": rec}),
    )
    .await;
    Ok(rec)
}

/// `POST /api/v1/alerts/{id}/ack`.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, description = "alert id")),
    responses((status = 200, body = AlertRecord), (status = 404, description = "no such alert"), (status = 409, description = "already cleared")))]
pub async fn ack_alert(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<AlertRecord>, ApiError> {
    transition(&s, &p, &id, true).await.map(Json)
}

/// `POST /api/v1/alerts/{id}/clear`.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/clear", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, description = "alert id")),
    responses((status = 200, body = AlertRecord), (status = 404, description = "no such alert")))]
pub async fn clear_alert(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<AlertRecord>, ApiError> {
    transition(&s, &p, &id, false).await.map(Json)
}
