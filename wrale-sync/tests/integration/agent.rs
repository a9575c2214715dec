//! The edge agent against a test brain (a fleet-side twin and session) over the
//! in-memory transport.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wrale_core::model::{Actor, Command, CommandRequest};
use wrale_core::units::Celsius;
use wrale_core::{BoardModel, BoardProfile};
use wrale_sync::agent::{ConnectFuture, decode_telemetry, encode_telemetry, encode_telemetry_ack};
use wrale_sync::store::load_twin;
use wrale_sync::telemetry::ring::RingBuffer;
use wrale_sync::transport::{Faults, MemoryTransport};
use wrale_sync::{
    Agent, AgentConfig, AgentHandle, AgentMode, Author, Backoff, BoardFloorValidator, CommandReply,
    CommandStatus, ConfigVerdict, Envelope, FleetCommand, FnConnector, FrameKind, MemoryStore,
    ReportedUpdate, Store, StoredTwin, SyncSession, Transport, Twin, decode_command_result,
    encode_command,
};

use crate::common::t as at;
use crate::common::*;

// ---------------------------------------------------------------- helpers

/// A store shared between the agent and the test.
#[derive(Clone, Default)]
pub(crate) struct SharedStore(pub(crate) Arc<Mutex<MemoryStore>>);

impl Store for SharedStore {
    fn load(&self, doc: &str) -> wrale_sync::Result<Option<StoredTwin>> {
        self.0.lock().unwrap().load(doc)
    }
    fn save_snapshot(&mut self, doc: &str, epoch: u64, snapshot: &[u8]) -> wrale_sync::Result<()> {
        self.0.lock().unwrap().save_snapshot(doc, epoch, snapshot)
    }
    fn append_changes(&mut self, doc: &str, epoch: u64, c: &[u8]) -> wrale_sync::Result<usize> {
        self.0.lock().unwrap().append_changes(doc, epoch, c)
    }
    fn switch_epoch(
        &mut self,
        doc: &str,
        old_epoch: u64,
        archived: &[u8],
        new_epoch: u64,
        snapshot: &[u8],
    ) -> wrale_sync::Result<()> {
        self.0
            .lock()
            .unwrap()
            .switch_epoch(doc, old_epoch, archived, new_epoch, snapshot)
    }
    fn put_sync_state(&mut self, doc: &str, peer: &str, state: &[u8]) -> wrale_sync::Result<()> {
        self.0.lock().unwrap().put_sync_state(doc, peer, state)
    }
    fn sync_state(&self, doc: &str, peer: &str) -> wrale_sync::Result<Option<Vec<u8>>> {
        self.0.lock().unwrap().sync_state(doc, peer)
    }
    fn archived_epochs(&self, doc: &str) -> wrale_sync::Result<Vec<u64>> {
        self.0.lock().unwrap().archived_epochs(doc)
    }
    fn load_archived(&self, doc: &str, epoch: u64) -> wrale_sync::Result<Option<Vec<u8>>> {
        self.0.lock().unwrap().load_archived(doc, epoch)
    }
    fn docs(&self) -> wrale_sync::Result<Vec<String>> {
        self.0.lock().unwrap().docs()
    }
}

/// Links the test hands to the agent's connector; empty = fleet unreachable.
pub(crate) type Links = Arc<Mutex<VecDeque<MemoryTransport>>>;

pub(crate) fn connector(links: Links) -> Box<FnConnector<impl FnMut() -> ConnectFuture + Send>> {
    Box::new(FnConnector(move || -> ConnectFuture {
        let next = links.lock().unwrap().pop_front();
        Box::pin(async move {
            match next {
                Some(t) => Ok(Box::new(t) as Box<dyn Transport>),
                None => Err(wrale_sync::Error::Transport("fleet unreachable".into())),
            }
        })
    }))
}

/// The fleet side: a twin, its saved sync state for the device, telemetry seen.
#[derive(Clone)]
struct Brain {
    twin: Arc<Mutex<Twin>>,
    changed: Arc<Notify>,
    saved: Arc<Mutex<Option<Vec<u8>>>>,
    telemetry: Arc<Mutex<Vec<Vec<u8>>>>,
    ack: Arc<AtomicBool>,
    /// Raw frames to send to the device (commands, garbage), sent on `changed`.
    outbox: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Command results received from the device.
    results: Arc<Mutex<Vec<CommandReply>>>,
    /// Reset the session after this long without a frame (lossy links).
    resync: Option<Duration>,
}

impl Brain {
    fn new(twin: Twin) -> Brain {
        Brain {
            twin: Arc::new(Mutex::new(twin)),
            changed: Arc::new(Notify::new()),
            saved: Arc::default(),
            telemetry: Arc::default(),
            ack: Arc::new(AtomicBool::new(true)),
            outbox: Arc::default(),
            results: Arc::default(),
            resync: None,
        }
    }

    fn edit<R>(&self, f: impl FnOnce(&mut Twin) -> R) -> R {
        let r = f(&mut self.twin.lock().unwrap());
        self.changed.notify_one();
        r
    }

