//! The fleet client (`wrale_client::Client`): every call is a Promise settled
//! on napi's tokio runtime with the response model as a plain object.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use napi::Env;
use napi::bindgen_prelude::PromiseRaw;
use napi_derive::napi;
use serde::Serialize;
use serde_json::{Map, Value};
use wrale_client::models::{
    AlertFilter, AuditFilter, ConfigScope, DeviceFilter, DevicePatch, EnrollRequest, GroupPatch,
    NewEnrollmentToken, NewGroup, Resolution, TelemetryQuery,
};
use wrale_client::{EventFilter, EventKind};
use wrale_core::model::{Command, DeviceId, GroupId};

use crate::errors::{Failure, OrThrow};
use crate::{from_name, from_value, promise, to_value, ts};

/// A JS Promise of a plain value.
type Pending<'env> = napi::Result<PromiseRaw<'env, Value>>;

fn scope(kind: &str, id: Option<&str>) -> Result<ConfigScope, Failure> {
    let bad = |m: String| Failure::invalid_input("invalid_argument", m);
    match (kind, id) {
        ("fleet", _) => Ok(ConfigScope::Fleet),
        ("group", Some(id)) => Ok(ConfigScope::Group(
            GroupId::new(id).map_err(wrale_core::Error::from)?,
        )),
        ("device", Some(id)) => Ok(ConfigScope::Device(
            DeviceId::new(id).map_err(wrale_core::Error::from)?,
        )),
        ("group" | "device", None) => Err(bad(format!("a {kind} config scope needs an id"))),
        (other, _) => Err(bad(format!(
            "config scope {other:?}: expected fleet, group or device"
        ))),
    }
}

/// Which devices `devices` lists (every field optional; all must match).
#[napi(object)]
#[derive(Debug, Default)]
pub struct DeviceQuery {
    /// Labels that must all be present with these values.
    pub labels: Option<HashMap<String, String>>,
    /// In this group or below it.
    pub group: Option<String>,
    /// At this site.
    pub site: Option<String>,
    /// In this rack.
    pub rack: Option<String>,
    /// On this shelf.
    pub shelf: Option<String>,
    /// This board model.
    pub model: Option<String>,
    /// `online`, `offline`, ...
    pub status: Option<String>,
    /// `ok`, `degraded`, ...
    pub health: Option<String>,
}

/// A range of one metric of one device.
#[napi(object)]
#[derive(Debug, Default)]
pub struct TelemetryOptions {
    /// From, ms since the Unix epoch (server default when absent).
    pub from_ms: Option<f64>,
    /// To, ms since the Unix epoch.
    pub to_ms: Option<f64>,
    /// `auto` (default), `raw`, `1m`, ...
    pub resolution: Option<String>,
}

/// Which alerts `alerts` lists.
#[napi(object)]
#[derive(Debug, Default)]
pub struct AlertQuery {
    /// `raised`, `acked`, `cleared` or `active`.
    pub state: Option<String>,
    /// Of this device.
    pub device: Option<String>,
    /// Of this severity.
    pub severity: Option<String>,
}

/// Which audit entries `audit` lists.
#[napi(object)]
#[derive(Debug, Default)]
pub struct AuditQuery {
    /// By this actor.
    pub actor: Option<String>,
    /// About this target.
    pub target: Option<String>,
    /// This action.
    pub action: Option<String>,
}

/// Which events an event stream carries.
#[napi(object)]
#[derive(Debug, Default)]
pub struct EventQuery {
    /// Of this device.
    pub device: Option<String>,
    /// Of devices in this group.
    pub group: Option<String>,
    /// Of these kinds (`device`, `twin`, `alert`, ...).
    pub kinds: Option<Vec<String>>,
}

/// A client of fleetd's API.
#[napi]
#[derive(Debug)]
pub struct Fleet {
    inner: Arc<wrale_client::Client>,
}

impl Fleet {
    /// Runs one call on the runtime; the Promise settles with its value.
    fn call<'env, F, Fut, T>(&self, env: &'env Env, f: F) -> Pending<'env>
    where
        F: FnOnce(Arc<wrale_client::Client>) -> Fut,
        Fut: Future<Output = wrale_client::Result<T>> + Send + 'static,
        T: Serialize + Send,
    {
        let fut = f(self.inner.clone());
        promise(env, async move { to_value(&fut.await?) })
    }

    /// A call whose arguments failed to convert: a rejected Promise.
    fn refuse<'env>(env: &'env Env, f: Failure) -> Pending<'env> {
        promise(env, async move { Err(f) })
    }
}

