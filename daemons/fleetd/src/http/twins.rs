//! Twin, history, rollback, conflicts, config-layer and command routes, and the
//! device sync WebSocket.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, RawPathParams, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};
use wrale_core::fleet::access::Action;
use wrale_core::fleet::registry::{DeviceRecord, GroupTree};
use wrale_core::model::{Actor, Command, CommandRequest};
use wrale_core::{DeviceId, GroupId};
use wrale_sync::hub::HubError;
use wrale_sync::transport::AxumWsTransport;
use wrale_sync::{
    ChangeHash, CommandStatus, ConfigValidator, DesiredConfig, FieldPath, FieldValue,
    LayeredConfig, Section,
};

use super::devices::device_id;
use super::{Access, ApiRoutes, query_pairs};
use crate::auth::Principal;
use crate::error::{ApiError, ApiJson, parse_json};
use crate::state::{AppState, now};
use crate::store::ConfigScope;
use crate::twins::{Planned, author_str, check_planned, stack_for, user_author, write_planned};

/// This module's routes; each carries its access rule and is checked against the
/// OpenAPI document (see [`ApiRoutes`]).
pub fn routes() -> ApiRoutes {
    use Access::Action as A;
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/v1/devices/{id}/sync",
            A(Action::DeviceSync),
            sync,
        )
        .route(
            Method::GET,
            "/api/v1/devices/{id}/twin",
            A(Action::ReadTwin),
            get_twin,
        )
        .route(
            Method::GET,
            "/api/v1/devices/{id}/history",
            A(Action::ReadFleet),
            get_history,
        )
        .route(
            Method::POST,
            "/api/v1/devices/{id}/rollback",
            A(Action::EditDesired),
            rollback,
        )
        .route(
            Method::GET,
            "/api/v1/devices/{id}/conflicts",
            A(Action::ReadFleet),
            get_conflicts,
        )
        .route(
            Method::POST,
            "/api/v1/devices/{id}/conflicts/resolve",
            A(Action::EditDesired),
            resolve_conflict,
        )
        .route(
            Method::GET,
            "/api/v1/devices/{id}/config/effective",
            A(Action::ReadFleet),
            effective_config,
        )
        .route(
            Method::POST,
            "/api/v1/devices/{id}/commands",
            A(Action::SendCommand),
            send_command,
        )
        .route(
            Method::GET,
            "/api/v1/config/fleet",
            A(Action::ReadFleet),
            get_fleet_layer,
        )
        .route(
            Method::PUT,
            "/api/v1/config/fleet",
            A(Action::EditDesired),
            put_fleet_layer,
        )
        .route(
            Method::PATCH,
            "/api/v1/config/fleet",
            A(Action::EditDesired),
            patch_fleet_layer,
        )
        .route(
            Method::GET,
            "/api/v1/config/groups/{id}",
            A(Action::ReadFleet),
            get_group_layer,
        )
        .route(
            Method::PUT,
            "/api/v1/config/groups/{id}",
            A(Action::EditDesired),
            put_group_layer,
        )
        .route(
            Method::PATCH,
            "/api/v1/config/groups/{id}",
            A(Action::EditDesired),
            patch_group_layer,
        )
        .route(
            Method::GET,
            "/api/v1/config/devices/{id}",
            A(Action::ReadFleet),
            get_device_layer,
        )
        .route(
            Method::PUT,
            "/api/v1/config/devices/{id}",
            A(Action::EditDesired),
            put_device_layer,
        )
        .route(
            Method::PATCH,
            "/api/v1/config/devices/{id}",
            A(Action::EditDesired),
            patch_device_layer,
        )
}

#[derive(OpenApi)]
#[openapi(paths(
    sync,
    get_twin,
    get_history,
    rollback,
    get_conflicts,
    resolve_conflict,
    effective_config,
    send_command,
    get_fleet_layer,
    put_fleet_layer,
    patch_fleet_layer,
    get_group_layer,
    put_group_layer,
    patch_group_layer,
    get_device_layer,
    put_device_layer,
    patch_device_layer,
))]
struct TwinDoc;

/// This module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    TwinDoc::openapi()
}

/// The group tree from the store.
pub(crate) async fn group_tree(s: &AppState) -> Result<GroupTree, ApiError> {
    super::devices::group_tree(s).await
}

fn sync_err(e: wrale_sync::Error) -> ApiError {
    ApiError::internal(format!("twin: {e}"))
}

