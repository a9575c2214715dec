//! Routes of the fleet intelligence (docs/fleet-api.md): the latest analysis
//! per device, per scope and its hot spots; the open fleet alerts; silences;
//! webhook dead letters. Reads need a viewer, changes an operator
//! (`ManageAlerts`), and every change is audited.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};
use wrale_core::fleet::access::Action;
use wrale_core::fleet::alerting::{AlertInput, DeliveryStatus, Silence, SilenceMatch};
use wrale_core::{DeviceId, Timestamp};

use crate::auth::Principal;
use crate::error::{ApiError, ApiJson};
use crate::http::{Access, ApiRoutes};
use crate::state::{AppState, now};

/// This module's routes.
pub fn routes() -> ApiRoutes {
    use Access::Action as A;
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/v1/analysis/fleet",
            A(Action::ReadFleet),
            fleet_analysis,
        )
        .route(
            Method::GET,
            "/api/v1/analysis/devices/{id}",
            A(Action::ReadFleet),
            device_analysis,
        )
        .route(
            Method::GET,
            "/api/v1/analysis/hotspots",
            A(Action::ReadFleet),
            hot_spots,
        )
        .route(
            Method::GET,
            "/api/v1/fleet-alerts",
            A(Action::ReadFleet),
            fleet_alerts,
        )
        .route(
            Method::GET,
            "/api/v1/silences",
            A(Action::ReadFleet),
            list_silences,
        )
        .route(
            Method::POST,
            "/api/v1/silences",
            A(Action::ManageAlerts),
            create_silence,
        )
        .route(
            Method::DELETE,
            "/api/v1/silences/{id}",
            A(Action::ManageAlerts),
            delete_silence,
        )
        .route(
            Method::GET,
            "/api/v1/dead-letters",
            A(Action::ReadFleet),
            list_dead_letters,
        )
        .route(
            Method::DELETE,
            "/api/v1/dead-letters/{id}",
            A(Action::ManageAlerts),
            delete_dead_letter,
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        fleet_analysis,
        device_analysis,
        hot_spots,
        fleet_alerts,
        list_silences,
        create_silence,
        delete_silence,
        list_dead_letters,
        delete_dead_letter
    ),
    components(schemas(NewSilence))
)]
struct IntelDoc;

/// This module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    IntelDoc::openapi()
}

fn analysed(at: Timestamp) -> bool {
    at.as_millis() > 0
}

/// `GET /api/v1/analysis/fleet`: health per device (score, level, factor codes)
/// and per fleet, site, rack and group; the anomalies.
#[utoipa::path(get, path = "/api/v1/analysis/fleet", tag = "analysis", security(("bearer" = [])),
    responses((status = 200, description = "`{at, analysed, devices: [{device, score, health, factors, location, group}], groups: [{scope, devices, mean_score, min_score, worst_device, factors}], anomalies, hot_spots}`")))]
pub async fn fleet_analysis(State(s): State<AppState>) -> Json<Value> {
    let fa = s.analysis();
    let devices: Vec<Value> = fa
        .devices
        .iter()
        .map(|d| {
            json!({
                "device": d.device,
                "score": d.health.score,
                "health": d.health_level().as_str(),
                "factors": d.health.factors.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(),
                "location": d.location,
                "group": d.group,
            })
        })
        .collect();
    Json(json!({
        "at": fa.at,
        "analysed": analysed(fa.at),
        "devices": devices,
        "groups": fa.groups,
        "anomalies": fa.anomalies,
        "hot_spots": fa.hot_spots,
    }))
}

/// `GET /api/v1/analysis/devices/{id}`: everything the analyzer says about one
/// device (trend, time to throttle, headroom, fan, supply, storage, health with
/// its factors), its anomalies with the evidence and the hot spots it is in.
#[utoipa::path(get, path = "/api/v1/analysis/devices/{id}", tag = "analysis", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "`{device, at, health, analysis, anomalies, hot_spots}`"),
              (status = 404, description = "no such device, or no telemetry in the window yet")))]
