//! Workloads: configured commands run as supervised child processes.
//!
//! Each workload runs in its own process group, so pausing, resuming and stopping
//! reach the processes it spawns too. A workload that exits is started again
//! according to its [`RestartPolicy`], after a delay that doubles with each quick
//! failure up to `backoff.max` (a run longer than `backoff.max` resets it).
//! Throttling sends SIGSTOP to the group, and lifting it SIGCONT. Stopping sends
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

use crate::config::{RestartPolicy, ThrottleMode, WorkloadConfig};

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
    Stop,
}

#[derive(Debug)]
struct Worker {
    spec: WorkloadConfig,
    tx: mpsc::UnboundedSender<Ctl>,
    status: Arc<Mutex<WorkloadStatus>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Inner {
    workers: BTreeMap<String, Worker>,
    throttled: bool,
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
            for spec in specs {
                if inner.workers.contains_key(&spec.name) {
                    continue;
                }
                let w = self.spawn_worker(spec.clone(), throttled);
                inner.workers.insert(spec.name.clone(), w);
            }
        }
        stop_workers(to_stop).await;
    }

    fn spawn_worker(&self, spec: WorkloadConfig, throttled: bool) -> Worker {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(WorkloadStatus {
            name: spec.name.clone(),
            state: WorkloadState::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
        }));
        let task = self
            .runtime
            .spawn(supervise(spec.clone(), rx, status.clone(), throttled));
        Worker {
            spec,
            tx,
            status,
            task,
        }
    }

    /// Pauses (`true`) or resumes (`false`) every workload whose throttle mode is
    /// `pause`. Workloads started while throttled start paused.
    pub fn throttle(&self, on: bool) {
        let mut inner = self.lock();
        if inner.throttled == on {
            return;
        }
        inner.throttled = on;
        for w in inner.workers.values() {
            if w.spec.throttle == ThrottleMode::Pause {
                let _gone = w.tx.send(if on { Ctl::Pause } else { Ctl::Resume });
            }
        }
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

async fn supervise(
    spec: WorkloadConfig,
    mut rx: mpsc::UnboundedReceiver<Ctl>,
    status: Arc<Mutex<WorkloadStatus>>,
    throttled: bool,
) {
    let pausable = spec.throttle == ThrottleMode::Pause;
    let mut paused = throttled && pausable;
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
                if paused {
                    signal_group(&spec.name, pid, Signal::SIGSTOP);
                }
                set_status(&status, |s| {
                    s.pid = pid;
                    s.state = if paused {
                        WorkloadState::Paused
                    } else {
                        WorkloadState::Running
                    };
                });
                let exit = loop {
                    tokio::select! {
                        r = child.wait() => break r,
                        ctl = rx.recv() => match ctl {
                            Some(Ctl::Pause) if pausable => {
                                paused = true;
                                signal_group(&spec.name, pid, Signal::SIGSTOP);
                                set_status(&status, |s| s.state = WorkloadState::Paused);
                                tracing::info!(workload = %spec.name, "paused (throttled)");
                            }
                            Some(Ctl::Resume) => {
                                paused = false;
                                signal_group(&spec.name, pid, Signal::SIGCONT);
                                set_status(&status, |s| s.state = WorkloadState::Running);
                                tracing::info!(workload = %spec.name, "resumed");
                            }
                            Some(Ctl::Pause) => {}
                            Some(Ctl::Stop) | None => {
                                let how = stop_child(&spec, &mut child, pid).await;
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
            // Nothing left to run; wait to be told to stop.
            while let Some(ctl) = rx.recv().await {
                if ctl == Ctl::Stop {
                    break;
                }
            }
            return;
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
                    Some(Ctl::Pause) => paused = pausable,
                    Some(Ctl::Resume) => paused = false,
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
