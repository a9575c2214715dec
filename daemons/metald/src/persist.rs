//! Persistence in `data.dir`: the device twin, the audit log and the telemetry ring.
//!
//! - `twin.db`: the device's twin in a [`SqliteStore`] (created from the device's
//!   identity on first start). Reported state is written from samples and alerts
//!   through the twin's deadband [`Twin::report`], at most once per sampling tick.
//! - `audit.db`: [`SqliteAuditStore`], an append-only SQLite table of every
//!   command accepted or refused.
//! - `telemetry/`: a [`RingBuffer`] with one [`Point`] per sample.
//!
//! Each is opened and checked on start. SQLite files recover from a crash by
//! themselves (WAL journal, `synchronous = FULL`); the ring cuts a torn record off
//! its tail. A file that cannot be recovered stops the start with an error naming it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use wrale_core::Timestamp;
use wrale_core::audit::{AuditRecord, AuditStore};
use wrale_core::model::{DeviceId, DeviceInfo, Sample};
use wrale_sync::telemetry::Point;
use wrale_sync::telemetry::ring::RingBuffer;
use wrale_sync::{AgentHandle, Author, ReportedUpdate, SqliteStore, Store, StoredTwin, Twin};

/// File name of the twin store in `data.dir`.
pub const TWIN_FILE: &str = "twin.db";
/// File name of the audit log in `data.dir`.
pub const AUDIT_FILE: &str = "audit.db";
/// Directory of the telemetry ring in `data.dir`.
pub const RING_DIR: &str = "telemetry";
/// Size of one ring segment.
const RING_SEGMENT_BYTES: u64 = 1 << 20;
/// Segments kept by the ring (oldest dropped first).
const RING_SEGMENTS: usize = 16;
/// Appended twin changes before a fresh snapshot.
const SNAPSHOT_EVERY: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The audit log in an SQLite file: append-only, one row per record, in order.
#[derive(Debug)]
pub struct SqliteAuditStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn audit_err(path: &Path, e: impl std::fmt::Display) -> wrale_core::Error {
    wrale_core::Error::Audit(format!("{}: {e}", path.display()))
}

impl SqliteAuditStore {
    /// Opens (or creates) the audit log and checks its integrity.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let name = path.display().to_string();
        let conn = Connection::open(&path).with_context(|| format!("cannot open {name}"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(|| format!("{name}: not a usable SQLite file"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .with_context(|| format!("{name}: pragma synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .with_context(|| format!("{name}: busy timeout"))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .with_context(|| format!("{name}: integrity check failed"))?;
        anyhow::ensure!(check == "ok", "{name}: integrity check failed: {check}");
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                record TEXT NOT NULL
            );
            CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
            CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
        )
        .with_context(|| format!("{name}: cannot create the audit table"))?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn rows(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> wrale_core::Result<Vec<AuditRecord>> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare(sql).map_err(|e| audit_err(&self.path, e))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| audit_err(&self.path, e))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row.map_err(|e| audit_err(&self.path, e))?;
            let mut rec: AuditRecord =
                serde_json::from_str(&text).map_err(|e| audit_err(&self.path, e))?;
            rec.seq = seq as u64;
            out.push(rec);
        }
        Ok(out)
    }

    /// Up to `limit` records with `seq < before` (all when `None`), newest first.
    pub fn page(&self, before: Option<u64>, limit: usize) -> wrale_core::Result<Vec<AuditRecord>> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            "SELECT seq, record FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
            params![before, limit],
        )
    }
}

impl AuditStore for SqliteAuditStore {
    fn append(&self, mut record: AuditRecord) -> wrale_core::Result<u64> {
        record.seq = 0;
        let text = serde_json::to_string(&record).map_err(|e| audit_err(&self.path, e))?;
        let conn = lock(&self.conn);
        conn.execute("INSERT INTO audit (record) VALUES (?1)", [text])
            .map_err(|e| audit_err(&self.path, e))?;
        Ok(conn.last_insert_rowid() as u64)
    }

    fn since(&self, after: u64, limit: usize) -> wrale_core::Result<Vec<AuditRecord>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            "SELECT seq, record FROM audit WHERE seq > ?1 ORDER BY seq ASC LIMIT ?2",
            params![after, limit],
        )
    }
}