#[napi]
impl Fleet {
    /// A client of fleetd at `url` (`http://host:port`), with a bearer token.
    #[napi(constructor)]
    pub fn new(env: Env, url: String, token: Option<String>) -> napi::Result<Fleet> {
        let inner = wrale_client::Client::new(&url, token).or_throw(&env)?;
        Ok(Fleet {
            inner: Arc::new(inner),
        })
    }

    /// The base URL.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.inner.base_url().to_owned()
    }

    /// The bearer token in use.
    #[napi(getter)]
    pub fn token(&self) -> Option<String> {
        self.inner.token()
    }

    /// Uses another token from now on.
    #[napi(setter, js_name = "token", ts_args_type = "token: string | null")]
    pub fn set_token(&self, token: Option<String>) {
        self.inner.set_token(token);
    }

    /// Waits until fleetd answers `/health/ready`.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn ready<'env>(&self, env: &'env Env) -> Pending<'env> {
        self.call(env, |c| async move { c.ready().await })
    }

    /// Logs in; the session token is used for later calls.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn login<'env>(&self, env: &'env Env, username: String, password: String) -> Pending<'env> {
        self.call(env, |c| async move { c.login(&username, &password).await })
    }

    /// Who the token belongs to.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn whoami<'env>(&self, env: &'env Env) -> Pending<'env> {
        self.call(env, |c| async move { c.whoami().await })
    }

    /// Every device matching a query, all pages.
    #[napi(ts_return_type = "Promise<any[]>")]
    pub fn devices<'env>(&self, env: &'env Env, query: Option<DeviceQuery>) -> Pending<'env> {
        let q = query.unwrap_or_default();
        let mut f = DeviceFilter::new();
        let mut labels: Vec<_> = q.labels.unwrap_or_default().into_iter().collect();
        labels.sort();
        for (k, v) in labels {
            f = f.label(&k, &v);
        }
        f.group = q.group;
        f.site = q.site;
        f.rack = q.rack;
        f.shelf = q.shelf;
        f.model = q.model;
        f.status = q.status;
        f.health = q.health;
        self.call(env, |c| async move { c.list_all_devices(&f).await })
    }

    /// One device.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn device<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.get_device(&id).await })
    }

    /// Changes a device's labels, location or group (`DevicePatch`).
    #[napi(ts_return_type = "Promise<any>")]
    pub fn update_device<'env>(&self, env: &'env Env, id: String, patch: Value) -> Pending<'env> {
        match from_value::<DevicePatch>("device patch", patch) {
            Ok(p) => self.call(env, |c| async move { c.update_device(&id, &p).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// Deletes a device record.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn delete_device<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.delete_device(&id).await })
    }

    /// Sends a command (`wrale_core::model::Command`) to a connected device and
    /// waits for its answer; a refusal by the device rejects with a `PolicyViolation`.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn send_command<'env>(
        &self,
        env: &'env Env,
        id: String,
        command: Value,
        reason: Option<String>,
    ) -> Pending<'env> {
        match from_value::<Command>("command", command) {
            Ok(cmd) => self.call(env, |c| async move {
                c.send_command(&id, cmd, reason.unwrap_or_default()).await
            }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// Every group.
    #[napi(ts_return_type = "Promise<any[]>")]
    pub fn groups<'env>(&self, env: &'env Env) -> Pending<'env> {
        self.call(env, |c| async move { c.list_groups().await })
    }

    /// Creates a group (`NewGroup`: `{id, name, parent}`).
    #[napi(ts_return_type = "Promise<any>")]
    pub fn create_group<'env>(&self, env: &'env Env, group: Value) -> Pending<'env> {
        match from_value::<NewGroup>("group", group) {
            Ok(g) => self.call(env, |c| async move { c.create_group(&g).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// One group.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn group<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.get_group(&id).await })
    }

    /// Changes a group (`GroupPatch`).
    #[napi(ts_return_type = "Promise<any>")]
    pub fn update_group<'env>(&self, env: &'env Env, id: String, patch: Value) -> Pending<'env> {
        match from_value::<GroupPatch>("group patch", patch) {
            Ok(p) => self.call(env, |c| async move { c.update_group(&id, &p).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// Deletes a group.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn delete_group<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.delete_group(&id).await })
    }

    /// A device's twin as fleetd holds it.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn twin<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.get_twin(&id).await })
    }

    /// A twin's history.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn twin_history<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.twin_history(&id).await })
    }

    /// A twin's open conflicts.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn twin_conflicts<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.conflicts(&id).await })
    }

    /// A config layer: `fleet`, or `group`/`device` with an id.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn config<'env>(
        &self,
        env: &'env Env,
        scope_kind: String,
        id: Option<String>,
    ) -> Pending<'env> {
        match scope(&scope_kind, id.as_deref()) {
            Ok(s) => self.call(env, |c| async move { c.get_config(&s).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// Merges fields (`null` removes one) into a config layer.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn patch_config<'env>(
        &self,
        env: &'env Env,
        scope_kind: String,
        patch: Map<String, Value>,
        id: Option<String>,
    ) -> Pending<'env> {
        match scope(&scope_kind, id.as_deref()) {
            Ok(s) => self.call(env, |c| async move { c.patch_config(&s, &patch).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// Replaces a config layer.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn put_config<'env>(
        &self,
        env: &'env Env,
        scope_kind: String,
        layer: Map<String, Value>,
        id: Option<String>,
    ) -> Pending<'env> {
        match scope(&scope_kind, id.as_deref()) {
            Ok(s) => self.call(env, |c| async move { c.put_config(&s, &layer).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// A device's effective config with the origin of every field.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn effective_config<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.effective_config(&id).await })
    }

    /// One metric of one device over a range.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn telemetry<'env>(
        &self,
        env: &'env Env,
        id: String,
        metric: String,
        options: Option<TelemetryOptions>,
    ) -> Pending<'env> {
        let o = options.unwrap_or_default();
        let mut q = TelemetryQuery::new(metric);
        q.from = o.from_ms.map(ts);
        q.to = o.to_ms.map(ts);
        match from_name::<Resolution>("resolution", o.resolution.as_deref().unwrap_or("auto")) {
            Ok(r) => q.resolution = r,
            Err(f) => return Self::refuse(env, f),
        }
        self.call(env, |c| async move { c.device_telemetry(&id, &q).await })
    }

    /// Every alert matching a query, newest first.
    #[napi(ts_return_type = "Promise<any[]>")]
    pub fn alerts<'env>(&self, env: &'env Env, query: Option<AlertQuery>) -> Pending<'env> {
        let q = query.unwrap_or_default();
        let f = AlertFilter {
            state: q.state,
            device: q.device,
            severity: q.severity,
            ..AlertFilter::default()
        };
        self.call(env, |c| async move { c.list_all_alerts(&f).await })
    }

    /// Acknowledges an alert.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn ack_alert<'env>(&self, env: &'env Env, id: i64) -> Pending<'env> {
        self.call(env, |c| async move { c.ack_alert(id).await })
    }

    /// Clears an alert.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn clear_alert<'env>(&self, env: &'env Env, id: i64) -> Pending<'env> {
        self.call(env, |c| async move { c.clear_alert(id).await })
    }

    /// Audit entries matching a query, newest first.
    #[napi(ts_return_type = "Promise<any[]>")]
    pub fn audit<'env>(&self, env: &'env Env, query: Option<AuditQuery>) -> Pending<'env> {
        let q = query.unwrap_or_default();
        let f = AuditFilter {
            actor: q.actor,
            target: q.target,
            action: q.action,
            ..AuditFilter::default()
        };
        self.call(env, |c| async move { c.audit_all(&f).await })
    }

    /// Rollouts (optionally with one `status`).
    #[napi(ts_return_type = "Promise<any>")]
    pub fn rollouts<'env>(&self, env: &'env Env, status: Option<String>) -> Pending<'env> {
        self.call(
            env,
            |c| async move { c.list_rollouts(status.as_deref()).await },
        )
    }

    /// One rollout: status, progress, waves, gate failures.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn rollout<'env>(&self, env: &'env Env, id: String) -> Pending<'env> {
        self.call(env, |c| async move { c.get_rollout(&id).await })
    }

    /// Starts a rollout (`{id, change, devices | group, canary, waves, ...}`).
    #[napi(ts_return_type = "Promise<any>")]
    pub fn create_rollout<'env>(&self, env: &'env Env, spec: Value) -> Pending<'env> {
        self.call(env, |c| async move { c.create_rollout(&spec).await })
    }

    /// Creates an enrollment token (`NewEnrollmentToken`: `{group, uses,
    /// expires_in, labels}`); the token is in the answer, once.
    #[napi(ts_return_type = "Promise<any>")]
    pub fn create_enrollment_token<'env>(
        &self,
        env: &'env Env,
        request: Option<Value>,
    ) -> Pending<'env> {
        let v = request.unwrap_or_else(|| Value::Object(Map::new()));
        match from_value::<NewEnrollmentToken>("enrollment token", v) {
            Ok(r) => self.call(env, |c| async move { c.create_enrollment_token(&r).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// Exchanges an enrollment token for a device credential (`EnrollRequest`).
    #[napi(ts_return_type = "Promise<any>")]
    pub fn enroll<'env>(&self, env: &'env Env, request: Value) -> Pending<'env> {
        match from_value::<EnrollRequest>("enroll request", request) {
            Ok(r) => self.call(env, |c| async move { c.enroll(&r).await }),
            Err(f) => Self::refuse(env, f),
        }
    }

    /// Opens the live event stream. Read it with `for await (const e of stream)`
    /// or `await stream.next()`; `stream.close()` stops it. The Promise itself
    /// is iterable too: `for await (const e of fleet.events(query))`.
    #[napi(ts_return_type = "Promise<EventStream> & AsyncIterable<any>")]
    pub fn events<'env>(
        &self,
        env: &'env Env,
        query: Option<EventQuery>,
    ) -> napi::Result<PromiseRaw<'env, EventStream>> {
        let q = query.unwrap_or_default();
        let mut f = EventFilter::new();
        f.device = q.device;
        f.group = q.group;
        let mut bad = None;
        for k in q.kinds.unwrap_or_default() {
            match k.parse::<EventKind>() {
                Ok(kind) => f = f.kind(kind),
                Err(e) => {
                    bad = Some(Failure::invalid_input(
                        "invalid_argument",
                        format!("event kind {k:?}: {e}"),
                    ));
                }
            }
        }
        let c = self.inner.clone();
        promise(env, async move {
            if let Some(b) = bad {
                return Err(b);
            }
            let stream = c.events(&f).await?;
            Ok(EventStream {
                stream: Arc::new(tokio::sync::Mutex::new(Some(stream))),
                stop: Arc::new(tokio::sync::Notify::new()),
                closed: Arc::new(AtomicBool::new(false)),
                ended: Arc::new(AtomicBool::new(false)),
            })
        })
    }
}

