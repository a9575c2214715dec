//! Workload, placement, recommendation and rollout routes (see
//! [`crate::orchestrate`]). Viewers read; operators declare workloads, accept
//! recommendations and run rollouts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use serde_json::{Value, json};
use utoipa::OpenApi;
use wrale_core::fleet::access::Action;
use wrale_core::fleet::rollout::Operation;
use wrale_core::fleet::scheduler::Workload;

use super::{Access, ApiRoutes, query_pairs};
use crate::auth::Principal;
use crate::error::{ApiError, ApiJson};
use crate::orchestrate::rollouts::{self, CreateRollout};
use crate::orchestrate::scheduler;
use crate::orchestrate::store::WorkloadRecord;
use crate::state::{AppState, now};

/// This module's routes.
pub fn routes() -> ApiRoutes {
    use Access::Action as A;
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/v1/workloads",
            A(Action::ReadFleet),
            list_workloads,
        )
        .route(
            Method::POST,
            "/api/v1/workloads",
            A(Action::EditDesired),
            create_workload,
        )
        .route(
            Method::GET,
            "/api/v1/workloads/{name}",
            A(Action::ReadFleet),
            get_workload,
        )
        .route(
            Method::DELETE,
            "/api/v1/workloads/{name}",
            A(Action::EditDesired),
            delete_workload,
        )
        .route(
            Method::GET,
            "/api/v1/placements",
            A(Action::ReadFleet),
            list_placements,
        )
        .route(
            Method::GET,
            "/api/v1/recommendations",
            A(Action::ReadFleet),
            list_recommendations,
        )
        .route(
            Method::POST,
            "/api/v1/recommendations/{id}/accept",
            A(Action::EditDesired),
            accept_recommendation,
        )
        .route(
            Method::GET,
            "/api/v1/rollouts",
            A(Action::ReadFleet),
            list_rollouts,
        )
        .route(
            Method::POST,
            "/api/v1/rollouts",
            A(Action::RunRollout),
            create_rollout,
        )
        .route(
            Method::GET,
            "/api/v1/rollouts/{id}",
            A(Action::ReadFleet),
            get_rollout,
        )
        .route(
            Method::POST,
            "/api/v1/rollouts/{id}/pause",
            A(Action::RunRollout),
            pause_rollout,
        )
        .route(
            Method::POST,
            "/api/v1/rollouts/{id}/resume",
            A(Action::RunRollout),
            resume_rollout,
        )
        .route(
            Method::POST,
            "/api/v1/rollouts/{id}/abort",
            A(Action::RunRollout),
            abort_rollout,
        )
        .route(
            Method::POST,
            "/api/v1/rollouts/{id}/rollback",
            A(Action::RunRollout),
            rollback_rollout,
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list_workloads,
        create_workload,
        get_workload,
        delete_workload,
        list_placements,
        list_recommendations,
        accept_recommendation,
        list_rollouts,
        create_rollout,
        get_rollout,
        pause_rollout,
        resume_rollout,
        abort_rollout,
        rollback_rollout,
    ),
    components(schemas(CreateRollout))
)]
struct OrchestrateDoc;

/// This module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    OrchestrateDoc::openapi()
}

fn no_query(uri: &Uri) -> Result<(), ApiError> {
    if let Some((k, _)) = query_pairs(uri.query()).into_iter().next() {
        return Err(ApiError::invalid_query(
            &k,
            format!("unknown parameter `{k}`"),
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))?
}

fn check_workload(w: &Workload) -> Result<(), ApiError> {
    let bad = |f: &str, m: String| Err(ApiError::invalid_body(Some(f), format!("{f}: {m}")));
    let n = &w.name;
    if n.is_empty()
        || n.len() > 63
        || !n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("name", format!("{n:?} is not [a-z0-9-]{{1,63}}"));
    }
    if !(w.cpu.is_finite() && w.cpu > 0.0 && w.cpu <= 100.0) {
        return bad("cpu_pct", format!("{} is not in (0, 100]", w.cpu));
    }
    if !(w.power.get().is_finite() && w.power.get() >= 0.0 && w.power.get() <= 100.0) {
        return bad("power_w", format!("{} is not in [0, 100]", w.power.get()));
    }
    if w.replicas == 0 || w.replicas > 1000 {
        return bad("replicas", format!("{} is not in 1..=1000", w.replicas));
    }
    if w.constraints.anti_affinity.iter().any(|a| a == n) {
        return bad(
            "constraints.anti_affinity",
            "a workload cannot be anti-affine with itself (replicas never share a device anyway)"
                .into(),
        );
    }
    Ok(())
}

/// `GET /api/v1/workloads`: `{items: [workload + created_at, created_by]}`.
#[utoipa::path(get, path = "/api/v1/workloads", tag = "orchestrate", security(("bearer" = [])),
    responses((status = 200, description = "`{items}`")))]
