//! Workloads: configured commands run as supervised child processes.
//!
//! Each workload runs in its own process group, so pausing, resuming and stopping
//! reach the processes it spawns too. A workload that exits is started again
//! according to its [`RestartPolicy`], after a delay that doubles with each quick
//! failure up to `backoff.max` (a run longer than `backoff.max` resets it).
//! Throttling sends SIGSTOP to the group, and lifting it SIGCONT; a workload with
//! `throttle = "cpu-limit"` is instead moved into its own cgroup v2 group under
//! `cgroup.root` and limited with `cpu.max` ([`crate::cgroup`]), falling back to
//! SIGSTOP/SIGCONT with a warning when the cgroup cannot be used. Stopping sends
//! SIGTERM, then SIGKILL after `stop_timeout`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, CgroupRoot};
use crate::config::{RestartPolicy, ThrottleMode, WorkloadConfig};

/// Default `cpu_limit_pct`.
pub const DEFAULT_CPU_LIMIT_PCT: f64 = 20.0;

/// What a workload is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadState {
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Running but stopped by SIGSTOP (throttled).
    Paused,
    /// Running under a cgroup CPU limit (throttled with `cpu-limit`).
    Limited,
    /// Waiting to be restarted.
    Backoff,
    /// Exited and not restarted (policy).
    Exited,
    /// Stopped by metald.
    Stopped,
}

/// A workload's status, as `/api/v1/workloads` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: WorkloadState,
    /// Process id of the running process (also its process group id).
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u64,
    /// How the last run ended (`exit status: 1`, `signal: 9`, `spawn failed: ...`).
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctl {
    Pause,
    Resume,
    /// Run again if exited (a `start_workload` command).
    Start,
    Stop,
}

/// Why a workload command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// No workload of that name is configured.
    #[error("workload {0:?} not found")]
    NotFound(String),
    /// Its supervisor is gone (metald is stopping).
    #[error("workload {0:?} is shutting down")]
    Gone(String),
}

#[derive(Debug)]
struct Worker {
    /// Throttled by a command (`throttle_workload`), whatever the engine says.
    manual: bool,
    spec: WorkloadConfig,
    tx: mpsc::UnboundedSender<Ctl>,
    status: Arc<Mutex<WorkloadStatus>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Inner {
    workers: BTreeMap<String, Worker>,
    throttled: bool,
    cgroups: Option<Cgroups>,
}

/// Where CPU-limited workloads get their cgroups.
#[derive(Debug, Clone)]
struct Cgroups {
    root: CgroupRoot,
    period: Duration,
}

/// Whether the engine's throttling reaches a workload.
fn throttled_by_engine(spec: &WorkloadConfig) -> bool {
    spec.throttle != ThrottleMode::Ignore
}

/// The supervisor of every workload. Cheap to clone; [`Workloads::throttle`] may be
/// called from any thread (the sampling loop calls it).
#[derive(Debug, Clone)]
pub struct Workloads {
    inner: Arc<Mutex<Inner>>,
    runtime: tokio::runtime::Handle,
}

impl Workloads {
    /// A supervisor with no workloads. Must be called inside a tokio runtime.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// CPU-limited workloads (`throttle = "cpu-limit"`) get a cgroup under `root`
    /// with `cpu.max` periods of `period`. Without this they fall back to
    /// SIGSTOP/SIGCONT.
    pub fn cgroups(self, root: CgroupRoot, period: Duration) -> Self {
        self.lock().cgroups = Some(Cgroups { root, period });
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the running set match `specs`: new workloads start, removed ones stop,
    /// changed ones restart, unchanged ones are left alone.
    pub async fn apply(&self, specs: &[WorkloadConfig]) {
        let mut to_stop = Vec::new();
        {
            let mut inner = self.lock();
            let keep: Vec<String> = inner
                .workers
                .iter()
                .filter(|(name, w)| specs.iter().any(|s| &s.name == *name && *s == w.spec))
                .map(|(name, _)| name.clone())
                .collect();
            let old = std::mem::take(&mut inner.workers);
            for (name, w) in old {
                if keep.contains(&name) {
                    inner.workers.insert(name, w);
                } else {
                    to_stop.push(w);
                }
            }
            let throttled = inner.throttled;
            let cgroups = inner.cgroups.clone();
            for spec in specs {
                if inner.workers.contains_key(&spec.name) {
                    continue;
                }
                let w = self.spawn_worker(spec.clone(), throttled, cgroups.clone());
                inner.workers.insert(spec.name.clone(), w);
            }
        }
        stop_workers(to_stop).await;
    }

    fn spawn_worker(
        &self,
        spec: WorkloadConfig,
        throttled: bool,
        cgroups: Option<Cgroups>,
    ) -> Worker {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(WorkloadStatus {
            name: spec.name.clone(),
            state: WorkloadState::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
        }));
        let task = self.runtime.spawn(supervise(
            spec.clone(),
            rx,
            status.clone(),
            throttled,
            cgroups,
        ));
        Worker {
            manual: false,
            spec,
            tx,
            status,
            task,
        }
    }

