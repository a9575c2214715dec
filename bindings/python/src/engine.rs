//! The safety engine: a policy store (board floor plus TOML layers) and the
//! engine's state, evaluated and checked from Python.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use serde_json::json;
use wrale_core::board::BoardProfile;
use wrale_core::model::{Actor, Command, CommandRequest};
use wrale_core::policy::{PolicyStore, SafetyState};

use crate::board::{Sample, parse_model};
use crate::errors::py_err;
use crate::{from_json, to_json, ts};

#[derive(Debug)]
struct Inner {
    store: PolicyStore,
    state: SafetyState,
}

/// The safety/policy engine for one board model (`wrale_core::policy`).
#[pyclass(module = "wrale._native", frozen)]
#[derive(Debug)]
pub struct SafetyEngine {
    inner: Mutex<Inner>,
}

impl SafetyEngine {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn request(command_json: &str, actor_text: &str, reason: &str) -> PyResult<CommandRequest> {
    let command: Command = from_json("command", command_json)?;
    let actor: Actor = actor_text.parse().map_err(py_err)?;
    Ok(CommandRequest::new(actor, reason, command))
}

#[pymethods]
impl SafetyEngine {
    /// The engine for `model` (`pi4b`, `pi5`, ...) on the board's built-in floor.
    #[new]
    fn new(model: &str) -> PyResult<SafetyEngine> {
        let store = PolicyStore::new(&BoardProfile::builtin(parse_model(model)?));
        let state = SafetyState::new(&store.current());
        Ok(SafetyEngine {
            inner: Mutex::new(Inner { store, state }),
        })
    }

    /// Loads (or replaces) a policy layer from TOML text. A layer that does not
    /// parse, or loosens the floor, raises and leaves the previous policy in force.
    #[pyo3(signature = (text, source_name="<python>"))]
    fn load(&self, text: &str, source_name: &str) -> PyResult<()> {
        self.lock()
            .store
            .reload(text, source_name)
            .map(|_| ())
            .map_err(py_err)
    }

    /// Evaluates one sample (at `now_ms`, default the sample's time): updates the
    /// engine's state and returns the decision as JSON (`actions`, `alerts`, `transitions`).
    #[pyo3(signature = (sample, now_ms=None))]
    fn evaluate(&self, sample: &Sample, now_ms: Option<i64>) -> PyResult<String> {
        let now = now_ms.map(ts).unwrap_or(sample.inner.at);
        let mut inner = self.lock();
        let policy = inner.store.current();
        let decision = policy.evaluate(&mut inner.state, &sample.inner, now);
        drop(inner);
        to_json(&decision)
    }

    /// Checks a command (JSON of `wrale_core::model::Command`) without recording
    /// it; returns the verdict as JSON (`{"verdict": "allowed"}` or
    /// `{"verdict": "refused", "rule", "reason"}`).
    #[pyo3(signature = (command_json, actor="user:python", reason="", now_ms=0))]
    fn check(
        &self,
        command_json: &str,
        actor: &str,
        reason: &str,
        now_ms: i64,
    ) -> PyResult<String> {
        let req = request(command_json, actor, reason)?;
        let inner = self.lock();
        let verdict = inner.store.current().check(&inner.state, &req, ts(now_ms));
        drop(inner);
        to_json(&verdict)
    }

    /// Like `check`, and records an allowed command in the state (rate limits,
    /// fan overrides, profile).
    #[pyo3(signature = (command_json, actor="user:python", reason="", now_ms=0))]
    fn admit(
        &self,
        command_json: &str,
        actor: &str,
        reason: &str,
        now_ms: i64,
    ) -> PyResult<String> {
        let req = request(command_json, actor, reason)?;
        let mut inner = self.lock();
        let policy = inner.store.current();
        let verdict = policy.admit(&mut inner.state, &req, ts(now_ms));
        drop(inner);
        to_json(&verdict)
    }

    /// Like `admit`, but a refusal raises `PolicyViolation` (code
    /// `policy_violation`, the rule and reason in the message).
    #[pyo3(signature = (command_json, actor="user:python", reason="", now_ms=0))]
    fn require(&self, command_json: &str, actor: &str, reason: &str, now_ms: i64) -> PyResult<()> {
        let req = request(command_json, actor, reason)?;
        let mut inner = self.lock();
        let policy = inner.store.current();
        let verdict = policy.admit(&mut inner.state, &req, ts(now_ms));
        drop(inner);
        verdict.into_result().map_err(py_err)
    }

    /// The engine's state as JSON: thermal level, fan target and profile,
    /// throttling, GPIO lock, fail-safe, active alerts.
    fn state_json(&self) -> PyResult<String> {
        let inner = self.lock();
        let s = &inner.state;
        to_json(&json!({
            "thermal_level": s.thermal_level(),
            "fan_target_pct": s.fan_target().get(),
            "fan_profile": s.fan_profile(),
            "throttled": s.throttled(),
            "gpio_locked": s.gpio_locked(),
            "fail_safe": s.fail_safe(),
            "shutdown_issued": s.shutdown_issued(),
            "alerts": s.active_alerts(),
        }))
    }

    /// The thermal thresholds in force, JSON `{"warn_c", "throttle_c", "critical_c"}`.
    fn thresholds_json(&self) -> PyResult<String> {
        let policy = self.lock().store.current();
        let t = &policy.limits().thermal;
        to_json(&json!({
            "warn_c": t.warn_c.get(),
            "throttle_c": t.throttle_c.get(),
            "critical_c": t.critical_c.get(),
        }))
    }

    /// Forgets every latch, alert and override (a fresh state for the policy in force).
    fn reset(&self) {
        let mut inner = self.lock();
        inner.state = SafetyState::new(&inner.store.current());
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SafetyEngine>()
}