/// A live event stream; `close` is the stop handle.
#[napi]
#[derive(Debug)]
pub struct EventStream {
    stream: Arc<tokio::sync::Mutex<Option<wrale_client::EventStream>>>,
    stop: Arc<tokio::sync::Notify>,
    closed: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
}

#[napi]
impl EventStream {
    /// The next event; `null` when the stream ended or was closed (see
    /// `ended`) or when `timeoutMs` passed first.
    #[napi(ts_return_type = "Promise<any | null>")]
    pub fn next<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<f64>,
    ) -> napi::Result<PromiseRaw<'env, Option<Value>>> {
        let (stream, stop, ended, closed) = (
            self.stream.clone(),
            self.stop.clone(),
            self.ended.clone(),
            self.closed.clone(),
        );
        let timeout = timeout_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        promise(env, async move {
            if closed.load(Ordering::SeqCst) {
                return Ok(None);
            }
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
                    Some(Ok(e)) => Ok(Some(to_value(&e)?)),
                    Some(Err(e)) => Err(e.into()),
                    None => {
                        ended.store(true, Ordering::SeqCst);
                        Ok(None)
                    }
                },
                () = stop.notified() => Ok(None),
                () = sleep => Ok(None),
            }
        })
    }

    /// Whether the stream ended (fleetd closed it) or was closed.
    #[napi(getter)]
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst)
    }

    /// Stops the stream (a waiting `next` settles with `null`) and closes the WebSocket.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        self.stop.notify_one();
        let stream = self.stream.clone();
        promise(env, async move {
            let s = stream.lock().await.take();
            if let Some(s) = s {
                s.close().await;
            }
            Ok(())
        })
    }
}