    fn with<R>(&self, f: impl FnOnce(&mut Twin) -> R) -> R {
        f(&mut self.twin.lock().unwrap())
    }

    /// Queues a raw frame for the device.
    fn push(&self, frame: Vec<u8>) {
        self.outbox.lock().unwrap().push(frame);
        self.changed.notify_one();
    }

    /// Sends a fleet command.
    fn command(&self, id: &str, command: Command) {
        let c = FleetCommand {
            id: id.into(),
            request: CommandRequest::new(Actor::User("alice".into()), "test", command),
        };
        self.push(encode_command("pi-rack1-07", 0, &c));
    }

    fn results_for(&self, id: &str) -> Vec<CommandReply> {
        let r = self.results.lock().unwrap();
        r.iter().filter(|r| r.id == id).cloned().collect()
    }

    fn flush(&self, s: &mut SyncSession) -> Vec<Vec<u8>> {
        let mut twin = self.twin.lock().unwrap();
        let mut out = Vec::new();
        while let Some(f) = s.generate(&mut twin) {
            out.push(f);
        }
        *self.saved.lock().unwrap() = Some(s.saved_state());
        out
    }

    /// Serves one link until it closes (or the task is aborted: disconnect).
    fn serve(&self, t: MemoryTransport) -> JoinHandle<()> {
        let b = self.clone();
        tokio::spawn(async move { b.serve_on(t).await })
    }

    /// Serves one link of any kind until it closes.
    async fn serve_on<T: Transport>(&self, mut t: T) {
        let b = self;
        let mut s = {
            let twin = b.twin.lock().unwrap();
            match b.saved.lock().unwrap().clone() {
                Some(saved) => SyncSession::with_saved_state(&twin, "pi", &saved).unwrap(),
                None => SyncSession::new(&twin, "pi"),
            }
        };
        loop {
            let raw: Vec<Vec<u8>> = std::mem::take(&mut *b.outbox.lock().unwrap());
            for f in b.flush(&mut s).into_iter().chain(raw) {
                if t.send(f).await.is_err() {
                    return;
                }
            }
            let frame = tokio::select! {
                r = t.recv() => match r {
                    Ok(Some(f)) => f,
                    _ => return,
                },
                () = b.changed.notified() => continue,
                // Quiet for a while: forget in-flight state (a lost frame
                // otherwise leaves both sides waiting), as a fleet peer does.
                () = tokio::time::sleep(b.resync.unwrap_or(Duration::MAX)),
                    if b.resync.is_some() => {
                    s.reset();
                    continue;
                }
            };
            let env = Envelope::decode(&frame).expect("the agent sends valid frames");
            if env.kind == FrameKind::Telemetry {
                let (seq, records) = decode_telemetry(&env.payload).unwrap();
                b.telemetry.lock().unwrap().extend(records);
                if b.ack.load(Ordering::SeqCst) {
                    let _ = t.send(encode_telemetry_ack(&env.doc, env.epoch, seq)).await;
                }
                continue;
            }
            if env.kind == FrameKind::CommandResult {
                let r = decode_command_result(&env.payload).expect("valid result");
                b.results.lock().unwrap().push(r);
                continue;
            }
            let mut twin = b.twin.lock().unwrap();
            s.receive(&mut twin, &frame, at(50))
                .expect("valid sync frame");
        }
    }
}

/// Connects the agent to the brain with a link that loses frames.
fn lossy_link(links: &Links, brain: &Brain, loss: f64, seed: u64) -> JoinHandle<()> {
    let faults = Faults {
        loss,
        ..Faults::NONE
    };
    let (a, b) = MemoryTransport::pair(faults, seed);
    links.lock().unwrap().push_back(a);
    brain.serve(b)
}

/// Connects the agent to the brain with a fresh link.
fn link(links: &Links, brain: &Brain) -> JoinHandle<()> {
    let (a, b) = MemoryTransport::pair(Faults::NONE, 1);
    links.lock().unwrap().push_back(a);
    brain.serve(b)
}

pub(crate) fn config() -> AgentConfig {
    AgentConfig {
        peer: "fleet".into(),
        backoff: Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(40),
            factor: 2.0,
        },
        seed: Some(7),
        snapshot_every: 8,
        telemetry_batch: 16,
        telemetry_interval: Duration::from_millis(10),
        resync_after: Duration::from_secs(30),
        command_queue: 4,
    }
}

pub(crate) fn validator() -> Box<BoardFloorValidator> {
    Box::new(BoardFloorValidator::new(BoardProfile::builtin(
        BoardModel::Pi4B,
    )))
}

struct Running {
    handle: AgentHandle,
    cancel: CancellationToken,
    task: JoinHandle<wrale_sync::Result<()>>,
}

fn start(twin: Twin, store: SharedStore, links: Links, cfg: AgentConfig) -> Running {
    start_with(twin, store, links, cfg, None)
}

