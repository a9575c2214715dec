//! State shared by the sampling loop, the supervisor and the HTTP handlers.
//!
//! Locks here are std locks held for a copy or a swap, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wrale_core::Timestamp;
use wrale_core::board::{BoardModel, BoardProfile};
use wrale_core::model::{DeviceId, Sample};
use wrale_hal::HalEvent;

use crate::auth::Tokens;
use crate::config::Config;
use crate::safety::{Action, Alert};

/// One item of the live stream (`/api/v1/stream`).
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// A new sample.
    Reading(Arc<Sample>),
    /// A hardware event.
    Hal(HalEvent),
    /// An action the safety engine took.
    Action(Action),
    /// An alert was raised (`active`) or cleared.
    Alert {
        /// The alert.
        alert: Alert,
        /// Raised or cleared.
        active: bool,
    },
}

impl StreamItem {
    /// The item as one JSON text message, `{"type": ..., ...}`.
    pub fn to_json(&self) -> String {
        let v = match self {
            StreamItem::Reading(s) => json!({ "type": "reading", "sample": &**s }),
            StreamItem::Hal(e) => json!({ "type": "hal_event", "event": e }),
            StreamItem::Action(a) => json!({ "type": "action", "action": a }),
            StreamItem::Alert { alert, active } => {
                json!({ "type": "alert", "active": active, "alert": alert })
            }
        };
        v.to_string()
    }
}

/// The daemon's operating mode, as `/api/v1/state` (`mode`) and `/metrics`
/// (`wrale_mode{mode}`) report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Everything works.
    Normal,
    /// The fleet is unreachable: metald keeps running on the last desired state and
    /// accepts local edits, merged when the link is back (set by the edge agent).
    Degraded,
    /// A hardware fault: outputs held at their fail-safe state, commands that would
    /// drive outputs refused (`safe_mode`); reads, diagnostics and sync still work.
    Safe,
}

impl Mode {
    /// Every mode, in the order they are reported.
    pub const ALL: [Mode; 3] = [Mode::Normal, Mode::Degraded, Mode::Safe];

    /// The stable name (`normal`, `degraded`, `safe`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Degraded => "degraded",
            Mode::Safe => "safe",
        }
    }
}

/// The conditions behind the [`Mode`]: each is set and cleared by its owner (safe
/// mode by the sampling loop, degraded by the fleet edge agent). Safe outranks
/// degraded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Modes {
    /// Why the device is in safe mode (a hardware fault), if it is.
    pub safe: Option<String>,
    /// Why the fleet is unreachable, if `[fleet]` is configured and the link is down.
    pub degraded: Option<String>,
}

impl Modes {
    /// The effective mode: safe, else degraded, else normal.
    pub fn mode(&self) -> Mode {
        if self.safe.is_some() {
            Mode::Safe
        } else if self.degraded.is_some() {
            Mode::Degraded
        } else {
            Mode::Normal
        }
    }
}

/// Identity of this device as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    /// Device id.
    pub id: DeviceId,
    /// Board model.
    pub model: BoardModel,
    /// Board name from the profile.
    pub board: String,
    /// HAL backend.
    pub backend: &'static str,
    /// metald's version.
    pub agent_version: &'static str,
    /// When metald started.
    pub started_at: Timestamp,
    /// Name of the safety hook in charge.
    pub safety_engine: &'static str,
}

/// The latest sample with how long it took.
#[derive(Debug, Clone)]
pub struct Latest {
    /// The sample.
    pub sample: Arc<Sample>,
    /// Time spent in `Board::sample`.
    pub latency: Duration,
    /// Sequence number (1 for the first sample).
    pub seq: u64,
}

/// Upper bounds (seconds) of the latency histogram buckets (sample read and
/// sample-to-action). Fine at the low end: on a Pi 4 a whole tick takes well
/// under a millisecond, and the buckets must still resolve a Pi Zero.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Counters and the latency histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Samples taken.
    pub samples: AtomicU64,
    /// Stream items lost by slow subscribers.
    pub stream_dropped: AtomicU64,
    /// Safety-engine panics (each one put the outputs into the fail-safe state).
    pub engine_failures: AtomicU64,
    /// HAL errors while applying actions.
    pub action_errors: AtomicU64,
    /// Hardware events the HAL dropped because a queue was full.
    pub hal_events_dropped: AtomicU64,
    latency: Mutex<Histogram>,
    sample_to_action: Mutex<Histogram>,
}

