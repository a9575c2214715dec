//! Shared daemon state: the store, the event bus, the config, the counters, and
//! the telemetry store and twin hub owned by their modules.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wrale_core::{DeviceId, GroupId, Timestamp};

use crate::auth::Principal;
use crate::config::Config;
use crate::error::ApiError;
use crate::store::{FleetStore, NewAudit, StoreError};

/// The kind of a [`FleetEvent`] (the `kinds` filter of `/api/v1/events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A telemetry reading.
    Reading,
    /// A twin change.
    Twin,
    /// An alert raised, acknowledged or cleared.
    Alert,
    /// An audit entry.
    Audit,
    /// A device enrolled, changed, connected, disconnected, revoked or deleted.
    Device,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 5] = [
        EventKind::Reading,
        EventKind::Twin,
        EventKind::Alert,
        EventKind::Audit,
        EventKind::Device,
    ];
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
            format!("unknown event kind {s:?}: expected reading, twin, alert, audit or device")
        })
    }
}

/// One event on `/api/v1/events`: `{kind, time, device?, group?, data}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetEvent {
    /// Kind.
    pub kind: EventKind,
    /// When.
    pub time: Timestamp,
    /// The device it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// The device's group at the time (for the `group` filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// The payload.
    pub data: Value,
}

/// The live event bus (a broadcast channel; slow subscribers are told how many
/// events they missed).
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<FleetEvent>>,
    published: Arc<AtomicU64>,
}

impl EventBus {
    /// A bus buffering `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            published: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes an event (dropped if nobody listens).
    pub fn publish(&self, event: FleetEvent) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let _no_subscriber_is_fine = self.tx.send(Arc::new(event));
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FleetEvent>> {
        self.tx.subscribe()
    }

    /// Events published since start.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the request latency histogram.
pub const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Request counters and the latency histogram for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `(method, route, status)` -> count.
    pub requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then +Inf.
    pub latency_buckets: [AtomicU64; 11],
    /// Sum of request latencies in microseconds.
    pub latency_sum_us: AtomicU64,
    /// Event-stream messages dropped for slow subscribers.
    pub events_dropped: AtomicU64,
    /// Login attempts refused.
    pub login_failures: AtomicU64,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        let secs = took.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_buckets[10].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// What the handlers, the hub and the telemetry store share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The fleet store.
    pub store: Arc<dyn FleetStore>,
    /// The live event bus.
    pub events: EventBus,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The telemetry store (see [`crate::telemetry`]).
    pub telemetry: crate::telemetry::Telemetry,
    /// The twin hub (see [`crate::twins`]).
    pub hub: crate::twins::Hub,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// Fleet intelligence: the latest analysis and the fleet alerts (see [`crate::intel`]).
    pub intel: crate::intel::Intel,
    /// Workloads, placements, recommendations and rollouts (see [`crate::orchestrate`]).
    pub orchestrate: crate::orchestrate::Orchestrator,
    config: Arc<RwLock<Arc<Config>>>,
}

/// The current time (fleetd owns the clock; wrale-core takes time as data).
pub fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

impl AppState {
    /// State over an open store.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn FleetStore>,
        telemetry: crate::telemetry::Telemetry,
        hub: crate::twins::Hub,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            events: EventBus::new(config.events.capacity),
            store,
            metrics: Arc::new(Metrics::default()),
            telemetry,
            hub,
            shutdown,
            intel: crate::intel::Intel::new(),
            orchestrate: crate::orchestrate::Orchestrator::default(),
            config: Arc::new(RwLock::new(config)),
        }
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the config (after a reload).
    pub fn set_config(&self, config: Arc<Config>) {
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(p) => *p.into_inner() = config,
        }
    }

    /// Runs `f` on the store on the blocking pool; store errors become API errors.
    pub async fn store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn FleetStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("store task: {e}")))?
            .map_err(ApiError::from)
    }

    /// Appends an audit entry for `who` and publishes it as an `audit` event.
    /// A failure to write is logged (the action itself already happened).
    pub async fn audit(
        &self,
        who: &str,
        action: &str,
        target: &str,
        verdict: &str,
        result: Value,
        device: Option<DeviceId>,
    ) {
        let entry = NewAudit {
            time: now(),
            actor: who.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            verdict: verdict.to_owned(),
            result,
        };
        match self.store(move |s| s.append_audit(&entry)).await {
            Ok(e) => {
                let data = serde_json::to_value(&e).unwrap_or(Value::Null);
                self.publish(EventKind::Audit, device, data).await;
            }
            Err(e) => tracing::error!(action, target, "cannot write the audit log: {e}"),
        }
    }

    /// [`AppState::audit`] for an allowed action by `p`.
    pub async fn audit_ok(
        &self,
        p: &Principal,
        action: &str,
        target: &str,
        result: Value,
        device: Option<DeviceId>,
    ) {
        self.audit(&p.actor(), action, target, "allowed", result, device)
            .await;
    }

    /// Publishes an event; a device event carries the device's current group.
    pub async fn publish(&self, kind: EventKind, device: Option<DeviceId>, data: Value) {
        let group = match &device {
            Some(d) => {
                let d = d.clone();
                self.store(move |s| s.get_device(&d))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|r| r.group)
            }
            None => None,
        };
        self.events.publish(FleetEvent {
            kind,
            time: now(),
            device,
            group,
            data,
        });
    }
}
