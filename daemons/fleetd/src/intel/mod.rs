//! Fleet intelligence in fleetd: the analyzer on a timer, health into the
//! registry, fleet alerts with silences, and webhook delivery.
//!
//! The decisions are wrale-core's ([`wrale_core::fleet::analyzer`],
//! [`wrale_core::fleet::alerting`]); this module reads the telemetry store, runs
//! them every `intel.interval`, keeps the latest [`FleetAnalysis`] in
//! [`AppState`], mirrors fleet alerts into the alert list, delivers notifications
//! to the configured webhooks and persists the alert book and the deliveries
//! (dead letters included) in `intel.db` in the data directory.
//!
//! The daemon calls [`start`] once the [`AppState`] exists. Other modules read the
//! latest analysis with [`AppState::analysis`] (or [`Intel::subscribe`] to wait
//! for the next pass) and a device's score with [`Intel::health_score`].

pub mod alerts;
pub mod analysis;
pub mod api;
mod db;
pub mod limit;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use wrale_core::fleet::alerting::{AlertBook, Condition, DeliveryQueue, RetryPolicy, Rule};
use wrale_core::fleet::analyzer::{AnalyzerConfig, FleetAnalysis};
use wrale_core::model::Severity;
use wrale_core::time::duration_str;
use wrale_core::{DeviceId, Timestamp};

use crate::state::AppState;

pub use db::IntelDb;

/// The file name of the SQLite intelligence store in the data directory.
pub const INTEL_DB: &str = "intel.db";

/// Who fleetd's own fleet alerts are raised and cleared by.
pub const ACTOR: &str = "fleet:analyzer";

/// `[intel]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntelConfig {
    /// Run the analyzer and fleet alerts at all.
    pub enabled: bool,
    /// How often the analyzer runs (`"30s"`).
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// How much recent telemetry each pass reads per device (`"1h"`).
    #[serde(with = "duration_str")]
    pub window: Duration,
    /// Most raw points read per device and metric (the newest are kept).
    pub max_points: u64,
    /// `[intel.analyzer]`: the analyzer's thresholds (wrale-core defaults).
    pub analyzer: AnalyzerConfig,
    /// `[[intel.rules]]`: fleet alert rules (default: [`default_rules`]).
    pub rules: Vec<Rule>,
    /// `[[intel.webhooks]]`: where notifications are posted.
    pub webhooks: Vec<WebhookConfig>,
    /// `[intel.retry]`: webhook retry policy.
    pub retry: RetryPolicy,
    /// Time limit of one webhook request.
    #[serde(with = "duration_str")]
    pub webhook_timeout: Duration,
    /// How many receivers (webhooks) are sent to at once; each receiver gets its
    /// deliveries one at a time, in order.
    pub webhook_concurrency: usize,
    /// Extra CA certificates (PEM) trusted for `https://` receivers, on top of
    /// the system store (private receivers, tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_ca_file: Option<std::path::PathBuf>,
}

impl Default for IntelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            window: Duration::from_secs(3600),
            max_points: 720,
            analyzer: AnalyzerConfig::default(),
            rules: default_rules(),
            webhooks: Vec::new(),
            retry: RetryPolicy::default(),
            webhook_timeout: Duration::from_secs(5),
            webhook_concurrency: 8,
            webhook_ca_file: None,
        }
    }
}

/// One `[[intel.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Id (default `hook-<n>`, 1-based position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `http://` or `https://` URL the notification JSON is posted to.
    pub url: String,
    /// Only notifications at least this severe (default `info`).
    #[serde(default = "info")]
    pub min_severity: Severity,
}

fn info() -> Severity {
    Severity::Info
}

