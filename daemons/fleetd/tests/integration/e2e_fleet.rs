//! The whole fleet with real processes: the `fleetd` binary on a SQLite data
//! directory and three `metald` binaries on the `sim` backend, enrolled with one
//! enrollment token and synced over real WebSockets. metald is built into the same
//! target directory on first use (`cargo build -p metald`, a no-op when fresh).

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wrale_sync::{Envelope, FrameKind};

const FLEETD: &str = env!("CARGO_BIN_EXE_fleetd");
/// The operator token of every metald's local API.
const LOCAL_OPERATOR: &str = "e2e-local-operator-token";
/// How long anything may take to propagate (real processes on a busy machine).
const PATIENCE: Duration = Duration::from_secs(60);

/// The metald binary next to fleetd's (built once per test run).
fn metald_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/fleetd -> <target>
        let target = Path::new(FLEETD)
            .parent()
            .and_then(Path::parent)
            .expect("fleetd binary in a target directory");
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

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command without the test's WRALE_*/FLEETD_* variables (both daemons refuse
/// unknown ones), logging to `log` (appended).
fn daemon_command(bin: &Path, log: &Path) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("WRALE_") || k.starts_with("FLEETD_") || k == "NOTIFY_SOCKET" {
            c.env_remove(k);
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    c.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    c
}

/// SIGTERM, then waits for a clean exit.
fn terminate(child: &mut Child, what: &str) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -TERM {what}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{what} exited with {st}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The fleetd process and an HTTP client with its admin token.
struct Fleetd {
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
    port: u16,
    token: String,
    http: reqwest::Client,
}

