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

use serde::Serialize;
use tokio::sync::oneshot;
use wrale_core::RuleId;
use wrale_core::audit::{AuditOutcome, AuditRecord, AuditVerdict};
use wrale_core::board::BoardProfile;
use wrale_core::model::Actor;
use wrale_core::units::Percent;
use wrale_hal::{Board, HalEvent};

use crate::error::ApiError;
use crate::persist::Persist;
use crate::safety::{Action, Alert, Command, Context, SafetyHook, Severity, Validation, Verdict};
use crate::state::{AppState, StreamItem};
use crate::workloads::Workloads;

/// Powers the device off for an emergency shutdown.
pub trait PowerOff: Send + 'static {
    /// Powers off (or starts to). Returns what went wrong, if anything.
    fn power_off(&mut self, reason: &str) -> Result<(), String>;
}

/// Runs the configured shutdown command (`systemctl poweroff` by default).
#[derive(Debug, Clone)]
pub struct CommandPowerOff {
    command: Vec<String>,
}

impl CommandPowerOff {
    /// `command[0]` is the program, the rest its arguments.
    pub fn new(command: Vec<String>) -> Self {
        Self { command }
    }
}

impl PowerOff for CommandPowerOff {
    fn power_off(&mut self, reason: &str) -> Result<(), String> {
        let Some((program, args)) = self.command.split_first() else {
            return Err("no shutdown command configured".into());
        };
        tracing::error!(command = ?self.command, "emergency shutdown: {reason}");
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
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    /// The command.
    #[serde(flatten)]
    pub command: Command,
    /// Always `applied`.
    pub result: &'static str,
}

enum Msg {
    Command {
        command: Command,
        actor: String,
        reply: oneshot::Sender<Result<Applied, ApiError>>,
    },
    Validate {
        command: Command,
        actor: String,
        reply: oneshot::Sender<Result<Validation, ApiError>>,
    },
    Confirm {
        token: u64,
        actor: String,
        reply: oneshot::Sender<Result<Applied, ApiError>>,
    },
    Diagnostics {
        options: wrale_hal::diag::DiagOptions,
        actor: String,
        reply: oneshot::Sender<wrale_hal::diag::DiagReport>,
    },
    Hal(HalEvent),
    Stop,
}

/// Sends commands to the sampling loop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandSender {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Command { command, actor, .. } => f
                .debug_struct("Command")
                .field("command", command)
                .field("actor", actor)
                .finish(),
            Msg::Validate { command, .. } => f.debug_tuple("Validate").field(command).finish(),
            Msg::Confirm { token, .. } => f.debug_tuple("Confirm").field(token).finish(),
            Msg::Diagnostics { options, .. } => {
                f.debug_tuple("Diagnostics").field(options).finish()
            }
            Msg::Hal(e) => f.debug_tuple("Hal").field(e).finish(),
            Msg::Stop => f.write_str("Stop"),
        }
    }
}

impl CommandSender {
    /// Sends one request to the sampling loop and waits for its reply; `make`
    /// builds the message around the reply channel.
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| ApiError::unavailable("the sampling loop is not running"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the sampling loop stopped"))
    }

    /// Validates `command` from `actor` with the safety hook and applies it
    /// through the HAL.
    pub async fn send(&self, command: Command, actor: &str) -> Result<Applied, ApiError> {
        let actor = actor.to_owned();
        self.call(|reply| Msg::Command {
            command,
            actor,
            reply,
        })
        .await?
    }

    /// Phase one of a two-phase command: validates and returns a token; nothing
    /// is applied.
    pub async fn validate(&self, command: Command, actor: &str) -> Result<Validation, ApiError> {
        let actor = actor.to_owned();
        self.call(|reply| Msg::Validate {
            command,
            actor,
            reply,
        })
        .await?
    }

    /// Phase two: applies the command validated under `token` if the engine still
    /// allows it.
    pub async fn confirm(&self, token: u64, actor: &str) -> Result<Applied, ApiError> {
        let actor = actor.to_owned();
        self.call(|reply| Msg::Confirm {
            token,
            actor,
            reply,
        })
        .await?
    }

    /// Runs the hardware diagnostics on the sampling thread (sampling pauses
    /// meanwhile; on `sim` the checks run on virtual time and return at once).
    pub async fn diagnostics(
        &self,
        options: wrale_hal::diag::DiagOptions,
        actor: &str,
    ) -> Result<wrale_hal::diag::DiagReport, ApiError> {
        let actor = actor.to_owned();
        self.call(|reply| Msg::Diagnostics {
            options,
            actor,
            reply,
        })
        .await
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
}

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
                Ok(Msg::Command {
                    command,
                    actor,
                    reply,
                }) => {
                    let result = self.command(command, &actor);
                    let _caller_gone = reply.send(result);
                }
                Ok(Msg::Validate {
                    command,
                    actor,
                    reply,
                }) => {
                    let _caller_gone = reply.send(self.validate(command, &actor));
                }
                Ok(Msg::Confirm {
                    token,
                    actor,
                    reply,
                }) => {
                    let _caller_gone = reply.send(self.confirm(token, &actor));
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
        let actions = self.engine_answer(decided);
        self.state
            .metrics()
            .hal_events_dropped
            .store(self.board.events().dropped(), Ordering::Relaxed);
        self.state.publish_sample(sample, latency);
        self.apply(actions);
        if let (Some(p), Some(latest)) = (&self.persist, self.state.latest()) {
            let alerts = self.state.alerts().into_iter().map(|a| (a.id, a.message));
            p.on_sample(&latest.sample, alerts);
        }
    }