pub async fn device_analysis(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id =
        DeviceId::new(id.as_str()).map_err(|_| ApiError::not_found(format!("no device {id:?}")))?;
    let d = id.clone();
    let rec = s
        .store(move |st| st.get_device(&d))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let fa = s.analysis();
    let Some(a) = fa.device(&id) else {
        let window = humantime::format_duration(s.config().intel.window);
        return Err(ApiError::not_found(if analysed(fa.at) {
            format!("no analysis of {id}: no telemetry in the last {window}")
        } else {
            format!("no analysis of {id} yet: the analyzer has not run")
        }));
    };
    let hot: Vec<_> = fa
        .hot_spots
        .iter()
        .filter(|h| h.devices.contains(&id))
        .collect();
    Ok(Json(json!({
        "device": id,
        "at": fa.at,
        "health": rec.health.as_str(),
        "analysis": a,
        "anomalies": fa.anomalies_of(&id),
        "hot_spots": hot,
    })))
}

/// `GET /api/v1/analysis/hotspots`: racks and shelves hotter than the rest of
/// the fleet at comparable load, hottest first.
#[utoipa::path(get, path = "/api/v1/analysis/hotspots", tag = "analysis", security(("bearer" = [])),
    responses((status = 200, description = "`{at, items: [{location, site, rack, shelf, excess_c, ambient_c, fleet_ambient_c, devices}]}`")))]
pub async fn hot_spots(State(s): State<AppState>) -> Json<Value> {
    let fa = s.analysis();
    Json(json!({"at": fa.at, "items": fa.hot_spots}))
}

/// `GET /api/v1/fleet-alerts`: the open fleet alerts of the alert book (firing
/// or acknowledged), with the silences covering each.
#[utoipa::path(get, path = "/api/v1/fleet-alerts", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, description = "`{items: [{key, rule, severity, subject, message, status, first_seen, last_seen, acked_by?, notified?, silenced_by}]}`")))]
pub async fn fleet_alerts(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"items": super::alerts::open_alerts(&s)}))
}

/// `GET /api/v1/silences`: silences in force or to come.
#[utoipa::path(get, path = "/api/v1/silences", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, description = "`{items: [{id, matcher: {rule?, device?, key_prefix?}, from, until, comment}]}`")))]
pub async fn list_silences(State(s): State<AppState>) -> Json<Value> {
    let t = now();
    let a = s.intel.lock();
    let items: Vec<&Silence> = a.book.silences.iter().filter(|x| x.until > t).collect();
    Json(json!({ "items": items }))
}

/// Body of `POST /api/v1/silences`: at least one matcher field, and `duration`
/// or `until`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Only alerts of this rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// Only alerts about this device.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub device: Option<DeviceId>,
    /// Only alerts whose key starts with this (`hot_spot/location:lab/`).
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// How long from `from` (`"2h"`).
    #[serde(default)]
    pub duration: Option<String>,
    /// Start (default now).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// End (instead of `duration`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<Timestamp>,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

async fn persist_book(s: &AppState) {
    let book = s.intel.lock().book.clone();
    if let Some(db) = s.intel.db() {
        let t = now();
        match tokio::task::spawn_blocking(move || db.save_book(&book, t)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot persist the alert book: {e:#}"),
            Err(e) => tracing::error!("alert book persistence task: {e}"),
        }
    }
}

/// `POST /api/v1/silences`: matching fleet alerts stay in the book but are not
/// delivered until the silence ends (then, if they still fire, they are).
#[utoipa::path(post, path = "/api/v1/silences", tag = "alerts", security(("bearer" = [])), request_body = NewSilence,
    responses((status = 201, description = "the silence `{id, matcher, from, until, comment}`"),
              (status = 400, description = "no matcher, no or bad duration, until in the past")))]
