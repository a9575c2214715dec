//! The workload supervisor with real child processes.

use std::time::{Duration, Instant};

use metald::config::{Backoff, RestartPolicy, ThrottleMode, WorkloadConfig};
use metald::workloads::{WorkloadState, WorkloadStatus, Workloads};

fn spec(name: &str, script: &str, restart: RestartPolicy) -> WorkloadConfig {
    WorkloadConfig {
        name: name.into(),
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: Default::default(),
        working_dir: None,
        restart,
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        throttle: ThrottleMode::Pause,
        stop_timeout: Duration::from_secs(5),
        cpu_limit_pct: None,
    }
}

fn status(w: &Workloads, name: &str) -> WorkloadStatus {
    w.statuses().into_iter().find(|s| s.name == name).unwrap()
}

async fn wait_for(
    w: &Workloads,
    name: &str,
    what: &str,
    f: impl Fn(&WorkloadStatus) -> bool,
) -> WorkloadStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(w, name);
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The state letter of a process in /proc/<pid>/stat (`S`, `R`, `T`, `Z`), if it exists.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

async fn wait_proc_state(pid: u32, want: impl Fn(Option<char>) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !want(proc_state(pid)) {
        assert!(
            Instant::now() < deadline,
            "pid {pid}: never {what} (state {:?})",
            proc_state(pid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_workloads_restart_with_backoff_and_policies_are_obeyed() {
    let w = Workloads::new();
    w.apply(&[
        spec("fails", "exit 3", RestartPolicy::OnFailure),
        spec("succeeds", "exit 0", RestartPolicy::OnFailure),
        spec("loops", "exit 0", RestartPolicy::Always),
        spec("once", "exit 1", RestartPolicy::Never),
    ])
    .await;
    let fails = wait_for(&w, "fails", "3 restarts", |s| s.restarts >= 3).await;
    assert_eq!(fails.last_exit.as_deref(), Some("exit status: 3"));
    wait_for(&w, "loops", "3 restarts", |s| s.restarts >= 3).await;
    let ok = wait_for(&w, "succeeds", "exited", |s| {
        s.state == WorkloadState::Exited
    })
    .await;
    assert_eq!(ok.restarts, 0);
    let once = wait_for(&w, "once", "exited", |s| s.state == WorkloadState::Exited).await;
    assert_eq!(
        (once.restarts, once.last_exit.as_deref()),
        (0, Some("exit status: 1"))
    );
    w.stop_all().await;
    assert!(w.statuses().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_grows_between_quick_failures() {
    let w = Workloads::new();
    let mut s = spec("slow", "exit 1", RestartPolicy::Always);
    s.backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };
    let t0 = Instant::now();
    w.apply(&[s]).await;
    // Delays 100 + 200 + 400 ms before the third restart.
    wait_for(&w, "slow", "3 restarts", |s| s.restarts >= 3).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    w.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_pauses_and_resumes_the_process_group() {
    let w = Workloads::new();
    let mut exempt = spec("exempt", "sleep 30", RestartPolicy::Never);
    exempt.throttle = ThrottleMode::Ignore;
    w.apply(&[spec("worker", "sleep 30", RestartPolicy::Never), exempt])
        .await;
    let s = wait_for(&w, "worker", "running", |s| {
        s.state == WorkloadState::Running && s.pid.is_some()
    })
    .await;
    let pid = s.pid.unwrap();
    let exempt_pid = wait_for(&w, "exempt", "running", |s| s.pid.is_some())
        .await
        .pid
        .unwrap();
    wait_proc_state(pid, |st| matches!(st, Some('S') | Some('R')), "running").await;

    w.throttle(true);
    assert!(w.throttled());
    wait_proc_state(pid, |st| st == Some('T'), "stopped (T)").await;
    wait_for(&w, "worker", "paused", |s| s.state == WorkloadState::Paused).await;
    assert_ne!(
        proc_state(exempt_pid),
        Some('T'),
        "throttle = ignore is not paused"
    );

    w.throttle(false);
    wait_proc_state(pid, |st| matches!(st, Some('S') | Some('R')), "resumed").await;
    wait_for(&w, "worker", "running", |s| {
        s.state == WorkloadState::Running
    })
    .await;

    // Stopping a paused workload works too.
    w.throttle(true);
    wait_proc_state(pid, |st| st == Some('T'), "stopped (T)").await;
    let t0 = Instant::now();
    w.stop_all().await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "SIGTERM must reach a paused group"
    );
    assert_eq!(proc_state(pid), None, "process reaped");
    assert_eq!(proc_state(exempt_pid), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let w = Workloads::new();
    let mut s = spec(
        "stubborn",
        "trap '' TERM; while true; do sleep 0.05; done",
        RestartPolicy::Always,
    );
    s.stop_timeout = Duration::from_millis(300);
    w.apply(&[s]).await;
    let pid = wait_for(&w, "stubborn", "running", |s| s.pid.is_some())
        .await
        .pid
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    w.stop_all().await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(proc_state(pid), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_restarts_changed_and_stops_removed_workloads() {
    let w = Workloads::new();
    let a = spec("a", "sleep 30", RestartPolicy::Always);
    let b = spec("b", "sleep 30", RestartPolicy::Always);
    w.apply(&[a.clone(), b.clone()]).await;
    let pid_a = wait_for(&w, "a", "running", |s| s.pid.is_some())
        .await
        .pid
        .unwrap();
    let pid_b = wait_for(&w, "b", "running", |s| s.pid.is_some())
        .await
        .pid
        .unwrap();
    let mut b2 = b.clone();
    b2.args = vec!["-c".into(), "sleep 31".into()];
    w.apply(&[a, b2]).await;
    assert_eq!(
        status(&w, "a").pid,
        Some(pid_a),
        "unchanged workload left alone"
    );
    let new_b = wait_for(&w, "b", "restarted", |s| s.pid.is_some_and(|p| p != pid_b)).await;
    assert_eq!(proc_state(pid_b), None);
    w.apply(&[]).await;
    assert!(w.statuses().is_empty());
    assert_eq!(proc_state(pid_a), None);
    assert_eq!(proc_state(new_b.pid.unwrap()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_is_retried() {
    let w = Workloads::new();
    let mut s = spec("missing", "", RestartPolicy::OnFailure);
    s.command = "/nonexistent/program".into();
    s.args.clear();
    w.apply(&[s]).await;
    let st = wait_for(&w, "missing", "2 retries", |s| s.restarts >= 2).await;
    assert!(st.last_exit.unwrap().starts_with("spawn failed"));
    w.stop_all().await;
}
