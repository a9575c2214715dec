//! Wiring: config -> board -> sampling loop + workloads + API, and the way out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wrale_core::Timestamp;
use wrale_core::model::DeviceId;
use wrale_hal::Board;

use crate::config::{Config, ConfigError, Loader};
use crate::http::{self, ApiState, ReloadRequest};
use crate::notify::{Notifier, heartbeat_fresh};
use crate::persist::Persist;
use crate::safety::{Alert, PolicyHook, SafetyHook, Severity};
use crate::sampler::{CommandPowerOff, PowerOff, Sampler};
use crate::signals::Signals;
use crate::state::{AppState, DeviceSummary};
use crate::workloads::Workloads;

/// Runs the daemon with `config` until `signals` says stop: the HAL backend named
/// by the config, the board's built-in safety policy, the shutdown command; reload requests
/// re-validate the same config (use [`Daemon::reload_from`] to re-read a file).
pub async fn run(config: Config, listener: TcpListener, signals: Signals) -> anyhow::Result<()> {
    Daemon::new(config).run(listener, signals).await
}

/// The daemon, with its seams: the board, the safety hook, the power-off action,
/// the config source for reloads and the systemd notifier can each be replaced.
pub struct Daemon {
    config: Config,
    loader: Option<Loader>,
    board: Option<Board>,
    hook: Option<Box<dyn SafetyHook>>,
    power_off: Option<Box<dyn PowerOff>>,
    notifier: Option<Notifier>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("backend", &self.config.backend_name())
            .field("loader", &self.loader)
            .field("board", &self.board)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            loader: None,
            board: None,
            hook: None,
            power_off: None,
            notifier: None,
        }
    }

    /// Reloads re-read the config through `loader` (same file, environment, flags).
    pub fn reload_from(mut self, loader: Loader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Uses this board instead of opening `[hal]` (tests, embedding).
    pub fn board(mut self, board: Board) -> Self {
        self.board = Some(board);
        self
    }

    /// Uses this safety hook instead of [`PolicyHook`] with the board's policy.
    pub fn safety_hook(mut self, hook: Box<dyn SafetyHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Uses this emergency power-off instead of the configured command.
    pub fn power_off(mut self, power_off: Box<dyn PowerOff>) -> Self {
        self.power_off = Some(power_off);
        self
    }

    /// Talks to systemd through this notifier.
    pub fn notifier(mut self, notifier: Option<Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Talks to systemd if `NOTIFY_SOCKET` is set.
    pub fn notify_systemd(self) -> anyhow::Result<Self> {
        let n = Notifier::from_env().context("NOTIFY_SOCKET")?;
        Ok(self.notifier(n))
    }

    /// Runs until `signals.shutdown` is cancelled, then stops the API, the
    /// workloads and the sampling loop (outputs to fail-safe before the board is
    /// dropped) and returns.
    pub async fn run(self, listener: TcpListener, mut signals: Signals) -> anyhow::Result<()> {
        let Daemon {
            config,
            loader,
            board,
            hook,
            power_off,
            notifier,
        } = self;
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data.dir).with_context(|| {
            format!(
                "cannot create the data directory {} (data.dir)",
                config.data.dir.display()
            )
        })?;
        let (board, sim) = match board {
            Some(b) => (b, None),
            None => open_board(&config).await?,
        };
        let profile = match config.board_profile_override() {
            Ok(Some(p)) => p,
            Ok(None) => board.profile().clone(),
            Err(e) => anyhow::bail!("board.profile: {e}"),
        };
        let mut policy_json = serde_json::json!({ "floor": &profile, "layers": [] });
        let hook = match hook {
            Some(h) => h,
            None => {
                let layers = config
                    .policy
                    .load()
                    .map_err(|e| anyhow::anyhow!("policy.layers: {e}"))?;
                let floor = wrale_core::policy::BoardFloor::from_profile(&profile);
                let set = wrale_core::policy::PolicySet::assemble(&floor, &layers)
                    .map_err(|e| anyhow::anyhow!("policy.layers: rule {}: {}", e.rule, e.reason))?;
                let files = config
                    .policy
                    .files()
                    .map_err(|e| anyhow::anyhow!("policy.layers: {e}"))?;
                policy_json["layers"] = files
                    .iter()
                    .zip(&layers)
                    .map(|(f, l)| serde_json::json!({ "file": f, "layer": l }))
                    .collect();
                if !layers.is_empty() {
                    tracing::info!(layers = layers.len(), "local policy layers assembled");
                }
                Box::new(PolicyHook::new(set))
            }
        };
        policy_json["engine"] = hook.name().into();
        let device = DeviceSummary {
            id: config.device.id.clone().unwrap_or_else(host_device_id),
            model: profile.model,
            board: profile.name.clone(),
            backend: board.backend(),
            agent_version: env!("CARGO_PKG_VERSION"),
            started_at: Timestamp::from_system(std::time::SystemTime::now()),
            safety_engine: hook.name(),
        };
        let state = AppState::new(
            device,
            profile.clone(),
            config.clone(),
            signals.shutdown.clone(),
        );
        let persist = open_persist(&config, &state).await?;
        if config.api.tokens.is_empty() {
            tracing::warn!("no API tokens configured: every route but /health answers 401");
        }
        let (step, sim_power_off) = sim_parts(sim, &state);
        let power_off = power_off.or(sim_power_off).unwrap_or_else(|| {
            Box::new(
                CommandPowerOff::new(config.shutdown.command.clone())
                    .with_reboot(config.shutdown.reboot_command.clone()),
            )
        });
        let workloads = Workloads::new().cgroups(
            crate::cgroup::CgroupRoot::new(&config.cgroup.root),
            config.cgroup.period,
        );
        workloads.apply(&config.workloads).await;
        let sampler = Sampler::start(
            board,
            profile,
            hook,
            state.clone(),
            workloads.clone(),
            power_off,
            step,
            Some(persist.clone()),
        )
        .context("cannot start the sampling thread")?;

        let fleet = crate::fleet::start(
            crate::fleet::FleetParts {
                app: state.clone(),
                persist: persist.clone(),
                commands: sampler.commands(),
                workloads: workloads.clone(),
                profile: state.profile().clone(),
                // Parsed and checked when the config loaded.
                layers: config.policy.load().unwrap_or_default(),
                device: crate::fleet::device_info(
                    &config,
                    &state.device().id,
                    state.device().model,
                    state.device().agent_version,
                ),
            },
            signals.shutdown.clone(),
        );

        let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
        let api = ApiState {
            app: state.clone(),
            commands: sampler.commands(),
            workloads: workloads.clone(),
            reload: reload_tx,
            persist,
            policy: Arc::new(policy_json),
            fleet: fleet.clone(),
        };
        let addr = listener.local_addr().context("listener address")?;
        tracing::info!(%addr, backend = state.device().backend, device = %state.device().id, "listening");

        let shutdown = signals.shutdown.clone();
        let server = tokio::spawn(
            axum::serve(listener, http::router(api))
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        );

        let notifier = notifier.map(Arc::new);
        let watchdog = notifier
            .clone()
            .map(|n| tokio::spawn(systemd_loop(n, state.clone())));

        let reloader = Reloader {
            loader,
            state: state.clone(),
            workloads: workloads.clone(),
            notifier: notifier.clone(),
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(()) = signals.reload.recv() => {
                    let _logged = reloader.reload().await;
                    fleet.after_reload().await;
                }
                Some(req) = reload_rx.recv() => {
                    let result = reloader.reload().await;
                    fleet.after_reload().await;
                    let _caller_gone = req.reply.send(result);
                }
            }
        }

        tracing::info!("shutting down");
        if let Some(n) = &notifier {
            let _best_effort = n.notify("STOPPING=1");
        }
        if let Some(w) = watchdog {
            w.abort();
        }
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!("API server: {e}"),
            Ok(Err(e)) => tracing::error!("API server task: {e}"),
            Err(_) => tracing::warn!("API server did not stop within 10 s"),
        }
        fleet.join(Duration::from_secs(5)).await;
        workloads.stop_all().await;
        tokio::task::spawn_blocking(move || sampler.stop())
            .await
            .context("stopping the sampling loop")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the twin, the audit log and the telemetry ring in `data.dir` (blocking
/// file work off the runtime).
async fn open_persist(config: &Config, state: &AppState) -> anyhow::Result<Persist> {
    let d = state.device();
    let info = crate::fleet::device_info(config, &d.id, d.model, d.agent_version);
    let dir = config.data.dir.clone();
    let now = Timestamp::from_system(std::time::SystemTime::now());
    tokio::task::spawn_blocking(move || Persist::open(&dir, &info, now))
        .await
        .context("opening the data directory")?
        .with_context(|| format!("data.dir {}", config.data.dir.display()))
}

/// A simulated board opened from `[hal]`, with how its time runs.
#[cfg(feature = "sim")]
struct OpenedSim {
    sim: wrale_hal::sim::SimBoard,
    virtual_time: bool,
}

#[cfg(not(feature = "sim"))]
struct OpenedSim;

/// Opens `[hal]`. The `sim` backend is opened as a `SimBoard`, so metald can drive
/// its virtual clock and power it off.
async fn open_board(config: &Config) -> anyhow::Result<(Board, Option<OpenedSim>)> {
    let hal = config.hal.clone();
    let opened = tokio::task::spawn_blocking(move || -> wrale_hal::Result<_> {
        #[cfg(feature = "sim")]
        if let wrale_hal::BackendConfig::Sim(c) = &hal {
            // metald samples in real time (the sampling loop is paced by the wall
            // clock), so a simulated board starts at the wall clock unless the
            // config fixes `hal.start` (deterministic tests and scripts).
            let mut c = c.clone();
            c.start = c
                .start
                .or_else(|| Some(Timestamp::from_system(std::time::SystemTime::now())));
            let sim = wrale_hal::sim::SimBoard::new(&c)?;
            let virtual_time = c.time == wrale_hal::sim::SimTime::Virtual;
            return Ok((sim.board(), Some(OpenedSim { sim, virtual_time })));
        }
        Ok((wrale_hal::open(&hal)?, None))
    })
    .await
    .context("opening the HAL backend")?;
    opened.with_context(|| {
        format!(
            "cannot open the {:?} HAL backend ([hal])",
            config.backend_name()
        )
    })
}

type Step = Option<Box<dyn FnMut(Duration) + Send>>;

/// For a simulated board: a clock driver (virtual time advances one sampling
/// interval per sample) and a power-off that powers the simulated board off, raises
/// a `simulated_power_off` alert and stops the daemon, as a real power-off would,
/// and reboots it in place for a `reboot` command.
#[cfg(feature = "sim")]
fn sim_parts(sim: Option<OpenedSim>, state: &AppState) -> (Step, Option<Box<dyn PowerOff>>) {
    let Some(OpenedSim { sim, virtual_time }) = sim else {
        return (None, None);
    };
    let step: Step = if virtual_time {
        let stepped = sim.clone();
        Some(Box::new(move |d| stepped.step(d)))
    } else {
        None
    };
    let power_off = SimPowerOff {
        sim,
        state: state.clone(),
    };
    (step, Some(Box::new(power_off)))
}

#[cfg(not(feature = "sim"))]
fn sim_parts(_sim: Option<OpenedSim>, _state: &AppState) -> (Step, Option<Box<dyn PowerOff>>) {
    (None, None)
}

#[cfg(feature = "sim")]
struct SimPowerOff {
    sim: wrale_hal::sim::SimBoard,
    state: AppState,
}

#[cfg(feature = "sim")]
impl PowerOff for SimPowerOff {
    fn power_off(&mut self, reason: &str) -> Result<(), String> {
        tracing::error!("powering the simulated board off: {reason}");
        self.sim.power_off();
        self.state.raise_alert(Alert {
            id: "simulated_power_off".into(),
            severity: Severity::Critical,
            message: format!("simulated board powered off: {reason}"),
            since: self.sim.now(),
        });
        self.state.shutdown_token().cancel();
        Ok(())
    }

    fn can_reboot(&self) -> bool {
        true
    }

    /// Reboots the simulated board in place: a new boot id, the boot time now,
    /// the sticky throttle bits cleared; metald keeps running.
    fn reboot(&mut self, reason: &str) -> Result<(), String> {
        tracing::warn!("rebooting the simulated board: {reason}");
        self.sim.reboot();
        if self.sim.is_powered() {
            Ok(())
        } else {
            Err("the simulated board did not come back: no power source can feed it".into())
        }
    }

    fn reboots_in_place(&self) -> bool {
        true
    }
}

struct Reloader {
    loader: Option<Loader>,
    state: AppState,
    workloads: Workloads,
    notifier: Option<Arc<Notifier>>,
}

impl Reloader {
    /// Loads and validates the new config; applies it, or logs why not and keeps
    /// the running one.
    async fn reload(&self) -> Result<(), ConfigError> {
        let old = self.state.config();
        let loaded = match &self.loader {
            Some(loader) => {
                let loader = loader.clone();
                tokio::task::spawn_blocking(move || loader.load())
                    .await
                    .unwrap_or_else(|e| {
                        Err(ConfigError::Env {
                            var: "-".into(),
                            message: format!("config loader panicked: {e}"),
                        })
                    })
            }
            None => Ok((*old).clone()),
        };
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("config reload failed, keeping the running config: {e}");
                return Err(e);
            }
        };
        if let Some(n) = &self.notifier {
            let _best_effort = n.notify("RELOADING=1");
        }
        for (key, changed) in [
            ("api.bind", old.api.bind != new.api.bind),
            ("hal", old.hal != new.hal),
            ("board", old.board != new.board),
            ("data.dir", old.data.dir != new.data.dir),
            ("device.id", old.device.id != new.device.id),
            ("log", old.log != new.log),
            ("policy", old.policy != new.policy),
            ("fleet.url", old.fleet.url != new.fleet.url),
            (
                "sampling.stream_capacity",
                old.sampling.stream_capacity != new.sampling.stream_capacity,
            ),
        ] {
            if changed {
                tracing::warn!(key, "changed in the config; takes effect after a restart");
            }
        }
        let new = Arc::new(new);
        self.state.set_config(new.clone());
        self.workloads.apply(&new.workloads).await;
        tracing::info!(
            tokens = new.api.tokens.len(),
            workloads = new.workloads.len(),
            interval = ?new.sampling.interval,
            "config reloaded"
        );
        if let Some(n) = &self.notifier {
            let _best_effort = n.notify("READY=1");
        }
        Ok(())
    }
}