/// Where the twin lives: here, or with the running edge agent (which then owns it
/// and persists its own sync traffic; local writes still persist at once).
enum TwinSlot {
    Local(Box<Twin>),
    Agent(AgentHandle),
    /// Only while the twin moves to the agent (under the lock).
    Moving,
}

/// The twin store shared by metald and its edge agent (one SQLite connection).
/// Lock order everywhere: the twin first, then the store.
#[derive(Clone)]
pub struct SharedStore(Arc<Mutex<SqliteStore>>);

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStore")
    }
}

impl Store for SharedStore {
    fn load(&self, doc: &str) -> wrale_sync::Result<Option<StoredTwin>> {
        lock(&self.0).load(doc)
    }
    fn save_snapshot(&mut self, doc: &str, epoch: u64, snapshot: &[u8]) -> wrale_sync::Result<()> {
        lock(&self.0).save_snapshot(doc, epoch, snapshot)
    }
    fn append_changes(&mut self, doc: &str, epoch: u64, c: &[u8]) -> wrale_sync::Result<usize> {
        lock(&self.0).append_changes(doc, epoch, c)
    }
    fn switch_epoch(
        &mut self,
        doc: &str,
        old_epoch: u64,
        archived: &[u8],
        new_epoch: u64,
        snapshot: &[u8],
    ) -> wrale_sync::Result<()> {
        lock(&self.0).switch_epoch(doc, old_epoch, archived, new_epoch, snapshot)
    }
    fn put_sync_state(&mut self, doc: &str, peer: &str, state: &[u8]) -> wrale_sync::Result<()> {
        lock(&self.0).put_sync_state(doc, peer, state)
    }
    fn sync_state(&self, doc: &str, peer: &str) -> wrale_sync::Result<Option<Vec<u8>>> {
        lock(&self.0).sync_state(doc, peer)
    }
    fn archived_epochs(&self, doc: &str) -> wrale_sync::Result<Vec<u64>> {
        lock(&self.0).archived_epochs(doc)
    }
    fn load_archived(&self, doc: &str, epoch: u64) -> wrale_sync::Result<Option<Vec<u8>>> {
        lock(&self.0).load_archived(doc, epoch)
    }
    fn docs(&self) -> wrale_sync::Result<Vec<String>> {
        lock(&self.0).docs()
    }
}

