//! A small edge-device runtime to embed in another program (the Python, Node and
//! uniffi bindings; tests): a [`Board`], the safety engine and the edge
//! [`Agent`] in one process, without metald.
//!
//! [`EmbeddedDevice::start`] opens (or creates) the twin store and the telemetry
//! ring in a data directory and spawns two tasks on the current tokio runtime:
//!
//! - the **sampler**: every [`DeviceConfig::interval`] it reads a sample from the
//!   board, evaluates it with the policy in force ([`PolicySet::evaluate`]),
//!   applies the fan actions through the HAL (the other actions are recorded in
//!   [`DeviceStatus`] for the host), writes the readings and the boot identity
//!   (`boot_id`, `booted_at` from [`Board::boot`]) and whether the engine throttles
//!   (`engine_throttled`, counted in `engine_throttle_count`) to the twin's
//!   `reported` section, pushes a telemetry point into the ring, applies every desired config
//!   the agent accepts (a policy assembled by [`PolicyValidator::assemble`]) and
//!   executes fleet commands the engine admits (fan duty, GPIO level, PWM, fan
//!   profile, power source and charging where the board has them, diagnostics;
//!   reboot, shutdown and workloads are the host's and refused as `unsupported`).
//!   On stop it leaves the outputs fail-safe: fans at the safe duty, GPIO
//!   outputs released, PWM low;
//! - the **agent** ([`Agent`]): keeps the twin in sync with fleetd over
//!   [`WsConnector`] with the device credential and ships the ring's telemetry.
//!   Without a [`FleetLink`] it runs degraded (the twin is still kept).
//!
//! Enrollment (token -> credential) is an HTTP call and belongs to the caller
//! (`wrale_client::Client::enroll`). metald keeps its own, richer loop (workloads,
//! local API, audit); this one is the minimum that makes a program a fleet device.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> wrale_sync::Result<()> {
//! use std::time::Duration;
//! use wrale_core::model::{DeviceId, DeviceInfo};
//! use wrale_core::BoardModel;
//! use wrale_hal::{BackendConfig, SimConfig};
//! use wrale_sync::embedded::{DeviceConfig, EmbeddedDevice};
//!
//! let board = wrale_hal::open(&BackendConfig::Sim(SimConfig::default())).unwrap();
//! let dir = tempfile::tempdir()?;
//! let device = DeviceInfo {
//!     id: DeviceId::new("pi-1").unwrap(),
//!     model: BoardModel::Pi4B,
//!     serial: None,
//!     firmware_version: None,
//!     agent_version: None,
//!     labels: Default::default(),
//!     location: Default::default(),
//!     group: None,
//! };
//! let config = DeviceConfig { interval: Duration::from_millis(10), step_clock: true, ..Default::default() };
//! let dev = EmbeddedDevice::start(board, dir.path(), device, None, config)?;
//! let status = dev.wait_for_samples(3, Duration::from_secs(5)).await;
//! assert!(status.samples >= 3);
//! dev.stop().await?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wrale_core::model::{Alert, Command, CommandRequest, DeviceInfo, Sample};
use wrale_core::policy::{Action, Decision, PolicyLayer, PolicySet, SafetyState, Verdict};
use wrale_hal::Board;
use wrale_hal::gpio::PinSet;

use crate::Author;
use crate::agent::{
    Agent, AgentConfig, AgentHandle, AgentStatus, ConnectFuture, Connector, FnConnector,
    IncomingCommand, WsConnector,
};
use crate::error::{Error, Result};
use crate::policy_validator::PolicyValidator;
use crate::reported::ReportedUpdate;
use crate::store::sqlite::SqliteStore;
use crate::telemetry::ring::RingBuffer;
use crate::telemetry::{Point, encode_batch};
use crate::twin::{ConfigVerdict, Twin};

/// File of the twin store in the data directory.
pub const TWIN_FILE: &str = "twin.db";
/// Directory of the telemetry ring in the data directory.
pub const RING_DIR: &str = "telemetry";
const RING_SEGMENT_BYTES: u64 = 256 * 1024;
const RING_SEGMENTS: usize = 16;