async fn registered(s: &AppState, id: &DeviceId) -> Result<DeviceRecord, ApiError> {
    let i = id.clone();
    s.store(move |st| st.get_device(&i))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

fn fields_json(f: &BTreeMap<String, FieldValue>) -> Value {
    serde_json::to_value(f).unwrap_or(Value::Null)
}

// ---- sync

/// `GET /api/v1/devices/{id}/sync`: the device's sync WebSocket (its own
/// credential only). Binary `wrale_sync::Envelope` frames; a frame for another
/// document closes the socket with 1008 and a reason; malformed frames are
/// counted and dropped.
#[utoipa::path(get, path = "/api/v1/devices/{id}/sync", tag = "twins", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 101, description = "upgraded to the sync WebSocket"),
              (status = 400, description = "not a WebSocket upgrade"),
              (status = 401, description = "unknown or revoked credential"),
              (status = 403, description = "not this device's credential")))]
pub async fn sync(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = device_id(&id)?;
    let ws =
        ws.map_err(|e| ApiError::invalid_body(None, format!("expected a WebSocket upgrade: {e}")))?;
    let hub = s.hub.sync().clone();
    let sink = crate::telemetry::sink(&s);
    Ok(ws
        .on_upgrade(move |socket| async move {
            match hub
                .serve(&id, Box::new(AxumWsTransport::new(socket)), sink)
                .await
            {
                Ok(end) => tracing::debug!(device = %id, ?end, "sync session ended"),
                Err(e) => tracing::error!(device = %id, "sync session failed: {e}"),
            }
        })
        .into_response())
}

// ---- twin, history, rollback, conflicts

/// `GET /api/v1/devices/{id}/twin`: `{device, version, meta, desired, reported,
/// conflicts, epoch}` (a viewer, or the device itself).
#[utoipa::path(get, path = "/api/v1/devices/{id}/twin", tag = "twins", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "the twin, flat fields per section"), (status = 404, description = "no such device")))]
pub async fn get_twin(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    registered(&s, &id).await?;
    let v = s
        .hub
        .sync()
        .read(&id, |t| -> wrale_sync::Result<Value> {
            let conflicts = conflicts_json(t)?;
            Ok(json!({
                "device": id,
                "version": t.heads().iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                "epoch": t.epoch(),
                "meta": fields_json(&t.fields(Section::Meta)?),
                "desired": fields_json(&t.fields(Section::Desired)?),
                "reported": fields_json(&t.fields(Section::Reported)?),
                "conflicts": conflicts,
            }))
        })
        .map_err(sync_err)?
        .map_err(sync_err)?;
    Ok(Json(v))
}

fn conflicts_json(t: &wrale_sync::Twin) -> wrale_sync::Result<Value> {
    Ok(Value::Array(
        t.conflicts()?
            .into_iter()
            .map(|c| {
                json!({
                    "field": c.field.to_string(),
                    "policy": c.policy.name(),
                    "values": c.values.iter().map(|(v, a)| json!({"value": v, "author": author_str(a)})).collect::<Vec<_>>(),
                    "visible": c.visible,
                })
            })
            .collect(),
    ))
}

/// `GET /api/v1/devices/{id}/history`: versions newest first, `{version, author,
/// time, summary}`; `limit` (default 100, at most 1000).
#[utoipa::path(get, path = "/api/v1/devices/{id}/history", tag = "twins", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id"), ("limit" = Option<u32>, Query, description = "1..=1000, default 100")),
    responses((status = 200, description = "`{items: [{version, author, time, summary}]}` newest first"), (status = 404, description = "no such device")))]
pub async fn get_history(
    State(s): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let mut limit = 100usize;
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "limit" => {
                limit = super::page_limit(&v)?;
            }
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    format!("unknown parameter `{other}` (expected limit)"),
                ));
            }
        }
    }
    registered(&s, &id).await?;
    let history = s
        .hub
        .sync()
        .read(&id, |t| t.history())
        .map_err(sync_err)?
        .map_err(sync_err)?;
    let items: Vec<Value> = history
        .iter()
        .rev()
        .take(limit)
        .map(|v| json!({"version": v.hash.to_string(), "author": author_str(&v.author), "time": v.at, "summary": v.summary}))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Body of `POST /api/v1/devices/{id}/rollback`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to return to: a change hash from the history (or several, a set of heads).
    #[schema(value_type = Object)]
    pub version: Value,
}

