//! The embedded SQLite store: one file, WAL journal, `synchronous = FULL`, one
//! transaction per [`Store`] call, so a crash between any two calls loses nothing
//! that was acknowledged and leaves a loadable file.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

use super::{Store, StoredTwin, check_epoch_order};
use crate::error::{Error, Result};

/// A [`Store`] in an SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

fn db(e: rusqlite::Error) -> Error {
    Error::Store(format!("sqlite: {e}"))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS twins (
    doc TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    snapshot BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    bytes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_doc ON changes(doc, id);
CREATE TABLE IF NOT EXISTS sync_states (
    doc TEXT NOT NULL,
    peer TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (doc, peer)
);
CREATE TABLE IF NOT EXISTS archive (
    doc TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (doc, epoch)
);
";

impl SqliteStore {
    /// Opens (or creates) the store file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(Self { conn })
    }

    fn epoch_of(&self, doc: &str) -> Result<Option<u64>> {
        self.conn
            .query_row("SELECT epoch FROM twins WHERE doc = ?1", [doc], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(db)
            .map(|e| e.map(|e| e as u64))
    }
}

impl Store for SqliteStore {
    fn load(&self, doc: &str) -> Result<Option<StoredTwin>> {
        let row = self
            .conn
            .query_row(
                "SELECT epoch, snapshot FROM twins WHERE doc = ?1",
                [doc],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((epoch, snapshot)) = row else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT bytes FROM changes WHERE doc = ?1 AND epoch = ?2 ORDER BY id")
            .map_err(db)?;
        let changes = stmt
            .query_map(params![doc, epoch], |r| r.get::<_, Vec<u8>>(0))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(Some(StoredTwin {
            epoch: epoch as u64,
            snapshot,
            changes,
        }))
    }

    fn save_snapshot(&mut self, doc: &str, epoch: u64, snapshot: &[u8]) -> Result<()> {
        if let Some(e) = self.epoch_of(doc)? {
            if e != epoch {
                return Err(Error::Store(format!(
                    "{doc}: snapshot for epoch {epoch} but the store is at {e}"
                )));
            }
        }
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute(
            "INSERT INTO twins (doc, epoch, snapshot) VALUES (?1, ?2, ?3)
             ON CONFLICT(doc) DO UPDATE SET epoch = excluded.epoch, snapshot = excluded.snapshot",
            params![doc, epoch as i64, snapshot],
        )
        .map_err(db)?;
        tx.execute("DELETE FROM changes WHERE doc = ?1", [doc])
            .map_err(db)?;
        tx.commit().map_err(db)
    }

    fn append_changes(&mut self, doc: &str, epoch: u64, changes: &[u8]) -> Result<usize> {
        let tx = self.conn.transaction().map_err(db)?;
        let stored: Option<i64> = tx
            .query_row("SELECT epoch FROM twins WHERE doc = ?1", [doc], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?;
        match stored {
            None => return Err(Error::Store(format!("{doc}: no snapshot to append to"))),
            Some(e) if e as u64 != epoch => {
                return Err(Error::Store(format!(
                    "{doc}: changes for epoch {epoch} but the store is at {e}"
                )));
            }
            Some(_) => {}
        }
        tx.execute(
            "INSERT INTO changes (doc, epoch, bytes) VALUES (?1, ?2, ?3)",
            params![doc, epoch as i64, changes],
        )
        .map_err(db)?;
        let n: i64 = tx
            .query_row("SELECT COUNT(*) FROM changes WHERE doc = ?1", [doc], |r| {
                r.get(0)
            })
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(n as usize)
    }

    fn switch_epoch(
        &mut self,
        doc: &str,
        old_epoch: u64,
        archived: &[u8],
        new_epoch: u64,
        snapshot: &[u8],
    ) -> Result<()> {
        check_epoch_order(doc, old_epoch, new_epoch)?;
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute(
            "INSERT OR REPLACE INTO archive (doc, epoch, bytes) VALUES (?1, ?2, ?3)",
            params![doc, old_epoch as i64, archived],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO twins (doc, epoch, snapshot) VALUES (?1, ?2, ?3)
             ON CONFLICT(doc) DO UPDATE SET epoch = excluded.epoch, snapshot = excluded.snapshot",
            params![doc, new_epoch as i64, snapshot],
        )
        .map_err(db)?;
        tx.execute("DELETE FROM changes WHERE doc = ?1", [doc])
            .map_err(db)?;
        tx.execute("DELETE FROM sync_states WHERE doc = ?1", [doc])
            .map_err(db)?;
        tx.commit().map_err(db)
    }

    fn put_sync_state(&mut self, doc: &str, peer: &str, state: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO sync_states (doc, peer, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT(doc, peer) DO UPDATE SET state = excluded.state",
                params![doc, peer, state],
            )
            .map_err(db)?;
        Ok(())
    }

    fn sync_state(&self, doc: &str, peer: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row(
                "SELECT state FROM sync_states WHERE doc = ?1 AND peer = ?2",
                [doc, peer],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)
    }

    fn archived_epochs(&self, doc: &str) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT epoch FROM archive WHERE doc = ?1 ORDER BY epoch")
            .map_err(db)?;
        let rows = stmt
            .query_map([doc], |r| r.get::<_, i64>(0))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(rows.into_iter().map(|e| e as u64).collect())
    }

    fn load_archived(&self, doc: &str, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row(
                "SELECT bytes FROM archive WHERE doc = ?1 AND epoch = ?2",
                params![doc, epoch as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)
    }

    fn docs(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc FROM twins ORDER BY doc")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(rows)
    }
}
