//! The hub: the fleet side of device sync, for many devices at once (fleetd).
//!
//! A [`Hub`] owns the fleet's copy of every twin (in a [`Store`]), serves one
//! sync session per connected device ([`Hub::serve`]), lets the API read and
//! edit twins ([`Hub::read`], [`Hub::edit`]) with the change pushed to a
//! connected device at once, forwards fleet commands ([`Hub::send_command`]),
//! hands telemetry to a [`TelemetrySink`], and publishes what happens as
//! [`HubEvent`]s ([`Hub::subscribe`]).
//!
//! Memory: only recently used twins stay resident (least recently used first
//! out once more than [`HubConfig::max_resident`] are loaded, and any twin idle
//! for [`HubConfig::idle_evict_after`]); a twin with a live session is never
//! evicted. Every change is persisted before it is announced, so eviction only
//! drops memory and a later access reloads the twin transparently.
//!
//! History: when a twin's epoch passes [`HubConfig::compact_after_changes`]
//! changes, the hub compacts it ([`Twin::compact`], archived with
//! [`Store::switch_epoch`]); a connected device follows at once through the
//! session's epoch frames, an offline one when it reconnects, carrying its
//! offline edits over ([`Twin::adopt_epoch`]).
//!
//! Locks: the hub's tables and the store sit behind `std::sync::Mutex`es and
//! each twin behind its own; none is held across an `await`. Order: twin, then
//! store; the table lock is never held while taking another.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> wrale_sync::Result<()> {
//! use wrale_core::DeviceId;
//! use wrale_core::units::Celsius;
//! use wrale_sync::hub::{Hub, HubConfig};
//! use wrale_sync::{Author, MemoryStore};
//!
//! let hub = Hub::new(Box::new(MemoryStore::new()), HubConfig::default());
//! let pi = DeviceId::new("pi-01").unwrap();
//! let alice = Author::user("alice");
//! hub.edit(&pi, |t| {
//!     t.edit_desired(|c| c.warn = Some(Celsius(65.0)), &alice, wrale_core::Timestamp::from_secs(0))
//! })??;
//! assert_eq!(hub.read(&pi, |t| t.desired())??.warn, Some(Celsius(65.0)));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wrale_core::model::CommandRequest;
use wrale_core::{DeviceId, Timestamp};

use crate::author::Author;
use crate::command::{CommandReply, FleetCommand, decode_command_result, encode_command};
use crate::envelope::{Envelope, FrameKind, decode_telemetry, encode_telemetry_ack};
use crate::error::{Error, Result};
use crate::schema::{FieldPath, FieldValue, Section};
use crate::session::{Received, SyncSession};
use crate::store::{Store, load_twin, persist};
use crate::twin::Twin;

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The name under which each device's sync state is stored (the device is
    /// the hub's peer).
    pub peer: String,
    /// The author of the hub's own changes (epoch compaction) and of
    /// [`Twin::report`] on the hub's copies.
    pub author: Author,
    /// Twins kept in memory without a live session, least recently used first out.
    pub max_resident: usize,
    /// A twin without a session unused for this long is dropped from memory.
    pub idle_evict_after: Duration,
    /// Passed to [`persist`]: a fresh snapshot after this many appended chunks.
    pub snapshot_every: usize,
    /// Compact a twin once its epoch holds more than this many changes.
    pub compact_after_changes: usize,
    /// A session quiet for this long offers its heads again (recovers from a lost
    /// frame, like the agent's heartbeat).
    pub resync_after: Duration,
    /// Capacity of the [`HubEvent`] channel (slow subscribers miss events).
    pub event_capacity: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            peer: "device".into(),
            author: Author::fleet("fleetd"),
            max_resident: 10_000,
            idle_evict_after: Duration::from_secs(600),
            snapshot_every: 64,
            compact_after_changes: 5_000,
            resync_after: Duration::from_secs(15),
            event_capacity: 1024,
        }
    }
}

/// Where the hub hands telemetry records (opaque bytes, typically
/// [`crate::telemetry::encode_batch`] outputs) from a device.
///
/// The hub acknowledges a telemetry frame to the device only after `ingest`
/// returned `Ok`, so a record is never lost; it may arrive twice (the ack was
/// lost, or the device re-sent after a quiet period), so the sink should be
/// idempotent (records carry their timestamps) or tolerate duplicates.
#[async_trait]
pub trait TelemetrySink: Send + Sync {
    /// Stores the records of one frame; an error leaves them unacknowledged
    /// (the device sends them again later).
    async fn ingest(&self, device: &DeviceId, records: Vec<Vec<u8>>) -> Result<()>;
}

/// A sink that drops every record (tests, a hub without telemetry storage).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardTelemetry;

#[async_trait]
impl TelemetrySink for DiscardTelemetry {
    async fn ingest(&self, _device: &DeviceId, _records: Vec<Vec<u8>>) -> Result<()> {
        Ok(())
    }
}