/// How the runtime samples and syncs.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Time between samples (wall clock).
    pub interval: Duration,
    /// Advance the board's own clock by `interval` after each sample
    /// ([`Board::sleep`]): set it for a `sim` board on virtual time, whose time
    /// otherwise stands still. Never set it for real hardware (it would sleep).
    pub step_clock: bool,
    /// Local policy layers on top of the board's floor (a fleet config accepted
    /// later is assembled on the same layers).
    pub layers: Vec<PolicyLayer>,
    /// The edge agent's settings.
    pub agent: AgentConfig,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            step_clock: false,
            layers: Vec::new(),
            agent: AgentConfig {
                telemetry_interval: Duration::from_millis(500),
                ..AgentConfig::default()
            },
        }
    }
}

impl DeviceConfig {
    /// The settings a host program's device uses: samples every `interval`,
    /// telemetry shipped at the same pace (kept between 100 ms and 1 s), and
    /// quick reconnects (200 ms backoff, at most 5 s) since the program, not
    /// a fleet of daemons, is waiting on the link.
    pub fn sampling_every(
        interval: Duration,
        step_clock: bool,
        layers: Vec<PolicyLayer>,
    ) -> DeviceConfig {
        let mut config = DeviceConfig {
            interval,
            step_clock,
            layers,
            ..DeviceConfig::default()
        };
        config.agent.telemetry_interval =
            interval.clamp(Duration::from_millis(100), Duration::from_secs(1));
        config.agent.backoff.initial = Duration::from_millis(200);
        config.agent.backoff.max = Duration::from_secs(5);
        config
    }
}

/// Where the fleet is and the device's credential.
#[derive(Clone)]
pub struct FleetLink {
    /// The sync WebSocket URL (`ws://host:port/api/v1/devices/<id>/sync`).
    pub sync_url: String,
    /// The device credential (`wrd_...`) from enrollment.
    pub credential: String,
}

/// The credential is never printed.
impl std::fmt::Debug for FleetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLink")
            .field("sync_url", &self.sync_url)
            .finish_non_exhaustive()
    }
}

impl FleetLink {
    /// The link to fleetd at `base_url` (`http://host:port`) for `device`.
    pub fn for_fleetd(base_url: &str, device: &str, credential: impl Into<String>) -> FleetLink {
        let base = base_url.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        FleetLink {
            sync_url: format!("{ws}/api/v1/devices/{device}/sync"),
            credential: credential.into(),
        }
    }
}

/// What the runtime did so far (a snapshot; see [`EmbeddedDevice::status`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceStatus {
    /// Samples taken.
    pub samples: u64,
    /// The latest sample.
    pub last_sample: Option<Sample>,
    /// The latest non-empty decision of the safety engine.
    pub last_decision: Option<Decision>,
    /// Actions applied through the HAL (fan duties).
    pub actions_applied: u64,
    /// Actions that failed in the HAL (the last error is in `last_error`).
    pub action_errors: u64,
    /// Alerts active in the safety engine.
    pub alerts: Vec<Alert>,
    /// The engine asked to throttle workloads (the host's business).
    pub throttled: bool,
    /// The engine locked GPIO outputs (case open).
    pub gpio_locked: bool,
    /// The engine asked for an emergency shutdown, with the reason (the host's business).
    pub shutdown_requested: Option<String>,
    /// The `config_version` of the last desired config applied.
    pub config_version: Option<i64>,
    /// Desired configs refused, with the last rule in `last_error`.
    pub configs_rejected: u64,
    /// Fleet commands executed.
    pub commands_done: u64,
    /// Fleet commands refused or failed.
    pub commands_refused: u64,
    /// Telemetry points pushed to the ring.
    pub telemetry_points: u64,
    /// The last error (HAL, store, config), for logs.
    pub last_error: Option<String>,
}

