//! The local API: health, metrics, device state and readings, alerts, workloads,
//! fan commands, config, and a WebSocket stream of readings and events.
//!
//! Every route but `/health/*` needs `Authorization: Bearer <token>` (the stream
//! also takes `?token=`, as browsers cannot set headers on a WebSocket); `/metrics`
//! is public only with `api.public_metrics = true`. Viewers read, operators command,
//! admins manage the daemon.

mod commands;
mod metrics;

use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use wrale_core::units::Percent;

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiJson};
use crate::persist::Persist;
use crate::safety::Command;
use crate::sampler::CommandSender;
use crate::state::{AppState, StreamItem};
use crate::workloads::Workloads;

pub use metrics::render as render_metrics;

/// A request to reload the config; the answer is the error message, if any.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Where to send the outcome.
    pub reply: oneshot::Sender<Result<(), crate::config::ConfigError>>,
}

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Shared daemon state.
    pub app: AppState,
    /// The sampling loop's command channel.
    pub commands: CommandSender,
    /// The workload supervisor.
    pub workloads: Workloads,
    /// Where config reloads are requested (`POST /api/v1/config/reload`).
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The twin, the audit log and the telemetry ring in `data.dir`.
    pub persist: Persist,
    /// The policy in force at start: the board floor and the local layers.
    pub policy: std::sync::Arc<Value>,
    /// The fleet side: edge agent status, local desired edits.
    pub fleet: crate::fleet::FleetHandle,
}

#[derive(Debug, Clone)]
struct Guard {
    app: AppState,
    role: Role,
    query_token: bool,
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    let guard = |role, query_token| {
        middleware::from_fn_with_state(
            Guard {
                app: state.app.clone(),
                role,
                query_token,
            },
            require,
        )
    };
    let viewer = Router::new()
        .route("/api/v1/state", get(device_state))
        .route("/api/v1/readings", get(readings))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/workloads", get(workloads))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/twin", get(twin))
        .route("/api/v1/twin/history", get(twin_history))
        .route("/api/v1/policy", get(policy))
        .route_layer(guard(Role::Viewer, false));
    let stream = Router::new()
        .route("/api/v1/stream", get(stream))
        .route_layer(guard(Role::Viewer, true));
    let operator = Router::new()
        .route("/api/v1/fan", post(set_fan))
        .route("/api/v1/fan/validate", post(validate_fan))
        .route("/api/v1/commands", post(commands::execute))
        .route("/api/v1/commands/validate", post(commands::validate))
        .route("/api/v1/commands/confirm", post(commands::confirm))
        .route("/api/v1/mode", post(commands::set_mode))
        .route("/api/v1/diagnostics", post(diagnostics))
        .route(
            "/api/v1/twin/desired",
            axum::routing::patch(crate::fleet::http::patch_desired),
        )
        .route_layer(guard(Role::Operator, false));
    let admin = Router::new()
        .route("/api/v1/config", get(effective_config))
        .route("/api/v1/config/reload", post(reload_config))
        .route_layer(guard(Role::Admin, false));
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(viewer)
        .merge(stream)
        .merge(operator)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Authenticates a request and checks its role.
fn authorize(
    app: &AppState,
    headers: &HeaderMap,
    query: Option<String>,
    role: Role,
) -> Result<Principal, ApiError> {
    let token = bearer(headers)
        .map(str::to_owned)
        .or(query)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let tokens = app.tokens();
    if tokens.is_empty() {
        return Err(ApiError::unauthorized(
            "no API tokens are configured (see `metald hash-token` and [[api.tokens]])",
        ));
    }
    let principal = tokens
        .authenticate(&token)
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    if principal.role < role {
        return Err(ApiError::forbidden(format!(
            "this needs the {role} role; token {:?} has {}",
            principal.name, principal.role
        ))
        .with_detail("required_role", role.to_string()));
    }
    Ok(principal)
}

async fn require(
    State(g): State<Guard>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let query = if g.query_token {
        Query::<TokenQuery>::try_from_uri(req.uri())
            .ok()
            .and_then(|q| q.0.token)
    } else {
        None
    };
    let principal = authorize(&g.app, req.headers(), query, g.role)?;
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    if s.app.ready() {
        Ok(Json(json!({ "status": "ready" })))
    } else if s.app.sampler_alive() {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no sample has been taken yet",
        ))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the sampling loop is not running",
        ))
    }
}

async fn metrics(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !s.app.config().api.public_metrics {
        authorize(&s.app, &headers, None, Role::Viewer)?;
    }
    let mut body = metrics::render(&s.app, &s.workloads.statuses(), s.workloads.throttled());
    s.fleet.render_metrics(&mut body);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

fn latest_json(app: &AppState) -> Value {
    match app.latest() {
        Some(l) => json!({
            "seq": l.seq,
            "latency_s": l.latency.as_secs_f64(),
            "sample": &*l.sample,
        }),
        None => Value::Null,
    }
}

async fn device_state(State(s): State<ApiState>) -> Json<Value> {
    let config = s.app.config();
    Json(json!({
        "device": s.app.device(),
        "ready": s.app.ready(),
        "mode": s.app.mode(),
        "modes": s.app.modes(),
        "fleet": s.fleet.state_json(),
        "sampling": {
            "interval_s": config.sampling.interval.as_secs_f64(),
            "samples_total": s.app.metrics().samples.load(std::sync::atomic::Ordering::Relaxed),
        },
        "latest": latest_json(&s.app),
        "alerts": s.app.alerts(),
        "workloads": s.workloads.statuses(),
        "throttled": s.workloads.throttled(),
    }))
}

async fn readings(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let latest = latest_json(&s.app);
    if latest.is_null() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no sample has been taken yet",
        ));
    }
    Ok(Json(latest))
}