/// Longest a diagnostics run may hold the sampling thread and still count as alive.
const MAX_BUSY: Duration = Duration::from_secs(60);

/// READY=1 once the first sample is in; then WATCHDOG=1 at half the watchdog
/// timeout, only while the sampling loop's heartbeat is fresh.
async fn systemd_loop(n: Arc<Notifier>, state: AppState) {
    while !state.ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Err(e) = n.notify("READY=1\nSTATUS=sampling") {
        tracing::warn!("sd_notify READY: {e}");
    }
    let Some(timeout) = n.watchdog() else {
        return;
    };
    let period = (timeout / 2).max(Duration::from_millis(1));
    let mut stale_logged = false;
    loop {
        tokio::time::sleep(period).await;
        let interval = state.config().sampling.interval;
        let hb = state.heartbeat();
        // A diagnostics run holds the sampling thread for a bounded time.
        let busy = hb.busy_for().is_some_and(|d| d < MAX_BUSY);
        if busy || heartbeat_fresh(hb.age(), interval) {
            stale_logged = false;
            if let Err(e) = n.notify("WATCHDOG=1") {
                tracing::warn!("sd_notify WATCHDOG: {e}");
            }
        } else if !std::mem::replace(&mut stale_logged, true) {
            tracing::error!("sampling loop heartbeat is stale: not feeding the systemd watchdog");
        }
    }
}

/// The host name as a device id (lower-cased, other characters as `-`), or `metald`.
fn host_device_id() -> DeviceId {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let mut id: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    id = id.trim_matches('-').to_owned();
    DeviceId::new(id)
        .unwrap_or_else(|_| DeviceId::new("metald").unwrap_or_else(|e| unreachable!("{e}")))
}
