//! The fleet client (`wrale_client::Client`). Every network call is an async
//! export (a Kotlin `suspend` function) run on the library's runtime; devices
//! and groups cross as records, other API answers as JSON text in fleetd's
//! shapes (docs/fleet-api.md).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value};
use wrale_client::models::{
    AlertFilter, AuditFilter, ConfigScope, DeviceFilter, DevicePatch, EnrollRequest,
    NewEnrollmentToken, NewGroup, Resolution, TelemetryQuery,
};
use wrale_client::{EventFilter, EventKind};
use wrale_core::model::{Command, DeviceId, GroupId};

use crate::types::Group;
use crate::{DeviceSummary, WraleError, from_json, from_name, spawn, to_json, ts};

fn scope(kind: &str, id: Option<&str>) -> Result<ConfigScope, WraleError> {
    match (kind, id) {
        ("fleet", _) => Ok(ConfigScope::Fleet),
        ("group", Some(id)) => Ok(ConfigScope::Group(
            GroupId::new(id).map_err(wrale_core::Error::from)?,
        )),
        ("device", Some(id)) => Ok(ConfigScope::Device(
            DeviceId::new(id).map_err(wrale_core::Error::from)?,
        )),
        ("group" | "device", None) => Err(WraleError::invalid_argument(format!(
            "a {kind} config scope needs an id"
        ))),
        (other, _) => Err(WraleError::invalid_argument(format!(
            "config scope {other:?}: expected fleet, group or device"
        ))),
    }
}

/// Which devices `devices` lists (all given fields must match).
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct DeviceQuery {
    /// Labels that must all be present with these values.
    #[uniffi(default)]
    pub labels: HashMap<String, String>,
    /// In this group or below it.
    #[uniffi(default)]
    pub group: Option<String>,
    /// At this site.
    #[uniffi(default)]
    pub site: Option<String>,
    /// In this rack.
    #[uniffi(default)]
    pub rack: Option<String>,
    /// On this shelf.
    #[uniffi(default)]
    pub shelf: Option<String>,
    /// This board model.
    #[uniffi(default)]
    pub model: Option<String>,
    /// `online`, `offline`, ...
    #[uniffi(default)]
    pub status: Option<String>,
    /// `ok`, `degraded`, ...
    #[uniffi(default)]
    pub health: Option<String>,
}

/// Which alerts `alerts` lists.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct AlertQuery {
    /// `raised`, `acked`, `cleared` or `active`.
    #[uniffi(default)]
    pub state: Option<String>,
    /// Of this device.
    #[uniffi(default)]
    pub device: Option<String>,
    /// Of this severity.
    #[uniffi(default)]
    pub severity: Option<String>,
}

/// One event of fleetd's live stream.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FleetEvent {
    /// `reading`, `twin`, `alert`, `audit` or `device`.
    pub kind: String,
    /// When, ms since the Unix epoch.
    pub time_ms: i64,
    /// The device, for device-related events.
    pub device: Option<String>,
    /// The payload as JSON (its shape depends on `kind`).
    pub data_json: String,
}

impl From<wrale_client::Event> for FleetEvent {
    fn from(e: wrale_client::Event) -> Self {
        FleetEvent {
            kind: e.kind.as_str().to_owned(),
            time_ms: e.time.as_millis(),
            device: e.device.map(|d| d.to_string()),
            data_json: e.data.to_string(),
        }
    }
}

/// Receives the events of a subscription (implemented in Kotlin or Swift).
/// Called on a thread of the library's runtime, one call at a time.
#[uniffi::export(callback_interface)]
pub trait EventListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: FleetEvent);
    /// The stream ended: `error` is `null` when it was stopped or fleetd
    /// closed it, else the failure (`code: message`). No call follows.
    fn on_end(&self, error: Option<String>);
}

/// The stop handle of an event subscription; dropping it stops it too.
#[derive(Debug, uniffi::Object)]
pub struct EventSubscription {
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    done: Arc<tokio::sync::Notify>,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

#[uniffi::export]
impl EventSubscription {
    /// Stops the stream (closing the WebSocket); `on_end(null)` follows.
    /// Idempotent.
    pub fn stop(&self) {
        if let Some(tx) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(());
        }
    }

