//! The embedded store: one SQLite file (`fleet.db`), WAL journal,
//! `synchronous = FULL`, schema version in `PRAGMA user_version` with ordered
//! migrations. The audit table refuses UPDATE and DELETE through triggers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};
use wrale_core::fleet::access::Role;
use wrale_core::fleet::registry::{DeviceRecord, DeviceStatus, GroupTree, Health};
use wrale_core::model::{DeviceId, GroupId, Location, Severity};
use wrale_core::{BoardModel, Timestamp};

use super::*;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    group_id TEXT,
    uses INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    labels TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent TEXT REFERENCES groups(id),
    created_at INTEGER NOT NULL
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    serial TEXT,
    labels TEXT NOT NULL,
    site TEXT, rack TEXT, shelf TEXT, slot TEXT,
    group_id TEXT REFERENCES groups(id),
    credential_hash TEXT UNIQUE,
    revoked INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    health TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER,
    agent_version TEXT
);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT,
    code TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_at INTEGER NOT NULL,
    raised_by TEXT NOT NULL,
    acked_at INTEGER, acked_by TEXT,
    cleared_at INTEGER, cleared_by TEXT
);
CREATE UNIQUE INDEX alerts_active_key ON alerts(dedup_key) WHERE state != 'cleared';
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    verdict TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX audit_time ON audit(time);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE config_layers (
    scope TEXT PRIMARY KEY,
    fields TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
"#];

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(backend)
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn enum_from<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn id_from<T: std::str::FromStr>(s: String) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    s.parse().map_err(|e: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn role_from(s: &str) -> rusqlite::Result<Role> {
    s.parse()
        .map_err(|e: wrale_core::fleet::access::UnknownRole| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

const DEVICE_COLS: &str = "id, model, serial, labels, site, rack, shelf, slot, group_id, \
     revoked, status, health, enrolled_at, last_seen, agent_version";

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let labels: String = r.get(3)?;
    let revoked: bool = r.get(9)?;
    let status: DeviceStatus = enum_from(&r.get::<_, String>(10)?)?;
    Ok(DeviceRecord {
        id: id_from(r.get(0)?)?,
        model: enum_from::<BoardModel>(&r.get::<_, String>(1)?)?,
        serial: r.get(2)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        location: Location {
            site: r.get(4)?,
            rack: r.get(5)?,
            shelf: r.get(6)?,
            slot: r.get(7)?,
        },
        group: r.get::<_, Option<String>>(8)?.map(id_from).transpose()?,
        status: if revoked {
            DeviceStatus::Revoked
        } else {
            status
        },
        health: enum_from::<Health>(&r.get::<_, String>(11)?)?,
        revoked,
        enrolled_at: ts(r.get(12)?),
        last_seen: r.get::<_, Option<i64>>(13)?.map(ts),
        agent_version: r.get(14)?,
    })
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        role: role_from(&r.get::<_, String>(1)?)?,
        created_at: ts(r.get(2)?),
    })
}

const TOKEN_COLS: &str = "id, name, owner, role, created_at, expires_at";

fn token_row(r: &Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: r.get(0)?,
        name: r.get(1)?,
        owner: r.get(2)?,
        role: role_from(&r.get::<_, String>(3)?)?,
        created_at: ts(r.get(4)?),
        expires_at: r.get::<_, Option<i64>>(5)?.map(ts),
    })
}

const ENROLL_COLS: &str = "id, group_id, uses, used, expires_at, labels, created_by, created_at";

fn enroll_row(r: &Row<'_>) -> rusqlite::Result<EnrollmentToken> {
    let labels: String = r.get(5)?;
    Ok(EnrollmentToken {
        id: r.get(0)?,
        group: r.get::<_, Option<String>>(1)?.map(id_from).transpose()?,
        uses: r.get(2)?,
        used: r.get(3)?,
        expires_at: ts(r.get(4)?),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        created_by: r.get(6)?,
        created_at: ts(r.get(7)?),
    })
}

fn group_row(r: &Row<'_>) -> rusqlite::Result<GroupRecord> {
    Ok(GroupRecord {
        id: id_from(r.get(0)?)?,
        name: r.get(1)?,
        parent: r.get::<_, Option<String>>(2)?.map(id_from).transpose()?,
        created_at: ts(r.get(3)?),
    })
}

