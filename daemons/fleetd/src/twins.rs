//! The twin hub: device sync sessions, twins in memory and in `<data.dir>/twins.db`,
//! config layers written into twins, device commands.
//!
//! The sync itself is `wrale_sync::hub::Hub`; this module opens its store, forwards
//! its events to fleetd's event bus and registry (connect/disconnect -> last seen and
//! status, reported alerts -> the alert list, reported health -> the registry), runs
//! its idle eviction, and renders its counters for `/metrics`. Config layering and
//! its validation are `wrale_sync::LayeredConfig` and `wrale_sync::PolicyValidator`.
//!
//! The daemon calls [`Hub::new`] at start, [`start`] once the [`AppState`] exists,
//! and [`render_metrics`] for each `/metrics` scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use wrale_core::fleet::registry::Health as DeviceHealth;
use wrale_core::model::Severity;
use wrale_core::time::duration_str;
use wrale_core::{BoardProfile, DeviceId};
use wrale_sync::hub::{ChangeOrigin, HubEvent, SessionEnd};
use wrale_sync::{
    Author, ConfigValidator, DesiredConfig, FieldValue, LayeredConfig, PartialConfig,
    PolicyValidator, Section, SqliteStore,
};

use crate::config::Config;
use crate::error::ApiError;
use crate::state::{AppState, EventKind, now};
use crate::store::{AlertFilter, ConfigScope, NewAlert};

/// File name of the twin store in `data.dir`.
pub const TWINS_DB: &str = "twins.db";

/// `[hub]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Twins kept loaded in memory without a live session; the least recently
    /// used beyond this are dropped (they stay in the store).
    pub max_resident: usize,
    /// A twin without a session unused for this long is dropped from memory.
    #[serde(with = "duration_str")]
    pub idle_evict_after: Duration,
    /// A twin's history is compacted into a new epoch past this many changes.
    pub compact_after_changes: usize,
    /// A quiet device session offers its state again after this long.
    #[serde(with = "duration_str")]
    pub resync_after: Duration,
    /// How long `POST /devices/{id}/commands` waits for the device's answer.
    #[serde(with = "duration_str")]
    pub command_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_resident: 1000,
            idle_evict_after: Duration::from_secs(600),
            compact_after_changes: 5000,
            resync_after: Duration::from_secs(15),
            command_timeout: Duration::from_secs(10),
        }
    }
}

impl HubConfig {
    /// Checks the section; returns the dotted key (`hub.<key>`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("hub.{k}"), m.to_owned()));
        if self.max_resident == 0 {
            return bad("max_resident", "must be at least 1");
        }
        if self.idle_evict_after < Duration::from_secs(1) {
            return bad("idle_evict_after", "must be at least 1s");
        }
        if self.compact_after_changes < 100 {
            return bad("compact_after_changes", "must be at least 100");
        }
        if self.resync_after < Duration::from_millis(100) {
            return bad("resync_after", "must be at least 100ms");
        }
        if self.command_timeout.is_zero() || self.command_timeout > Duration::from_secs(600) {
            return bad("command_timeout", "must be between 1ms and 10m");
        }
        Ok(())
    }
}

/// The hub, shared by the handlers (cheap to clone).
#[derive(Debug, Clone)]
pub struct Hub {
    sync: wrale_sync::Hub,
    /// Serialises config-layer changes (read layers, validate, write, apply).
    layers: Arc<tokio::sync::Mutex<()>>,
    command_timeout: Duration,
}

impl Hub {
    /// A hub for `config`, over `<data.dir>/twins.db`.
    pub fn new(config: &Config) -> anyhow::Result<Hub> {
        std::fs::create_dir_all(&config.data.dir)
            .with_context(|| format!("creating {}", config.data.dir.display()))?;
        let path = config.data.dir.join(TWINS_DB);
        let store = SqliteStore::open(&path)
            .with_context(|| format!("opening the twin store {}", path.display()))?;
        let h = &config.hub;
        let sync = wrale_sync::Hub::new(
            Box::new(store),
            wrale_sync::HubConfig {
                max_resident: h.max_resident,
                idle_evict_after: h.idle_evict_after,
                compact_after_changes: h.compact_after_changes,
                resync_after: h.resync_after,
                ..wrale_sync::HubConfig::default()
            },
        );
        Ok(Hub {
            sync,
            layers: Arc::default(),
            command_timeout: h.command_timeout,
        })
    }

    /// The sync hub itself (sessions, reads, edits, commands).
    pub fn sync(&self) -> &wrale_sync::Hub {
        &self.sync
    }

