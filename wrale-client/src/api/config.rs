//! Twins (desired/reported, history, rollback, conflicts) and config layers.

use reqwest::Method;
use serde_json::Value;

use super::access::ListOf;
use crate::client::Client;
use crate::error::Result;
use crate::models::{ConfigScope, Conflict, EffectiveConfig, JsonMap, Twin, TwinVersion};

impl Client {
    /// `GET /devices/{id}/twin`.
    pub async fn get_twin(&self, id: &str) -> Result<Twin> {
        self.get(&["devices", id, "twin"], &[]).await
    }

    /// `GET /devices/{id}/history`: twin versions, newest first.
    pub async fn twin_history(&self, id: &str) -> Result<Vec<TwinVersion>> {
        let l: ListOf<TwinVersion> = self.get(&["devices", id, "history"], &[]).await?;
        Ok(l.into_vec())
    }

    /// `POST /devices/{id}/rollback`: writes the desired values of `version` (as
    /// listed by [`twin_history`](Client::twin_history)) as a new change (operator).
    pub async fn rollback(&self, id: &str, version: Value) -> Result<Value> {
        let body = serde_json::json!({ "version": version });
        self.call(Method::POST, &["devices", id, "rollback"], &[], Some(&body))
            .await
    }

    /// `GET /devices/{id}/conflicts`: unresolved manual-policy conflicts.
    pub async fn conflicts(&self, id: &str) -> Result<Vec<Conflict>> {
        let l: ListOf<Conflict> = self.get(&["devices", id, "conflicts"], &[]).await?;
        Ok(l.into_vec())
    }

    /// `POST /devices/{id}/conflicts/resolve`: picks `value` for `field` (operator).
    pub async fn resolve_conflict(&self, id: &str, field: &str, value: Value) -> Result<Value> {
        let body = serde_json::json!({ "field": field, "value": value });
        self.call(
            Method::POST,
            &["devices", id, "conflicts", "resolve"],
            &[],
            Some(&body),
        )
        .await
    }

    /// `GET /config/...`: one config layer (flat desired fields).
    pub async fn get_config(&self, scope: &ConfigScope) -> Result<JsonMap> {
        self.get(&scope.segments(), &[]).await
    }

    /// `PUT /config/...`: replaces a layer. fleetd validates every affected
    /// device's effective config first (`policy_violation` and nothing written).
    pub async fn put_config(&self, scope: &ConfigScope, layer: &JsonMap) -> Result<JsonMap> {
        self.call(Method::PUT, &scope.segments(), &[], Some(layer))
            .await
    }

    /// `PATCH /config/...`: merges into a layer; a `null` value removes the key.
    pub async fn patch_config(&self, scope: &ConfigScope, patch: &JsonMap) -> Result<JsonMap> {
        self.call(Method::PATCH, &scope.segments(), &[], Some(patch))
            .await
    }

    /// `GET /devices/{id}/config/effective`: the merged config and each field's layer.
    pub async fn effective_config(&self, id: &str) -> Result<EffectiveConfig> {
        self.get(&["devices", id, "config", "effective"], &[]).await
    }
}