async fn alerts(State(s): State<ApiState>) -> Json<Value> {
    Json(json!({ "alerts": s.app.alerts() }))
}

async fn workloads(State(s): State<ApiState>) -> Json<Value> {
    Json(json!({
        "throttled": s.workloads.throttled(),
        "workloads": s.workloads.statuses(),
    }))
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Default)]
struct AuditQuery {
    /// At most this many records (default 100, at most 1000).
    limit: Option<usize>,
    /// Only records with a smaller sequence number (the next page).
    before: Option<u64>,
}

impl AuditQuery {
    /// Parses the query parameters; 400 `invalid_query` naming the parameter.
    fn parse(params: &std::collections::BTreeMap<String, String>) -> Result<Self, ApiError> {
        let mut q = AuditQuery::default();
        for (name, value) in params {
            let bad = |e: std::num::ParseIntError| {
                ApiError::invalid_query(name, format!("{name}: {value:?}: {e}"))
            };
            match name.as_str() {
                "limit" => q.limit = Some(value.parse().map_err(bad)?),
                "before" => q.before = Some(value.parse().map_err(bad)?),
                _ => {
                    return Err(ApiError::invalid_query(
                        name,
                        format!("{name}: unknown parameter (expected limit, before)"),
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// `GET /api/v1/audit?limit=&before=`: audit records, newest first.
async fn audit(
    State(s): State<ApiState>,
    query: Result<
        Query<std::collections::BTreeMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::invalid_query("", e.body_text()))?;
    let q = AuditQuery::parse(&params)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid_query(
            "limit",
            "limit: must be between 1 and 1000",
        ));
    }
    let persist = s.persist.clone();
    let records = tokio::task::spawn_blocking(move || persist.audit().page(q.before, limit))
        .await
        .map_err(|e| ApiError::internal(format!("audit reader: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let next_before = (records.len() == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(Json(
        json!({ "records": records, "next_before": next_before }),
    ))
}

/// `GET /api/v1/twin`: the device twin's `meta`, `desired` and `reported`.
async fn twin(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let persist = s.persist.clone();
    tokio::task::spawn_blocking(move || persist.twin_json())
        .await
        .map_err(|e| ApiError::internal(format!("twin reader: {e}")))?
        .map(Json)
        .map_err(|e| ApiError::internal(format!("{e:#}")))
}

/// `GET /api/v1/twin/history`: the twin's versions, oldest first.
async fn twin_history(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let persist = s.persist.clone();
    tokio::task::spawn_blocking(move || persist.twin_history())
        .await
        .map_err(|e| ApiError::internal(format!("twin reader: {e}")))?
        .map(Json)
        .map_err(|e| ApiError::internal(format!("{e:#}")))
}

/// `GET /api/v1/policy`: the engine, the board floor (its profile) and the local
/// policy layers it was assembled from.
async fn policy(State(s): State<ApiState>) -> Json<Value> {
    Json((*s.policy).clone())
}

/// Body of `POST /api/v1/fan`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FanRequest {
    fan: String,
    duty_pct: Percent,
}

async fn set_fan(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiJson(req): ApiJson<FanRequest>,
) -> Result<Json<Value>, ApiError> {
    tracing::info!(token = %who.name, fan = %req.fan, duty = req.duty_pct.get(), "fan command");
    let applied = s
        .commands
        .send(
            Command::SetFanDuty {
                fan: req.fan,
                duty: req.duty_pct,
            },
            &who.name,
        )
        .await?;
    Ok(Json(json!(applied)))
}

async fn validate_fan(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiJson(req): ApiJson<FanRequest>,
) -> Result<Json<Value>, ApiError> {
    let v = s
        .commands
        .validate(
            Command::SetFanDuty {
                fan: req.fan,
                duty: req.duty_pct,
            },
            &who.name,
        )
        .await?;
    Ok(Json(json!(v)))
}

/// `POST /api/v1/diagnostics`: an empty body runs every check with the default
/// options; a JSON body gives `wrale_hal::diag::DiagOptions` (only what differs).
async fn diagnostics(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        wrale_hal::diag::DiagOptions::default()
    } else {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de)
            .map_err(|e| ApiError::invalid_body(format!("{}: {}", e.path(), e.inner())))?
    };
    let report = s.commands.diagnostics(options, &who.name).await?;
    Ok(Json(json!(report)))
}

async fn effective_config(State(s): State<ApiState>) -> Json<Value> {
    Json(json!(*s.app.config()))
}

async fn reload_config(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (reply, rx) = oneshot::channel();
    s.reload
        .send(ReloadRequest { reply })
        .await
        .map_err(|_| ApiError::unavailable("the daemon is shutting down"))?;
    match rx.await {
        Ok(Ok(())) => Ok(Json(json!({ "result": "reloaded" }))),
        Ok(Err(e)) => {
            let mut err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                e.to_string(),
            );
            if let Some(key) = e.key() {
                err = err.with_detail("key", key);
            }
            Err(err)
        }
        Err(_) => Err(ApiError::unavailable("the daemon is shutting down")),
    }
}

async fn stream(
    State(s): State<ApiState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let rx = s.app.subscribe();
    let app = s.app.clone();
    Ok(ws.on_upgrade(move |socket| stream_socket(socket, rx, app)))
}

async fn stream_socket(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<StreamItem>,
    app: AppState,
) {
    let hello = json!({
        "type": "hello",
        "device": app.device(),
        "latest": latest_json(&app),
    });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let shutdown = app.shutdown_token().clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _closing = socket.send(Message::Close(None)).await;
                break;
            }
            item = rx.recv() => {
                let text = match item {
                    Ok(item) => item.to_json(),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        app.metrics().stream_dropped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        json!({ "type": "lagged", "missed": n }).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
