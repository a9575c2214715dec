//! The fleet side of metald: `[fleet]` config, enrollment, and the edge agent
//! (`wrale_sync::Agent`) wired to the twin, the telemetry ring, the safety engine
//! and the command path.
//!
//! - Without `fleet.url` nothing connects; the twin's `desired` section still
//!   takes local edits (`PATCH /api/v1/twin/desired`), validated and applied here.
//! - With `fleet.url` the agent runs from the start (degraded until connected).
//!   Each connection attempt first enrolls when no credential is stored yet
//!   ([`enroll`]), then opens `ws://.../api/v1/devices/{id}/sync` with the
//!   credential as bearer token. metald works fully before and without it.
//! - Every desired config the agent (or a local edit) finds valid is applied
//!   (the applier): thresholds, fan profile and minimum duty as a fleet policy
//!   layer assembled on the board floor with the local `[policy]` layers; the fan
//!   profile, GPIO outputs and workloads through the engine-checked command path.
//!   The outcome is written to `reported` (`config.*`).

mod config;
pub mod enroll;
pub mod http;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wrale_core::Timestamp;
use wrale_core::board::BoardProfile;
use wrale_core::model::{Actor, Command, CommandRequest, DeviceInfo};
use wrale_core::policy::PolicyLayer;
use wrale_sync::transport::WsTransport;
use wrale_sync::{
    Agent, AgentConfig, AgentMode, AgentStatus, Author, ConfigStatus, ConfigValidator,
    ConfigVerdict, Connector, DesiredConfig, FieldPath, FieldValue, PolicyValidator, Rejection,
    ReportedUpdate, Transport,
};

pub use config::{CREDENTIAL_FILE, FleetBackoff, FleetConfig};

use crate::error::ApiError;
use crate::persist::Persist;
use crate::sampler::CommandSender;
use crate::state::AppState;
use crate::workloads::Workloads;

/// How long one WebSocket connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest an enrollment request may take (enroll.rs sets its own, shorter one).
const ENROLL_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

/// The device's description for the twin's `meta` and for enrollment: the id and
/// model from the running daemon, serial, labels and location from `[device]`
/// (the serial falls back to the board's own, read from `/proc/cpuinfo`).
pub fn device_info(
    config: &crate::Config,
    id: &wrale_core::model::DeviceId,
    model: wrale_core::board::BoardModel,
    agent_version: &str,
) -> DeviceInfo {
    DeviceInfo {
        id: id.clone(),
        model,
        serial: config.device.serial.clone().or_else(board_serial),
        firmware_version: None,
        agent_version: Some(agent_version.to_owned()),
        labels: config.device.labels.clone(),
        location: config.device.location.clone(),
        group: None,
    }
}

/// The `Serial` line of `/proc/cpuinfo` (Raspberry Pi boards have one).
fn board_serial() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Serial")
            .then(|| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

/// Enrollment progress, for `/api/v1/state` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EnrollState {
    /// A credential is stored.
    pub enrolled: bool,
    /// Enrollment requests made by this process.
    pub attempts: u64,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

/// What the API and the metrics see of the fleet side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FleetHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    enabled: bool,
    persist: Persist,
    validator: PolicyValidator,
    applier: Applier,
    status: Option<watch::Receiver<AgentStatus>>,
    enroll: Arc<Mutex<EnrollState>>,
    applied: Arc<Mutex<Option<Value>>>,
    task: Mutex<Option<tokio::task::JoinHandle<wrale_sync::Result<()>>>>,
}

/// What [`start`] needs from the daemon.
#[derive(Debug, Clone)]
pub struct FleetParts {
    /// Shared daemon state (config, modes).
    pub app: AppState,
    /// The twin, the ring, the audit log.
    pub persist: Persist,
    /// The sampling loop's command path.
    pub commands: CommandSender,
    /// The workload supervisor.
    pub workloads: Workloads,
    /// The effective board profile (the floor).
    pub profile: BoardProfile,
    /// The local `[policy]` layers in force.
    pub layers: Vec<PolicyLayer>,
    /// The device's description.
    pub device: DeviceInfo,
}