    /// Throttles (`true`) or resumes (`false`) every workload whose throttle mode
    /// is `pause` or `cpu-limit`. Workloads started while throttled start throttled.
    pub fn throttle(&self, on: bool) {
        let mut inner = self.lock();
        if inner.throttled == on {
            return;
        }
        inner.throttled = on;
        for w in inner.workers.values() {
            if throttled_by_engine(&w.spec) && !w.manual {
                let _gone = w.tx.send(if on { Ctl::Pause } else { Ctl::Resume });
            }
        }
    }

    /// Whether a workload of that name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().workers.contains_key(name)
    }

    /// Starts a workload that has exited (or is waiting to restart: now); a
    /// running one is left alone.
    pub fn start(&self, name: &str) -> Result<(), WorkloadError> {
        let inner = self.lock();
        let w = inner
            .workers
            .get(name)
            .ok_or_else(|| WorkloadError::NotFound(name.to_owned()))?;
        w.tx.send(Ctl::Start)
            .map_err(|_| WorkloadError::Gone(name.to_owned()))
    }

    /// Throttles (`true`) or resumes (`false`) one workload by command, whatever
    /// its throttle mode (`ignore` only exempts it from the engine's throttling).
    /// A resumed workload stays throttled while the engine throttles workloads and
    /// its mode is not `ignore`.
    pub fn throttle_one(&self, name: &str, on: bool) -> Result<(), WorkloadError> {
        let mut inner = self.lock();
        let engine = inner.throttled;
        let w = inner
            .workers
            .get_mut(name)
            .ok_or_else(|| WorkloadError::NotFound(name.to_owned()))?;
        w.manual = on;
        let pause = on || (engine && throttled_by_engine(&w.spec));
        w.tx.send(if pause { Ctl::Pause } else { Ctl::Resume })
            .map_err(|_| WorkloadError::Gone(name.to_owned()))
    }

    /// Whether workloads are throttled.
    pub fn throttled(&self) -> bool {
        self.lock().throttled
    }

