//! The safety engine: a policy store (the board's floor plus TOML layers) and
//! the engine's state.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wrale_core::board::BoardProfile;
use wrale_core::model::{Actor, Command, CommandRequest};
use wrale_core::policy::{PolicyStore, SafetyState, ThermalLevel};
use wrale_core::{ErrorCategory, ErrorReport};

use crate::board::parse_model;
use crate::types::Alert;
use crate::{Decision, Sample, Verdict, WraleError, from_json, name_of, ts};

#[derive(Debug)]
struct Inner {
    store: PolicyStore,
    state: SafetyState,
}

/// Who asks for a command and why.
#[derive(Debug, Clone, uniffi::Record)]
pub struct CheckOptions {
    /// `user:ada` (or `ada`), `device:pi-1`, `local:bob`, `fleet`.
    #[uniffi(default = "user:kotlin")]
    pub actor: String,
    /// Why the command is sent (recorded in refusals and audit).
    #[uniffi(default = "")]
    pub reason: String,
    /// When, ms since the Unix epoch (rate limits).
    #[uniffi(default = 0)]
    pub now_ms: i64,
}

fn request(command_json: &str, o: &CheckOptions) -> Result<CommandRequest, WraleError> {
    let command: Command = from_json("command", command_json)?;
    let who: Actor = o.actor.parse()?;
    Ok(CommandRequest::new(who, o.reason.clone(), command))
}

/// The thermal thresholds of a policy, °C.
#[derive(Debug, Clone, Copy, PartialEq, uniffi::Record)]
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

/// The engine's state (`wrale_core::policy::SafetyState`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SafetyStatus {
    /// The thermal level.
    pub thermal_level: ThermalLevel,
    /// The fan duty the engine wants, %.
    pub fan_target_pct: f64,
    /// The fan profile in force (`quiet`, `balance`, `cool`, `max`).
    pub fan_profile: String,
    /// Whether workloads are throttled.
    pub throttled: bool,
    /// Whether GPIO outputs are locked.
    pub gpio_locked: bool,
    /// Whether the engine runs fail-safe (untrusted temperature).
    pub fail_safe: bool,
    /// Whether an emergency shutdown was issued.
    pub shutdown_issued: bool,
    /// Active alerts.
    pub alerts: Vec<Alert>,
}

/// The safety/policy engine for one board model (`wrale_core::policy`).
#[derive(Debug, uniffi::Object)]
pub struct SafetyEngine {
    inner: Mutex<Inner>,
}

impl SafetyEngine {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[uniffi::export]
impl SafetyEngine {
    /// The engine for `model` (`pi4b`, `pi5`, ...) on the board's built-in
    /// floor, with an optional policy layer (TOML text) on top.
    #[uniffi::constructor(default(policy = None))]
    pub fn new(model: String, policy: Option<String>) -> Result<Arc<SafetyEngine>, WraleError> {
        let profile = BoardProfile::builtin(parse_model(&model)?);
        let mut store = PolicyStore::new(&profile);
        if let Some(text) = &policy {
            store.reload(text, "<kotlin>")?;
        }
        let state = SafetyState::new(&store.current());
        Ok(Arc::new(SafetyEngine {
            inner: Mutex::new(Inner { store, state }),
        }))
    }

    /// Loads (or replaces) a policy layer from TOML text. A layer that does not
    /// parse, or loosens the floor, throws and leaves the policy in force.
    #[uniffi::method(default(source_name = "<kotlin>"))]
    pub fn load(&self, text: String, source_name: String) -> Result<(), WraleError> {
        self.lock().store.reload(&text, &source_name)?;
        Ok(())
    }

    /// Loads (or replaces) a policy layer from a TOML file.
    pub fn load_file(&self, path: String) -> Result<(), WraleError> {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let category = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorCategory::NotFound
            } else {
                ErrorCategory::InvalidInput
            };
            ErrorReport::new(category, "io", format!("policy file {path}: {e}"))
        })?;
        self.load(text, path)
    }

    /// Evaluates one sample (at `now_ms`, default the sample's time): updates
    /// the engine's state and returns the decision.
    #[uniffi::method(default(now_ms = None))]
    pub fn evaluate(&self, sample: Sample, now_ms: Option<i64>) -> Result<Decision, WraleError> {
        let sample = wrale_core::Sample::try_from(sample)?;
        let now = now_ms.map(ts).unwrap_or(sample.at);
        let mut inner = self.lock();
        let policy = inner.store.current();
        Ok(policy.evaluate(&mut inner.state, &sample, now).into())
    }

    /// Checks a command (JSON, `wrale_core::model::Command`:
    /// `{"type": "set_fan_duty", "fan": "fan0", "duty_pct": 50}`) without
    /// recording it.
    pub fn check(
        &self,
        command_json: String,
        options: CheckOptions,
    ) -> Result<Verdict, WraleError> {
        let req = request(&command_json, &options)?;
        let inner = self.lock();
        Ok(inner
            .store
            .current()
            .check(&inner.state, &req, ts(options.now_ms))
            .into())
    }

    /// Like `check`, and records an allowed command in the state (rate limits,
    /// fan overrides, profile).
    pub fn admit(
        &self,
        command_json: String,
        options: CheckOptions,
    ) -> Result<Verdict, WraleError> {
        let req = request(&command_json, &options)?;
        let mut inner = self.lock();
        let policy = inner.store.current();
        Ok(policy
            .admit(&mut inner.state, &req, ts(options.now_ms))
            .into())
    }

    /// Like `admit`, but a refusal throws `WraleException.PolicyViolation`
    /// (code `policy_violation`).
    pub fn require(&self, command_json: String, options: CheckOptions) -> Result<(), WraleError> {
        let req = request(&command_json, &options)?;
        let mut inner = self.lock();
        let policy = inner.store.current();
        let verdict = policy.admit(&mut inner.state, &req, ts(options.now_ms));
        Ok(verdict.into_result()?)
    }

    /// The engine's state.
    pub fn status(&self) -> SafetyStatus {
        let inner = self.lock();
        let s = &inner.state;
        SafetyStatus {
            thermal_level: s.thermal_level(),
            fan_target_pct: s.fan_target().get(),
            fan_profile: name_of(&s.fan_profile()),
            throttled: s.throttled(),
            gpio_locked: s.gpio_locked(),
            fail_safe: s.fail_safe(),
            shutdown_issued: s.shutdown_issued(),
            alerts: s.active_alerts().iter().cloned().map(Alert::from).collect(),
        }
    }

    /// The thermal thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds::of(&self.lock().store.current())
    }

    /// Forgets every latch, alert and override.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.state = SafetyState::new(&inner.store.current());
    }
}
