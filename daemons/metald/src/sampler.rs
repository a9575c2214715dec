//! The sampling loop: a dedicated thread that owns every write to the hardware.
//!
//! It samples the board at the configured interval, runs each sample and each
//! hardware event through the [`SafetyHook`] and applies the returned actions at
//! once, validates and applies commands (sent by the API through
//! [`CommandSender`]), and publishes readings, events and actions to the shared
//! state and the live stream. On stop, and whenever the hook panics, the outputs go
//! to their fail-safe state; on stop that happens before the board is dropped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Serialize;
use tokio::sync::oneshot;
use wrale_core::RuleId;
use wrale_core::audit::{AuditOutcome, AuditRecord, AuditVerdict};
use wrale_core::board::BoardProfile;
use wrale_core::model::{Actor, CommandKind, CommandRequest, HalErrorKind};
use wrale_core::units::{Hertz, Percent};
use wrale_hal::gpio::{DropState, OutputPin, PwmPin};
use wrale_hal::{Board, HalError, HalEvent};

use crate::error::ApiError;
use crate::persist::Persist;
use crate::safety::{Action, Alert, Command, Context, SafetyHook, Severity, Validation, Verdict};
use crate::state::{AppState, StreamItem};
use crate::workloads::{WorkloadError, Workloads};

/// Powers the device off for an emergency shutdown.
pub trait PowerOff: Send + 'static {
    /// Powers off (or starts to). Returns what went wrong, if anything.
    fn power_off(&mut self, reason: &str) -> Result<(), String>;

    /// Whether [`reboot`](Self::reboot) is supported (the `reboot` command is
    /// refused as unsupported before anything is touched otherwise).
    fn can_reboot(&self) -> bool {
        false
    }

    /// Reboots the device (a `reboot` command). The default refuses.
    fn reboot(&mut self, reason: &str) -> Result<(), String> {
        let _ = reason;
        Err("reboot is not supported on this device".into())
    }

    /// Whether metald keeps running through [`reboot`](Self::reboot) (a simulated
    /// board reboots in place). The sampling loop then starts the configured
    /// workloads again, as a restarted metald would on a real board.
    fn reboots_in_place(&self) -> bool {
        false
    }
}

fn run_program(command: &[String]) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("no command configured".into());
    };
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} failed: {status}"))
    }
}

/// Runs the configured shutdown command (`systemctl poweroff` by default) and,
/// for a `reboot` command, the reboot command (`systemctl reboot`).
#[derive(Debug, Clone)]
pub struct CommandPowerOff {
    command: Vec<String>,
    reboot: Vec<String>,
}

impl CommandPowerOff {
    /// `command[0]` is the program, the rest its arguments.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            reboot: vec!["systemctl".into(), "reboot".into()],
        }
    }

    /// Reboots with this program and arguments.
    pub fn with_reboot(mut self, reboot: Vec<String>) -> Self {
        self.reboot = reboot;
        self
    }
}

impl PowerOff for CommandPowerOff {
    fn power_off(&mut self, reason: &str) -> Result<(), String> {
        tracing::error!(command = ?self.command, "shutdown: {reason}");
        run_program(&self.command)
    }

    fn can_reboot(&self) -> bool {
        true
    }

    fn reboot(&mut self, reason: &str) -> Result<(), String> {
        tracing::warn!(command = ?self.reboot, "reboot: {reason}");
        run_program(&self.reboot)
    }
}

/// What an executed command did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandOutcome {
    /// The command (its fields flattened: `"type": "set_fan_duty", "fan": ...`).
    #[serde(flatten)]
    pub command: Command,
    /// Always `applied`.
    pub result: &'static str,
    /// What the command produced, when it has something to say (a diagnostics
    /// report, a workload's state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// What an applied command did (the name the fan routes use).
pub type Applied = CommandOutcome;

/// Why a command was not executed, or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// The safety engine refused it: it would break `rule`.
    #[error("refused by {rule}: {reason}")]
    Refused {
        /// The rule (`gpio.reserved_pin`, `thermal.fan_below_curve`, `interlock:x`).
        rule: String,
        /// Why, for a human.
        reason: String,
    },
    /// metald is in safe mode and the command would drive an output.
    #[error("safe mode: {reason}")]
    SafeMode {
        /// Why metald is in safe mode.
        reason: String,
    },
    /// The command names something this device does not have (fan, workload).
    #[error("{0}")]
    NotFound(String),
    /// This device cannot do that (no battery, no power switch).
    #[error("{0}")]
    Unsupported(String),
    /// The hardware refused the command's arguments (a PWM frequency out of range,
    /// a pin without hardware PWM).
    #[error("{0}")]
    Invalid(String),
    /// The hardware failed while applying it.
    #[error("hardware error ({kind}): {message}")]
    Hardware {
        /// The portable HAL error kind.
        kind: HalErrorKind,
        /// The HAL's message.
        message: String,
    },
    /// It was allowed but failed (a reboot or shutdown command that did not run).
    #[error("{0}")]
    Failed(String),
    /// The sampling loop or the engine is not answering.
    #[error("{0}")]
    Unavailable(String),
}

