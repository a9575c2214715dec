//! Telemetry: ingest of device batches, retention and downsampling, range queries.
//!
//! The logic (tiers, rollups, merging, resolution choice, group aggregation) is
//! wrale-core's [`wrale_core::fleet::telemetry`]; this module stores series in a
//! [`TelemetryStore`] (SQLite file `telemetry.db` in the data directory, WAL) and
//! runs the maintenance pass.
//!
//! Ingest: each `wrale_sync::telemetry::encode_batch` record is decoded and its
//! points stored keyed by `(device, metric, t)` with `INSERT OR IGNORE`, all records
//! of one call in one transaction; a record whose exact bytes were already ingested
//! is skipped whole (so a replay after its raw points expired does not count twice
//! in the rollups). Newly stored points are also queued as *pending*; the
//! maintenance pass rolls pending points into 1-minute and 1-hour buckets (merging
//! them into the stored buckets: late data is exact) and deletes what is past
//! retention. Queries at `1m`/`1h` merge stored buckets with the rollup of the
//! pending points, so they are exact right after ingest.
//!
//! The daemon calls, in this order: [`Telemetry::open`] at start (after the
//! registry store is open), [`start`] once the [`AppState`] exists, and
//! [`render_metrics`] for each `/metrics` scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wrale_core::fleet::telemetry::{
    Bucket, BucketWidth, Resolution, Retention, Rollup, TimeRange, forever_or_duration,
    merge_series, rollup, rollup_buckets,
};
use wrale_core::time::duration_str;
use wrale_core::{DeviceId, Timestamp};
use wrale_sync::TelemetrySink;
use wrale_sync::telemetry::{Channel, Point, decode_batch};

use crate::config::Config;
use crate::state::{AppState, EventKind, now};

/// The file name of the SQLite telemetry store in the data directory.
pub const TELEMETRY_DB: &str = "telemetry.db";

/// `[telemetry]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// How long raw points are kept (`"24h"`).
    #[serde(with = "duration_str")]
    pub retention_raw: Duration,
    /// How long 1-minute buckets are kept (`"30days"`).
    #[serde(with = "duration_str")]
    pub retention_1m: Duration,
    /// How long 1-hour buckets are kept (`"forever"` or a duration).
    #[serde(with = "forever_or_duration")]
    pub retention_1h: Option<Duration>,
    /// How often the maintenance pass (rollups, retention) runs (`"1m"`).
    #[serde(with = "duration_str")]
    pub maintenance_interval: Duration,
    /// Most points an `auto` query answers with (it picks a coarser tier above).
    pub auto_max_points: u64,
    /// Most points any query answers with (an explicit resolution above it is a
    /// 400 `invalid_query`).
    pub max_points: u64,
    /// Points timestamped further than this in the future are dropped (counted).
    #[serde(with = "duration_str")]
    pub max_future_skew: Duration,
    /// SQLite `synchronous` for `telemetry.db`: `full` (an acknowledged batch
    /// survives a power cut) or `normal` (faster; the last batches may be lost on
    /// power loss, never on a crash).
    pub synchronous: Synchronous,
}

/// SQLite `synchronous` level of the telemetry store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync at every commit.
    #[default]
    Full,
    /// fsync at checkpoints (WAL).
    Normal,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        let r = Retention::default();
        Self {
            retention_raw: r.raw,
            retention_1m: r.minute,
            retention_1h: r.hour,
            maintenance_interval: Duration::from_secs(60),
            auto_max_points: 1000,
            max_points: 100_000,
            max_future_skew: Duration::from_secs(3600),
            synchronous: Synchronous::Full,
        }
    }
}

impl TelemetryConfig {
    /// The retention tiers.
    pub fn retention(&self) -> Retention {
        Retention {
            raw: self.retention_raw,
            minute: self.retention_1m,
            hour: self.retention_1h,
        }
    }

    /// Checks the section; returns the dotted key (`telemetry.<key>`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("telemetry.{k}");
        if let Err(e) = self.retention().validate() {
            let msg = e.to_string();
            let k = ["retention_1h", "retention_1m", "retention_raw"]
                .into_iter()
                .find(|k| msg.contains(&format!(": {k}")))
                .unwrap_or("retention_raw");
            return Err((key(k), msg));
        }
        if self.maintenance_interval < Duration::from_secs(1) {
            return Err((
                key("maintenance_interval"),
                "must be at least 1s".to_owned(),
            ));
        }
        if self.auto_max_points < 10 {
            return Err((key("auto_max_points"), "must be at least 10".to_owned()));
        }
        if self.max_points < self.auto_max_points {
            return Err((
                key("max_points"),
                format!(
                    "{} is below auto_max_points {}",
                    self.max_points, self.auto_max_points
                ),
            ));
        }
        Ok(())
    }
}

/// A telemetry store failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("telemetry store: {0}")]
pub struct StoreFailure(pub String);

fn fail(e: impl std::fmt::Display) -> StoreFailure {
    StoreFailure(e.to_string())
}

/// One value of one metric at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPoint<'a> {
    /// Metric name (`cpu_temp_c`).
    pub metric: &'a str,
    /// When.
    pub t: Timestamp,
    /// The value (finite).
    pub value: f64,
}

/// One decoded batch handed to [`TelemetryStore::ingest`].
#[derive(Debug, Clone, PartialEq)]
pub struct IngestBatch<'a> {
    /// SHA-256 of the record's bytes: a batch whose key was seen is skipped whole.
    pub key: Option<[u8; 32]>,
    /// Its points.
    pub points: Vec<MetricPoint<'a>>,
}

/// What one [`TelemetryStore::ingest`] call stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IngestOutcome {
    /// Points stored.
    pub inserted: u64,
    /// Points already stored under the same `(device, metric, t)` (ignored).
    pub duplicates: u64,
    /// Batches skipped whole because their exact bytes were ingested before.
    pub replayed_batches: u64,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MaintenanceReport {
    /// Pending points rolled up into the 1 m and 1 h tiers.
    pub rolled_up: u64,
    /// Raw points deleted past retention.
    pub deleted_raw: u64,
    /// 1-minute buckets deleted past retention.
    pub deleted_1m: u64,
    /// 1-hour buckets deleted past retention.
    pub deleted_1h: u64,
}