/// Why a device session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The device closed the link.
    Closed,
    /// A newer session for the same device replaced this one (closed with 1000).
    Replaced,
    /// The device sent a frame about another document (closed with 1008).
    WrongDocument {
        /// The document the frame named.
        doc: String,
    },
    /// [`Hub::disconnect`] (closed with 1008 and the reason).
    Disconnected {
        /// The reason given.
        reason: String,
    },
    /// [`Hub::shutdown`] (closed with 1001).
    Shutdown,
    /// The link failed.
    Transport(String),
}

impl SessionEnd {
    /// The WebSocket close code the hub sent, if it closed the link.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            SessionEnd::Replaced => Some(1000),
            SessionEnd::WrongDocument { .. } | SessionEnd::Disconnected { .. } => Some(1008),
            SessionEnd::Shutdown => Some(1001),
            SessionEnd::Closed | SessionEnd::Transport(_) => None,
        }
    }
}

/// Who made a change announced by [`HubEvent::TwinChanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// Arrived from the device over its session.
    Device,
    /// Made through [`Hub::edit`].
    Hub,
}

/// What happened in the hub.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HubEvent {
    /// A device session started.
    Connected {
        /// The device.
        device: DeviceId,
    },
    /// A device session ended.
    Disconnected {
        /// The device.
        device: DeviceId,
        /// Why.
        end: SessionEnd,
    },
    /// A twin changed (persisted before this is sent).
    TwinChanged {
        /// The device.
        device: DeviceId,
        /// Where the change came from.
        origin: ChangeOrigin,
        /// Authors of the new changes.
        authors: Vec<Author>,
        /// Fields whose resolved value changed (added, modified or removed).
        fields: Vec<FieldPath>,
    },
    /// Telemetry records were accepted by the sink (and acknowledged).
    TelemetryIngested {
        /// The device.
        device: DeviceId,
        /// How many records.
        records: usize,
    },
    /// A device answered a command.
    CommandReply {
        /// The device.
        device: DeviceId,
        /// The answer.
        reply: CommandReply,
    },
    /// A twin's history was compacted into a new epoch.
    Compacted {
        /// The device.
        device: DeviceId,
        /// The new epoch.
        epoch: u64,
    },
}

