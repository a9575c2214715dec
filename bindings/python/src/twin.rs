//! Device twins (`wrale_sync::Twin`) and sync sessions.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use serde_json::{Value, json};
use wrale_core::model::DeviceInfo;
use wrale_sync::{Author, ChangeHash, DesiredConfig, FieldPath, FieldValue, Section};

use crate::errors::{Failure, py_err};
use crate::{from_json, to_json, ts};

/// `user:ada`, `device:pi-1`, `local:bob`, `fleet:fleetd` (`Author`'s `FromStr`).
fn author(text: &str) -> PyResult<Author> {
    text.parse().map_err(py_err)
}

fn author_json(a: &Author) -> Value {
    json!({"kind": a.kind.as_str(), "name": a.name})
}

fn section(name: &str) -> PyResult<Section> {
    from_json("section", &Value::from(name).to_string())
}

fn field_path(path: &str) -> PyResult<FieldPath> {
    let (s, key) = path.split_once('.').ok_or_else(|| {
        PyErr::from(Failure::invalid_input(
            "invalid_argument",
            format!("field {path:?}: expected section.key (desired.warn_c)"),
        ))
    })?;
    Ok(FieldPath::new(section(s)?, key))
}

/// A device twin: `meta`, `desired` and `reported` in one CRDT document.
#[pyclass(module = "wrale._native", frozen)]
#[derive(Debug)]
pub struct Twin {
    inner: Mutex<wrale_sync::Twin>,
}

impl Twin {
    fn lock(&self) -> MutexGuard<'_, wrale_sync::Twin> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl Twin {
    /// A new twin for a device (JSON of `wrale_core::model::DeviceInfo`), written by `author`.
    #[new]
    #[pyo3(signature = (device_json, author, now_ms))]
    fn new(device_json: &str, author: &str, now_ms: i64) -> PyResult<Twin> {
        let info: DeviceInfo = from_json("device", device_json)?;
        let twin =
            wrale_sync::Twin::new(&info, self::author(author)?, ts(now_ms)).map_err(py_err)?;
        Ok(Twin {
            inner: Mutex::new(twin),
        })
    }

    /// A twin from bytes `save` produced, opened by `author`.
    #[staticmethod]
    fn load(data: &[u8], author: &str) -> PyResult<Twin> {
        let twin = wrale_sync::Twin::load(data, self::author(author)?).map_err(py_err)?;
        Ok(Twin {
            inner: Mutex::new(twin),
        })
    }

    /// The whole document as bytes.
    fn save(&self) -> Vec<u8> {
        self.lock().save()
    }

    /// The device id.
    #[getter]
    fn device(&self) -> String {
        self.lock().device().to_string()
    }

    /// The compaction epoch.
    #[getter]
    fn epoch(&self) -> u64 {
        self.lock().epoch()
    }

