//! Device twins (`wrale_sync::Twin`) and sync sessions.

use std::sync::{Mutex, MutexGuard, PoisonError};

use napi::Env;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use serde_json::{Value, json};
use wrale_core::model::DeviceInfo;
use wrale_sync::{Author, ChangeHash, DesiredConfig, FieldPath, FieldValue, Section};

use crate::errors::{Failure, OrThrow};
use crate::{from_name, from_value, to_value, ts};

/// `user:ada`, `device:pi-1`, `local:bob`, `fleet:fleetd` (`Author`'s `FromStr`).
pub(crate) fn author(text: &str) -> Result<Author, Failure> {
    Ok(text.parse::<Author>()?)
}

fn author_json(a: &Author) -> Value {
    json!({"kind": a.kind.as_str(), "name": a.name})
}

fn field_path(path: &str) -> Result<FieldPath, Failure> {
    let (s, key) = path.split_once('.').ok_or_else(|| {
        Failure::invalid_input(
            "invalid_argument",
            format!("field {path:?}: expected section.key (desired.warn_c)"),
        )
    })?;
    Ok(FieldPath::new(from_name::<Section>("section", s)?, key))
}

/// A device twin: `meta`, `desired` and `reported` in one CRDT document.
#[napi]
#[derive(Debug)]
pub struct Twin {
    inner: Mutex<wrale_sync::Twin>,
}

impl Twin {
    fn lock(&self) -> MutexGuard<'_, wrale_sync::Twin> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[napi]
impl Twin {
    /// A new twin for a device (`wrale_core::model::DeviceInfo`: `{id, model,
    /// labels, location}`), written by `author` at `nowMs`.
    #[napi(constructor)]
    pub fn new(env: Env, device: Value, author: String, now_ms: f64) -> napi::Result<Twin> {
        let r = (|| -> Result<Twin, Failure> {
            let info: DeviceInfo = from_value("device", device)?;
            let twin = wrale_sync::Twin::new(&info, self::author(&author)?, ts(now_ms))?;
            Ok(Twin {
                inner: Mutex::new(twin),
            })
        })();
        r.or_throw(&env)
    }

    /// A twin from bytes `save` produced, opened by `author`.
    #[napi(factory)]
    pub fn load(env: Env, data: Buffer, author: String) -> napi::Result<Twin> {
        let r = (|| -> Result<Twin, Failure> {
            let twin = wrale_sync::Twin::load(&data, self::author(&author)?)?;
            Ok(Twin {
                inner: Mutex::new(twin),
            })
        })();
        r.or_throw(&env)
    }

    /// The whole document as bytes.
    #[napi]
    pub fn save(&self) -> Buffer {
        self.lock().save().into()
    }

    /// The device id.
    #[napi(getter)]
    pub fn device(&self) -> String {
        self.lock().device().to_string()
    }

    /// The compaction epoch.
    #[napi(getter)]
    pub fn epoch(&self) -> i64 {
        i64::try_from(self.lock().epoch()).unwrap_or(i64::MAX)
    }

