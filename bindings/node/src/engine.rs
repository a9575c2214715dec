//! The safety engine: a policy store (board floor plus TOML layers) and the
//! engine's state, evaluated and checked from JS.

use std::sync::{Mutex, MutexGuard, PoisonError};

use napi::Env;
use napi_derive::napi;
use serde_json::{Value, json};
use wrale_core::board::BoardProfile;
use wrale_core::model::{Actor, Command, CommandRequest};
use wrale_core::policy::{PolicyStore, SafetyState};

use crate::board::{Sample, parse_model};
use crate::errors::{Failure, OrThrow};
use crate::{from_value, to_value, ts};

#[derive(Debug)]
struct Inner {
    store: PolicyStore,
    state: SafetyState,
}

/// Who asks and why, for `check`, `admit` and `require`.
#[napi(object)]
#[derive(Debug, Default)]
pub struct CheckOptions {
    /// `user:ada` (or `ada`), `device:pi-1`, `local:bob`, `fleet`; default `user:node`.
    pub actor: Option<String>,
    /// Why the command is sent (recorded in refusals and audit).
    pub reason: Option<String>,
    /// When, ms since the Unix epoch (rate limits); default 0.
    pub now_ms: Option<f64>,
}

fn request(command: Value, o: Option<CheckOptions>) -> Result<(CommandRequest, f64), Failure> {
    let o = o.unwrap_or_default();
    let command: Command = from_value("command", command)?;
    let who: Actor = o.actor.as_deref().unwrap_or("user:node").parse()?;
    Ok((
        CommandRequest::new(who, o.reason.unwrap_or_default(), command),
        o.now_ms.unwrap_or(0.0),
    ))
}

fn read_policy_file(path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        let message = format!("policy file {path}: {e}");
        if e.kind() == std::io::ErrorKind::NotFound {
            Failure::new(wrale_core::ErrorCategory::NotFound, "not_found", message)
        } else {
            Failure::invalid_input("invalid_argument", message)
        }
    })
}

/// The safety/policy engine for one board model (`wrale_core::policy`).
#[napi]
#[derive(Debug)]
pub struct SafetyEngine {
    inner: Mutex<Inner>,
}

impl SafetyEngine {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[napi]
impl SafetyEngine {
    /// The engine for `model` (`pi4b`, `pi5`, ...) on the board's built-in
    /// floor, with an optional policy layer (TOML text) on top.
    #[napi(constructor)]
    pub fn new(env: Env, model: String, policy: Option<String>) -> napi::Result<SafetyEngine> {
        let profile = BoardProfile::builtin(parse_model(&model).or_throw(&env)?);
        let mut store = PolicyStore::new(&profile);
        if let Some(text) = &policy {
            store.reload(text, "<node>").or_throw(&env)?;
        }
        let state = SafetyState::new(&store.current());
        Ok(SafetyEngine {
            inner: Mutex::new(Inner { store, state }),
        })
    }

    /// The engine for `model` with the policy layer in the TOML file at `path`
    /// (errors name the file, and the line for a TOML error).
    #[napi(factory)]
    pub fn from_file(env: Env, model: String, path: String) -> napi::Result<SafetyEngine> {
        let engine = SafetyEngine::new(env, model, None)?;
        engine.load_file(env, path)?;
        Ok(engine)
    }

    /// Loads (or replaces) the policy layer in the TOML file at `path`, like `load`.
    #[napi]
    pub fn load_file(&self, env: Env, path: String) -> napi::Result<()> {
        let text = read_policy_file(&path).or_throw(&env)?;
        self.load(env, text, Some(path))
    }

    /// Loads (or replaces) a policy layer from TOML text. A layer that does not
    /// parse, or loosens the floor, throws and leaves the previous policy in force.
    #[napi]
    pub fn load(&self, env: Env, text: String, source_name: Option<String>) -> napi::Result<()> {
        let source = source_name.as_deref().unwrap_or("<node>");
        self.lock()
            .store
            .reload(&text, source)
            .map(|_| ())
            .or_throw(&env)
    }