/// Why [`Hub::send_command`] got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The device has no live session.
    #[error("device {0} is not connected")]
    Offline(DeviceId),
    /// The device did not answer in time (it may still execute the command; its
    /// answer then shows up as a [`HubEvent::CommandReply`] and in `reported`).
    #[error("device {device} did not answer command {id} within {timeout:?}")]
    Timeout {
        /// The device.
        device: DeviceId,
        /// The command id.
        id: String,
        /// The time waited.
        timeout: Duration,
    },
    /// A store or twin error.
    #[error(transparent)]
    Sync(#[from] Error),
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStatus {
    /// Devices with a live session.
    pub connected: usize,
    /// Twins in memory.
    pub resident: usize,
    /// Sessions started since the hub started.
    pub sessions_total: u64,
    /// Frames rejected (malformed, wrong kind, wrong document).
    pub frames_rejected: u64,
    /// Frames received from devices.
    pub frames_in: u64,
    /// Frames sent to devices.
    pub frames_out: u64,
    /// Bytes received from devices.
    pub bytes_in: u64,
    /// Bytes sent to devices.
    pub bytes_out: u64,
    /// Telemetry records accepted by the sink.
    pub telemetry_records: u64,
    /// Telemetry frames the sink refused (left unacknowledged).
    pub telemetry_refused: u64,
    /// Commands sent (including re-sends after a reconnect).
    pub commands_sent: u64,
    /// Commands waiting for an answer.
    pub commands_pending: usize,
    /// Twins dropped from memory.
    pub evictions: u64,
    /// Twins loaded from the store.
    pub loads: u64,
    /// Epoch compactions.
    pub compactions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sessions_total: AtomicU64,
    frames_rejected: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    telemetry_records: AtomicU64,
    telemetry_refused: AtomicU64,
    commands_sent: AtomicU64,
    evictions: AtomicU64,
    loads: AtomicU64,
    compactions: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One resident twin.
#[derive(Debug)]
struct Entry {
    twin: Mutex<Twin>,
    /// Changes in the current epoch (kept up to date without walking history).
    changes: AtomicU64,
    /// The epoch the store holds for this twin ([`NOT_STORED`] when none), so a
    /// change is appended without reading the stored twin back. Only changed
    /// with the twin's lock held.
    stored_epoch: AtomicU64,
}

const NOT_STORED: u64 = u64::MAX;

impl Entry {
    /// Writes what changed in `twin` since its last save: the first time a full
    /// snapshot, then appended changes, and a fresh snapshot once more than
    /// `snapshot_every` chunks are pending (what [`persist`] does, without
    /// loading the stored twin on every call).
    fn persist(&self, store: &mut dyn Store, twin: &mut Twin, snapshot_every: usize) -> Result<()> {
        let doc = twin.device().as_str().to_owned();
        let epoch = twin.epoch();
        let stored = self.stored_epoch.load(Ordering::Relaxed);
        if stored != epoch {
            // First write of this twin, or the store is on another epoch:
            // the checked path.
            persist(store, twin, snapshot_every)?;
        } else {
            let inc = twin.save_incremental();
            if inc.is_empty() {
                return Ok(());
            }
            let pending = store.append_changes(&doc, epoch, &inc)?;
            if pending > snapshot_every {
                store.save_snapshot(&doc, epoch, &twin.save())?;
            }
        }
        self.stored_epoch.store(epoch, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Debug)]
struct Resident {
    entry: Arc<Entry>,
    last_used: Instant,
    tick: u64,
}

/// The live session of a device, as the rest of the hub sees it.
#[derive(Debug)]
struct Slot {
    generation: u64,
    wake: Arc<Notify>,
    commands: mpsc::UnboundedSender<FleetCommand>,
    cancel: CancellationToken,
    /// Why the session is being cancelled (replaced, disconnected).
    why: Arc<Mutex<Option<SessionEnd>>>,
}

#[derive(Debug, Default)]
struct Tables {
    resident: HashMap<String, Resident>,
    tick: u64,
    sessions: HashMap<String, Slot>,
    generation: u64,
    /// Commands sent and not answered: re-sent when the device reconnects.
    pending: HashMap<String, Vec<FleetCommand>>,
    waiters: HashMap<(String, String), oneshot::Sender<CommandReply>>,
    next_command: u64,
}

struct Inner {
    store: Mutex<Box<dyn Store + Send>>,
    config: HubConfig,
    tables: Mutex<Tables>,
    events: broadcast::Sender<HubEvent>,
    counters: Counters,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

type Fields = Vec<BTreeMap<String, FieldValue>>;

fn snapshot_fields(twin: &Twin) -> Fields {
    Section::ALL
        .iter()
        .map(|s| twin.fields(*s).unwrap_or_default())
        .collect()
}

fn changed_fields(before: &Fields, after: &Fields) -> Vec<FieldPath> {
    let mut out = Vec::new();
    for (i, section) in Section::ALL.iter().enumerate() {
        let (b, a) = (&before[i], &after[i]);
        let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for k in keys {
            if b.get(k) != a.get(k) {
                out.push(FieldPath::new(*section, k.clone()));
            }
        }
    }
    out
}

/// Authors of the changes made after `before`.
fn authors_since(twin: &mut Twin, before: &[automerge::ChangeHash]) -> (Vec<Author>, usize) {
    let registry = twin.registry();
    let changes = twin.doc.get_changes(before);
    let mut authors: Vec<Author> = Vec::new();
    for c in &changes {
        let a = registry.get(c.actor_id()).cloned().unwrap_or_else(|| {
            Author::new(
                crate::author::AuthorKind::of_actor(c.actor_id()),
                c.actor_id().to_hex_string(),
            )
        });
        if !authors.contains(&a) {
            authors.push(a);
        }
    }
    (authors, changes.len())
}

/// The fleet side of device sync. Cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// A hub keeping its twins in `store`.
    pub fn new(store: Box<dyn Store + Send>, config: HubConfig) -> Hub {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        Hub {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                config,
                tables: Mutex::new(Tables::default()),
                events,
                counters: Counters::default(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Events from now on. A subscriber that falls more than
    /// [`HubConfig::event_capacity`] events behind gets `Lagged` and misses some.
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, e: HubEvent) {
        // No subscriber is fine.
        let _ = self.inner.events.send(e);
    }

    /// Counts for `/metrics`.
    pub fn status(&self) -> HubStatus {
        let (connected, resident, commands_pending) = {
            let t = lock(&self.inner.tables);
            (t.sessions.len(), t.resident.len(), t.waiters.len())
        };
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HubStatus {
            connected,
            resident,
            sessions_total: g(&c.sessions_total),
            frames_rejected: g(&c.frames_rejected),
            frames_in: g(&c.frames_in),
            frames_out: g(&c.frames_out),
            bytes_in: g(&c.bytes_in),
            bytes_out: g(&c.bytes_out),
            telemetry_records: g(&c.telemetry_records),
            telemetry_refused: g(&c.telemetry_refused),
            commands_sent: g(&c.commands_sent),
            commands_pending,
            evictions: g(&c.evictions),
            loads: g(&c.loads),
            compactions: g(&c.compactions),
        }
    }

    /// Whether `device` has a live session.
    pub fn is_connected(&self, device: &DeviceId) -> bool {
        lock(&self.inner.tables)
            .sessions
            .contains_key(device.as_str())
    }

    /// The devices with a live session.
    pub fn connected(&self) -> Vec<DeviceId> {
        lock(&self.inner.tables)
            .sessions
            .keys()
            .filter_map(|k| DeviceId::new(k.clone()).ok())
            .collect()
    }

    /// Whether the twin of `device` is in memory.
    pub fn is_resident(&self, device: &DeviceId) -> bool {
        lock(&self.inner.tables)
            .resident
            .contains_key(device.as_str())
    }

    /// The resident twin of `device`, loaded from the store (or started empty for
    /// a device never seen) when needed.
    fn entry(&self, device: &DeviceId) -> Result<Arc<Entry>> {
        let key = device.as_str();
        {
            let mut t = lock(&self.inner.tables);
            t.tick += 1;
            let tick = t.tick;
            if let Some(r) = t.resident.get_mut(key) {
                r.last_used = Instant::now();
                r.tick = tick;
                return Ok(r.entry.clone());
            }
        }
        let loaded = {
            let store = lock(&self.inner.store);
            load_twin(store.as_ref(), key, self.inner.config.author.clone())?
        };
        let (mut twin, stored_epoch) = match loaded {
            Some(twin) => {
                add(&self.inner.counters.loads, 1);
                let epoch = twin.epoch();
                (twin, epoch)
            }
            None => (
                Twin::empty(device, self.inner.config.author.clone())?,
                NOT_STORED,
            ),
        };
        let changes = twin.change_count() as u64;
        let fresh = Arc::new(Entry {
            twin: Mutex::new(twin),
            changes: AtomicU64::new(changes),
            stored_epoch: AtomicU64::new(stored_epoch),
        });
        let entry = {
            let mut t = lock(&self.inner.tables);
            t.tick += 1;
            let tick = t.tick;
            // Someone may have loaded it meanwhile: theirs wins (ours is unchanged).
            t.resident
                .entry(key.to_owned())
                .or_insert(Resident {
                    entry: fresh,
                    last_used: Instant::now(),
                    tick,
                })
                .entry
                .clone()
        };
        self.evict();
        Ok(entry)
    }

    /// Drops idle twins and, above [`HubConfig::max_resident`], the least recently
    /// used ones; twins in use (a live session, a running edit) stay. Called on
    /// every load and session end; fleetd may also call it from a timer.
    /// Returns how many were dropped.
    pub fn evict(&self) -> usize {
        let cfg = &self.inner.config;
        let mut t = lock(&self.inner.tables);
        let idle = cfg.idle_evict_after;
        let busy = |r: &Resident| Arc::strong_count(&r.entry) > 1;
        let before = t.resident.len();
        t.resident
            .retain(|_, r| busy(r) || r.last_used.elapsed() < idle);
        if t.resident.len() > cfg.max_resident {
            let mut idle_lru: Vec<(u64, String)> = t
                .resident
                .iter()
                .filter(|(_, r)| !busy(r))
                .map(|(k, r)| (r.tick, k.clone()))
                .collect();
            idle_lru.sort_unstable();
            let excess = t.resident.len() - cfg.max_resident;
            for (_, k) in idle_lru.into_iter().take(excess) {
                t.resident.remove(&k);
            }
        }
        let dropped = before - t.resident.len();
        add(&self.inner.counters.evictions, dropped as u64);
        dropped
    }

    /// Reads the twin of `device` (loaded if needed; a device never seen reads as
    /// an empty twin). `&mut` because some reads (heads, history) need it; use
    /// [`Hub::edit`] for writes, which are persisted and pushed. `f` runs under
    /// the twin's lock: it must not call back into the hub for the same device.
    pub fn read<R>(&self, device: &DeviceId, f: impl FnOnce(&mut Twin) -> R) -> Result<R> {
        let entry = self.entry(device)?;
        let r = f(&mut lock(&entry.twin));
        Ok(r)
    }

    /// Edits the twin of `device` (loaded if needed, created for a device never
    /// seen): the change is persisted, announced as [`HubEvent::TwinChanged`] and
    /// pushed to the device's live session at once (or on its next connection).
    /// Returns `f`'s result; an error only when persisting failed (the edit then
    /// stays in memory and is written with the next snapshot). `f` runs under the
    /// twin's lock: it must not call back into the hub for the same device.
    pub fn edit<R>(&self, device: &DeviceId, f: impl FnOnce(&mut Twin) -> R) -> Result<R> {
        let entry = self.entry(device)?;
        let (r, event) = {
            let mut twin = lock(&entry.twin);
            let before_heads = twin.heads();
            let before = snapshot_fields(&twin);
            let r = f(&mut twin);
            if twin.heads() == before_heads {
                return Ok(r);
            }
            let event = self.after_change(device, &entry, &mut twin, &before_heads, &before)?;
            (r, event)
        };
        self.announce(device, ChangeOrigin::Hub, event);
        if let Some(slot) = lock(&self.inner.tables).sessions.get(device.as_str()) {
            slot.wake.notify_one();
        }
        Ok(r)
    }

    /// Persists a changed twin, compacts it when due; returns the authors and
    /// changed fields for the event, and the new epoch if it compacted.
    fn after_change(
        &self,
        device: &DeviceId,
        entry: &Entry,
        twin: &mut Twin,
        before_heads: &[automerge::ChangeHash],
        before: &Fields,
    ) -> Result<(Vec<Author>, Vec<FieldPath>, Option<u64>)> {
        let (authors, n) = authors_since(twin, before_heads);
        let fields = changed_fields(before, &snapshot_fields(twin));
        let total = entry.changes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let cfg = &self.inner.config;
        let mut store = lock(&self.inner.store);
        entry.persist(store.as_mut(), twin, cfg.snapshot_every)?;
        let mut compacted = None;
        if total > cfg.compact_after_changes as u64 {
            // Refused while a manual conflict is open: try again after the next change.
            if let Ok(c) = twin.compact(&cfg.author, now()) {
                store.switch_epoch(
                    device.as_str(),
                    c.old_epoch,
                    &c.archived,
                    c.new_epoch,
                    &twin.save(),
                )?;
                entry
                    .changes
                    .store(twin.change_count() as u64, Ordering::Relaxed);
                entry.stored_epoch.store(c.new_epoch, Ordering::Relaxed);
                add(&self.inner.counters.compactions, 1);
                compacted = Some(c.new_epoch);
            }
        }
        Ok((authors, fields, compacted))
    }

    fn announce(
        &self,
        device: &DeviceId,
        origin: ChangeOrigin,
        (authors, fields, compacted): (Vec<Author>, Vec<FieldPath>, Option<u64>),
    ) {
        self.emit(HubEvent::TwinChanged {
            device: device.clone(),
            origin,
            authors,
            fields,
        });
        if let Some(epoch) = compacted {
            self.emit(HubEvent::Compacted {
                device: device.clone(),
                epoch,
            });
        }
    }

    /// Sends a command to `device` and waits up to `timeout` for its answer.
    /// [`HubError::Offline`] at once when the device has no live session. If the
    /// link drops meanwhile, the command is sent again when the device reconnects
    /// within `timeout` (the device executes an id at most once).
    pub async fn send_command(
        &self,
        device: &DeviceId,
        request: CommandRequest,
        timeout: Duration,
    ) -> Result<CommandReply, HubError> {
        let key = device.as_str().to_owned();
        let (id, rx) = {
            let mut t = lock(&self.inner.tables);
            if !t.sessions.contains_key(&key) {
                return Err(HubError::Offline(device.clone()));
            }
            t.next_command += 1;
            let millis = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let id = format!("cmd-{millis:x}-{:x}", t.next_command);
            let command = FleetCommand {
                id: id.clone(),
                request,
            };
            let (tx, rx) = oneshot::channel();
            t.waiters.insert((key.clone(), id.clone()), tx);
            t.pending
                .entry(key.clone())
                .or_default()
                .push(command.clone());
            if let Some(slot) = t.sessions.get(&key) {
                // A closed channel means the session is ending; the command is
                // re-sent by the next one.
                let _ = slot.commands.send(command);
            }
            (id, rx)
        };
        // Forgets the command however this ends (answer, timeout, or the caller
        // dropping the future), so it is not re-sent on later connections.
        let _forget = Forget {
            hub: self,
            key: &key,
            id: &id,
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) | Err(_) => Err(HubError::Timeout {
                device: device.clone(),
                id: id.clone(),
                timeout,
            }),
        }
    }

    /// Closes the live session of `device` with code 1008 and `reason` (a
    /// revoked credential). Returns whether there was one.
    pub fn disconnect(&self, device: &DeviceId, reason: &str) -> bool {
        let t = lock(&self.inner.tables);
        match t.sessions.get(device.as_str()) {
            Some(slot) => {
                *lock(&slot.why) = Some(SessionEnd::Disconnected {
                    reason: reason.to_owned(),
                });
                slot.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends every session (closing with 1001) and refuses new ones; sessions
    /// save their sync state first. For a graceful shutdown.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Runs the sync session of `device` over `transport` until the link closes,
    /// a newer session for the device replaces it, or the hub shuts down. The
    /// caller authenticated the device; a frame naming another document ends the
    /// session with code 1008. Malformed frames are counted and dropped. Telemetry
    /// goes to `sink` and is acknowledged only after the sink accepted it.
    ///
    /// Returns how the session ended; an error only when the store failed.
    pub async fn serve(
        &self,
        device: &DeviceId,
        mut transport: Box<dyn crate::transport::Transport>,
        sink: Arc<dyn TelemetrySink>,
    ) -> Result<SessionEnd> {
        let key = device.as_str().to_owned();
        if self.inner.shutdown.is_cancelled() {
            let _ = transport.close_with(1001, "fleet is shutting down").await;
            return Ok(SessionEnd::Shutdown);
        }
        let entry = self.entry(device)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let cancel = self.inner.shutdown.child_token();
        let why = Arc::new(Mutex::new(None));
        let generation = {
            let mut t = lock(&self.inner.tables);
            t.generation += 1;
            let generation = t.generation;
            for c in t.pending.get(&key).into_iter().flatten() {
                let _ = cmd_tx.send(c.clone());
            }
            let old = t.sessions.insert(
                key.clone(),
                Slot {
                    generation,
                    wake: wake.clone(),
                    commands: cmd_tx,
                    cancel: cancel.clone(),
                    why: why.clone(),
                },
            );
            if let Some(old) = old {
                *lock(&old.why) = Some(SessionEnd::Replaced);
                old.cancel.cancel();
            }
            generation
        };
        add(&self.inner.counters.sessions_total, 1);
        self.emit(HubEvent::Connected {
            device: device.clone(),
        });
        let mut run = Run {
            hub: self,
            device,
            entry: &entry,
            sink,
            session: None,
            last_saved: None,
        };
        let result = run
            .run(transport.as_mut(), cmd_rx, &wake, &cancel, &why)
            .await;
        // Save where the device is, whatever happened.
        let saved = run.save_state();
        drop(run);
        {
            let mut t = lock(&self.inner.tables);
            if t.sessions
                .get(&key)
                .is_some_and(|s| s.generation == generation)
            {
                t.sessions.remove(&key);
            }
            t.tick += 1;
            let tick = t.tick;
            if let Some(r) = t.resident.get_mut(&key) {
                r.last_used = Instant::now();
                r.tick = tick;
            }
        }
        drop(entry);
        self.evict();
        let end = result?;
        saved?;
        if let Some(code) = end.close_code() {
            let reason = match &end {
                SessionEnd::Replaced => "replaced by a newer session".to_owned(),
                SessionEnd::WrongDocument { doc } => {
                    format!("frame for document {doc:?} on the link of {key:?}")
                }
                SessionEnd::Disconnected { reason } => reason.clone(),
                _ => "fleet is shutting down".to_owned(),
            };
            // The link may already be gone.
            let _ = transport.close_with(code, &reason).await;
        }
        self.emit(HubEvent::Disconnected {
            device: device.clone(),
            end: end.clone(),
        });
        Ok(end)
    }

    /// Delivers a device's command answer to the waiting caller.
    fn command_answered(&self, device: &DeviceId, reply: CommandReply) {
        let key = device.as_str().to_owned();
        let waiter = {
            let mut t = lock(&self.inner.tables);
            if let Some(p) = t.pending.get_mut(&key) {
                p.retain(|c| c.id != reply.id);
                if p.is_empty() {
                    t.pending.remove(&key);
                }
            }
            t.waiters.remove(&(key, reply.id.clone()))
        };
        // The event goes first, so a caller woken by the reply finds it published.
        self.emit(HubEvent::CommandReply {
            device: device.clone(),
            reply: reply.clone(),
        });
        if let Some(w) = waiter {
            let _ = w.send(reply);
        }
    }
}

/// Removes a command's waiter and pending entry when dropped.
struct Forget<'a> {
    hub: &'a Hub,
    key: &'a str,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.hub.inner.tables);
        t.waiters.remove(&(self.key.to_owned(), self.id.to_owned()));
        if let Some(p) = t.pending.get_mut(self.key) {
            p.retain(|c| c.id != self.id);
            if p.is_empty() {
                t.pending.remove(self.key);
            }
        }
    }
}

/// One running session.
struct Run<'a> {
    hub: &'a Hub,
    device: &'a DeviceId,
    entry: &'a Entry,
    sink: Arc<dyn TelemetrySink>,
    session: Option<SyncSession>,
    last_saved: Option<Vec<u8>>,
}

/// What to do after a frame.
enum Step {
    Continue,
    End(SessionEnd),
}

impl Run<'_> {
    fn counters(&self) -> &Counters {
        &self.hub.inner.counters
    }

    fn reject(&self) {
        add(&self.counters().frames_rejected, 1);
    }

    /// Persists the device's sync state when it moved.
    fn save_state(&mut self) -> Result<()> {
        let Some(s) = &self.session else {
            return Ok(());
        };
        let saved = s.saved_state();
        if self.last_saved.as_ref() == Some(&saved) {
            return Ok(());
        }
        lock(&self.hub.inner.store).put_sync_state(
            self.device.as_str(),
            &self.hub.inner.config.peer,
            &saved,
        )?;
        self.last_saved = Some(saved);
        Ok(())
    }

    /// Frames the session wants to send now.
    fn outgoing(&mut self) -> Vec<Vec<u8>> {
        let Some(s) = self.session.as_mut() else {
            return Vec::new();
        };
        s.generate_round(&mut lock(&self.entry.twin))
    }

    async fn send(
        &self,
        transport: &mut dyn crate::transport::Transport,
        f: Vec<u8>,
    ) -> Result<()> {
        add(&self.counters().frames_out, 1);
        add(&self.counters().bytes_out, f.len() as u64);
        transport.send(f).await
    }

    async fn flush(&mut self, transport: &mut dyn crate::transport::Transport) -> Result<()> {
        for f in self.outgoing() {
            self.send(transport, f).await?;
        }
        self.save_state()
    }

    async fn run(
        &mut self,
        transport: &mut dyn crate::transport::Transport,
        mut commands: mpsc::UnboundedReceiver<FleetCommand>,
        wake: &Notify,
        cancel: &CancellationToken,
        why: &Mutex<Option<SessionEnd>>,
    ) -> Result<SessionEnd> {
        let hub: &Hub = self.hub;
        let cfg = &hub.inner.config;
        let session = {
            let twin = lock(&self.entry.twin);
            let saved = lock(&hub.inner.store).sync_state(self.device.as_str(), &cfg.peer)?;
            match saved {
                // A state that does not decode is dropped: a fresh session is
                // always correct, only larger.
                Some(saved) => SyncSession::with_saved_state(&twin, &cfg.peer, &saved)
                    .unwrap_or_else(|_| SyncSession::new(&twin, &cfg.peer)),
                None => SyncSession::new(&twin, &cfg.peer),
            }
        };
        self.session = Some(session);
        let quiet = cfg.resync_after.max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(quiet / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = tokio::time::Instant::now();
        macro_rules! io {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(Error::Transport(m)) => return Ok(SessionEnd::Transport(m)),
                    Err(e) => return Err(e),
                }
            };
        }
        io!(self.flush(transport).await);
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    return Ok(lock(why).take().unwrap_or(SessionEnd::Shutdown));
                }
                r = transport.recv() => {
                    let frame = match r {
                        Ok(Some(f)) => f,
                        Ok(None) => return Ok(SessionEnd::Closed),
                        Err(e) => return Ok(SessionEnd::Transport(e.to_string())),
                    };
                    last_rx = tokio::time::Instant::now();
                    match io!(self.frame(transport, &frame).await) {
                        Step::Continue => {}
                        Step::End(end) => return Ok(end),
                    }
                    io!(self.flush(transport).await);
                }
                () = wake.notified() => {
                    io!(self.flush(transport).await);
                }
                Some(c) = commands.recv() => {
                    let frame = {
                        let twin = lock(&self.entry.twin);
                        encode_command(self.device.as_str(), twin.epoch(), &c)
                    };
                    add(&self.counters().commands_sent, 1);
                    io!(self.send(transport, frame).await);
                }
                _ = tick.tick() => {
                    if last_rx.elapsed() >= quiet {
                        if let Some(s) = self.session.as_mut() {
                            s.reset();
                        }
                        io!(self.flush(transport).await);
                        last_rx = tokio::time::Instant::now();
                    }
                }
            }
        }
    }

    /// Handles one frame from the device.
    async fn frame(
        &mut self,
        transport: &mut dyn crate::transport::Transport,
        frame: &[u8],
    ) -> Result<Step> {
        add(&self.counters().frames_in, 1);
        add(&self.counters().bytes_in, frame.len() as u64);
        let Ok(env) = Envelope::decode(frame) else {
            self.reject();
            return Ok(Step::Continue);
        };
        if env.doc != self.device.as_str() {
            self.reject();
            return Ok(Step::End(SessionEnd::WrongDocument { doc: env.doc }));
        }
        match env.kind {
            FrameKind::Sync | FrameKind::EpochSnapshot | FrameKind::EpochRequest => {
                self.sync_frame(frame)?;
            }
            FrameKind::Telemetry => {
                let Ok((seq, records)) = decode_telemetry(&env.payload) else {
                    self.reject();
                    return Ok(Step::Continue);
                };
                let n = records.len();
                match self.sink.ingest(self.device, records).await {
                    Ok(()) => {
                        let epoch = lock(&self.entry.twin).epoch();
                        add(&self.counters().telemetry_records, n as u64);
                        self.send(transport, encode_telemetry_ack(&env.doc, epoch, seq))
                            .await?;
                        self.hub.emit(HubEvent::TelemetryIngested {
                            device: self.device.clone(),
                            records: n,
                        });
                    }
                    // Not acknowledged: the device sends the records again.
                    Err(_) => add(&self.counters().telemetry_refused, 1),
                }
            }
            FrameKind::CommandResult => match decode_command_result(&env.payload) {
                Ok(reply) => self.hub.command_answered(self.device, reply),
                Err(_) => self.reject(),
            },
            // Only the fleet sends these.
            FrameKind::Command | FrameKind::TelemetryAck => self.reject(),
        }
        Ok(Step::Continue)
    }

    /// Applies a sync or epoch frame; persists and announces what changed.
    fn sync_frame(&mut self, frame: &[u8]) -> Result<()> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        let hub = self.hub;
        let (event, rejected) = {
            let mut twin = lock(&self.entry.twin);
            let before_heads = twin.heads();
            let before = snapshot_fields(&twin);
            let old_epoch = twin.epoch();
            match session.receive(&mut twin, frame, now()) {
                Err(_) => (None, true),
                Ok(Received::Ignored(_)) | Ok(Received::Applied { changed: false }) => {
                    (None, false)
                }
                Ok(Received::Applied { changed: true }) => (
                    Some(hub.after_change(
                        self.device,
                        self.entry,
                        &mut twin,
                        &before_heads,
                        &before,
                    )?),
                    false,
                ),
                Ok(Received::Adopted(a)) => {
                    // The device was on a newer epoch (the hub lost its copy):
                    // archive ours and follow.
                    if let Some(archived) = &a.archived {
                        let snapshot = twin.save();
                        lock(&hub.inner.store).switch_epoch(
                            self.device.as_str(),
                            old_epoch,
                            archived,
                            a.new_epoch,
                            &snapshot,
                        )?;
                        self.entry
                            .changes
                            .store(twin.change_count() as u64, Ordering::Relaxed);
                        self.entry
                            .stored_epoch
                            .store(a.new_epoch, Ordering::Relaxed);
                        let fields = changed_fields(&before, &snapshot_fields(&twin));
                        (Some((Vec::new(), fields, None)), false)
                    } else {
                        (
                            Some(hub.after_change(
                                self.device,
                                self.entry,
                                &mut twin,
                                &before_heads,
                                &before,
                            )?),
                            false,
                        )
                    }
                }
            }
        };
        if rejected {
            self.reject();
        }
        if let Some(event) = event {
            hub.announce(self.device, ChangeOrigin::Device, event);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn dev(id: &str) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    #[test]
    fn eviction_keeps_busy_twins_and_drops_the_least_recently_used() {
        let hub = Hub::new(
            Box::new(MemoryStore::new()),
            HubConfig {
                max_resident: 2,
                ..HubConfig::default()
            },
        );
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            hub.edit(&dev(id), |t| {
                t.report(
                    &crate::ReportedUpdate::default().reading("cpu_temp_c", i as f64),
                    Timestamp::from_secs(1),
                )
            })
            .unwrap()
            .unwrap();
        }
        assert!(!hub.is_resident(&dev("a")), "least recently used out");
        assert!(hub.is_resident(&dev("b")) && hub.is_resident(&dev("c")));
        assert_eq!(hub.status().evictions, 1);
        // A twin held by someone (a session) is never evicted.
        let held = hub.entry(&dev("b")).unwrap();
        hub.read(&dev("a"), |_| ()).unwrap();
        hub.read(&dev("c"), |_| ()).unwrap();
        assert!(hub.is_resident(&dev("b")));
        drop(held);
        // Reload keeps the value.
        let v = hub
            .read(&dev("a"), |t| t.reported().unwrap().readings["cpu_temp_c"])
            .unwrap();
        assert_eq!(v, 0.0);
    }

    #[test]
    fn idle_twins_are_dropped_and_reload() {
        let hub = Hub::new(
            Box::new(MemoryStore::new()),
            HubConfig {
                idle_evict_after: Duration::ZERO,
                ..HubConfig::default()
            },
        );
        let alice = Author::user("alice");
        hub.edit(&dev("a"), |t| {
            t.edit_desired(
                |c| c.fan_profile = Some("quiet".into()),
                &alice,
                Timestamp::from_secs(1),
            )
        })
        .unwrap()
        .unwrap();
        assert_eq!(hub.evict(), 1);
        assert!(!hub.is_resident(&dev("a")));
        let p = hub
            .read(&dev("a"), |t| t.desired().unwrap().fan_profile)
            .unwrap();
        assert_eq!(p.as_deref(), Some("quiet"));
        assert_eq!(hub.status().loads, 1);
    }

    #[test]
    fn changed_fields_names_added_modified_and_removed() {
        let mut b: Fields = vec![BTreeMap::new(); 3];
        b[1].insert("warn_c".into(), FieldValue::Float(60.0));
        b[1].insert("fan_profile".into(), FieldValue::Str("quiet".into()));
        let mut a = b.clone();
        a[1].remove("fan_profile");
        a[1].insert("warn_c".into(), FieldValue::Float(61.0));
        a[2].insert("health".into(), FieldValue::Str("ok".into()));
        let got: Vec<String> = changed_fields(&b, &a)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            got,
            ["desired.fan_profile", "desired.warn_c", "reported.health"]
        );
    }
}
