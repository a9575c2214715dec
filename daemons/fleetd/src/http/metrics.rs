//! `/metrics` in the Prometheus text format (version 0.0.4): `wrale_` prefix,
//! base units, `_total` counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use wrale_core::fleet::access::Action;
use wrale_core::fleet::registry::DeviceStatus;

use crate::error::ApiError;
use crate::state::{AppState, LATENCY_BUCKETS};

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders fleetd's own metrics, then the telemetry and hub modules' lines.
pub async fn render(state: &AppState) -> String {
    let mut out = String::new();
    let devices = state.store(|s| s.list_devices()).await.unwrap_or_default();
    let size = state.store(|s| s.size_bytes()).await.unwrap_or(0);
    head(
        &mut out,
        "wrale_devices_registered",
        "gauge",
        "Devices in the registry (revoked ones included).",
    );
    let _ = writeln!(out, "wrale_devices_registered {}", devices.len());
    head(
        &mut out,
        "wrale_devices",
        "gauge",
        "Devices by connection status.",
    );
    for status in [
        DeviceStatus::Online,
        DeviceStatus::Offline,
        DeviceStatus::Never,
        DeviceStatus::Revoked,
    ] {
        let n = devices.iter().filter(|d| d.status == status).count();
        let _ = writeln!(out, "wrale_devices{{status=\"{}\"}} {n}", status.as_str());
    }
    head(
        &mut out,
        "wrale_devices_connected",
        "gauge",
        "Devices with a live sync session.",
    );
    let connected = state.hub.connected().max(
        devices
            .iter()
            .filter(|d| d.status == DeviceStatus::Online)
            .count(),
    );
    let _ = writeln!(out, "wrale_devices_connected {connected}");
    head(
        &mut out,
        "wrale_store_size_bytes",
        "gauge",
        "Size of the fleet store on disk (with its WAL).",
    );
    let _ = writeln!(out, "wrale_store_size_bytes {size}");
    head(
        &mut out,
        "wrale_events_published_total",
        "counter",
        "Events published on the live event bus.",
    );
    let _ = writeln!(
        out,
        "wrale_events_published_total {}",
        state.events.published()
    );
    head(
        &mut out,
        "wrale_events_dropped_total",
        "counter",
        "Events a slow stream subscriber missed.",
    );
    let _ = writeln!(
        out,
        "wrale_events_dropped_total {}",
        state.metrics.events_dropped.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "wrale_login_failures_total",
        "counter",
        "Refused login attempts.",
    );
    let _ = writeln!(
        out,
        "wrale_login_failures_total {}",
        state.metrics.login_failures.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "wrale_http_requests_total",
        "counter",
        "API requests by method, route and status.",
    );
    if let Ok(m) = state.metrics.requests.lock() {
        for ((method, route, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "wrale_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                esc(method),
                esc(route)
            );
        }
    }
    head(
        &mut out,
        "wrale_http_request_duration_seconds",
        "histogram",
        "API request latency.",
    );
    for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
        let n = state.metrics.latency_buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "wrale_http_request_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let count = state.metrics.latency_buckets[10].load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "wrale_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let sum = state.metrics.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "wrale_http_request_duration_seconds_sum {sum}");
    let _ = writeln!(out, "wrale_http_request_duration_seconds_count {count}");
    crate::telemetry::render_metrics(state, &mut out);
    crate::twins::render_metrics(state, &mut out);
    crate::intel::render_metrics(state, &mut out);
    crate::orchestrate::render_metrics(state, &mut out).await;
    out
}

/// `GET /metrics`: a viewer token unless `api.public_metrics = true`.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
              (status = 401, description = "no token and metrics are not public")))]
pub async fn handler(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !s.config().api.public_metrics {
        let secret = super::bearer(&headers, None).ok_or_else(|| {
            ApiError::unauthorized(
                "missing `Authorization: Bearer <token>` header (or set api.public_metrics)",
            )
        })?;
        super::authenticate(&s, &secret)
            .await?
            .require(Action::ReadFleet)?;
    }
    let body = render(&s).await;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