    /// Evaluates one sample (at `nowMs`, default the sample's time): updates the
    /// engine's state and returns the decision (`actions`, `alerts`, `transitions`).
    #[napi]
    pub fn evaluate(&self, env: Env, sample: &Sample, now_ms: Option<f64>) -> napi::Result<Value> {
        let now = now_ms.map(ts).unwrap_or(sample.inner.at);
        let mut inner = self.lock();
        let policy = inner.store.current();
        let decision = policy.evaluate(&mut inner.state, &sample.inner, now);
        drop(inner);
        to_value(&decision).or_throw(&env)
    }

    /// Checks a command (`wrale_core::model::Command`: `{type: "set_fan_duty",
    /// fan: "fan0", duty_pct: 50}`) without recording it; returns the verdict
    /// (`{verdict: "allowed"}` or `{verdict: "refused", rule, reason}`).
    #[napi]
    pub fn check(
        &self,
        env: Env,
        command: Value,
        options: Option<CheckOptions>,
    ) -> napi::Result<Value> {
        let (req, now) = request(command, options).or_throw(&env)?;
        let inner = self.lock();
        let verdict = inner.store.current().check(&inner.state, &req, ts(now));
        drop(inner);
        to_value(&verdict).or_throw(&env)
    }

    /// Like `check`, and records an allowed command in the state (rate limits,
    /// fan overrides, profile).
    #[napi]
    pub fn admit(
        &self,
        env: Env,
        command: Value,
        options: Option<CheckOptions>,
    ) -> napi::Result<Value> {
        let (req, now) = request(command, options).or_throw(&env)?;
        let mut inner = self.lock();
        let policy = inner.store.current();
        let verdict = policy.admit(&mut inner.state, &req, ts(now));
        drop(inner);
        to_value(&verdict).or_throw(&env)
    }

    /// Like `admit`, but a refusal throws a `PolicyViolation` (code
    /// `policy_violation`, the rule and reason in the message).
    #[napi]
    pub fn require(
        &self,
        env: Env,
        command: Value,
        options: Option<CheckOptions>,
    ) -> napi::Result<()> {
        let (req, now) = request(command, options).or_throw(&env)?;
        let mut inner = self.lock();
        let policy = inner.store.current();
        let verdict = policy.admit(&mut inner.state, &req, ts(now));
        drop(inner);
        verdict.into_result().or_throw(&env)
    }

    /// The engine's state: thermal level, fan target and profile, throttling,
    /// GPIO lock, fail-safe, active alerts.
    #[napi]
    pub fn state(&self, env: Env) -> napi::Result<Value> {
        let inner = self.lock();
        let s = &inner.state;
        to_value(&json!({
            "thermal_level": s.thermal_level(),
            "fan_target_pct": s.fan_target().get(),
            "fan_profile": s.fan_profile(),
            "throttled": s.throttled(),
            "gpio_locked": s.gpio_locked(),
            "fail_safe": s.fail_safe(),
            "shutdown_issued": s.shutdown_issued(),
            "alerts": s.active_alerts(),
        }))
        .or_throw(&env)
    }

    /// The thermal thresholds in force: `{warn_c, throttle_c, critical_c}`.
    #[napi]
    pub fn thresholds(&self) -> Thresholds {
        Thresholds::of(&self.lock().store.current())
    }

    /// Forgets every latch, alert and override (a fresh state for the policy in force).
    #[napi]
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.state = SafetyState::new(&inner.store.current());
    }
}

/// The thermal thresholds of a policy, °C.
#[napi(object)]
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Warning level.
    pub warn_c: f64,
    /// Throttling starts.
    pub throttle_c: f64,
    /// Critical: fail-safe.
    pub critical_c: f64,
}

impl Thresholds {
    pub(crate) fn of(policy: &wrale_core::policy::PolicySet) -> Thresholds {
        let t = &policy.limits().thermal;
        Thresholds {
            warn_c: t.warn_c.get(),
            throttle_c: t.throttle_c.get(),
            critical_c: t.critical_c.get(),
        }
    }
}
