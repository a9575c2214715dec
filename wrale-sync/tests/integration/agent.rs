//! The edge agent against a test brain (a fleet-side twin and session) over the
//! in-memory transport.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wrale_core::units::Celsius;
use wrale_core::{BoardModel, BoardProfile};
use wrale_sync::agent::{ConnectFuture, decode_telemetry, encode_telemetry, encode_telemetry_ack};
use wrale_sync::store::load_twin;
use wrale_sync::telemetry::ring::RingBuffer;
use wrale_sync::transport::{Faults, MemoryTransport};
use wrale_sync::{
    Agent, AgentConfig, AgentHandle, AgentMode, Author, Backoff, BoardFloorValidator,
    ConfigVerdict, Envelope, FnConnector, FrameKind, MemoryStore, ReportedUpdate, Store,
    StoredTwin, SyncSession, Transport, Twin,
};

use crate::common::t as at;
use crate::common::*;

// ---------------------------------------------------------------- helpers

/// A store shared between the agent and the test.
#[derive(Clone, Default)]
struct SharedStore(Arc<Mutex<MemoryStore>>);

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
type Links = Arc<Mutex<VecDeque<MemoryTransport>>>;

fn connector(links: Links) -> Box<FnConnector<impl FnMut() -> ConnectFuture + Send>> {
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
    fn serve(&self, mut t: MemoryTransport) -> JoinHandle<()> {
        let b = self.clone();
        tokio::spawn(async move {
            let mut s = {
                let twin = b.twin.lock().unwrap();
                match b.saved.lock().unwrap().clone() {
                    Some(saved) => SyncSession::with_saved_state(&twin, "pi", &saved).unwrap(),
                    None => SyncSession::new(&twin, "pi"),
                }
            };
            loop {
                for f in b.flush(&mut s) {
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
                let mut twin = b.twin.lock().unwrap();
                s.receive(&mut twin, &frame, at(50))
                    .expect("valid sync frame");
            }
        })
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

fn config() -> AgentConfig {
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
    }
}

fn validator() -> Box<BoardFloorValidator> {
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

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
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