/// Starts the fleet side: the edge agent when `fleet.url` is set, and the task
/// that applies every accepted desired config. Tasks stop with `shutdown`.
pub fn start(parts: FleetParts, shutdown: CancellationToken) -> FleetHandle {
    let config = parts.app.config();
    let fleet = config.fleet.clone();
    let validator = PolicyValidator::new(&parts.profile).with_layers(parts.layers.clone());
    let applied = Arc::new(Mutex::new(None));
    let applier = Applier {
        app: parts.app.clone(),
        persist: parts.persist.clone(),
        commands: parts.commands.clone(),
        workloads: parts.workloads.clone(),
        validator: validator.clone(),
        last: Arc::new(tokio::sync::Mutex::new(None)),
        applied: applied.clone(),
        failed: Arc::default(),
    };
    let enroll = Arc::new(Mutex::new(EnrollState::default()));
    let mut status = None;
    let mut task = None;
    if fleet.enabled() {
        let cred_path = fleet.credential_path(&config.data.dir);
        let credential = match enroll::read_credential(&cred_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(file = %cred_path.display(), "cannot read the fleet credential: {e}");
                None
            }
        };
        lock(&enroll).enrolled = credential.is_some();
        let connector = FleetConnector {
            app: parts.app.clone(),
            device: parts.device.clone(),
            cred_path,
            credential,
            refused: None,
            enroll: enroll.clone(),
        };
        let agent_config = AgentConfig {
            peer: "fleet".into(),
            backoff: wrale_sync::Backoff {
                initial: fleet.backoff.initial,
                max: fleet.backoff.max,
                factor: 2.0,
            },
            seed: None,
            snapshot_every: 64,
            telemetry_batch: fleet.telemetry_batch,
            telemetry_interval: config.sampling.interval.max(Duration::from_millis(100)),
            resync_after: fleet.resync_after,
            ..AgentConfig::default()
        };
        let store = parts.persist.store();
        let ring = parts.persist.ring();
        let agent_validator = validator.clone();
        let agent = parts.persist.start_agent(move |twin| {
            let (agent, handle) = Agent::new(
                twin,
                Box::new(store),
                Box::new(connector),
                Box::new(agent_validator),
                agent_config,
            );
            (agent.with_telemetry(Box::new(ring)), handle)
        });
        if let (Some(agent), Some(handle)) = (agent, parts.persist.agent()) {
            status = Some(handle.status());
            parts
                .app
                .set_degraded(Some("the fleet has not been reached yet".into()));
            task = Some(tokio::spawn(agent.run(shutdown.clone())));
            tokio::spawn(watch_status(
                handle.status(),
                parts.app.clone(),
                enroll.clone(),
                shutdown.clone(),
            ));
            tokio::spawn(apply_loop(
                Some(handle.verdicts()),
                applier.clone(),
                shutdown.clone(),
            ));
            if let Some(rx) = handle.commands() {
                tokio::spawn(command_loop(rx, parts.commands.clone(), shutdown.clone()));
            }
            tracing::info!(
                url = fleet.url.as_deref().unwrap_or(""),
                "edge agent started"
            );
        }
    } else {
        parts.app.set_degraded(None);
        // No agent: evaluate what the twin holds from earlier local edits once.
        let applier = applier.clone();
        let v = validator.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Some(verdict) = applier.evaluate(&v) {
                applier.apply(verdict).await;
            }
            apply_loop(None, applier, shutdown).await;
        });
    }
    FleetHandle {
        inner: Arc::new(HandleInner {
            enabled: fleet.enabled(),
            persist: parts.persist,
            validator,
            applier,
            status,
            enroll,
            applied,
            task: Mutex::new(task),
        }),
    }
}