fn start_with(
    twin: Twin,
    store: SharedStore,
    links: Links,
    cfg: AgentConfig,
    ring: Option<Arc<Mutex<RingBuffer>>>,
) -> Running {
    let (mut agent, handle) = Agent::new(twin, Box::new(store), connector(links), validator(), cfg);
    if let Some(ring) = ring {
        agent = agent.with_telemetry(Box::new(ring));
    }
    let cancel = CancellationToken::new();
    let task = tokio::spawn(agent.run(cancel.clone()));
    Running {
        handle,
        cancel,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the agent stops on cancel")
            .unwrap()
            .unwrap();
    }
}

/// Waits for `cond`, polling every 10 ms, for up to 30 s of wall time (generous:
/// a loaded 2-core CI machine is slow, and a passing run returns at once).
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A brain and a device twin that start from the same document.
fn pair() -> (Brain, Twin) {
    let mut f = Twin::new(&info(), fleet(), at(0)).unwrap();
    let d = Twin::load(&f.save(), dev()).unwrap();
    (Brain::new(f), d)
}

fn in_sync(brain: &Brain, h: &AgentHandle) -> bool {
    let b = brain.with(|t| state(t));
    let d = h.with_twin(|t| state(t));
    let st = h.status().borrow().clone();
    b == d && st.sync_lag == 0 && st.last_sync.is_some()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_syncs_and_reports_verdicts() {
    let (brain, d) = pair();
    let links = Links::default();
    let store = SharedStore::default();
    let _b = link(&links, &brain);
    let agent = start(d, store.clone(), links.clone(), config());
    let h = agent.handle.clone();

    brain.edit(|t| {
        t.edit_desired(|c| c.warn = Some(Celsius(65.0)), &alice(), at(1))
            .unwrap()
    });
    let mut verdicts = h.verdicts();
    eventually("accepted warn 65", || {
        matches!(&*verdicts.borrow_and_update(),
            Some(ConfigVerdict::Accepted(c)) if c.warn == Some(Celsius(65.0)))
    })
    .await;
    h.edit(|t| {
        t.report(
            &ReportedUpdate::default().reading("cpu_temp_c", 51.0),
            at(2),
        )
        .unwrap()
    });
    eventually("brain sees the reading", || {
        brain.with(|t| t.reported().unwrap().readings.get("cpu_temp_c") == Some(&51.0))
    })
    .await;
    eventually("in sync", || in_sync(&brain, &h)).await;
    let st = h.status().borrow().clone();
    assert_eq!(st.mode, AgentMode::Normal);
    assert!(st.connected && st.last_sync.is_some(), "{st:?}");
    assert_eq!(st.reconnects, 0);
    // The verdict is reported in the brain's copy.
    let cfg = brain.with(|t| t.reported().unwrap().config.unwrap());
    assert!(cfg.accepted, "{cfg:?}");
    // Persisted: the store holds the synced twin.
    let stored = load_twin(&store, "pi-rack1-07", dev()).unwrap().unwrap();
    assert_eq!(state(&stored), h.with_twin(|t| state(t)));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_on_both_sides_merge_on_reconnect() {
    let (brain, d) = pair();
    let links = Links::default();
    let store = SharedStore::default();
    let b = link(&links, &brain);
    let agent = start(d, store.clone(), links.clone(), config());
    let h = agent.handle.clone();
    eventually("first sync", || in_sync(&brain, &h)).await;

    b.abort();
    let mut status = h.status();
    eventually("degraded", || {
        let s = status.borrow_and_update();
        s.mode == AgentMode::Degraded && !s.connected
    })
    .await;
    // Offline: the device keeps accepting local edits...
    let op = Author::local_operator("console");
    h.edit(|t| {
        t.edit_desired(|c| c.fan_profile = Some("quiet".into()), &op, at(10))
            .unwrap();
        t.report(&ReportedUpdate::default().reading("supply_v", 5.1), at(11))
            .unwrap();
    });
    // ...and the brain edits too.
    brain.edit(|t| {
        t.edit_desired(|c| c.warn = Some(Celsius(62.0)), &alice(), at(12))
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.status().borrow().sync_lag > 0,
        "local edits not acknowledged"
    );
    assert_eq!(h.with_twin(|t| t.desired().unwrap().warn), None);

    let _b = link(&links, &brain);
    eventually("merged", || in_sync(&brain, &h)).await;
    let desired = brain.with(|t| t.desired().unwrap());
    assert_eq!(desired.fan_profile.as_deref(), Some("quiet"));
    assert_eq!(desired.warn, Some(Celsius(62.0)));
    assert_eq!(
        brain.with(|t| t.reported().unwrap().readings.get("supply_v").copied()),
        Some(5.1)
    );
    let st = h.status().borrow().clone();
    assert!(st.reconnects >= 1 && st.mode == AgentMode::Normal, "{st:?}");
    agent.stop().await;
}

/// Bytes the agent sends on a reconnect carrying one new edit, until in sync.
async fn reconnect_bytes(brain: &Brain, d: Twin, store: SharedStore) -> u64 {
    let links = Links::default();
    let _b = link(&links, brain);
    let agent = start(d, store, links, config());
    let h = agent.handle.clone();
    eventually("in sync", || in_sync(brain, &h)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bytes = h.status().borrow().bytes_sent;
    agent.stop().await;
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_sync_state_makes_reconnects_smaller() {
    let (brain, d) = pair();
    let links = Links::default();
    let store = SharedStore::default();
    let b = link(&links, &brain);
    let agent = start(d, store.clone(), links.clone(), config());
    let h = agent.handle.clone();
    for i in 0..60 {
        h.edit(|t| {
            t.report(
                &ReportedUpdate::default().reading("cpu_temp_c", 40.0 + f64::from(i)),
                at(i64::from(i) * 600),
            )
            .unwrap()
        });
    }
    eventually("synced history", || in_sync(&brain, &h)).await;
    agent.stop().await;
    b.abort();

    // The same situation twice: one new edit; resumed vs fresh sync state.
    let edit = |t: &mut Twin| {
        t.report(
            &ReportedUpdate::default().reading("supply_v", 4.9),
            at(100_000),
        )
        .unwrap();
    };
    let mut resumed = load_twin(&store, "pi-rack1-07", dev()).unwrap().unwrap();
    let mut fresh = Twin::load(&resumed.save(), dev()).unwrap();
    let fresh_store = SharedStore::default();
    wrale_sync::store::persist(&mut fresh_store.clone(), &mut fresh, 8).unwrap();
    edit(&mut resumed);
    edit(&mut fresh);
    let fresh_brain = Brain::new(brain.with(|t| Twin::load(&t.save(), fleet()).unwrap()));

    let with_state = reconnect_bytes(&brain, resumed, store).await;
    let without = reconnect_bytes(&fresh_brain, fresh, fresh_store).await;
    assert!(
        with_state < without,
        "resumed {with_state} B, fresh {without} B"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_with_full_jitter_and_is_seeded() {
    let b = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        factor: 2.0,
    };
    let ceilings: Vec<u64> = (0..6).map(|i| b.ceiling(i).as_millis() as u64).collect();
    assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);

    async fn gaps(seed: u64, b: Backoff) -> Vec<Duration> {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let seen = attempts.clone();
        let conn = FnConnector(move || -> ConnectFuture {
            seen.lock().unwrap().push(tokio::time::Instant::now());
            Box::pin(async { Err(wrale_sync::Error::Transport("unreachable".into())) })
        });
        let cfg = AgentConfig {
            backoff: b,
            seed: Some(seed),
            ..config()
        };
        let (_d_brain, d) = pair();
        let (agent, h) = Agent::new(
            d,
            Box::new(MemoryStore::new()),
            Box::new(conn),
            validator(),
            cfg,
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn(agent.run(cancel.clone()));
        while attempts.lock().unwrap().len() < 12 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        task.await.unwrap().unwrap();
        let st = h.status().borrow().clone();
        assert_eq!(st.mode, AgentMode::Degraded);
        assert!(!st.connected && st.reconnects >= 11, "{st:?}");
        let at = attempts.lock().unwrap().clone();
        at.windows(2).map(|w| w[1] - w[0]).collect()
    }

    let g = gaps(7, b).await;
    for (i, d) in g.iter().enumerate() {
        assert!(*d <= b.ceiling(i as u32), "gap {i} = {d:?}");
    }
    // Growth: later gaps exceed the first ceiling; jitter: not all at the ceiling.
    assert!(g[4..].iter().any(|d| *d > b.initial), "{g:?}");
    assert!(
        g.iter()
            .enumerate()
            .any(|(i, d)| *d < b.ceiling(i as u32) * 9 / 10),
        "{g:?}"
    );
    assert_eq!(gaps(7, b).await, g, "same seed, same delays");
    assert_ne!(gaps(8, b).await, g, "another seed, other delays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_desired_config_is_rejected_and_reported() {
    let (brain, d) = pair();
    let links = Links::default();
    let _b = link(&links, &brain);
    let agent = start(d, SharedStore::default(), links.clone(), config());
    let h = agent.handle.clone();
    eventually("first sync", || in_sync(&brain, &h)).await;

    brain.edit(|t| {
        t.edit_desired(
            |c| {
                c.critical = Some(Celsius(120.0));
                c.config_version = 3;
            },
            &alice(),
            at(5),
        )
        .unwrap()
    });
    let mut verdicts = h.verdicts();
    eventually("rejected", || {
        matches!(
            &*verdicts.borrow_and_update(),
            Some(ConfigVerdict::Rejected(_))
        )
    })
    .await;
    eventually("brain sees the rejection", || {
        brain.with(|t| {
            t.reported()
                .unwrap()
                .config
                .is_some_and(|c| c.version == 3 && !c.accepted && c.rejection.is_some())
        })
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_removed_only_after_ack_and_resent_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Mutex::new(RingBuffer::open(dir.path(), 4096, 4).unwrap()));
    for i in 0..3u8 {
        ring.lock().unwrap().push(&[i; 10]).unwrap();
    }
    let (brain, d) = pair();
    brain.ack.store(false, Ordering::SeqCst);
    let links = Links::default();
    let b = link(&links, &brain);
    let agent = start_with(
        d,
        SharedStore::default(),
        links.clone(),
        AgentConfig { ..config() },
        Some(ring.clone()),
    );
    let h = agent.handle.clone();
    eventually("records arrive", || {
        brain.telemetry.lock().unwrap().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ring.lock().unwrap().len(), 3, "not acknowledged: kept");
    assert_eq!(h.status().borrow().telemetry_acked, 0);

    // The link dies before the ack: the batch goes again on the next one.
    b.abort();
    brain.ack.store(true, Ordering::SeqCst);
    let _b = link(&links, &brain);
    eventually("acknowledged", || ring.lock().unwrap().is_empty()).await;
    let got = brain.telemetry.lock().unwrap().clone();
    assert_eq!(got.len(), 6, "at least once: the batch was re-sent");
    assert_eq!(got[..3], got[3..]);
    assert_eq!(got[0], vec![0u8; 10]);
    // New records keep flowing.
    ring.lock().unwrap().push(b"later").unwrap();
    eventually("later record", || {
        brain.telemetry.lock().unwrap().last().map(Vec::as_slice) == Some(&b"later"[..])
    })
    .await;
    eventually("ring empty", || ring.lock().unwrap().is_empty()).await;
    eventually("4 acknowledged", || {
        h.status().borrow().telemetry_acked == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.status().borrow().telemetry_acked, 4);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_rejected_and_the_twin_is_untouched() {
    let (_brain, d) = pair();
    let links = Links::default();
    let (a, mut far) = MemoryTransport::pair(Faults::NONE, 1);
    links.lock().unwrap().push_back(a);
    let agent = start(d, SharedStore::default(), links.clone(), config());
    let h = agent.handle.clone();
    eventually("connected", || h.status().borrow().connected).await;
    let before = h.with_twin(|t| (t.heads(), state(t)));

    let garbage = [
        b"hello".to_vec(),
        vec![0u8; 64],
        Envelope::new(FrameKind::Sync, "pi-rack1-07", 0, vec![0x42, 1, 2]).encode(),
        Envelope::new(FrameKind::Sync, "other-pi", 0, vec![]).encode(),
        Envelope::new(FrameKind::EpochSnapshot, "pi-rack1-07", 5, b"junk".to_vec()).encode(),
        Envelope::new(FrameKind::TelemetryAck, "pi-rack1-07", 0, vec![0xff]).encode(),
        encode_telemetry("other-pi", 0, 1, &[]),
    ];
    let n = garbage.len() as u64;
    for g in garbage {
        far.send(g).await.unwrap();
    }
    let mut status = h.status();
    eventually("all rejected", || {
        status.borrow_and_update().frames_rejected >= n - 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let st = h.status().borrow().clone();
    // The telemetry frame for another device is not a sync frame either: it is
    // ignored or rejected, never applied.
    assert!(st.frames_rejected >= n - 1, "{st:?}");
    assert!(st.connected, "garbage does not kill the link");
    assert_eq!(h.with_twin(|t| (t.heads(), state(t))), before);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_change_while_offline_keeps_local_edits() {
    let (brain, d) = pair();
    let links = Links::default();
    let store = SharedStore::default();
    let b = link(&links, &brain);
    let agent = start(d, store.clone(), links.clone(), config());
    let h = agent.handle.clone();
    brain.edit(|t| {
        t.edit_desired(|c| c.warn = Some(Celsius(66.0)), &alice(), at(1))
            .unwrap()
    });
    eventually("first sync", || in_sync(&brain, &h)).await;
    b.abort();
    eventually("offline", || !h.status().borrow().connected).await;

    let op = Author::local_operator("console");
    h.edit(|t| {
        t.edit_desired(|c| c.fan_profile = Some("cool".into()), &op, at(20))
            .unwrap();
        t.report(
            &ReportedUpdate::default().reading("cpu_temp_c", 47.0),
            at(21),
        )
        .unwrap();
    });
    let c = brain.edit(|t| t.compact(&fleet(), at(30)).unwrap());
    assert_eq!((c.old_epoch, c.new_epoch), (0, 1));

    let _b = link(&links, &brain);
    eventually("merged on the new epoch", || {
        h.with_twin(|t| t.epoch()) == 1
            && brain.with(|t| t.desired().unwrap().fan_profile.as_deref() == Some("cool"))
    })
    .await;
    eventually("in sync", || in_sync(&brain, &h)).await;
    let (desired, reported) = brain.with(|t| (t.desired().unwrap(), t.reported().unwrap()));
    assert_eq!(desired.warn, Some(Celsius(66.0)));
    assert_eq!(reported.readings.get("cpu_temp_c"), Some(&47.0));
    // The store moved to the new epoch and archived the old one.
    let stored = load_twin(&store, "pi-rack1-07", dev()).unwrap().unwrap();
    assert_eq!(stored.epoch(), 1);
    assert_eq!(
        stored.desired().unwrap().fan_profile.as_deref(),
        Some("cool")
    );
    assert_eq!(store.archived_epochs("pi-rack1-07").unwrap(), vec![0]);
    agent.stop().await;
}

#[test]
fn telemetry_frames_round_trip_and_reject_garbage() {
    let recs = vec![b"a".to_vec(), vec![], vec![7u8; 300]];
    let f = encode_telemetry("pi-01", 2, 9, &recs);
    let env = Envelope::decode(&f).unwrap();
    assert_eq!(env.kind, FrameKind::Telemetry);
    assert_eq!(decode_telemetry(&env.payload).unwrap(), (9, recs));
    assert!(decode_telemetry(&[1, 5, 0]).is_err(), "cut-off record");
    let ack = Envelope::decode(&encode_telemetry_ack("pi-01", 2, 300)).unwrap();
    assert_eq!(ack.kind, FrameKind::TelemetryAck);
    assert_eq!(
        wrale_sync::agent::decode_telemetry_ack(&ack.payload).unwrap(),
        300
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_link_converges_and_delivers_all_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Mutex::new(RingBuffer::open(dir.path(), 4096, 4).unwrap()));
    let (mut brain, d) = pair();
    brain.resync = Some(Duration::from_millis(60));
    let links = Links::default();
    let _b = lossy_link(&links, &brain, 0.3, 11);
    let agent = start_with(
        d,
        SharedStore::default(),
        links.clone(),
        AgentConfig {
            telemetry_batch: 2,
            resync_after: Duration::from_millis(40),
            ..config()
        },
        Some(ring.clone()),
    );
    let h = agent.handle.clone();
    for i in 0..10u8 {
        ring.lock().unwrap().push(&[i; 4]).unwrap();
        h.edit(|t| {
            t.report(
                &ReportedUpdate::default().reading("cpu_temp_c", 40.0 + f64::from(i)),
                at(i64::from(i) * 600),
            )
            .unwrap()
        });
        brain.edit(|t| {
            t.edit_desired(
                |c| c.config_version = u64::from(i) + 1,
                &alice(),
                at(i64::from(i)),
            )
            .unwrap()
        });
    }
    eventually("converged over a lossy link", || in_sync(&brain, &h)).await;
    eventually("all telemetry acknowledged", || {
        ring.lock().unwrap().is_empty()
    })
    .await;
    let mut got = brain.telemetry.lock().unwrap().clone();
    got.sort();
    got.dedup();
    assert_eq!(got, (0..10u8).map(|i| vec![i; 4]).collect::<Vec<_>>());
    assert_eq!(h.with_twin(|t| t.desired().unwrap().config_version), 10);
    agent.stop().await;
}

/// metald hands the agent its policy engine: it must be accepted as is.
#[test]
fn policy_validator_fits_the_agent() {
    let v: Box<dyn wrale_sync::ConfigValidator + Send> = Box::new(
        wrale_sync::PolicyValidator::new(&BoardProfile::builtin(BoardModel::Pi4B)),
    );
    let mut cfg = wrale_sync::DesiredConfig::default();
    assert!(v.validate(&cfg).is_ok());
    cfg.critical = Some(Celsius(150.0));
    assert!(v.validate(&cfg).is_err());
}

// ---------------------------------------------------------------- commands

/// Executes every command the host receives: counts executions per id and
/// answers `done` with the count, except `reboot`, which is refused.
fn host(h: &AgentHandle) -> Arc<Mutex<Vec<String>>> {
    let executed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rx = h.commands().expect("first take");
    assert!(h.commands().is_none(), "taken once");
    let ex = executed.clone();
    tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            ex.lock().unwrap().push(c.id.clone());
            match c.request.command {
                Command::Reboot => c.refused("maintenance_window", "not now"),
                _ => {
                    let n = ex.lock().unwrap().len();
                    c.done(Some(serde_json::json!({ "n": n })));
                }
            }
        }
    });
    executed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_executed_once_answered_and_acked_in_reported() {
    let (brain, d) = pair();
    let links = Links::default();
    let store = SharedStore::default();
    let b = link(&links, &brain);
    let agent = start(d, store.clone(), links.clone(), config());
    let h = agent.handle.clone();
    let executed = host(&h);
    eventually("first sync", || in_sync(&brain, &h)).await;

    brain.command(
        "c-1",
        Command::SetFanDuty {
            fan: "fan0".into(),
            duty: wrale_core::units::Percent::saturating(40.0),
        },
    );
    brain.command("c-2", Command::Reboot);
    eventually("both answered", || {
        !brain.results_for("c-1").is_empty() && !brain.results_for("c-2").is_empty()
    })
    .await;
    let r1 = brain.results_for("c-1").remove(0);
    assert_eq!(r1.status, CommandStatus::Done);
    assert_eq!(r1.result, Some(serde_json::json!({"n": 1})));
    let r2 = brain.results_for("c-2").remove(0);
    assert_eq!(r2.status, CommandStatus::Refused);
    assert_eq!(r2.code.as_deref(), Some("maintenance_window"));
    eventually("acks reach the brain's twin", || {
        let acks = brain.with(|t| t.reported().unwrap().acks);
        acks.get("c-1").map(String::as_str) == Some("done")
            && acks.get("c-2").map(String::as_str) == Some("refused:maintenance_window")
    })
    .await;

    // Re-sent on the same link: answered again (same result), not executed.
    brain.command(
        "c-1",
        Command::SetFanDuty {
            fan: "fan0".into(),
            duty: wrale_core::units::Percent::saturating(40.0),
        },
    );
    eventually("answered twice", || brain.results_for("c-1").len() == 2).await;
    assert_eq!(brain.results_for("c-1")[1], r1);

    // Re-sent after a reconnect: still not executed again.
    b.abort();
    let _b = link(&links, &brain);
    brain.command(
        "c-1",
        Command::SetFanDuty {
            fan: "fan0".into(),
            duty: wrale_core::units::Percent::saturating(40.0),
        },
    );
    eventually("answered after reconnect", || {
        brain.results_for("c-1").len() == 3
    })
    .await;
    assert_eq!(executed.lock().unwrap().as_slice(), ["c-1", "c-2"]);
    let st = h.status().borrow().clone();
    assert_eq!(
        (st.commands_received, st.commands_duplicate),
        (2, 2),
        "{st:?}"
    );
    agent.stop().await;

    // A restarted agent (no memory of replies) answers from the recorded ack.
    let d = load_twin(&store, "pi-rack1-07", dev()).unwrap().unwrap();
    let links = Links::default();
    let _b = link(&links, &brain);
    let agent = start(d, store.clone(), links.clone(), config());
    let executed = host(&agent.handle);
    brain.command("c-2", Command::Reboot);
    eventually("answered after restart", || {
        brain.results_for("c-2").len() == 2
    })
    .await;
    let again = brain.results_for("c-2").remove(1);
    assert_eq!(again.status, CommandStatus::Refused);
    assert_eq!(again.code.as_deref(), Some("maintenance_window"));
    assert!(executed.lock().unwrap().is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_without_a_handler_are_refused_and_bad_frames_rejected() {
    let (brain, d) = pair();
    let links = Links::default();
    let _b = link(&links, &brain);
    let agent = start(d, SharedStore::default(), links.clone(), config());
    let h = agent.handle.clone();
    eventually("first sync", || in_sync(&brain, &h)).await;

    brain.command("c-9", Command::Reboot);
    eventually("refused", || !brain.results_for("c-9").is_empty()).await;
    let r = brain.results_for("c-9").remove(0);
    assert_eq!(r.status, CommandStatus::Refused);
    assert_eq!(r.code.as_deref(), Some("commands_unsupported"));

    // Malformed command JSON, and a command for another device: rejected.
    brain.push(Envelope::new(FrameKind::Command, "pi-rack1-07", 0, b"{nope".to_vec()).encode());
    let other = FleetCommand {
        id: "c-x".into(),
        request: CommandRequest::new(Actor::Fleet, "", Command::Reboot),
    };
    brain.push(encode_command("pi-other", 0, &other));
    let mut status = h.status();
    eventually("two rejected", || {
        status.borrow_and_update().frames_rejected == 2
    })
    .await;
    assert!(brain.results_for("c-x").is_empty());
    // The link survives: a later command still gets an answer.
    brain.command("c-10", Command::Reboot);
    eventually("still answering", || !brain.results_for("c-10").is_empty()).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_given_while_offline_are_recorded_and_sent_on_reconnect() {
    let (brain, d) = pair();
    let links = Links::default();
    let b = link(&links, &brain);
    let agent = start(d, SharedStore::default(), links.clone(), config());
    let h = agent.handle.clone();
    let mut rx = h.commands().unwrap();
    eventually("first sync", || in_sync(&brain, &h)).await;
    brain.command("slow", Command::Reboot);
    let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    b.abort();
    let mut status = h.status();
    eventually("disconnected", || !status.borrow_and_update().connected).await;
    c.done(None);
    eventually("ack recorded offline", || {
        h.with_twin(|t| t.reported().unwrap().acks.get("slow").cloned()) == Some("done".into())
    })
    .await;
    let _b = link(&links, &brain);
    eventually("result delivered on reconnect", || {
        !brain.results_for("slow").is_empty()
    })
    .await;
    eventually("ack synced", || {
        brain.with(|t| t.reported().unwrap().acks.contains_key("slow"))
    })
    .await;
    agent.stop().await;
}

// ---------------------------------------------------------------- bearer token

/// A tokio-tungstenite server that accepts only `Authorization: Bearer s3cret`
/// and then serves the brain over the socket.
#[cfg(feature = "ws")]
#[allow(clippy::result_large_err)] // the callback type is tungstenite's
async fn token_server(brain: Brain) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/api/v1/devices/pi-rack1-07/sync",
        listener.local_addr().unwrap()
    );
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = seen2.clone();
            let brain = brain.clone();
            tokio::spawn(async move {
                let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let ok = auth.as_deref() == Some("Bearer s3cret");
                    seen.lock().unwrap().push(auth);
                    if ok {
                        Ok(resp)
                    } else {
                        let mut e = ErrorResponse::new(Some("bad token".into()));
                        *e.status_mut() =
                            tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
                        Err(e)
                    }
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await {
                    brain
                        .serve_on(wrale_sync::transport::WsTransport::from_stream(ws))
                        .await;
                }
            });
        }
    });
    (url, seen)
}

#[cfg(feature = "ws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_connector_sends_the_bearer_token() {
    use wrale_sync::WsConnector;
    let (brain, d) = pair();
    let (url, seen) = token_server(brain.clone()).await;

    // A wrong token: the handshake is refused with 401 and the agent says so.
    let bad = WsConnector::new(url.clone()).with_token("wrong");
    assert!(!format!("{bad:?}").contains("wrong"), "token redacted");
    let (agent, h) = Agent::new(
        Twin::empty(&device_id(), dev()).unwrap(),
        Box::new(SharedStore::default()),
        Box::new(bad),
        validator(),
        config(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(agent.run(cancel.clone()));
    let mut status = h.status();
    eventually("refused", || {
        let s = status.borrow_and_update();
        s.last_error.as_deref().is_some_and(|e| e.contains("401"))
    })
    .await;
    assert!(!h.status().borrow().connected);
    cancel.cancel();
    task.await.unwrap().unwrap();

    // The right token: connected and in sync.
    let good = WsConnector::new(url).with_token("s3cret");
    let (agent, h) = Agent::new(
        d,
        Box::new(SharedStore::default()),
        Box::new(good),
        validator(),
        config(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(agent.run(cancel.clone()));
    brain.edit(|t| {
        t.edit_desired(|c| c.warn = Some(Celsius(61.0)), &alice(), at(1))
            .unwrap()
    });
    eventually("in sync over the websocket", || in_sync(&brain, &h)).await;
    assert_eq!(
        h.with_twin(|t| t.desired().unwrap().warn),
        Some(Celsius(61.0))
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&Some("Bearer wrong".into())), "{seen:?}");
    assert_eq!(seen.last(), Some(&Some("Bearer s3cret".into())));
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// fleetd's shape: axum checks the bearer header, upgrades, wraps the socket in
/// `AxumWsTransport` and closes it with 1008 when told to.
#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_side_transport_syncs_and_closes_with_a_code() {
    use axum::extract::WebSocketUpgrade;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use wrale_sync::transport::{AxumWsTransport, WsTransport};

    let (brain, mut d) = pair();
    brain.edit(|t| {
        t.edit_desired(|c| c.warn = Some(Celsius(63.0)), &alice(), at(1))
            .unwrap()
    });
    let b2 = brain.clone();
    let app = axum::Router::new().route(
        "/api/v1/devices/{id}/sync",
        axum::routing::get(move |headers: HeaderMap, ws: WebSocketUpgrade| {
            let brain = b2.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Bearer wrd_ok")
                {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let r: Response = ws.on_upgrade(move |socket| async move {
                    let mut link = AxumWsTransport::new(socket);
                    // Sync a few rounds, then cut the device off with a policy code.
                    let mut s = brain.with(|t| SyncSession::new(t, "pi"));
                    for _ in 0..6 {
                        for f in brain.flush(&mut s) {
                            link.send(f).await.unwrap();
                        }
                        match tokio::time::timeout(Duration::from_millis(200), link.recv()).await {
                            Ok(Ok(Some(f))) => {
                                brain.with(|t| s.receive(t, &f, at(2)).unwrap());
                            }
                            Ok(_) => return,
                            Err(_) => {}
                        }
                    }
                    link.close_with(1008, "frame for another device")
                        .await
                        .unwrap();
                });
                r
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("ws://{addr}/api/v1/devices/pi-rack1-07/sync");

    let e = WsTransport::connect_with_token(&url, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let mut link = WsTransport::connect_with_token(&url, Some("wrd_ok"))
        .await
        .unwrap();
    let mut s = SyncSession::new(&d, "fleet");
    let end = loop {
        while let Some(f) = s.generate(&mut d) {
            link.send(f).await.unwrap();
        }
        match link.recv().await {
            Ok(Some(f)) => {
                s.receive(&mut d, &f, at(3)).unwrap();
            }
            other => break other,
        }
    };
    assert_eq!(d.desired().unwrap().warn, Some(Celsius(63.0)));
    let e = end.unwrap_err().to_string();
    assert!(e.contains("1008") && e.contains("another device"), "{e}");
}
