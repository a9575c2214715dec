//! The real `metald` binary: command line, SIGHUP with a broken file, SIGTERM,
//! and the systemd notify protocol on a test-owned NOTIFY_SOCKET.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_metald");

fn metald() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("WRALE_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

fn write_config(dir: &Path, body: &str, extra: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let path = dir.join("metald.toml");
    let body = format!("{body}[api]\nbind = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n");
    std::fs::write(&path, config_text(dir, &body, extra)).unwrap();
    path
}

/// A running metald with its stderr lines (JSON logs) on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line whose message contains `needle`; returns it as JSON.
    fn wait_log(&mut self, needle: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no log line with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                )
            });
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
                {
                    return v;
                }
            }
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "metald did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_serving_the_old_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), SIM, &[]);
    let mut cmd = metald();
    cmd.arg("--config").arg(&path);
    let mut p = Proc::spawn(cmd);
    let listening = p.wait_log("listening");
    let addr = listening["fields"]["addr"].as_str().unwrap().to_owned();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    std::fs::write(&path, "this is [not toml").unwrap();
    p.signal(Signal::SIGHUP);
    let failed = p.wait_log("config reload failed");
    assert!(
        failed["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{failed}"
    );
    let state = client
        .get(format!("{base}/api/v1/state"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 200, "still serving with the old tokens");
    assert_eq!(
        client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    write_config(dir.path(), SIM, &[("late", "viewer", "late-token")]);
    p.signal(Signal::SIGHUP);
    p.wait_log("config reloaded");
    let state = client
        .get(format!("{base}/api/v1/state"))
        .bearer_auth("late-token")
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), 200);

    p.signal(Signal::SIGTERM);
    p.wait_log("stopped");
    assert!(p.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talks_to_systemd_on_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), SIM, &[]);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = metald();
    cmd.arg("--config")
        .arg(&path)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "100000");
    let mut p = Proc::spawn(cmd);
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("no notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.starts_with("READY=1"), "{first}");
    let mut pings = 0;
    while pings < 3 {
        let msg = recv();
        assert_eq!(msg, "WATCHDOG=1");
        pings += 1;
    }
    p.signal(Signal::SIGTERM);
    loop {
        let msg = recv();
        if msg == "STOPPING=1" {
            break;
        }
        assert_eq!(msg, "WATCHDOG=1");
    }
    assert!(p.wait_exit().success());
}

#[test]
fn help_documents_every_flag() {
    let out = metald().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--check-config",
        "--bind",
        "--backend",
        "--data-dir",
        "--sampling-interval",
        "--board-profile",
        "--log-format",
        "hash-token",
        "WRALE_",
    ] {
        assert!(help.contains(flag), "{flag} not in --help:\n{help}");
    }
}

#[test]
fn check_config_reports_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), SIM, &[]);
    let out = metald()
        .arg("--check-config")
        .arg("--config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = metald()
        .args(["--check-config", "--config"])
        .arg(&good)
        .env("WRALE_SAMPLING__INTERVAL", "fast")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sampling.interval") && err.contains("WRALE_SAMPLING__INTERVAL"),
        "{err}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[api]\nbind = 8700\n").unwrap();
    let out = metald()
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 2") && err.contains("bind"),
        "{err}"
    );

    // Without --check-config a bad config stops the daemon before it serves.
    let out = metald().arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = metald()
        .args(["--config", "/nonexistent/metald.toml", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/metald.toml"));
}

#[test]
fn hash_token_prints_a_token_and_its_hash() {
    let out = metald().arg("hash-token").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("token: ")
        .unwrap();
    let hash = text
        .lines()
        .nth(1)
        .unwrap()
        .strip_prefix("hash:  ")
        .unwrap();
    assert_eq!(metald::auth::TokenHash::of(token).to_string(), hash);

    let mut child = metald()
        .args(["hash-token", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    );
}