/// A histogram over [`LATENCY_BUCKETS`].
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Count per bucket of [`LATENCY_BUCKETS`] (not cumulative).
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    /// Observations.
    pub count: u64,
    /// Sum of observations in seconds.
    pub sum: f64,
}

impl Histogram {
    /// Records one observation (values above the last bucket count only in
    /// `count`, `sum` and the `+Inf` bucket).
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    /// The upper bound of the bucket holding the `q` quantile (0..=1), the way
    /// Prometheus' `histogram_quantile` bounds it from above; `None` when empty
    /// or when the quantile lies beyond the last bucket.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.buckets) {
            seen += n;
            if seen >= rank {
                return Some(*bound);
            }
        }
        None
    }
}

impl Metrics {
    /// Records one sample's read latency.
    pub fn observe_latency(&self, d: Duration) {
        lock(&self.latency).observe(d);
    }

    /// Records the time from the start of a sample read until the engine's
    /// actions for it were applied through the HAL.
    pub fn observe_sample_to_action(&self, d: Duration) {
        lock(&self.sample_to_action).observe(d);
    }

    /// A copy of the sample-read latency histogram.
    pub fn latency(&self) -> Histogram {
        lock(&self.latency).clone()
    }

    /// A copy of the sample-to-action histogram.
    pub fn sample_to_action(&self) -> Histogram {
        lock(&self.sample_to_action).clone()
    }
}

fn lock(m: &Mutex<Histogram>) -> std::sync::MutexGuard<'_, Histogram> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn quantile_bounds_come_from_the_buckets() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_bound(0.5), None);
        for _ in 0..98 {
            h.observe(Duration::from_micros(80));
        }
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        assert_eq!(h.count, 100);
        assert_eq!(h.quantile_bound(0.5), Some(0.0001));
        assert_eq!(h.quantile_bound(0.99), Some(0.005));
        assert_eq!(h.quantile_bound(1.0), None, "beyond the last bucket");
        assert!((h.sum - (98.0 * 0.00008 + 0.003 + 2.0)).abs() < 1e-9);
    }
}

/// Liveness of the sampling loop, for the systemd watchdog.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: AtomicU64,
    beaten: AtomicBool,
    /// Start of a bounded job on the sampling thread (diagnostics), in ms + 1;
    /// 0 when idle.
    busy_since: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            beaten: AtomicBool::new(false),
            busy_since: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// The sampling thread starts (`true`) or ends (`false`) a long, bounded job.
    pub fn set_busy(&self, busy: bool) {
        let v = if busy {
            self.origin.elapsed().as_millis() as u64 + 1
        } else {
            0
        };
        self.busy_since.store(v, Ordering::Release);
    }

    /// How long the current bounded job has been running, if any.
    pub fn busy_for(&self) -> Option<Duration> {
        let since = self.busy_since.load(Ordering::Acquire).checked_sub(1)?;
        let now = self.origin.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(since)))
    }

    /// The sampling loop is alive now.
    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Release);
        self.beaten.store(true, Ordering::Release);
    }

    /// Time since the last beat; `None` before the first.
    pub fn age(&self) -> Option<Duration> {
        if !self.beaten.load(Ordering::Acquire) {
            return None;
        }
        let last = self.last_ms.load(Ordering::Acquire);
        let now = self.origin.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(last)))
    }
}

/// Everything the handlers and loops share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    device: DeviceSummary,
    profile: BoardProfile,
    config: RwLock<Arc<Config>>,
    tokens: RwLock<Arc<Tokens>>,
    latest: RwLock<Option<Latest>>,
    alerts: Mutex<BTreeMap<String, Alert>>,
    stream: broadcast::Sender<StreamItem>,
    metrics: Metrics,
    heartbeat: Heartbeat,
    sampler_alive: AtomicBool,
    shutdown: CancellationToken,
    modes: Mutex<Modes>,
}

