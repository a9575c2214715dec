//! fleetd over TLS (`[api.tls]`), end to end with certificates made at test
//! time: wrale-client's REST and event stream over https/wss with and without
//! the CA, plaintext and garbage on the TLS port, a certificate reload, a
//! webhook to an https receiver trusted through `intel.webhook_ca_file`, and a
//! real metald (sim backend) enrolling and syncing over https/wss.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fleetd::testing::TestServer;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wrale_client::models::DeviceFilter;
use wrale_client::{Client, EventFilter};
use wrale_tls::testing::{TestCa, TestFiles};

fn tls_body(f: &TestFiles) -> String {
    format!(
        "[api.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        f.cert.display(),
        f.key.display()
    )
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The DER of the leaf certificate fleetd presents to a new connection
/// (`None` if the handshake with `ca` trusted fails).
async fn presented(addr: SocketAddr, ca: &Path) -> Option<Vec<u8>> {
    let config = wrale_tls::client_config(&wrale_tls::Roots::CaFile(ca.to_owned())).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = wrale_tls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_events_over_https_need_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let f = TestCa::new("fleet CA").write(dir.path(), "", 1);
    let server = TestServer::start_with(&tls_body(&f)).await;
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let token = Some(server.admin_token.clone());

    let client = Client::with_ca_file(&server.url, token.clone(), &f.ca).unwrap();
    eventually("fleetd ready over https", async || {
        client.ready().await.ok()
    })
    .await;
    let page = client.list_devices(&DeviceFilter::new()).await.unwrap();
    assert!(page.items.is_empty());

    // The event stream over wss: an audited mutation arrives on it.
    let mut events = client.events(&EventFilter::default()).await.unwrap();
    let group: wrale_client::models::NewGroup =
        serde_json::from_value(json!({"id": "tls-lab", "name": "TLS lab"})).unwrap();
    client.create_group(&group).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            let e = e.unwrap();
            if serde_json::to_string(&e).unwrap().contains("tls-lab") {
                return e;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("an event about the new group over wss");
    drop(seen);

    // Without the CA (system roots only): refused, and the error says why.
    let untrusting = Client::new(&server.url, token.clone()).unwrap();
    let e = untrusting
        .list_devices(&DeviceFilter::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "transport");
    assert!(
        e.to_string()
            .contains("the server's TLS certificate is not trusted"),
        "{e}"
    );
    let e = untrusting
        .events(&EventFilter::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("certificate is not trusted"), "{e}");
    // Plain http:// to the TLS port gets no answer.
    let plain = Client::new(&format!("http://{}", server.addr), token).unwrap();
    assert!(plain.list_devices(&DeviceFilter::new()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = TestCa::new("fleet CA").write(dir.path(), "", 1);
    std::fs::write(&f.cert, "").unwrap();
    let mut server = TestServer::start_with(&tls_body(&f)).await;
    let e = server.stop().await.unwrap_err();
    let m = format!("{e:#}");
    assert!(
        m.contains("api.tls") && m.contains("cert.pem") && m.contains("no certificate in it"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_garbage_do_not_stop_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let f = TestCa::new("fleet CA").write(dir.path(), "", 1);
    let server = TestServer::start_with(&tls_body(&f)).await;
    let client =
        Client::with_ca_file(&server.url, Some(server.admin_token.clone()), &f.ca).unwrap();
    eventually("ready", async || client.ready().await.ok()).await;

    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut junk = TcpStream::connect(server.addr).await.unwrap();
    junk.write_all(b"\x16\x03\x01\xff\xffnot a client hello at all")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    let page = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_devices(&DeviceFilter::new()),
    )
    .await
    .expect("a good client is served while a silent one holds a socket")
    .unwrap();
    assert!(page.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_picks_up_renewed_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new("first CA").write(dir.path(), "", 1);
    let server = TestServer::start_with(&tls_body(&first)).await;
    let der = eventually("first certificate", async || {
        presented(server.addr, &first.ca).await
    })
    .await;
    assert_eq!(der, first.cert_der);

    // Renewed in place by another CA (same paths), then SIGHUP's reload.
    let renewed = dir.path().join("renewed");
    std::fs::create_dir(&renewed).unwrap();
    let second = TestCa::new("second CA").write(&renewed, "", 2);
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    server.signals.reload().await;
    let der = eventually("the renewed certificate", async || {
        presented(server.addr, &second.ca).await
    })
    .await;
    assert_eq!(der, second.cert_der);
    assert!(presented(server.addr, &first.ca).await.is_none());

    // A broken file on reload: the running certificate stays.
    std::fs::write(&first.key, "").unwrap();
    server.signals.reload().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        presented(server.addr, &second.ca).await,
        Some(second.cert_der.clone())
    );
}

/// An https webhook receiver on tokio-rustls: records each POST body, answers 200.
async fn https_receiver(files: &TestFiles) -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let tls = wrale_tls::ServerTls::from_files(&files.cert, &files.key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, sink) = (acceptor.clone(), sink.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body: Value =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                    sink.lock().unwrap().push(body);
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = s.shutdown().await;
                    return;
                }
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_an_https_receiver_trusted_by_webhook_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let hook_files = TestCa::new("receiver CA").write(dir.path(), "hook-", 7);
    let (addr, got) = https_receiver(&hook_files).await;
    // The offline rule fires for a device enrolled and never heard of.
    let body = format!(
        r#"
[intel]
interval = "200ms"
webhook_ca_file = "{ca}"

[[intel.rules]]
id = "offline"
severity = "warning"
condition = {{ kind = "offline", after = "2s" }}

[[intel.webhooks]]
id = "secure"
url = "https://localhost:{port}/hook"
"#,
        ca = hook_files.ca.display(),
        port = addr.port(),
    );
    let server = TestServer::start_with(&body).await;
    let client = Client::new(&server.url, Some(server.admin_token.clone())).unwrap();
    eventually("ready", async || client.ready().await.ok()).await;
    let token: wrale_client::models::NewEnrollmentToken =
        serde_json::from_value(json!({"uses": 1})).unwrap();
    let token = client.create_enrollment_token(&token).await.unwrap().token;
    let enroll: wrale_client::models::EnrollRequest = serde_json::from_value(json!({
        "token": token, "device_id": "quiet-1", "model": "pi4b",
    }))
    .unwrap();
    client.enroll(&enroll).await.unwrap();
    let n = eventually("an offline notification over https", async || {
        let bodies = got.lock().unwrap().clone();
        bodies.into_iter().find(|b| {
            b["notification"]["alert"]["key"]
                .as_str()
                .is_some_and(|k| k.contains("quiet-1"))
        })
    })
    .await;
    assert_eq!(n["webhook"], "secure");
    assert_eq!(n["notification"]["kind"], "raised");
}

// ---------------------------------------------------------------- metald

/// The metald binary, built into this test's target directory on first use.
fn metald_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = Path::new(env!("CARGO_BIN_EXE_fleetd"))
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

/// Kills the child and prints its log when the test fails.
struct Metald {
    child: Child,
    log: PathBuf,
}

impl Drop for Metald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&self.log) {
                let _ = f.read_to_string(&mut text);
            }
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- metald log ----\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

fn start_metald(dir: &Path, fleet_url: &str, ca: &Path, token: &str) -> Metald {
    let config = format!(
        r#"[device]
id = "tls-pi"

[api]
bind = "127.0.0.1:0"

[hal]
backend = "sim"
model = "pi4b"
seed = 7

[data]
dir = "{data}"

[log]
format = "json"

[fleet]
url = "{fleet_url}"
ca_file = "{ca}"
enrollment_token = "{token}"
resync_after = "1s"

[fleet.backoff]
initial = "100ms"
max = "1s"
"#,
        data = dir.join("data").display(),
        ca = ca.display(),
    );
    let path = dir.join("metald.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.join("metald.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(metald_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("WRALE_") || k.starts_with("METALD_") || k == "NOTIFY_SOCKET" {
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
    Metald { child, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metald_enrolls_and_syncs_over_https_and_wss() {
    let bin = tokio::task::spawn_blocking(metald_bin).await.unwrap();
    assert!(bin.exists());
    let dir = tempfile::tempdir().unwrap();
    let f = TestCa::new("fleet CA").write(dir.path(), "", 1);
    let server = TestServer::start_with(&tls_body(&f)).await;
    let client =
        Client::with_ca_file(&server.url, Some(server.admin_token.clone()), &f.ca).unwrap();
    eventually("ready", async || client.ready().await.ok()).await;
    let token: wrale_client::models::NewEnrollmentToken =
        serde_json::from_value(json!({"uses": 1})).unwrap();
    let token = client.create_enrollment_token(&token).await.unwrap().token;

    let _metald = start_metald(dir.path(), &server.url, &f.ca, &token);
    // Enrolled over https, then online over wss with its twin reported.
    eventually("tls-pi online with a reported twin", async || {
        let d = client.get_device("tls-pi").await.ok()?;
        let online = serde_json::to_value(&d).ok()?["status"] == "online";
        let twin = client.get_twin("tls-pi").await.ok()?;
        let twin = serde_json::to_value(twin).ok()?;
        let reported = twin["reported"].as_object().is_some_and(|r| !r.is_empty());
        (online && reported).then_some(())
    })
    .await;
    // A desired change made in fleetd reaches the device over wss.
    let patch: wrale_client::models::JsonMap =
        serde_json::from_value(json!({"warn_c": 61})).unwrap();
    client
        .patch_config(
            &wrale_client::models::ConfigScope::Device(
                serde_json::from_value(json!("tls-pi")).unwrap(),
            ),
            &patch,
        )
        .await
        .unwrap();
    eventually("the device accepts the new config", async || {
        let twin = serde_json::to_value(client.get_twin("tls-pi").await.ok()?).ok()?;
        let version = twin["desired"]["config_version"].clone();
        (!version.is_null()
            && twin["reported"]["config.accepted"] == true
            && twin["reported"]["config.version"] == version
            && twin["desired"]["warn_c"].as_f64() == Some(61.0))
        .then_some(())
    })
    .await;
}
