//! A daemon per test, on a free port, with a temporary data directory and three
//! tokens (viewer, operator, admin).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use metald::auth::TokenHash;
use metald::config::Loader;
use metald::{Daemon, SignalHandle, Signals};
use serde_json::Value;
use tokio::task::JoinHandle;

pub const VIEWER: &str = "viewer-token";
pub const OPERATOR: &str = "operator-token";
pub const ADMIN: &str = "admin-token";

/// `[[api.tokens]]` entries for the three test tokens (and any extra ones).
pub fn tokens_toml(extra: &[(&str, &str, &str)]) -> String {
    let mut out = String::new();
    let base = [
        ("viewer", "viewer", VIEWER),
        ("operator", "operator", OPERATOR),
        ("admin", "admin", ADMIN),
    ];
    for (name, role, token) in base.iter().chain(extra) {
        out.push_str(&format!(
            "[[api.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nhash = \"{}\"\n",
            TokenHash::of(token)
        ));
    }
    out
}

/// A whole config file: `body`, a data directory under `dir`, and the tokens.
pub fn config_text(dir: &std::path::Path, body: &str, extra: &[(&str, &str, &str)]) -> String {
    format!(
        "{body}\n[data]\ndir = \"{}\"\n{}",
        dir.join("data").display(),
        tokens_toml(extra)
    )
}

/// The default body: a noiseless simulated Pi 4 sampled every 20 ms.
pub const SIM: &str = "[hal]\nbackend = \"sim\"\nnoise = false\n[sampling]\ninterval = \"20ms\"\n";

pub struct TestDaemon {
    pub addr: SocketAddr,
    pub signals: SignalHandle,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub http: reqwest::Client,
}

impl TestDaemon {
    /// Starts with [`SIM`] and the three tokens.
    pub async fn start() -> TestDaemon {
        Self::start_toml(SIM).await
    }

    /// Starts with `body` (must not contain `[data]` or tokens) plus the tokens.
    pub async fn start_toml(body: &str) -> TestDaemon {
        Self::start_with(body, |d| d).await
    }

    /// Starts with `body`, letting the test adjust the [`Daemon`] first.
    pub async fn start_with(body: &str, f: impl FnOnce(Daemon) -> Daemon) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("metald.toml");
        std::fs::write(&config_path, config_text(dir.path(), body, &[])).unwrap();
        let loader = Loader::new().file(&config_path);
        let config = loader.load().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (signals, handle) = Signals::manual();
        let daemon = f(Daemon::new(config).reload_from(loader));
        let task = tokio::spawn(daemon.run(listener, signals));
        TestDaemon {
            addr,
            signals: handle,
            task: Some(task),
            dir,
            config_path,
            http: reqwest::Client::new(),
        }
    }

    /// Rewrites the config file (same data directory, the three tokens plus `extra`).
    pub fn write_config(&self, body: &str, extra: &[(&str, &str, &str)]) {
        std::fs::write(&self.config_path, config_text(self.dir.path(), body, extra)).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let resp = self.get(path, Some(token)).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.http.get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "daemon never became ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `f` holds for `/api/v1/readings` (as the viewer).
    pub async fn wait_reading(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get("/api/v1/readings", Some(VIEWER)).await;
            if r.status() == 200 {
                let v: Value = r.json().await.unwrap();
                if f(&v) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts down and returns `run`'s result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signals.shutdown();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("daemon did not stop within 15 s")
            .unwrap()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // A failed test must not leave the sampling thread running.
        self.signals.shutdown();
    }
}

/// The error body's code.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    let code = v["error"]["code"].as_str().unwrap_or("<none>").to_owned();
    (status, code, v)
}