    /// The current version: change hashes (hex).
    #[napi]
    pub fn heads(&self) -> Vec<String> {
        self.lock()
            .heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The `meta` section (`DeviceInfo`).
    #[napi]
    pub fn meta(&self, env: Env) -> napi::Result<Value> {
        let r = self.lock().meta().map_err(Failure::from);
        r.and_then(|v| to_value(&v)).or_throw(&env)
    }

    /// The `desired` section (`DesiredConfig`).
    #[napi]
    pub fn desired(&self, env: Env) -> napi::Result<Value> {
        let r = self.lock().desired().map_err(Failure::from);
        r.and_then(|v| to_value(&v)).or_throw(&env)
    }

    /// The `reported` section (`Reported`).
    #[napi]
    pub fn reported(&self, env: Env) -> napi::Result<Value> {
        let r = self.lock().reported().map_err(Failure::from);
        r.and_then(|v| to_value(&v)).or_throw(&env)
    }

    /// The raw flat fields of a section (`meta`, `desired`, `reported`).
    #[napi]
    pub fn fields(&self, env: Env, section: String) -> napi::Result<Value> {
        let r = (|| -> Result<Value, Failure> {
            let s: Section = from_name("section", &section)?;
            to_value(&self.lock().fields(s)?)
        })();
        r.or_throw(&env)
    }

    /// Edits `desired` with an object of `DesiredConfig` fields (`null` removes
    /// one). Returns whether a change was made.
    #[napi]
    pub fn edit_desired(
        &self,
        env: Env,
        patch: serde_json::Map<String, Value>,
        author: String,
        now_ms: f64,
    ) -> napi::Result<bool> {
        let r = (|| -> Result<bool, Failure> {
            let author = self::author(&author)?;
            let mut twin = self.lock();
            let mut value = to_value(&twin.desired()?)?;
            if let Value::Object(map) = &mut value {
                map.extend(patch);
            }
            let next: DesiredConfig = serde_json::from_value(value).map_err(|e| {
                Failure::invalid_input("invalid_field", format!("desired config: {e}"))
            })?;
            let changed = twin.edit_desired(move |d| *d = next, &author, ts(now_ms))?;
            Ok(changed.is_some())
        })();
        r.or_throw(&env)
    }

    /// Sets (or with `null` deletes) one raw field, `section.key` (`desired.warn_c`).
    #[napi]
    pub fn set_field(
        &self,
        env: Env,
        path: String,
        value: Value,
        author: String,
        now_ms: f64,
    ) -> napi::Result<bool> {
        let r = (|| -> Result<bool, Failure> {
            let path = field_path(&path)?;
            let value: Option<FieldValue> = match value {
                Value::Null => None,
                v => Some(from_value("field value", v)?),
            };
            let author = self::author(&author)?;
            let changed = self.lock().set_field(&path, value, &author, ts(now_ms))?;
            Ok(changed.is_some())
        })();
        r.or_throw(&env)
    }

    /// Reports readings (`{cpu_temp_c: 51.0}`) into `reported` as one change
    /// (readings inside their deadband are skipped). Returns whether a change was made.
    #[napi]
    pub fn report(
        &self,
        env: Env,
        readings: std::collections::HashMap<String, f64>,
        now_ms: f64,
    ) -> napi::Result<bool> {
        let mut update = wrale_sync::ReportedUpdate::default();
        let mut keys: Vec<_> = readings.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in keys {
            update = update.reading(&k, v);
        }
        self.lock().report(&update, ts(now_ms)).or_throw(&env)
    }

    /// Merges another twin of the same device into this one.
    #[napi]
    pub fn merge(&self, env: Env, other: &Twin) -> napi::Result<()> {
        if std::ptr::eq(self, other) {
            return Ok(());
        }
        // A copy of theirs (never both locks at once: no lock-order deadlock).
        let bytes = other.lock().save();
        let mut twin = self.lock();
        let r = wrale_sync::Twin::load(&bytes, twin.local_author().clone())
            .and_then(|mut theirs| twin.merge(&mut theirs));
        r.or_throw(&env)
    }

    /// The change history: `[{hash, author: {kind, name}, at_ms, summary}]`.
    #[napi]
    pub fn history(&self, env: Env) -> napi::Result<Vec<Value>> {
        let history = self.lock().history().or_throw(&env)?;
        Ok(history
            .iter()
            .map(|v| {
                json!({
                    "hash": v.hash.to_string(),
                    "author": author_json(&v.author),
                    "at_ms": v.at.as_millis(),
                    "summary": v.summary,
                })
            })
            .collect())
    }

    /// Returns to the state right after version `hashes` (a new change).
    #[napi]
    pub fn rollback(
        &self,
        env: Env,
        hashes: Vec<String>,
        author: String,
        now_ms: f64,
    ) -> napi::Result<bool> {
        let r = (|| -> Result<bool, Failure> {
            let to = hashes
                .iter()
                .map(|h| {
                    h.parse::<ChangeHash>().map_err(|e| {
                        Failure::invalid_input("invalid_argument", format!("version {h:?}: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let author = self::author(&author)?;
            Ok(self.lock().rollback(&to, &author, ts(now_ms))?.is_some())
        })();
        r.or_throw(&env)
    }

    /// Fields holding several concurrent values:
    /// `[{field, policy, values: [{value, author}], visible}]`.
    #[napi]
    pub fn conflicts(&self, env: Env) -> napi::Result<Vec<Value>> {
        let conflicts = self.lock().conflicts().or_throw(&env)?;
        Ok(conflicts
            .iter()
            .map(|c| {
                json!({
                    "field": c.field.to_string(),
                    "policy": c.policy,
                    "values": c.values.iter().map(|(v, a)| json!({"value": v, "author": author_json(a)})).collect::<Vec<_>>(),
                    "visible": c.visible,
                })
            })
            .collect())
    }

    /// Resolves a conflict on `section.key` with `value`; returns the change hash.
    #[napi]
    pub fn resolve(
        &self,
        env: Env,
        path: String,
        value: Value,
        author: String,
        now_ms: f64,
    ) -> napi::Result<String> {
        let r = (|| -> Result<String, Failure> {
            let path = field_path(&path)?;
            let value: FieldValue = from_value("field value", value)?;
            let author = self::author(&author)?;
            Ok(self
                .lock()
                .resolve(&path, value, &author, ts(now_ms))?
                .to_string())
        })();
        r.or_throw(&env)
    }
}

/// One side of the sync protocol with one peer (sans I/O: frames in, frames out).
#[napi]
#[derive(Debug)]
pub struct SyncSession {
    inner: Mutex<wrale_sync::SyncSession>,
}

#[napi]
impl SyncSession {
    /// A session for `twin` with the peer named `peer`.
    #[napi(constructor)]
    pub fn new(twin: &Twin, peer: String) -> SyncSession {
        SyncSession {
            inner: Mutex::new(wrale_sync::SyncSession::new(&twin.lock(), &peer)),
        }
    }

    /// The next frame to send, or `null` when the peer is up to date.
    #[napi]
    pub fn generate(&self, twin: &Twin) -> Option<Buffer> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.generate(&mut twin.lock()).map(Buffer::from)
    }

    /// Applies a frame from the peer; returns whether the twin changed.
    #[napi]
    pub fn receive(&self, env: Env, twin: &Twin, frame: Buffer, now_ms: f64) -> napi::Result<bool> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let r = s
            .receive(&mut twin.lock(), &frame, ts(now_ms))
            .or_throw(&env)?;
        Ok(matches!(
            r,
            wrale_sync::Received::Applied { changed: true } | wrale_sync::Received::Adopted(_)
        ))
    }
}