impl AppState {
    /// New state for a device.
    pub fn new(
        device: DeviceSummary,
        profile: BoardProfile,
        config: Arc<Config>,
        shutdown: CancellationToken,
    ) -> Self {
        let (stream, _) = broadcast::channel(config.sampling.stream_capacity);
        let tokens = Arc::new(Tokens::new(config.api.tokens.clone()));
        Self {
            inner: Arc::new(Inner {
                device,
                profile,
                config: RwLock::new(config),
                tokens: RwLock::new(tokens),
                latest: RwLock::new(None),
                alerts: Mutex::new(BTreeMap::new()),
                stream,
                metrics: Metrics::default(),
                heartbeat: Heartbeat::default(),
                sampler_alive: AtomicBool::new(false),
                shutdown,
                modes: Mutex::new(Modes::default()),
            }),
        }
    }

    /// Device identity.
    pub fn device(&self) -> &DeviceSummary {
        &self.inner.device
    }

    /// The effective board profile.
    pub fn profile(&self) -> &BoardProfile {
        &self.inner.profile
    }

    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a reloaded config (tokens take effect at once).
    pub fn set_config(&self, config: Arc<Config>) {
        let tokens = Arc::new(Tokens::new(config.api.tokens.clone()));
        *self.inner.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens;
        *self.inner.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The configured API tokens.
    pub fn tokens(&self) -> Arc<Tokens> {
        self.inner
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest sample, if one was taken.
    pub fn latest(&self) -> Option<Latest> {
        self.inner
            .latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes a new sample: latest, metrics, stream, heartbeat.
    pub fn publish_sample(&self, sample: Sample, latency: Duration) {
        let m = &self.inner.metrics;
        let seq = m.samples.fetch_add(1, Ordering::Relaxed) + 1;
        m.observe_latency(latency);
        let sample = Arc::new(sample);
        *self.inner.latest.write().unwrap_or_else(|p| p.into_inner()) = Some(Latest {
            sample: sample.clone(),
            latency,
            seq,
        });
        self.inner.heartbeat.beat();
        self.publish(StreamItem::Reading(sample));
    }

    /// Sends an item to every stream subscriber (none is fine).
    pub fn publish(&self, item: StreamItem) {
        let _no_subscribers = self.inner.stream.send(item);
    }

    /// A new stream subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamItem> {
        self.inner.stream.subscribe()
    }

    /// Raises or refreshes an alert; publishes it when it is new.
    pub fn raise_alert(&self, alert: Alert) {
        let mut alerts = self.inner.alerts.lock().unwrap_or_else(|p| p.into_inner());
        let is_new = !alerts.contains_key(&alert.id);
        if is_new {
            alerts.insert(alert.id.clone(), alert.clone());
            drop(alerts);
            tracing::warn!(alert = %alert.id, severity = ?alert.severity, "{}", alert.message);
            self.publish(StreamItem::Alert {
                alert,
                active: true,
            });
        }
    }

    /// Clears an alert; publishes the clearing if it was active.
    pub fn clear_alert(&self, id: &str) {
        let removed = self
            .inner
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(alert) = removed {
            tracing::info!(alert = %alert.id, "alert cleared");
            self.publish(StreamItem::Alert {
                alert,
                active: false,
            });
        }
    }

    /// Active alerts, by id.
    pub fn alerts(&self) -> Vec<Alert> {
        self.inner
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The sampling loop's heartbeat.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.inner.heartbeat
    }

    /// Whether the sampling loop is running.
    pub fn sampler_alive(&self) -> bool {
        self.inner.sampler_alive.load(Ordering::Acquire)
    }

    /// Marks the sampling loop running or stopped.
    pub fn set_sampler_alive(&self, alive: bool) {
        self.inner.sampler_alive.store(alive, Ordering::Release);
    }

    /// Ready: the sampling loop runs and has taken a sample.
    pub fn ready(&self) -> bool {
        self.sampler_alive() && self.latest().is_some()
    }

    /// The conditions behind the mode.
    pub fn modes(&self) -> Modes {
        self.inner
            .modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The effective mode (safe outranks degraded).
    pub fn mode(&self) -> Mode {
        self.modes().mode()
    }

    /// Enters (`Some(reason)`) or leaves (`None`) safe mode; returns the previous reason.
    pub fn set_safe(&self, reason: Option<String>) -> Option<String> {
        let mut m = self.inner.modes.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut m.safe, reason)
    }

    /// Marks the fleet unreachable (`Some(reason)`) or reachable again (`None`);
    /// returns the previous reason.
    pub fn set_degraded(&self, reason: Option<String>) -> Option<String> {
        let mut m = self.inner.modes.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut m.degraded, reason)
    }

    /// Cancelled when the daemon shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