impl CommandError {
    /// The stable code (`policy_violation`, `safe_mode`, `not_found`,
    /// `unsupported`, `hardware_error`, `command_failed`, `unavailable`).
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Refused { .. } => "policy_violation",
            CommandError::SafeMode { .. } => "safe_mode",
            CommandError::NotFound(_) => "not_found",
            CommandError::Unsupported(_) => "unsupported",
            CommandError::Invalid(_) => "invalid_argument",
            CommandError::Hardware { .. } => "hardware_error",
            CommandError::Failed(_) => "command_failed",
            CommandError::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the command was refused before anything was touched (as opposed to
    /// failing while it ran).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            CommandError::Refused { .. }
                | CommandError::SafeMode { .. }
                | CommandError::NotFound(_)
                | CommandError::Unsupported(_)
                | CommandError::Invalid(_)
        )
    }

    /// The refusing rule, for a policy refusal (`safe_mode` in safe mode).
    pub fn rule(&self) -> Option<&str> {
        match self {
            CommandError::Refused { rule, .. } => Some(rule),
            CommandError::SafeMode { .. } => Some("safe_mode"),
            _ => None,
        }
    }

    fn hal(e: &HalError) -> Self {
        match e.kind() {
            HalErrorKind::Unsupported | HalErrorKind::InvalidArgument => {
                CommandError::Invalid(e.to_string())
            }
            kind => CommandError::Hardware {
                kind,
                message: e.to_string(),
            },
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        match e {
            CommandError::Refused { rule, reason } => ApiError::policy_violation(&rule, reason),
            CommandError::SafeMode { reason } => {
                ApiError::new(StatusCode::CONFLICT, "safe_mode", message)
                    .with_detail("reason", reason)
            }
            CommandError::NotFound(m) => ApiError::not_found(m),
            CommandError::Unsupported(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported", m)
            }
            CommandError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument", m)
            }
            CommandError::Hardware { kind, .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "hardware_error", message)
                    .with_detail("kind", kind.code())
            }
            CommandError::Failed(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "command_failed", m)
            }
            CommandError::Unavailable(m) => ApiError::unavailable(m),
        }
    }
}

/// Whether a command would drive an output (refused in safe mode). Reads,
/// diagnostics, throttling, reboot and shutdown are not.
pub fn drives_outputs(kind: CommandKind) -> bool {
    matches!(
        kind,
        CommandKind::SetGpio
            | CommandKind::SetPwm
            | CommandKind::SetFanDuty
            | CommandKind::SetFanProfile
            | CommandKind::SelectPowerSource
            | CommandKind::EnableCharging
            | CommandKind::StartWorkload
            | CommandKind::ResumeWorkload
    )
}

/// A request to leave (or enter) a mode by command: `POST /api/v1/mode`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeRequest {
    /// Who asks.
    pub actor: Actor,
    /// Why.
    pub reason: String,
    /// Leave safe mode although the fault is still present (admin only; safe mode
    /// is then not re-entered for this fault until it clears).
    pub force: bool,
}

type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

enum Msg {
    Execute {
        request: CommandRequest,
        reply: Reply<CommandOutcome>,
    },
    Validate {
        request: CommandRequest,
        reply: Reply<Validation>,
    },
    Confirm {
        token: u64,
        actor: Actor,
        expect: Option<Command>,
        reply: Reply<CommandOutcome>,
    },
    LeaveSafeMode {
        request: ModeRequest,
        reply: Reply<crate::state::Modes>,
    },
    SetPolicy {
        policy: Box<wrale_core::policy::PolicySet>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Diagnostics {
        options: wrale_hal::diag::DiagOptions,
        actor: String,
        reply: oneshot::Sender<wrale_hal::diag::DiagReport>,
    },
    Hal(HalEvent),
    Stop,
}

/// Sends commands to the sampling loop: the one path every command takes, from
/// the local API or from the fleet. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandSender {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Execute { request, .. } => f.debug_tuple("Execute").field(request).finish(),
            Msg::Validate { request, .. } => f.debug_tuple("Validate").field(request).finish(),
            Msg::Confirm { token, .. } => f.debug_tuple("Confirm").field(token).finish(),
            Msg::LeaveSafeMode { request, .. } => {
                f.debug_tuple("LeaveSafeMode").field(request).finish()
            }
            Msg::SetPolicy { .. } => f.write_str("SetPolicy"),
            Msg::Diagnostics { options, .. } => {
                f.debug_tuple("Diagnostics").field(options).finish()
            }
            Msg::Hal(e) => f.debug_tuple("Hal").field(e).finish(),
            Msg::Stop => f.write_str("Stop"),
        }
    }
}

fn local(command: Command, actor: &str) -> CommandRequest {
    CommandRequest::new(Actor::LocalOperator(actor.to_owned()), "local API", command)
}

