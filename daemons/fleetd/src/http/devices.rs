//! Devices, groups and the physical topology.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use utoipa::ToSchema;
use wrale_core::fleet::access::Action;
use wrale_core::fleet::registry::{
    DeviceQuery, DeviceRecord, GroupTree, Neighbours, Page, Topology, neighbours, query_devices,
    topology,
};
use wrale_core::model::Location;
use wrale_core::{DeviceId, GroupId};

use super::{Access, ApiRoutes, query_pairs};
use crate::auth::Principal;
use crate::error::{ApiError, ApiJson};
use crate::state::{AppState, EventKind, now};
use crate::store::{DevicePatch, GroupRecord};

pub(super) fn routes() -> ApiRoutes {
    use Access::Action as A;
    ApiRoutes::new()
        .route(
            Method::GET,
            "/api/v1/devices",
            A(Action::ReadFleet),
            list_devices,
        )
        .route(
            Method::GET,
            "/api/v1/devices/{id}",
            A(Action::ReadFleet),
            get_device,
        )
        .route(
            Method::PATCH,
            "/api/v1/devices/{id}",
            A(Action::EditDevice),
            patch_device,
        )
        .route(
            Method::DELETE,
            "/api/v1/devices/{id}",
            A(Action::DeleteDevice),
            delete_device,
        )
        .route(
            Method::POST,
            "/api/v1/devices/{id}/revoke",
            A(Action::RevokeDevice),
            revoke_device,
        )
        .route(
            Method::GET,
            "/api/v1/devices/{id}/neighbours",
            A(Action::ReadFleet),
            device_neighbours,
        )
        .route(
            Method::GET,
            "/api/v1/groups",
            A(Action::ReadFleet),
            list_groups,
        )
        .route(
            Method::POST,
            "/api/v1/groups",
            A(Action::ManageGroups),
            create_group,
        )
        .route(
            Method::GET,
            "/api/v1/groups/{id}",
            A(Action::ReadFleet),
            get_group,
        )
        .route(
            Method::PATCH,
            "/api/v1/groups/{id}",
            A(Action::ManageGroups),
            patch_group,
        )
        .route(
            Method::DELETE,
            "/api/v1/groups/{id}",
            A(Action::ManageGroups),
            delete_group,
        )
        .route(
            Method::GET,
            "/api/v1/topology",
            A(Action::ReadFleet),
            get_topology,
        )
}

/// A path `{id}` as a device id (404 when it cannot be one).
pub(crate) fn device_id(raw: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(raw).map_err(|_| ApiError::not_found(format!("no device {raw:?}")))
}

fn group_id(raw: &str) -> Result<GroupId, ApiError> {
    GroupId::new(raw).map_err(|_| ApiError::not_found(format!("no group {raw:?}")))
}

/// The group tree from the store.
pub(crate) async fn group_tree(s: &AppState) -> Result<GroupTree, ApiError> {
    let groups = s.store(|st| st.list_groups()).await?;
    GroupTree::new(groups.into_iter().map(|g| (g.id, g.parent)))
        .map_err(|e| ApiError::internal(format!("stored groups: {e}")))
}

/// `GET /api/v1/devices`: filters `label=k=v` (repeatable), `group` (with
/// subgroups), `site`, `rack`, `shelf`, `model`, `status`, `health`; `limit`, `cursor`.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", security(("bearer" = [])),
    params(("label" = Option<String>, Query, description = "key=value, repeatable"),
           ("group" = Option<String>, Query), ("site" = Option<String>, Query), ("rack" = Option<String>, Query),
           ("shelf" = Option<String>, Query), ("model" = Option<String>, Query), ("status" = Option<String>, Query),
           ("health" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "1..=500, default 50"),
           ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "`{items, next_cursor}`"), (status = 400, description = "`invalid_query` naming the parameter")))]
pub async fn list_devices(
    State(s): State<AppState>,
    uri: Uri,
) -> Result<Json<Page<DeviceRecord>>, ApiError> {
    let (query, page) = DeviceQuery::from_pairs(&query_pairs(uri.query()))
        .map_err(|e| ApiError::invalid_query(&e.param, e.to_string()))?;
    let tree = group_tree(&s).await?;
    let devices = s.store(|st| st.list_devices()).await?;
    Ok(Json(query_devices(&devices, &query, &tree, &page)))
}