    /// How long a command waits for the device's answer.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Closes the live sync session of `device`, if any (after a revoke or delete).
    pub fn disconnect(&self, device: &DeviceId) {
        self.sync.disconnect(
            device,
            "the device credential was revoked or the device deleted",
        );
    }

    /// Number of devices connected now.
    pub fn connected(&self) -> usize {
        self.sync.status().connected
    }

    /// Holds the config-layer lock (one layer change at a time).
    pub async fn lock_layers(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.layers.lock().await
    }
}

/// `kind:name`, the form used in events, audit results and API answers.
pub fn author_str(a: &Author) -> String {
    format!("{}:{}", a.kind, a.name)
}

/// The author of a user's change (the user behind a session or API token).
pub fn user_author(p: &crate::Principal) -> Author {
    Author::user(p.user.clone().unwrap_or_else(|| p.name.clone()))
}

/// Starts the event forwarder, the idle eviction timer and the shutdown hook;
/// they stop when `state.shutdown` is cancelled.
pub fn start(state: &AppState) {
    let mut events = state.hub.sync.subscribe();
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = s.shutdown.cancelled() => break,
                ev = events.recv() => match ev {
                    Ok(ev) => on_event(&s, ev).await,
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "hub events lagged"),
                    Err(RecvError::Closed) => break,
                },
            }
        }
    });
    let s = state.clone();
    tokio::spawn(async move {
        let every = (s.config().hub.idle_evict_after / 4).max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = s.shutdown.cancelled() => break,
                _ = tick.tick() => { s.hub.sync.evict(); }
            }
        }
    });
    let s = state.clone();
    tokio::spawn(async move {
        s.shutdown.cancelled().await;
        // Sessions close with 1001 after saving their sync state.
        s.hub.sync.shutdown();
    });
}

async fn on_event(s: &AppState, ev: HubEvent) {
    match ev {
        HubEvent::Connected { device } => {
            seen(s, &device, true, None).await;
            s.publish(
                EventKind::Device,
                Some(device.clone()),
                json!({"event": "connected", "id": device}),
            )
            .await;
            if let Err(e) = apply_layers_on_connect(s, &device).await {
                tracing::warn!(%device, "config layers not applied on connect: {e}");
                s.audit(
                    "system",
                    "config.apply",
                    &format!("device:{device}"),
                    "failed",
                    json!({"code": e.code(), "message": e.message()}),
                    Some(device),
                )
                .await;
            }
        }
        HubEvent::Disconnected { device, end } => {
            if !s.hub.sync.is_connected(&device) {
                seen(s, &device, false, None).await;
            }
            let (reason, code) = end_reason(&end);
            s.publish(EventKind::Device, Some(device.clone()),
                json!({"event": "disconnected", "id": device, "reason": reason, "close_code": code}))
                .await;
        }
        HubEvent::TwinChanged {
            device,
            origin,
            authors,
            fields,
        } => {
            let names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            let origin = match origin {
                ChangeOrigin::Device => "device",
                ChangeOrigin::Hub => "fleet",
            };
            let reported_state = fields.iter().any(|f| {
                f.section == Section::Reported
                    && (f.key.starts_with("alert.")
                        || f.key == "health"
                        || f.key == "agent_version")
            });
            s.publish(
                EventKind::Twin,
                Some(device.clone()),
                json!({
                    "origin": origin,
                    "authors": authors.iter().map(author_str).collect::<Vec<_>>(),
                    "fields": names,
                }),
            )
            .await;
            if reported_state {
                if let Err(e) = sync_reported_state(s, &device).await {
                    tracing::warn!(%device, "device alerts not synced: {e}");
                }
            }
        }
        HubEvent::CommandReply { device, reply } => {
            s.publish(
                EventKind::Device,
                Some(device),
                json!({"event": "command_reply", "reply": reply}),
            )
            .await;
        }
        HubEvent::Compacted { device, epoch } => {
            s.publish(
                EventKind::Twin,
                Some(device),
                json!({"event": "compacted", "epoch": epoch}),
            )
            .await;
        }
        _ => {}
    }
}

fn end_reason(end: &SessionEnd) -> (String, Option<u16>) {
    let reason = match end {
        SessionEnd::Closed => "closed by the device".to_owned(),
        SessionEnd::Replaced => "replaced by a newer session".to_owned(),
        SessionEnd::WrongDocument { doc } => format!("frame for document {doc:?}"),
        SessionEnd::Disconnected { reason } => reason.clone(),
        SessionEnd::Shutdown => "fleetd shutting down".to_owned(),
        SessionEnd::Transport(m) => format!("link failed: {m}"),
        other => format!("{other:?}"),
    };
    (reason, end.close_code())
}