/// A running embedded device. Stop it with [`EmbeddedDevice::stop`]; dropping it
/// cancels its tasks without waiting.
#[derive(Debug)]
pub struct EmbeddedDevice {
    cancel: CancellationToken,
    status: watch::Receiver<DeviceStatus>,
    agent: AgentHandle,
    policy: Arc<Mutex<Arc<PolicySet>>>,
    sampler: Option<JoinHandle<()>>,
    agent_task: Option<JoinHandle<Result<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EmbeddedDevice {
    /// Starts the device on the current tokio runtime (call it inside one): the
    /// twin and ring live in `dir` (created; reused across runs), `device` describes
    /// the device in the twin's `meta`, `fleet` is where to sync (`None`: degraded,
    /// local only).
    pub fn start(
        board: Board,
        dir: &Path,
        device: DeviceInfo,
        fleet: Option<FleetLink>,
        config: DeviceConfig,
    ) -> Result<EmbeddedDevice> {
        let connector: Box<dyn Connector> = match fleet {
            Some(link) => Box::new(WsConnector::new(link.sync_url).with_token(link.credential)),
            None => Box::new(FnConnector(|| -> ConnectFuture {
                Box::pin(async { Err(Error::Transport("no fleet configured".into())) })
            })),
        };
        Self::start_with(board, dir, device, connector, config)
    }

    /// [`start`](Self::start) with the agent's links opened by `connector`
    /// instead of a WebSocket to fleetd: another transport, or an in-process
    /// hub in tests.
    pub fn start_with(
        board: Board,
        dir: &Path,
        device: DeviceInfo,
        connector: Box<dyn Connector>,
        config: DeviceConfig,
    ) -> Result<EmbeddedDevice> {
        std::fs::create_dir_all(dir)?;
        let mut store = SqliteStore::open(dir.join(TWIN_FILE))?;
        let author = Author::device(&device.id);
        let now = board.now();
        let doc = device.id.to_string();
        let twin = match crate::store::load_twin(&store, &doc, author.clone())? {
            Some(mut t) => {
                let mut info = device.clone();
                if let Ok(meta) = t.meta() {
                    info.group = meta.group;
                }
                t.set_meta(&info, &author, now)?;
                t
            }
            None => Twin::new(&device, author, now)?,
        };
        let mut twin = twin;
        crate::store::persist(&mut store, &mut twin, config.agent.snapshot_every)?;
        let ring = Arc::new(Mutex::new(RingBuffer::open(
            dir.join(RING_DIR),
            RING_SEGMENT_BYTES,
            RING_SEGMENTS,
        )?));

        let validator = PolicyValidator::new(board.profile()).with_layers(config.layers.clone());
        let policy = PolicySet::assemble(
            &wrale_core::policy::BoardFloor::from_profile(board.profile()),
            &config.layers,
        )
        .map_err(|r| Error::Rejected(crate::Rejection::new(r.rule.as_str(), r.reason)))?;
        let policy = Arc::new(Mutex::new(Arc::new(policy)));

        let (agent, handle) = Agent::new(
            twin,
            Box::new(store),
            connector,
            Box::new(validator.clone()),
            config.agent.clone(),
        );
        let agent = agent.with_telemetry(Box::new(ring.clone()));
        let cancel = CancellationToken::new();
        let agent_task = tokio::spawn(agent.run(cancel.clone()));

        let (status_tx, status) = watch::channel(DeviceStatus::default());
        let commands = handle.commands();
        let sampler = Sampler {
            board,
            device: doc,
            config,
            validator,
            policy: policy.clone(),
            state: None,
            agent: handle.clone(),
            ring,
            status: status_tx,
            pins: PinSet::new(),
        };
        let sampler = tokio::spawn(sampler.run(cancel.clone(), commands));
        Ok(EmbeddedDevice {
            cancel,
            status,
            agent: handle,
            policy,
            sampler: Some(sampler),
            agent_task: Some(agent_task),
        })
    }

    /// A snapshot of what the runtime did.
    pub fn status(&self) -> DeviceStatus {
        self.status.borrow().clone()
    }

    /// The agent's connection state and counters.
    pub fn agent_status(&self) -> AgentStatus {
        self.agent.status().borrow().clone()
    }

    /// The agent's handle (twin reads and edits).
    pub fn agent(&self) -> &AgentHandle {
        &self.agent
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<PolicySet> {
        lock(&self.policy).clone()
    }

    /// Waits until at least `n` samples were taken or `timeout` passed; returns the
    /// status then.
    pub async fn wait_for_samples(&self, n: u64, timeout: Duration) -> DeviceStatus {
        let mut rx = self.status.clone();
        let _timed_out = tokio::time::timeout(timeout, rx.wait_for(|s| s.samples >= n)).await;
        self.status()
    }

    /// Stops both tasks and waits for them (the agent persists the twin first).
    pub async fn stop(mut self) -> Result<()> {
        self.cancel.cancel();
        if let Some(t) = self.sampler.take() {
            let _ = t.await;
        }
        match self.agent_task.take() {
            Some(t) => t
                .await
                .map_err(|e| Error::Transport(format!("agent task: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedDevice {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Sampler {
    board: Board,
    device: String,
    config: DeviceConfig,
    validator: PolicyValidator,
    policy: Arc<Mutex<Arc<PolicySet>>>,
    state: Option<SafetyState>,
    agent: AgentHandle,
    ring: Arc<Mutex<RingBuffer>>,
    status: watch::Sender<DeviceStatus>,
    pins: PinSet,
}

impl Sampler {
    async fn run(
        mut self,
        cancel: CancellationToken,
        mut commands: Option<mpsc::Receiver<IncomingCommand>>,
    ) {
        let mut verdicts = self.agent.verdicts();
        let mut tick = tokio::time::interval(self.config.interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => self.sample().await,
                changed = verdicts.changed() => {
                    if changed.is_err() {
                        // The agent stopped: keep sampling on the policy in force.
                        verdicts = watch::channel(None).1;
                        continue;
                    }
                    let verdict = verdicts.borrow_and_update().clone();
                    if let Some(v) = verdict {
                        self.apply_verdict(v);
                    }
                }
                Some(cmd) = async {
                    match commands.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.command(cmd).await,
            }
        }
        self.fail_safe();
    }

    /// On stop: every fan to its fail-safe duty (the policy's or the board's,
    /// whichever is higher), then claimed GPIO outputs released and PWM outputs
    /// low, so a stopped program leaves the hardware safe.
    fn fail_safe(&mut self) {
        let duty = self
            .policy()
            .limits()
            .fan
            .safe_duty
            .max(self.board.profile().fan.safe_duty_pct);
        for fan in self.board.fans() {
            if let Err(e) = fan.set_duty(duty) {
                self.set_error(format!("fail-safe fan {}: {e}", fan.id()));
            }
        }
        self.pins.clear();
    }

    fn policy(&self) -> Arc<PolicySet> {
        lock(&self.policy).clone()
    }

    fn set_error(&self, e: impl std::fmt::Display) {
        let msg = e.to_string();
        self.status.send_modify(|s| s.last_error = Some(msg));
    }

    async fn sample(&mut self) {
        let board = self.board.clone();
        let step = self.config.step_clock.then_some(self.config.interval);
        // HAL reads are short blocking calls (and may call back into the host).
        let read = tokio::task::spawn_blocking(move || {
            let s = board.sample();
            let now = board.now();
            // The boot identity goes to `reported` (a fleet sees reboots by it);
            // a board without one (or powered off) leaves the last one reported.
            let boot = board.boot().ok();
            if let Some(d) = step {
                board.sleep(d);
            }
            (s, now, boot)
        })
        .await;
        let Ok((sample, now, boot)) = read else {
            self.set_error("the sample read panicked");
            return;
        };
        let policy = self.policy();
        let state = self.state.get_or_insert_with(|| SafetyState::new(&policy));
        let decision = policy.evaluate(state, &sample, now);
        let alerts = state.active_alerts().to_vec();
        let (mut applied, mut failed, mut last_error) = (0, 0, None);
        let mut flags = (None, None, None);
        for action in &decision.actions {
            match action {
                Action::SetFanDuty { fan, duty } => {
                    match self.board.fan(fan).and_then(|f| f.set_duty(*duty)) {
                        Ok(()) => applied += 1,
                        Err(e) => {
                            failed += 1;
                            last_error = Some(format!("fan {fan}: {e}"));
                        }
                    }
                }
                Action::ThrottleWorkloads { .. } => flags.0 = Some(true),
                Action::ResumeWorkloads => flags.0 = Some(false),
                Action::LockGpioOutputs => flags.1 = Some(true),
                Action::UnlockGpioOutputs => flags.1 = Some(false),
                Action::EmergencyShutdown { reason } => flags.2 = Some(reason.clone()),
                // Power-source switching needs a host that owns the supply.
                Action::SelectPowerSource { .. } => {}
            }
        }
        let mut report = ReportedUpdate::from_sample(&sample);
        // The engine's active alerts, as metald reports them (`alert.<code>`):
        // the fleet lists them with its own.
        report.alerts = Some(
            alerts
                .iter()
                .map(|a| (a.code.as_str().to_owned(), a.message.clone()))
                .collect(),
        );
        if let Some(b) = boot {
            report = report.boot(b.boot_id, b.booted_at);
        }
        // The engine's own throttling (not the firmware's) goes to `reported`
        // too: the fleet's rollout gates count it.
        report.engine_throttled = Some(flags.0.unwrap_or_else(|| self.status.borrow().throttled));
        if let Err(e) = self.agent.edit(|t| t.report(&report, now)) {
            last_error = Some(format!("twin: {e}"));
        }
        let record = encode_batch(&self.device, &[Point::from_sample(&sample)]);
        let pushed = lock(&self.ring).push(&record);
        if let Err(e) = &pushed {
            last_error = Some(format!("telemetry ring: {e}"));
        }
        self.status.send_modify(|s| {
            s.samples += 1;
            s.last_sample = Some(sample);
            if !decision.is_empty() {
                s.last_decision = Some(decision);
            }
            s.actions_applied += applied;
            s.action_errors += failed;
            s.alerts = alerts;
            if let Some(t) = flags.0 {
                s.throttled = t;
            }
            if let Some(l) = flags.1 {
                s.gpio_locked = l;
            }
            if let Some(r) = flags.2 {
                s.shutdown_requested = Some(r);
            }
            if pushed.is_ok() {
                s.telemetry_points += 1;
            }
            if last_error.is_some() {
                s.last_error = last_error;
            }
        });
    }

    fn apply_verdict(&mut self, verdict: ConfigVerdict) {
        match verdict {
            ConfigVerdict::Accepted(cfg) => match self.validator.assemble(&cfg) {
                Ok(set) => {
                    *lock(&self.policy) = Arc::new(set);
                    let version = self
                        .agent
                        .with_twin(|t| t.fields(crate::Section::Desired))
                        .ok()
                        .and_then(|f| f.get("config_version").and_then(|v| v.as_f64()))
                        .map(|v| v as i64);
                    self.status.send_modify(|s| s.config_version = version);
                }
                Err(r) => self.reject(&r.rule, &r.reason),
            },
            ConfigVerdict::Rejected(r) => self.reject(&r.rule, &r.reason),
        }
    }

    fn reject(&self, rule: &str, reason: &str) {
        let msg = format!("desired config refused by {rule}: {reason}");
        self.status.send_modify(|s| {
            s.configs_rejected += 1;
            s.last_error = Some(msg);
        });
    }

    async fn command(&mut self, cmd: IncomingCommand) {
        let now = self.board.now();
        let request: CommandRequest = cmd.request.clone();
        if let Some(reason) = self.unsupported(&request.command) {
            self.status.send_modify(|s| s.commands_refused += 1);
            cmd.refused("unsupported", reason);
            return;
        }
        let policy = self.policy();
        let state = self.state.get_or_insert_with(|| SafetyState::new(&policy));
        if let Verdict::Refused { rule, reason } = policy.admit(state, &request, now) {
            self.status.send_modify(|s| s.commands_refused += 1);
            cmd.refused("policy_violation", format!("refused by {rule}: {reason}"));
            return;
        }
        let result = if matches!(request.command, Command::RunDiagnostics) {
            // Diagnostics drive the fan and load the supply: sampling waits for
            // them, as in metald, and they run off the async workers.
            let board = self.board.clone();
            tokio::task::spawn_blocking(move || {
                wrale_hal::diag::run(&board, &wrale_hal::diag::DiagOptions::default())
            })
            .await
            .map_err(|e| ("diagnostics_failed".to_owned(), e.to_string()))
            .map(|report| serde_json::to_value(report).ok())
        } else {
            self.execute(&request.command)
                .map(|()| None)
                .map_err(|e| (e.code().to_owned(), e.to_string()))
        };
        match result {
            Ok(detail) => {
                self.status.send_modify(|s| s.commands_done += 1);
                cmd.done(detail);
            }
            Err((code, message)) => {
                self.status.send_modify(|s| s.commands_refused += 1);
                cmd.failed(code, message);
            }
        }
    }

    /// Why this device cannot execute `command` at all, if it cannot: the host
    /// program owns its own lifecycle and processes, and a board without a
    /// supply switch or battery has nothing to act on.
    fn unsupported(&self, command: &Command) -> Option<String> {
        match command {
            Command::SetFanDuty { .. }
            | Command::SetGpio { .. }
            | Command::SetPwm { .. }
            | Command::SetFanProfile { .. }
            | Command::RunDiagnostics => None,
            Command::SelectPowerSource { .. } if self.board.supply().is_none() => {
                Some("this board has no power-source switch".into())
            }
            Command::EnableCharging { .. } if self.board.battery().is_none() => {
                Some("this board has no battery".into())
            }
            Command::SelectPowerSource { .. } | Command::EnableCharging { .. } => None,
            other => Some(format!(
                "{} is the host program's business: an embedded device does not reboot, \
                 shut down, run workloads or take configs as commands",
                other.kind()
            )),
        }
    }

    fn execute(&mut self, command: &Command) -> wrale_hal::Result<()> {
        match command {
            Command::SetFanDuty { fan, duty } => self.board.fan(fan)?.set_duty(*duty),
            Command::SetGpio { pin, level } => self.pins.write(&self.board, *pin, *level),
            Command::SetPwm {
                pin,
                duty,
                frequency,
            } => self.pins.pwm(&self.board, *pin, *duty, *frequency),
            Command::SelectPowerSource { source } => match self.board.supply() {
                Some(supply) => supply.select(*source),
                None => Ok(()),
            },
            Command::EnableCharging { enabled } => match self.board.battery() {
                Some(battery) => battery.set_charging(*enabled),
                None => Ok(()),
            },
            // The engine recorded the profile when it admitted the command; the
            // next evaluation drives the fan by it.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_core::model::DeviceId;
    use wrale_core::units::{Celsius, Percent};
    use wrale_core::{BoardModel, Timestamp};
    use wrale_hal::sim::{SimBoard, SimConfig};

    fn info(id: &str) -> DeviceInfo {
        DeviceInfo {
            id: DeviceId::new(id).unwrap(),
            model: BoardModel::Pi4B,
            serial: None,
            firmware_version: None,
            agent_version: None,
            labels: Default::default(),
            location: Default::default(),
            group: None,
        }
    }

    fn wall_now() -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }

    fn fast() -> DeviceConfig {
        DeviceConfig {
            interval: Duration::from_millis(5),
            step_clock: true,
            ..DeviceConfig::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hot_board_gets_fan_actions_reports_and_telemetry() {
        let sim = SimBoard::new(&SimConfig {
            load_pct: Percent::FULL,
            ambient_c: Some(Celsius(35.0)),
            ..SimConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A local layer warns early, so the hot board has an active alert.
        let warn = PolicyLayer::from_toml(
            "scope = \"fleet\"\n[thermal]\nwarn_c = 50.0\nwarn_hold = \"0s\"\n",
            "local.toml",
        )
        .unwrap();
        let config = DeviceConfig {
            layers: vec![warn],
            ..fast()
        };
        let dev =
            EmbeddedDevice::start(sim.board(), dir.path(), info("pi-hot"), None, config).unwrap();
        let status = dev.wait_for_samples(40, Duration::from_secs(20)).await;
        assert!(status.samples >= 40, "{status:?}");
        // The engine drove the fan through the HAL: the sim's fan follows.
        assert!(status.actions_applied > 0, "{status:?}");
        assert!(sim.board().fan("fan0").unwrap().duty().unwrap().get() > 0.0);
        assert_eq!(status.action_errors, 0, "{status:?}");
        assert_eq!(status.telemetry_points, status.samples);
        // Virtual time advanced by one interval per sample.
        assert!(sim.elapsed() >= Duration::from_millis(5 * 40));
        // The readings went to the twin's reported section, and the engine's
        // active alerts with them.
        let reported = dev.agent().with_twin(|t| t.reported().unwrap());
        assert!(
            reported.cpu_temp().is_some_and(|c| c.get() > 30.0),
            "{reported:?}"
        );
        let active: Vec<String> = status
            .alerts
            .iter()
            .map(|a| a.code.as_str().to_owned())
            .collect();
        assert!(!active.is_empty(), "a hot board has alerts: {status:?}");
        for code in &active {
            assert!(reported.alerts.contains_key(code), "{code}: {reported:?}");
        }
        // No fleet: the agent runs degraded and says why.
        let agent = dev.agent_status();
        assert!(!agent.connected);
        dev.stop().await.unwrap();
        // The ring survived in the data directory with the points nobody shipped.
        let ring =
            RingBuffer::open(dir.path().join(RING_DIR), RING_SEGMENT_BYTES, RING_SEGMENTS).unwrap();
        assert!(ring.len() >= 40, "{}", ring.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accepted_desired_config_changes_the_policy_and_bad_one_is_refused() {
        let sim = SimBoard::new(&SimConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dev =
            EmbeddedDevice::start(sim.board(), dir.path(), info("pi-cfg"), None, fast()).unwrap();
        let before = dev.policy().limits().thermal.warn_c;
        let fleet = Author::fleet("fleetd");
        dev.agent()
            .edit(|t| t.edit_desired(|c| c.warn = Some(Celsius(60.0)), &fleet, wall_now()))
            .unwrap();
        let mut ok = false;
        for _ in 0..200 {
            if dev.policy().limits().thermal.warn_c == Celsius(60.0) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            ok,
            "warn_c stayed {:?} (was {before:?})",
            dev.policy().limits().thermal.warn_c
        );
        // Above the board's floor: refused, the policy stays.
        dev.agent()
            .edit(|t| t.edit_desired(|c| c.warn = Some(Celsius(99.0)), &fleet, wall_now()))
            .unwrap();
        let mut refused = false;
        for _ in 0..200 {
            if dev.status().configs_rejected > 0 {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "{:?}", dev.status());
        assert_eq!(dev.policy().limits().thermal.warn_c, Celsius(60.0));
        dev.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_boot_identity_is_reported_and_follows_a_reboot() {
        let sim = SimBoard::new(&SimConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dev =
            EmbeddedDevice::start(sim.board(), dir.path(), info("pi-boot"), None, fast()).unwrap();
        let first = sim.board().boot().unwrap();
        let reported = |dev: &EmbeddedDevice| {
            dev.agent().with_twin(|t| {
                let r = t.reported().unwrap();
                (r.boot_id, r.booted_at)
            })
        };
        let mut seen = (None, None);
        for _ in 0..200 {
            seen = reported(&dev);
            if seen.0.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen, (Some(first.boot_id.clone()), Some(first.booted_at)));
        sim.reboot();
        let second = sim.board().boot().unwrap();
        assert_ne!(second.boot_id, first.boot_id);
        for _ in 0..200 {
            seen = reported(&dev);
            if seen.0.as_deref() == Some(second.boot_id.as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen, (Some(second.boot_id), Some(second.booted_at)));
        dev.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_throttling_is_reported_and_counted() {
        // A stalled fan in a hot room at full load: the engine throttles.
        let sim = SimBoard::new(&SimConfig {
            load_pct: Percent::FULL,
            ambient_c: Some(Celsius(45.0)),
            faults: vec![wrale_hal::SimFault::FanStall],
            ..SimConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dev =
            EmbeddedDevice::start(sim.board(), dir.path(), info("pi-thr"), None, fast()).unwrap();
        let reported = |dev: &EmbeddedDevice| {
            dev.agent().with_twin(|t| {
                let r = t.reported().unwrap();
                (r.engine_throttled, r.engine_throttle_count)
            })
        };
        let mut seen = (None, None);
        for _ in 0..2000 {
            seen = reported(&dev);
            if seen.0 == Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(dev.status().throttled, "{:?}", dev.status());
        assert_eq!(seen, (Some(true), Some(1)));
        dev.stop().await.unwrap();
    }

    #[test]
    fn fleet_link_from_a_base_url() {
        let l = FleetLink::for_fleetd("http://127.0.0.1:8600/", "pi-1", "wrd_x");
        assert_eq!(l.sync_url, "ws://127.0.0.1:8600/api/v1/devices/pi-1/sync");
        assert!(!format!("{l:?}").contains("wrd_x"));
        let l = FleetLink::for_fleetd("https://f.example", "pi-1", "wrd_x");
        assert_eq!(l.sync_url, "wss://f.example/api/v1/devices/pi-1/sync");
    }
}
