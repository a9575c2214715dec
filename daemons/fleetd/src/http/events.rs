//! `GET /api/v1/events`: the live event stream over a WebSocket, filtered by
//! device, group (with subgroups) and kinds. Messages are JSON text
//! `{kind, time, device?, group?, data}`; a slow subscriber gets
//! `{kind: "lagged", time, data: {missed}}` instead of the events it missed.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{Method, Uri};
use axum::response::Response;
use serde_json::json;
use tokio::sync::broadcast;
use wrale_core::fleet::access::Action;
use wrale_core::{DeviceId, GroupId};

use super::{Access, ApiRoutes, query_pairs};
use crate::error::ApiError;
use crate::state::{AppState, EventKind, FleetEvent, now};

pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new().route(
        Method::GET,
        "/api/v1/events",
        Access::Action(Action::ReadFleet),
        events,
    )
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only about this device.
    pub device: Option<DeviceId>,
    /// Only about devices in these groups (a group and its subgroups).
    pub groups: Option<BTreeSet<GroupId>>,
    /// Only these kinds (all when `None`).
    pub kinds: Option<BTreeSet<EventKind>>,
}

impl EventFilter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &FleetEvent) -> bool {
        self.device
            .as_ref()
            .is_none_or(|d| e.device.as_ref() == Some(d))
            && self
                .groups
                .as_ref()
                .is_none_or(|gs| e.group.as_ref().is_some_and(|g| gs.contains(g)))
            && self.kinds.as_ref().is_none_or(|ks| ks.contains(&e.kind))
    }
}

/// `GET /api/v1/events` (WebSocket upgrade): query `device`, `group`, `kinds`
/// (comma-separated: reading, twin, alert, audit, device); `token` for browsers.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    params(("device" = Option<String>, Query), ("group" = Option<String>, Query),
           ("kinds" = Option<String>, Query, description = "comma-separated"), ("token" = Option<String>, Query, description = "the bearer token, for browsers")),
    responses((status = 101, description = "WebSocket of JSON events"), (status = 400, description = "`invalid_query`")))]
pub async fn events(
    State(s): State<AppState>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let mut filter = EventFilter::default();
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "device" => {
                filter.device = Some(
                    DeviceId::new(v.as_str())
                        .map_err(|e| ApiError::invalid_query("device", e.to_string()))?,
                )
            }
            "group" => {
                let g = GroupId::new(v.as_str())
                    .map_err(|e| ApiError::invalid_query("group", e.to_string()))?;
                let tree = super::devices::group_tree(&s).await?;
                if !tree.contains(&g) {
                    return Err(ApiError::invalid_query(
                        "group",
                        format!("group: no group {g}"),
                    ));
                }
                filter.groups = Some(tree.subtree(&g));
            }
            "kinds" => {
                let kinds = v
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::parse)
                    .collect::<Result<BTreeSet<EventKind>, String>>()
                    .map_err(|e| ApiError::invalid_query("kinds", e))?;
                filter.kinds = Some(kinds);
            }
            "token" => {}
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    format!("unknown parameter `{other}` (expected device, group, kinds, token)"),
                ));
            }
        }
    }
    let ws = ws.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request",
            e.body_text(),
        )
    })?;
    let rx = s.events.subscribe();
    Ok(ws.on_upgrade(move |socket| stream(socket, rx, filter, s)))
}

async fn stream(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<std::sync::Arc<FleetEvent>>,
    filter: EventFilter,
    s: AppState,
) {
    loop {
        tokio::select! {
            () = s.shutdown.cancelled() => {
                let _closing = socket.send(Message::Close(None)).await;
                break;
            }
            item = rx.recv() => {
                let text = match item {
                    Ok(e) if filter.matches(&e) => serde_json::to_string(&*e).unwrap_or_default(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        s.metrics.events_dropped.fetch_add(n, Ordering::Relaxed);
                        json!({"kind": "lagged", "time": now(), "data": {"missed": n}}).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
