//! Workloads, placements, the optimizer's recommendations and rollouts
//! (docs/fleet-api.md, "Orchestration"). Bodies are JSON values shaped as the
//! OpenAPI document describes; a workload body is
//! `wrale_core::fleet::scheduler::Workload`'s JSON.

use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::error::Result;

impl Client {
    /// `GET /workloads`: `{items}`.
    pub async fn list_workloads(&self) -> Result<Value> {
        self.get(&["workloads"], &[]).await
    }

    /// `POST /workloads` (operator): declares a workload; the answer carries the
    /// scheduler pass it triggered (`{workload, placements, pending}`).
    pub async fn create_workload(&self, workload: &Value) -> Result<Value> {
        self.call(Method::POST, &["workloads"], &[], Some(workload))
            .await
    }

    /// `GET /workloads/{name}`: `{workload, placements}`.
    pub async fn get_workload(&self, name: &str) -> Result<Value> {
        self.get(&["workloads", name], &[]).await
    }

    /// `DELETE /workloads/{name}` (operator): its replicas are stopped.
    pub async fn delete_workload(&self, name: &str) -> Result<Value> {
        self.call::<(), Value>(Method::DELETE, &["workloads", name], &[], None)
            .await
    }

    /// `GET /placements`: `{items: [{workload, replica, device, since, decision}],
    /// pending, last_pass}`, optionally for one workload or device.
    pub async fn list_placements(
        &self,
        workload: Option<&str>,
        device: Option<&str>,
    ) -> Result<Value> {
        let mut q = Vec::new();
        if let Some(w) = workload {
            q.push(("workload", w.to_owned()));
        }
        if let Some(d) = device {
            q.push(("device", d.to_owned()));
        }
        self.get(&["placements"], &q).await
    }

    /// `GET /recommendations`: `{items: [{id, kind, detail, auto_apply}], expected}`.
    pub async fn list_recommendations(&self) -> Result<Value> {
        self.get(&["recommendations"], &[]).await
    }

    /// `POST /recommendations/{id}/accept` (operator).
    pub async fn accept_recommendation(&self, id: &str) -> Result<Value> {
        self.call::<(), Value>(Method::POST, &["recommendations", id, "accept"], &[], None)
            .await
    }

    /// `GET /rollouts`: `{items}`, newest first, optionally with one status.
    pub async fn list_rollouts(&self, status: Option<&str>) -> Result<Value> {
        let q: Vec<(&str, String)> = status
            .map(|s| ("status", s.to_owned()))
            .into_iter()
            .collect();
        self.get(&["rollouts"], &q).await
    }

    /// `GET /rollouts/{id}`: status, progress, waves, gate failures.
    pub async fn get_rollout(&self, id: &str) -> Result<Value> {
        self.get(&["rollouts", id], &[]).await
    }

    /// `POST /rollouts` (operator): `{id?, change, devices | group, canary, waves,
    /// soak, gates, auto_rollback}`.
    pub async fn create_rollout(&self, spec: &Value) -> Result<Value> {
        self.call(Method::POST, &["rollouts"], &[], Some(spec))
            .await
    }

    /// `POST /rollouts/{id}/{op}` (operator) with `op` one of `pause`, `resume`,
    /// `abort`, `rollback`.
    pub async fn rollout_op(&self, id: &str, op: &str) -> Result<Value> {
        self.call::<(), Value>(Method::POST, &["rollouts", id, op], &[], None)
            .await
    }
}
