//! Device twins (`wrale_sync::Twin`) and sync sessions. Sections cross as JSON
//! in the crate's serde shapes; authors as text (`user:ada`, `fleet:fleetd`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use wrale_core::model::DeviceInfo;
use wrale_sync::{Author, ChangeHash, DesiredConfig, FieldPath, FieldValue, Section};

use crate::{WraleError, from_json, from_name, to_json, ts};

fn author(text: &str) -> Result<Author, WraleError> {
    Ok(text.parse::<Author>()?)
}

/// `kind:name`, the form [`Author`]'s `FromStr` reads back.
fn author_text(a: &Author) -> String {
    format!("{}:{}", a.kind.as_str(), a.name)
}

fn field_path(path: &str) -> Result<FieldPath, WraleError> {
    let (s, key) = path.split_once('.').ok_or_else(|| {
        WraleError::invalid_argument(format!(
            "field {path:?}: expected section.key (desired.warn_c)"
        ))
    })?;
    Ok(FieldPath::new(from_name::<Section>("section", s)?, key))
}

/// One version in a twin's history.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TwinVersion {
    /// The change hash (hex).
    pub hash: String,
    /// Who wrote it (`user:ada`, `device:pi-1`, ...).
    pub author: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// What changed, in words.
    pub summary: String,
}

/// One of several concurrent values of a field.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ConflictValue {
    /// The value as JSON.
    pub value_json: String,
    /// Who wrote it.
    pub author: String,
}

/// A field holding several concurrent values.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TwinConflict {
    /// `section.key`.
    pub field: String,
    /// The merge policy that picked the visible value.
    pub policy: String,
    /// Every concurrent value.
    pub values: Vec<ConflictValue>,
    /// The value readers see, as JSON.
    pub visible_json: String,
}

/// A device twin: `meta`, `desired` and `reported` in one CRDT document.
#[derive(Debug, uniffi::Object)]
pub struct Twin {
    inner: Mutex<wrale_sync::Twin>,
}

impl Twin {
    fn lock(&self) -> MutexGuard<'_, wrale_sync::Twin> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[uniffi::export]
impl Twin {
    /// A new twin for a device (JSON `DeviceInfo`: `{"id", "model", "labels",
    /// "location"}`), written by `author` at `now_ms`.
    #[uniffi::constructor]
    pub fn new(device_json: String, author: String, now_ms: i64) -> Result<Arc<Twin>, WraleError> {
        let info: DeviceInfo = from_json("device", &device_json)?;
        let twin = wrale_sync::Twin::new(&info, self::author(&author)?, ts(now_ms))?;
        Ok(Arc::new(Twin {
            inner: Mutex::new(twin),
        }))
    }

    /// A twin from bytes `save` produced, opened by `author`.
    #[uniffi::constructor]
    pub fn load(data: Vec<u8>, author: String) -> Result<Arc<Twin>, WraleError> {
        let twin = wrale_sync::Twin::load(&data, self::author(&author)?)?;
        Ok(Arc::new(Twin {
            inner: Mutex::new(twin),
        }))
    }

    /// The whole document as bytes.
    pub fn save(&self) -> Vec<u8> {
        self.lock().save()
    }

    /// The device id.
    pub fn device(&self) -> String {
        self.lock().device().to_string()
    }