async fn seen(s: &AppState, device: &DeviceId, online: bool, agent: Option<String>) {
    let (d, t) = (device.clone(), now());
    if let Err(e) = s
        .store(move |st| st.device_seen(&d, online, t, agent.as_deref()))
        .await
    {
        tracing::warn!(%device, "cannot record the device's connection: {}", e.message());
    }
}

/// An alert code from a device's alert id (`a-z 0-9 _ : -`, at most 64).
fn alert_code(id: &str) -> String {
    let c: String = id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if c.is_empty() {
        "device_alert".into()
    } else {
        c
    }
}

/// Reported alerts -> fleetd's alert list (raise new ones, clear gone ones, each
/// audited with the device as actor);
/// reported health -> the registry; reported agent version -> the registry.
async fn sync_reported_state(s: &AppState, device: &DeviceId) -> Result<(), ApiError> {
    let reported = s
        .hub
        .sync
        .read(device, |t| t.reported())
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let health = match reported.health {
        Some(wrale_sync::Health::Ok) => Some(DeviceHealth::Ok),
        Some(wrale_sync::Health::Warning) => Some(DeviceHealth::Warning),
        Some(wrale_sync::Health::Critical) => Some(DeviceHealth::Critical),
        None => None,
    };
    if let Some(h) = health {
        let d = device.clone();
        s.store(move |st| st.set_device_health(&d, h)).await?;
    }
    if let Some(v) = reported.agent_version.clone() {
        seen(s, device, s.hub.sync.is_connected(device), Some(v)).await;
    }
    let severity = if health == Some(DeviceHealth::Critical) {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let prefix = format!("{device}/twin:");
    let filter = AlertFilter {
        device: Some(device.clone()),
        active_only: true,
        limit: 1000,
        ..Default::default()
    };
    let active = s.store(move |st| st.list_alerts(&filter)).await?;
    let by = format!("device:{device}");
    for (id, message) in &reported.alerts {
        let key = format!("{prefix}{id}");
        if active.iter().any(|a| a.key == key) {
            continue;
        }
        let alert = NewAlert {
            device: Some(device.clone()),
            code: alert_code(id),
            severity,
            message: message.clone(),
            key,
        };
        let (b, t) = (by.clone(), now());
        let (rec, created) = s.store(move |st| st.raise_alert(&alert, &b, t)).await?;
        if created {
            s.audit(
                &by,
                "alert.raise",
                &format!("alert:{}", rec.id),
                "allowed",
                json!({"code": rec.code, "severity": rec.severity, "key": rec.key,
                       "reason": "reported by the device"}),
                Some(device.clone()),
            )
            .await;
            s.publish(
                EventKind::Alert,
                Some(device.clone()),
                json!({"event": "raised", "alert": rec}),
            )
            .await;
        }
    }
    for a in active.iter().filter(|a| a.key.starts_with(&prefix)) {
        let id = &a.key[prefix.len()..];
        if reported.alerts.contains_key(id) {
            continue;
        }
        let (aid, b, t) = (a.id, by.clone(), now());
        let rec = s.store(move |st| st.clear_alert(aid, &b, t)).await?;
        s.audit(
            &by,
            "alert.clear",
            &format!("alert:{}", rec.id),
            "allowed",
            json!({"state": rec.state, "code": rec.code, "key": rec.key,
                   "reason": "no longer reported by the device"}),
            Some(device.clone()),
        )
        .await;
        s.publish(
            EventKind::Alert,
            Some(device.clone()),
            json!({"event": "cleared", "alert": rec}),
        )
        .await;
    }
    Ok(())
}

// ---- config layers

/// The name of a layer in provenance answers (`fleet`, `group:lab`, `device:pi-1`).
pub fn layer_name(scope: &ConfigScope) -> String {
    scope.to_string()
}

/// A stored layer's JSON fields as flat field values (stored layers were checked
/// when written; a value that no longer parses names the field).
pub fn layer_from_json(fields: &serde_json::Map<String, Value>) -> Result<PartialConfig, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in fields {
        let fv: FieldValue = serde_json::from_value(v.clone()).map_err(|_| {
            ApiError::invalid_body(
                Some(k),
                format!("{k}: expected a number, string or boolean, found {v}"),
            )
        })?;
        out.insert(k.clone(), fv);
    }
    PartialConfig::from_layer_fields(out).map_err(|e| match e {
        wrale_sync::Error::UnknownField(f) => {
            ApiError::invalid_body(Some(&f), format!("{f}: not a desired config field"))
        }
        wrale_sync::Error::InvalidField { field, reason } => {
            ApiError::invalid_body(Some(&field), format!("{field}: {reason}"))
        }
        other => ApiError::invalid_body(None, other.to_string()),
    })
}