/// Where telemetry series live. The SQLite implementation is [`SqliteTelemetry`];
/// a PostgreSQL/TimescaleDB one implements the same calls. Blocking: call it from
/// the blocking pool.
pub trait TelemetryStore: Send + Sync + std::fmt::Debug {
    /// Stores the batches of `device` in one transaction, keyed by
    /// `(device, metric, t)`, ignoring points already stored. Idempotent.
    fn ingest(
        &self,
        device: &DeviceId,
        batches: &[IngestBatch<'_>],
        now: Timestamp,
    ) -> Result<IngestOutcome, StoreFailure>;

    /// Rolls pending points up into the 1 m and 1 h tiers and deletes what is past
    /// `retention` at `now`.
    fn maintain(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<MaintenanceReport, StoreFailure>;

    /// Raw points of a series in `range`, sorted by time, at most `limit`.
    fn raw(
        &self,
        device: &DeviceId,
        metric: &str,
        range: &TimeRange,
        limit: u64,
    ) -> Result<Vec<(Timestamp, f64)>, StoreFailure>;

    /// Number of raw points of a series in `range`.
    fn raw_count(
        &self,
        device: &DeviceId,
        metric: &str,
        range: &TimeRange,
    ) -> Result<u64, StoreFailure>;

    /// The newest `limit` raw points of a series in `range`, sorted by time (the
    /// analyzer's window). The default counts, then reads; stores override it
    /// with one query that reads only those points.
    fn raw_newest(
        &self,
        device: &DeviceId,
        metric: &str,
        range: &TimeRange,
        limit: u64,
    ) -> Result<Vec<(Timestamp, f64)>, StoreFailure> {
        let count = self.raw_count(device, metric, range)?;
        if count == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let mut pts = self.raw(device, metric, range, count)?;
        let extra = pts
            .len()
            .saturating_sub(limit.min(usize::MAX as u64) as usize);
        pts.drain(..extra);
        Ok(pts)
    }

    /// Buckets of a rollup tier (`1m`, `1h`) overlapping `range`, sorted by start,
    /// including the points not rolled up yet.
    fn buckets(
        &self,
        device: &DeviceId,
        metric: &str,
        res: Resolution,
        range: &TimeRange,
    ) -> Result<Vec<Bucket>, StoreFailure>;

    /// Metrics that have data for `device`, sorted.
    fn metrics(&self, device: &DeviceId) -> Result<Vec<String>, StoreFailure>;

    /// Bytes used on disk.
    fn size_bytes(&self) -> Result<u64, StoreFailure>;
}

const SCHEMA_VERSION: i64 = 1;
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    UNIQUE (device, metric)
);
CREATE TABLE raw (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    v REAL NOT NULL,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
CREATE TABLE pending (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    v REAL NOT NULL
);
CREATE INDEX pending_series_t ON pending (series, t);
CREATE TABLE rollup_1m (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
CREATE TABLE rollup_1h (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
CREATE TABLE batches (
    hash BLOB PRIMARY KEY,
    device TEXT NOT NULL,
    received INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX batches_received ON batches (received);
"];

/// Pending points rolled up per transaction of the maintenance pass (bounds how
/// long ingest waits behind it).
const ROLLUP_CHUNK: i64 = 50_000;

/// The SQLite telemetry store: one file, WAL, a writer connection (ingest,
/// maintenance) and a reader connection (queries), so queries do not wait for
/// writes.
#[derive(Debug)]
pub struct SqliteTelemetry {
    path: PathBuf,
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    series: BTreeMap<(String, String), i64>,
}

fn open_conn(path: &Path, sync: Synchronous) -> Result<Connection, StoreFailure> {
    let conn =
        Connection::open(path).map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(fail)?;
    Ok(conn)
}

impl SqliteTelemetry {
    /// Opens (creating and migrating) the store at `path`. Refuses a file written by
    /// a newer fleetd.
    pub fn open(path: &Path, sync: Synchronous) -> Result<SqliteTelemetry, StoreFailure> {
        let mut conn = open_conn(path, sync)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(fail(format!(
                "{} has schema version {version}, newer than this fleetd's {SCHEMA_VERSION}",
                path.display()
            )));
        }
        if version == 0 {
            // Must precede the first table: lets maintenance give deleted pages back.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(fail)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(fail)?;
            tx.execute_batch(sql)
                .map_err(|e| fail(format!("migration {}: {e}", i + 1)))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
        let reader = open_conn(path, sync)?;
        Ok(SqliteTelemetry {
            path: path.to_owned(),
            writer: Mutex::new(Writer {
                conn,
                series: BTreeMap::new(),
            }),
            reader: Mutex::new(reader),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reader(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreFailure> {
        self.reader.lock().map_err(|_| fail("reader lock poisoned"))
    }

    /// Up to `limit` raw points of a series in `range`: the oldest first, or
    /// with `newest` the newest first (walking the `(series, t)` key backwards
    /// from the end of the range, so only the points returned are read).
    fn raw_points(
        &self,
        device: &DeviceId,
        metric: &str,
        range: &TimeRange,
        limit: u64,
        newest: bool,
    ) -> Result<Vec<(Timestamp, f64)>, StoreFailure> {
        let conn = self.reader()?;
        let Some(id) = Self::series_id(&conn, device, metric)? else {
            return Ok(Vec::new());
        };
        let sql = if newest {
            "SELECT t, v FROM raw WHERE series = ?1 AND t >= ?2 AND t < ?3 ORDER BY t DESC LIMIT ?4"
        } else {
            "SELECT t, v FROM raw WHERE series = ?1 AND t >= ?2 AND t < ?3 ORDER BY t LIMIT ?4"
        };
        let mut s = conn.prepare_cached(sql).map_err(fail)?;
        s.query_map(
            params![
                id,
                range.from.as_millis(),
                range.to.as_millis(),
                limit.min(i64::MAX as u64) as i64
            ],
            |r| Ok((Timestamp::from_millis(r.get(0)?), r.get(1)?)),
        )
        .and_then(|it| it.collect())
        .map_err(fail)
    }

    fn series_id(
        conn: &Connection,
        device: &DeviceId,
        metric: &str,
    ) -> Result<Option<i64>, StoreFailure> {
        conn.prepare_cached("SELECT id FROM series WHERE device = ?1 AND metric = ?2")
            .and_then(|mut s| {
                s.query_row(params![device.as_str(), metric], |r| r.get(0))
                    .optional()
            })
            .map_err(fail)
    }
}

fn bucket_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Bucket> {
    Ok(Bucket {
        start: Timestamp::from_millis(r.get(0)?),
        count: r.get::<_, i64>(1)? as u64,
        sum: r.get(2)?,
        min: r.get(3)?,
        max: r.get(4)?,
    })
}

const UPSERT_1M: &str = "INSERT INTO rollup_1m (series, t, count, sum, min, max)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (series, t) DO UPDATE SET count = count + excluded.count,
        sum = sum + excluded.sum, min = min(min, excluded.min), max = max(max, excluded.max)";
const UPSERT_1H: &str = "INSERT INTO rollup_1h (series, t, count, sum, min, max)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (series, t) DO UPDATE SET count = count + excluded.count,
        sum = sum + excluded.sum, min = min(min, excluded.min), max = max(max, excluded.max)";

impl TelemetryStore for SqliteTelemetry {
    fn ingest(
        &self,
        device: &DeviceId,
        batches: &[IngestBatch<'_>],
        now: Timestamp,
    ) -> Result<IngestOutcome, StoreFailure> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| fail("writer lock poisoned"))?;
        let Writer { conn, series } = &mut *w;
        let mut out = IngestOutcome::default();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        {
            let mut seen = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO batches (hash, device, received) VALUES (?1, ?2, ?3)",
                )
                .map_err(fail)?;
            let mut find = tx
                .prepare_cached("SELECT id FROM series WHERE device = ?1 AND metric = ?2")
                .map_err(fail)?;
            let mut add_series = tx
                .prepare_cached("INSERT INTO series (device, metric) VALUES (?1, ?2)")
                .map_err(fail)?;
            let mut raw = tx
                .prepare_cached("INSERT OR IGNORE INTO raw (series, t, v) VALUES (?1, ?2, ?3)")
                .map_err(fail)?;
            let mut pending = tx
                .prepare_cached("INSERT INTO pending (series, t, v) VALUES (?1, ?2, ?3)")
                .map_err(fail)?;
            // Series ids of this call (the shared cache is only updated on commit).
            let mut local: BTreeMap<&str, i64> = BTreeMap::new();
            for b in batches {
                if let Some(key) = &b.key
                    && seen
                        .execute(params![&key[..], device.as_str(), now.as_millis()])
                        .map_err(fail)?
                        == 0
                {
                    out.replayed_batches += 1;
                    continue;
                }
                for p in &b.points {
                    let id = match local.get(p.metric) {
                        Some(id) => *id,
                        None => {
                            let cached = series
                                .get(&(device.as_str().to_owned(), p.metric.to_owned()))
                                .copied();
                            let id = match cached {
                                Some(id) => id,
                                None => match find
                                    .query_row(params![device.as_str(), p.metric], |r| r.get(0))
                                    .optional()
                                    .map_err(fail)?
                                {
                                    Some(id) => id,
                                    None => {
                                        add_series
                                            .execute(params![device.as_str(), p.metric])
                                            .map_err(fail)?;
                                        tx.last_insert_rowid()
                                    }
                                },
                            };
                            local.insert(p.metric, id);
                            id
                        }
                    };
                    let t = p.t.as_millis();
                    if raw.execute(params![id, t, p.value]).map_err(fail)? == 1 {
                        pending.execute(params![id, t, p.value]).map_err(fail)?;
                        out.inserted += 1;
                    } else {
                        out.duplicates += 1;
                    }
                }
            }
            for (metric, id) in local {
                series.insert((device.as_str().to_owned(), metric.to_owned()), id);
            }
        }
        // A failed commit must not leave ids of rolled-back series in the cache.
        if let Err(e) = tx.commit() {
            series.clear();
            return Err(fail(e));
        }
        Ok(out)
    }

    fn maintain(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<MaintenanceReport, StoreFailure> {
        let mut report = MaintenanceReport::default();
        let mut w = self
            .writer
            .lock()
            .map_err(|_| fail("writer lock poisoned"))?;
        let conn = &mut w.conn;
        loop {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(fail)?;
            let rows: Vec<(i64, i64, i64, f64)> = {
                let mut s = tx
                    .prepare_cached(
                        "SELECT rowid, series, t, v FROM pending ORDER BY rowid LIMIT ?1",
                    )
                    .map_err(fail)?;
                s.query_map([ROLLUP_CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .and_then(|it| it.collect())
                .map_err(fail)?
            };
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let mut per_series: BTreeMap<i64, Rollup> = BTreeMap::new();
            for (_, series, t, v) in &rows {
                per_series
                    .entry(*series)
                    .or_insert_with(|| Rollup::new(BucketWidth::MINUTE))
                    .add(Timestamp::from_millis(*t), *v);
            }
            {
                let mut m = tx.prepare_cached(UPSERT_1M).map_err(fail)?;
                let mut h = tx.prepare_cached(UPSERT_1H).map_err(fail)?;
                for (series, acc) in per_series {
                    let minutes = acc.into_buckets();
                    for b in &minutes {
                        m.execute(params![
                            series,
                            b.start.as_millis(),
                            b.count as i64,
                            b.sum,
                            b.min,
                            b.max
                        ])
                        .map_err(fail)?;
                    }
                    for b in rollup_buckets(&minutes, BucketWidth::HOUR) {
                        h.execute(params![
                            series,
                            b.start.as_millis(),
                            b.count as i64,
                            b.sum,
                            b.min,
                            b.max
                        ])
                        .map_err(fail)?;
                    }
                }
            }
            tx.execute("DELETE FROM pending WHERE rowid <= ?1", [last])
                .map_err(fail)?;
            tx.commit().map_err(fail)?;
            report.rolled_up += rows.len() as u64;
            if (rows.len() as i64) < ROLLUP_CHUNK {
                break;
            }
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        {
            let ids: Vec<i64> = tx
                .prepare_cached("SELECT id FROM series")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(fail)?;
            let horizon = |res| retention.horizon(res, now).map(Timestamp::as_millis);
            let tiers = [
                ("raw", horizon(Resolution::Raw), &mut report.deleted_raw),
                (
                    "rollup_1m",
                    horizon(Resolution::Minute),
                    &mut report.deleted_1m,
                ),
                (
                    "rollup_1h",
                    horizon(Resolution::Hour),
                    &mut report.deleted_1h,
                ),
            ];
            for (table, h, count) in tiers {
                let Some(h) = h else { continue };
                let mut del = tx
                    .prepare_cached(&format!("DELETE FROM {table} WHERE series = ?1 AND t < ?2"))
                    .map_err(fail)?;
                for id in &ids {
                    *count += del.execute(params![id, h]).map_err(fail)? as u64;
                }
            }
            // Batch keys guard replays for as long as the 1 m tier keeps their data.
            if let Some(h) = horizon(Resolution::Minute) {
                tx.execute("DELETE FROM batches WHERE received < ?1", [h])
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        if report.deleted_raw + report.deleted_1m + report.deleted_1h > 0 {
            conn.execute_batch("PRAGMA incremental_vacuum")
                .map_err(fail)?;
        }
        Ok(report)
    }

    fn raw(
        &self,
        device: &DeviceId,
        metric: &str,
        range: &TimeRange,
        limit: u64,
    ) -> Result<Vec<(Timestamp, f64)>, StoreFailure> {
        self.raw_points(device, metric, range, limit, false)
    }

    fn raw_newest(
        &self,
        device: &DeviceId,
        metric: &str,
        range: &TimeRange,
        limit: u64,
    ) -> Result<Vec<(Timestamp, f64)>, StoreFailure> {
        let mut pts = self.raw_points(device, metric, range, limit, true)?;
        pts.reverse();
        Ok(pts)
    }

    fn raw_count(
        &self,
        device: &DeviceId,
        metric: &str,
        range: &TimeRange,
    ) -> Result<u64, StoreFailure> {
        let conn = self.reader()?;
        let Some(id) = Self::series_id(&conn, device, metric)? else {
            return Ok(0);
        };
        conn.prepare_cached("SELECT count(*) FROM raw WHERE series = ?1 AND t >= ?2 AND t < ?3")
            .and_then(|mut s| {
                s.query_row(
                    params![id, range.from.as_millis(), range.to.as_millis()],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map(|n| n as u64)
            .map_err(fail)
    }

    fn buckets(
        &self,
        device: &DeviceId,
        metric: &str,
        res: Resolution,
        range: &TimeRange,
    ) -> Result<Vec<Bucket>, StoreFailure> {
        let (table, width) = match res {
            Resolution::Minute => ("rollup_1m", BucketWidth::MINUTE),
            Resolution::Hour => ("rollup_1h", BucketWidth::HOUR),
            Resolution::Raw => return Err(fail("raw is not a rollup tier")),
        };
        let conn = self.reader()?;
        let Some(id) = Self::series_id(&conn, device, metric)? else {
            return Ok(Vec::new());
        };
        let span = range.bucket_span(width);
        // A read transaction: stored buckets and pending points from one snapshot,
        // so a maintenance pass in between cannot count a point twice or never.
        conn.execute_batch("BEGIN").map_err(fail)?;
        let result = (|| {
            let stored: Vec<Bucket> = conn
                .prepare_cached(&format!(
                    "SELECT t, count, sum, min, max FROM {table}
                     WHERE series = ?1 AND t >= ?2 AND t < ?3 ORDER BY t"
                ))
                .and_then(|mut s| {
                    s.query_map(
                        params![id, span.from.as_millis(), span.to.as_millis()],
                        bucket_row,
                    )?
                    .collect()
                })
                .map_err(fail)?;
            // Pending points in the buckets whose start is in the span.
            let end = width
                .align(Timestamp::from_millis(span.to.as_millis() - 1))
                .as_millis()
                + width.as_millis();
            let pending: Vec<(Timestamp, f64)> = conn
                .prepare_cached("SELECT t, v FROM pending WHERE series = ?1 AND t >= ?2 AND t < ?3")
                .and_then(|mut s| {
                    s.query_map(params![id, span.from.as_millis(), end], |r| {
                        Ok((Timestamp::from_millis(r.get(0)?), r.get(1)?))
                    })?
                    .collect()
                })
                .map_err(fail)?;
            Ok(merge_series(&stored, &rollup(pending, width)))
        })();
        conn.execute_batch("COMMIT").map_err(fail)?;
        result
    }

    fn metrics(&self, device: &DeviceId) -> Result<Vec<String>, StoreFailure> {
        let conn = self.reader()?;
        conn.prepare_cached("SELECT metric FROM series WHERE device = ?1 ORDER BY metric")
            .and_then(|mut s| s.query_map([device.as_str()], |r| r.get(0))?.collect())
            .map_err(fail)
    }

    fn size_bytes(&self) -> Result<u64, StoreFailure> {
        Ok(sqlite_file_bytes(&self.path))
    }
}

/// Bytes of a SQLite file with its WAL.
pub fn sqlite_file_bytes(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) + len(Path::new(&wal))
}

/// Ingest counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    /// Records accepted (decoded and stored).
    pub batches: AtomicU64,
    /// Records refused (malformed, or for another device).
    pub batches_rejected: AtomicU64,
    /// Records skipped whole because they were ingested before.
    pub batches_replayed: AtomicU64,
    /// Points stored.
    pub points_ingested: AtomicU64,
    /// Points already stored (ignored).
    pub points_duplicate: AtomicU64,
    /// Points dropped (timestamp too far in the future).
    pub points_dropped: AtomicU64,
    /// Points rolled up by maintenance.
    pub points_rolled_up: AtomicU64,
    /// Maintenance passes that completed.
    pub maintenance_runs: AtomicU64,
    /// Maintenance passes that failed.
    pub maintenance_errors: AtomicU64,
    /// Duration of the last maintenance pass, microseconds.
    pub maintenance_last_us: AtomicU64,
}

/// A record refused at ingest (it is dropped: re-sending it cannot help).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedRecord {
    /// Its index in the call.
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// What [`Telemetry::ingest_records`] did.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct IngestReport {
    /// Records handed in.
    pub records: usize,
    /// What the store did with the accepted ones.
    pub stored: IngestOutcome,
    /// Points dropped before the store (timestamp too far in the future).
    pub dropped_points: u64,
    /// Records refused.
    pub rejected: Vec<RejectedRecord>,
    /// The newest point of the call, for live `reading` events.
    #[serde(skip)]
    pub latest: Option<Point>,
}

/// The telemetry store, shared by the handlers and the hub (cheap to clone).
#[derive(Debug, Clone)]
pub struct Telemetry {
    store: Arc<dyn TelemetryStore>,
    stats: Arc<TelemetryStats>,
}

/// The metric names a device can send (`wrale_sync::telemetry::Channel` names).
pub fn known_metrics() -> impl Iterator<Item = &'static str> {
    Channel::ALL.into_iter().map(Channel::name)
}

/// Flattens telemetry points into metric points.
pub fn metric_points(points: &[Point]) -> Vec<MetricPoint<'static>> {
    let mut out = Vec::with_capacity(points.len() * 4);
    for p in points {
        for ch in Channel::ALL {
            if let Some(v) = p.get(ch).filter(|v| v.is_finite()) {
                out.push(MetricPoint {
                    metric: ch.name(),
                    t: p.at,
                    value: v,
                });
            }
        }
    }
    out
}

impl Telemetry {
    /// Opens the telemetry store `telemetry.db` under `config.data.dir`.
    pub fn open(config: &Config) -> anyhow::Result<Telemetry> {
        std::fs::create_dir_all(&config.data.dir).map_err(|e| {
            anyhow::anyhow!("cannot create data dir {}: {e}", config.data.dir.display())
        })?;
        let store = SqliteTelemetry::open(
            &config.data.dir.join(TELEMETRY_DB),
            config.telemetry.synchronous,
        )?;
        Ok(Telemetry::with_store(Arc::new(store)))
    }

    /// Over any store.
    pub fn with_store(store: Arc<dyn TelemetryStore>) -> Telemetry {
        Telemetry {
            store,
            stats: Arc::new(TelemetryStats::default()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TelemetryStore> {
        &self.store
    }

    /// The counters.
    pub fn stats(&self) -> &TelemetryStats {
        &self.stats
    }

    /// Decodes `encode_batch` records from `device` and stores them in one
    /// transaction. A malformed record, or one naming another device, is refused
    /// (listed in the report, counted, logged) and the others are stored. An error
    /// means nothing was stored and the records may be sent again. Blocking.
    pub fn ingest_records(
        &self,
        device: &DeviceId,
        records: &[Vec<u8>],
        config: &TelemetryConfig,
        now: Timestamp,
    ) -> Result<IngestReport, StoreFailure> {
        let horizon = now + config.max_future_skew;
        let mut report = IngestReport {
            records: records.len(),
            ..IngestReport::default()
        };
        let mut decoded = Vec::with_capacity(records.len());
        for (index, rec) in records.iter().enumerate() {
            match decode_batch(rec) {
                Ok(b) if b.device != device.as_str() => report.rejected.push(RejectedRecord {
                    index,
                    reason: format!(
                        "record is for device {:?}, not the sender {device}",
                        b.device
                    ),
                }),
                Ok(b) => {
                    let key: [u8; 32] = Sha256::digest(rec).into();
                    decoded.push((key, b.points));
                }
                Err(e) => report.rejected.push(RejectedRecord {
                    index,
                    reason: e.to_string(),
                }),
            }
        }
        let mut batches = Vec::with_capacity(decoded.len());
        for (key, points) in &decoded {
            let kept: Vec<Point> = points.iter().filter(|p| p.at <= horizon).cloned().collect();
            report.dropped_points += (points.len() - kept.len()) as u64;
            if let Some(p) = kept.iter().max_by_key(|p| p.at)
                && report.latest.as_ref().is_none_or(|l| l.at < p.at)
            {
                report.latest = Some(p.clone());
            }
            batches.push(IngestBatch {
                key: Some(*key),
                points: metric_points(&kept),
            });
        }
        for r in &report.rejected {
            tracing::warn!(%device, index = r.index, "telemetry record refused: {}", r.reason);
        }
        self.stats
            .batches_rejected
            .fetch_add(report.rejected.len() as u64, Ordering::Relaxed);
        if batches.is_empty() {
            return Ok(report);
        }
        report.stored = self.store.ingest(device, &batches, now)?;
        let s = &self.stats;
        s.batches.fetch_add(batches.len() as u64, Ordering::Relaxed);
        s.batches_replayed
            .fetch_add(report.stored.replayed_batches, Ordering::Relaxed);
        s.points_ingested
            .fetch_add(report.stored.inserted, Ordering::Relaxed);
        s.points_duplicate
            .fetch_add(report.stored.duplicates, Ordering::Relaxed);
        s.points_dropped
            .fetch_add(report.dropped_points, Ordering::Relaxed);
        Ok(report)
    }

    /// Runs one maintenance pass (blocking) and counts it.
    pub fn maintain(
        &self,
        config: &TelemetryConfig,
        now: Timestamp,
    ) -> Result<MaintenanceReport, StoreFailure> {
        let started = Instant::now();
        let r = self.store.maintain(&config.retention(), now);
        let s = &self.stats;
        match &r {
            Ok(rep) => {
                s.maintenance_runs.fetch_add(1, Ordering::Relaxed);
                s.points_rolled_up
                    .fetch_add(rep.rolled_up, Ordering::Relaxed);
                s.maintenance_last_us
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                s.maintenance_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

/// Ingests records of `device` on the blocking pool with the config in force, and
/// publishes the newest point as a `reading` event. An error means nothing was
/// stored (the device may send the records again).
pub async fn ingest(
    state: &AppState,
    device: &DeviceId,
    records: Vec<Vec<u8>>,
) -> Result<IngestReport, StoreFailure> {
    let (t, cfg, dev) = (
        state.telemetry.clone(),
        state.config().telemetry.clone(),
        device.clone(),
    );
    let report = tokio::task::spawn_blocking(move || t.ingest_records(&dev, &records, &cfg, now()))
        .await
        .map_err(|e| fail(format!("ingest task: {e}")))??;
    if let Some(p) = &report.latest {
        let mut data = serde_json::Map::new();
        data.insert("t".into(), serde_json::json!(p.at));
        for ch in Channel::ALL {
            if let Some(v) = p.get(ch) {
                data.insert(ch.name().into(), serde_json::json!(v));
            }
        }
        state
            .publish(
                EventKind::Reading,
                Some(device.clone()),
                serde_json::Value::Object(data),
            )
            .await;
    }
    Ok(report)
}

/// The hub's telemetry sink: stores each frame's records with [`ingest`] (one
/// transaction) before the hub acknowledges them to the device.
#[derive(Debug, Clone)]
pub struct FleetTelemetrySink {
    state: AppState,
}

impl FleetTelemetrySink {
    /// A sink over the daemon's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The sink to give the hub.
pub fn sink(state: &AppState) -> Arc<dyn TelemetrySink> {
    Arc::new(FleetTelemetrySink::new(state.clone()))
}

#[async_trait::async_trait]
impl TelemetrySink for FleetTelemetrySink {
    async fn ingest(&self, device: &DeviceId, records: Vec<Vec<u8>>) -> wrale_sync::Result<()> {
        // Refused records are counted and logged by `ingest`; acknowledging them is
        // right (sending them again cannot make them valid). Only a store failure
        // leaves the frame unacknowledged.
        ingest(&self.state, device, records)
            .await
            .map(|_| ())
            .map_err(|e| wrale_sync::Error::Telemetry(e.to_string()))
    }
}

/// Starts the maintenance task (rollups, retention) every
/// `telemetry.maintenance_interval` (re-read after a config reload); stops when
/// `state.shutdown` is cancelled.
pub fn start(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            let interval = state.config().telemetry.maintenance_interval;
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            let t = state.telemetry.clone();
            let cfg = state.config().telemetry.clone();
            match tokio::task::spawn_blocking(move || t.maintain(&cfg, now())).await {
                Ok(Ok(r)) => tracing::debug!(
                    rolled_up = r.rolled_up,
                    deleted_raw = r.deleted_raw,
                    deleted_1m = r.deleted_1m,
                    deleted_1h = r.deleted_1h,
                    "telemetry maintenance"
                ),
                Ok(Err(e)) => tracing::error!("telemetry maintenance failed: {e}"),
                Err(e) => tracing::error!("telemetry maintenance task: {e}"),
            }
        }
    });
}

/// Appends this module's Prometheus lines to a `/metrics` answer.
pub fn render_metrics(state: &AppState, out: &mut String) {
    let s = state.telemetry.stats();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "wrale_telemetry_points_ingested_total",
        "counter",
        "Telemetry points stored.",
        get(&s.points_ingested).to_string(),
    );
    metric(
        "wrale_telemetry_points_duplicate_total",
        "counter",
        "Telemetry points already stored under the same (device, metric, t), ignored.",
        get(&s.points_duplicate).to_string(),
    );
    metric(
        "wrale_telemetry_points_dropped_total",
        "counter",
        "Telemetry points dropped for a timestamp too far in the future.",
        get(&s.points_dropped).to_string(),
    );
    metric(
        "wrale_telemetry_batches_total",
        "counter",
        "Telemetry records accepted.",
        get(&s.batches).to_string(),
    );
    metric(
        "wrale_telemetry_batches_rejected_total",
        "counter",
        "Telemetry records refused (malformed, or for another device).",
        get(&s.batches_rejected).to_string(),
    );
    metric(
        "wrale_telemetry_batches_replayed_total",
        "counter",
        "Telemetry records skipped whole because they were ingested before.",
        get(&s.batches_replayed).to_string(),
    );
    metric(
        "wrale_telemetry_points_rolled_up_total",
        "counter",
        "Telemetry points rolled up into the 1m and 1h tiers.",
        get(&s.points_rolled_up).to_string(),
    );
    metric(
        "wrale_telemetry_maintenance_runs_total",
        "counter",
        "Telemetry maintenance passes completed.",
        get(&s.maintenance_runs).to_string(),
    );
    metric(
        "wrale_telemetry_maintenance_errors_total",
        "counter",
        "Telemetry maintenance passes failed.",
        get(&s.maintenance_errors).to_string(),
    );
    metric(
        "wrale_telemetry_maintenance_last_seconds",
        "gauge",
        "Duration of the last telemetry maintenance pass.",
        format!("{}", get(&s.maintenance_last_us) as f64 / 1e6),
    );
    if let Ok(bytes) = state.telemetry.store().size_bytes() {
        metric(
            "wrale_telemetry_store_bytes",
            "gauge",
            "Bytes the telemetry store uses on disk.",
            bytes.to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_sync::telemetry::encode_batch;

    const T0: i64 = 1_795_000_000_000;

    fn dir() -> PathBuf {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let d = std::env::temp_dir().join(format!("fleetd-telemetry-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn telemetry(d: &Path) -> Telemetry {
        Telemetry::with_store(Arc::new(
            SqliteTelemetry::open(&d.join(TELEMETRY_DB), Synchronous::Normal).unwrap(),
        ))
    }

    fn points(start: i64, n: i64, step_ms: i64) -> Vec<Point> {
        (0..n)
            .map(|i| {
                let mut p = Point::new(Timestamp::from_millis(start + i * step_ms));
                p.set(Channel::CpuTempC, 40.0 + (i % 20) as f64)
                    .set(Channel::FanRpm, 1000.0 + i as f64);
                p
            })
            .collect()
    }

    fn id(s: &str) -> DeviceId {
        s.parse().unwrap()
    }

    fn range(from: i64, to: i64) -> TimeRange {
        TimeRange::new(Timestamp::from_millis(from), Timestamp::from_millis(to)).unwrap()
    }

    /// The trait's default `raw_newest` (count, then read), for comparison.
    #[derive(Debug)]
    struct Defaulted<'a>(&'a dyn TelemetryStore);

    impl TelemetryStore for Defaulted<'_> {
        fn ingest(
            &self,
            d: &DeviceId,
            b: &[IngestBatch<'_>],
            now: Timestamp,
        ) -> Result<IngestOutcome, StoreFailure> {
            self.0.ingest(d, b, now)
        }
        fn maintain(
            &self,
            r: &Retention,
            now: Timestamp,
        ) -> Result<MaintenanceReport, StoreFailure> {
            self.0.maintain(r, now)
        }
        fn raw(
            &self,
            d: &DeviceId,
            m: &str,
            r: &TimeRange,
            l: u64,
        ) -> Result<Vec<(Timestamp, f64)>, StoreFailure> {
            self.0.raw(d, m, r, l)
        }
        fn raw_count(&self, d: &DeviceId, m: &str, r: &TimeRange) -> Result<u64, StoreFailure> {
            self.0.raw_count(d, m, r)
        }
        fn buckets(
            &self,
            d: &DeviceId,
            m: &str,
            res: Resolution,
            r: &TimeRange,
        ) -> Result<Vec<Bucket>, StoreFailure> {
            self.0.buckets(d, m, res, r)
        }
        fn metrics(&self, d: &DeviceId) -> Result<Vec<String>, StoreFailure> {
            self.0.metrics(d)
        }
        fn size_bytes(&self) -> Result<u64, StoreFailure> {
            self.0.size_bytes()
        }
    }

    #[test]
    fn raw_newest_reads_the_newest_points_in_time_order() {
        let d = dir();
        let t = telemetry(&d);
        let dev = id("pi-1");
        let now = Timestamp::from_millis(T0 + 7_200_000);
        let rec = encode_batch("pi-1", &points(T0, 600, 1000));
        t.ingest_records(&dev, &[rec], &TelemetryConfig::default(), now)
            .unwrap();
        let store = t.store();
        let q = range(T0 + 100_000, T0 + 500_000);
        let newest = store.raw_newest(&dev, "fan_rpm", &q, 50).unwrap();
        assert_eq!(newest.len(), 50);
        assert_eq!(newest[0], (Timestamp::from_millis(T0 + 450_000), 1450.0));
        assert_eq!(newest[49], (Timestamp::from_millis(T0 + 499_000), 1499.0));
        assert!(newest.windows(2).all(|w| w[0].0 < w[1].0));
        let default = Defaulted(store.as_ref());
        for (q, limit) in [(q, 50), (q, 10_000), (range(T0, T0 + 1), 5), (q, 0)] {
            assert_eq!(
                store.raw_newest(&dev, "fan_rpm", &q, limit).unwrap(),
                default.raw_newest(&dev, "fan_rpm", &q, limit).unwrap(),
                "{q:?} {limit}"
            );
        }
        assert!(store.raw_newest(&dev, "nope", &q, 5).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn ingest_is_idempotent_and_queries_are_exact_before_and_after_maintenance() {
        let d = dir();
        let t = telemetry(&d);
        let cfg = TelemetryConfig::default();
        let dev = id("pi-1");
        let now = Timestamp::from_millis(T0 + 7_200_000);
        let pts = points(T0, 3600, 1000);
        let rec = encode_batch("pi-1", &pts);
        let r = t
            .ingest_records(&dev, std::slice::from_ref(&rec), &cfg, now)
            .unwrap();
        assert_eq!(r.stored.inserted, 7200);
        assert!(r.rejected.is_empty());
        // The same record again: skipped whole.
        let r = t.ingest_records(&dev, &[rec], &cfg, now).unwrap();
        assert_eq!((r.stored.inserted, r.stored.replayed_batches), (0, 1));
        // An overlapping, different record: only its new points count.
        let rec2 = encode_batch("pi-1", &points(T0 + 3_000_000, 1200, 1000));
        let r = t.ingest_records(&dev, &[rec2], &cfg, now).unwrap();
        assert_eq!((r.stored.inserted, r.stored.duplicates), (1200, 1200));

        let all: Vec<(Timestamp, f64)> = {
            let mut m = BTreeMap::new();
            for p in points(T0, 3600, 1000)
                .into_iter()
                .chain(points(T0 + 3_000_000, 1200, 1000))
            {
                m.entry(p.at).or_insert(p.get(Channel::CpuTempC).unwrap());
            }
            m.into_iter().collect()
        };
        let q = range(T0 - 3_600_000, T0 + 7_200_000);
        let store = t.store();
        assert_eq!(store.raw_count(&dev, "cpu_temp_c", &q).unwrap(), 4200);
        let expect_m = rollup(all.iter().copied(), BucketWidth::MINUTE);
        let expect_h = rollup(all.iter().copied(), BucketWidth::HOUR);
        let before_m = store
            .buckets(&dev, "cpu_temp_c", Resolution::Minute, &q)
            .unwrap();
        let before_h = store
            .buckets(&dev, "cpu_temp_c", Resolution::Hour, &q)
            .unwrap();
        assert_eq!(before_m.len(), expect_m.len());
        assert_eq!(before_h, expect_h);
        let rep = t.maintain(&cfg, now).unwrap();
        assert_eq!(rep.rolled_up, 8400);
        assert_eq!(rep.deleted_raw, 0);
        let after_m = store
            .buckets(&dev, "cpu_temp_c", Resolution::Minute, &q)
            .unwrap();
        let after_h = store
            .buckets(&dev, "cpu_temp_c", Resolution::Hour, &q)
            .unwrap();
        assert_eq!(after_m, before_m);
        assert_eq!(after_h, before_h);
        // Maintenance again changes nothing.
        assert_eq!(t.maintain(&cfg, now).unwrap().rolled_up, 0);
        assert_eq!(
            store
                .buckets(&dev, "cpu_temp_c", Resolution::Hour, &q)
                .unwrap(),
            expect_h
        );
        assert_eq!(store.metrics(&dev).unwrap(), vec!["cpu_temp_c", "fan_rpm"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn late_data_merges_into_rolled_buckets_and_retention_deletes_tiers() {
        let d = dir();
        let t = telemetry(&d);
        let cfg = TelemetryConfig::default();
        let dev = id("pi-2");
        let now = Timestamp::from_millis(T0);
        // Even seconds first, rolled up; odd seconds arrive late.
        let even: Vec<Point> = points(T0 - 600_000, 300, 2000);
        let odd: Vec<Point> = points(T0 - 599_000, 300, 2000);
        t.ingest_records(&dev, &[encode_batch("pi-2", &even)], &cfg, now)
            .unwrap();
        t.maintain(&cfg, now).unwrap();
        t.ingest_records(&dev, &[encode_batch("pi-2", &odd)], &cfg, now)
            .unwrap();
        t.maintain(&cfg, now).unwrap();
        let all: Vec<(Timestamp, f64)> = even
            .iter()
            .chain(&odd)
            .map(|p| (p.at, p.get(Channel::FanRpm).unwrap()))
            .collect();
        let q = range(T0 - 600_000, T0);
        let got = t
            .store()
            .buckets(&dev, "fan_rpm", Resolution::Minute, &q)
            .unwrap();
        assert_eq!(got, rollup(all.iter().copied(), BucketWidth::MINUTE));
        // T0 - 10 min is not on a minute boundary: 11 buckets overlap.
        assert_eq!(got.len(), 11);

        // 2 days later: raw is gone, 1 m and 1 h remain.
        let later = Timestamp::from_millis(T0 + 2 * 86_400_000);
        let rep = t.maintain(&cfg, later).unwrap();
        assert_eq!(rep.deleted_raw, 1200);
        assert_eq!(t.store().raw_count(&dev, "fan_rpm", &q).unwrap(), 0);
        assert_eq!(
            t.store()
                .buckets(&dev, "fan_rpm", Resolution::Minute, &q)
                .unwrap(),
            got
        );
        // The same batch replayed now does not count twice.
        let r = t
            .ingest_records(&dev, &[encode_batch("pi-2", &odd)], &cfg, later)
            .unwrap();
        assert_eq!(r.stored.replayed_batches, 1);
        // 40 days later: the 1 m tier is gone, the 1 h tier is kept forever.
        let much_later = Timestamp::from_millis(T0 + 40 * 86_400_000);
        let rep = t.maintain(&cfg, much_later).unwrap();
        assert_eq!(rep.deleted_1m, 2 * got.len() as u64);
        assert_eq!(rep.deleted_1h, 0);
        assert_eq!(
            t.store()
                .buckets(&dev, "fan_rpm", Resolution::Hour, &q)
                .unwrap()
                .iter()
                .map(|b| b.count)
                .sum::<u64>(),
            600
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_records_are_refused_and_the_rest_stored() {
        let d = dir();
        let t = telemetry(&d);
        let cfg = TelemetryConfig::default();
        let dev = id("pi-3");
        let now = Timestamp::from_millis(T0);
        let good = encode_batch("pi-3", &points(T0 - 10_000, 5, 1000));
        let other = encode_batch("pi-4", &points(T0 - 10_000, 5, 1000));
        let future = encode_batch("pi-3", &points(T0 + 86_400_000, 3, 1000));
        let r = t
            .ingest_records(&dev, &[b"garbage".to_vec(), good, other, future], &cfg, now)
            .unwrap();
        assert_eq!(r.rejected.len(), 2);
        assert_eq!(r.rejected[0].index, 0);
        assert!(r.rejected[1].reason.contains("pi-4"), "{:?}", r.rejected);
        assert_eq!(r.stored.inserted, 10);
        assert_eq!(r.dropped_points, 3);
        assert_eq!(t.stats().batches_rejected.load(Ordering::Relaxed), 2);
        assert_eq!(t.stats().points_dropped.load(Ordering::Relaxed), 3);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn config_validation_names_the_key() {
        let mut c = TelemetryConfig::default();
        c.validate().unwrap();
        c.retention_1m = Duration::from_secs(3600);
        assert_eq!(c.validate().unwrap_err().0, "telemetry.retention_1m");
        let c = TelemetryConfig {
            retention_1h: Some(Duration::from_secs(86400)),
            ..TelemetryConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "telemetry.retention_1h");
        let c = TelemetryConfig {
            max_points: 5,
            ..TelemetryConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "telemetry.max_points");
        let c: TelemetryConfig =
            toml::from_str("retention_raw = \"6h\"\nretention_1h = \"400days\"").unwrap();
        assert_eq!(c.retention_raw, Duration::from_secs(6 * 3600));
        assert_eq!(c.retention_1h, Some(Duration::from_secs(400 * 86400)));
        assert!(toml::from_str::<TelemetryConfig>("retention = \"1h\"").is_err());
    }
}
