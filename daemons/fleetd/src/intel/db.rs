//! `intel.db`: the alert book (fleet alerts and silences) and the webhook
//! deliveries, dead letters included. One SQLite file in the data directory, WAL,
//! `synchronous = FULL`, schema version in `PRAGMA user_version` with ordered
//! migrations (the backup copies it like every SQLite file there).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use wrale_core::Timestamp;
use wrale_core::fleet::alerting::{AlertBook, Delivery, DeliveryStatus};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

const MIGRATIONS: &[&str] = &["
CREATE TABLE book (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    json TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    webhook TEXT NOT NULL,
    status TEXT NOT NULL,
    json TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_status ON deliveries (status, id);
"];

/// The intelligence store. Blocking: call it from the blocking pool.
#[derive(Debug)]
pub struct IntelDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn fail(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("intel store: {e}")
}

fn status_str(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::DeadLetter => "dead_letter",
    }
}

impl IntelDb {
    /// Opens (creating) the file and migrates it.
    pub fn open(path: &Path) -> anyhow::Result<IntelDb> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut conn = Connection::open(path).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(fail(format!(
                "{} has schema version {version}, newer than this fleetd's {SCHEMA_VERSION}",
                path.display()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(fail)?;
            tx.execute_batch(sql)
                .map_err(|e| fail(format!("migration {}: {e}", i + 1)))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
        Ok(IntelDb {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let mut c = match self.conn.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        f(&mut c).map_err(fail)
    }

    /// The stored alert book and every stored delivery (delivered ones included).
    pub fn load(&self) -> anyhow::Result<(Option<AlertBook>, Vec<Delivery>)> {
        let (book, rows) = self.with(|c| {
            let book: Option<String> = c
                .query_row("SELECT json FROM book WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            let mut st = c.prepare("SELECT json FROM deliveries ORDER BY id")?;
            let rows = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((book, rows))
        })?;
        let book = match book {
            Some(j) => Some(serde_json::from_str(&j).map_err(|e| fail(format!("book: {e}")))?),
            None => None,
        };
        let mut out = Vec::with_capacity(rows.len());
        for j in rows {
            match serde_json::from_str::<Delivery>(&j) {
                Ok(d) => out.push(d),
                Err(e) => tracing::warn!("intel store: unreadable delivery skipped: {e}"),
            }
        }
        Ok((book, out))
    }

    /// Replaces the stored alert book.
    pub fn save_book(&self, book: &AlertBook, now: Timestamp) -> anyhow::Result<()> {
        let j = serde_json::to_string(book).map_err(fail)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO book (id, json, updated_at) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
                params![j, now.as_millis()],
            )
            .map(|_| ())
        })
    }

    /// Inserts or replaces deliveries (one transaction).
    pub fn save_deliveries(&self, ds: &[Delivery], now: Timestamp) -> anyhow::Result<()> {
        let rows: Vec<(i64, String, &'static str, String)> = ds
            .iter()
            .map(|d| {
                serde_json::to_string(d)
                    .map(|j| (d.id as i64, d.webhook.clone(), status_str(d.status), j))
            })
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO deliveries (id, webhook, status, json, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, json = excluded.json,
                     updated_at = excluded.updated_at",
                )?;
                for (id, hook, status, j) in &rows {
                    st.execute(params![id, hook, status, j, now.as_millis()])?;
                }
            }
            tx.commit()
        })
    }

    /// Deletes deliveries by id; how many existed.
    pub fn delete_deliveries(&self, ids: &[u64]) -> anyhow::Result<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for id in ids {
                n += tx.execute("DELETE FROM deliveries WHERE id = ?1", params![*id as i64])?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    /// Stored dead letters, oldest first (what the API lists).
    pub fn dead_letters(&self) -> anyhow::Result<Vec<Delivery>> {
        let rows = self.with(|c| {
            let mut st =
                c.prepare("SELECT json FROM deliveries WHERE status = 'dead_letter' ORDER BY id")?;
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.iter()
            .map(|j| serde_json::from_str(j).map_err(fail))
            .collect()
    }
}