    /// Whether the stream still runs.
    pub fn is_running(&self) -> bool {
        !self.finished.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until the stream ended (after `stop`, or when fleetd closed it).
    pub async fn join(&self) {
        let done = self.done.clone();
        let finished = self.finished.clone();
        let _ = spawn(async move {
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                let notified = done.notified();
                if finished.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                notified.await;
            }
            Ok(())
        })
        .await;
    }
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client of fleetd's API.
#[derive(Debug, uniffi::Object)]
pub struct FleetClient {
    inner: Arc<wrale_client::Client>,
}

impl FleetClient {
    /// Runs one call on the library's runtime.
    async fn call<F, Fut, T>(&self, f: F) -> Result<T, WraleError>
    where
        F: FnOnce(Arc<wrale_client::Client>) -> Fut,
        Fut: Future<Output = wrale_client::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let fut = f(self.inner.clone());
        spawn(async move { Ok(fut.await?) }).await
    }

    /// Runs one call and answers with its value as JSON.
    async fn call_json<F, Fut, T>(&self, f: F) -> Result<String, WraleError>
    where
        F: FnOnce(Arc<wrale_client::Client>) -> Fut,
        Fut: Future<Output = wrale_client::Result<T>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let v = self.call(f).await?;
        to_json(&v)
    }
}

#[uniffi::export]
impl FleetClient {
    /// A client of fleetd at `url` (`http://host:port`) with a bearer token
    /// (an API token, a session token, or `null`).
    #[uniffi::constructor(default(token = None))]
    pub fn new(url: String, token: Option<String>) -> Result<Arc<FleetClient>, WraleError> {
        Ok(Arc::new(FleetClient {
            inner: Arc::new(wrale_client::Client::new(&url, token)?),
        }))
    }

    /// The base URL.
    pub fn url(&self) -> String {
        self.inner.base_url().to_owned()
    }

    /// The bearer token in use.
    pub fn token(&self) -> Option<String> {
        self.inner.token()
    }

    /// Uses another token from now on.
    pub fn set_token(&self, token: Option<String>) {
        self.inner.set_token(token);
    }

    /// Waits until fleetd answers `/health/ready`.
    pub async fn ready(&self) -> Result<(), WraleError> {
        self.call(|c| async move { c.ready().await }).await
    }

