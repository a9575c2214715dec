//! The hub (fleet side) against real edge agents, over in-memory links and over a
//! real WebSocket.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wrale_core::DeviceId;
use wrale_core::model::{Actor, Command, CommandRequest, DeviceInfo};
use wrale_core::units::{Celsius, Percent};
use wrale_sync::agent::{ConnectFuture, Connector};
use wrale_sync::telemetry::ring::RingBuffer;
use wrale_sync::transport::{Faults, MemoryTransport};
use wrale_sync::{
    Agent, AgentConfig, AgentHandle, Author, CommandStatus, ConfigVerdict, Envelope, FieldPath,
    FnConnector, FrameKind, Hub, HubConfig, HubError, HubEvent, ReportedUpdate, Section,
    SessionEnd, SqliteStore, SyncSession, TelemetrySink, Transport, Twin,
};

use crate::agent::{SharedStore, config, eventually, validator};
use crate::common::t as at;
use crate::common::*;

// ---------------------------------------------------------------- helpers

fn id(n: usize) -> DeviceId {
    DeviceId::new(format!("pi-{n:03}")).unwrap()
}

fn info_for(device: &DeviceId) -> DeviceInfo {
    DeviceInfo {
        id: device.clone(),
        ..info()
    }
}

/// Records every telemetry record; fails while `fail` is set.
#[derive(Default)]
struct Sink {
    records: Mutex<Vec<(String, Vec<u8>)>>,
    fail: AtomicBool,
    refused: AtomicUsize,
}

#[async_trait]
impl TelemetrySink for Sink {
    async fn ingest(&self, device: &DeviceId, records: Vec<Vec<u8>>) -> wrale_sync::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(wrale_sync::Error::Telemetry("database down".into()));
        }
        let mut r = self.records.lock().unwrap();
        r.extend(records.into_iter().map(|x| (device.to_string(), x)));
        Ok(())
    }
}

fn hub_config() -> HubConfig {
    HubConfig {
        resync_after: Duration::from_millis(500),
        ..HubConfig::default()
    }
}

/// Sessions the hub ran, with how they ended.
type Ends = Arc<Mutex<Vec<(String, SessionEnd)>>>;

/// A connector that opens an in-memory link served by the hub, while `up`.
fn hub_connector(
    hub: &Hub,
    device: &DeviceId,
    sink: Arc<Sink>,
    up: Arc<AtomicBool>,
    ends: Ends,
) -> Box<dyn Connector> {
    let hub = hub.clone();
    let device = device.clone();
    Box::new(FnConnector(move || -> ConnectFuture {
        if !up.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(wrale_sync::Error::Transport("fleet unreachable".into()))
            });
        }
        let (a, b) = MemoryTransport::pair(Faults::NONE, 1);
        let (hub, device, sink, ends) = (hub.clone(), device.clone(), sink.clone(), ends.clone());
        tokio::spawn(async move {
            let end = hub.serve(&device, Box::new(b), sink).await.unwrap();
            ends.lock().unwrap().push((device.to_string(), end));
        });
        Box::pin(async move { Ok(Box::new(a) as Box<dyn Transport>) })
    }))
}

struct Device {
    id: DeviceId,
    handle: AgentHandle,
    store: SharedStore,
    up: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: JoinHandle<wrale_sync::Result<()>>,
}

impl Device {
    async fn stop(self) -> SharedStore {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("agent stops")
            .unwrap()
            .unwrap();
        self.store
    }
}

fn agent_config() -> AgentConfig {
    AgentConfig {
        resync_after: Duration::from_millis(500),
        ..config()
    }
}