/// The rules used when `[[intel.rules]]` is not given.
pub fn default_rules() -> Vec<Rule> {
    use Condition as C;
    vec![
        Rule::new(
            "health_low",
            C::HealthBelow { score: 50.0 },
            Severity::Warning,
        ),
        Rule::new(
            "throttle_soon",
            C::ThrottleWithin {
                within: Duration::from_secs(3600),
            },
            Severity::Warning,
        ),
        Rule::new(
            "fan_failing",
            C::Fan {
                status: wrale_core::fleet::analyzer::FanStatus::Failing,
            },
            Severity::Critical,
        ),
        Rule::new(
            "under_voltage",
            C::UnderVoltage { per_day: 5.0 },
            Severity::Warning,
        ),
        Rule::new(
            "storage_eol",
            C::StorageEol { days: 30.0 },
            Severity::Warning,
        ),
        Rule::new("anomaly", C::Anomaly { metric: None }, Severity::Warning),
        Rule::new(
            "hot_spot",
            C::HotSpot { min_excess_c: 4.0 },
            Severity::Warning,
        ),
        Rule::new(
            "offline",
            C::Offline {
                after: Duration::from_secs(900),
            },
            Severity::Warning,
        ),
        Rule::new(
            "device",
            C::DeviceAlert {
                min_severity: Severity::Warning,
            },
            Severity::Warning,
        ),
        Rule::new(
            "rack_storm",
            C::RackStorm {
                min_devices: 3,
                min_fraction: 0.5,
            },
            Severity::Critical,
        ),
    ]
}