    /// Logs in; the session token is used for later calls. The session as JSON.
    pub async fn login(&self, username: String, password: String) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.login(&username, &password).await })
            .await
    }

    /// Who the token belongs to, as JSON.
    pub async fn whoami(&self) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.whoami().await }).await
    }

    /// Every device matching a query, all pages.
    pub async fn devices(&self, query: DeviceQuery) -> Result<Vec<DeviceSummary>, WraleError> {
        let mut f = DeviceFilter::new();
        let mut labels: Vec<_> = query.labels.into_iter().collect();
        labels.sort();
        for (k, v) in labels {
            f = f.label(&k, &v);
        }
        f.group = query.group;
        f.site = query.site;
        f.rack = query.rack;
        f.shelf = query.shelf;
        f.model = query.model;
        f.status = query.status;
        f.health = query.health;
        let list = self
            .call(|c| async move { c.list_all_devices(&f).await })
            .await?;
        Ok(list.into_iter().map(DeviceSummary::from).collect())
    }

    /// One device.
    pub async fn device(&self, id: String) -> Result<DeviceSummary, WraleError> {
        let d = self
            .call(|c| async move { c.get_device(&id).await })
            .await?;
        Ok(d.into())
    }

    /// Changes a device's labels, location or group (JSON `DevicePatch`).
    pub async fn update_device(
        &self,
        id: String,
        patch_json: String,
    ) -> Result<DeviceSummary, WraleError> {
        let p: DevicePatch = from_json("device patch", &patch_json)?;
        let d = self
            .call(|c| async move { c.update_device(&id, &p).await })
            .await?;
        Ok(d.into())
    }

    /// Deletes a device record.
    pub async fn delete_device(&self, id: String) -> Result<(), WraleError> {
        self.call(|c| async move { c.delete_device(&id).await })
            .await
    }

    /// Sends a command (JSON `Command`) to a connected device and waits for
    /// its answer (JSON); a refusal by the device throws `PolicyViolation`.
    pub async fn send_command(
        &self,
        id: String,
        command_json: String,
        reason: String,
    ) -> Result<String, WraleError> {
        let cmd: Command = from_json("command", &command_json)?;
        self.call_json(|c| async move { c.send_command(&id, cmd, reason).await })
            .await
    }

    /// Every group.
    pub async fn groups(&self) -> Result<Vec<Group>, WraleError> {
        let list = self.call(|c| async move { c.list_groups().await }).await?;
        Ok(list.into_iter().map(Group::from).collect())
    }

    /// Creates a group.
    #[uniffi::method(default(parent = None))]
    pub async fn create_group(
        &self,
        id: String,
        name: String,
        parent: Option<String>,
    ) -> Result<Group, WraleError> {
        let g: NewGroup = serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "parent": parent,
        }))
        .map_err(|e| WraleError::invalid_argument(format!("group: {e}")))?;
        let g = self
            .call(|c| async move { c.create_group(&g).await })
            .await?;
        Ok(g.into())
    }

    /// One group.
    pub async fn group(&self, id: String) -> Result<Group, WraleError> {
        let g = self.call(|c| async move { c.get_group(&id).await }).await?;
        Ok(g.into())
    }

    /// Deletes a group.
    pub async fn delete_group(&self, id: String) -> Result<(), WraleError> {
        self.call(|c| async move { c.delete_group(&id).await })
            .await
    }

    /// A device's twin as fleetd holds it, as JSON.
    pub async fn twin(&self, id: String) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.get_twin(&id).await })
            .await
    }

    /// A twin's history, as JSON.
    pub async fn twin_history(&self, id: String) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.twin_history(&id).await })
            .await
    }

    /// A twin's open conflicts, as JSON.
    pub async fn twin_conflicts(&self, id: String) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.conflicts(&id).await })
            .await
    }

    /// A config layer (`fleet`, or `group`/`device` with an id), as JSON.
    #[uniffi::method(default(id = None))]
    pub async fn config(
        &self,
        scope_kind: String,
        id: Option<String>,
    ) -> Result<String, WraleError> {
        let s = scope(&scope_kind, id.as_deref())?;
        self.call_json(|c| async move { c.get_config(&s).await })
            .await
    }

    /// Merges fields (JSON object; `null` removes one) into a config layer.
    #[uniffi::method(default(id = None))]
    pub async fn patch_config(
        &self,
        scope_kind: String,
        patch_json: String,
        id: Option<String>,
    ) -> Result<String, WraleError> {
        let s = scope(&scope_kind, id.as_deref())?;
        let patch: Map<String, Value> = from_json("config patch", &patch_json)?;
        self.call_json(|c| async move { c.patch_config(&s, &patch).await })
            .await
    }

    /// Replaces a config layer (JSON object).
    #[uniffi::method(default(id = None))]
    pub async fn put_config(
        &self,
        scope_kind: String,
        layer_json: String,
        id: Option<String>,
    ) -> Result<String, WraleError> {
        let s = scope(&scope_kind, id.as_deref())?;
        let layer: Map<String, Value> = from_json("config layer", &layer_json)?;
        self.call_json(|c| async move { c.put_config(&s, &layer).await })
            .await
    }

    /// A device's effective config with the origin of every field, as JSON.
    pub async fn effective_config(&self, id: String) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.effective_config(&id).await })
            .await
    }

    /// One metric of one device over a range (ms since the Unix epoch;
    /// resolution `auto`, `raw`, `1m`, ...), as JSON.
    #[uniffi::method(default(from_ms = None, to_ms = None, resolution = "auto"))]
    pub async fn telemetry(
        &self,
        id: String,
        metric: String,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        resolution: String,
    ) -> Result<String, WraleError> {
        let mut q = TelemetryQuery::new(metric);
        q.from = from_ms.map(ts);
        q.to = to_ms.map(ts);
        q.resolution = from_name::<Resolution>("resolution", &resolution)?;
        self.call_json(|c| async move { c.device_telemetry(&id, &q).await })
            .await
    }

    /// Every alert matching a query, newest first, as JSON.
    pub async fn alerts(&self, query: AlertQuery) -> Result<String, WraleError> {
        let f = AlertFilter {
            state: query.state,
            device: query.device,
            severity: query.severity,
            ..AlertFilter::default()
        };
        self.call_json(|c| async move { c.list_all_alerts(&f).await })
            .await
    }

    /// Acknowledges an alert; the alert as JSON.
    pub async fn ack_alert(&self, id: i64) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.ack_alert(id).await })
            .await
    }

    /// Clears an alert; the alert as JSON.
    pub async fn clear_alert(&self, id: i64) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.clear_alert(id).await })
            .await
    }

    /// Audit entries (by actor, about a target, of an action), newest first, as JSON.
    #[uniffi::method(default(actor = None, target = None, action = None))]
    pub async fn audit(
        &self,
        actor: Option<String>,
        target: Option<String>,
        action: Option<String>,
    ) -> Result<String, WraleError> {
        let f = AuditFilter {
            actor,
            target,
            action,
            ..AuditFilter::default()
        };
        self.call_json(|c| async move { c.audit_all(&f).await })
            .await
    }

    /// Rollouts (optionally with one `status`), as JSON.
    #[uniffi::method(default(status = None))]
    pub async fn rollouts(&self, status: Option<String>) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.list_rollouts(status.as_deref()).await })
            .await
    }

    /// One rollout (status, progress, waves, gate failures), as JSON.
    pub async fn rollout(&self, id: String) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.get_rollout(&id).await })
            .await
    }

    /// Starts a rollout (JSON spec: `{id, change, devices | group, canary, waves, ...}`).
    pub async fn create_rollout(&self, spec_json: String) -> Result<String, WraleError> {
        let spec: Value = from_json("rollout", &spec_json)?;
        self.call_json(|c| async move { c.create_rollout(&spec).await })
            .await
    }

    /// `pause`, `resume`, `abort` or `rollback` a rollout.
    pub async fn rollout_op(&self, id: String, op: String) -> Result<String, WraleError> {
        self.call_json(|c| async move { c.rollout_op(&id, &op).await })
            .await
    }

    /// Creates an enrollment token (JSON `NewEnrollmentToken`: `{group, uses,
    /// expires_in, labels}`); the answer (JSON) holds the token, once.
    pub async fn create_enrollment_token(
        &self,
        request_json: String,
    ) -> Result<String, WraleError> {
        let r: NewEnrollmentToken = from_json("enrollment token", &request_json)?;
        self.call_json(|c| async move { c.create_enrollment_token(&r).await })
            .await
    }

    /// Exchanges an enrollment token for a device credential (JSON
    /// `EnrollRequest`); the answer as JSON.
    pub async fn enroll(&self, request_json: String) -> Result<String, WraleError> {
        let r: EnrollRequest = from_json("enroll request", &request_json)?;
        self.call_json(|c| async move { c.enroll(&r).await }).await
    }

    /// Opens the live event stream (of these `kinds`, all when empty; of one
    /// device or group) and calls `listener` for every event until the
    /// returned handle's `stop`.
    #[uniffi::method(default(kinds = [], device = None, group = None))]
    pub async fn subscribe(
        &self,
        listener: Box<dyn EventListener>,
        kinds: Vec<String>,
        device: Option<String>,
        group: Option<String>,
    ) -> Result<Arc<EventSubscription>, WraleError> {
        let mut f = EventFilter::new();
        f.device = device;
        f.group = group;
        for k in kinds {
            let kind = k
                .parse::<EventKind>()
                .map_err(|e| WraleError::invalid_argument(format!("event kind: {e}")))?;
            f = f.kind(kind);
        }
        let c = self.inner.clone();
        let mut stream = spawn(async move { Ok(c.events(&f).await?) }).await?;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(tokio::sync::Notify::new());
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sub = Arc::new(EventSubscription {
            stop: Mutex::new(Some(tx)),
            done: done.clone(),
            finished: finished.clone(),
        });
        crate::runtime()?.spawn(async move {
            let end = loop {
                tokio::select! {
                    e = stream.next_event() => match e {
                        Some(Ok(e)) => listener.on_event(e.into()),
                        Some(Err(e)) => {
                            let e = WraleError::from(e);
                            break Some(e.to_string());
                        }
                        None => break None,
                    },
                    _ = &mut rx => {
                        stream.close().await;
                        break None;
                    }
                }
            };
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            listener.on_end(end);
            done.notify_waiters();
        });
        Ok(sub)
    }
}