/// Every stored layer by scope.
pub async fn all_layers(s: &AppState) -> Result<BTreeMap<ConfigScope, PartialConfig>, ApiError> {
    let layers = s.store(|st| st.list_config_layers()).await?;
    let mut out = BTreeMap::new();
    for l in layers {
        out.insert(l.scope.clone(), layer_from_json(&l.fields)?);
    }
    Ok(out)
}

/// The layer stack of one device, lowest first: fleet, its group chain from the
/// root down, the device.
pub fn stack_for(
    device: &wrale_core::fleet::registry::DeviceRecord,
    tree: &wrale_core::fleet::registry::GroupTree,
    layers: &BTreeMap<ConfigScope, PartialConfig>,
) -> LayeredConfig {
    let mut scopes = vec![ConfigScope::Fleet];
    if let Some(g) = &device.group {
        let mut chain = tree.ancestors(g);
        chain.reverse();
        chain.push(g.clone());
        scopes.extend(chain.into_iter().map(ConfigScope::Group));
    }
    scopes.push(ConfigScope::Device(device.id.clone()));
    LayeredConfig::fold(
        scopes
            .iter()
            .filter_map(|sc| layers.get(sc).map(|l| (layer_name(sc), l))),
    )
}

/// The validator for a device's board model.
pub fn validator_for(device: &wrale_core::fleet::registry::DeviceRecord) -> PolicyValidator {
    PolicyValidator::new(&BoardProfile::builtin(device.model))
}

/// A planned write into one twin.
#[derive(Debug)]
pub struct Planned {
    /// The device.
    pub device: DeviceId,
    /// Field writes (`None` deletes).
    pub writes: BTreeMap<String, Option<FieldValue>>,
}

/// Checks what `writes` would leave in the twin of `device` (config_version
/// bumped) against its board; 422 `policy_violation` naming device and rule.
pub fn check_planned(
    s: &AppState,
    device: &wrale_core::fleet::registry::DeviceRecord,
    writes: &BTreeMap<String, Option<FieldValue>>,
) -> Result<(), ApiError> {
    let current = s
        .hub
        .sync
        .read(&device.id, |t| t.fields(Section::Desired))
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let next = wrale_sync::apply_changes(&current, writes);
    let id = &device.id;
    let cfg = DesiredConfig::from_fields(&next).map_err(|e| {
        ApiError::policy_violation("invalid_field", format!("device {id}: {e}"))
            .with_detail("device", id.as_str())
    })?;
    validator_for(device).validate(&cfg).map_err(|r| {
        ApiError::policy_violation(
            &r.rule,
            format!("device {id} ({}): {}", device.model, r.reason),
        )
        .with_detail("device", id.as_str())
    })
}

/// Writes planned changes into twins (one change each, by `author`, with
/// `config_version` bumped). Returns the devices written.
pub fn write_planned(
    s: &AppState,
    plans: &[Planned],
    author: &Author,
) -> Result<Vec<DeviceId>, ApiError> {
    let mut written = Vec::new();
    for p in plans {
        if p.writes.is_empty() {
            continue;
        }
        let writes = p.writes.clone();
        s.hub
            .sync
            .edit(&p.device, |t| -> wrale_sync::Result<()> {
                let current = t.fields(Section::Desired)?;
                let next = wrale_sync::apply_changes(&current, &writes);
                let cfg = DesiredConfig::from_fields(&next)?;
                t.edit_desired(move |d| *d = cfg, author, now())?;
                Ok(())
            })
            .map_err(|e| ApiError::internal(format!("twin store: {e}")))?
            .map_err(|e| ApiError::internal(format!("twin of {}: {e}", p.device)))?;
        written.push(p.device.clone());
    }
    Ok(written)
}

/// On connect: a twin the fleet never configured (no `config_version`) gets the
/// effective config of its layers.
async fn apply_layers_on_connect(s: &AppState, device: &DeviceId) -> Result<(), ApiError> {
    let _held = s.hub.lock_layers().await;
    let version = s
        .hub
        .sync
        .read(device, |t| {
            t.fields(Section::Desired)
                .map(|f| f.contains_key("config_version"))
        })
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if version {
        return Ok(());
    }
    let d = device.clone();
    let Some(record) = s.store(move |st| st.get_device(&d)).await? else {
        return Ok(());
    };
    let tree = crate::http::twins::group_tree(s).await?;
    let layers = all_layers(s).await?;
    let eff = stack_for(&record, &tree, &layers);
    let writes = eff.changes_since(&LayeredConfig::default());
    if writes.is_empty() {
        return Ok(());
    }
    check_planned(s, &record, &writes)?;
    write_planned(
        s,
        &[Planned {
            device: device.clone(),
            writes,
        }],
        &Author::fleet("fleetd"),
    )?;
    s.audit(
        "system",
        "config.apply",
        &format!("device:{device}"),
        "allowed",
        json!({"reason": "first connection", "fields": eff.fields.keys().collect::<Vec<_>>()}),
        Some(device.clone()),
    )
    .await;
    Ok(())
}