fn parse_version(v: &Value) -> Result<Vec<ChangeHash>, ApiError> {
    let bad = || {
        ApiError::invalid_body(
            Some("version"),
            "version: expected a change hash (64 hex digits) or a list of them",
        )
    };
    let list: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    if list.is_empty() {
        return Err(bad());
    }
    list.into_iter()
        .map(|s| s.parse::<ChangeHash>().map_err(|_| bad()))
        .collect()
}

/// `POST /api/v1/devices/{id}/rollback` `{version}`: writes the desired values of
/// that version as a new change (by the user, `config_version` bumped), after the
/// same board check as a config layer.
#[utoipa::path(post, path = "/api/v1/devices/{id}/rollback", tag = "twins", security(("bearer" = [])), request_body = RollbackRequest,
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "`{device, version, desired}`"), (status = 400, description = "unknown version"),
              (status = 422, description = "`policy_violation`: the old config fails the board check")))]
pub async fn rollback(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let record = registered(&s, &id).await?;
    let to = parse_version(&req.version)?;
    let _held = s.hub.lock_layers().await;
    // What the rollback would write, checked before writing.
    let old = s
        .hub
        .sync()
        .read(&id, |t| -> Result<BTreeMap<String, FieldValue>, ApiError> {
            for h in &to {
                if !t.history().map_err(sync_err)?.iter().any(|v| &v.hash == h) {
                    return Err(ApiError::invalid_body(
                        Some("version"),
                        format!("version: {h} is not in this twin's history"),
                    ));
                }
            }
            t.fields_at(Section::Desired, Some(&to)).map_err(sync_err)
        })
        .map_err(sync_err)??;
    let current = s
        .hub
        .sync()
        .read(&id, |t| t.fields(Section::Desired))
        .map_err(sync_err)?
        .map_err(sync_err)?;
    let mut writes: BTreeMap<String, Option<FieldValue>> = BTreeMap::new();
    for (k, v) in &old {
        if k != "config_version" && current.get(k).is_none_or(|c| !c.same(v)) {
            writes.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in current.keys() {
        if k != "config_version" && !old.contains_key(k) {
            writes.insert(k.clone(), None);
        }
    }
    check_planned(&s, &record, &writes)?;
    let author = user_author(&p);
    write_planned(
        &s,
        &[Planned {
            device: id.clone(),
            writes: writes.clone(),
        }],
        &author,
    )?;
    let desired = s
        .hub
        .sync()
        .read(&id, |t| t.fields(Section::Desired))
        .map_err(sync_err)?
        .map_err(sync_err)?;
    let version: Vec<String> = to.iter().map(|h| h.to_string()).collect();
    s.audit_ok(
        &p,
        "twin.rollback",
        &format!("device:{id}"),
        json!({"to": version, "fields": writes.keys().collect::<Vec<_>>()}),
        Some(id.clone()),
    )
    .await;
    Ok(Json(
        json!({"device": id, "version": version, "desired": fields_json(&desired)}),
    ))
}

/// `GET /api/v1/devices/{id}/conflicts`: fields with several concurrent values,
/// their policy, every value with its author, and the value shown meanwhile.
#[utoipa::path(get, path = "/api/v1/devices/{id}/conflicts", tag = "twins", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "`{items: [{field, policy, values: [{value, author}], visible}]}`"), (status = 404, description = "no such device")))]
pub async fn get_conflicts(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    registered(&s, &id).await?;
    let items = s
        .hub
        .sync()
        .read(&id, |t| conflicts_json(t))
        .map_err(sync_err)?
        .map_err(sync_err)?;
    Ok(Json(json!({ "items": items })))
}

/// Body of `POST /api/v1/devices/{id}/conflicts/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The field, `desired.<key>` (or a bare desired key).
    pub field: String,
    /// The value to keep.
    #[schema(value_type = Object)]
    pub value: Value,
}

/// `POST /api/v1/devices/{id}/conflicts/resolve` `{field, value}`: writes the
/// chosen value over every concurrent one (a desired value is board-checked first).
#[utoipa::path(post, path = "/api/v1/devices/{id}/conflicts/resolve", tag = "twins", security(("bearer" = [])), request_body = ResolveRequest,
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "`{device, field, value, conflicts}`"), (status = 400, description = "bad field or value"),
              (status = 422, description = "`policy_violation`")))]