impl CommandSender {
    /// Sends one request to the sampling loop and waits for its reply; `make`
    /// builds the message around the reply channel.
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Msg,
    ) -> Result<T, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| CommandError::Unavailable("the sampling loop is not running".into()))?;
        rx.await
            .map_err(|_| CommandError::Unavailable("the sampling loop stopped".into()))
    }

    /// Executes a command: checks that the device has what it names, refuses it in
    /// safe mode if it would drive an output, has the safety engine admit it
    /// (refusal: [`CommandError::Refused`] with the rule), applies it through the
    /// HAL and records it in the audit log (refusals too). Whoever sent it.
    pub async fn execute(&self, request: CommandRequest) -> Result<CommandOutcome, CommandError> {
        self.call(|reply| Msg::Execute { request, reply }).await?
    }

    /// Phase one of a two-phase command: the same checks as
    /// [`execute`](Self::execute), then a token to confirm with; nothing is applied.
    pub async fn validate_request(
        &self,
        request: CommandRequest,
    ) -> Result<Validation, CommandError> {
        self.call(|reply| Msg::Validate { request, reply }).await?
    }

    /// Phase two: applies the command validated under `token` if the engine still
    /// allows it (and, with `expect`, only if it is that command). Single use.
    pub async fn confirm_request(
        &self,
        token: u64,
        actor: Actor,
        expect: Option<Command>,
    ) -> Result<CommandOutcome, CommandError> {
        self.call(|reply| Msg::Confirm {
            token,
            actor,
            expect,
            reply,
        })
        .await?
    }

    /// Leaves safe mode by command. Refused with [`CommandError::Refused`]
    /// (`safe_mode.fault_present`) while the fault is present, unless `force`.
    pub async fn leave_safe_mode(
        &self,
        request: ModeRequest,
    ) -> Result<crate::state::Modes, CommandError> {
        self.call(|reply| Msg::LeaveSafeMode { request, reply })
            .await?
    }

    /// Puts a new assembled policy in force in the safety engine (its state carries
    /// over), then the engine decides on a fresh sample at once.
    pub async fn set_policy(&self, policy: wrale_core::policy::PolicySet) -> Result<(), ApiError> {
        self.call(|reply| Msg::SetPolicy {
            policy: Box::new(policy),
            reply,
        })
        .await?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", e))
    }

    /// [`execute`](Self::execute) for a local operator named `actor`.
    pub async fn send(&self, command: Command, actor: &str) -> Result<Applied, ApiError> {
        Ok(self.execute(local(command, actor)).await?)
    }

    /// [`validate_request`](Self::validate_request) for a local operator.
    pub async fn validate(&self, command: Command, actor: &str) -> Result<Validation, ApiError> {
        Ok(self.validate_request(local(command, actor)).await?)
    }

    /// [`confirm_request`](Self::confirm_request) for a local operator.
    pub async fn confirm(&self, token: u64, actor: &str) -> Result<Applied, ApiError> {
        Ok(self
            .confirm_request(token, Actor::LocalOperator(actor.to_owned()), None)
            .await?)
    }

    /// Runs the hardware diagnostics on the sampling thread (sampling pauses
    /// meanwhile; on `sim` the checks run on virtual time and return at once).
    pub async fn diagnostics(
        &self,
        options: wrale_hal::diag::DiagOptions,
        actor: &str,
    ) -> Result<wrale_hal::diag::DiagReport, ApiError> {
        let actor = actor.to_owned();
        Ok(self
            .call(|reply| Msg::Diagnostics {
                options,
                actor,
                reply,
            })
            .await?)
    }
}