/// Everything metald keeps in `data.dir`. Cheap to clone.
#[derive(Clone)]
pub struct Persist {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    device: DeviceId,
    store: SharedStore,
    twin: Mutex<TwinSlot>,
    ring: Arc<Mutex<RingBuffer>>,
    audit: SqliteAuditStore,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Persist {
    /// Opens (or creates) the twin, the audit log and the telemetry ring in `dir`,
    /// recovering each; the twin is created from `device` on first start. A twin
    /// loaded from an earlier run gets `device`'s description in `meta` where it
    /// differs (labels or location changed in the config).
    pub fn open(dir: &Path, device: &DeviceInfo, now: Timestamp) -> anyhow::Result<Persist> {
        let twin_path = dir.join(TWIN_FILE);
        let mut store = SqliteStore::open(&twin_path)
            .with_context(|| format!("cannot open the twin store {}", twin_path.display()))?;
        let author = Author::device(&device.id);
        let doc = device.id.to_string();
        let twin =
            wrale_sync::store::load_twin(&store, &doc, author.clone()).with_context(|| {
                format!(
                    "the twin of {doc} in {} cannot be loaded",
                    twin_path.display()
                )
            })?;
        let twin = match twin {
            Some(mut t) => {
                tracing::info!(device = %doc, file = %twin_path.display(), "twin loaded");
                let mut info = device.clone();
                // The fleet may have placed the device in a group: keep it.
                if let Ok(meta) = t.meta() {
                    info.group = meta.group;
                }
                if t.set_meta(&info, &author, now)
                    .with_context(|| format!("cannot update the meta of {doc}"))?
                    .is_some()
                {
                    wrale_sync::store::persist(&mut store, &mut t, SNAPSHOT_EVERY).with_context(
                        || format!("cannot write the twin to {}", twin_path.display()),
                    )?;
                }
                t
            }
            None => {
                let mut t = Twin::new(device, author, now)
                    .with_context(|| format!("cannot create the twin of {doc}"))?;
                wrale_sync::store::persist(&mut store, &mut t, SNAPSHOT_EVERY).with_context(
                    || format!("cannot write the new twin to {}", twin_path.display()),
                )?;
                tracing::info!(device = %doc, file = %twin_path.display(), "twin created");
                t
            }
        };
        let ring_dir = dir.join(RING_DIR);
        let ring = RingBuffer::open(&ring_dir, RING_SEGMENT_BYTES, RING_SEGMENTS)
            .with_context(|| format!("cannot open the telemetry ring {}", ring_dir.display()))?;
        tracing::info!(points = ring.len(), dir = %ring_dir.display(), "telemetry ring opened");
        let audit = SqliteAuditStore::open(dir.join(AUDIT_FILE))?;
        Ok(Persist {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                device: device.id.clone(),
                store: SharedStore(Arc::new(Mutex::new(store))),
                twin: Mutex::new(TwinSlot::Local(Box::new(twin))),
                ring: Arc::new(Mutex::new(ring)),
                audit,
            }),
        })
    }

    /// The twin store, shared with the edge agent.
    pub fn store(&self) -> SharedStore {
        self.inner.store.clone()
    }

    /// The telemetry ring, shared with the edge agent (its telemetry source).
    pub fn ring(&self) -> Arc<Mutex<RingBuffer>> {
        self.inner.ring.clone()
    }

    /// Hands the twin to an edge agent: `make` gets the twin and returns the agent
    /// and its handle; from then on every twin access goes through the handle.
    /// Returns `None` (and does not call `make`) when an agent has it already.
    pub fn start_agent<A>(&self, make: impl FnOnce(Twin) -> (A, AgentHandle)) -> Option<A> {
        let mut slot = lock(&self.inner.twin);
        if !matches!(&*slot, TwinSlot::Local(_)) {
            return None;
        }
        let TwinSlot::Local(twin) = std::mem::replace(&mut *slot, TwinSlot::Moving) else {
            return None;
        };
        let (agent, handle) = make(*twin);
        *slot = TwinSlot::Agent(handle);
        Some(agent)
    }

    /// The edge agent's handle, when one owns the twin.
    pub fn agent(&self) -> Option<AgentHandle> {
        match &*lock(&self.inner.twin) {
            TwinSlot::Agent(h) => Some(h.clone()),
            _ => None,
        }
    }

    /// Reads the twin (changes made here are neither persisted nor synced).
    pub fn with_twin<R>(&self, f: impl FnOnce(&mut Twin) -> R) -> R {
        let mut slot = lock(&self.inner.twin);
        match &mut *slot {
            TwinSlot::Local(t) => f(t),
            TwinSlot::Agent(h) => h.with_twin(f),
            TwinSlot::Moving => unreachable!("the twin is only moving under this lock"),
        }
    }

    /// Writes into the twin: `f` returns whether it changed anything; if so the
    /// change is persisted at once and the edge agent (if any) is woken to sync it.
    pub fn edit_twin<R>(&self, f: impl FnOnce(&mut Twin) -> (R, bool)) -> R {
        let mut store = self.inner.store.clone();
        let mut slot = lock(&self.inner.twin);
        let write = |t: &mut Twin| {
            let (r, changed) = f(t);
            if changed {
                if let Err(e) = wrale_sync::store::persist(&mut store, t, SNAPSHOT_EVERY) {
                    tracing::error!("cannot persist the twin: {e}");
                }
            }
            (r, changed)
        };
        match &mut *slot {
            TwinSlot::Local(t) => write(t).0,
            TwinSlot::Agent(h) => {
                let (r, changed) = h.with_twin(write);
                if changed {
                    h.edit(|_| ());
                }
                r
            }
            TwinSlot::Moving => unreachable!("the twin is only moving under this lock"),
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &SqliteAuditStore {
        &self.inner.audit
    }

    /// Records a command in the audit log; a failure is logged (the command's
    /// outcome does not depend on it).
    pub fn record(&self, record: AuditRecord) {
        if let Err(e) = self.inner.audit.append(record) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }

    /// One sampling tick: appends the sample's point to the ring and reports the
    /// sample, the active alerts, the boot identity (`boot_id`, `booted_at`) and
    /// whether the safety engine throttles (`engine_throttled`; each start counted
    /// in `engine_throttle_count`) into the twin (readings with their deadband,
    /// the rest when it changes), persisting what changed.
    pub fn on_sample(
        &self,
        sample: &Sample,
        alerts: impl IntoIterator<Item = (String, String)>,
        boot: Option<wrale_hal::BootInfo>,
        engine_throttled: bool,
    ) {
        let point = Point::from_sample(sample);
        let bytes = wrale_sync::telemetry::encode_batch(self.inner.device.as_str(), &[point]);
        if let Err(e) = lock(&self.inner.ring).push(&bytes) {
            tracing::error!("cannot append to the telemetry ring: {e}");
        }
        let mut update = ReportedUpdate::from_sample(sample);
        update.alerts = Some(alerts.into_iter().collect());
        if let Some(b) = boot {
            update = update.boot(b.boot_id, b.booted_at);
        }
        update.engine_throttled = Some(engine_throttled);
        self.edit_twin(|twin| match twin.report(&update, sample.at) {
            Ok(changed) => ((), changed),
            Err(e) => {
                tracing::error!("cannot report into the twin: {e}");
                ((), false)
            }
        });
    }

    /// Points in the telemetry ring not yet shipped.
    pub fn ring_len(&self) -> u64 {
        lock(&self.inner.ring).len()
    }

    /// The twin as JSON: `meta`, `desired`, `reported`, `heads`.
    pub fn twin_json(&self) -> anyhow::Result<Value> {
        self.with_twin(Self::twin_value)
    }

    fn twin_value(twin: &mut Twin) -> anyhow::Result<Value> {
        let meta = twin.meta().context("twin meta")?;
        let desired = twin.desired().context("twin desired")?;
        let reported = twin.reported().context("twin reported")?;
        let heads: Vec<String> = twin.heads().iter().map(ToString::to_string).collect();
        Ok(json!({
            "device": twin.device(),
            "epoch": twin.epoch(),
            "heads": heads,
            "meta": meta,
            "desired": desired,
            "reported": reported,
        }))
    }

    /// The twin's history, oldest first.
    pub fn twin_history(&self) -> anyhow::Result<Value> {
        let versions = self.with_twin(|t| t.history()).context("twin history")?;
        let out: Vec<Value> = versions
            .into_iter()
            .map(|v| {
                json!({
                    "hash": v.hash.to_string(),
                    "author": v.author.to_string(),
                    "at": v.at,
                    "summary": v.summary,
                })
            })
            .collect();
        Ok(json!({ "versions": out }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_core::audit::{AuditOutcome, AuditVerdict};
    use wrale_core::model::{Actor, Command};
    use wrale_core::units::Percent;

    fn rec(i: u8) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at: Timestamp::from_secs(i64::from(i)),
            actor: Actor::LocalOperator("op".into()),
            reason: String::new(),
            command: Command::SetFanDuty {
                fan: "fan0".into(),
                duty: Percent::ZERO,
            },
            verdict: AuditVerdict::Allowed,
            outcome: AuditOutcome::Applied,
        }
    }

    #[test]
    fn audit_store_is_ordered_durable_and_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        {
            let s = SqliteAuditStore::open(&path).unwrap();
            assert_eq!(s.append(rec(1)).unwrap(), 1);
            assert_eq!(s.append(rec(2)).unwrap(), 2);
            let conn = lock(&s.conn);
            assert!(conn.execute("DELETE FROM audit", []).is_err());
            assert!(conn.execute("UPDATE audit SET record = ''", []).is_err());
        }
        let s = SqliteAuditStore::open(&path).unwrap();
        assert_eq!(s.append(rec(3)).unwrap(), 3);
        let all = s.since(0, 10).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let page = s.page(Some(3), 1).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, 2);
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        std::fs::write(&path, vec![0x55u8; 8192]).unwrap();
        let e = SqliteAuditStore::open(&path).unwrap_err();
        assert!(format!("{e:#}").contains("audit.db"), "{e:#}");
    }
}