    /// Records a command and its verdict and outcome in the audit log.
    fn audit(&self, command: &Command, actor: &str, verdict: &Verdict, outcome: AuditOutcome) {
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
            actor: Actor::LocalOperator(actor.to_owned()),
            reason: "local API".into(),
            command: crate::safety::core_command(command),
            verdict,
            outcome,
        });
    }

    /// Applies an allowed command and audits the outcome.
    fn apply_audited(&mut self, command: Command, actor: &str) -> Result<Applied, ApiError> {
        let audited = command.clone();
        let result = self.apply_command(command, actor);
        let outcome = match &result {
            Ok(_) => AuditOutcome::Applied,
            Err(e) => AuditOutcome::Failed(e.message().to_owned()),
        };
        self.audit(&audited, actor, &Verdict::Allowed, outcome);
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

    fn command(&mut self, command: Command, actor: &str) -> Result<Applied, ApiError> {
        let Command::SetFanDuty { fan, .. } = &command;
        self.board
            .fan(fan)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        let latest = self.state.latest();
        let ctx = Context {
            profile: &self.profile,
            now: self.board.now(),
        };
        let hook = &mut self.hook;
        let verdict = catch_unwind(AssertUnwindSafe(|| {
            hook.check_command(&command, actor, latest.as_ref().map(|l| &*l.sample), &ctx)
        }))
        .map_err(|_| ApiError::unavailable("the safety engine is not answering"))?;
        if let Verdict::Refused { rule, reason } = &verdict {
            tracing::warn!(?command, %rule, "command refused: {reason}");
            self.audit(&command, actor, &verdict, AuditOutcome::NotExecuted);
            return Err(ApiError::policy_violation(rule, reason.clone()));
        }
        self.apply_audited(command, actor)
    }

    fn validate(&mut self, command: Command, actor: &str) -> Result<Validation, ApiError> {
        let Command::SetFanDuty { fan, .. } = &command;
        self.board
            .fan(fan)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        let latest = self.state.latest();
        let ctx = Context {
            profile: &self.profile,
            now: self.board.now(),
        };
        let hook = &mut self.hook;
        let v = catch_unwind(AssertUnwindSafe(|| {
            hook.validate_command(&command, actor, latest.as_ref().map(|l| &*l.sample), &ctx)
        }))
        .map_err(|_| ApiError::unavailable("the safety engine is not answering"))?;
        if let Verdict::Refused { rule, reason } = &v.verdict {
            self.audit(&command, actor, &v.verdict, AuditOutcome::NotExecuted);
            return Err(ApiError::policy_violation(rule, reason.clone()));
        }
        self.audit(
            &command,
            actor,
            &v.verdict,
            AuditOutcome::AwaitingConfirmation,
        );
        Ok(v)
    }

    fn confirm(&mut self, token: u64, actor: &str) -> Result<Applied, ApiError> {
        let ctx = Context {
            profile: &self.profile,
            now: self.board.now(),
        };
        let hook = &mut self.hook;
        let decided = catch_unwind(AssertUnwindSafe(|| hook.confirm_command(token, &ctx)))
            .map_err(|_| ApiError::unavailable("the safety engine is not answering"))?;
        match decided {
            Ok(command) => self.apply_audited(command, actor),
            Err(Verdict::Refused { rule, reason }) => {
                Err(ApiError::policy_violation(&rule, reason))
            }
            Err(Verdict::Allowed) => Err(ApiError::internal("confirmation without a command")),
        }
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
    fn apply_command(&mut self, command: Command, actor: &str) -> Result<Applied, ApiError> {
        let Command::SetFanDuty { fan, duty } = &command;
        self.set_fan(fan, *duty)
            .map_err(|e| ApiError::hardware(&e))?;
        self.state.publish(StreamItem::Action(Action::SetFanDuty {
            fan: Some(fan.clone()),
            duty: *duty,
            reason: "command".into(),
        }));
        tracing::info!(fan = %fan, duty = duty.get(), %actor, "fan duty set by command");
        Ok(Applied {
            command,
            result: "applied",
        })
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
                                tracing::info!(fan = %id, duty = duty.get(), "fan duty set: {reason}")
                            }
                            Err(e) => {
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
