//! The analyzer pass: recent telemetry per device -> `analyze_fleet` -> the
//! snapshot in [`AppState`], device health in the registry, then the fleet alert
//! evaluation ([`super::alerts`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wrale_core::fleet::analyzer::{DeviceWindow, HealthScope, TelemetryPoint, analyze_fleet};
use wrale_core::fleet::registry::{DeviceRecord, Health};
use wrale_core::fleet::telemetry::TimeRange;
use wrale_core::model::{Severity, ThrottleFlags};
use wrale_core::units::{Amps, Celsius, Percent, Rpm, Volts, Watts};
use wrale_core::{DeviceId, Timestamp};

use super::IntelConfig;
use crate::state::{AppState, now};
use crate::store::{AlertFilter, AlertRecord};
use crate::telemetry::TelemetryStore;

/// The metrics the analyzer reads.
const METRICS: [&str; 9] = [
    "cpu_temp_c",
    "ambient_temp_c",
    "supply_v",
    "current_a",
    "power_w",
    "fan_duty_pct",
    "fan_rpm",
    "cpu_load_pct",
    "throttle_bits",
];

/// Starts the analyzer task: a pass every `intel.interval` (re-read after a
/// reload), or at once when [`super::Intel::run_now`] is notified.
pub fn start(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            let interval = state.config().intel.interval;
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
                () = state.intel.run_now.notified() => {}
            }
            let started = Instant::now();
            match run_pass(&state).await {
                Ok(()) => {
                    state.intel.stats.passes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    state
                        .intel
                        .stats
                        .pass_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!("analyzer pass failed: {e:#}");
                }
            }
            state
                .intel
                .stats
                .last_pass_us
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    });
}

/// One window per device from the telemetry store, and the newest point time of
/// each device (blocking).
pub fn build_windows(
    store: &dyn TelemetryStore,
    devices: &[DeviceRecord],
    cfg: &IntelConfig,
    now: Timestamp,
) -> anyhow::Result<Vec<DeviceWindow>> {
    let range = TimeRange::new(now - cfg.window, now + Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::with_capacity(devices.len());
    for d in devices.iter().filter(|d| !d.revoked) {
        let mut by_t: BTreeMap<Timestamp, TelemetryPoint> = BTreeMap::new();
        for metric in METRICS {
            // Only the newest `max_points` of each series are read.
            for (t, v) in store.raw_newest(&d.id, metric, &range, cfg.max_points)? {
                let p = by_t.entry(t).or_insert_with(|| TelemetryPoint::at(t));
                set(p, metric, v);
            }
        }
        let mut points: Vec<TelemetryPoint> = by_t.into_values().collect();
        if points.len() as u64 > cfg.max_points {
            points.drain(..points.len() - cfg.max_points as usize);
        }
        if points.is_empty() {
            continue;
        }
        let mut w = DeviceWindow::new(d.id.clone(), d.model, d.location.clone(), points);
        w.group = d.group.clone();
        out.push(w);
    }
    Ok(out)
}

fn set(p: &mut TelemetryPoint, metric: &str, v: f64) {
    match metric {
        "cpu_temp_c" => p.cpu_temp = Some(Celsius(v)),
        "ambient_temp_c" => p.ambient = Some(Celsius(v)),
        "supply_v" => p.supply_voltage = Some(Volts(v)),
        "current_a" => p.current = Some(Amps(v)),
        "power_w" => p.power = Some(Watts(v)),
        "fan_duty_pct" => p.fan_duty = Some(Percent::saturating(v)),
        "fan_rpm" => p.fan_rpm = Some(Rpm(v)),
        "cpu_load_pct" => p.cpu_load = Some(Percent::saturating(v)),
        "throttle_bits" => {
            let f = ThrottleFlags::from_bits(v.max(0.0) as u32);
            p.throttled = f.throttled || f.soft_temp_limit;
            p.under_voltage = f.under_voltage || f.under_voltage_occurred;
        }
        _ => {}
    }
}

/// The health a device's active alerts (from its twin or raised by users) imply.
fn alert_level(alerts: &[&AlertRecord]) -> Health {
    match alerts.iter().map(|a| a.severity).max() {
        Some(Severity::Critical) => Health::Critical,
        Some(Severity::Warning) => Health::Warning,
        _ => Health::Ok,
    }
}

fn rank(h: Health) -> u8 {
    match h {
        Health::Unknown => 0,
        Health::Ok => 1,
        Health::Warning => 2,
        Health::Critical => 3,
    }
}

/// Prometheus labels of a health scope.
pub fn scope_labels(scope: &HealthScope) -> Vec<(&'static str, String)> {
    match scope {
        HealthScope::Fleet => vec![("scope", "fleet".into())],
        HealthScope::Site { site } => vec![("scope", "site".into()), ("site", site.clone())],
        HealthScope::Rack { site, rack } => vec![
            ("scope", "rack".into()),
            ("site", site.clone()),
            ("rack", rack.clone()),
        ],
        HealthScope::Group { group } => {
            vec![("scope", "group".into()), ("group", group.to_string())]
        }
    }
}

/// One pass: analysis, registry health, fleet alerts.
pub async fn run_pass(state: &AppState) -> anyhow::Result<()> {
    let cfg = state.config();
    let t = now();
    let devices = state
        .store(|s| s.list_devices())
        .await
        .map_err(|e| anyhow::anyhow!("devices: {}", e.message()))?;
    let filter = AlertFilter {
        active_only: true,
        limit: 100_000,
        ..Default::default()
    };
    let active = state
        .store(move |s| s.list_alerts(&filter))
        .await
        .map_err(|e| anyhow::anyhow!("alerts: {}", e.message()))?;
    let store = state.telemetry.store().clone();
    let (devs, icfg) = (devices.clone(), cfg.intel.clone());
    let fa = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let windows = build_windows(store.as_ref(), &devs, &icfg, t)?;
        Ok(analyze_fleet(&windows, &icfg.analyzer, t))
    })
    .await
    .map_err(|e| anyhow::anyhow!("analyzer task: {e}"))??;

    // Device alerts (not fleetd's own fleet alerts) per device.
    let mut device_alerts: BTreeMap<&DeviceId, Vec<&AlertRecord>> = BTreeMap::new();
    for a in &active {
        if let Some(d) = &a.device
            && a.raised_by != super::ACTOR
        {
            device_alerts.entry(d).or_default().push(a);
        }
    }
    // Registry health: the analysis level, raised to what active device alerts say.
    let mut changes = Vec::new();
    for d in devices.iter().filter(|d| !d.revoked) {
        let Some(a) = fa.device(&d.id) else { continue };
        let mut level = a.health_level();
        let from_alerts = alert_level(device_alerts.get(&d.id).map_or(&[][..], |v| &v[..]));
        if rank(from_alerts) > rank(level) && level != Health::Unknown {
            level = from_alerts;
        }
        if level != d.health {
            changes.push((d.id.clone(), level));
        }
    }
    if !changes.is_empty() {
        let ch = changes.clone();
        state
            .store(move |s| {
                for (id, h) in &ch {
                    s.set_device_health(id, *h)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| anyhow::anyhow!("health: {}", e.message()))?;
        for (id, h) in changes {
            state
                .publish(
                    crate::state::EventKind::Device,
                    Some(id.clone()),
                    serde_json::json!({"event": "health", "id": id, "health": h.as_str()}),
                )
                .await;
        }
    }
    let fa = Arc::new(fa);
    state.intel.tx.send_replace(fa.clone());
    super::alerts::evaluate(state, &fa, &devices, &active, t).await
}
