//! `/metrics` in the Prometheus text format (version 0.0.4), rendered by hand:
//! names have the `wrale_` prefix and base units, counters end in `_total`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use wrale_core::model::{Reading, Sample, ThrottleFlags};

use crate::state::{AppState, Histogram, LATENCY_BUCKETS};
use crate::workloads::{WorkloadState, WorkloadStatus};

/// Escapes a label value (`\`, `"` and newlines).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", fmt_value(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.head(name, "gauge", help);
            self.line(name, &[], v);
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Writes one histogram in the Prometheus text format (cumulative buckets).
fn histogram(o: &mut Out, name: &str, help: &str, h: &Histogram) {
    o.head(name, "histogram", help);
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
        cumulative += n;
        o.line(&bucket, &[("le", &bound.to_string())], cumulative as f64);
    }
    o.line(&bucket, &[("le", "+Inf")], h.count as f64);
    o.line(&format!("{name}_sum"), &[], h.sum);
    o.line(&format!("{name}_count"), &[], h.count as f64);
}

fn throttle_flags(f: &ThrottleFlags) -> [(&'static str, bool); 8] {
    [
        ("under_voltage", f.under_voltage),
        ("freq_capped", f.freq_capped),
        ("throttled", f.throttled),
        ("soft_temp_limit", f.soft_temp_limit),
        ("under_voltage_occurred", f.under_voltage_occurred),
        ("freq_capped_occurred", f.freq_capped_occurred),
        ("throttled_occurred", f.throttled_occurred),
        ("soft_temp_limit_occurred", f.soft_temp_limit_occurred),
    ]
}

fn sample_metrics(o: &mut Out, s: &Sample) {
    let temps: Vec<_> = s
        .temperatures
        .iter()
        .filter_map(|t| t.value.ok().map(|v| (t, v)))
        .collect();
    if !temps.is_empty() {
        o.head(
            "wrale_temperature_celsius",
            "gauge",
            "Temperature of a sensor in degrees Celsius.",
        );
        for (t, v) in temps {
            let kind = serde_json::to_value(t.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_owned))
                .unwrap_or_default();
            o.line(
                "wrale_temperature_celsius",
                &[("sensor", &t.id), ("kind", &kind)],
                v.get(),
            );
        }
    }
    let faults: Vec<_> = s
        .temperatures
        .iter()
        .map(|t| (t.id.as_str(), !t.value.is_ok()))
        .collect();
    if !faults.is_empty() {
        o.head(
            "wrale_sensor_fault",
            "gauge",
            "1 when a temperature sensor is missing or faulted.",
        );
        for (id, bad) in faults {
            o.line(
                "wrale_sensor_fault",
                &[("sensor", id)],
                f64::from(u8::from(bad)),
            );
        }
    }
    let duties: Vec<_> = s
        .fans
        .iter()
        .filter_map(|f| f.duty.ok().map(|d| (f.id.as_str(), d.fraction())))
        .collect();
    if !duties.is_empty() {
        o.head(
            "wrale_fan_duty_ratio",
            "gauge",
            "Commanded fan duty as a ratio (0 to 1).",
        );
        for (id, d) in duties {
            o.line("wrale_fan_duty_ratio", &[("fan", id)], d);
        }
    }
    let rpms: Vec<_> = s
        .fans
        .iter()
        .filter_map(|f| f.rpm.ok().map(|r| (f.id.as_str(), r.get())))
        .collect();
    if !rpms.is_empty() {
        o.head(
            "wrale_fan_rpm",
            "gauge",
            "Fan speed from the tachometer in revolutions per minute.",
        );
        for (id, r) in rpms {
            o.line("wrale_fan_rpm", &[("fan", id)], r);
        }
    }
    o.gauge(
        "wrale_supply_volts",
        "Supply voltage at the board.",
        s.supply_voltage.ok().map(|v| v.get()),
    );
    o.gauge(
        "wrale_current_amperes",
        "Supply current.",
        s.current.ok().map(|v| v.get()),
    );
    o.gauge(
        "wrale_power_watts",
        "Power drawn by the board.",
        s.power.ok().map(|v| v.get()),
    );
    o.gauge(
        "wrale_cpu_load_ratio",
        "CPU load over the last sampling interval (0 to 1).",
        s.cpu_load.ok().map(|v| v.fraction()),
    );
    o.gauge(
        "wrale_cpu_frequency_hertz",
        "Current CPU frequency.",
        s.cpu_freq.ok().map(|v| v.get() * 1e6),
    );
    if let Reading::Ok(flags) = s.throttle {
        o.head(
            "wrale_throttle_flag",
            "gauge",
            "Firmware throttle and under-voltage flags (1 = set).",
        );
        for (name, on) in throttle_flags(&flags) {
            o.line(
                "wrale_throttle_flag",
                &[("flag", name)],
                f64::from(u8::from(on)),
            );
        }
    }
    if let Reading::Ok(b) = &s.battery {
        o.gauge(
            "wrale_battery_level_ratio",
            "Battery charge level (0 to 1).",
            Some(b.level.fraction()),
        );
    }
}