/// The running sampling loop.
#[derive(Debug)]
pub struct Sampler {
    tx: mpsc::Sender<Msg>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sampler {
    /// Starts the loop and the hardware-event forwarder on their own threads.
    #[allow(
        clippy::too_many_arguments,
        reason = "each seam is replaceable on its own; only the daemon calls this"
    )]
    pub fn start(
        board: Board,
        profile: BoardProfile,
        hook: Box<dyn SafetyHook>,
        state: AppState,
        workloads: Workloads,
        power_off: Box<dyn PowerOff>,
        step: Option<Box<dyn FnMut(Duration) + Send>>,
        persist: Option<Persist>,
    ) -> std::io::Result<Sampler> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let events = board.events().subscribe(256);
        let forward_tx = tx.clone();
        let forward_stop = stop.clone();
        let forwarder = std::thread::Builder::new()
            .name("metald-events".into())
            .spawn(move || {
                while !forward_stop.load(Ordering::Acquire) {
                    match events.recv_timeout(Duration::from_millis(200)) {
                        Ok(ev) => {
                            if forward_tx.send(Msg::Hal(ev)).is_err() {
                                break;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        let runtime = tokio::runtime::Handle::current();
        state.set_sampler_alive(true);
        let mut lp = Loop {
            board,
            profile,
            hook,
            state: state.clone(),
            workloads,
            power_off,
            step,
            runtime,
            engine_failed: false,
            shutting_down: false,
            persist,
            outputs: BTreeMap::new(),
            pwms: BTreeMap::new(),
            safe: SafeTracker::default(),
        };
        let sampler = std::thread::Builder::new()
            .name("metald-sampler".into())
            .spawn(move || lp.run(rx));
        let sampler = match sampler {
            Ok(t) => t,
            Err(e) => {
                state.set_sampler_alive(false);
                stop.store(true, Ordering::Release);
                return Err(e);
            }
        };
        Ok(Sampler {
            tx,
            stop,
            threads: vec![sampler, forwarder],
        })
    }

    /// A handle to send commands.
    pub fn commands(&self) -> CommandSender {
        CommandSender {
            tx: self.tx.clone(),
        }
    }

    /// Stops the loop (outputs to fail-safe, then the board is dropped) and waits
    /// for the threads. Blocking: call it from `spawn_blocking`.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _gone = self.tx.send(Msg::Stop);
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a sampling thread panicked");
            }
        }
    }
}

struct Loop {
    board: Board,
    profile: BoardProfile,
    hook: Box<dyn SafetyHook>,
    state: AppState,
    workloads: Workloads,
    power_off: Box<dyn PowerOff>,
    /// Advances a simulated board's virtual clock before each sample.
    step: Option<Box<dyn FnMut(Duration) + Send>>,
    runtime: tokio::runtime::Handle,
    engine_failed: bool,
    shutting_down: bool,
    /// The twin, the telemetry ring and the audit log, when persisted.
    persist: Option<Persist>,
    /// GPIO outputs driven by commands, claimed on first use.
    outputs: BTreeMap<u8, Box<dyn OutputPin>>,
    /// PWM outputs driven by commands, claimed on first use.
    pwms: BTreeMap<u8, Box<dyn PwmPin>>,
    /// Safe mode bookkeeping.
    safe: SafeTracker,
}

/// What the sampling loop knows about safe mode between ticks.
#[derive(Debug, Default)]
struct SafeTracker {
    /// Failed hardware writes in a row.
    hal_errors: u32,
    /// Since when (board clock) no fault is present, while in safe mode.
    clear_since: Option<wrale_core::Timestamp>,
    /// A fault an admin forced safe mode off for: not re-entered until it clears.
    overridden: Option<String>,
}

const SAFE_ALERT: &str = "safe_mode";

/// PWM carrier used when a command claims a PWM pin without a frequency.
const DEFAULT_PWM_HZ: f64 = 1000.0;

const ENGINE_ALERT: &str = "safety_engine_failed";

impl Loop {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        tracing::info!(
            backend = self.board.backend(),
            engine = self.hook.name(),
            "sampling loop started"
        );
        let mut next = Instant::now();
        loop {
            let timeout = next.saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Execute { request, reply }) => {
                    let result = self.execute(request);
                    let _caller_gone = reply.send(result);
                }
                Ok(Msg::Validate { request, reply }) => {
                    let _caller_gone = reply.send(self.validate(request));
                }
                Ok(Msg::Confirm {
                    token,
                    actor,
                    expect,
                    reply,
                }) => {
                    let _caller_gone = reply.send(self.confirm(token, actor, expect));
                }
                Ok(Msg::LeaveSafeMode { request, reply }) => {
                    let _caller_gone = reply.send(self.leave_safe_mode(request));
                }
                Ok(Msg::SetPolicy { policy, reply }) => {
                    let hook = &mut self.hook;
                    let r = catch_unwind(AssertUnwindSafe(|| hook.set_policy(*policy)))
                        .unwrap_or_else(|_| Err("the safety engine panicked".into()));
                    if r.is_ok() {
                        // Decide on a fresh sample under the new policy at once.
                        self.tick(false);
                    }
                    let _caller_gone = reply.send(r);
                }
                Ok(Msg::Diagnostics {
                    options,
                    actor,
                    reply,
                }) => {
                    let report = self.diagnostics(&options, &actor);
                    let _caller_gone = reply.send(report);
                }
                Ok(Msg::Hal(event)) => {
                    let resample = !matches!(event, HalEvent::Edge { .. });
                    self.event(event);
                    if resample {
                        // Security inputs and power reach the engine through samples.
                        self.tick(false);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.tick(true);
                    let interval = self.state.config().sampling.interval;
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        // Fell behind (a slow sensor): skip the missed ticks.
                        next = now + interval;
                    }
                }
            }
        }
        let safe = self.fail_safe_actions();
        self.apply(safe);
        self.release_outputs();
        self.state.set_sampler_alive(false);
        tracing::info!("sampling loop stopped; outputs in their fail-safe state");
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            profile: &self.profile,
            now: self.board.now(),
        }
    }

    /// Takes a sample and applies the engine's answer. `scheduled` ticks advance a
    /// simulated board's virtual clock by one interval first.
    fn tick(&mut self, scheduled: bool) {
        if let (true, Some(step)) = (scheduled, &mut self.step) {
            step(self.state.config().sampling.interval);
        }
        let t0 = Instant::now();
        let sample = self.board.sample();
        let latency = t0.elapsed();
        let ctx = Context {
            profile: &self.profile,
            now: sample.at,
        };
        let hook = &mut self.hook;
        let decided = catch_unwind(AssertUnwindSafe(|| hook.on_sample(&sample, &ctx)));
        let mut actions = self.engine_answer(decided);
        self.safe_mode_step(&mut actions, sample.at);
        self.state
            .metrics()
            .hal_events_dropped
            .store(self.board.events().dropped(), Ordering::Relaxed);
        self.state.publish_sample(sample, latency);
        self.apply(actions);
        self.state.metrics().observe_sample_to_action(t0.elapsed());
        if let (Some(p), Some(latest)) = (&self.persist, self.state.latest()) {
            let alerts = self.state.alerts().into_iter().map(|a| (a.id, a.message));
            // The boot identity (two small procfs reads; on `sim` it changes when
            // the simulated board reboots) lets the fleet see reboots.
            let boot = self.board.boot().ok();
            // The engine's own throttling (workloads / CPU limit), for the
            // fleet's rollout gates: `engine_throttled`, `engine_throttle_count`.
            let engine_throttled = self.workloads.throttled();
            p.on_sample(&latest.sample, alerts, boot, engine_throttled);
        }
    }

    /// Records a command and its verdict and outcome in the audit log.
    fn audit(&self, req: &CommandRequest, verdict: &Verdict, outcome: AuditOutcome) {
        let Some(p) = &self.persist else {
            return;
        };
        let verdict = match verdict {
            Verdict::Allowed => AuditVerdict::Allowed,
            Verdict::Refused { rule, reason } => AuditVerdict::Refused {
                rule: RuleId::new(rule.clone()),
                reason: reason.clone(),
            },
        };
        p.record(AuditRecord {
            seq: 0,
            at: self.board.now(),
            actor: req.actor.clone(),
            reason: if req.reason.is_empty() {
                "local API".into()
            } else {
                req.reason.clone()
            },
            command: req.command.clone(),
            verdict,
            outcome,
        });
    }

    /// Records a refusal (engine or safe mode) in the audit log.
    fn audit_refusal(&self, req: &CommandRequest, e: &CommandError) {
        if let Some(rule) = e.rule() {
            let reason = match e {
                CommandError::Refused { reason, .. } | CommandError::SafeMode { reason } => {
                    reason.clone()
                }
                other => other.to_string(),
            };
            let verdict = Verdict::Refused {
                rule: rule.to_owned(),
                reason,
            };
            self.audit(req, &verdict, AuditOutcome::NotExecuted);
        }
    }

    /// Applies an allowed command and audits the outcome.
    fn apply_audited(&mut self, req: CommandRequest) -> Result<CommandOutcome, CommandError> {
        let result = self.apply_command(&req);
        let outcome = match &result {
            Ok(_) => AuditOutcome::Applied,
            Err(e) => AuditOutcome::Failed(e.to_string()),
        };
        self.audit(&req, &Verdict::Allowed, outcome);
        result
    }

    fn event(&mut self, event: HalEvent) {
        self.state.publish(StreamItem::Hal(event.clone()));
        let ctx = Context {
            profile: &self.profile,
            now: event.at(),
        };
        let hook = &mut self.hook;
        let decided = catch_unwind(AssertUnwindSafe(|| hook.on_event(&event, &ctx)));
        let actions = self.engine_answer(decided);
        self.apply(actions);
    }

    /// The hook's actions, or the fail-safe state if it panicked.
    fn engine_answer(&mut self, decided: std::thread::Result<Vec<Action>>) -> Vec<Action> {
        match decided {
            Ok(actions) => {
                if std::mem::take(&mut self.engine_failed) {
                    self.state.clear_alert(ENGINE_ALERT);
                }
                actions
            }
            Err(_) => {
                self.state
                    .metrics()
                    .engine_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("safety engine panicked; outputs to their fail-safe state");
                let mut actions = self.fail_safe_actions();
                if !self.engine_failed {
                    self.engine_failed = true;
                    actions.push(Action::RaiseAlert(Alert {
                        id: ENGINE_ALERT.into(),
                        severity: Severity::Critical,
                        message:
                            "the safety engine stopped answering; outputs in their fail-safe state"
                                .into(),
                        since: self.board.now(),
                    }));
                }
                actions
            }
        }
    }

    /// The hook's fail-safe state; every fan at the profile's safe duty if the hook
    /// cannot even answer that.
    fn fail_safe_actions(&self) -> Vec<Action> {
        let ctx = self.ctx();
        let hook = &self.hook;
        catch_unwind(AssertUnwindSafe(|| hook.fail_safe(&ctx))).unwrap_or_else(|_| {
            vec![Action::SetFanDuty {
                fan: None,
                duty: self.profile.fan.safe_duty_pct,
                reason: "fail-safe".into(),
            }]
        })
    }

    /// Checks that the device has what the command names, and that safe mode does
    /// not hold the outputs it would drive. Nothing is recorded.
    fn precheck(&self, req: &CommandRequest) -> Result<(), CommandError> {
        let unsupported = |m: &str| Err(CommandError::Unsupported(m.to_owned()));
        match &req.command {
            Command::SetFanDuty { fan, .. } => {
                self.board
                    .fan(fan)
                    .map_err(|e| CommandError::NotFound(e.to_string()))?;
            }
            Command::SetGpio { .. } | Command::SetPwm { .. } => {
                self.board.gpio().map_err(|e| CommandError::hal(&e))?;
            }
            Command::SelectPowerSource { .. } if self.board.supply().is_none() => {
                return unsupported("this board has no power-source switch");
            }
            Command::EnableCharging { .. } if self.board.battery().is_none() => {
                return unsupported("this board has no battery");
            }
            Command::Reboot if !self.power_off.can_reboot() => {
                return unsupported("this device cannot be rebooted by metald");
            }
            Command::StartWorkload { workload }
            | Command::ThrottleWorkload { workload }
            | Command::ResumeWorkload { workload }
                if !self.workloads.contains(workload) =>
            {
                return Err(CommandError::NotFound(format!(
                    "workload {workload:?} not found"
                )));
            }
            Command::ApplyConfig { .. } => {
                return unsupported(
                    "apply_config is not a local command: desired config arrives through the twin",
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The engine's rule first (without recording anything), then safe mode.
    fn guard(&self, req: &CommandRequest) -> Result<(), CommandError> {
        self.precheck(req)?;
        let latest = self.state.latest();
        let ctx = Context {
            profile: &self.profile,
            now: self.board.now(),
        };
        let hook = &self.hook;
        let peek = catch_unwind(AssertUnwindSafe(|| {
            hook.peek_request(req, latest.as_ref().map(|l| &*l.sample), &ctx)
        }))
        .map_err(|_| CommandError::Unavailable("the safety engine is not answering".into()))?;
        if let Verdict::Refused { rule, reason } = peek {
            return Err(CommandError::Refused { rule, reason });
        }
        self.safe_mode_gate(req)
    }

    /// Refuses a command that would drive an output while in safe mode (raising a
    /// fan to its fail-safe duty or faster is allowed: that is what safe mode does).
    fn safe_mode_gate(&self, req: &CommandRequest) -> Result<(), CommandError> {
        if let Command::SetFanDuty { fan, duty } = &req.command {
            let floor = self.fail_safe_actions().into_iter().find_map(|a| match a {
                Action::SetFanDuty {
                    fan: f, duty: d, ..
                } if f.is_none() || f.as_deref() == Some(fan.as_str()) => Some(d),
                _ => None,
            });
            if floor.is_some_and(|f| *duty >= f) {
                return Ok(());
            }
        }
        if drives_outputs(req.command.kind())
            && let Some(reason) = self.state.modes().safe
        {
            return Err(CommandError::SafeMode {
                reason: format!(
                    "{} would drive an output and metald is in safe mode: {reason}",
                    req.command.kind()
                ),
            });
        }
        Ok(())
    }

    /// The one command path: precheck, the engine's admission, the HAL, the audit log.
    fn execute(&mut self, req: CommandRequest) -> Result<CommandOutcome, CommandError> {
        if let Err(e) = self.guard(&req) {
            tracing::warn!(command = ?req.command, actor = %req.actor, "command refused: {e}");
            self.audit_refusal(&req, &e);
            return Err(e);
        }
        let latest = self.state.latest();
        let ctx = Context {
            profile: &self.profile,
            now: self.board.now(),
        };
        let hook = &mut self.hook;
        let verdict = catch_unwind(AssertUnwindSafe(|| {
            hook.check_request(&req, latest.as_ref().map(|l| &*l.sample), &ctx)
        }))
        .map_err(|_| CommandError::Unavailable("the safety engine is not answering".into()))?;
        if let Verdict::Refused { rule, reason } = &verdict {
            tracing::warn!(command = ?req.command, actor = %req.actor, %rule, "command refused: {reason}");
            self.audit(&req, &verdict, AuditOutcome::NotExecuted);
            return Err(CommandError::Refused {
                rule: rule.clone(),
                reason: reason.clone(),
            });
        }
        self.apply_audited(req)
    }

    fn validate(&mut self, req: CommandRequest) -> Result<Validation, CommandError> {
        if let Err(e) = self.guard(&req) {
            self.audit_refusal(&req, &e);
            return Err(e);
        }
        let latest = self.state.latest();
        let ctx = Context {
            profile: &self.profile,
            now: self.board.now(),
        };
        let hook = &mut self.hook;
        let v = catch_unwind(AssertUnwindSafe(|| {
            hook.validate_request(&req, latest.as_ref().map(|l| &*l.sample), &ctx)
        }))
        .map_err(|_| CommandError::Unavailable("the safety engine is not answering".into()))?;
        if let Verdict::Refused { rule, reason } = &v.verdict {
            self.audit(&req, &v.verdict, AuditOutcome::NotExecuted);
            return Err(CommandError::Refused {
                rule: rule.clone(),
                reason: reason.clone(),
            });
        }
        self.audit(&req, &v.verdict, AuditOutcome::AwaitingConfirmation);
        Ok(v)
    }

    fn confirm(
        &mut self,
        token: u64,
        actor: Actor,
        expect: Option<Command>,
    ) -> Result<CommandOutcome, CommandError> {
        let ctx = Context {
            profile: &self.profile,
            now: self.board.now(),
        };
        let hook = &mut self.hook;
        let decided = catch_unwind(AssertUnwindSafe(|| hook.confirm_request(token, &ctx)))
            .map_err(|_| CommandError::Unavailable("the safety engine is not answering".into()))?;
        let mut req = match decided {
            Ok(req) => req,
            Err(Verdict::Refused { rule, reason }) => {
                return Err(CommandError::Refused { rule, reason });
            }
            Err(Verdict::Allowed) => {
                return Err(CommandError::Unavailable(
                    "the engine confirmed without a command".into(),
                ));
            }
        };
        if let Some(expect) = expect
            && expect != req.command
        {
            let e = CommandError::Refused {
                rule: "confirm.mismatch".into(),
                reason: format!(
                    "token {token} was issued for {}, not for this {}; the token is spent",
                    req.command.kind(),
                    expect.kind()
                ),
            };
            self.audit_refusal(&req, &e);
            return Err(e);
        }
        if let Err(e) = self.precheck(&req).and_then(|()| self.safe_mode_gate(&req)) {
            self.audit_refusal(&req, &e);
            return Err(e);
        }
        req.actor = actor;
        self.apply_audited(req)
    }

    /// The hardware fault present now, if any: the engine's fail-safe (an
    /// untrusted sensor), an engine that stopped answering, or failing writes.
    fn fault(&self) -> Option<String> {
        if self.engine_failed {
            return Some("the safety engine stopped answering".into());
        }
        let hook = &self.hook;
        let engine = catch_unwind(AssertUnwindSafe(|| hook.fault()))
            .unwrap_or_else(|_| Some("the safety engine stopped answering".into()));
        let limit = self.state.config().safe_mode.hal_error_limit;
        engine.or_else(|| {
            (limit > 0 && self.safe.hal_errors >= limit)
                .then(|| format!("{} hardware writes failed in a row", self.safe.hal_errors))
        })
    }

    /// Enters safe mode when a fault appears and leaves it once the fault has been
    /// gone for `safe_mode.hold` (board clock). While in safe mode the engine's
    /// fan actions give way to the fail-safe state.
    fn safe_mode_step(&mut self, actions: &mut Vec<Action>, now: wrale_core::Timestamp) {
        let fault = self.fault();
        if fault.is_none() {
            self.safe.overridden = None;
        }
        let fault = fault.filter(|_| self.safe.overridden.is_none());
        let current = self.state.modes().safe;
        match (fault, current) {
            (Some(reason), None) => {
                tracing::error!("entering safe mode: {reason}");
                self.state.set_safe(Some(reason.clone()));
                self.safe.clear_since = None;
                self.release_outputs();
                actions.push(Action::RaiseAlert(Alert {
                    id: SAFE_ALERT.into(),
                    severity: Severity::Critical,
                    message: format!("safe mode: {reason}; outputs held at their fail-safe state"),
                    since: now,
                }));
            }
            (Some(reason), Some(old)) => {
                self.safe.clear_since = None;
                if reason != old {
                    self.state.set_safe(Some(reason));
                }
            }
            (None, Some(_)) => {
                let since = *self.safe.clear_since.get_or_insert(now);
                let hold = self.state.config().safe_mode.hold;
                if now.saturating_since(since) >= hold {
                    self.leave_safe("the fault has been gone for the hold time");
                    return;
                }
            }
            (None, None) => {}
        }
        if self.state.modes().safe.is_some() {
            actions.retain(|a| !matches!(a, Action::SetFanDuty { .. }));
            let pending: Vec<Action> = self
                .fail_safe_actions()
                .into_iter()
                .filter(|a| !self.already_applied(a))
                .collect();
            actions.extend(pending);
        }
    }

    /// Whether a fail-safe fan action is already met: every fan it names runs at
    /// its duty or faster (a command may raise a fan in safe mode).
    fn already_applied(&self, action: &Action) -> bool {
        let Action::SetFanDuty { fan, duty, .. } = action else {
            return false;
        };
        let at = |f: &std::sync::Arc<dyn wrale_hal::thermal::Fan>| {
            f.duty().ok().is_some_and(|d| d >= *duty)
        };
        match fan {
            Some(id) => self.board.fan(id).is_ok_and(at),
            None => self.board.fans().iter().all(at),
        }
    }

    fn leave_safe(&mut self, why: &str) {
        if self.state.set_safe(None).is_some() {
            tracing::warn!("leaving safe mode: {why}");
            self.safe.clear_since = None;
            self.state.clear_alert(SAFE_ALERT);
        }
    }

    /// `POST /api/v1/mode {"mode": "normal"}`: leaves safe mode at once if the
    /// fault is gone; refused while it is present, unless forced.
    fn leave_safe_mode(&mut self, req: ModeRequest) -> Result<crate::state::Modes, CommandError> {
        if self.state.modes().safe.is_none() {
            return Ok(self.state.modes());
        }
        if let Some(fault) = self.fault() {
            if !req.force {
                return Err(CommandError::Refused {
                    rule: "safe_mode.fault_present".into(),
                    reason: format!(
                        "the fault is still present ({fault}); an admin may force it with \"force\": true"
                    ),
                });
            }
            tracing::warn!(actor = %req.actor, "safe mode forced off while the fault is present: {fault}");
            self.safe.overridden = Some(fault);
        }
        self.safe.hal_errors = 0;
        self.leave_safe(&format!("by {}: {}", req.actor, req.reason));
        // The engine decides on a fresh sample at once.
        self.tick(false);
        Ok(self.state.modes())
    }

    /// Runs diagnostics, then lets the engine decide on a fresh sample at once, so
    /// whatever the checks changed (fan duty, load) is put right.
    fn diagnostics(
        &mut self,
        options: &wrale_hal::diag::DiagOptions,
        actor: &str,
    ) -> wrale_hal::diag::DiagReport {
        tracing::info!(%actor, checks = ?options.checks, "diagnostics started");
        let hb = self.state.heartbeat();
        hb.set_busy(true);
        let report = wrale_hal::diag::run(&self.board, options);
        self.state.heartbeat().set_busy(false);
        tracing::info!(status = ?report.status, "diagnostics finished");
        self.tick(false);
        report
    }

    /// Applies an allowed command through the HAL.
    fn apply_command(&mut self, req: &CommandRequest) -> Result<CommandOutcome, CommandError> {
        let hal = |e: HalError| CommandError::hal(&e);
        let mut detail = None;
        match &req.command {
            Command::SetGpio { pin, level } => match self.outputs.get_mut(pin) {
                Some(out) => out.write(*level).map_err(hal)?,
                None => {
                    let gpio = self.board.gpio().map_err(|e| CommandError::hal(&e))?;
                    let out = gpio
                        .claim_output(*pin, *level, DropState::Low)
                        .map_err(hal)?;
                    self.outputs.insert(*pin, out);
                }
            },
            Command::SetPwm {
                pin,
                duty,
                frequency,
            } => match self.pwms.get_mut(pin) {
                Some(pwm) => {
                    if let Some(f) = frequency {
                        pwm.set_frequency(*f).map_err(hal)?;
                    }
                    pwm.set_duty(*duty).map_err(hal)?;
                }
                None => {
                    let gpio = self.board.gpio().map_err(|e| CommandError::hal(&e))?;
                    let f = frequency.unwrap_or(Hertz(DEFAULT_PWM_HZ));
                    let pwm = gpio
                        .claim_pwm(*pin, f, *duty, DropState::Low)
                        .map_err(hal)?;
                    self.pwms.insert(*pin, pwm);
                }
            },
            Command::SetFanDuty { fan, duty } => {
                self.set_fan(fan, *duty).map_err(hal)?;
                self.state.publish(StreamItem::Action(Action::SetFanDuty {
                    fan: Some(fan.clone()),
                    duty: *duty,
                    reason: "command".into(),
                }));
            }
            Command::SetFanProfile { .. } => {
                // The engine recorded the profile; a fresh sample applies its curve.
                self.tick(false);
            }
            Command::SelectPowerSource { source } => {
                if let Some(supply) = self.board.supply() {
                    supply.select(*source).map_err(hal)?;
                }
            }
            Command::EnableCharging { enabled } => {
                if let Some(battery) = self.board.battery() {
                    battery.set_charging(*enabled).map_err(hal)?;
                }
            }
            Command::RunDiagnostics => {
                let actor = req.actor.to_string();
                let report = self.diagnostics(&wrale_hal::diag::DiagOptions::default(), &actor);
                detail = serde_json::to_value(report).ok();
            }
            Command::StartWorkload { workload } => {
                self.workloads.start(workload).map_err(workload_error)?;
            }
            Command::ThrottleWorkload { workload } => {
                self.workloads
                    .throttle_one(workload, true)
                    .map_err(workload_error)?;
            }
            Command::ResumeWorkload { workload } => {
                self.workloads
                    .throttle_one(workload, false)
                    .map_err(workload_error)?;
            }
            Command::Reboot | Command::Shutdown => {
                let reboot = matches!(req.command, Command::Reboot);
                let why = format!("{} by {}: {}", req.command.kind(), req.actor, req.reason);
                self.power_down(&why, reboot)?;
            }
            Command::ApplyConfig { .. } => {
                return Err(CommandError::Unsupported(
                    "apply_config is not a local command".into(),
                ));
            }
        }
        tracing::info!(command = ?req.command, actor = %req.actor, "command applied");
        Ok(CommandOutcome {
            command: req.command.clone(),
            result: "applied",
            detail,
        })
    }

    /// Workloads stopped, outputs to their fail-safe state, then the power-off (or
    /// reboot) action.
    fn power_down(&mut self, why: &str, reboot: bool) -> Result<(), CommandError> {
        let workloads = self.workloads.clone();
        self.runtime.block_on(workloads.stop_all());
        let safe = self.fail_safe_actions();
        self.apply(safe);
        self.release_outputs();
        let r = if reboot {
            self.power_off.reboot(why)
        } else {
            self.power_off.power_off(why)
        };
        r.map_err(CommandError::Failed)?;
        if reboot && self.power_off.reboots_in_place() {
            // The board is back up and metald still runs: the workloads start
            // again as after a boot; the engine re-decides on the next sample.
            let specs = self.state.config().workloads.clone();
            self.runtime.block_on(workloads.apply(&specs));
        }
        Ok(())
    }

    /// Drops every output a command claimed: each goes to its fail-safe (drop) state.
    fn release_outputs(&mut self) {
        self.outputs.clear();
        self.pwms.clear();
    }

    fn set_fan(&self, id: &str, duty: Percent) -> wrale_hal::Result<()> {
        self.board.fan(id)?.set_duty(duty)
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match &action {
                Action::SetFanDuty { fan, duty, reason } => {
                    let ids: Vec<String> = match fan {
                        Some(id) => vec![id.clone()],
                        None => self
                            .board
                            .fans()
                            .iter()
                            .map(|f| f.id().to_owned())
                            .collect(),
                    };
                    for id in ids {
                        let unchanged = self
                            .board
                            .fan(&id)
                            .ok()
                            .and_then(|f| f.duty().ok())
                            .is_some_and(|d| d == *duty);
                        if unchanged {
                            continue;
                        }
                        match self.set_fan(&id, *duty) {
                            Ok(()) => {
                                self.safe.hal_errors = 0;
                                tracing::info!(fan = %id, duty = duty.get(), "fan duty set: {reason}")
                            }
                            Err(e) => {
                                self.safe.hal_errors = self.safe.hal_errors.saturating_add(1);
                                self.state
                                    .metrics()
                                    .action_errors
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::error!(fan = %id, "cannot set fan duty: {e}");
                            }
                        }
                    }
                }
                Action::ThrottleWorkloads { reason } => {
                    if !self.workloads.throttled() {
                        tracing::warn!("throttling workloads: {reason}");
                    }
                    self.workloads.throttle(true);
                }
                Action::ResumeWorkloads => self.workloads.throttle(false),
                Action::SelectPowerSource { source } => match self.board.supply() {
                    Some(supply) => {
                        if let Err(e) = supply.select(*source) {
                            self.state
                                .metrics()
                                .action_errors
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(%source, "cannot switch the power source: {e}");
                        }
                    }
                    None => tracing::warn!(%source, "no power-source switch on this board"),
                },
                Action::LockGpioOutputs => {
                    tracing::warn!("GPIO outputs locked (GPIO commands refused until unlocked)");
                }
                Action::UnlockGpioOutputs => tracing::info!("GPIO outputs unlocked"),
                Action::RaiseAlert(alert) => self.state.raise_alert(alert.clone()),
                Action::ClearAlert { id } => self.state.clear_alert(id),
                Action::EmergencyShutdown { reason } => self.emergency_shutdown(reason),
            }
            if !matches!(action, Action::RaiseAlert(_) | Action::ClearAlert { .. }) {
                self.state.publish(StreamItem::Action(action));
            }
        }
    }

    fn emergency_shutdown(&mut self, reason: &str) {
        if std::mem::replace(&mut self.shutting_down, true) {
            return;
        }
        tracing::error!("EMERGENCY SHUTDOWN: {reason}");
        let safe = self.fail_safe_actions();
        self.apply(safe);
        let workloads = self.workloads.clone();
        self.runtime.block_on(workloads.stop_all());
        if let Err(e) = self.power_off.power_off(reason) {
            tracing::error!("emergency shutdown failed: {e}");
            self.state.raise_alert(Alert {
                id: "emergency_shutdown_failed".into(),
                severity: Severity::Critical,
                message: format!("emergency shutdown failed: {e}"),
                since: self.board.now(),
            });
        }
    }
}

fn workload_error(e: WorkloadError) -> CommandError {
    match e {
        WorkloadError::NotFound(name) => {
            CommandError::NotFound(format!("workload {name:?} not found"))
        }
        WorkloadError::Gone(name) => {
            CommandError::Failed(format!("workload {name:?} is shutting down"))
        }
    }
}
