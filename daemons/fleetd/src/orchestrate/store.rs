//! `orchestrate.db`: declared workloads, current placements (with the decision
//! that made each) and rollouts (their whole state as JSON), in their own SQLite
//! file in the data directory (WAL, `synchronous = FULL`, schema version in
//! `PRAGMA user_version` with ordered migrations; the backup copies every SQLite
//! file of the data directory, this one included).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wrale_core::Timestamp;
use wrale_core::fleet::scheduler::{Decision, Placement, Workload};

use crate::error::ApiError;

/// The file name in `data.dir`.
pub const ORCHESTRATE_DB: &str = "orchestrate.db";

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE workloads (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE placements (
    workload TEXT NOT NULL,
    replica INTEGER NOT NULL,
    device TEXT NOT NULL,
    since INTEGER NOT NULL,
    decision TEXT,
    PRIMARY KEY (workload, replica)
);
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#];

/// A declared workload and who declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// The workload (wrale-core's scheduler type).
    #[serde(flatten)]
    pub spec: Workload,
    /// When it was declared.
    pub created_at: Timestamp,
    /// Who declared it (`user:alice`).
    pub created_by: String,
}

/// A placement with when it started and the decision that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// Workload, replica and device.
    #[serde(flatten)]
    pub placement: Placement,
    /// Since when it runs there.
    pub since: Timestamp,
    /// The scheduler's explained decision (why this device, why not others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// The orchestration store.
#[derive(Debug)]
pub struct OrchestrateStore {
    conn: Mutex<Connection>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("orchestrate store: {e}"))
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

impl OrchestrateStore {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<OrchestrateStore> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            anyhow::bail!(
                "{} has schema version {version}, newer than this fleetd's {}",
                path.display(),
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(OrchestrateStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ApiError> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| internal("connection lock poisoned"))?;
        f(&mut c).map_err(internal)
    }

    /// Every declared workload, by name.
    pub fn workloads(&self) -> Result<Vec<WorkloadRecord>, ApiError> {
        let rows: Vec<(String, i64, String)> = self.with(|c| {
            let mut st =
                c.prepare("SELECT spec, created_at, created_by FROM workloads ORDER BY name")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })?;
        rows.into_iter()
            .map(|(spec, at, by)| {
                Ok(WorkloadRecord {
                    spec: serde_json::from_str(&spec).map_err(internal)?,
                    created_at: ts(at),
                    created_by: by,
                })
            })
            .collect()
    }

    /// Declares a workload; `false` when the name is taken.
    pub fn insert_workload(&self, w: &WorkloadRecord) -> Result<bool, ApiError> {
        let spec = serde_json::to_string(&w.spec).map_err(internal)?;
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO workloads (name, spec, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
                params![w.spec.name, spec, w.created_at.as_millis(), w.created_by],
            )
        })
        .map(|n| n == 1)
    }

    /// Removes a workload (its placements stay until the next pass stops them);
    /// `false` when there was none.
    pub fn delete_workload(&self, name: &str) -> Result<bool, ApiError> {
        self.with(|c| c.execute("DELETE FROM workloads WHERE name = ?1", params![name]))
            .map(|n| n == 1)
    }

    /// Every placement, sorted.
    pub fn placements(&self) -> Result<Vec<PlacementRecord>, ApiError> {
        type Row = (String, u32, String, i64, Option<String>);
        let rows: Vec<Row> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT workload, replica, device, since, decision FROM placements ORDER BY workload, replica",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect()
        })?;
        rows.into_iter()
            .map(|(workload, replica, device, since, decision)| {
                Ok(PlacementRecord {
                    placement: Placement {
                        workload,
                        replica,
                        device: wrale_core::DeviceId::new(device).map_err(internal)?,
                    },
                    since: ts(since),
                    decision: match decision {
                        Some(d) => serde_json::from_str(&d).ok(),
                        None => None,
                    },
                })
            })
            .collect()
    }

    /// Replaces every placement (one transaction).
    pub fn set_placements(&self, all: &[PlacementRecord]) -> Result<(), ApiError> {
        let rows: Vec<(String, u32, String, i64, Option<String>)> = all
            .iter()
            .map(|p| {
                (
                    p.placement.workload.clone(),
                    p.placement.replica,
                    p.placement.device.to_string(),
                    p.since.as_millis(),
                    p.decision
                        .as_ref()
                        .and_then(|d| serde_json::to_string(d).ok()),
                )
            })
            .collect();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM placements", [])?;
            for r in &rows {
                tx.execute(
                    "INSERT INTO placements (workload, replica, device, since, decision) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![r.0, r.1, r.2, r.3, r.4],
                )?;
            }
            tx.commit()
        })
    }

    /// Stores a rollout record (insert or replace).
    pub fn put_rollout(
        &self,
        id: &str,
        record: &Value,
        status: &str,
        created_at: Timestamp,
        updated_at: Timestamp,
    ) -> Result<(), ApiError> {
        let text = serde_json::to_string(record).map_err(internal)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO rollouts (id, record, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record, status = excluded.status, updated_at = excluded.updated_at",
                params![id, text, status, created_at.as_millis(), updated_at.as_millis()],
            )
        })
        .map(|_| ())
    }

    /// One rollout record.
    pub fn get_rollout(&self, id: &str) -> Result<Option<Value>, ApiError> {
        let text: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT record FROM rollouts WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
        })?;
        text.map(|t| serde_json::from_str(&t).map_err(internal))
            .transpose()
    }

    /// Every rollout record, newest first (`status` filters).
    pub fn list_rollouts(&self, status: Option<&str>) -> Result<Vec<Value>, ApiError> {
        let texts: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT record FROM rollouts WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, id",
            )?;
            st.query_map(params![status], |r| r.get(0))?.collect()
        })?;
        texts
            .iter()
            .map(|t| serde_json::from_str(t).map_err(internal))
            .collect()
    }
}