async fn find_device(s: &AppState, id: &DeviceId) -> Result<DeviceRecord, ApiError> {
    let i = id.clone();
    s.store(move |st| st.get_device(&i))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

/// `GET /api/v1/devices/{id}`.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "the device record"), (status = 404, description = "no such device")))]
pub async fn get_device(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    Ok(Json(find_device(&s, &device_id(&id)?).await?))
}

fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /api/v1/devices/{id}` (each given field replaces).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatchBody {
    /// All labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Location.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub location: Option<Location>,
    /// Group (`null`: none).
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub group: Option<Option<GroupId>>,
}

/// `PATCH /api/v1/devices/{id}`: labels, location, group.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])), request_body = DevicePatchBody,
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "the updated record"), (status = 404, description = "no such device")))]
pub async fn patch_device(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DevicePatchBody>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let id = device_id(&id)?;
    let patch = DevicePatch {
        labels: req.labels,
        location: req.location,
        group: req.group,
    };
    // A move to another group: the new group's layers are checked before the
    // move and written into the twin after it (the layers stay locked meanwhile).
    let held = match &patch.group {
        Some(_) => Some(s.hub.lock_layers().await),
        None => None,
    };
    let regroup = match &patch.group {
        Some(group) => {
            let old = find_device(&s, &id).await?;
            if old.group == *group {
                None
            } else {
                crate::twins::plan_regroup(&s, &old, group.as_ref()).await?
            }
        }
        None => None,
    };
    let (i, pt) = (id.clone(), patch.clone());
    let device = s.store(move |st| st.update_device(&i, &pt)).await?;
    if let Some(plan) = regroup {
        crate::twins::write_planned(&s, &[plan], &crate::twins::user_author(&p))?;
    }
    drop(held);
    let changes = json!({"labels": patch.labels, "location": patch.location, "group": patch.group});
    s.audit_ok(
        &p,
        "device.update",
        &format!("device:{id}"),
        changes,
        Some(id.clone()),
    )
    .await;
    s.publish(
        EventKind::Device,
        Some(id),
        json!({"event": "updated", "device": device}),
    )
    .await;
    Ok(Json(device))
}

/// `DELETE /api/v1/devices/{id}`: removes it (its live session is closed).
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such device")))]
pub async fn delete_device(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = device_id(&id)?;
    let i = id.clone();
    s.store(move |st| st.delete_device(&i)).await?;
    s.hub.disconnect(&id);
    s.audit_ok(
        &p,
        "device.delete",
        &format!("device:{id}"),
        Value::Null,
        Some(id.clone()),
    )
    .await;
    s.publish(
        EventKind::Device,
        Some(id.clone()),
        json!({"event": "deleted", "id": id}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/devices/{id}/revoke`: the credential stops working at once and
/// the live session is closed; the device may enroll again with a new token.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "the revoked record"), (status = 404, description = "no such device")))]
pub async fn revoke_device(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let id = device_id(&id)?;
    let i = id.clone();
    let device = s.store(move |st| st.revoke_device(&i)).await?;
    s.hub.disconnect(&id);
    s.audit_ok(
        &p,
        "device.revoke",
        &format!("device:{id}"),
        Value::Null,
        Some(id.clone()),
    )
    .await;
    s.publish(
        EventKind::Device,
        Some(id),
        json!({"event": "revoked", "device": device}),
    )
    .await;
    Ok(Json(device))
}

/// `GET /api/v1/devices/{id}/neighbours`: same shelf, same rack.
#[utoipa::path(get, path = "/api/v1/devices/{id}/neighbours", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, description = "`{same_shelf, same_rack}`"), (status = 404, description = "no such device")))]
pub async fn device_neighbours(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Neighbours>, ApiError> {
    let device = find_device(&s, &device_id(&id)?).await?;
    let all = s.store(|st| st.list_devices()).await?;
    Ok(Json(neighbours(&device, &all)))
}

/// `GET /api/v1/groups`.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", security(("bearer" = [])),
    responses((status = 200, body = [GroupRecord])))]
pub async fn list_groups(State(s): State<AppState>) -> Result<Json<Vec<GroupRecord>>, ApiError> {
    Ok(Json(s.store(|st| st.list_groups()).await?))
}