    /// The status of every workload, by name.
    pub fn statuses(&self) -> Vec<WorkloadStatus> {
        self.lock()
            .workers
            .values()
            .map(|w| w.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Stops every workload (SIGTERM, then SIGKILL after its timeout) and waits.
    pub async fn stop_all(&self) {
        let workers: Vec<Worker> = std::mem::take(&mut self.lock().workers)
            .into_values()
            .collect();
        stop_workers(workers).await;
    }
}

async fn stop_workers(workers: Vec<Worker>) {
    for w in &workers {
        let _gone = w.tx.send(Ctl::Stop);
    }
    for w in workers {
        if let Err(e) = w.task.await {
            tracing::error!(workload = %w.spec.name, "supervisor task failed: {e}");
        }
    }
}

fn set_status(status: &Mutex<WorkloadStatus>, f: impl FnOnce(&mut WorkloadStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

fn signal_group(name: &str, pid: Option<u32>, sig: Signal) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Err(e) = killpg(Pid::from_raw(pid), sig) {
        tracing::debug!(workload = %name, pid, "{sig} to process group: {e}");
    }
}

fn command(spec: &WorkloadConfig) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(&spec.env)
        // The workload must not talk to systemd as if it were metald.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    cmd
}

/// Stops a running child: SIGTERM (plus SIGCONT so a paused group can act on
/// it), then SIGKILL after the timeout.
async fn stop_child(spec: &WorkloadConfig, child: &mut Child, pid: Option<u32>) -> String {
    signal_group(&spec.name, pid, Signal::SIGTERM);
    signal_group(&spec.name, pid, Signal::SIGCONT);
    match tokio::time::timeout(spec.stop_timeout, child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            tracing::warn!(workload = %spec.name, "did not stop within {:?}; SIGKILL", spec.stop_timeout);
            signal_group(&spec.name, pid, Signal::SIGKILL);
            match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            }
        }
    }
}

/// How a workload is throttled: a cgroup CPU limit, or SIGSTOP/SIGCONT.
struct Throttler {
    name: String,
    group: Option<Cgroup>,
    pct: f64,
    period: Duration,
}

impl Throttler {
    fn new(spec: &WorkloadConfig, cgroups: Option<Cgroups>) -> Self {
        let mut t = Throttler {
            name: spec.name.clone(),
            group: None,
            pct: spec.cpu_limit_pct.unwrap_or(DEFAULT_CPU_LIMIT_PCT),
            period: Duration::from_millis(100),
        };
        if spec.throttle != ThrottleMode::CpuLimit {
            return t;
        }
        match cgroups {
            None => tracing::warn!(
                workload = %spec.name,
                "cpu-limit without a cgroup root: throttling with SIGSTOP/SIGCONT instead"
            ),
            Some(c) => {
                t.period = c.period;
                match c.root.prepare().and_then(|()| c.root.create(&spec.name)) {
                    Ok(g) => t.group = Some(g),
                    Err(e) => tracing::warn!(
                        workload = %spec.name,
                        "cgroup v2 CPU limit unavailable ({e}): throttling with SIGSTOP/SIGCONT instead"
                    ),
                }
            }
        }
        t
    }

    /// Moves a new process into the group.
    fn adopt(&mut self, pid: Option<u32>) {
        if let (Some(g), Some(pid)) = (&self.group, pid)
            && let Err(e) = g.add(pid)
        {
            tracing::warn!(workload = %self.name, "cannot move into its cgroup ({e}): throttling with SIGSTOP/SIGCONT instead");
            self.group = None;
        }
    }

    /// Throttles the running process; the state it is in afterwards.
    fn throttle(&mut self, pid: Option<u32>) -> WorkloadState {
        if let Some(g) = &self.group {
            match g.limit(self.pct, self.period) {
                Ok(()) => return WorkloadState::Limited,
                Err(e) => {
                    tracing::warn!(workload = %self.name, "cannot set its CPU limit ({e}): SIGSTOP instead");
                    self.group = None;
                }
            }
        }
        signal_group(&self.name, pid, Signal::SIGSTOP);
        WorkloadState::Paused
    }

    /// Lifts the throttle.
    fn resume(&mut self, pid: Option<u32>) {
        if let Some(g) = &self.group
            && let Err(e) = g.unlimit(self.period)
        {
            tracing::warn!(workload = %self.name, "cannot lift its CPU limit: {e}");
        }
        signal_group(&self.name, pid, Signal::SIGCONT);
    }

    fn remove(&self) {
        if let Some(g) = &self.group {
            g.remove();
        }
    }
}