/// Starts a real agent for `device` connected to the hub.
fn device(hub: &Hub, n: usize, sink: &Arc<Sink>, ends: &Ends) -> Device {
    let id = id(n);
    let twin = Twin::new(&info_for(&id), Author::device(&id), at(0)).unwrap();
    start_device(
        hub,
        id,
        twin,
        SharedStore::default(),
        sink,
        ends,
        agent_config(),
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn start_device(
    hub: &Hub,
    id: DeviceId,
    twin: Twin,
    store: SharedStore,
    sink: &Arc<Sink>,
    ends: &Ends,
    cfg: AgentConfig,
    ring: Option<Arc<Mutex<RingBuffer>>>,
) -> Device {
    let up = Arc::new(AtomicBool::new(true));
    let conn = hub_connector(hub, &id, sink.clone(), up.clone(), ends.clone());
    let (mut agent, handle) = Agent::new(twin, Box::new(store.clone()), conn, validator(), cfg);
    if let Some(ring) = ring {
        agent = agent.with_telemetry(Box::new(ring));
    }
    let cancel = CancellationToken::new();
    let task = tokio::spawn(agent.run(cancel.clone()));
    Device {
        id,
        handle,
        store,
        up,
        cancel,
        task,
    }
}

fn same(hub: &Hub, d: &Device) -> bool {
    let h = hub.read(&d.id, |t| state(t)).unwrap();
    let a = d.handle.with_twin(|t| state(t));
    h == a
}

fn warn_of(h: &AgentHandle) -> Option<Celsius> {
    h.with_twin(|t| t.desired().unwrap().warn)
}

fn reading(hub: &Hub, d: &DeviceId, name: &str) -> Option<f64> {
    hub.read(d, |t| t.reported().unwrap().readings.get(name).copied())
        .unwrap()
}

/// Executes every command: counts per id, answers `done` with the count, holds
/// `run_diagnostics` for ever (never answers while the test runs).
fn command_host(h: &AgentHandle) -> Arc<Mutex<Vec<String>>> {
    let executed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rx = h.commands().unwrap();
    let ex = executed.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(c) = rx.recv().await {
            ex.lock().unwrap().push(c.id.clone());
            match c.request.command {
                Command::RunDiagnostics => held.push(c),
                _ => {
                    let n = ex.lock().unwrap().len();
                    c.done(Some(serde_json::json!({ "executed": n })));
                }
            }
        }
    });
    executed
}