/// Body of `POST /api/v1/groups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Id (DNS label).
    #[schema(value_type = String)]
    pub id: GroupId,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Parent group.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub parent: Option<GroupId>,
}

async fn check_parent_exists(s: &AppState, parent: Option<&GroupId>) -> Result<(), ApiError> {
    if let Some(parent) = parent {
        let pid = parent.clone();
        if s.store(move |st| st.get_group(&pid)).await?.is_none() {
            return Err(ApiError::invalid_body(
                Some("parent"),
                format!("parent: no group {parent}"),
            ));
        }
    }
    Ok(())
}

/// `POST /api/v1/groups`.
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", security(("bearer" = [])), request_body = NewGroup,
    responses((status = 201, body = GroupRecord), (status = 409, description = "id taken")))]
pub async fn create_group(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<NewGroup>,
) -> Result<(StatusCode, Json<GroupRecord>), ApiError> {
    check_parent_exists(&s, req.parent.as_ref()).await?;
    let g = GroupRecord {
        name: req.name.unwrap_or_else(|| req.id.to_string()),
        id: req.id,
        parent: req.parent,
        created_at: now(),
    };
    let group = s.store(move |st| st.create_group(&g)).await?;
    s.audit_ok(
        &p,
        "group.create",
        &format!("group:{}", group.id),
        json!({"parent": group.parent}),
        None,
    )
    .await;
    Ok((StatusCode::CREATED, Json(group)))
}

/// `GET /api/v1/groups/{id}`.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "group id")),
    responses((status = 200, body = GroupRecord), (status = 404, description = "no such group")))]
pub async fn get_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = group_id(&id)?;
    let i = id.clone();
    let group = s
        .store(move |st| st.get_group(&i))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no group {id}")))?;
    let tree = group_tree(&s).await?;
    let mut v = serde_json::to_value(&group).map_err(|e| ApiError::internal(e.to_string()))?;
    v["children"] = json!(tree.children(&id));
    v["ancestors"] = json!(tree.ancestors(&id));
    Ok(Json(v))
}

/// Body of `PATCH /api/v1/groups/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New parent (`null`: a root group).
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub parent: Option<Option<GroupId>>,
}

/// `PATCH /api/v1/groups/{id}`: rename or re-parent (a cycle is refused, 409).
#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "groups", security(("bearer" = [])), request_body = GroupPatch,
    params(("id" = String, Path, description = "group id")),
    responses((status = 200, body = GroupRecord), (status = 409, description = "would make a cycle")))]
pub async fn patch_group(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GroupPatch>,
) -> Result<Json<GroupRecord>, ApiError> {
    let id = group_id(&id)?;
    if let Some(Some(parent)) = &req.parent {
        check_parent_exists(&s, Some(parent)).await?;
    }
    let (i, name, parent) = (id.clone(), req.name.clone(), req.parent.clone());
    let group = s
        .store(move |st| st.update_group(&i, name.as_deref(), parent.as_ref().map(Option::as_ref)))
        .await?;
    s.audit_ok(
        &p,
        "group.update",
        &format!("group:{id}"),
        json!({"name": req.name, "parent": req.parent}),
        None,
    )
    .await;
    Ok(Json(group))
}

/// `DELETE /api/v1/groups/{id}`: only an empty group (no subgroups, no devices).
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "group id")),
    responses((status = 204, description = "deleted"), (status = 409, description = "not empty")))]
pub async fn delete_group(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = group_id(&id)?;
    let i = id.clone();
    s.store(move |st| st.delete_group(&i)).await?;
    s.audit_ok(
        &p,
        "group.delete",
        &format!("group:{id}"),
        Value::Null,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/topology`: sites -> racks -> shelves -> device ids.
#[utoipa::path(get, path = "/api/v1/topology", tag = "devices", security(("bearer" = [])),
    responses((status = 200, description = "`{sites: [{name, racks: [{name, shelves: [{name, devices}], unshelved}], unracked}], unplaced}`")))]
pub async fn get_topology(State(s): State<AppState>) -> Result<Json<Topology>, ApiError> {
    let devices = s.store(|st| st.list_devices()).await?;
    Ok(Json(topology(&devices)))
}
