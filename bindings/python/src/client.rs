//! The fleet client (`wrale_client::Client`): every call runs on the shared
//! runtime with the GIL released and returns the response model as JSON text.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};
use wrale_client::models::{
    Aggregate, AlertFilter, AuditFilter, ConfigScope, DeviceFilter, DevicePatch, EnrollRequest,
    GroupPatch, NewAlert, NewEnrollmentToken, NewGroup, NewSilence, NewToken, NewUser, Resolution,
    TelemetryQuery, UserPatch,
};
use wrale_client::{EventFilter, EventKind};
use wrale_core::model::{Command, DeviceId, GroupId};

use crate::errors::{Failure, py_err};
use crate::{block_on, from_json, to_json, ts};

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn scope(kind: &str, id: Option<&str>) -> PyResult<ConfigScope> {
    let bad = |m: String| PyErr::from(Failure::invalid_input("invalid_argument", m));
    match (kind, id) {
        ("fleet", _) => Ok(ConfigScope::Fleet),
        ("group", Some(id)) => Ok(ConfigScope::Group(
            GroupId::new(id).map_err(|e| py_err(wrale_core::Error::from(e)))?,
        )),
        ("device", Some(id)) => Ok(ConfigScope::Device(
            DeviceId::new(id).map_err(|e| py_err(wrale_core::Error::from(e)))?,
        )),
        ("group" | "device", None) => Err(bad(format!("a {kind} config scope needs an id"))),
        (other, _) => Err(bad(format!(
            "config scope {other:?}: expected fleet, group or device"
        ))),
    }
}

/// Reads a patch: every key must be one of `fields` (the patch types ignore
/// unknown ones, so a misspelt field would change nothing without a word), and
/// whether `nullable` is set to `null` (serde reads a null into an
/// `Option<Option<_>>` as absent, so the patch types lose "set it to none").
fn read_patch<T: serde::de::DeserializeOwned>(
    what: &str,
    patch_json: &str,
    fields: &[&str],
    nullable: &str,
) -> PyResult<(T, bool)> {
    let raw: Map<String, Value> = from_json(what, patch_json)?;
    if let Some(k) = raw.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(Failure::invalid_input(
            "invalid_argument",
            format!(
                "{what}: unknown field {k:?}, expected {}",
                fields.join(", ")
            ),
        )
        .into());
    }
    let null = raw.get(nullable).is_some_and(Value::is_null);
    let patch = from_json(what, patch_json)?;
    Ok((patch, null))
}

/// A client of fleetd's API.
#[pyclass(module = "wrale._native", frozen)]
#[derive(Debug)]
pub struct Client {
    inner: Arc<wrale_client::Client>,
}

impl Client {
    /// Runs one call with the GIL released and returns its value as JSON.
    fn call<F, Fut, T>(&self, py: Python<'_>, f: F) -> PyResult<String>
    where
        F: FnOnce(Arc<wrale_client::Client>) -> Fut,
        Fut: Future<Output = wrale_client::Result<T>> + Send,
        T: Serialize + Send,
    {
        let fut = f(self.inner.clone());
        let value = block_on(py, async move { fut.await.map_err(py_err) })?;
        to_json(&value)
    }
}

#[pymethods]
impl Client {
    /// A client of fleetd at `url` (`http://host:port`), with a bearer token.
    #[new]
    #[pyo3(signature = (url, token=None))]
    fn new(url: &str, token: Option<String>) -> PyResult<Client> {
        let inner = wrale_client::Client::new(url, token).map_err(py_err)?;
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// The base URL.
    #[getter]
    fn url(&self) -> String {
        self.inner.base_url().to_owned()
    }

    /// The bearer token in use.
    #[getter]
    fn token(&self) -> Option<String> {
        self.inner.token()
    }

    /// Uses another token from now on.
    #[setter]
    fn set_token(&self, token: Option<String>) {
        self.inner.set_token(token);
    }

    /// Waits until fleetd answers `/health/ready`.
    fn ready(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.ready().await })
    }