const ALERT_COLS: &str = "id, device, code, severity, message, dedup_key, state, raised_at, \
     raised_by, acked_at, acked_by, cleared_at, cleared_by";

fn alert_row(r: &Row<'_>) -> rusqlite::Result<AlertRecord> {
    Ok(AlertRecord {
        id: r.get(0)?,
        device: r.get::<_, Option<String>>(1)?.map(id_from).transpose()?,
        code: r.get(2)?,
        severity: enum_from::<Severity>(&r.get::<_, String>(3)?)?,
        message: r.get(4)?,
        key: r.get(5)?,
        state: enum_from::<AlertState>(&r.get::<_, String>(6)?)?,
        raised_at: ts(r.get(7)?),
        raised_by: r.get(8)?,
        acked_at: r.get::<_, Option<i64>>(9)?.map(ts),
        acked_by: r.get(10)?,
        cleared_at: r.get::<_, Option<i64>>(11)?.map(ts),
        cleared_by: r.get(12)?,
    })
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let result: String = r.get(6)?;
    Ok(AuditEntry {
        seq: r.get(0)?,
        time: ts(r.get(1)?),
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        verdict: r.get(5)?,
        result: serde_json::from_str(&result).unwrap_or(Value::Null),
    })
}

/// Admins in the users table.
fn admin_count(tx: &rusqlite::Transaction<'_>) -> StoreResult<i64> {
    tx.query_row(
        "SELECT COUNT(*) FROM users WHERE role = ?1",
        [Role::Admin.as_str()],
        |r| r.get(0),
    )
    .map_err(backend)
}