impl Fleetd {
    /// Creates the first admin offline (`fleetd admin create`), then starts.
    async fn start(dir: &Path) -> Fleetd {
        let data_dir = dir.join("fleetd");
        let log = dir.join("fleetd.log");
        let out = daemon_command(Path::new(FLEETD), &log)
            .args(["admin", "create", "--name", "admin", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "fleetd admin create failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let token = text
            .lines()
            .find(|l| l.starts_with("API token:"))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no API token in {text:?}"))
            .to_owned();
        let mut f = Fleetd {
            child: None,
            data_dir,
            log,
            port: free_port(),
            token,
            http: reqwest::Client::new(),
        };
        f.spawn().await;
        f
    }

    async fn spawn(&mut self) {
        let child = daemon_command(Path::new(FLEETD), &self.log)
            .args(["--bind", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(&self.data_dir)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = self.http.get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("fleetd exited with {st}:\n{}", tail(&self.log, 30));
            }
            assert!(Instant::now() < deadline, "fleetd never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop and start on the same port and data directory.
    async fn restart(&mut self) {
        terminate(self.child.as_mut().unwrap(), "fleetd");
        self.child = None;
        self.spawn().await;
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None).await
    }

    async fn get_text(&self, path: &str) -> String {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }

    async fn twin(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/devices/{id}/twin")).await
    }

    /// The device's history (newest first), all of it.
    async fn history(&self, id: &str) -> Vec<Value> {
        let h = self
            .get(&format!("/api/v1/devices/{id}/history?limit=1000"))
            .await;
        h["items"].as_array().unwrap().clone()
    }
}

impl Drop for Fleetd {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One metald process: a simulated Pi 4 with its own data directory and local API.
struct Metald {
    id: String,
    dir: PathBuf,
    api_port: u16,
    slot: u32,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Metald {
    fn new(root: &Path, id: &str, slot: u32) -> Metald {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        Metald {
            id: id.to_owned(),
            dir,
            api_port: free_port(),
            slot,
            child: None,
            http: reqwest::Client::new(),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("metald.log")
    }

    /// Writes the config (fleet at `fleet_url`) and starts the process.
    fn start(&mut self, fleet_url: &str, enrollment_token: &str) {
        let hash: String = Sha256::digest(LOCAL_OPERATOR.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = format!(
            r#"[device]
id = "{id}"
labels = {{ role = "e2e" }}
location = {{ site = "lab", rack = "r1", shelf = "1", slot = "{slot}" }}

[api]
bind = "127.0.0.1:{port}"

[[api.tokens]]
name = "bob"
role = "operator"
hash = "sha256:{hash}"

[hal]
backend = "sim"
model = "pi4b"
seed = {slot}
noise = false
load_pct = {load}.0

[data]
dir = "{data}"

[log]
format = "json"

[fleet]
url = "{fleet_url}"
enrollment_token = "{enrollment_token}"
resync_after = "1s"

[fleet.backoff]
initial = "100ms"
max = "1s"
"#,
            id = self.id,
            slot = self.slot,
            port = self.api_port,
            load = 30 + 20 * self.slot,
            data = self.dir.join("data").display(),
        );
        let path = self.dir.join("metald.toml");
        std::fs::write(&path, config).unwrap();
        let child = daemon_command(metald_bin(), &self.log())
            .arg("--config")
            .arg(&path)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no goodbye to the fleet.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and a clean exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, &format!("metald {}", self.id));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    /// `GET path` on the local API (None while it is not up).
    async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(LOCAL_OPERATOR)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())?;
        r.json().await.ok()
    }

    async fn wait_ready(&self) {
        eventually(&format!("{} ready", self.id), async || {
            let r = self.http.get(self.url("/health/ready")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// `PATCH /api/v1/twin/desired` on the local API.
    async fn patch_desired(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .patch(self.url("/api/v1/twin/desired"))
            .bearer_auth(LOCAL_OPERATOR)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Metald {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Prints every log's tail when the test fails.
struct Logs(Vec<PathBuf>);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.0 {
                eprintln!("---- {} ----\n{}", p.display(), tail(p, 40));
            }
        }
    }
}

/// Equal, numbers compared as numbers (a local edit writes `72` as an integer,
/// a fleet layer as `72.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until fleetd has `id` online.
async fn online(f: &Fleetd, id: &str) {
    eventually(&format!("{id} online in fleetd"), async || {
        let (st, d) = f.call("GET", &format!("/api/v1/devices/{id}"), None).await;
        (st == 200 && d["status"] == "online").then_some(())
    })
    .await;
}

/// Waits until the device has put fleetd's desired config in force: fleetd's twin
/// holds `field = want`, the device's own twin has the same `config_version`,
/// fleetd's twin reports that version accepted, and metald's state shows it
/// applied. Returns fleetd's twin.
async fn applied(f: &Fleetd, m: &Metald, field: &str, want: &Value) -> Value {
    eventually(&format!("{} applies {field} = {want}", m.id), async || {
        let t = f.twin(&m.id).await;
        let version = t["desired"]["config_version"].clone();
        if !same(&t["desired"][field], want) || version.is_null() {
            return None;
        }
        let local = m.get("/api/v1/twin").await?;
        let state = m.get("/api/v1/state").await?;
        (local["desired"]["config_version"] == version
            && t["reported"]["config.accepted"] == true
            && t["reported"]["config.version"] == version
            && state["fleet"]["applied"]["config_version"] == version)
            .then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_fleet_config_safety_offline_merge_bad_frames_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fleetd::start(dir.path()).await;
    let mut logs = Logs(vec![f.log.clone()]);

    // Three simulated Pis enroll with one three-use token scoped to a group.
    f.ok(
        "POST",
        "/api/v1/groups",
        Some(json!({"id": "rack1", "name": "Rack 1"})),
    )
    .await;
    let enroll = f
        .ok(
            "POST",
            "/api/v1/enrollment-tokens",
            Some(json!({"group": "rack1", "uses": 3, "expires_in": "1h"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut devices: Vec<Metald> = (1..=3)
        .map(|i| Metald::new(dir.path(), &format!("pi-{i}"), i))
        .collect();
    for m in &mut devices {
        m.start(&f.base(), &enroll);
        logs.0.push(m.log());
    }
    for m in &devices {
        online(&f, &m.id).await;
    }
    let listed = f.get("/api/v1/devices?group=rack1").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 3, "{listed}");
    for m in &devices {
        assert!(
            m.dir.join("data/fleet-credential").exists(),
            "{} stored its credential",
            m.id
        );
    }

    // A group fan profile reaches every device, is put in force and reported.
    let r = f
        .ok(
            "PUT",
            "/api/v1/config/groups/rack1",
            Some(json!({"fan_profile": "cool"})),
        )
        .await;
    assert_eq!(r["devices"], json!(["pi-1", "pi-2", "pi-3"]), "{r}");
    for m in &devices {
        let t = applied(&f, m, "fan_profile", &json!("cool")).await;
        assert_eq!(t["reported"]["config.rejection"], Value::Null, "{t}");
    }

    // Past the Pi 4's board floor: refused by fleetd with the rule, nothing written.
    let before: Vec<Value> =
        futures_util::future::join_all(devices.iter().map(|m| f.twin(&m.id))).await;
    let (st, err) = f
        .call(
            "PATCH",
            "/api/v1/config/groups/rack1",
            Some(json!({"critical_c": 95})),
        )
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (422, Some("policy_violation")),
        "{err}"
    );
    assert_eq!(err["error"]["rule"], "threshold_above_board", "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("95"),
        "{err}"
    );
    assert_eq!(
        f.get("/api/v1/config/groups/rack1").await["fields"],
        json!({"fan_profile": "cool"})
    );
    for (m, b) in devices.iter().zip(&before) {
        let t = f.twin(&m.id).await;
        assert_eq!(t["desired"], b["desired"], "{}: nothing written", m.id);
    }
    // The device's own API refuses it the same way.
    let (st, err) = devices[0].patch_desired(json!({"critical_c": 95})).await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (422, Some("policy_violation")),
        "{err}"
    );

    // pi-3 dies; both sides edit its desired config while it is gone.
    devices[2].kill();
    eventually("pi-3 offline in fleetd", async || {
        (f.get("/api/v1/devices/pi-3").await["status"] != "online").then_some(())
    })
    .await;
    f.ok(
        "PATCH",
        "/api/v1/config/devices/pi-3",
        Some(json!({"fan_profile": "max"})),
    )
    .await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    devices[2].start(&closed, &enroll);
    devices[2].wait_ready().await;
    let (st, body) = devices[2].patch_desired(json!({"warn_c": 65})).await;
    assert_eq!(st, 200, "{body}");
    devices[2].stop();
    devices[2].start(&f.base(), &enroll);
    online(&f, "pi-3").await;
    // The merge holds both edits, is applied, and both authors are in the history.
    let t = applied(&f, &devices[2], "fan_profile", &json!("max")).await;
    assert_eq!(t["desired"]["warn_c"].as_f64(), Some(65.0), "{t}");
    let local = devices[2].get("/api/v1/twin").await.unwrap();
    assert_eq!(local["desired"]["fan_profile"], "max", "{local}");
    let authors: BTreeSet<String> = f
        .history("pi-3")
        .await
        .iter()
        .map(|v| v["author"].as_str().unwrap().to_owned())
        .collect();
    for a in ["user:admin", "local_operator:bob", "device:pi-3"] {
        assert!(authors.contains(a), "{a} in {authors:?}");
    }

    // Offline again: each side's edit is safe alone, the merge is not
    // (throttle 68 from the fleet over the device's warn 65; warn 69 from the
    // device under the board's throttle 80). It reaches the twin
    // past fleetd's check; the device refuses it and fleetd shows why.
    devices[2].kill();
    eventually("pi-3 offline again", async || {
        (f.get("/api/v1/devices/pi-3").await["status"] != "online").then_some(())
    })
    .await;
    f.ok(
        "PATCH",
        "/api/v1/config/devices/pi-3",
        Some(json!({"throttle_c": 68})),
    )
    .await;
    devices[2].start(&closed, &enroll);
    devices[2].wait_ready().await;
    let (st, body) = devices[2].patch_desired(json!({"warn_c": 69})).await;
    assert_eq!(st, 200, "{body}");
    devices[2].stop();
    devices[2].start(&f.base(), &enroll);
    let deadline = Instant::now() + PATIENCE;
    let t = loop {
        let t = f.twin("pi-3").await;
        if t["desired"]["warn_c"].as_f64() == Some(69.0)
            && t["desired"]["throttle_c"].as_f64() == Some(68.0)
            && t["reported"]["config.accepted"] == false
            && t["reported"]["config.version"] == t["desired"]["config_version"]
        {
            break t;
        }
        if Instant::now() > deadline {
            let local = devices[2].get("/api/v1/twin").await;
            let state = devices[2].get("/api/v1/state").await;
            panic!(
                "pi-3's rejection never reached fleetd\nfleetd's twin: {t}\n\
                 pi-3's twin: {local:?}\npi-3's state: {state:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = t["reported"]["config.rejection"].as_str().unwrap();
    assert!(why.contains("thresholds_unordered"), "{t}");
    // The device keeps the config it had in force.
    let state = devices[2].get("/api/v1/state").await.unwrap();
    assert_ne!(
        state["fleet"]["applied"]["config_version"], t["desired"]["config_version"],
        "{state}"
    );
    // Dropping the fleet's throttle_c leaves a safe merge, which the device takes.
    f.ok(
        "PATCH",
        "/api/v1/config/devices/pi-3",
        Some(json!({"throttle_c": null})),
    )
    .await;
    let t = applied(&f, &devices[2], "warn_c", &json!(69)).await;
    assert!(
        t["desired"].get("throttle_c").is_none_or(Value::is_null),
        "{t}"
    );
    assert_eq!(t["desired"]["fan_profile"], "max");

    // Garbage on another device's link: counted, the bad link closed with a
    // reason, and the three real devices keep syncing.
    let junk_token = f
        .ok("POST", "/api/v1/enrollment-tokens", Some(json!({})))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let junk = f
        .http
        .post(f.url("/api/v1/enroll"))
        .json(&json!({"token": junk_token, "device_id": "pi-junk", "model": "pi4b"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut req = format!("ws://127.0.0.1:{}/api/v1/devices/pi-junk/sync", f.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {junk}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    for frame in [
        vec![0xff; 64],
        vec![1, 2, 3],
        b"{\"not\": \"a frame\"}".to_vec(),
    ] {
        ws.send(Message::binary(frame)).await.unwrap();
    }
    ws.send(Message::binary(
        Envelope::new(FrameKind::Sync, "pi-1", 0, vec![0; 16]).encode(),
    ))
    .await
    .unwrap();
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(c)) = m {
                return c;
            }
        }
        None
    })
    .await
    .expect("closed in time")
    .expect("a close frame");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.contains("pi-1"), "{}", close.reason);
    let metrics = f.get_text("/metrics").await;
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wrale_sync_frames_rejected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrale_sync_frames_rejected_total in\n{metrics}"));
    assert!(rejected >= 3, "{metrics}");
    f.ok(
        "PATCH",
        "/api/v1/config/groups/rack1",
        Some(json!({"fan_profile": "quiet"})),
    )
    .await;
    for m in &devices[..2] {
        applied(&f, m, "fan_profile", &json!("quiet")).await;
    }
    // pi-3's own layer still wins for it.
    assert_eq!(f.twin("pi-3").await["desired"]["fan_profile"], "max");

    // Restart fleetd with the devices running: nothing is lost, and they come back.
    let ids = ["pi-1", "pi-2", "pi-3"];
    let mut saved = Vec::new();
    for id in ids {
        saved.push((f.twin(id).await, f.history(id).await));
    }
    let records = f.get("/api/v1/devices").await["items"].clone();
    assert_eq!(records.as_array().unwrap().len(), 4, "{records}");
    let layers = f.get("/api/v1/config/groups/rack1").await["fields"].clone();
    f.restart().await;
    let after = f.get("/api/v1/devices").await["items"].clone();
    for (d, before) in after
        .as_array()
        .unwrap()
        .iter()
        .zip(records.as_array().unwrap())
    {
        for k in ["id", "model", "group", "labels", "location", "enrolled_at"] {
            assert_eq!(d[k], before[k], "{k} of {before} after the restart");
        }
    }
    assert_eq!(after.as_array().unwrap().len(), 4, "{after}");
    for (id, (twin, history)) in ids.iter().zip(&saved) {
        let after = f.history(id).await;
        let versions: BTreeSet<&str> = after
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        for v in history {
            assert!(
                versions.contains(v["version"].as_str().unwrap()),
                "{id}: version {v} lost in the restart"
            );
        }
        for h in twin["version"].as_array().unwrap() {
            assert!(
                versions.contains(h.as_str().unwrap()),
                "{id}: head {h} lost in the restart"
            );
        }
        let t = f.twin(id).await;
        assert_eq!(
            t["desired"], twin["desired"],
            "{id}: desired after the restart"
        );
    }
    assert_eq!(f.get("/api/v1/config/groups/rack1").await["fields"], layers);
    for m in &devices {
        online(&f, &m.id).await;
    }
    f.ok(
        "PATCH",
        "/api/v1/config/groups/rack1",
        Some(json!({"fan_profile": "balance"})),
    )
    .await;
    for m in &devices[..2] {
        applied(&f, m, "fan_profile", &json!("balance")).await;
    }
    f.ok(
        "PATCH",
        "/api/v1/config/devices/pi-3",
        Some(json!({"fan_profile": null})),
    )
    .await;
    applied(&f, &devices[2], "fan_profile", &json!("balance")).await;

    for m in &mut devices {
        m.stop();
    }
    terminate(f.child.as_mut().unwrap(), "fleetd");
    f.child = None;
}

/// Moving a device to another group rewrites its twin's desired config from the
/// new group's layers; a move whose result breaks the board floor is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_device_between_groups_rewrites_its_desired_config() {
    let f = crate::support::Fleet::start().await;
    for (id, fields) in [
        ("cold", json!({"fan_profile": "cool"})),
        ("hot", json!({"fan_profile": "max", "warn_c": 65})),
        ("strict", json!({"warn_c": 75})),
    ] {
        f.post("/api/v1/groups", f.admin(), json!({"id": id})).await;
        let r = f
            .call(
                "PUT",
                &format!("/api/v1/config/groups/{id}"),
                Some(f.admin()),
                Some(&fields.to_string()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    f.enroll("pi-m", json!({})).await;
    let desired = async |f: &crate::support::Fleet| {
        f.get("/api/v1/devices/pi-m/twin", f.admin()).await["desired"].clone()
    };
    let moved = f
        .patch("/api/v1/devices/pi-m", f.admin(), json!({"group": "cold"}))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    // Never configured yet: the move writes the whole effective config.
    let d = desired(&f).await;
    assert_eq!(d["fan_profile"], "cool", "{d}");
    // A device layer change keeps what the group gave.
    let r = f
        .patch(
            "/api/v1/config/devices/pi-m",
            f.admin(),
            json!({"throttle_c": 72}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = desired(&f).await;
    assert_eq!(
        (d["fan_profile"].as_str(), d["throttle_c"].as_f64()),
        (Some("cool"), Some(72.0)),
        "{d}"
    );
    let v1 = d["config_version"].as_i64().unwrap();

    // Into `hot`: its fan profile and warn_c replace `cold`'s, by the user.
    let r = f
        .patch("/api/v1/devices/pi-m", f.admin(), json!({"group": "hot"}))
        .await;
    assert_eq!((r.status, r.body["group"].as_str()), (200, Some("hot")));
    let d = desired(&f).await;
    assert_eq!(d["fan_profile"], "max", "{d}");
    assert_eq!(d["warn_c"].as_f64(), Some(65.0), "{d}");
    assert_eq!(
        d["throttle_c"].as_f64(),
        Some(72.0),
        "the device layer stays"
    );
    assert!(d["config_version"].as_i64().unwrap() > v1, "{d}");
    let eff = f
        .get("/api/v1/devices/pi-m/config/effective", f.admin())
        .await;
    assert_eq!(eff["sources"]["fan_profile"], "group:hot", "{eff}");
    let h = f.get("/api/v1/devices/pi-m/history", f.admin()).await;
    let newest = &h["items"][0];
    assert_eq!(newest["author"], "user:admin", "{h}");
    assert!(
        newest["summary"].as_str().unwrap().contains("fan_profile"),
        "{h}"
    );

    // Into `strict`: its warn_c 75 (accepted while the group was empty) is above
    // the Pi 4's 70: refused, and the device stays where it was, config unchanged.
    let before = desired(&f).await;
    let r = f
        .patch(
            "/api/v1/devices/pi-m",
            f.admin(),
            json!({"group": "strict"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.body["error"]["rule"].as_str()),
        (422, "policy_violation", Some("threshold_above_board")),
        "{}",
        r.body
    );
    assert_eq!(
        f.get("/api/v1/devices/pi-m", f.admin()).await["group"],
        "hot"
    );
    assert_eq!(desired(&f).await, before);

    // Out of any group: the group's fields are removed.
    let r = f
        .patch("/api/v1/devices/pi-m", f.admin(), json!({"group": null}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = desired(&f).await;
    assert!(d.get("fan_profile").is_none_or(Value::is_null), "{d}");
    assert!(d.get("warn_c").is_none_or(Value::is_null), "{d}");
    assert_eq!(d["throttle_c"].as_f64(), Some(72.0), "{d}");
    // A move to a group that does not exist is refused and writes nothing.
    f.patch("/api/v1/devices/pi-m", f.admin(), json!({"group": "hot"}))
        .await;
    let d = desired(&f).await;
    let r = f
        .patch(
            "/api/v1/devices/pi-m",
            f.admin(),
            json!({"group": "nowhere"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("group")),
        "{}",
        r.body
    );
    assert_eq!(desired(&f).await, d);
}

/// A layer change that reaches a twin the fleet never configured (the device has
/// not connected yet) writes the whole effective config, not only the changed
/// field: the first connection configures only a twin without a version, so the
/// group's earlier layer would never reach it otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_layer_write_into_a_twin_carries_every_layer() {
    let f = crate::support::Fleet::start().await;
    f.post("/api/v1/groups", f.admin(), json!({"id": "lab"}))
        .await;
    let r = f
        .call(
            "PUT",
            "/api/v1/config/groups/lab",
            Some(f.admin()),
            Some(r#"{"fan_profile": "cool"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = f.enrollment_token(json!({"group": "lab"})).await;
    let r = f
        .call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"token": token, "device_id": "pi-n", "model": "pi4b"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = f
        .call(
            "PATCH",
            "/api/v1/config/fleet",
            Some(f.admin()),
            Some(r#"{"warn_c": 65}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = f.get("/api/v1/devices/pi-n/twin", f.admin()).await["desired"].clone();
    assert_eq!(d["warn_c"].as_f64(), Some(65.0), "{d}");
    assert_eq!(d["fan_profile"], "cool", "the group's layer too: {d}");
}