pub async fn list_workloads(State(s): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    no_query(&uri)?;
    let store = s.orchestrate.store()?;
    let items = blocking(move || store.workloads()).await?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /api/v1/workloads` `{name, command?, cpu_pct, power_w, replicas?,
/// priority?, constraints?: {labels, models, anti_affinity, spread_racks}}`:
/// declares a workload and runs a scheduler pass at once; 201 with the workload,
/// its placements (each with the decision that made it) and its replicas left
/// pending (with why).
#[utoipa::path(post, path = "/api/v1/workloads", tag = "orchestrate", security(("bearer" = [])),
    request_body(content = Object, description = "wrale_core::fleet::scheduler::Workload"),
    responses((status = 201, description = "`{workload, placements, pending}`"), (status = 400, description = "`invalid_body`"),
              (status = 409, description = "a workload with that name exists")))]
pub async fn create_workload(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(w): ApiJson<Workload>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_workload(&w)?;
    let rec = WorkloadRecord {
        spec: w,
        created_at: now(),
        created_by: p.actor(),
    };
    let store = s.orchestrate.store()?;
    let r = rec.clone();
    if !blocking(move || store.insert_workload(&r)).await? {
        return Err(ApiError::conflict(format!(
            "workload {} exists (delete it first)",
            rec.spec.name
        )));
    }
    s.audit_ok(
        &p,
        "workload.create",
        &format!("workload:{}", rec.spec.name),
        serde_json::to_value(&rec.spec).unwrap_or_default(),
        None,
    )
    .await;
    let report = scheduler::run_pass(&s, "workload.create").await?;
    let store = s.orchestrate.store()?;
    let name = rec.spec.name.clone();
    let placements: Vec<_> = blocking(move || store.placements())
        .await?
        .into_iter()
        .filter(|p| p.placement.workload == name)
        .collect();
    let pending: Vec<_> = report
        .pending
        .into_iter()
        .filter(|d| d.workload == rec.spec.name)
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({"workload": rec, "placements": placements, "pending": pending})),
    ))
}

/// `GET /api/v1/workloads/{name}`: the workload and its placements.
#[utoipa::path(get, path = "/api/v1/workloads/{name}", tag = "orchestrate", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name")),
    responses((status = 200, description = "`{workload, placements}`"), (status = 404, description = "no such workload")))]
pub async fn get_workload(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.orchestrate.store()?;
    let (ws, ps) = blocking(move || Ok((store.workloads()?, store.placements()?))).await?;
    let w = ws
        .into_iter()
        .find(|w| w.spec.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no workload {name}")))?;
    let ps: Vec<_> = ps
        .into_iter()
        .filter(|p| p.placement.workload == name)
        .collect();
    Ok(Json(json!({"workload": w, "placements": ps})))
}

/// `DELETE /api/v1/workloads/{name}`: removes it; a scheduler pass stops its
/// replicas at once.
#[utoipa::path(delete, path = "/api/v1/workloads/{name}", tag = "orchestrate", security(("bearer" = [])),
    params(("name" = String, Path, description = "workload name")),
    responses((status = 200, description = "`{deleted, decisions}`"), (status = 404, description = "no such workload")))]
pub async fn delete_workload(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.orchestrate.store()?;
    let n = name.clone();
    if !blocking(move || store.delete_workload(&n)).await? {
        return Err(ApiError::not_found(format!("no workload {name}")));
    }
    s.audit_ok(
        &p,
        "workload.delete",
        &format!("workload:{name}"),
        json!({}),
        None,
    )
    .await;
    let report = scheduler::run_pass(&s, "workload.delete").await?;
    Ok(Json(json!({"deleted": name, "decisions": report.changes})))
}

/// `GET /api/v1/placements`: `{items: [{workload, replica, device, since,
/// decision}], pending: [decision], last_pass: {at, trigger, changes}}`. A
/// decision says why this device (its steady state, limit and margin), lists the
/// best alternatives and the rejected devices with every reason, and counts
/// rejections per reason.
#[utoipa::path(get, path = "/api/v1/placements", tag = "orchestrate", security(("bearer" = [])),
    params(("workload" = Option<String>, Query, description = "only this workload"), ("device" = Option<String>, Query, description = "only this device")),
    responses((status = 200, description = "`{items, pending, last_pass}`")))]
pub async fn list_placements(State(s): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let (mut workload, mut device) = (None, None);
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "workload" => workload = Some(v),
            "device" => device = Some(v),
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    format!("unknown parameter `{other}` (expected workload, device)"),
                ));
            }
        }
    }
    let store = s.orchestrate.store()?;
    let items: Vec<_> = blocking(move || store.placements())
        .await?
        .into_iter()
        .filter(|p| workload.as_ref().is_none_or(|w| &p.placement.workload == w))
        .filter(|p| {
            device
                .as_ref()
                .is_none_or(|d| p.placement.device.as_str() == d)
        })
        .collect();
    let last = s.orchestrate.last_pass();
    Ok(Json(json!({
        "items": items,
        "pending": last.pending,
        "last_pass": {"at": last.at, "trigger": last.trigger, "changes": last.changes},
    })))
}