async fn supervise(
    spec: WorkloadConfig,
    mut rx: mpsc::UnboundedReceiver<Ctl>,
    status: Arc<Mutex<WorkloadStatus>>,
    throttled: bool,
    cgroups: Option<Cgroups>,
) {
    let mut throttler = Throttler::new(&spec, cgroups);
    let mut paused = throttled && throttled_by_engine(&spec);
    let mut quick_failures: u32 = 0;
    loop {
        let started = Instant::now();
        let success = match command(&spec).spawn() {
            Err(e) => {
                tracing::error!(workload = %spec.name, command = %spec.command, "cannot start: {e}");
                set_status(&status, |s| {
                    s.last_exit = Some(format!("spawn failed: {e}"))
                });
                false
            }
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(workload = %spec.name, pid, "started");
                throttler.adopt(pid);
                let state = if paused {
                    throttler.throttle(pid)
                } else {
                    WorkloadState::Running
                };
                set_status(&status, |s| {
                    s.pid = pid;
                    s.state = state;
                });
                let exit = loop {
                    tokio::select! {
                        r = child.wait() => break r,
                        ctl = rx.recv() => match ctl {
                            Some(Ctl::Pause) => {
                                paused = true;
                                let state = throttler.throttle(pid);
                                set_status(&status, |s| s.state = state);
                                tracing::info!(workload = %spec.name, ?state, "throttled");
                            }
                            Some(Ctl::Resume) => {
                                paused = false;
                                throttler.resume(pid);
                                set_status(&status, |s| s.state = WorkloadState::Running);
                                tracing::info!(workload = %spec.name, "resumed");
                            }
                            Some(Ctl::Start) => {}
                            Some(Ctl::Stop) | None => {
                                let how = stop_child(&spec, &mut child, pid).await;
                                throttler.remove();
                                tracing::info!(workload = %spec.name, "stopped ({how})");
                                set_status(&status, |s| {
                                    s.state = WorkloadState::Stopped;
                                    s.pid = None;
                                    s.last_exit = Some(how);
                                });
                                return;
                            }
                        },
                    }
                };
                let (ok, how) = match exit {
                    Ok(st) => (st.success(), st.to_string()),
                    Err(e) => (false, format!("wait failed: {e}")),
                };
                tracing::info!(workload = %spec.name, "exited ({how})");
                set_status(&status, |s| {
                    s.pid = None;
                    s.last_exit = Some(how);
                });
                ok
            }
        };
        let restart = match spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        if !restart {
            set_status(&status, |s| s.state = WorkloadState::Exited);
            // Nothing left to run; wait to be told to start again or to stop.
            let mut again = false;
            while let Some(ctl) = rx.recv().await {
                match ctl {
                    Ctl::Stop => break,
                    Ctl::Start => {
                        again = true;
                        break;
                    }
                    Ctl::Pause => paused = true,
                    Ctl::Resume => paused = false,
                }
            }
            if !again {
                return;
            }
            set_status(&status, |s| s.restarts += 1);
            continue;
        }
        if started.elapsed() >= spec.backoff.max {
            quick_failures = 0;
        }
        let delay = backoff_delay(spec.backoff.initial, spec.backoff.max, quick_failures);
        quick_failures = quick_failures.saturating_add(1);
        set_status(&status, |s| s.state = WorkloadState::Backoff);
        tracing::info!(workload = %spec.name, "restarting in {delay:?}");
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                ctl = rx.recv() => match ctl {
                    Some(Ctl::Pause) => paused = true,
                    Some(Ctl::Resume) => paused = false,
                    Some(Ctl::Start) => break,
                    Some(Ctl::Stop) | None => {
                        set_status(&status, |s| s.state = WorkloadState::Stopped);
                        return;
                    }
                },
            }
        }
        set_status(&status, |s| s.restarts += 1);
    }
}

impl Default for Workloads {
    fn default() -> Self {
        Self::new()
    }
}

/// Delay before the restart that follows `n` quick failures in a row:
/// `initial * 2^n`, capped at `max`.
pub fn backoff_delay(initial: Duration, max: Duration, n: u32) -> Duration {
    initial
        .checked_mul(2u32.saturating_pow(n))
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<_> = (0..6).map(|n| backoff_delay(i, m, n).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_delay(i, m, 60), m);
    }
}
