//! Test support (feature `testing`): the real fleetd on 127.0.0.1:0 with a
//! temporary data directory and an admin API token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::Loader;
use crate::{Daemon, SignalHandle, Signals};

/// A running fleetd.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:<port>` (`https://` with `[api.tls]`).
    pub url: String,
    /// The address.
    pub addr: SocketAddr,
    /// An admin API token (`wrt_...`).
    pub admin_token: String,
    /// The admin's user name (`admin`).
    pub admin_user: String,
    /// The admin's password.
    pub admin_password: String,
    /// The config file (rewrite it and call [`SignalHandle::reload`] to reload).
    pub config_path: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Shutdown and reload.
    pub signals: SignalHandle,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    dir: tempfile::TempDir,
    body: String,
}

impl TestServer {
    /// Starts with the default config.
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// Starts with `body` (TOML without `[data]`) added to the config.
    pub async fn start_with(body: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, body, None).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        body: &str,
        admin: Option<(String, String)>,
    ) -> TestServer {
        let data_dir = dir.path().join("data");
        let config_path = dir.path().join("fleetd.toml");
        std::fs::write(&config_path, Self::config_text(&data_dir, body)).expect("write config");
        let loader = Loader::new().file(&config_path);
        let config = loader.load().expect("test config is valid");
        let (admin_token, admin_password) = match admin {
            Some(a) => a,
            None => {
                let store = crate::admin::open_store(&config).expect("open store");
                let password = "admin-password".to_owned();
                let created = crate::admin::create_admin(store.as_ref(), "admin", Some(&password))
                    .expect("create admin");
                (created.token, password)
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let scheme = if config.api.tls.files().is_some() {
            "https"
        } else {
            "http"
        };
        let (signals, handle) = Signals::manual();
        let task = tokio::spawn(
            Daemon::new(config)
                .reload_from(loader)
                .run(listener, signals),
        );
        TestServer {
            url: format!("{scheme}://{addr}"),
            addr,
            admin_token,
            admin_user: "admin".into(),
            admin_password,
            config_path,
            data_dir,
            signals: handle,
            task: Some(task),
            dir,
            body: body.to_owned(),
        }
    }

    /// The config text for a data directory and extra TOML.
    pub fn config_text(data_dir: &std::path::Path, body: &str) -> String {
        format!("{body}\n[data]\ndir = \"{}\"\n", data_dir.display())
    }

    /// `url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The WebSocket URL of `path` (`wss://` with `[api.tls]`).
    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.url.starts_with("https:") {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Stops the server and returns `run`'s result.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.signals.shutdown();
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .map_err(|_| anyhow::anyhow!("fleetd did not stop within 15 s"))?
                .map_err(|e| anyhow::anyhow!("fleetd task: {e}"))?,
            None => Ok(()),
        }
    }

    /// Stops and starts again on the same data directory and config (a new port).
    pub async fn restart(mut self) -> TestServer {
        self.stop().await.expect("clean stop");
        let admin = Some((self.admin_token.clone(), self.admin_password.clone()));
        let body = std::mem::take(&mut self.body);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, &body, admin).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signals.shutdown();
    }
}
