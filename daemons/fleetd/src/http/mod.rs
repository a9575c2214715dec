//! The HTTP API: every route is added through [`ApiRoutes`], which records its
//! method, path and access rule in one table. The same table builds the router,
//! is checked against the OpenAPI document, and is walked by the role-matrix test.
//!
//! Access: a route is [`Access::Public`] or needs a principal allowed to do an
//! [`Action`] (wrale-core's permission matrix). The guard authenticates the
//! bearer secret (header, or `?token=` on a WebSocket upgrade), checks the action
//! (for device-scoped actions against the `{id}` path parameter), puts the
//! [`Principal`] in the request and counts the request for `/metrics`. So 401 and
//! 403 come before any body is parsed.

mod access;
mod alerts;
mod audit;
mod devices;
mod events;
mod metrics;
pub mod openapi;
pub mod orchestrate;
pub mod telemetry;
pub mod twins;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use wrale_core::DeviceId;
use wrale_core::fleet::access::{Action, PrincipalKind, effective_token_role};

use crate::auth::{Principal, secret_hash};
use crate::error::{ApiError, BodyLimit};
use crate::state::{AppState, now};
use crate::store::Credential;

pub use metrics::render as render_metrics;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, login, enroll; `/metrics` checks `api.public_metrics` itself).
    Public,
    /// A principal allowed to do this action. For device-scoped actions
    /// (`ReadTwin`, `DeviceSync`, `WriteTelemetry`) the route's `{id}` is the target.
    Action(Action),
}

/// One route of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: Method,
    /// Path, axum/OpenAPI syntax (`/api/v1/devices/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

/// A router plus the table of its routes. Build every route through it.
#[derive(Debug, Default)]
pub struct ApiRoutes {
    router: Router<AppState>,
    table: Vec<RouteInfo>,
}

impl ApiRoutes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `method path` with its access rule. Panics on a non-standard method or
    /// a duplicate (method, path): both are programming errors caught by any test.
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let endpoint = axum::routing::on(filter, handler)
            .route_layer(middleware::from_fn(guard))
            .route_layer(Extension(access));
        self.router = self.router.route(path, endpoint);
        self.table.push(RouteInfo {
            method,
            path,
            access,
        });
        self
    }

    /// Adds another module's routes.
    pub fn merge(mut self, other: ApiRoutes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// The route table.
    pub fn table(&self) -> &[RouteInfo] {
        &self.table
    }

    /// The router.
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// Every route of the API, in one table (fleetd's own plus the telemetry and twin modules).
pub fn api_routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(Method::GET, "/health/live", Access::Public, live)
        .route(Method::GET, "/health/ready", Access::Public, ready)
        .route(Method::GET, "/metrics", Access::Public, metrics::handler)
        .route(
            Method::GET,
            "/api/v1/openapi.json",
            Access::Action(Action::ReadFleet),
            openapi::handler,
        )
        .merge(access::routes())
        .merge(devices::routes())
        .merge(alerts::routes())
        .merge(audit::routes())
        .merge(events::routes())
        .merge(telemetry::routes())
        .merge(twins::routes())
        .merge(crate::intel::api::routes())
        .merge(orchestrate::routes())
}

/// The API router over `state`.
pub fn router(state: AppState) -> Router {
    let limit = state.config().api.body_limit;
    api_routes()
        .into_router()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(Extension(state.clone()))
        .with_state(state)
}

/// The bearer secret of a request: the `Authorization` header, or `?token=` on a
/// WebSocket upgrade (browsers cannot set headers there).
pub fn bearer(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if from_header.is_some() {
        return from_header;
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// Authenticates a bearer secret.
pub async fn authenticate(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    let hash = secret_hash(secret);
    let h = hash.clone();
    let t = now();
    let cred = state.store(move |s| s.authenticate(&h, t)).await?;
    let unknown = || ApiError::unauthorized("unknown, expired or revoked token");
    Ok(match cred.ok_or_else(unknown)? {
        Credential::Session { user, role, .. } => Principal {
            kind: PrincipalKind::User,
            name: user.clone(),
            user: Some(user),
            role: Some(role),
            device: None,
            token_id: None,
            secret_hash: hash,
        },
        Credential::Token { token, owner_role } => Principal {
            kind: PrincipalKind::Token,
            name: token.name,
            user: Some(token.owner),
            role: Some(effective_token_role(token.role, owner_role)),
            device: None,
            token_id: Some(token.id),
            secret_hash: hash,
        },
        Credential::Device { id } => Principal {
            kind: PrincipalKind::Device,
            name: id.to_string(),
            user: None,
            role: None,
            device: Some(id),
            token_id: None,
            secret_hash: hash,
        },
    })
}

async fn guard(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned());
    let state = req.extensions().get::<AppState>().cloned();
    let resp = match (state.as_ref(), req.extensions().get::<Access>().copied()) {
        (Some(state), Some(Access::Action(action))) => match admit(state, action, req).await {
            Ok(req) => next.run(req).await,
            Err(e) => e.into_response(),
        },
        (_, Some(Access::Public)) => next.run(req).await,
        _ => ApiError::internal("route without an access rule or state").into_response(),
    };
    if let Some(state) = state {
        state
            .metrics
            .observe(&method, &route, resp.status().as_u16(), started.elapsed());
    }
    resp
}

async fn admit(state: &AppState, action: Action, req: Request) -> Result<Request, ApiError> {
    let secret = bearer(req.headers(), req.uri().query())
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let principal = authenticate(state, &secret).await?;
    let (mut parts, body) = req.into_parts();
    let target = match action {
        Action::ReadTwin | Action::DeviceSync | Action::WriteTelemetry => {
            RawPathParams::from_request_parts(&mut parts, &())
                .await
                .ok()
                .and_then(|p| {
                    p.iter()
                        .find(|(k, _)| *k == "id")
                        .and_then(|(_, v)| DeviceId::new(v).ok())
                })
        }
        _ => None,
    };
    match &target {
        Some(t) => principal.require_for_device(action, t)?,
        None => principal.require(action)?,
    }
    parts.extensions.insert(principal);
    Ok(Request::from_parts(parts, body))
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

/// `GET /health/live`: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "alive")))]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: the store answers.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "ready"), (status = 503, description = "store unavailable")))]
pub async fn ready(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> Result<Json<Value>, ApiError> {
    s.store(|st| st.user_count())
        .await
        .map_err(|e| ApiError::unavailable(format!("store not ready: {}", e.message())))?;
    Ok(Json(json!({ "status": "ready" })))
}

/// The `limit` query parameter of the paged lists (`/alerts`, `/audit`, twin
/// history): 1 to 1000.
pub fn page_limit(value: &str) -> Result<usize, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| ApiError::invalid_query("limit", "limit: must be between 1 and 1000"))
}

/// Query-string pairs in order (repeated keys kept), percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else {
        return Vec::new();
    };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