/// Inside a transaction that changed users: refuses (and so rolls back) a
/// change that took the last admin away (`before`: admins before it). The API
/// checks first for a clear answer; this makes the rule hold when two such
/// changes race.
fn an_admin_remains(tx: &rusqlite::Transaction<'_>, before: i64) -> StoreResult<()> {
    if before > 0 && admin_count(tx)? == 0 {
        return Err(StoreError::Conflict(
            wrale_core::fleet::access::LastAdmin.to_string(),
        ));
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path`. Refuses a file written
    /// by a newer fleetd.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let mut conn = Connection::open(path)
            .map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(backend)?;
        if version > SCHEMA_VERSION {
            return Err(backend(format!(
                "{} has schema version {version}, newer than this fleetd's {SCHEMA_VERSION}",
                path.display()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(backend)?;
            tx.execute_batch(sql)
                .map_err(|e| backend(format!("migration {}: {e}", i + 1)))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| backend("store lock poisoned"))?;
        f(&mut conn).map_err(backend)
    }

    /// Runs `f` in a transaction; `f`'s own errors roll back.
    fn tx<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| backend("store lock poisoned"))?;
        let tx = conn.transaction().map_err(backend)?;
        let out = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }
}

fn get_device_tx(tx: &Connection, id: &DeviceId) -> StoreResult<Option<DeviceRecord>> {
    tx.query_row(
        &format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"),
        [id.as_str()],
        device_row,
    )
    .optional()
    .map_err(backend)
}

fn group_tree(tx: &Connection) -> StoreResult<GroupTree> {
    let mut stmt = tx
        .prepare("SELECT id, name, parent, created_at FROM groups")
        .map_err(backend)?;
    let groups = stmt
        .query_map([], group_row)
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    GroupTree::new(groups.into_iter().map(|g| (g.id, g.parent))).map_err(backend)
}

fn group_exists(tx: &Connection, id: &GroupId) -> StoreResult<bool> {
    tx.query_row("SELECT 1 FROM groups WHERE id = ?1", [id.as_str()], |_| {
        Ok(())
    })
    .optional()
    .map(|o| o.is_some())
    .map_err(backend)
}

impl FleetStore for SqliteStore {
    fn user_count(&self) -> StoreResult<u64> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)))
    }

    fn create_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now: Timestamp,
    ) -> StoreResult<User> {
        self.tx(|tx| {
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![name, role.as_str(), password_hash, now.as_millis()],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("user {name:?} exists")));
            }
            Ok(User {
                name: name.to_owned(),
                role,
                created_at: now,
            })
        })
    }

    fn user_with_hash(&self, name: &str) -> StoreResult<Option<(User, String)>> {
        self.with(|c| {
            c.query_row(
                "SELECT name, role, created_at, password_hash FROM users WHERE name = ?1",
                [name],
                |r| Ok((user_row(r)?, r.get(3)?)),
            )
            .optional()
        })
    }

    fn list_users(&self) -> StoreResult<Vec<User>> {
        self.with(|c| {
            let mut s = c.prepare("SELECT name, role, created_at FROM users ORDER BY name")?;
            s.query_map([], user_row)?.collect()
        })
    }

    fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> StoreResult<User> {
        self.tx(|tx| {
            let exists = tx
                .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
                .optional()
                .map_err(backend)?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound(format!("no user {name:?}")));
            }
            if let Some(role) = role {
                let before = admin_count(tx)?;
                tx.execute(
                    "UPDATE users SET role = ?2 WHERE name = ?1",
                    params![name, role.as_str()],
                )
                .map_err(backend)?;
                an_admin_remains(tx, before)?;
            }
            if let Some(h) = password_hash {
                tx.execute(
                    "UPDATE users SET password_hash = ?2 WHERE name = ?1",
                    params![name, h],
                )
                .map_err(backend)?;
                tx.execute("DELETE FROM sessions WHERE user = ?1", [name])
                    .map_err(backend)?;
            }
            tx.query_row(
                "SELECT name, role, created_at FROM users WHERE name = ?1",
                [name],
                user_row,
            )
            .map_err(backend)
        })
    }

    fn delete_user(&self, name: &str) -> StoreResult<()> {
        self.tx(|tx| {
            let before = admin_count(tx)?;
            let n = tx
                .execute("DELETE FROM users WHERE name = ?1", [name])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no user {name:?}")));
            }
            an_admin_remains(tx, before)
        })
    }

    fn create_session(
        &self,
        secret_hash: &str,
        user: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        self.with(|c| {
            // Expired sessions are swept on each login.
            c.execute(
                "DELETE FROM sessions WHERE expires_at <= ?1",
                [now.as_millis()],
            )?;
            c.execute(
                "INSERT INTO sessions (hash, user, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![secret_hash, user, now.as_millis(), expires_at.as_millis()],
            )
        })?;
        Ok(())
    }

    fn delete_session(&self, secret_hash: &str) -> StoreResult<bool> {
        self.with(|c| c.execute("DELETE FROM sessions WHERE hash = ?1", [secret_hash]))
            .map(|n| n > 0)
    }

    fn create_api_token(&self, t: &ApiToken, secret_hash: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO api_tokens (id, name, hash, owner, role, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    t.id,
                    t.name,
                    secret_hash,
                    t.owner,
                    t.role.as_str(),
                    t.created_at.as_millis(),
                    t.expires_at.map(Timestamp::as_millis)
                ],
            )
        })?;
        Ok(())
    }

    fn list_api_tokens(&self, owner: Option<&str>) -> StoreResult<Vec<ApiToken>> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {TOKEN_COLS} FROM api_tokens WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_at, id"
            ))?;
            s.query_map([owner], token_row)?.collect()
        })
    }

    fn get_api_token(&self, id: &str) -> StoreResult<Option<ApiToken>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE id = ?1"),
                [id],
                token_row,
            )
            .optional()
        })
    }

    fn delete_api_token(&self, id: &str) -> StoreResult<bool> {
        self.with(|c| c.execute("DELETE FROM api_tokens WHERE id = ?1", [id]))
            .map(|n| n > 0)
    }

    fn authenticate(&self, secret_hash: &str, now: Timestamp) -> StoreResult<Option<Credential>> {
        let now_ms = now.as_millis();
        self.with(|c| {
            let session = c
                .query_row(
                    "SELECT s.user, u.role, s.expires_at FROM sessions s JOIN users u ON u.name = s.user \
                     WHERE s.hash = ?1 AND s.expires_at > ?2",
                    params![secret_hash, now_ms],
                    |r| {
                        Ok(Credential::Session {
                            user: r.get(0)?,
                            role: role_from(&r.get::<_, String>(1)?)?,
                            expires_at: ts(r.get(2)?),
                        })
                    },
                )
                .optional()?;
            if session.is_some() {
                return Ok(session);
            }
            let token = c
                .query_row(
                    "SELECT t.id, t.name, t.owner, t.role, t.created_at, t.expires_at, u.role \
                     FROM api_tokens t JOIN users u ON u.name = t.owner \
                     WHERE t.hash = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2)",
                    params![secret_hash, now_ms],
                    |r| {
                        Ok(Credential::Token {
                            token: token_row(r)?,
                            owner_role: role_from(&r.get::<_, String>(6)?)?,
                        })
                    },
                )
                .optional()?;
            if token.is_some() {
                return Ok(token);
            }
            c.query_row(
                "SELECT id FROM devices WHERE credential_hash = ?1 AND revoked = 0",
                [secret_hash],
                |r| Ok(Credential::Device { id: id_from(r.get(0)?)? }),
            )
            .optional()
        })
    }

    fn create_enrollment_token(&self, t: &EnrollmentToken, secret_hash: &str) -> StoreResult<()> {
        let labels = json_text(&t.labels)?;
        self.tx(|tx| {
            if let Some(g) = &t.group
                && !group_exists(tx, g)?
            {
                return Err(StoreError::Invalid {
                    field: "group".into(),
                    message: format!("no group {g}"),
                });
            }
            tx.execute(
                "INSERT INTO enrollment_tokens (id, hash, group_id, uses, used, expires_at, labels, created_by, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8)",
                params![
                    t.id,
                    secret_hash,
                    t.group.as_ref().map(GroupId::as_str),
                    t.uses,
                    t.expires_at.as_millis(),
                    labels,
                    t.created_by,
                    t.created_at.as_millis()
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {ENROLL_COLS} FROM enrollment_tokens ORDER BY created_at, id"
            ))?;
            s.query_map([], enroll_row)?.collect()
        })
    }

    fn delete_enrollment_token(&self, id: &str) -> StoreResult<bool> {
        self.with(|c| c.execute("DELETE FROM enrollment_tokens WHERE id = ?1", [id]))
            .map(|n| n > 0)
    }

    fn enroll(
        &self,
        token_hash: &str,
        req: &Enrollment,
        credential_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Result<DeviceRecord, EnrollRefusal>> {
        self.tx(|tx| {
            let token = tx
                .query_row(
                    &format!("SELECT {ENROLL_COLS} FROM enrollment_tokens WHERE hash = ?1"),
                    [token_hash],
                    enroll_row,
                )
                .optional()
                .map_err(backend)?;
            let Some(token) = token else {
                return Ok(Err(EnrollRefusal::Invalid("unknown enrollment token".into())));
            };
            let grant = token.grant();
            if let Err(e) = grant.check(now) {
                return Ok(Err(EnrollRefusal::Invalid(format!("{}: {e}", token.id))));
            }
            if let Some(existing) = get_device_tx(tx, &req.device_id)? {
                if !existing.revoked {
                    return Ok(Err(EnrollRefusal::AlreadyEnrolled));
                }
                tx.execute("DELETE FROM devices WHERE id = ?1", [req.device_id.as_str()])
                    .map_err(backend)?;
            }
            // The token's group may have been deleted since: enroll without one.
            let group = match &grant.group {
                Some(g) if group_exists(tx, g)? => Some(g.clone()),
                _ => None,
            };
            let labels = json_text(&grant.labels_for(&req.labels))?;
            let l = &req.location;
            tx.execute(
                "INSERT INTO devices (id, model, serial, labels, site, rack, shelf, slot, group_id, credential_hash, \
                 revoked, status, health, enrolled_at, last_seen, agent_version) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, 'never', 'unknown', ?11, NULL, ?12)",
                params![
                    req.device_id.as_str(),
                    enum_text(&req.model),
                    req.serial,
                    labels,
                    l.site,
                    l.rack,
                    l.shelf,
                    l.slot,
                    group.as_ref().map(GroupId::as_str),
                    credential_hash,
                    now.as_millis(),
                    req.agent_version
                ],
            )
            .map_err(backend)?;
            tx.execute(
                "UPDATE enrollment_tokens SET used = used + 1 WHERE id = ?1",
                [&token.id],
            )
            .map_err(backend)?;
            let device = get_device_tx(tx, &req.device_id)?
                .ok_or_else(|| backend("device vanished in its own transaction"))?;
            Ok(Ok(device))
        })
    }

    fn list_devices(&self) -> StoreResult<Vec<DeviceRecord>> {
        self.with(|c| {
            let mut s = c.prepare(&format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id"))?;
            s.query_map([], device_row)?.collect()
        })
    }

    fn get_device(&self, id: &DeviceId) -> StoreResult<Option<DeviceRecord>> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| backend("store lock poisoned"))?;
        get_device_tx(&conn, id)
    }

    fn update_device(&self, id: &DeviceId, patch: &DevicePatch) -> StoreResult<DeviceRecord> {
        self.tx(|tx| {
            if get_device_tx(tx, id)?.is_none() {
                return Err(StoreError::NotFound(format!("no device {id}")));
            }
            if let Some(labels) = &patch.labels {
                tx.execute(
                    "UPDATE devices SET labels = ?2 WHERE id = ?1",
                    params![id.as_str(), json_text(labels)?],
                )
                .map_err(backend)?;
            }
            if let Some(l) = &patch.location {
                tx.execute(
                    "UPDATE devices SET site = ?2, rack = ?3, shelf = ?4, slot = ?5 WHERE id = ?1",
                    params![id.as_str(), l.site, l.rack, l.shelf, l.slot],
                )
                .map_err(backend)?;
            }
            if let Some(group) = &patch.group {
                if let Some(g) = group
                    && !group_exists(tx, g)?
                {
                    return Err(StoreError::Invalid {
                        field: "group".into(),
                        message: format!("no group {g}"),
                    });
                }
                tx.execute(
                    "UPDATE devices SET group_id = ?2 WHERE id = ?1",
                    params![id.as_str(), group.as_ref().map(GroupId::as_str)],
                )
                .map_err(backend)?;
            }
            get_device_tx(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("no device {id}")))
        })
    }

    fn delete_device(&self, id: &DeviceId) -> StoreResult<()> {
        self.tx(|tx| {
            let n = tx
                .execute("DELETE FROM devices WHERE id = ?1", [id.as_str()])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no device {id}")));
            }
            tx.execute(
                "DELETE FROM config_layers WHERE scope = ?1",
                [ConfigScope::Device(id.clone()).to_string()],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn revoke_device(&self, id: &DeviceId) -> StoreResult<DeviceRecord> {
        self.tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE devices SET revoked = 1, status = 'revoked', credential_hash = NULL WHERE id = ?1",
                    [id.as_str()],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no device {id}")));
            }
            get_device_tx(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("no device {id}")))
        })
    }

    fn device_seen(
        &self,
        id: &DeviceId,
        online: bool,
        now: Timestamp,
        agent_version: Option<&str>,
    ) -> StoreResult<()> {
        let status = if online { "online" } else { "offline" };
        let n = self.with(|c| {
            c.execute(
                "UPDATE devices SET status = ?2, last_seen = ?3, agent_version = COALESCE(?4, agent_version) \
                 WHERE id = ?1 AND revoked = 0",
                params![id.as_str(), status, now.as_millis(), agent_version],
            )
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no enrolled device {id}")));
        }
        Ok(())
    }

    fn set_device_health(&self, id: &DeviceId, health: Health) -> StoreResult<()> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE devices SET health = ?2 WHERE id = ?1",
                params![id.as_str(), health.as_str()],
            )
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no device {id}")));
        }
        Ok(())
    }

    fn mark_all_offline(&self) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE devices SET status = 'offline' WHERE status = 'online'",
                [],
            )
        })?;
        Ok(())
    }

    fn list_groups(&self) -> StoreResult<Vec<GroupRecord>> {
        self.with(|c| {
            let mut s = c.prepare("SELECT id, name, parent, created_at FROM groups ORDER BY id")?;
            s.query_map([], group_row)?.collect()
        })
    }

    fn get_group(&self, id: &GroupId) -> StoreResult<Option<GroupRecord>> {
        self.with(|c| {
            c.query_row(
                "SELECT id, name, parent, created_at FROM groups WHERE id = ?1",
                [id.as_str()],
                group_row,
            )
            .optional()
        })
    }

    fn create_group(&self, g: &GroupRecord) -> StoreResult<GroupRecord> {
        self.tx(|tx| {
            let tree = group_tree(tx)?;
            if tree.contains(&g.id) {
                return Err(StoreError::Conflict(format!("group {} exists", g.id)));
            }
            tree.check_parent(&g.id, g.parent.as_ref())
                .map_err(|e| StoreError::Conflict(e.to_string()))?;
            tx.execute(
                "INSERT INTO groups (id, name, parent, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    g.id.as_str(),
                    g.name,
                    g.parent.as_ref().map(GroupId::as_str),
                    g.created_at.as_millis()
                ],
            )
            .map_err(backend)?;
            Ok(g.clone())
        })
    }

    fn update_group(
        &self,
        id: &GroupId,
        name: Option<&str>,
        parent: Option<Option<&GroupId>>,
    ) -> StoreResult<GroupRecord> {
        self.tx(|tx| {
            let tree = group_tree(tx)?;
            if !tree.contains(id) {
                return Err(StoreError::NotFound(format!("no group {id}")));
            }
            if let Some(name) = name {
                tx.execute(
                    "UPDATE groups SET name = ?2 WHERE id = ?1",
                    params![id.as_str(), name],
                )
                .map_err(backend)?;
            }
            if let Some(parent) = parent {
                tree.check_parent(id, parent)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                tx.execute(
                    "UPDATE groups SET parent = ?2 WHERE id = ?1",
                    params![id.as_str(), parent.map(GroupId::as_str)],
                )
                .map_err(backend)?;
            }
            tx.query_row(
                "SELECT id, name, parent, created_at FROM groups WHERE id = ?1",
                [id.as_str()],
                group_row,
            )
            .map_err(backend)
        })
    }

    fn delete_group(&self, id: &GroupId) -> StoreResult<()> {
        self.tx(|tx| {
            let count = |sql: &str| -> StoreResult<i64> {
                tx.query_row(sql, [id.as_str()], |r| r.get(0))
                    .map_err(backend)
            };
            if count("SELECT COUNT(*) FROM groups WHERE id = ?1")? == 0 {
                return Err(StoreError::NotFound(format!("no group {id}")));
            }
            let children = count("SELECT COUNT(*) FROM groups WHERE parent = ?1")?;
            let devices = count("SELECT COUNT(*) FROM devices WHERE group_id = ?1")?;
            if children > 0 || devices > 0 {
                return Err(StoreError::Conflict(format!(
                    "group {id} still has {children} subgroup(s) and {devices} device(s)"
                )));
            }
            tx.execute("DELETE FROM groups WHERE id = ?1", [id.as_str()])
                .map_err(backend)?;
            tx.execute(
                "DELETE FROM config_layers WHERE scope = ?1",
                [ConfigScope::Group(id.clone()).to_string()],
            )
            .map_err(backend)?;
            tx.execute(
                "UPDATE enrollment_tokens SET group_id = NULL WHERE group_id = ?1",
                [id.as_str()],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn raise_alert(
        &self,
        a: &NewAlert,
        by: &str,
        now: Timestamp,
    ) -> StoreResult<(AlertRecord, bool)> {
        self.tx(|tx| {
            let active = tx
                .query_row(
                    &format!(
                        "SELECT {ALERT_COLS} FROM alerts WHERE dedup_key = ?1 AND state != 'cleared'"
                    ),
                    [&a.key],
                    alert_row,
                )
                .optional()
                .map_err(backend)?;
            if let Some(active) = active {
                return Ok((active, false));
            }
            tx.execute(
                "INSERT INTO alerts (device, code, severity, message, dedup_key, state, raised_at, raised_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'raised', ?6, ?7)",
                params![
                    a.device.as_ref().map(DeviceId::as_str),
                    a.code,
                    a.severity.to_string(),
                    a.message,
                    a.key,
                    now.as_millis(),
                    by
                ],
            )
            .map_err(backend)?;
            let id = tx.last_insert_rowid();
            let rec = tx
                .query_row(
                    &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                    [id],
                    alert_row,
                )
                .map_err(backend)?;
            Ok((rec, true))
        })
    }

    fn ack_alert(&self, id: i64, by: &str, now: Timestamp) -> StoreResult<AlertRecord> {
        self.tx(|tx| {
            let rec = tx
                .query_row(
                    &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                    [id],
                    alert_row,
                )
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("no alert {id}")))?;
            match rec.state {
                AlertState::Cleared => {
                    return Err(StoreError::Conflict(format!("alert {id} is cleared")));
                }
                AlertState::Acked => return Ok(rec),
                AlertState::Raised => {}
            }
            tx.execute(
                "UPDATE alerts SET state = 'acked', acked_at = ?2, acked_by = ?3 WHERE id = ?1",
                params![id, now.as_millis(), by],
            )
            .map_err(backend)?;
            tx.query_row(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                [id],
                alert_row,
            )
            .map_err(backend)
        })
    }

    fn clear_alert(&self, id: i64, by: &str, now: Timestamp) -> StoreResult<AlertRecord> {
        self.tx(|tx| {
            let rec = tx
                .query_row(
                    &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                    [id],
                    alert_row,
                )
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("no alert {id}")))?;
            if rec.state == AlertState::Cleared {
                return Ok(rec);
            }
            tx.execute(
                "UPDATE alerts SET state = 'cleared', cleared_at = ?2, cleared_by = ?3 WHERE id = ?1",
                params![id, now.as_millis(), by],
            )
            .map_err(backend)?;
            tx.query_row(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                [id],
                alert_row,
            )
            .map_err(backend)
        })
    }

    fn list_alerts(&self, f: &AlertFilter) -> StoreResult<Vec<AlertRecord>> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {ALERT_COLS} FROM alerts WHERE \
                 (?1 IS NULL OR state = ?1) AND (?2 = 0 OR state != 'cleared') AND \
                 (?3 IS NULL OR device = ?3) AND (?4 IS NULL OR severity = ?4) AND \
                 (?5 IS NULL OR id < ?5) ORDER BY id DESC LIMIT ?6"
            ))?;
            s.query_map(
                params![
                    f.state.map(AlertState::as_str),
                    f.active_only,
                    f.device.as_ref().map(DeviceId::as_str),
                    f.severity.map(|s| s.to_string()),
                    f.before,
                    f.limit as i64
                ],
                alert_row,
            )?
            .collect()
        })
    }

    fn append_audit(&self, e: &NewAudit) -> StoreResult<AuditEntry> {
        let result = json_text(&e.result)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (time, actor, action, target, verdict, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![e.time.as_millis(), e.actor, e.action, e.target, e.verdict, result],
            )?;
            Ok(AuditEntry {
                seq: c.last_insert_rowid(),
                time: e.time,
                actor: e.actor.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                verdict: e.verdict.clone(),
                result: e.result.clone(),
            })
        })
    }

    fn query_audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let (action_exact, action_prefix) = match &f.action {
            Some(a) if a.ends_with('.') => (None, Some(format!("{a}%"))),
            Some(a) => (Some(a.clone()), None),
            None => (None, None),
        };
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT seq, time, actor, action, target, verdict, result FROM audit WHERE \
                 (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR target = ?2) AND \
                 (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR action LIKE ?4) AND \
                 (?5 IS NULL OR time >= ?5) AND (?6 IS NULL OR time < ?6) AND \
                 (?7 IS NULL OR seq < ?7) ORDER BY seq DESC LIMIT ?8",
            )?;
            s.query_map(
                params![
                    f.actor,
                    f.target,
                    action_exact,
                    action_prefix,
                    f.since.map(Timestamp::as_millis),
                    f.until.map(Timestamp::as_millis),
                    f.before,
                    f.limit as i64
                ],
                audit_row,
            )?
            .collect()
        })
    }

    fn get_config_layer(&self, scope: &ConfigScope) -> StoreResult<Option<ConfigLayer>> {
        let key = scope.to_string();
        let row = self.with(|c| {
            c.query_row(
                "SELECT fields, updated_at, updated_by FROM config_layers WHERE scope = ?1",
                [&key],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
        })?;
        row.map(|(fields, at, by)| {
            Ok(ConfigLayer {
                scope: scope.clone(),
                fields: serde_json::from_str(&fields).map_err(backend)?,
                updated_at: ts(at),
                updated_by: by,
            })
        })
        .transpose()
    }

    fn put_config_layer(
        &self,
        scope: &ConfigScope,
        fields: &Map<String, Value>,
        by: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let key = scope.to_string();
        let text = json_text(fields)?;
        self.with(|c| {
            if fields.is_empty() {
                c.execute("DELETE FROM config_layers WHERE scope = ?1", [&key])?;
            } else {
                c.execute(
                    "INSERT INTO config_layers (scope, fields, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(scope) DO UPDATE SET fields = ?2, updated_at = ?3, updated_by = ?4",
                    params![key, text, now.as_millis(), by],
                )?;
            }
            Ok(())
        })
    }

    fn list_config_layers(&self) -> StoreResult<Vec<ConfigLayer>> {
        let rows = self.with(|c| {
            let mut s = c.prepare(
                "SELECT scope, fields, updated_at, updated_by FROM config_layers ORDER BY scope",
            )?;
            s.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(scope, fields, at, by)| {
                Ok(ConfigLayer {
                    scope: scope.parse().map_err(backend)?,
                    fields: serde_json::from_str(&fields).map_err(backend)?,
                    updated_at: ts(at),
                    updated_by: by,
                })
            })
            .collect()
    }

    fn size_bytes(&self) -> StoreResult<u64> {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.as_os_str().to_owned();
            p.push(suffix);
            if let Ok(m) = std::fs::metadata(PathBuf::from(p)) {
                total += m.len();
            }
        }
        Ok(total)
    }

    fn snapshot_into(&self, path: &Path) -> StoreResult<()> {
        let target = path.to_string_lossy().into_owned();
        self.with(|c| c.execute("VACUUM INTO ?1", [target]))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile_like::Dir, SqliteStore) {
        let dir = tempfile_like::Dir::new();
        let s = SqliteStore::open(&dir.0.join("fleet.db")).unwrap();
        (dir, s)
    }

    /// A small temporary directory helper (tempfile is a dev-dependency of the
    /// integration tests only through the `testing` feature).
    mod tempfile_like {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).unwrap();
                let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
                let p = std::env::temp_dir().join(format!("fleetd-store-{name}"));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn audit_is_append_only_at_the_sql_level() {
        let (_d, s) = store();
        s.append_audit(&NewAudit {
            time: Timestamp::from_secs(1),
            actor: "user:a".into(),
            action: "x".into(),
            target: "y".into(),
            verdict: "allowed".into(),
            result: Value::Null,
        })
        .unwrap();
        let err = s
            .with(|c| c.execute("UPDATE audit SET actor = 'evil'", []))
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = s.with(|c| c.execute("DELETE FROM audit", [])).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert_eq!(
            s.query_audit(&AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .len(),
            1
        );
    }

    #[test]
    fn the_last_admin_cannot_be_removed_even_without_the_api_check() {
        let (_d, s) = store();
        let t = Timestamp::from_secs(1);
        s.create_user("ann", Role::Admin, "h", t).unwrap();
        s.create_user("bob", Role::Admin, "h", t).unwrap();
        s.create_user("vic", Role::Viewer, "h", t).unwrap();
        // Two racing demotions both passed the API's check; the second fails here.
        s.update_user("ann", Some(Role::Operator), None).unwrap();
        let e = s.update_user("bob", Some(Role::Viewer), None).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        let e = s.delete_user("bob").unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        // Rolled back: bob is still there and still an admin.
        let users = s.list_users().unwrap();
        let bob = users.iter().find(|u| u.name == "bob").unwrap();
        assert_eq!(bob.role, Role::Admin);
        // Everyone else can still be changed and deleted.
        s.delete_user("vic").unwrap();
        s.update_user("ann", Some(Role::Admin), None).unwrap();
        s.update_user("bob", Some(Role::Viewer), None).unwrap();
        s.delete_user("bob").unwrap();
    }

    #[test]
    fn reopen_keeps_schema_version_and_data() {
        let d = tempfile_like::Dir::new();
        let p = d.0.join("fleet.db");
        {
            let s = SqliteStore::open(&p).unwrap();
            s.create_user("a", Role::Admin, "h", Timestamp::from_secs(1))
                .unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.user_count().unwrap(), 1);
        drop(s);
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = SqliteStore::open(&p).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn alerts_deduplicate_until_cleared() {
        let (_d, s) = store();
        let a = NewAlert {
            device: None,
            code: "fan_stall".into(),
            severity: Severity::Warning,
            message: "m".into(),
            key: "k".into(),
        };
        let (first, new) = s.raise_alert(&a, "u", Timestamp::from_secs(1)).unwrap();
        assert!(new);
        let (again, new) = s.raise_alert(&a, "u", Timestamp::from_secs(2)).unwrap();
        assert!(!new);
        assert_eq!(again.id, first.id);
        s.clear_alert(first.id, "u", Timestamp::from_secs(3))
            .unwrap();
        let (third, new) = s.raise_alert(&a, "u", Timestamp::from_secs(4)).unwrap();
        assert!(new && third.id != first.id);
    }
}
