//! The fleet's local routes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use crate::auth::Principal;
use crate::error::{ApiError, ApiJson};
use crate::http::ApiState;

/// `PATCH /api/v1/twin/desired` (operator): flat desired fields, as in
/// fleetd's config layers (`{"fan_profile": "cool", "warn_c": 65, "gpio.17":
/// "high", "workload.cam": true}`; `null` removes a key). Validated against the
/// board floor and the local policy (422 `policy_violation` with the rule), then
/// written by the local operator and applied; merged with the fleet's edits on
/// the next sync.
pub async fn patch_desired(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiJson(patch): ApiJson<BTreeMap<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    tracing::info!(token = %who.name, fields = ?patch.keys().collect::<Vec<_>>(), "local desired edit");
    s.fleet.patch_desired(patch, &who.name).await.map(Json)
}