pub async fn create_silence(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<NewSilence>,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    let t = now();
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if empty(&req.rule) && req.device.is_none() && empty(&req.key_prefix) {
        return Err(ApiError::invalid_body(
            None,
            "a silence needs at least one of rule, device, key_prefix",
        ));
    }
    if req.comment.len() > 1000 {
        return Err(ApiError::invalid_body(
            Some("comment"),
            "comment: at most 1000 bytes",
        ));
    }
    let from = req.from.unwrap_or(t);
    let until = match (&req.duration, req.until) {
        (Some(d), None) => {
            let d: Duration = humantime::parse_duration(d).map_err(|e| {
                ApiError::invalid_body(Some("duration"), format!("duration: {d:?}: {e}"))
            })?;
            from + d
        }
        (None, Some(u)) => u,
        _ => {
            return Err(ApiError::invalid_body(
                None,
                "give exactly one of duration and until",
            ));
        }
    };
    if until <= from || until <= t {
        return Err(ApiError::invalid_body(
            Some("until"),
            "the silence must end after it starts and after now",
        ));
    }
    let silence = Silence {
        id: crate::auth::new_id("sil"),
        matcher: SilenceMatch {
            rule: req.rule.filter(|r| !r.is_empty()),
            device: req.device,
            key_prefix: req.key_prefix.filter(|k| !k.is_empty()),
        },
        from,
        until,
        comment: req.comment,
    };
    s.intel.lock().book.step(
        &AlertInput::Silence {
            silence: silence.clone(),
        },
        t,
    );
    persist_book(&s).await;
    s.audit_ok(
        &p,
        "silence.create",
        &format!("silence:{}", silence.id),
        serde_json::to_value(&silence).unwrap_or_default(),
        silence.matcher.device.clone(),
    )
    .await;
    Ok((StatusCode::CREATED, Json(silence)))
}

/// `DELETE /api/v1/silences/{id}`: alerts it held back and still firing are
/// delivered at the next analyzer pass (started at once).
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path, description = "silence id")),
    responses((status = 204, description = "removed"), (status = 404, description = "no such silence")))]
pub async fn delete_silence(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let existed = {
        let mut a = s.intel.lock();
        let existed = a.book.silences.iter().any(|x| x.id == id);
        if existed {
            a.book
                .step(&AlertInput::Unsilence { id: id.clone() }, now());
        }
        existed
    };
    if !existed {
        return Err(ApiError::not_found(format!("no silence {id:?}")));
    }
    persist_book(&s).await;
    s.audit_ok(
        &p,
        "silence.delete",
        &format!("silence:{id}"),
        json!({}),
        None,
    )
    .await;
    s.intel.run_now.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/dead-letters`: webhook deliveries given up, as stored, with
/// every attempt and its outcome.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, description = "`{items: [{id, webhook, url, notification, attempts: [{at, outcome}], status}]}`")))]
pub async fn list_dead_letters(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let Some(db) = s.intel.db() else {
        return Ok(Json(json!({"items": []})));
    };
    let items = tokio::task::spawn_blocking(move || db.dead_letters())
        .await
        .map_err(|e| ApiError::internal(format!("intel store task: {e}")))?
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /api/v1/dead-letters/{id}`: an operator removes a dead letter.
#[utoipa::path(delete, path = "/api/v1/dead-letters/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = u64, Path, description = "delivery id")),
    responses((status = 204, description = "removed"), (status = 404, description = "no such dead letter")))]
pub async fn delete_dead_letter(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let nid: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no dead letter {id:?}")))?;
    let removed = {
        let mut a = s.intel.lock();
        let dead = a
            .queue
            .deliveries
            .get(&nid)
            .is_some_and(|d| d.status == DeliveryStatus::DeadLetter);
        if dead {
            a.queue.deliveries.remove(&nid)
        } else {
            None
        }
    };
    let Some(removed) = removed else {
        return Err(ApiError::not_found(format!("no dead letter {id:?}")));
    };
    if let Some(db) = s.intel.db() {
        tokio::task::spawn_blocking(move || db.delete_deliveries(&[nid]))
            .await
            .map_err(|e| ApiError::internal(format!("intel store task: {e}")))?
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    }
    s.audit_ok(
        &p,
        "dead_letter.delete",
        &format!("dead_letter:{nid}"),
        json!({"webhook": removed.webhook, "alert": removed.notification.alert.key}),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
