//! cgroup v2 CPU limits for workloads (`throttle = "cpu-limit"`).
//!
//! metald needs a delegated, writable cgroup v2 subtree (default
//! `/sys/fs/cgroup/wrale`, see `packaging/metald.service`'s `Delegate=`): it
//! enables the `cpu` controller for the subtree (`+cpu` in the root's
//! `cgroup.subtree_control`), creates one child group per workload, moves the
//! workload's process into it (`cgroup.procs`), writes `cpu.max` = `<quota>
//! <period>` to throttle and `max <period>` to lift the limit. Every file is
//! written with a single `write`, as cgroupfs wants. When the subtree cannot be
//! used, the supervisor falls back to SIGSTOP/SIGCONT and says so in a warning.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A delegated cgroup v2 subtree metald may create groups in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    root: PathBuf,
}

/// One workload's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dir: PathBuf,
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn context(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

impl CgroupRoot {
    /// The subtree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the subtree is.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Checks that the subtree can be used: it exists, offers the `cpu`
    /// controller (when `cgroup.controllers` says what it offers) and enables it
    /// for its children. Returns why not otherwise.
    pub fn prepare(&self) -> Result<(), String> {
        if !self.root.is_dir() {
            return Err(format!(
                "{} does not exist (create and delegate it, or set cgroup.root)",
                self.root.display()
            ));
        }
        let controllers = self.root.join("cgroup.controllers");
        if let Ok(list) = std::fs::read_to_string(&controllers)
            && !list.split_whitespace().any(|c| c == "cpu")
        {
            return Err(format!(
                "{} does not offer the cpu controller ({:?})",
                controllers.display(),
                list.trim()
            ));
        }
        let control = self.root.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control)
            .map(|t| t.split_whitespace().any(|c| c == "cpu"))
            .unwrap_or(false);
        if !enabled {
            write_file(&control, "+cpu").map_err(|e| context(&control, e))?;
        }
        Ok(())
    }

    /// Creates (or reuses) the child group `name`.
    pub fn create(&self, name: &str) -> Result<Cgroup, String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!("{name:?} is not a cgroup name"));
        }
        let dir = self.root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(context(&dir, e)),
        }
        Ok(Cgroup { dir })
    }
}

/// `cpu.max` for `pct` % of one CPU per `period`: `<quota> <period>` in µs (the
/// quota at least 1 ms, the kernel's minimum).
pub fn cpu_max(pct: f64, period: Duration) -> String {
    let period_us = period.as_micros().max(1000) as u64;
    let quota = ((period_us as f64) * pct / 100.0).round() as u64;
    format!("{} {period_us}", quota.max(1000))
}

/// `cpu.max` without a limit.
pub fn cpu_unlimited(period: Duration) -> String {
    format!("max {}", period.as_micros().max(1000))
}

impl Cgroup {
    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves process `pid` into the group.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        let f = self.dir.join("cgroup.procs");
        write_file(&f, &pid.to_string()).map_err(|e| context(&f, e))
    }

    /// Limits the group to `pct` % of one CPU.
    pub fn limit(&self, pct: f64, period: Duration) -> Result<(), String> {
        let f = self.dir.join("cpu.max");
        write_file(&f, &cpu_max(pct, period)).map_err(|e| context(&f, e))
    }

    /// Lifts the limit.
    pub fn unlimit(&self, period: Duration) -> Result<(), String> {
        let f = self.dir.join("cpu.max");
        write_file(&f, &cpu_unlimited(period)).map_err(|e| context(&f, e))
    }

    /// Removes the group (it must be empty; best effort).
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::debug!(cgroup = %self.dir.display(), "cannot remove: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_quota_and_period_in_microseconds() {
        let p = Duration::from_millis(100);
        assert_eq!(cpu_max(25.0, p), "25000 100000");
        assert_eq!(cpu_max(150.0, p), "150000 100000");
        assert_eq!(cpu_max(0.1, p), "1000 100000", "at least 1 ms");
        assert_eq!(cpu_unlimited(p), "max 100000");
    }

    #[test]
    fn a_missing_root_or_one_without_cpu_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let gone = CgroupRoot::new(dir.path().join("nope"));
        assert!(gone.prepare().unwrap_err().contains("does not exist"));
        std::fs::write(dir.path().join("cgroup.controllers"), "memory io\n").unwrap();
        let root = CgroupRoot::new(dir.path());
        assert!(root.prepare().unwrap_err().contains("cpu controller"));
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        root.prepare().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
        assert!(root.create("../x").is_err());
        let g = root.create("cam").unwrap();
        g.add(42).unwrap();
        g.limit(20.0, Duration::from_millis(100)).unwrap();
        assert_eq!(
            std::fs::read_to_string(g.path().join("cpu.max")).unwrap(),
            "20000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(g.path().join("cgroup.procs")).unwrap(),
            "42"
        );
    }
}