/// Whether the fleet has configured the twin of `device` (it holds a
/// `config_version`).
pub fn configured(s: &AppState, device: &DeviceId) -> Result<bool, ApiError> {
    s.hub
        .sync
        .read(device, |t| {
            t.fields(Section::Desired)
                .map(|f| f.contains_key("config_version"))
        })
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The writes that take the twin of `device` from the effective config `before`
/// to `after`: the fields whose value changed, or every field of `after` when the
/// fleet never configured the twin (else the layers in force before would never
/// reach it: its first connection only configures a twin without a version).
pub fn writes_between(
    s: &AppState,
    device: &DeviceId,
    before: &LayeredConfig,
    after: &LayeredConfig,
) -> Result<BTreeMap<String, Option<FieldValue>>, ApiError> {
    Ok(if configured(s, device)? {
        after.changes_since(before)
    } else {
        after.changes_since(&LayeredConfig::default())
    })
}

/// Moving `device` to `group` (`None`: out of any group): the desired fields
/// whose effective value changes (the new group chain's layers instead of the
/// old one's), checked against the device's board on what its twin would hold
/// (422, nothing planned); `None` when nothing changes. The caller holds
/// [`Hub::lock_layers`] until the plan is written.
pub async fn plan_regroup(
    s: &AppState,
    device: &wrale_core::fleet::registry::DeviceRecord,
    group: Option<&wrale_core::GroupId>,
) -> Result<Option<Planned>, ApiError> {
    let tree = crate::http::twins::group_tree(s).await?;
    let layers = all_layers(s).await?;
    let before = stack_for(device, &tree, &layers);
    let mut moved = device.clone();
    moved.group = group.cloned();
    let after = stack_for(&moved, &tree, &layers);
    let writes = writes_between(s, &device.id, &before, &after)?;
    if writes.is_empty() {
        return Ok(None);
    }
    check_planned(s, &moved, &writes)?;
    Ok(Some(Planned {
        device: device.id.clone(),
        writes,
    }))
}

/// Appends this module's Prometheus lines to a `/metrics` answer
/// (`wrale_devices_connected` is rendered by fleetd's own metrics).
pub fn render_metrics(state: &AppState, out: &mut String) {
    let st = state.hub.sync.status();
    let mut m = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    m(
        "wrale_sync_sessions_total",
        "counter",
        "Device sync sessions started.",
        &[("", st.sessions_total)],
    );
    m(
        "wrale_sync_frames_rejected_total",
        "counter",
        "Sync frames rejected (malformed, wrong kind, another device's document).",
        &[("", st.frames_rejected)],
    );
    m(
        "wrale_sync_frames_total",
        "counter",
        "Sync frames by direction.",
        &[
            ("{direction=\"in\"}", st.frames_in),
            ("{direction=\"out\"}", st.frames_out),
        ],
    );
    m(
        "wrale_sync_bytes_total",
        "counter",
        "Sync bytes by direction.",
        &[
            ("{direction=\"in\"}", st.bytes_in),
            ("{direction=\"out\"}", st.bytes_out),
        ],
    );
    m(
        "wrale_twins_resident",
        "gauge",
        "Twins loaded in memory.",
        &[("", st.resident as u64)],
    );
    m(
        "wrale_twin_loads_total",
        "counter",
        "Twins loaded from the store.",
        &[("", st.loads)],
    );
    m(
        "wrale_twin_evictions_total",
        "counter",
        "Twins dropped from memory.",
        &[("", st.evictions)],
    );
    m(
        "wrale_twin_compactions_total",
        "counter",
        "Twin history compactions.",
        &[("", st.compactions)],
    );
    m(
        "wrale_sync_telemetry_records_total",
        "counter",
        "Telemetry records accepted from devices.",
        &[("", st.telemetry_records)],
    );
    m(
        "wrale_sync_telemetry_refused_total",
        "counter",
        "Telemetry frames left unacknowledged (store refused).",
        &[("", st.telemetry_refused)],
    );
    m(
        "wrale_commands_sent_total",
        "counter",
        "Commands sent to devices.",
        &[("", st.commands_sent)],
    );
}