impl IntelConfig {
    /// Checks the section; returns the dotted key (`intel.<key>`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("intel.{k}");
        if self.interval < Duration::from_millis(50) {
            return Err((key("interval"), "must be at least 50ms".into()));
        }
        if self.window < Duration::from_secs(1) {
            return Err((key("window"), "must be at least 1s".into()));
        }
        if !(2..=1_000_000).contains(&self.max_points) {
            return Err((key("max_points"), "must be between 2 and 1000000".into()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let ok = !r.id.is_empty()
                && r.id.len() <= 64
                && r.id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
                });
            if !ok {
                return Err((
                    key(&format!("rules[{i}].id")),
                    format!("{:?}: 1-64 characters of a-z, 0-9, '_' and '-'", r.id),
                ));
            }
            if !ids.insert(r.id.as_str()) {
                return Err((
                    key(&format!("rules[{i}].id")),
                    format!("{:?} is used twice", r.id),
                ));
            }
        }
        let mut hook_ids = std::collections::BTreeSet::new();
        for (i, h) in self.webhooks().iter().enumerate() {
            if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                return Err((
                    key(&format!("webhooks[{i}].url")),
                    format!("{:?}: only http:// and https:// URLs are supported", h.url),
                ));
            }
            if !hook_ids.insert(h.id.clone()) {
                return Err((
                    key(&format!("webhooks[{i}].id")),
                    format!("{:?} is used twice", h.id),
                ));
            }
        }
        let r = &self.retry;
        if !(1..=100).contains(&r.max_attempts) {
            return Err((
                key("retry.max_attempts"),
                "must be between 1 and 100".into(),
            ));
        }
        if !(r.factor.is_finite() && r.factor >= 1.0) {
            return Err((key("retry.factor"), "must be at least 1".into()));
        }
        if self.webhook_timeout < Duration::from_millis(10) {
            return Err((key("webhook_timeout"), "must be at least 10ms".into()));
        }
        if !(1..=256).contains(&self.webhook_concurrency) {
            return Err((
                key("webhook_concurrency"),
                "must be between 1 and 256".into(),
            ));
        }
        Ok(())
    }

    /// The webhooks with their ids.
    pub fn webhooks(&self) -> Vec<wrale_core::fleet::alerting::Webhook> {
        self.webhooks
            .iter()
            .enumerate()
            .map(|(i, h)| wrale_core::fleet::alerting::Webhook {
                id: h.id.clone().unwrap_or_else(|| format!("hook-{}", i + 1)),
                url: h.url.clone(),
                min_severity: h.min_severity,
            })
            .collect()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct IntelStats {
    /// Analyzer passes completed.
    pub passes: AtomicU64,
    /// Analyzer passes that failed.
    pub pass_errors: AtomicU64,
    /// Duration of the last pass, microseconds.
    pub last_pass_us: AtomicU64,
    /// Webhook attempts that succeeded.
    pub deliveries_ok: AtomicU64,
    /// Webhook attempts that failed (to be retried or dead-lettered).
    pub deliveries_failed: AtomicU64,
    /// Deliveries given up (dead letters).
    pub dead_letters: AtomicU64,
    /// Notifications suppressed by a silence (counted once per alert episode).
    pub silenced: AtomicU64,
}

/// The alert side: the book and the delivery queue.
#[derive(Debug, Default)]
pub struct AlertState {
    /// Fleet alerts and silences.
    pub book: AlertBook,
    /// Webhook deliveries.
    pub queue: DeliveryQueue,
}

/// fleetd's fleet intelligence: the latest analysis and the alert state.
/// Cheap to clone; lives in [`AppState::intel`].
#[derive(Debug, Clone)]
pub struct Intel {
    tx: Arc<watch::Sender<Arc<FleetAnalysis>>>,
    /// Alert book and deliveries (one lock; never held across an await).
    pub alerts: Arc<Mutex<AlertState>>,
    /// Counters.
    pub stats: Arc<IntelStats>,
    /// Wakes the webhook sender.
    pub wake: Arc<Notify>,
    /// Asks for an analyzer pass now.
    pub run_now: Arc<Notify>,
    db: Arc<OnceLock<Arc<IntelDb>>>,
}

impl Default for Intel {
    fn default() -> Self {
        Self::new()
    }
}

impl Intel {
    /// No analysis yet (an empty [`FleetAnalysis`] at time 0).
    pub fn new() -> Self {
        let empty = FleetAnalysis {
            at: Timestamp::from_millis(0),
            devices: Vec::new(),
            anomalies: Vec::new(),
            hot_spots: Vec::new(),
            groups: Vec::new(),
        };
        let (tx, _) = watch::channel(Arc::new(empty));
        Self {
            tx: Arc::new(tx),
            alerts: Arc::new(Mutex::new(AlertState::default())),
            stats: Arc::new(IntelStats::default()),
            wake: Arc::new(Notify::new()),
            run_now: Arc::new(Notify::new()),
            db: Arc::new(OnceLock::new()),
        }
    }

    /// The latest analysis (empty, `at` = epoch, before the first pass).
    pub fn latest(&self) -> Arc<FleetAnalysis> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new analysis (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<FleetAnalysis>> {
        self.tx.subscribe()
    }

    /// A device's health score (0-100) in the latest analysis, if it was analyzed.
    pub fn health_score(&self, device: &DeviceId) -> Option<f64> {
        self.latest().device(device).map(|d| d.health.score)
    }

    /// Publishes a new analysis.
    pub fn publish(&self, analysis: FleetAnalysis) {
        self.tx.send_replace(Arc::new(analysis));
    }

    /// The store, once [`start`] opened it.
    pub fn db(&self) -> Option<Arc<IntelDb>> {
        self.db.get().cloned()
    }

    /// Locks the alert state (a poisoned lock is taken over: the state is plain data).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, AlertState> {
        match self.alerts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl AppState {
    /// The latest fleet analysis (see [`Intel::latest`]).
    pub fn analysis(&self) -> Arc<FleetAnalysis> {
        self.intel.latest()
    }
}

/// Opens `intel.db`, restores the alert book and the pending deliveries, and
/// starts the analyzer and webhook tasks (when `intel.enabled`); they stop when
/// `state.shutdown` is cancelled.
pub fn start(state: &AppState) -> anyhow::Result<()> {
    let config = state.config();
    let db = IntelDb::open(&config.data.dir.join(INTEL_DB))?;
    let (book, deliveries) = db.load()?;
    {
        let mut a = state.intel.lock();
        a.book = book.unwrap_or_default();
        a.queue = DeliveryQueue::restore(config.intel.retry.clone(), deliveries);
    }
    let _ = state.intel.db.set(Arc::new(db));
    if !config.intel.enabled {
        tracing::info!("fleet intelligence disabled (intel.enabled = false)");
        return Ok(());
    }
    analysis::start(state);
    webhooks::start(state);
    Ok(())
}

/// After a config reload: wakes the webhook sender, which applies a changed
/// `intel.webhook_concurrency` at once (see [`limit`]).
pub fn reloaded(state: &AppState) {
    state.intel.wake.notify_one();
}

/// Appends this module's Prometheus lines to a `/metrics` answer.
pub fn render_metrics(state: &AppState, out: &mut String) {
    use std::fmt::Write as _;
    let fa = state.analysis();
    let s = &state.intel.stats;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    head(
        out,
        "wrale_device_health_score",
        "gauge",
        "Analyzer health score per device (0-100).",
    );
    for d in &fa.devices {
        let _ = writeln!(
            out,
            "wrale_device_health_score{{device=\"{}\"}} {}",
            esc(d.device.as_str()),
            d.health.score
        );
    }
    head(
        out,
        "wrale_fleet_health_score",
        "gauge",
        "Mean analyzer health score per scope (fleet, site, rack, group).",
    );
    head(
        out,
        "wrale_fleet_health_min_score",
        "gauge",
        "Lowest analyzer health score per scope.",
    );
    let mut min_lines = String::new();
    for g in &fa.groups {
        let labels = analysis::scope_labels(&g.scope)
            .into_iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(&v)))
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(out, "wrale_fleet_health_score{{{labels}}} {}", g.mean_score);
        let _ = writeln!(
            min_lines,
            "wrale_fleet_health_min_score{{{labels}}} {}",
            g.min_score
        );
    }
    out.push_str(&min_lines);
    head(
        out,
        "wrale_fleet_hot_spots",
        "gauge",
        "Locations the analyzer reports as hot spots.",
    );
    let _ = writeln!(out, "wrale_fleet_hot_spots {}", fa.hot_spots.len());
    head(
        out,
        "wrale_fleet_anomalies",
        "gauge",
        "Devices unlike their peers (one per device and metric).",
    );
    let _ = writeln!(out, "wrale_fleet_anomalies {}", fa.anomalies.len());
    let (active, silences, pending, dead) = {
        let a = state.intel.lock();
        let mut active: BTreeMap<Severity, usize> = BTreeMap::new();
        for al in a.book.open() {
            *active.entry(al.severity).or_default() += 1;
        }
        let now = crate::state::now();
        let silences = a
            .book
            .silences
            .iter()
            .filter(|s| s.from <= now && now < s.until)
            .count();
        let pending = a
            .queue
            .deliveries
            .values()
            .filter(|d| d.status == wrale_core::fleet::alerting::DeliveryStatus::Pending)
            .count();
        let dead = a.queue.dead_letters().count();
        (active, silences, pending, dead)
    };
    head(
        out,
        "wrale_fleet_alerts_active",
        "gauge",
        "Open fleet alerts (firing or acknowledged) by severity.",
    );
    for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
        let _ = writeln!(
            out,
            "wrale_fleet_alerts_active{{severity=\"{sev}\"}} {}",
            active.get(&sev).copied().unwrap_or(0)
        );
    }
    head(
        out,
        "wrale_fleet_silences_active",
        "gauge",
        "Silence windows in force.",
    );
    let _ = writeln!(out, "wrale_fleet_silences_active {silences}");
    head(
        out,
        "wrale_webhook_deliveries_total",
        "counter",
        "Webhook delivery attempts by outcome.",
    );
    let _ = writeln!(
        out,
        "wrale_webhook_deliveries_total{{outcome=\"ok\"}} {}",
        get(&s.deliveries_ok)
    );
    let _ = writeln!(
        out,
        "wrale_webhook_deliveries_total{{outcome=\"failed\"}} {}",
        get(&s.deliveries_failed)
    );
    head(
        out,
        "wrale_webhook_dead_letters_total",
        "counter",
        "Webhook deliveries given up (dead letters) since start.",
    );
    let _ = writeln!(
        out,
        "wrale_webhook_dead_letters_total {}",
        get(&s.dead_letters)
    );
    head(
        out,
        "wrale_webhook_dead_letters",
        "gauge",
        "Dead-letter records kept.",
    );
    let _ = writeln!(out, "wrale_webhook_dead_letters {dead}");
    head(
        out,
        "wrale_webhook_deliveries_pending",
        "gauge",
        "Webhook deliveries waiting for an attempt.",
    );
    let _ = writeln!(out, "wrale_webhook_deliveries_pending {pending}");
    head(
        out,
        "wrale_analyzer_passes_total",
        "counter",
        "Analyzer passes completed.",
    );
    let _ = writeln!(out, "wrale_analyzer_passes_total {}", get(&s.passes));
    head(
        out,
        "wrale_analyzer_pass_errors_total",
        "counter",
        "Analyzer passes that failed.",
    );
    let _ = writeln!(
        out,
        "wrale_analyzer_pass_errors_total {}",
        get(&s.pass_errors)
    );
    head(
        out,
        "wrale_analyzer_last_pass_seconds",
        "gauge",
        "Duration of the last analyzer pass.",
    );
    let _ = writeln!(
        out,
        "wrale_analyzer_last_pass_seconds {}",
        get(&s.last_pass_us) as f64 / 1e6
    );
}