    /// The current version: change hashes (hex).
    pub fn heads(&self) -> Vec<String> {
        self.lock()
            .heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The `meta` section as JSON (`DeviceInfo`).
    pub fn meta_json(&self) -> Result<String, WraleError> {
        let meta = self.lock().meta()?;
        to_json(&meta)
    }

    /// The `desired` section as JSON (`DesiredConfig`).
    pub fn desired_json(&self) -> Result<String, WraleError> {
        let desired = self.lock().desired()?;
        to_json(&desired)
    }

    /// The `reported` section as JSON (`Reported`).
    pub fn reported_json(&self) -> Result<String, WraleError> {
        let reported = self.lock().reported()?;
        to_json(&reported)
    }

    /// Edits `desired` with a JSON object of `DesiredConfig` fields (`null`
    /// removes one). Returns whether a change was made.
    pub fn edit_desired(
        &self,
        patch_json: String,
        author: String,
        now_ms: i64,
    ) -> Result<bool, WraleError> {
        let patch: serde_json::Map<String, Value> = from_json("desired patch", &patch_json)?;
        let author = self::author(&author)?;
        let mut twin = self.lock();
        let mut value = serde_json::to_value(twin.desired()?)
            .map_err(|e| WraleError::internal(e.to_string()))?;
        if let Value::Object(map) = &mut value {
            map.extend(patch);
        }
        let next: DesiredConfig = serde_json::from_value(value).map_err(|e| {
            wrale_core::ErrorReport::invalid_input("invalid_field", format!("desired config: {e}"))
        })?;
        let changed = twin.edit_desired(move |d| *d = next, &author, ts(now_ms))?;
        Ok(changed.is_some())
    }

    /// Sets (or with `null` deletes) one raw field, `section.key`
    /// (`desired.warn_c`), the value as JSON.
    pub fn set_field(
        &self,
        path: String,
        value_json: Option<String>,
        author: String,
        now_ms: i64,
    ) -> Result<bool, WraleError> {
        let path = field_path(&path)?;
        let value: Option<FieldValue> = match value_json {
            None => None,
            Some(t) => Some(from_json("field value", &t)?),
        };
        let author = self::author(&author)?;
        let changed = self.lock().set_field(&path, value, &author, ts(now_ms))?;
        Ok(changed.is_some())
    }

    /// Reports readings (`{"cpu_temp_c": 51.0}`) into `reported` as one change
    /// (readings inside their deadband are skipped). Returns whether a change was made.
    pub fn report(
        &self,
        readings: std::collections::HashMap<String, f64>,
        now_ms: i64,
    ) -> Result<bool, WraleError> {
        let mut update = wrale_sync::ReportedUpdate::default();
        let mut keys: Vec<_> = readings.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in keys {
            update = update.reading(&k, v);
        }
        Ok(self.lock().report(&update, ts(now_ms))?)
    }

    /// Merges another twin of the same device into this one.
    pub fn merge(&self, other: Arc<Twin>) -> Result<(), WraleError> {
        if std::ptr::eq(self, Arc::as_ptr(&other)) {
            return Ok(());
        }
        // A copy of theirs (never both locks at once: no lock-order deadlock).
        let bytes = other.lock().save();
        let mut twin = self.lock();
        let mut theirs = wrale_sync::Twin::load(&bytes, twin.local_author().clone())?;
        Ok(twin.merge(&mut theirs)?)
    }

    /// The change history, oldest first.
    pub fn history(&self) -> Result<Vec<TwinVersion>, WraleError> {
        let history = self.lock().history()?;
        Ok(history
            .iter()
            .map(|v| TwinVersion {
                hash: v.hash.to_string(),
                author: author_text(&v.author),
                at_ms: v.at.as_millis(),
                summary: v.summary.clone(),
            })
            .collect())
    }

    /// Returns to the state right after version `hashes` (a new change).
    pub fn rollback(
        &self,
        hashes: Vec<String>,
        author: String,
        now_ms: i64,
    ) -> Result<bool, WraleError> {
        let to = hashes
            .iter()
            .map(|h| {
                h.parse::<ChangeHash>()
                    .map_err(|e| WraleError::invalid_argument(format!("version {h:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let author = self::author(&author)?;
        Ok(self.lock().rollback(&to, &author, ts(now_ms))?.is_some())
    }

    /// Fields holding several concurrent values.
    pub fn conflicts(&self) -> Result<Vec<TwinConflict>, WraleError> {
        let conflicts = self.lock().conflicts()?;
        conflicts
            .iter()
            .map(|c| {
                Ok(TwinConflict {
                    field: c.field.to_string(),
                    policy: crate::name_of(&c.policy),
                    values: c
                        .values
                        .iter()
                        .map(|(v, a)| {
                            Ok(ConflictValue {
                                value_json: to_json(v)?,
                                author: author_text(a),
                            })
                        })
                        .collect::<Result<_, WraleError>>()?,
                    visible_json: to_json(&c.visible)?,
                })
            })
            .collect()
    }

    /// Resolves a conflict on `section.key` with a value (JSON); returns the
    /// change hash.
    pub fn resolve(
        &self,
        path: String,
        value_json: String,
        author: String,
        now_ms: i64,
    ) -> Result<String, WraleError> {
        let path = field_path(&path)?;
        let value: FieldValue = from_json("field value", &value_json)?;
        let author = self::author(&author)?;
        Ok(self
            .lock()
            .resolve(&path, value, &author, ts(now_ms))?
            .to_string())
    }
}

/// One side of the sync protocol with one peer (sans I/O: frames in, frames out).
#[derive(Debug, uniffi::Object)]
pub struct SyncSession {
    inner: Mutex<wrale_sync::SyncSession>,
}

#[uniffi::export]
impl SyncSession {
    /// A session for `twin` with the peer named `peer`.
    #[uniffi::constructor]
    pub fn new(twin: Arc<Twin>, peer: String) -> Arc<SyncSession> {
        Arc::new(SyncSession {
            inner: Mutex::new(wrale_sync::SyncSession::new(&twin.lock(), &peer)),
        })
    }

    /// The next frame to send, or `null` when the peer is up to date.
    pub fn generate(&self, twin: Arc<Twin>) -> Option<Vec<u8>> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.generate(&mut twin.lock())
    }

    /// Applies a frame from the peer; returns whether the twin changed.
    pub fn receive(
        &self,
        twin: Arc<Twin>,
        frame: Vec<u8>,
        now_ms: i64,
    ) -> Result<bool, WraleError> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let r = s.receive(&mut twin.lock(), &frame, ts(now_ms))?;
        Ok(matches!(
            r,
            wrale_sync::Received::Applied { changed: true } | wrale_sync::Received::Adopted(_)
        ))
    }
}