    /// The current version: change hashes (hex).
    fn heads(&self) -> Vec<String> {
        self.lock()
            .heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The `meta` section as JSON (`DeviceInfo`).
    fn meta_json(&self) -> PyResult<String> {
        to_json(&self.lock().meta().map_err(py_err)?)
    }

    /// The `desired` section as JSON (`DesiredConfig`).
    fn desired_json(&self) -> PyResult<String> {
        to_json(&self.lock().desired().map_err(py_err)?)
    }

    /// The `reported` section as JSON (`Reported`).
    fn reported_json(&self) -> PyResult<String> {
        to_json(&self.lock().reported().map_err(py_err)?)
    }

    /// The raw flat fields of a section (`meta`, `desired`, `reported`) as JSON.
    fn fields_json(&self, section: &str) -> PyResult<String> {
        let s = self::section(section)?;
        to_json(&self.lock().fields(s).map_err(py_err)?)
    }

    /// Edits `desired` with a JSON object of `DesiredConfig` fields (`null`
    /// removes one). Returns whether a change was made.
    fn edit_desired(&self, patch_json: &str, author: &str, now_ms: i64) -> PyResult<bool> {
        let patch: serde_json::Map<String, Value> = from_json("desired patch", patch_json)?;
        let author = self::author(author)?;
        let mut twin = self.lock();
        let current = twin.desired().map_err(py_err)?;
        let mut value = serde_json::to_value(&current).map_err(|e| {
            Failure::new(
                wrale_core::ErrorCategory::Internal,
                "internal",
                e.to_string(),
            )
        })?;
        if let Value::Object(map) = &mut value {
            for (k, v) in patch {
                map.insert(k, v);
            }
        }
        let next: DesiredConfig = serde_json::from_value(value)
            .map_err(|e| Failure::invalid_input("invalid_field", format!("desired config: {e}")))?;
        let changed = twin
            .edit_desired(move |d| *d = next, &author, ts(now_ms))
            .map_err(py_err)?;
        Ok(changed.is_some())
    }

    /// Sets (or with `None` deletes) one raw field, `section.key` (`desired.warn_c`).
    #[pyo3(signature = (path, value_json, author, now_ms))]
    fn set_field(
        &self,
        path: &str,
        value_json: Option<&str>,
        author: &str,
        now_ms: i64,
    ) -> PyResult<bool> {
        let path = field_path(path)?;
        let value: Option<FieldValue> = value_json
            .map(|t| from_json("field value", t))
            .transpose()?;
        let author = self::author(author)?;
        let changed = self
            .lock()
            .set_field(&path, value, &author, ts(now_ms))
            .map_err(py_err)?;
        Ok(changed.is_some())
    }

    /// Reports readings (`{"cpu_temp_c": 51.0}`) into `reported` as one change
    /// (readings inside their deadband are skipped). Returns whether a change was made.
    fn report(&self, readings_json: &str, now_ms: i64) -> PyResult<bool> {
        let readings: std::collections::BTreeMap<String, f64> =
            from_json("readings", readings_json)?;
        let mut update = wrale_sync::ReportedUpdate::default();
        for (k, v) in readings {
            update = update.reading(&k, v);
        }
        self.lock().report(&update, ts(now_ms)).map_err(py_err)
    }

    /// Merges another twin of the same device into this one.
    fn merge(&self, other: &Twin) -> PyResult<()> {
        if std::ptr::eq(self, other) {
            return Ok(());
        }
        // A copy of theirs (never both locks at once: no lock-order deadlock).
        let bytes = other.lock().save();
        let mut twin = self.lock();
        let mut theirs =
            wrale_sync::Twin::load(&bytes, twin.local_author().clone()).map_err(py_err)?;
        twin.merge(&mut theirs).map_err(py_err)
    }

    /// The change history as JSON: `[{hash, author: {kind, name}, at_ms, summary}]`.
    fn history_json(&self) -> PyResult<String> {
        let history = self.lock().history().map_err(py_err)?;
        let out: Vec<Value> = history
            .iter()
            .map(|v| {
                json!({
                    "hash": v.hash.to_string(),
                    "author": author_json(&v.author),
                    "at_ms": v.at.as_millis(),
                    "summary": v.summary,
                })
            })
            .collect();
        to_json(&out)
    }

    /// Returns to the state right after version `hashes` (a new change).
    fn rollback(&self, hashes: Vec<String>, author: &str, now_ms: i64) -> PyResult<bool> {
        let to = hashes
            .iter()
            .map(|h| {
                h.parse::<ChangeHash>().map_err(|e| {
                    PyErr::from(Failure::invalid_input(
                        "invalid_argument",
                        format!("version {h:?}: {e}"),
                    ))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let author = self::author(author)?;
        let changed = self
            .lock()
            .rollback(&to, &author, ts(now_ms))
            .map_err(py_err)?;
        Ok(changed.is_some())
    }

    /// Fields holding several concurrent values, as JSON:
    /// `[{field, policy, values: [{value, author}], visible}]`.
    fn conflicts_json(&self) -> PyResult<String> {
        let conflicts = self.lock().conflicts().map_err(py_err)?;
        let out: Vec<Value> = conflicts
            .iter()
            .map(|c| {
                json!({
                    "field": c.field.to_string(),
                    "policy": c.policy,
                    "values": c.values.iter().map(|(v, a)| json!({"value": v, "author": author_json(a)})).collect::<Vec<_>>(),
                    "visible": c.visible,
                })
            })
            .collect();
        to_json(&out)
    }

    /// Resolves a conflict on `section.key` with `value_json`.
    fn resolve(&self, path: &str, value_json: &str, author: &str, now_ms: i64) -> PyResult<String> {
        let path = field_path(path)?;
        let value: FieldValue = from_json("field value", value_json)?;
        let author = self::author(author)?;
        let hash = self
            .lock()
            .resolve(&path, value, &author, ts(now_ms))
            .map_err(py_err)?;
        Ok(hash.to_string())
    }

    fn __repr__(&self) -> String {
        format!("Twin(device={:?})", self.lock().device().to_string())
    }
}

/// One side of the sync protocol with one peer (sans I/O: frames in, frames out).
#[pyclass(module = "wrale._native", frozen)]
#[derive(Debug)]
pub struct SyncSession {
    inner: Mutex<wrale_sync::SyncSession>,
}

#[pymethods]
impl SyncSession {
    /// A session for `twin` with the peer named `peer`.
    #[new]
    fn new(twin: &Twin, peer: &str) -> SyncSession {
        SyncSession {
            inner: Mutex::new(wrale_sync::SyncSession::new(&twin.lock(), peer)),
        }
    }

    /// The next frame to send, or `None` when the peer is up to date.
    fn generate(&self, twin: &Twin) -> Option<Vec<u8>> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.generate(&mut twin.lock())
    }

    /// Applies a frame from the peer; returns whether the twin changed.
    fn receive(&self, twin: &Twin, frame: &[u8], now_ms: i64) -> PyResult<bool> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let r = s
            .receive(&mut twin.lock(), frame, ts(now_ms))
            .map_err(py_err)?;
        Ok(matches!(
            r,
            wrale_sync::Received::Applied { changed: true } | wrale_sync::Received::Adopted(_)
        ))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Twin>()?;
    m.add_class::<SyncSession>()
}