fn fan(duty: f64) -> CommandRequest {
    CommandRequest::new(
        Actor::User("alice".into()),
        "test",
        Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::saturating(duty),
        },
    )
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_four_agents_sync_both_ways_through_one_hub() {
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let mut events = hub.subscribe();
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    let devices: Vec<Device> = (0..24).map(|n| device(&hub, n, &sink, &ends)).collect();
    eventually("all connected", || hub.status().connected == 24).await;
    // The device's meta (written on the device) reaches the hub.
    eventually("meta synced", || {
        devices.iter().all(|d| {
            hub.read(&d.id, |t| t.meta().map(|m| m.model).ok())
                .unwrap()
                .is_some()
        })
    })
    .await;

    // An edit through the hub reaches each device (and its verdict comes back).
    for (n, d) in devices.iter().enumerate() {
        hub.edit(&d.id, |t| {
            t.edit_desired(
                |c| c.warn = Some(Celsius(60.0 + n as f64 / 10.0)),
                &alice(),
                at(1),
            )
            .unwrap()
        })
        .unwrap();
    }
    for (n, d) in devices.iter().enumerate() {
        let want = Some(Celsius(60.0 + n as f64 / 10.0));
        eventually("desired pushed to the device", || {
            warn_of(&d.handle) == want
        })
        .await;
        let mut v = d.handle.verdicts();
        eventually("accepted", || {
            matches!(&*v.borrow_and_update(), Some(ConfigVerdict::Accepted(c)) if c.warn == want)
        })
        .await;
    }
    // A device report reaches the hub.
    for (n, d) in devices.iter().enumerate() {
        d.handle.edit(|t| {
            t.report(
                &ReportedUpdate::default().reading("cpu_temp_c", 40.0 + n as f64),
                at(2),
            )
            .unwrap()
        });
    }
    for (n, d) in devices.iter().enumerate() {
        eventually("report reached the hub", || {
            reading(&hub, &d.id, "cpu_temp_c") == Some(40.0 + n as f64)
        })
        .await;
    }
    for d in &devices {
        eventually("identical twins", || same(&hub, d)).await;
    }
    // Events: connections, and twin changes naming the device's author and fields.
    let mut connected = 0;
    let mut device_report = false;
    while let Ok(e) = events.try_recv() {
        match e {
            HubEvent::Connected { .. } => connected += 1,
            HubEvent::TwinChanged {
                device,
                authors,
                fields,
                ..
            } if device == devices[3].id
                && fields.contains(&FieldPath::new(Section::Reported, "reading.cpu_temp_c")) =>
            {
                assert!(
                    authors.contains(&Author::device(&devices[3].id)),
                    "{authors:?}"
                );
                device_report = true;
            }
            _ => {}
        }
    }
    assert_eq!(connected, 24);
    assert!(device_report, "a TwinChanged event for the report");
    let st = hub.status();
    assert_eq!(st.sessions_total, 24);
    assert_eq!(st.frames_rejected, 0);
    assert!(st.bytes_in > 0 && st.bytes_out > 0, "{st:?}");
    for d in devices {
        d.stop().await;
    }
    eventually("all disconnected", || hub.status().connected == 0).await;
    eventually("all sessions returned", || ends.lock().unwrap().len() >= 24).await;
    // Each agent closed its link; a hub that was sending at that moment sees
    // the link fail instead. Nothing else (no replacement, no cut-off).
    let ends = ends.lock().unwrap().clone();
    assert_eq!(ends.len(), 24, "{ends:?}");
    assert!(
        ends.iter()
            .all(|(_, e)| matches!(e, SessionEnd::Closed | SessionEnd::Transport(_))),
        "{ends:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_on_both_sides_merge_after_reconnect() {
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    let d = device(&hub, 1, &sink, &ends);
    eventually("connected", || hub.is_connected(&d.id)).await;
    eventually("first sync", || same(&hub, &d)).await;

    d.up.store(false, Ordering::SeqCst);
    assert!(hub.disconnect(&d.id, "test cuts the link"));
    let mut st = d.handle.status();
    eventually("device offline", || !st.borrow_and_update().connected).await;
    eventually("hub sees it gone", || !hub.is_connected(&d.id)).await;
    eventually("session returned", || !ends.lock().unwrap().is_empty()).await;
    assert!(matches!(
        &ends.lock().unwrap()[0].1,
        SessionEnd::Disconnected { reason } if reason == "test cuts the link"
    ));

    hub.edit(&d.id, |t| {
        t.edit_desired(|c| c.warn = Some(Celsius(62.0)), &alice(), at(10))
            .unwrap()
    })
    .unwrap();
    let op = Author::local_operator("console");
    d.handle.edit(|t| {
        t.edit_desired(|c| c.fan_profile = Some("quiet".into()), &op, at(11))
            .unwrap();
        t.report(&ReportedUpdate::default().reading("supply_v", 5.1), at(11))
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(warn_of(&d.handle), None, "still apart");

    d.up.store(true, Ordering::SeqCst);
    eventually("merged", || same(&hub, &d)).await;
    let desired = hub.read(&d.id, |t| t.desired().unwrap()).unwrap();
    assert_eq!(desired.warn, Some(Celsius(62.0)));
    assert_eq!(desired.fan_profile.as_deref(), Some("quiet"));
    assert_eq!(reading(&hub, &d.id, "supply_v"), Some(5.1));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_twins_reload_from_sqlite_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("fleet.db")).unwrap();
    let hub = Hub::new(
        Box::new(store),
        HubConfig {
            max_resident: 3,
            ..hub_config()
        },
    );
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    // One connected device is pinned in memory whatever happens.
    let live = device(&hub, 0, &sink, &ends);
    eventually("connected", || hub.is_connected(&live.id)).await;
    // Ten devices never seen: edited through the hub only.
    for n in 1..=10 {
        hub.edit(&id(n), |t| {
            t.edit_desired(
                |c| c.warn = Some(Celsius(50.0 + n as f64)),
                &alice(),
                at(n as i64),
            )
            .unwrap()
        })
        .unwrap();
    }
    let st = hub.status();
    assert!(st.resident <= 3, "{st:?}");
    assert!(st.evictions >= 8, "{st:?}");
    assert!(hub.is_resident(&live.id), "a live session's twin stays");
    assert!(!hub.is_resident(&id(1)));
    // Reloads are transparent and keep every value and the history.
    for n in 1..=10 {
        let (warn, history) = hub
            .read(&id(n), |t| {
                (t.desired().unwrap().warn, t.history().unwrap().len())
            })
            .unwrap();
        assert_eq!(warn, Some(Celsius(50.0 + n as f64)));
        assert!(history >= 2, "genesis + edit, got {history}");
    }
    assert!(hub.status().loads >= 8);
    // An evicted device connecting later gets what was edited while it was away.
    hub.read(&id(9), |_| ()).unwrap();
    for n in 1..=4 {
        hub.read(&id(n), |_| ()).unwrap();
    }
    assert!(!hub.is_resident(&id(9)));
    let d9 = device(&hub, 9, &sink, &ends);
    eventually("evicted twin synced to its device", || {
        warn_of(&d9.handle) == Some(Celsius(59.0))
    })
    .await;
    eventually("same", || same(&hub, &d9)).await;
    // The live device kept syncing throughout.
    hub.edit(&live.id, |t| {
        t.edit_desired(|c| c.warn = Some(Celsius(70.0)), &alice(), at(20))
            .unwrap()
    })
    .unwrap();
    eventually("live device still synced", || {
        warn_of(&live.handle) == Some(Celsius(70.0))
    })
    .await;
    d9.stop().await;
    live.stop().await;
}

/// A raw link to the hub for `device`, driven by the test.
fn raw_session(hub: &Hub, device: &DeviceId) -> (MemoryTransport, JoinHandle<SessionEnd>) {
    let (a, b) = MemoryTransport::pair(Faults::NONE, 9);
    let (hub, device) = (hub.clone(), device.clone());
    let task = tokio::spawn(async move {
        hub.serve(&device, Box::new(b), Arc::new(Sink::default()))
            .await
            .unwrap()
    });
    (a, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_naming_another_doc_is_cut_off_and_garbage_is_dropped() {
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    let good: Vec<Device> = (0..3).map(|n| device(&hub, n, &sink, &ends)).collect();
    for d in &good {
        eventually("good ones synced", || same(&hub, d)).await;
    }
    let victim = good[0].id.clone();
    let victim_heads = hub.read(&victim, |t| t.heads()).unwrap();

    // A device sending garbage of every kind keeps its session; nothing changes.
    let noisy = id(50);
    let (mut link, noisy_task) = raw_session(&hub, &noisy);
    let mut twin = Twin::empty(&noisy, Author::device(&noisy)).unwrap();
    let noisy_heads = hub.read(&noisy, |t| t.heads()).unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        b"\x00garbage".to_vec(),
        vec![b'W', 1, 99, 0, 0],
        Envelope::new(FrameKind::Sync, noisy.as_str(), 0, vec![0x42, 1, 2, 3]).encode(),
        Envelope::new(FrameKind::Telemetry, noisy.as_str(), 0, vec![0xff; 3]).encode(),
        Envelope::new(FrameKind::CommandResult, noisy.as_str(), 0, b"{".to_vec()).encode(),
        Envelope::new(FrameKind::Command, noisy.as_str(), 0, b"{}".to_vec()).encode(),
        Envelope::new(
            FrameKind::EpochSnapshot,
            noisy.as_str(),
            5,
            b"not a doc".to_vec(),
        )
        .encode(),
    ];
    let rejected_before = hub.status().frames_rejected;
    for g in garbage {
        link.send(g).await.unwrap();
    }
    eventually("all counted", || {
        hub.status().frames_rejected >= rejected_before + 7
    })
    .await;
    assert!(hub.is_connected(&noisy), "garbage does not end the session");
    assert_eq!(hub.read(&noisy, |t| t.heads()).unwrap(), noisy_heads);
    // The noisy device can still sync properly afterwards.
    twin.report(
        &ReportedUpdate::default().reading("cpu_temp_c", 33.0),
        at(1),
    )
    .unwrap();
    let mut s = SyncSession::new(&twin, "fleet");
    for _ in 0..10 {
        while let Some(f) = s.generate(&mut twin) {
            link.send(f).await.unwrap();
        }
        if let Ok(Ok(Some(f))) = tokio::time::timeout(Duration::from_millis(200), link.recv()).await
        {
            s.receive(&mut twin, &f, at(2)).unwrap();
        }
        if reading(&hub, &noisy, "cpu_temp_c") == Some(33.0) {
            break;
        }
    }
    assert_eq!(reading(&hub, &noisy, "cpu_temp_c"), Some(33.0));

    // A device naming another device's document is cut off (1008)...
    let bad = id(60);
    let (mut bad_link, bad_task) = raw_session(&hub, &bad);
    eventually("bad connected", || hub.is_connected(&bad)).await;
    let mut forged = Twin::empty(&victim, Author::device(&victim)).unwrap();
    forged
        .report(
            &ReportedUpdate::default().reading("cpu_temp_c", 99.0),
            at(3),
        )
        .unwrap();
    let mut fs = SyncSession::new(&forged, "fleet");
    let frame = fs.generate(&mut forged).unwrap();
    bad_link.send(frame).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), bad_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        end,
        SessionEnd::WrongDocument {
            doc: victim.to_string()
        }
    );
    assert_eq!(end.close_code(), Some(1008));
    assert!(!hub.is_connected(&bad));
    // ...the victim's twin is untouched, and everybody else keeps syncing.
    assert_eq!(hub.read(&victim, |t| t.heads()).unwrap(), victim_heads);
    assert!(hub.is_connected(&noisy));
    for (n, d) in good.iter().enumerate() {
        hub.edit(&d.id, |t| {
            t.edit_desired(|c| c.warn = Some(Celsius(66.0 + n as f64)), &alice(), at(4))
                .unwrap()
        })
        .unwrap();
        eventually("still syncing", || {
            warn_of(&d.handle) == Some(Celsius(66.0 + n as f64))
        })
        .await;
    }
    drop(link);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), noisy_task)
            .await
            .unwrap()
            .unwrap(),
        SessionEnd::Closed
    );
    for d in good {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_replaces_the_first() {
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let pi = id(7);
    let (_a, first) = raw_session(&hub, &pi);
    eventually("first up", || hub.is_connected(&pi)).await;
    let (_b, _second) = raw_session(&hub, &pi);
    let end = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, SessionEnd::Replaced);
    assert!(hub.is_connected(&pi), "the second one stays");
    assert_eq!(hub.status().connected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_round_trip_and_fail_offline_or_on_timeout() {
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let mut events = hub.subscribe();
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    let d = device(&hub, 1, &sink, &ends);
    let executed = command_host(&d.handle);
    eventually("connected", || hub.is_connected(&d.id)).await;

    let r = hub
        .send_command(&d.id, fan(40.0), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.status, CommandStatus::Done);
    assert_eq!(r.result, Some(serde_json::json!({"executed": 1})));
    assert!(r.id.starts_with("cmd-"), "{}", r.id);
    // The ack reaches the hub's twin.
    eventually("ack in reported", || {
        hub.read(&d.id, |t| t.reported().unwrap().acks.get(&r.id).cloned())
            .unwrap()
            == Some("done".into())
    })
    .await;
    let mut saw_reply = false;
    while let Ok(e) = events.try_recv() {
        if let HubEvent::CommandReply { device, reply } = e {
            saw_reply = device == d.id && reply == r;
        }
    }
    assert!(saw_reply, "CommandReply event");

    // Never answered: timeout.
    let identify = CommandRequest::new(Actor::Fleet, "", Command::RunDiagnostics);
    let e = hub
        .send_command(&d.id, identify, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Timeout { .. }), "{e}");

    assert_eq!(
        hub.status().commands_pending,
        0,
        "forgotten after the timeout"
    );
    // A caller that gives up (dropped future) leaves nothing pending either.
    let (h2, id2) = (hub.clone(), d.id.clone());
    let call = tokio::spawn(async move {
        let held = CommandRequest::new(Actor::Fleet, "", Command::RunDiagnostics);
        h2.send_command(&id2, held, Duration::from_secs(60)).await
    });
    eventually("waiting", || hub.status().commands_pending == 1).await;
    eventually("the device has it", || executed.lock().unwrap().len() == 3).await;
    call.abort();
    eventually("forgotten when dropped", || {
        hub.status().commands_pending == 0
    })
    .await;

    // Offline: at once.
    d.up.store(false, Ordering::SeqCst);
    hub.disconnect(&d.id, "going offline");
    eventually("offline", || !hub.is_connected(&d.id)).await;
    let started = std::time::Instant::now();
    let e = hub
        .send_command(&d.id, fan(50.0), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Offline(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let n = executed.lock().unwrap().len();
    assert_eq!(n, 3);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_flight_over_a_reconnect_runs_once() {
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    let d = device(&hub, 2, &sink, &ends);
    // The host answers only after the link was cut and restored.
    let mut rx = d.handle.commands().unwrap();
    eventually("connected", || hub.is_connected(&d.id)).await;
    let h2 = hub.clone();
    let id2 = d.id.clone();
    let call = tokio::spawn(async move {
        h2.send_command(&id2, fan(30.0), Duration::from_secs(10))
            .await
    });
    let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    hub.disconnect(&d.id, "flaky link");
    eventually("reconnected", || {
        ends.lock().unwrap().len() == 1 && hub.is_connected(&d.id)
    })
    .await;
    // The hub re-sent the pending command on the new session; the agent knows
    // it is still executing and does not hand it out again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "not handed out twice");
    c.done(None);
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status, CommandStatus::Done);
    let mut st = d.handle.status();
    eventually("the re-sent copy was recognised", || {
        st.borrow_and_update().commands_duplicate >= 1
    })
    .await;
    assert_eq!(d.handle.status().borrow().commands_received, 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_acked_only_after_the_sink_accepted_it() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Mutex::new(
        RingBuffer::open(dir.path(), 1 << 16, 4).unwrap(),
    ));
    for i in 0..10u8 {
        ring.lock().unwrap().push(&[i; 8]).unwrap();
    }
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let sink = Arc::new(Sink::default());
    sink.fail.store(true, Ordering::SeqCst);
    let ends = Ends::default();
    let pi = id(3);
    let twin = Twin::new(&info_for(&pi), Author::device(&pi), at(0)).unwrap();
    let cfg = AgentConfig {
        resync_after: Duration::from_millis(200),
        ..agent_config()
    };
    let d = start_device(
        &hub,
        pi.clone(),
        twin,
        SharedStore::default(),
        &sink,
        &ends,
        cfg,
        Some(ring.clone()),
    );
    eventually("refused twice (re-sent)", || {
        sink.refused.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(d.handle.status().borrow().telemetry_acked, 0);
    assert_eq!(
        ring.lock().unwrap().len(),
        10,
        "nothing removed on the device"
    );
    assert!(sink.records.lock().unwrap().is_empty());
    assert!(hub.status().telemetry_refused >= 2);

    sink.fail.store(false, Ordering::SeqCst);
    eventually("acked", || d.handle.status().borrow().telemetry_acked == 10).await;
    eventually("ring drained", || ring.lock().unwrap().is_empty()).await;
    let got: BTreeMap<Vec<u8>, usize> =
        sink.records
            .lock()
            .unwrap()
            .iter()
            .fold(BTreeMap::new(), |mut m, (dev, r)| {
                assert_eq!(dev, pi.as_str());
                *m.entry(r.clone()).or_default() += 1;
                m
            });
    assert_eq!(got.len(), 10, "every record arrived");
    assert_eq!(hub.status().telemetry_records, 10);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_moves_connected_and_offline_devices_to_the_new_epoch() {
    let hub = Hub::new(
        Box::new(SharedStore::default()),
        HubConfig {
            compact_after_changes: 30,
            ..hub_config()
        },
    );
    let mut events = hub.subscribe();
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    let online = device(&hub, 1, &sink, &ends);
    let offline = device(&hub, 2, &sink, &ends);
    eventually("both synced", || {
        same(&hub, &online) && same(&hub, &offline)
    })
    .await;
    offline.up.store(false, Ordering::SeqCst);
    hub.disconnect(&offline.id, "test");
    eventually("offline", || !hub.is_connected(&offline.id)).await;
    // The offline device edits while away.
    let op = Author::local_operator("console");
    offline.handle.edit(|t| {
        t.edit_desired(|c| c.fan_profile = Some("quiet".into()), &op, at(5))
            .unwrap()
    });
    // Enough fleet edits to compact both twins.
    for i in 0..40 {
        for d in [&online.id, &offline.id] {
            hub.edit(d, |t| {
                t.edit_desired(
                    |c| c.warn = Some(Celsius(50.0 + f64::from(i) / 4.0)),
                    &alice(),
                    at(10 + i64::from(i)),
                )
                .unwrap()
            })
            .unwrap();
        }
    }
    let epoch = hub.read(&online.id, |t| t.epoch()).unwrap();
    assert!(epoch >= 1, "compacted");
    assert!(hub.status().compactions >= 2);
    let mut compacted = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, HubEvent::Compacted { .. }) {
            compacted += 1;
        }
    }
    assert!(compacted >= 2);
    // The connected device follows the epoch and converges.
    eventually("online on the new epoch", || {
        online.handle.with_twin(|t| t.epoch()) == hub.read(&online.id, |t| t.epoch()).unwrap()
            && same(&hub, &online)
    })
    .await;
    assert_eq!(warn_of(&online.handle), Some(Celsius(59.75)));
    // The offline one catches up on reconnect and carries its edit over.
    offline.up.store(true, Ordering::SeqCst);
    eventually("offline caught up", || {
        offline.handle.with_twin(|t| t.epoch()) == hub.read(&offline.id, |t| t.epoch()).unwrap()
            && same(&hub, &offline)
    })
    .await;
    let desired = hub.read(&offline.id, |t| t.desired().unwrap()).unwrap();
    assert_eq!(desired.fan_profile.as_deref(), Some("quiet"));
    assert_eq!(desired.warn, Some(Celsius(59.75)));
    online.stop().await;
    offline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_shutdown_ends_sessions_and_refuses_new_ones() {
    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let pi = id(8);
    let (_a, task) = raw_session(&hub, &pi);
    eventually("up", || hub.is_connected(&pi)).await;
    hub.shutdown();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap(),
        SessionEnd::Shutdown
    );
    let (_b, task) = raw_session(&hub, &pi);
    assert_eq!(task.await.unwrap(), SessionEnd::Shutdown);
    assert!(!hub.is_connected(&pi));
}

// ---------------------------------------------------------------- real WebSocket

/// fleetd's shape: axum route, bearer check, `AxumWsTransport`, `Hub::serve`.
#[cfg(feature = "axum")]
async fn fleet_server(hub: Hub, sink: Arc<Sink>) -> std::net::SocketAddr {
    use axum::extract::{Path, WebSocketUpgrade};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use wrale_sync::transport::AxumWsTransport;

    let app = axum::Router::new().route(
        "/api/v1/devices/{id}/sync",
        axum::routing::get(
            move |Path(id): Path<String>, headers: HeaderMap, ws: WebSocketUpgrade| {
                let (hub, sink) = (hub.clone(), sink.clone());
                async move {
                    let want = format!("Bearer wrd_{id}");
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(want.as_str())
                    {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    let Ok(device) = DeviceId::new(id) else {
                        return StatusCode::NOT_FOUND.into_response();
                    };
                    ws.on_upgrade(move |socket| async move {
                        let _ = hub
                            .serve(&device, Box::new(AxumWsTransport::new(socket)), sink)
                            .await;
                    })
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sync_with_the_hub_over_a_real_websocket() {
    use wrale_sync::WsConnector;
    use wrale_sync::transport::WsTransport;

    let hub = Hub::new(Box::new(SharedStore::default()), hub_config());
    let sink = Arc::new(Sink::default());
    let addr = fleet_server(hub.clone(), sink.clone()).await;
    let mut devices = Vec::new();
    for n in 0..5 {
        let pi = id(n);
        let url = format!("ws://{addr}/api/v1/devices/{pi}/sync");
        let conn = WsConnector::new(url).with_token(format!("wrd_{pi}"));
        let twin = Twin::new(&info_for(&pi), Author::device(&pi), at(0)).unwrap();
        let (agent, handle) = Agent::new(
            twin,
            Box::new(SharedStore::default()),
            Box::new(conn),
            validator(),
            agent_config(),
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn(agent.run(cancel.clone()));
        devices.push((pi, handle, cancel, task));
    }
    eventually("all connected", || hub.status().connected == 5).await;
    let executed = command_host(&devices[0].1);
    for (n, (pi, h, _, _)) in devices.iter().enumerate() {
        hub.edit(pi, |t| {
            t.edit_desired(|c| c.warn = Some(Celsius(61.0 + n as f64)), &alice(), at(1))
                .unwrap()
        })
        .unwrap();
        h.edit(|t| {
            t.report(
                &ReportedUpdate::default().reading("cpu_temp_c", 45.0),
                at(2),
            )
            .unwrap()
        });
    }
    for (n, (pi, h, _, _)) in devices.iter().enumerate() {
        eventually("hub edit reached the device", || {
            warn_of(h) == Some(Celsius(61.0 + n as f64))
        })
        .await;
        eventually("device report reached the hub", || {
            reading(&hub, pi, "cpu_temp_c") == Some(45.0)
        })
        .await;
    }
    // A command over the socket.
    let r = hub
        .send_command(&devices[0].0, fan(25.0), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.status, CommandStatus::Done);
    assert_eq!(executed.lock().unwrap().len(), 1);

    // A wrong token is refused at the handshake; a frame for another device
    // closes the socket with 1008 and a reason.
    let url = format!("ws://{addr}/api/v1/devices/pi-900/sync");
    let e = WsTransport::connect_with_token(&url, Some("wrd_nope"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let mut link = WsTransport::connect_with_token(&url, Some("wrd_pi-900"))
        .await
        .unwrap();
    let victim = &devices[1].0;
    let mut forged = Twin::empty(victim, Author::device(victim)).unwrap();
    let mut s = SyncSession::new(&forged, "fleet");
    link.send(s.generate(&mut forged).unwrap()).await.unwrap();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), link.recv())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue, // the hub's own opening sync frames
            other => break other,
        }
    };
    let e = end.unwrap_err().to_string();
    assert!(e.contains("1008") && e.contains(victim.as_str()), "{e}");
    // The others are unaffected.
    hub.edit(&devices[2].0, |t| {
        t.edit_desired(|c| c.warn = Some(Celsius(70.0)), &alice(), at(3))
            .unwrap()
    })
    .unwrap();
    eventually("still syncing", || {
        warn_of(&devices[2].1) == Some(Celsius(70.0))
    })
    .await;
    assert_eq!(hub.status().connected, 5);
    for (_, _, cancel, task) in devices {
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------- scale figure

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// How many device sessions one hub sustains, and the memory of a resident twin.
/// Not a benchmark: run by hand (`cargo test -p wrale-sync --test integration
/// hub::scale_figure -- --ignored --nocapture`, `WRALE_HUB_DEVICES=n`); the
/// figures are in docs/sync.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load figure, run by hand"]
async fn scale_figure() {
    let n: usize = std::env::var("WRALE_HUB_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // Memory of a resident twin on the hub, measured first (RSS never shrinks,
    // so later figures would reuse freed memory): n twins with meta, a report and
    // a desired edit are stored one at a time, then all loaded into a hub.
    {
        let mut store = wrale_sync::MemoryStore::new();
        for i in 0..n {
            let pi = id(100_000 + i);
            let mut twin = Twin::new(&info_for(&pi), Author::device(&pi), at(0)).unwrap();
            twin.report(
                &ReportedUpdate::default().reading("cpu_temp_c", 41.0),
                at(1),
            )
            .unwrap();
            twin.edit_desired(|c| c.warn = Some(Celsius(65.0)), &alice(), at(2))
                .unwrap();
            wrale_sync::Store::save_snapshot(&mut store, pi.as_str(), 0, &twin.save()).unwrap();
        }
        let hub = Hub::new(Box::new(store), hub_config());
        let before = rss_kib();
        let started = std::time::Instant::now();
        for i in 0..n {
            hub.read(&id(100_000 + i), |t| t.heads()).unwrap();
        }
        let load = started.elapsed();
        let after = rss_kib();
        assert_eq!(hub.status().resident, n);
        println!(
            "{n} twins loaded into a hub in {load:?}; resident: RSS +{} KiB = {} KiB per twin",
            after - before,
            (after - before) / n as u64
        );
    }
    // Default timers on both sides (a 500 ms resync would make busy sessions
    // offer their heads again and again).
    let hub = Hub::new(Box::new(SharedStore::default()), HubConfig::default());
    let sink = Arc::new(Sink::default());
    let ends = Ends::default();
    let cfg = AgentConfig {
        resync_after: Duration::from_secs(15),
        ..config()
    };
    let rss0 = rss_kib();
    let started = std::time::Instant::now();
    let devices: Vec<Device> = (0..n)
        .map(|i| {
            let pi = id(i);
            let twin = Twin::new(&info_for(&pi), Author::device(&pi), at(0)).unwrap();
            start_device(
                &hub,
                pi,
                twin,
                SharedStore::default(),
                &sink,
                &ends,
                cfg.clone(),
                None,
            )
        })
        .collect();
    let wait = |what: &'static str, cond: Box<dyn Fn() -> bool>| async move {
        for _ in 0..60_000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out: {what}");
    };
    let h = hub.clone();
    wait("connected", Box::new(move || h.status().connected == n)).await;
    let connected = started.elapsed();
    // Every device reports one field; every twin gets one fleet edit.
    let t1 = std::time::Instant::now();
    for (i, d) in devices.iter().enumerate() {
        d.handle.edit(|t| {
            t.report(
                &ReportedUpdate::default().reading("cpu_temp_c", 40.0 + (i % 20) as f64),
                at(1),
            )
            .unwrap()
        });
        hub.edit(&d.id, |t| {
            t.edit_desired(|c| c.warn = Some(Celsius(65.0)), &alice(), at(1))
                .unwrap()
        })
        .unwrap();
    }
    for (i, d) in devices.iter().enumerate() {
        let (h, pi) = (hub.clone(), d.id.clone());
        wait(
            "report at the hub",
            Box::new(move || reading(&h, &pi, "cpu_temp_c") == Some(40.0 + (i % 20) as f64)),
        )
        .await;
        let dh = d.handle.clone();
        wait(
            "edit at the device",
            Box::new(move || warn_of(&dh) == Some(Celsius(65.0))),
        )
        .await;
    }
    let round = t1.elapsed();
    let rss1 = rss_kib();
    let st = hub.status();
    println!(
        "{n} agents + hub in one process: all connected after {connected:?}; one report up and \
         one edit down for every device in {round:?}; RSS +{} KiB ({} KiB per device, both \
         sides); hub frames in {} / out {}, bytes in {} / out {}",
        rss1 - rss0,
        (rss1 - rss0) / n as u64,
        st.frames_in,
        st.frames_out,
        st.bytes_in,
        st.bytes_out
    );
    for d in devices {
        d.stop().await;
    }
}
