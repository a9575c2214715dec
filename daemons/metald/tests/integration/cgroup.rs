//! `throttle = "cpu-limit"`: a temporary directory stands in for the delegated
//! cgroup v2 root (the files metald writes are checked), and a real process is
//! stopped and continued when cgroups are unavailable (the fallback).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn workload_body(root: &Path) -> String {
    format!(
        "{SIM}[cgroup]\nroot = \"{}\"\nperiod = \"50ms\"\n\
         [[workloads]]\nname = \"cam\"\ncommand = \"sleep\"\nargs = [\"30\"]\n\
         throttle = \"cpu-limit\"\ncpu_limit_pct = 30.0\n",
        root.display()
    )
}

/// Waits for the workload `cam` to reach `state`; returns its pid.
async fn wait_state(d: &TestDaemon, state: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = d.get_json("/api/v1/workloads", VIEWER).await;
        let w = &v["workloads"][0];
        if w["state"] == state {
            return w["pid"].as_u64().unwrap() as u32;
        }
        assert!(Instant::now() < deadline, "never {state}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn command(d: &TestDaemon, kind: &str) {
    let body = format!(r#"{{"type": "{kind}", "workload": "cam", "reason": "test"}}"#);
    let r = d.post_json("/api/v1/commands", Some(OPERATOR), &body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
}

/// The process state letter from /proc/<pid>/stat (`S`, `T` for stopped, ...).
fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.trim_start().chars().next().unwrap()
}

async fn wait_proc_state(pid: u32, want: char) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_state(pid) != want {
        assert!(
            Instant::now() < deadline,
            "process {pid} never in state {want} (is {})",
            proc_state(pid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_writes_cpu_max_in_the_workloads_cgroup() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    let d = TestDaemon::start_toml(&workload_body(root.path())).await;
    d.wait_ready().await;
    let pid = wait_state(&d, "running").await;
    let group = root.path().join("cam");
    // The cpu controller is enabled for the subtree; the process is in its group.
    assert_eq!(
        std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
        "+cpu"
    );
    assert_eq!(
        std::fs::read_to_string(group.join("cgroup.procs")).unwrap(),
        pid.to_string()
    );
    command(&d, "throttle_workload").await;
    wait_state(&d, "limited").await;
    // 30 % of one CPU per 50 ms period; the process keeps running (not stopped).
    assert_eq!(
        std::fs::read_to_string(group.join("cpu.max")).unwrap(),
        "15000 50000"
    );
    assert_ne!(proc_state(pid), 'T');
    command(&d, "resume_workload").await;
    wait_state(&d, "running").await;
    assert_eq!(
        std::fs::read_to_string(group.join("cpu.max")).unwrap(),
        "max 50000"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_cgroup_cpu_limit_falls_back_to_stopping_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-cgroup");
    let d = TestDaemon::start_toml(&workload_body(&missing)).await;
    d.wait_ready().await;
    let pid = wait_state(&d, "running").await;
    command(&d, "throttle_workload").await;
    wait_state(&d, "paused").await;
    wait_proc_state(pid, 'T').await;
    assert!(!missing.exists(), "nothing created where no cgroup was");
    command(&d, "resume_workload").await;
    wait_state(&d, "running").await;
    wait_proc_state(pid, 'S').await;
    d.stop().await.unwrap();
}
