//! A real metald process (sim backend) enrolled in the test's fleetd, for the
//! commands and telemetry a device must answer. metald is built into the same
//! target directory on first use (`cargo build -p metald`, a no-op when fresh).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The metald binary next to wrale's.
fn metald_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/wrale -> <target>
        let target = Path::new(env!("CARGO_BIN_EXE_wrale"))
            .parent()
            .and_then(Path::parent)
            .expect("wrale binary in a target directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "metald", "--bin", "metald"])
            .arg("--message-format=json")
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build -p metald");
        assert!(out.status.success(), "cargo build -p metald failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "metald")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no metald executable")
    })
}

/// A running metald; killed on drop.
pub struct Metald {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Metald {
    /// Starts device `id` (a Pi 4, sampled every 200 ms, its simulated clock
    /// starting a minute ago) against fleetd at `url` with `enrollment_token`.
    pub fn start(id: &str, url: &str, enrollment_token: &str) -> Metald {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            r#"[device]
id = "{id}"
[api]
bind = "127.0.0.1:{port}"
[hal]
backend = "sim"
model = "pi4b"
noise = false
load_pct = 60.0
start = "{start}"
[sampling]
interval = "200ms"
[data]
dir = "{data}"
[fleet]
url = "{url}"
enrollment_token = "{enrollment_token}"
resync_after = "1s"
[fleet.backoff]
initial = "100ms"
max = "1s"
"#,
            data = dir.path().join("data").display(),
            // The simulator's clock starts a minute ago (its default is a fixed
            // date), so telemetry queries over the last minutes find its points.
            start = humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() - Duration::from_secs(60)
            ),
        );
        let path = dir.path().join("metald.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("metald.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(metald_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("WRALE_") || k == "NOTIFY_SOCKET" {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Metald {
            child,
            log,
            _dir: dir,
        }
    }

    /// The end of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Metald {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- metald log ----\n{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms for up to 60 s.
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