    /// Logs in; the session token is used for later calls.
    fn login(&self, py: Python<'_>, username: String, password: String) -> PyResult<String> {
        self.call(py, |c| async move { c.login(&username, &password).await })
    }

    /// Who the token belongs to.
    fn whoami(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.whoami().await })
    }

    /// Every device matching a filter (JSON: `labels` {k: v}, `group`, `site`,
    /// `rack`, `shelf`, `model`, `status`, `health`), all pages.
    #[pyo3(signature = (filter_json="{}"))]
    fn list_devices(&self, py: Python<'_>, filter_json: &str) -> PyResult<String> {
        let v: Value = from_json("device filter", filter_json)?;
        let mut f = DeviceFilter::new();
        if let Some(labels) = v.get("labels").and_then(Value::as_object) {
            for (k, val) in labels {
                f = f.label(k, val.as_str().unwrap_or_default());
            }
        }
        f.group = opt_str(&v, "group");
        f.site = opt_str(&v, "site");
        f.rack = opt_str(&v, "rack");
        f.shelf = opt_str(&v, "shelf");
        f.model = opt_str(&v, "model");
        f.status = opt_str(&v, "status");
        f.health = opt_str(&v, "health");
        self.call(py, |c| async move { c.list_all_devices(&f).await })
    }

    /// One device.
    fn get_device(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.get_device(&id).await })
    }

    /// Changes a device's labels, location or group (JSON of `DevicePatch`;
    /// `"group": null` takes it out of its group).
    fn update_device(&self, py: Python<'_>, id: String, patch_json: &str) -> PyResult<String> {
        let (mut patch, null_group): (DevicePatch, bool) = read_patch(
            "device patch",
            patch_json,
            &["labels", "location", "group"],
            "group",
        )?;
        if null_group {
            patch.group = Some(None);
        }
        self.call(py, |c| async move { c.update_device(&id, &patch).await })
    }

    /// Deletes a device record.
    fn delete_device(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.delete_device(&id).await })
    }

    /// Sends a command (JSON of `wrale_core::model::Command`) to a connected
    /// device and waits for its answer.
    fn send_command(
        &self,
        py: Python<'_>,
        id: String,
        command_json: &str,
        reason: String,
    ) -> PyResult<String> {
        let command: Command = from_json("command", command_json)?;
        self.call(
            py,
            |c| async move { c.send_command(&id, command, reason).await },
        )
    }

    /// Every group.
    fn list_groups(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.list_groups().await })
    }

    /// Creates a group (JSON of `NewGroup`: `id`, `name`, `parent`).
    fn create_group(&self, py: Python<'_>, group_json: &str) -> PyResult<String> {
        let group: NewGroup = from_json("group", group_json)?;
        self.call(py, |c| async move { c.create_group(&group).await })
    }

    /// One group.
    fn get_group(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.get_group(&id).await })
    }

    /// Changes a group (JSON of `GroupPatch`; `"parent": null` makes it a root).
    fn update_group(&self, py: Python<'_>, id: String, patch_json: &str) -> PyResult<String> {
        let (mut patch, null_parent): (GroupPatch, bool) =
            read_patch("group patch", patch_json, &["name", "parent"], "parent")?;
        if null_parent {
            patch.parent = Some(None);
        }
        self.call(py, |c| async move { c.update_group(&id, &patch).await })
    }

    /// Deletes a group.
    fn delete_group(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.delete_group(&id).await })
    }

    /// A device's twin as fleetd holds it.
    fn get_twin(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.get_twin(&id).await })
    }

    /// A twin's history.
    fn twin_history(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.twin_history(&id).await })
    }

    /// A twin's open conflicts.
    fn twin_conflicts(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.conflicts(&id).await })
    }

    /// A config layer (`fleet`, `group` + id, `device` + id).
    #[pyo3(signature = (scope_kind, id=None))]
    fn get_config(&self, py: Python<'_>, scope_kind: &str, id: Option<&str>) -> PyResult<String> {
        let s = scope(scope_kind, id)?;
        self.call(py, |c| async move { c.get_config(&s).await })
    }

    /// Merges fields (JSON object; `null` removes one) into a config layer.
    #[pyo3(signature = (scope_kind, patch_json, id=None))]
    fn patch_config(
        &self,
        py: Python<'_>,
        scope_kind: &str,
        patch_json: &str,
        id: Option<&str>,
    ) -> PyResult<String> {
        let s = scope(scope_kind, id)?;
        let patch: Map<String, Value> = from_json("config patch", patch_json)?;
        self.call(py, |c| async move { c.patch_config(&s, &patch).await })
    }

    /// Replaces a config layer.
    #[pyo3(signature = (scope_kind, layer_json, id=None))]
    fn put_config(
        &self,
        py: Python<'_>,
        scope_kind: &str,
        layer_json: &str,
        id: Option<&str>,
    ) -> PyResult<String> {
        let s = scope(scope_kind, id)?;
        let layer: Map<String, Value> = from_json("config layer", layer_json)?;
        self.call(py, |c| async move { c.put_config(&s, &layer).await })
    }

    /// A device's effective config with the origin of every field.
    fn effective_config(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.effective_config(&id).await })
    }

    /// One metric of one device over a range (ms since the epoch; server
    /// defaults when absent), at `resolution` (`auto`, `raw`, `1m`, ...).
    #[pyo3(signature = (id, metric, from_ms=None, to_ms=None, resolution="auto"))]
    fn device_telemetry(
        &self,
        py: Python<'_>,
        id: String,
        metric: String,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        resolution: &str,
    ) -> PyResult<String> {
        let mut q = TelemetryQuery::new(metric);
        q.from = from_ms.map(ts);
        q.to = to_ms.map(ts);
        q.resolution = from_json::<Resolution>("resolution", &Value::from(resolution).to_string())?;
        self.call(py, |c| async move { c.device_telemetry(&id, &q).await })
    }

    /// Every alert matching `state` (`raised`, `acked`, `cleared`, `active`),
    /// `device` and `severity`, newest first.
    #[pyo3(signature = (state=None, device=None, severity=None))]
    fn list_alerts(
        &self,
        py: Python<'_>,
        state: Option<String>,
        device: Option<String>,
        severity: Option<String>,
    ) -> PyResult<String> {
        let f = AlertFilter {
            state,
            device,
            severity,
            ..AlertFilter::default()
        };
        self.call(py, |c| async move { c.list_all_alerts(&f).await })
    }

    /// Acknowledges an alert.
    fn ack_alert(&self, py: Python<'_>, id: i64) -> PyResult<String> {
        self.call(py, |c| async move { c.ack_alert(id).await })
    }

    /// Clears an alert.
    fn clear_alert(&self, py: Python<'_>, id: i64) -> PyResult<String> {
        self.call(py, |c| async move { c.clear_alert(id).await })
    }

    /// Audit entries matching `actor`, `target` and `action`, newest first.
    #[pyo3(signature = (actor=None, target=None, action=None))]
    fn audit(
        &self,
        py: Python<'_>,
        actor: Option<String>,
        target: Option<String>,
        action: Option<String>,
    ) -> PyResult<String> {
        let f = AuditFilter {
            actor,
            target,
            action,
            ..AuditFilter::default()
        };
        self.call(py, |c| async move { c.audit_all(&f).await })
    }

    /// Rollouts, newest first, optionally with one `status` (`{items}`).
    #[pyo3(signature = (status=None))]
    fn list_rollouts(&self, py: Python<'_>, status: Option<String>) -> PyResult<String> {
        self.call(
            py,
            |c| async move { c.list_rollouts(status.as_deref()).await },
        )
    }

    /// One rollout: status, progress, waves, gate failures.
    fn get_rollout(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.get_rollout(&id).await })
    }

    /// Starts a rollout (JSON: `change`, `devices` or `group`, `canary`, `waves`,
    /// `soak`, `gates`, `auto_rollback`).
    fn create_rollout(&self, py: Python<'_>, spec_json: &str) -> PyResult<String> {
        let spec: Value = from_json("rollout", spec_json)?;
        self.call(py, |c| async move { c.create_rollout(&spec).await })
    }

    /// `pause`, `resume`, `abort` or `rollback` a rollout.
    fn rollout_op(&self, py: Python<'_>, id: String, op: String) -> PyResult<String> {
        self.call(py, |c| async move { c.rollout_op(&id, &op).await })
    }

    /// Creates an enrollment token (JSON of `NewEnrollmentToken`: `group`, `uses`,
    /// `expires_in`, `labels`); the token is in the answer, once.
    #[pyo3(signature = (request_json="{}"))]
    fn create_enrollment_token(&self, py: Python<'_>, request_json: &str) -> PyResult<String> {
        let req: NewEnrollmentToken = from_json("enrollment token", request_json)?;
        self.call(py, |c| async move { c.create_enrollment_token(&req).await })
    }

    /// Exchanges an enrollment token for a device credential (JSON of `EnrollRequest`).
    fn enroll(&self, py: Python<'_>, request_json: &str) -> PyResult<String> {
        let req: EnrollRequest = from_json("enroll request", request_json)?;
        self.call(py, |c| async move { c.enroll(&req).await })
    }

    /// Revokes the session token in use (`/auth/logout`) and forgets it.
    fn logout(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.logout().await })
    }

    /// Every user (admin).
    fn list_users(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.list_users().await })
    }

    /// One user (admin).
    fn get_user(&self, py: Python<'_>, name: String) -> PyResult<String> {
        self.call(py, |c| async move { c.get_user(&name).await })
    }

    /// Creates a user (admin; JSON of `NewUser`: `name`, `password`, `role`).
    fn create_user(&self, py: Python<'_>, user_json: &str) -> PyResult<String> {
        let user: NewUser = from_json("user", user_json)?;
        self.call(py, |c| async move { c.create_user(&user).await })
    }

    /// Changes a user's `password` or `role` (admin; JSON of `UserPatch`).
    fn update_user(&self, py: Python<'_>, name: String, patch_json: &str) -> PyResult<String> {
        let patch: UserPatch = from_json("user patch", patch_json)?;
        self.call(py, |c| async move { c.update_user(&name, &patch).await })
    }

    /// Deletes a user (admin).
    fn delete_user(&self, py: Python<'_>, name: String) -> PyResult<String> {
        self.call(py, |c| async move { c.delete_user(&name).await })
    }

    /// The caller's API tokens (every token for an admin), without secrets.
    fn list_tokens(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.list_tokens().await })
    }

    /// Creates an API token (JSON of `NewToken`: `name`, `role`, `expires_in`);
    /// the secret (`token`) is in the answer, once.
    fn create_token(&self, py: Python<'_>, token_json: &str) -> PyResult<String> {
        let token: NewToken = from_json("token", token_json)?;
        self.call(py, |c| async move { c.create_token(&token).await })
    }

    /// Revokes an API token by id.
    fn revoke_token(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.revoke_token(&id).await })
    }

    /// Every enrollment token (admin), without secrets.
    fn list_enrollment_tokens(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.list_enrollment_tokens().await })
    }

    /// Deletes an enrollment token (admin).
    fn delete_enrollment_token(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.delete_enrollment_token(&id).await })
    }

    /// Revokes a device's credential and closes its live session (admin).
    fn revoke_device(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.revoke_device(&id).await })
    }

    /// The devices on the same shelf and rack (`same_shelf`, `same_rack`).
    fn neighbours(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.neighbours(&id).await })
    }

    /// Sites, racks, shelves and their device ids.
    fn topology(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.topology().await })
    }

    /// Writes the desired values of a twin version (JSON, as `twin_history`
    /// lists it) as a new change.
    fn twin_rollback(&self, py: Python<'_>, id: String, version_json: &str) -> PyResult<String> {
        let version: Value = from_json("version", version_json)?;
        self.call(py, |c| async move { c.rollback(&id, version).await })
    }

    /// Resolves a manual-policy conflict on `field` with `value_json`.
    fn resolve_conflict(
        &self,
        py: Python<'_>,
        id: String,
        field: String,
        value_json: &str,
    ) -> PyResult<String> {
        let value: Value = from_json("value", value_json)?;
        self.call(py, |c| async move {
            c.resolve_conflict(&id, &field, value).await
        })
    }

    /// One metric aggregated (`agg`: `avg`, `min`, `max`) across a group and its
    /// subgroups, at `resolution` (`auto`, `1m`, `1h`).
    #[pyo3(signature = (id, metric, from_ms=None, to_ms=None, resolution="auto", agg=None))]
    #[allow(clippy::too_many_arguments)]
    fn group_telemetry(
        &self,
        py: Python<'_>,
        id: String,
        metric: String,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        resolution: &str,
        agg: Option<&str>,
    ) -> PyResult<String> {
        let mut q = TelemetryQuery::new(metric);
        q.from = from_ms.map(ts);
        q.to = to_ms.map(ts);
        q.resolution = from_json::<Resolution>("resolution", &Value::from(resolution).to_string())?;
        q.agg = agg
            .map(|a| from_json::<Aggregate>("agg", &Value::from(a).to_string()))
            .transpose()?;
        self.call(py, |c| async move { c.group_telemetry(&id, &q).await })
    }

    /// Raises an alert (JSON of `NewAlert`: `device`, `code`, `severity`,
    /// `message`, `key`); an active alert of the same key is returned instead.
    fn raise_alert(&self, py: Python<'_>, alert_json: &str) -> PyResult<String> {
        let alert: NewAlert = from_json("alert", alert_json)?;
        self.call(py, |c| async move { c.raise_alert(&alert).await })
    }

    /// The analyzer's latest pass over the fleet.
    fn fleet_analysis(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.fleet_analysis().await })
    }

    /// The latest analysis of one device.
    fn device_analysis(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.device_analysis(&id).await })
    }

    /// The hot spots, hottest first.
    fn hot_spots(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.hot_spots().await })
    }

    /// The open fleet alerts of the alert book.
    fn fleet_alerts(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.fleet_alerts().await })
    }

    /// The silence windows for fleet alerts.
    fn list_silences(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.list_silences().await })
    }

    /// Creates a silence (JSON of `NewSilence`: `rule`, `device`, `key_prefix`,
    /// `duration` or `until`, `comment`).
    fn create_silence(&self, py: Python<'_>, silence_json: &str) -> PyResult<String> {
        let silence: NewSilence = from_json("silence", silence_json)?;
        self.call(py, |c| async move { c.create_silence(&silence).await })
    }

    /// Deletes a silence.
    fn delete_silence(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.delete_silence(&id).await })
    }

    /// Webhook deliveries given up.
    fn dead_letters(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.dead_letters().await })
    }

    /// Deletes a dead letter.
    fn delete_dead_letter(&self, py: Python<'_>, id: u64) -> PyResult<String> {
        self.call(py, |c| async move { c.delete_dead_letter(id).await })
    }

    /// Every workload (`{items}`).
    fn list_workloads(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.list_workloads().await })
    }

    /// One workload with its placements (`{workload, placements}`).
    fn get_workload(&self, py: Python<'_>, name: String) -> PyResult<String> {
        self.call(py, |c| async move { c.get_workload(&name).await })
    }

    /// Declares a workload (JSON: `name`, `command`, `cpu_pct`, `power_w`,
    /// `replicas`, `priority`, `constraints`); the answer carries the scheduler
    /// pass it ran (`{workload, placements, pending}`).
    fn create_workload(&self, py: Python<'_>, workload_json: &str) -> PyResult<String> {
        let workload: Value = from_json("workload", workload_json)?;
        self.call(py, |c| async move { c.create_workload(&workload).await })
    }

    /// Deletes a workload; its replicas are stopped (`{deleted, decisions}`).
    fn delete_workload(&self, py: Python<'_>, name: String) -> PyResult<String> {
        self.call(py, |c| async move { c.delete_workload(&name).await })
    }

    /// The placements, optionally of one workload or device
    /// (`{items, pending, last_pass}`).
    #[pyo3(signature = (workload=None, device=None))]
    fn list_placements(
        &self,
        py: Python<'_>,
        workload: Option<String>,
        device: Option<String>,
    ) -> PyResult<String> {
        self.call(py, |c| async move {
            c.list_placements(workload.as_deref(), device.as_deref())
                .await
        })
    }

    /// The optimizer's recommendations (`{items, expected, auto_apply}`).
    fn list_recommendations(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |c| async move { c.list_recommendations().await })
    }

    /// Accepts (applies) a recommendation of the current plan.
    fn accept_recommendation(&self, py: Python<'_>, id: String) -> PyResult<String> {
        self.call(py, |c| async move { c.accept_recommendation(&id).await })
    }

    /// Opens the live event stream, filtered by `device`, `group` and `kinds`.
    #[pyo3(signature = (device=None, group=None, kinds=None))]
    fn events(
        &self,
        py: Python<'_>,
        device: Option<String>,
        group: Option<String>,
        kinds: Option<Vec<String>>,
    ) -> PyResult<EventStream> {
        let mut f = EventFilter::new();
        f.device = device;
        f.group = group;
        for k in kinds.unwrap_or_default() {
            let kind: EventKind = k.parse().map_err(|e| {
                PyErr::from(Failure::invalid_input(
                    "invalid_argument",
                    format!("event kind {k:?}: {e}"),
                ))
            })?;
            f = f.kind(kind);
        }
        let c = self.inner.clone();
        let stream = block_on(py, async move { c.events(&f).await.map_err(py_err) })?;
        Ok(EventStream {
            stream: Arc::new(tokio::sync::Mutex::new(Some(stream))),
            stop: Arc::new(tokio::sync::Notify::new()),
            closed: Arc::new(AtomicBool::new(false)),
            ended: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A live event stream; `close` is the stop handle (also from another thread).
#[pyclass(module = "wrale._native", frozen)]
#[derive(Debug)]
pub struct EventStream {
    stream: Arc<tokio::sync::Mutex<Option<wrale_client::EventStream>>>,
    stop: Arc<tokio::sync::Notify>,
    closed: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
}

#[pymethods]
impl EventStream {
    /// The next event as JSON; `None` when the stream ended or was closed (see
    /// `ended`) or when `timeout_s` passed first.
    #[pyo3(signature = (timeout_s=None))]
    fn next(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<Option<String>> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let (stream, stop, ended) = (self.stream.clone(), self.stop.clone(), self.ended.clone());
        let timeout = timeout_s.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let event = block_on(py, async move {
            let mut guard = stream.lock().await;
            let Some(s) = guard.as_mut() else {
                return Ok(None);
            };
            let sleep = async {
                match timeout {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                e = s.next_event() => match e {
                    Some(Ok(e)) => Ok(Some(e)),
                    Some(Err(e)) => Err(py_err(e)),
                    None => {
                        ended.store(true, Ordering::SeqCst);
                        Ok(None)
                    }
                },
                () = stop.notified() => Ok(None),
                () = sleep => Ok(None),
            }
        })?;
        event.map(|e| to_json(&e)).transpose()
    }

    /// Whether the stream ended (fleetd closed it) or was closed.
    #[getter]
    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst)
    }

    /// Stops the stream (wakes a waiting `next`) and closes the WebSocket.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.notify_one();
        let stream = self.stream.clone();
        block_on(py, async move {
            let s = stream.lock().await.take();
            if let Some(s) = s {
                s.close().await;
            }
            Ok(())
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<EventStream>()
}