/// Renders every metric.
pub fn render(app: &AppState, workloads: &[WorkloadStatus], throttled: bool) -> String {
    let mut o = Out(String::with_capacity(4096));
    let dev = app.device();
    o.head(
        "wrale_build_info",
        "gauge",
        "metald build and device identity.",
    );
    o.line(
        "wrale_build_info",
        &[
            ("version", dev.agent_version),
            ("device", dev.id.as_str()),
            ("model", dev.model.as_str()),
            ("backend", dev.backend),
        ],
        1.0,
    );
    o.gauge(
        "wrale_up",
        "1 when the sampling loop runs and has taken a sample.",
        Some(f64::from(u8::from(app.ready()))),
    );
    let mode = app.mode();
    o.head(
        "wrale_mode",
        "gauge",
        "1 for the operating mode in force (normal, degraded, safe), 0 for the others.",
    );
    for m in crate::state::Mode::ALL {
        o.line(
            "wrale_mode",
            &[("mode", m.as_str())],
            f64::from(u8::from(m == mode)),
        );
    }
    let latest = app.latest();
    if let Some(l) = &latest {
        sample_metrics(&mut o, &l.sample);
    }
    let m = app.metrics();
    o.head("wrale_samples_total", "counter", "Samples taken.");
    o.line(
        "wrale_samples_total",
        &[],
        m.samples.load(Ordering::Relaxed) as f64,
    );
    histogram(
        &mut o,
        "wrale_sample_latency_seconds",
        "Time to read every sensor once.",
        &m.latency(),
    );
    histogram(
        &mut o,
        "wrale_sample_to_action_seconds",
        "Time from the start of a sample read until the safety engine's actions for it were applied.",
        &m.sample_to_action(),
    );
    o.head(
        "wrale_events_dropped_total",
        "counter",
        "Events and readings lost because a queue was full.",
    );
    o.line(
        "wrale_events_dropped_total",
        &[("queue", "stream")],
        m.stream_dropped.load(Ordering::Relaxed) as f64,
    );
    o.line(
        "wrale_events_dropped_total",
        &[("queue", "hal")],
        m.hal_events_dropped.load(Ordering::Relaxed) as f64,
    );
    o.head(
        "wrale_safety_engine_failures_total",
        "counter",
        "Times the safety engine failed to answer (outputs went fail-safe).",
    );
    o.line(
        "wrale_safety_engine_failures_total",
        &[],
        m.engine_failures.load(Ordering::Relaxed) as f64,
    );
    o.head(
        "wrale_action_errors_total",
        "counter",
        "Hardware errors while applying safety actions.",
    );
    o.line(
        "wrale_action_errors_total",
        &[],
        m.action_errors.load(Ordering::Relaxed) as f64,
    );
    let alerts = app.alerts();
    o.head("wrale_alerts_active", "gauge", "Active alerts.");
    o.line("wrale_alerts_active", &[], alerts.len() as f64);
    if !alerts.is_empty() {
        o.head("wrale_alert_active", "gauge", "1 for each active alert.");
        for a in &alerts {
            let sev = serde_json::to_value(a.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            o.line(
                "wrale_alert_active",
                &[("alert", &a.id), ("severity", &sev)],
                1.0,
            );
        }
    }
    o.gauge(
        "wrale_workloads_throttled",
        "1 while workloads are throttled.",
        Some(f64::from(u8::from(throttled))),
    );
    if !workloads.is_empty() {
        o.head(
            "wrale_workload_up",
            "gauge",
            "1 when the workload's process is running (paused counts).",
        );
        for w in workloads {
            let up = matches!(
                w.state,
                WorkloadState::Running | WorkloadState::Paused | WorkloadState::Limited
            );
            o.line(
                "wrale_workload_up",
                &[("workload", &w.name)],
                f64::from(u8::from(up)),
            );
        }
        o.head(
            "wrale_workload_restarts_total",
            "counter",
            "Restarts of a workload.",
        );
        for w in workloads {
            o.line(
                "wrale_workload_restarts_total",
                &[("workload", &w.name)],
                w.restarts as f64,
            );
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut o = Out(String::new());
        o.line("m", &[("l", "x\"y")], 1.5);
        assert_eq!(o.0, "m{l=\"x\\\"y\"} 1.5\n");
    }

    #[test]
    fn special_values() {
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(2.0), "2");
    }
}