pub async fn resolve_conflict(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let record = registered(&s, &id).await?;
    let key = req
        .field
        .strip_prefix("desired.")
        .unwrap_or(&req.field)
        .to_owned();
    if !DesiredConfig::is_known_key(&key) {
        return Err(ApiError::invalid_body(
            Some("field"),
            format!("field: {:?} is not a desired config field", req.field),
        ));
    }
    let value: FieldValue = serde_json::from_value(req.value.clone()).map_err(|_| {
        ApiError::invalid_body(Some("value"), "value: expected a number, string or boolean")
    })?;
    let path = FieldPath::desired(key.clone());
    let _held = s.hub.lock_layers().await;
    let (mut desired, open) = s
        .hub
        .sync()
        .read(&id, |t| -> wrale_sync::Result<_> {
            let open = t.conflicts()?.iter().any(|c| c.field == path);
            Ok((t.fields(Section::Desired)?, open))
        })
        .map_err(sync_err)?
        .map_err(sync_err)?;
    if !open {
        return Err(ApiError::conflict(format!(
            "no open conflict on desired.{key}"
        )));
    }
    desired.insert(key.clone(), value.clone());
    let cfg = DesiredConfig::from_fields(&desired)
        .map_err(|e| ApiError::invalid_body(Some("value"), format!("value: {e}")))?;
    crate::twins::validator_for(&record)
        .validate(&cfg)
        .map_err(|r| {
            ApiError::policy_violation(
                &r.rule,
                format!("device {id} ({}): {}", record.model, r.reason),
            )
            .with_detail("device", id.as_str())
        })?;
    let author = user_author(&p);
    let conflicts = s
        .hub
        .sync()
        .edit(&id, |t| -> wrale_sync::Result<Value> {
            t.resolve(&path, value.clone(), &author, now())?;
            conflicts_json(t)
        })
        .map_err(sync_err)?
        .map_err(sync_err)?;
    s.audit_ok(
        &p,
        "twin.resolve",
        &format!("device:{id}"),
        json!({"field": path.to_string(), "value": value}),
        Some(id.clone()),
    )
    .await;
    Ok(Json(
        json!({"device": id, "field": path.to_string(), "value": value, "conflicts": conflicts}),
    ))
}

/// `GET /api/v1/devices/{id}/config/effective`: `{device, fields, sources}`: the effective desired config of the layers and the layer each field
/// came from (`fleet`, `group:<id>`, `device:<id>`).
#[utoipa::path(get, path = "/api/v1/devices/{id}/config/effective", tag = "config", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "`{device, fields, sources}`"), (status = 404, description = "no such device")))]
pub async fn effective_config(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let record = registered(&s, &id).await?;
    let tree = group_tree(&s).await?;
    let layers = crate::twins::all_layers(&s).await?;
    let eff = stack_for(&record, &tree, &layers);
    Ok(Json(
        json!({"device": id, "fields": fields_json(&eff.fields), "sources": eff.sources}),
    ))
}

// ---- commands

/// `POST /api/v1/devices/{id}/commands`: a `wrale_core::model::Command`
/// (`{"type": "set_fan_duty", ...}`) plus `reason`, forwarded to the connected
/// device, which checks it with its safety engine. 200 `{id, status, result}`;
/// a refusal is 422 `policy_violation` with the device's rule; 409
/// `device_offline`; 504 `timeout`.
#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", tag = "twins", security(("bearer" = [])),
    request_body(content = Object, description = "a Command (`type` plus its fields) and `reason`"),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "`{id, status, code?, message?, result?}`"),
              (status = 409, description = "`device_offline`"), (status = 422, description = "`policy_violation`: the device refused it"),
              (status = 504, description = "`timeout`")))]