/// Keeps the daemon's degraded mode in step with the agent's.
async fn watch_status(
    mut rx: watch::Receiver<AgentStatus>,
    app: AppState,
    enroll: Arc<Mutex<EnrollState>>,
    shutdown: CancellationToken,
) {
    let mut last_mode = None;
    loop {
        let s = rx.borrow_and_update().clone();
        let reason = match s.mode {
            AgentMode::Normal => None,
            AgentMode::Degraded => {
                let e = lock(&enroll).clone();
                Some(if !e.enrolled {
                    format!(
                        "not enrolled yet{}",
                        e.last_error.map(|m| format!(": {m}")).unwrap_or_default()
                    )
                } else {
                    s.last_error
                        .clone()
                        .unwrap_or_else(|| "the fleet has not been reached yet".into())
                })
            }
        };
        app.set_degraded(reason.clone());
        if last_mode != Some(s.mode) {
            match s.mode {
                AgentMode::Normal => tracing::info!("fleet reached: mode normal"),
                AgentMode::Degraded if last_mode.is_some() => tracing::warn!(
                    "fleet link lost: mode degraded ({})",
                    reason.as_deref().unwrap_or("")
                ),
                AgentMode::Degraded => {}
            }
            last_mode = Some(s.mode);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// How often a desired config that could not be put in force (safe mode, an
/// engine refusal) is tried again.
const RETRY_APPLY: Duration = Duration::from_secs(10);

/// Applies every verdict the agent publishes (when it runs), and retries a
/// config that could not be put in force.
async fn apply_loop(
    mut rx: Option<watch::Receiver<Option<ConfigVerdict>>>,
    applier: Applier,
    shutdown: CancellationToken,
) {
    let mut retry = tokio::time::interval(RETRY_APPLY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(rx) = &mut rx {
            let verdict = rx.borrow_and_update().clone();
            if let Some(v) = verdict {
                applier.apply(v).await;
            }
        }
        let changed = async {
            match &mut rx {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            ok = changed => if !ok { return },
            _ = retry.tick() => applier.retry().await,
        }
    }
}

/// Executes the fleet's commands through the engine-checked command path and
/// answers each (a refusal carries the rule as its code).
async fn command_loop(
    mut rx: tokio::sync::mpsc::Receiver<wrale_sync::agent::IncomingCommand>,
    commands: CommandSender,
    shutdown: CancellationToken,
) {
    loop {
        let cmd = tokio::select! {
            () = shutdown.cancelled() => return,
            c = rx.recv() => match c { Some(c) => c, None => return },
        };
        let kind = cmd.request.command.kind();
        tracing::info!(id = %cmd.id, command = ?kind, actor = %cmd.request.actor, "fleet command");
        match commands.execute(cmd.request.clone()).await {
            Ok(outcome) => {
                let result = serde_json::to_value(&outcome).ok();
                cmd.done(result);
            }
            Err(e) if e.is_refusal() => {
                tracing::warn!(id = %cmd.id, "fleet command refused: {e}");
                let code = e.rule().unwrap_or(e.code()).to_owned();
                cmd.refused(code, e.to_string());
            }
            Err(e) => {
                tracing::error!(id = %cmd.id, "fleet command failed: {e}");
                cmd.failed(e.code(), e.to_string());
            }
        }
    }
}

/// Enrolls when needed, then opens the sync WebSocket with the credential.
struct FleetConnector {
    app: AppState,
    device: DeviceInfo,
    cred_path: PathBuf,
    credential: Option<String>,
    /// A refused token and when it may be tried again.
    refused: Option<(String, tokio::time::Instant)>,
    enroll: Arc<Mutex<EnrollState>>,
}

fn sync_err(m: impl Into<String>) -> wrale_sync::Error {
    wrale_sync::Error::Transport(m.into())
}

impl FleetConnector {
    /// One enrollment attempt; stores the credential on success.
    async fn enroll(&mut self) -> wrale_sync::Result<String> {
        let config = self.app.config();
        let fleet = &config.fleet;
        let token = match fleet.enrollment_token() {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(self.enroll_failed(enroll::EnrollError::NoToken(
                    "set fleet.enrollment_token or fleet.enrollment_token_file".into(),
                )));
            }
            Err(m) => return Err(self.enroll_failed(enroll::EnrollError::NoToken(m))),
        };
        if let Some((refused, until)) = &self.refused {
            // The same refused token is tried again only at the slow pace; a new
            // one (the operator fixed the config, SIGHUP) at once.
            if *refused == token && tokio::time::Instant::now() < *until {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                return Err(sync_err(format!(
                    "the enrollment token was refused; next try in {}s",
                    left.as_secs()
                )));
            }
        }
        let url = fleet
            .enroll_url()
            .ok_or_else(|| sync_err("fleet.url is not set"))?;
        lock(&self.enroll).attempts += 1;
        let req = enroll::EnrollRequest::new(token.clone(), &self.device);
        // Built per attempt: a reload may have changed fleet.ca_file.
        let tls = fleet.tls_config().map_err(|m| {
            lock(&self.enroll).last_error = Some(m.clone());
            tracing::error!("cannot enroll with the fleet: {m}");
            sync_err(m)
        })?;
        let http = wrale_tls::HttpClient::new(tls, CONNECT_TIMEOUT, ENROLL_HTTP_TIMEOUT)
            .user_agent(concat!("metald/", env!("CARGO_PKG_VERSION")));
        match enroll::enroll(&http, url, &req).await {
            Ok(done) => {
                let path = self.cred_path.clone();
                let credential = done.credential.clone();
                let written = tokio::task::spawn_blocking(move || {
                    enroll::write_credential(&path, &credential)
                })
                .await
                .map_err(|e| sync_err(format!("credential writer: {e}")))?;
                if let Err(e) = written {
                    let m = format!(
                        "enrolled, but cannot store the credential in {}: {e}",
                        self.cred_path.display()
                    );
                    tracing::error!("{m}");
                    return Err(sync_err(m));
                }
                tracing::info!(
                    device = %done.device_id,
                    group = done.group.as_deref().unwrap_or("-"),
                    file = %self.cred_path.display(),
                    "enrolled with the fleet; credential stored"
                );
                {
                    let mut e = lock(&self.enroll);
                    e.enrolled = true;
                    e.last_error = None;
                }
                self.refused = None;
                self.credential = Some(done.credential.clone());
                Ok(done.credential)
            }
            Err(e) => {
                if !e.is_transient() {
                    let slow = config.fleet.backoff.max;
                    self.refused = Some((token, tokio::time::Instant::now() + slow));
                }
                Err(self.enroll_failed(e))
            }
        }
    }

    fn enroll_failed(&self, e: enroll::EnrollError) -> wrale_sync::Error {
        match &e {
            enroll::EnrollError::Unreachable(_) => tracing::warn!("{e}; retrying with backoff"),
            enroll::EnrollError::NoToken(_) => {
                tracing::error!("cannot enroll with the fleet: {e}")
            }
            enroll::EnrollError::Refused(_) | enroll::EnrollError::Conflict(_) => {
                tracing::error!(
                    "{e}; retrying slowly (every {}): fix fleet.enrollment_token and reload \
                     (SIGHUP) to try a new one at once",
                    humantime::format_duration(self.app.config().fleet.backoff.max)
                )
            }
        }
        lock(&self.enroll).last_error = Some(e.to_string());
        sync_err(e.to_string())
    }
}

#[async_trait]
impl Connector for FleetConnector {
    async fn connect(&mut self) -> wrale_sync::Result<Box<dyn Transport>> {
        let credential = match &self.credential {
            Some(c) => c.clone(),
            None => self.enroll().await?,
        };
        let url = self
            .app
            .config()
            .fleet
            .sync_url(self.device.id.as_str())
            .ok_or_else(|| sync_err("fleet.url is not set"))?;
        let tls = if url.starts_with("wss://") {
            Some(self.app.config().fleet.tls_config().map_err(sync_err)?)
        } else {
            None
        };
        let connect = WsTransport::connect_with_tls(&url, Some(&credential), tls);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(t)) => Ok(Box::new(t) as Box<dyn Transport>),
            Ok(Err(e)) => {
                let m = e.to_string();
                if m.contains("401") {
                    tracing::error!(
                        %url,
                        "fleetd refused the device credential (revoked?): remove {} and set a \
                         new enrollment token to enroll again",
                        self.cred_path.display()
                    );
                }
                Err(e)
            }
            Err(_) => Err(sync_err(format!(
                "{url}: no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Applies accepted desired configs to the running daemon.
#[derive(Debug, Clone)]
struct Applier {
    app: AppState,
    persist: Persist,
    commands: CommandSender,
    workloads: Workloads,
    validator: PolicyValidator,
    /// The config applied last (serialises applications).
    last: Arc<tokio::sync::Mutex<Option<DesiredConfig>>>,
    /// What was applied, for `/api/v1/state`.
    applied: Arc<Mutex<Option<Value>>>,
    /// A config that could not be put in force, to try again.
    failed: Arc<Mutex<Option<DesiredConfig>>>,
}

impl Applier {
    /// Tries a config that could not be put in force again.
    async fn retry(&self) {
        let failed = lock(&self.failed).take();
        if let Some(cfg) = failed {
            self.apply(ConfigVerdict::Accepted(cfg)).await;
        }
    }

    /// Evaluates the twin's desired config (and records the verdict in `reported`).
    fn evaluate(&self, validator: &dyn ConfigValidator) -> Option<ConfigVerdict> {
        self.persist.edit_twin(|t| {
            let before = t.heads();
            match t.evaluate_desired(validator, now()) {
                Ok(v) => {
                    let changed = t.heads() != before;
                    (Some(v), changed)
                }
                Err(e) => {
                    tracing::error!("cannot evaluate the desired config: {e}");
                    (None, false)
                }
            }
        })
    }

    /// Writes the outcome of applying `cfg` into `reported`, unless the twin's
    /// desired config moved on meanwhile: the agent has then already reported
    /// its verdict on the newer one, which a stale outcome must not overwrite.
    fn report(&self, cfg: &DesiredConfig, status: ConfigStatus) {
        self.persist.edit_twin(|t| {
            if t.desired().ok().as_ref() != Some(cfg) {
                tracing::debug!(
                    version = status.version,
                    "desired config changed while it was applied; outcome not reported"
                );
                return ((), false);
            }
            let update = ReportedUpdate {
                config: Some(status),
                ..Default::default()
            };
            match t.report(&update, now()) {
                Ok(changed) => ((), changed),
                Err(e) => {
                    tracing::error!("cannot report the config status: {e}");
                    ((), false)
                }
            }
        });
    }

    /// Applies a verdict: a rejection is logged (the device keeps its config);
    /// an accepted config is put in force, and a failure to do so is reported.
    async fn apply(&self, verdict: ConfigVerdict) {
        let cfg = match verdict {
            ConfigVerdict::Rejected(r) => {
                tracing::warn!(rule = %r.rule, "desired config rejected: {}", r.reason);
                *lock(&self.failed) = None;
                return;
            }
            ConfigVerdict::Accepted(cfg) => cfg,
        };
        let mut last = self.last.lock().await;
        if last.is_none() && cfg == DesiredConfig::default() && lock(&self.failed).is_none() {
            // Nothing desired yet: the policy in force since start (the board
            // floor and the local layers) is what an empty config stands for;
            // only `workload.x = false` keys (invisible in the typed config) count.
            if let Err(r) = self.apply_workloads().await {
                tracing::warn!(rule = %r.rule, "desired workloads: {}", r.reason);
            }
            *last = Some(cfg);
            return;
        }
        if last.as_ref() == Some(&cfg) {
            // `workload.x = false` and no key read the same in the typed config:
            // the workload set is checked against the raw fields every time.
            if let Err(r) = self.apply_workloads().await {
                tracing::warn!(rule = %r.rule, "desired workloads: {}", r.reason);
            }
            return;
        }
        match self.put_in_force(&cfg, last.as_ref()).await {
            Ok(()) => {
                tracing::info!(version = cfg.config_version, "desired config applied");
                *lock(&self.failed) = None;
                self.report(
                    &cfg,
                    ConfigStatus {
                        version: cfg.config_version,
                        accepted: true,
                        rejection: None,
                    },
                );
                *lock(&self.applied) = Some(json!({
                    "config_version": cfg.config_version,
                    "at": now(),
                }));
                *last = Some(cfg);
            }
            Err(r) => {
                tracing::error!(rule = %r.rule, "desired config not applied: {}", r.reason);
                self.report(
                    &cfg,
                    ConfigStatus {
                        version: cfg.config_version,
                        accepted: false,
                        rejection: Some(r),
                    },
                );
                // What did go through stays; everything is put in force again on
                // the next try.
                *last = None;
                *lock(&self.failed) = Some(cfg);
            }
        }
    }

    async fn put_in_force(
        &self,
        cfg: &DesiredConfig,
        last: Option<&DesiredConfig>,
    ) -> Result<(), Rejection> {
        // Thresholds, minimum duty, default fan profile and policy overrides: a
        // fleet layer on the board floor with the local [policy] layers.
        let policy = self.validator.assemble(cfg)?;
        self.commands
            .set_policy(policy)
            .await
            .map_err(|e| Rejection::new("engine_unavailable", e.message().to_owned()))?;
        // The running fan profile and GPIO outputs change only through commands.
        for command in cfg.commands_since(last)? {
            self.execute(command).await?;
        }
        self.apply_workloads().await
    }

    /// One command through the engine-checked command path, as the fleet.
    async fn execute(&self, command: Command) -> Result<(), Rejection> {
        let what = format!("{:?}", command.kind());
        let req = CommandRequest::new(Actor::Fleet, "desired config", command);
        self.commands
            .execute(req)
            .await
            .map(|_| ())
            .map_err(|e| Rejection::new(e.rule().unwrap_or(e.code()), format!("{what}: {e}")))
    }

    /// The configured `[[workloads]]` that the desired config does not switch
    /// off (`workload.<name> = false`); a workload without a desired key runs as
    /// configured. A desired workload that is not configured cannot be started.
    async fn apply_workloads(&self) -> Result<(), Rejection> {
        let fields = self
            .persist
            .with_twin(|t| t.fields(wrale_sync::Section::Desired))
            .map_err(|e| Rejection::new("invalid_field", e.to_string()))?;
        let config = self.app.config();
        let run = wrale_sync::workloads_to_run(
            &fields,
            config.workloads.iter().map(|w| w.name.as_str()),
        )?;
        let specs: Vec<_> = config
            .workloads
            .iter()
            .filter(|w| run.contains(&w.name.as_str()))
            .cloned()
            .collect();
        self.workloads.apply(&specs).await;
        Ok(())
    }
}

impl FleetHandle {
    /// Waits (at most `limit`) for the agent to persist its sync state and stop
    /// after the shutdown token fired.
    pub async fn join(&self, limit: Duration) {
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            match tokio::time::timeout(limit, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!("edge agent: {e}"),
                Ok(Err(e)) => tracing::error!("edge agent task: {e}"),
                Err(_) => tracing::warn!("edge agent did not stop within {limit:?}"),
            }
        }
    }

    /// After a config reload: `[[workloads]]` were applied as configured; switch
    /// off again the ones the desired config keeps off.
    pub async fn after_reload(&self) {
        if let Err(r) = self.inner.applier.apply_workloads().await {
            tracing::warn!(rule = %r.rule, "desired workloads: {}", r.reason);
        }
    }

    /// Whether `[fleet] url` is set.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The agent's status (`None` without `[fleet] url`).
    pub fn status(&self) -> Option<AgentStatus> {
        self.inner.status.as_ref().map(|r| r.borrow().clone())
    }

    /// Fleet and sync state for `/api/v1/state`.
    pub fn state_json(&self) -> Value {
        let applied = lock(&self.inner.applied).clone();
        let Some(s) = self.status() else {
            return json!({ "enabled": false, "applied": applied });
        };
        json!({
            "enabled": true,
            "enrollment": *lock(&self.inner.enroll),
            "connected": s.connected,
            "mode": match s.mode { AgentMode::Normal => "normal", AgentMode::Degraded => "degraded" },
            "last_sync": s.last_sync,
            "sync_lag_changes": s.sync_lag,
            "reconnects": s.reconnects,
            "frames_rejected": s.frames_rejected,
            "telemetry_sent": s.telemetry_sent,
            "telemetry_acked": s.telemetry_acked,
            "last_error": s.last_error,
            "applied": applied,
        })
    }

    /// The sync metrics, Prometheus text, appended to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.status().unwrap_or_default();
        let enabled = self.inner.enabled;
        let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            "wrale_sync_enabled",
            "Whether [fleet] url is set (the edge agent runs).",
            "gauge",
            f64::from(u8::from(enabled)),
        );
        gauge(
            "wrale_fleet_enrolled",
            "Whether a fleet credential is stored.",
            "gauge",
            f64::from(u8::from(lock(&self.inner.enroll).enrolled)),
        );
        gauge(
            "wrale_sync_connected",
            "Whether the sync link to the fleet is open.",
            "gauge",
            f64::from(u8::from(s.connected)),
        );
        gauge(
            "wrale_sync_lag_changes",
            "Local twin changes the fleet has not acknowledged.",
            "gauge",
            s.sync_lag as f64,
        );
        gauge(
            "wrale_sync_last_success_timestamp_seconds",
            "When the last valid sync frame from the fleet was applied (0: never).",
            "gauge",
            s.last_sync.map_or(0.0, |t| t.as_millis() as f64 / 1000.0),
        );
        gauge(
            "wrale_sync_reconnects_total",
            "Fleet connections lost or failed and retried.",
            "counter",
            s.reconnects as f64,
        );
        gauge(
            "wrale_sync_frames_rejected_total",
            "Frames from the fleet rejected (malformed, wrong device).",
            "counter",
            s.frames_rejected as f64,
        );
        gauge(
            "wrale_telemetry_sent_total",
            "Telemetry frames sent to the fleet (including re-sends).",
            "counter",
            s.telemetry_sent as f64,
        );
        gauge(
            "wrale_telemetry_acked_total",
            "Telemetry records acknowledged by the fleet.",
            "counter",
            s.telemetry_acked as f64,
        );
        gauge(
            "wrale_telemetry_pending",
            "Telemetry records in the ring not yet acknowledged.",
            "gauge",
            self.inner.persist.ring_len() as f64,
        );
    }

    /// A local operator's edit of `desired` (flat fields, `null` removes a key):
    /// checked, validated against the board floor and the local policy, written
    /// by `operator`, then applied. Returns the twin's desired fields.
    pub async fn patch_desired(
        &self,
        patch: BTreeMap<String, Value>,
        operator: &str,
    ) -> Result<Value, ApiError> {
        let mut writes = Vec::with_capacity(patch.len());
        for (key, value) in patch {
            if !DesiredConfig::is_known_key(&key) {
                return Err(ApiError::invalid_body(format!(
                    "{key}: not a desired field (warn_c, throttle_c, critical_c, fan_profile, \
                     fan_curve, min_fan_duty_pct, policy_overrides, config_version, gpio.<pin>, \
                     workload.<name>)"
                ))
                .with_detail("field", key));
            }
            let v = match value {
                Value::Null => None,
                Value::Bool(b) => Some(FieldValue::Bool(b)),
                Value::Number(n) => Some(match n.as_i64() {
                    Some(i) => FieldValue::Int(i),
                    None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                }),
                Value::String(s) => Some(FieldValue::Str(s)),
                other => {
                    return Err(ApiError::invalid_body(format!(
                        "{key}: expected a string, number, boolean or null, found {other}"
                    ))
                    .with_detail("field", key));
                }
            };
            writes.push((key, v));
        }
        let validator = self.inner.validator.clone();
        let author = Author::local_operator(operator);
        let written = self.inner.persist.edit_twin(|t| {
            let r = (|| -> Result<bool, ApiError> {
                let mut fields = t
                    .fields(wrale_sync::Section::Desired)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                for (k, v) in &writes {
                    match v {
                        Some(v) => fields.insert(k.clone(), v.clone()),
                        None => fields.remove(k),
                    };
                }
                let cfg = DesiredConfig::from_fields(&fields)
                    .map_err(|e| ApiError::invalid_body(e.to_string()))?;
                validator
                    .validate(&cfg)
                    .map_err(|r| ApiError::policy_violation(&r.rule, r.reason))?;
                let at = now();
                let mut changed = false;
                for (k, v) in writes {
                    let path = FieldPath::new(wrale_sync::Section::Desired, k);
                    changed |= t
                        .set_field(&path, v, &author, at)
                        .map_err(|e| ApiError::internal(e.to_string()))?
                        .is_some();
                }
                Ok(changed)
            })();
            match r {
                Ok(changed) => (Ok(()), changed),
                Err(e) => (Err(e), false),
            }
        });
        written?;
        // Evaluate here as well: the agent may be busy connecting.
        if let Some(v) = self.inner.applier.evaluate(&self.inner.validator) {
            self.inner.applier.apply(v).await;
        }
        let fields = self
            .inner
            .persist
            .with_twin(|t| t.fields(wrale_sync::Section::Desired))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(json!({ "desired": fields }))
    }
}