/// `GET /api/v1/recommendations`: the optimizer's fan-profile and workload-move
/// recommendations now, each `{id, kind, detail, auto_apply}` with its expected
/// effect, and the fleet's expected peak temperature and power before and after.
#[utoipa::path(get, path = "/api/v1/recommendations", tag = "orchestrate", security(("bearer" = [])),
    responses((status = 200, description = "`{items, expected, auto_apply}`")))]
pub async fn list_recommendations(
    State(s): State<AppState>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    no_query(&uri)?;
    let (plan, items) = scheduler::recommendations(&s).await?;
    Ok(Json(
        json!({"items": items, "expected": plan.expected, "auto_apply": plan.auto_apply}),
    ))
}

/// `POST /api/v1/recommendations/{id}/accept`: applies one recommendation of the
/// current plan through the twin write path (404 when the plan no longer has it).
#[utoipa::path(post, path = "/api/v1/recommendations/{id}/accept", tag = "orchestrate", security(("bearer" = [])),
    params(("id" = String, Path, description = "recommendation id")),
    responses((status = 200, description = "`{accepted}`"), (status = 404, description = "not in the current plan"),
              (status = 422, description = "`policy_violation`: the device's board refuses it")))]
pub async fn accept_recommendation(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rec = scheduler::accept(&s, &id, &p.actor()).await?;
    Ok(Json(json!({ "accepted": rec })))
}

/// `GET /api/v1/rollouts`: every rollout, newest first (`status` filters).
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "orchestrate", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "running, paused, completed, aborted, rolled_back")),
    responses((status = 200, description = "`{items}`")))]
pub async fn list_rollouts(State(s): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let mut status = None;
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "status" => {
                if !["running", "paused", "completed", "aborted", "rolled_back"]
                    .contains(&v.as_str())
                {
                    return Err(ApiError::invalid_query(
                        "status",
                        format!(
                            "status: {v:?} is not running, paused, completed, aborted or rolled_back"
                        ),
                    ));
                }
                status = Some(v);
            }
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    format!("unknown parameter `{other}` (expected status)"),
                ));
            }
        }
    }
    Ok(Json(json!({ "items": rollouts::list(&s, status).await? })))
}

/// `POST /api/v1/rollouts`: plans the waves, board-checks the change on every
/// target (422 naming the device), writes the canary wave at once; 201 with the
/// rollout and its progress.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "orchestrate", security(("bearer" = [])),
    request_body = CreateRollout,
    responses((status = 201, description = "the rollout"), (status = 400, description = "`invalid_body`"),
              (status = 409, description = "the id exists"), (status = 422, description = "`policy_violation`")))]
pub async fn create_rollout(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<CreateRollout>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v = rollouts::create(&s, &p.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/rollouts/{id}`: status, progress, waves, gate failures, rollback plan.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "orchestrate", security(("bearer" = [])),
    params(("id" = String, Path, description = "rollout id")),
    responses((status = 200, description = "the rollout"), (status = 404, description = "no such rollout")))]
pub async fn get_rollout(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(rollouts::get(&s, &id).await?))
}

async fn op(s: AppState, p: Principal, id: String, op: Operation) -> Result<Json<Value>, ApiError> {
    Ok(Json(rollouts::operate(&s, &p.actor(), &id, op).await?))
}

/// `POST /api/v1/rollouts/{id}/pause`: 409 unless running.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/pause", tag = "orchestrate", security(("bearer" = [])),
    params(("id" = String, Path, description = "rollout id")),
    responses((status = 200, description = "the rollout"), (status = 409, description = "`conflict`: not running")))]
pub async fn pause_rollout(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let reason = format!("paused by {}", p.actor());
    op(s, p, id, Operation::Pause { reason }).await
}

/// `POST /api/v1/rollouts/{id}/resume`: restarts the current wave's soak; 409 unless paused.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/resume", tag = "orchestrate", security(("bearer" = [])),
    params(("id" = String, Path, description = "rollout id")),
    responses((status = 200, description = "the rollout"), (status = 409, description = "`conflict`")))]
pub async fn resume_rollout(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    op(s, p, id, Operation::Resume).await
}

/// `POST /api/v1/rollouts/{id}/abort`: stops for good; changed devices keep the change.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/abort", tag = "orchestrate", security(("bearer" = [])),
    params(("id" = String, Path, description = "rollout id")),
    responses((status = 200, description = "the rollout"), (status = 409, description = "`conflict`")))]
pub async fn abort_rollout(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    op(s, p, id, Operation::Abort).await
}

/// `POST /api/v1/rollouts/{id}/rollback`: writes the replaced values back into
/// every changed device (a change of its own in each twin's history).
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/rollback", tag = "orchestrate", security(("bearer" = [])),
    params(("id" = String, Path, description = "rollout id")),
    responses((status = 200, description = "the rollout"), (status = 409, description = "`conflict`")))]
pub async fn rollback_rollout(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    op(s, p, id, Operation::Rollback).await
}