pub async fn send_command(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    registered(&s, &id).await?;
    let mut map: Map<String, Value> = parse_json(&body)?;
    let reason = match map.remove("reason") {
        None => String::new(),
        Some(Value::String(r)) => r,
        Some(_) => {
            return Err(ApiError::invalid_body(
                Some("reason"),
                "reason: expected a string",
            ));
        }
    };
    let command: Command = parse_json(&serde_json::to_vec(&map).unwrap_or_default())?;
    let actor = Actor::User(p.user.clone().unwrap_or_else(|| p.name.clone()));
    let request = CommandRequest::new(actor, reason.clone(), command.clone());
    let target = format!("device:{id}");
    match s
        .hub
        .sync()
        .send_command(&id, request, s.hub.command_timeout())
        .await
    {
        Ok(reply) => {
            let verdict = match reply.status {
                CommandStatus::Done => "allowed",
                CommandStatus::Refused => "denied",
                CommandStatus::Failed => "failed",
            };
            let body = serde_json::to_value(&reply).unwrap_or(Value::Null);
            s.audit(
                &p.actor(),
                "device.command",
                &target,
                verdict,
                json!({"command": command, "reason": reason, "reply": body}),
                Some(id.clone()),
            )
            .await;
            if reply.status == CommandStatus::Refused {
                let rule = reply.code.clone().unwrap_or_else(|| "refused".into());
                return Err(ApiError::policy_violation(
                    &rule,
                    reply
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("device {id} refused the command")),
                )
                .with_detail("device", id.as_str())
                .with_detail("id", reply.id.clone()));
            }
            Ok(Json(body))
        }
        Err(HubError::Offline(_)) => Err(ApiError::device_offline(id.as_str())),
        Err(HubError::Timeout {
            id: cid, timeout, ..
        }) => {
            s.audit(
                &p.actor(),
                "device.command",
                &target,
                "failed",
                json!({"command": command, "id": cid, "error": "timeout"}),
                Some(id.clone()),
            )
            .await;
            Err(ApiError::timeout(format!(
                "device {id} did not answer command {cid} within {timeout:?} (it may still run it)"
            ))
            .with_detail("id", cid))
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

// ---- config layers

fn path_id(raw: &RawPathParams) -> &str {
    raw.iter().find(|(k, _)| *k == "id").map_or("", |(_, v)| v)
}

fn group_scope(raw: &str) -> Result<GroupId, ApiError> {
    GroupId::new(raw).map_err(|_| ApiError::not_found(format!("no group {raw:?}")))
}

/// 404 when the layer's group or device does not exist.
async fn scope_exists(s: &AppState, scope: &ConfigScope) -> Result<(), ApiError> {
    match scope {
        ConfigScope::Fleet => {}
        ConfigScope::Group(g) => {
            let gid = g.clone();
            if s.store(move |st| st.get_group(&gid)).await?.is_none() {
                return Err(ApiError::not_found(format!("no group {g}")));
            }
        }
        ConfigScope::Device(d) => {
            registered(s, d).await?;
        }
    }
    Ok(())
}

async fn get_layer(s: &AppState, scope: ConfigScope) -> Result<Json<Value>, ApiError> {
    scope_exists(s, &scope).await?;
    let sc = scope.clone();
    let layer = s.store(move |st| st.get_config_layer(&sc)).await?;
    Ok(Json(match layer {
        Some(l) => {
            json!({"scope": scope.to_string(), "fields": l.fields, "updated_at": l.updated_at, "updated_by": l.updated_by})
        }
        None => {
            json!({"scope": scope.to_string(), "fields": {}, "updated_at": null, "updated_by": null})
        }
    }))
}

/// Replaces (`merge = false`) or merges into (`null` removes a key) one layer,
/// then recomputes, board-checks and writes the effective config of every
/// affected device. Nothing is written when one device fails.
async fn change_layer(
    s: &AppState,
    p: &Principal,
    scope: ConfigScope,
    body: Map<String, Value>,
    merge: bool,
) -> Result<Json<Value>, ApiError> {
    scope_exists(s, &scope).await?;
    let _held = s.hub.lock_layers().await;
    let mut layers = crate::twins::all_layers(s).await?;
    let old_json = layers
        .get(&scope)
        .map(|l| serde_json::to_value(&l.fields).unwrap_or(Value::Null));
    let mut next: Map<String, Value> = match (merge, layers.get(&scope)) {
        (true, Some(l)) => match serde_json::to_value(&l.fields) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        _ => Map::new(),
    };
    for (k, v) in body {
        if v.is_null() {
            next.remove(&k);
        } else {
            next.insert(k, v);
        }
    }
    let new_layer = crate::twins::layer_from_json(&next)?;
    let tree = group_tree(s).await?;
    let devices = s.store(|st| st.list_devices()).await?;
    let affected: Vec<&DeviceRecord> = devices
        .iter()
        .filter(|d| !d.revoked)
        .filter(|d| match &scope {
            ConfigScope::Fleet => true,
            ConfigScope::Group(g) => d.group.as_ref().is_some_and(|dg| tree.is_within(dg, g)),
            ConfigScope::Device(id) => &d.id == id,
        })
        .collect();
    let before: Vec<LayeredConfig> = affected
        .iter()
        .map(|d| stack_for(d, &tree, &layers))
        .collect();
    if new_layer.fields.is_empty() {
        layers.remove(&scope);
    } else {
        layers.insert(scope.clone(), new_layer.clone());
    }
    let mut plans = Vec::new();
    for (d, old) in affected.iter().zip(&before) {
        let after = stack_for(d, &tree, &layers);
        let writes = crate::twins::writes_between(s, &d.id, old, &after)?;
        if writes.is_empty() {
            continue;
        }
        // Every device is checked before anything is written.
        check_planned(s, d, &writes)?;
        plans.push(Planned {
            device: d.id.clone(),
            writes,
        });
    }
    let (sc, fields, by, t) = (scope.clone(), next.clone(), p.actor(), now());
    s.store(move |st| st.put_config_layer(&sc, &fields, &by, t))
        .await?;
    let author = user_author(p);
    let written = write_planned(s, &plans, &author)?;
    s.audit_ok(
        p,
        "config.layer",
        &scope.to_string(),
        json!({"before": old_json, "after": next, "devices": written}),
        None,
    )
    .await;
    Ok(Json(
        json!({"scope": scope.to_string(), "fields": next, "devices": written}),
    ))
}

async fn layer_body(
    s: &AppState,
    p: &Principal,
    scope: ConfigScope,
    body: &[u8],
    merge: bool,
) -> Result<Json<Value>, ApiError> {
    let map: Map<String, Value> = parse_json(body)?;
    change_layer(s, p, scope, map, merge).await
}

macro_rules! layer_routes {
    ($get:ident, $put:ident, $patch:ident, $path:literal, $what:literal, $scope:expr, $($param:tt)*) => {
        #[doc = concat!("`GET ", $path, "`: the ", $what, " config layer `{scope, fields, updated_at, updated_by}`.")]
        #[utoipa::path(get, path = $path, tag = "config", security(("bearer" = [])), $($param)*
            responses((status = 200, description = "`{scope, fields, updated_at, updated_by}`"), (status = 404, description = "no such group or device")))]
        pub async fn $get(State(s): State<AppState>, raw: RawPathParams) -> Result<Json<Value>, ApiError> {
            let scope: fn(&str) -> Result<ConfigScope, ApiError> = $scope;
            get_layer(&s, scope(path_id(&raw))?).await
        }
        #[doc = concat!("`PUT ", $path, "`: replaces the ", $what, " layer (flat desired fields); affected devices are re-configured (422 `policy_violation` naming device and rule, nothing written).")]
        #[utoipa::path(put, path = $path, tag = "config", security(("bearer" = [])), $($param)*
            request_body(content = Object, description = "flat desired fields"),
            responses((status = 200, description = "`{scope, fields, devices}`"), (status = 400, description = "`invalid_body` naming the field"),
                      (status = 422, description = "`policy_violation` naming the device and rule")))]
        pub async fn $put(State(s): State<AppState>, p: Principal, raw: RawPathParams, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
            let scope: fn(&str) -> Result<ConfigScope, ApiError> = $scope;
            layer_body(&s, &p, scope(path_id(&raw))?, &body, false).await
        }
        #[doc = concat!("`PATCH ", $path, "`: merges into the ", $what, " layer (`null` removes a key); affected devices are re-configured.")]
        #[utoipa::path(patch, path = $path, tag = "config", security(("bearer" = [])), $($param)*
            request_body(content = Object, description = "flat desired fields, `null` removes"),
            responses((status = 200, description = "`{scope, fields, devices}`"), (status = 400, description = "`invalid_body` naming the field"),
                      (status = 422, description = "`policy_violation` naming the device and rule")))]
        pub async fn $patch(State(s): State<AppState>, p: Principal, raw: RawPathParams, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
            let scope: fn(&str) -> Result<ConfigScope, ApiError> = $scope;
            layer_body(&s, &p, scope(path_id(&raw))?, &body, true).await
        }
    };
}

layer_routes!(
    get_fleet_layer,
    put_fleet_layer,
    patch_fleet_layer,
    "/api/v1/config/fleet",
    "fleet",
    |_| Ok(ConfigScope::Fleet),
);
layer_routes!(
    get_group_layer,
    put_group_layer,
    patch_group_layer,
    "/api/v1/config/groups/{id}",
    "group",
    |raw| group_scope(raw).map(ConfigScope::Group),
    params(("id" = String, Path, description = "group id")),
);
layer_routes!(
    get_device_layer,
    put_device_layer,
    patch_device_layer,
    "/api/v1/config/devices/{id}",
    "device",
    |raw| device_id(raw).map(ConfigScope::Device),
    params(("id" = String, Path, description = "device id")),
);
