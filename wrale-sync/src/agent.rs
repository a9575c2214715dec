//! The edge agent: keeps a device's twin in sync with the fleet over any
//! [`Transport`], validates every desired config it receives, ships telemetry
//! at least once, and reconnects with capped exponential backoff and full jitter.
//!
//! Ownership: the twin lives in an `Arc<std::sync::Mutex<Twin>>` shared by the
//! [`Agent`] (the task that runs [`Agent::run`]) and any number of
//! [`AgentHandle`]s held by the host (metald, the bindings). The lock is only
//! held for synchronous twin operations, never across an `await`. The host edits
//! through [`AgentHandle::edit`], which wakes the agent so the change is sent at
//! once (or merged after the next reconnect when the fleet is unreachable).
//!
//! The agent reports to the host through two `watch` channels: the latest
//! [`ConfigVerdict`] on the desired config, and [`AgentStatus`] (mode and
//! connection counters for `/metrics`).
//!
//! Telemetry frames ([`FrameKind::Telemetry`]) carry a sequence number and the
//! raw records of one batch from a [`TelemetrySource`]; the batch is
//! acknowledged with the sequence number ([`FrameKind::TelemetryAck`]) and only
//! then removed from the source. One batch is in flight at a time; a batch
//! unacknowledged when the link drops is sent again on the next connection.
//!
//! Fleet commands ([`FrameKind::Command`]) are handed to the host through
//! [`AgentHandle::commands`] as [`IncomingCommand`]s; the host validates and
//! executes each one and answers it. The agent records the answer in `reported`
//! (`ack.<id>`) and sends it back as a [`FrameKind::CommandResult`] frame (on the
//! next connection if the link dropped meanwhile). A command whose id was already
//! answered (re-sent after a reconnect) is answered again from that record and
//! never reaches the host twice; one still executing is not handed out again.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use wrale_core::Timestamp;
use wrale_core::model::CommandRequest;

use crate::command::{CommandReply, FleetCommand, decode_command, encode_command_result};
use crate::config::ConfigValidator;
use crate::envelope::{Envelope, FrameKind, read_varint};
use crate::error::{Error, Result};
use crate::reported::ReportedUpdate;
use crate::schema::{FieldValue, Section};
use crate::session::{Received, SyncSession};
use crate::store::{Store, persist};
use crate::telemetry::ring::{Cursor, RingBuffer};
use crate::transport::Transport;
use crate::twin::{ConfigVerdict, Twin};

/// Capped exponential backoff with full jitter: the delay before retry number
/// `attempt` (0-based) is uniform in `[0, min(max, initial * factor^attempt)]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Growth factor of the ceiling per failed attempt (at least 1).
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The ceiling of the delay before retry number `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = self.factor.max(1.0);
        let exp = factor.powi(attempt.min(64) as i32);
        let secs = self.initial.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// A jittered delay before retry number `attempt`, uniform in
    /// `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The peer's name: the key of its saved sync state in the store.
    pub peer: String,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Seed of the jitter RNG (`None`: seeded from the clock).
    pub seed: Option<u64>,
    /// Passed to [`persist`]: a fresh snapshot after this many appended chunks.
    pub snapshot_every: usize,
    /// Most telemetry records per frame.
    pub telemetry_batch: usize,
    /// How often the telemetry source is polled while connected.
    pub telemetry_interval: Duration,
    /// When nothing arrived from the peer for this long, the session is reset
    /// and offers its heads again (recovers from a lost frame; doubles as a
    /// heartbeat), and an unacknowledged telemetry batch is sent again.
    pub resync_after: Duration,
    /// Fleet commands queued for the host before new ones are refused (`busy`).
    pub command_queue: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            peer: "fleet".into(),
            backoff: Backoff::default(),
            seed: None,
            snapshot_every: 64,
            telemetry_batch: 256,
            telemetry_interval: Duration::from_secs(1),
            resync_after: Duration::from_secs(15),
            command_queue: 16,
        }
    }
}

/// The agent's mode. Safe mode (hardware) belongs to metald, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentMode {
    /// Connected, and the peer has answered on this connection.
    Normal,
    /// The fleet is unreachable (or not yet reached): the device keeps running on
    /// the last desired state, accepts local edits and merges them later.
    #[default]
    Degraded,
}

/// Connection state and counters, for the host's `/metrics`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentStatus {
    /// Current mode.
    pub mode: AgentMode,
    /// Whether a transport is open.
    pub connected: bool,
    /// When the last valid sync frame from the peer was applied.
    pub last_sync: Option<Timestamp>,
    /// Local changes the peer has not acknowledged yet.
    pub sync_lag: usize,
    /// Connections lost (or failed) and retried.
    pub reconnects: u64,
    /// The last backoff delay slept.
    pub last_backoff: Option<Duration>,
    /// Frames from the peer that were rejected (malformed, wrong device).
    pub frames_rejected: u64,
    /// Sync bytes sent over all connections.
    pub bytes_sent: u64,
    /// Sync bytes received over all connections.
    pub bytes_received: u64,
    /// Telemetry frames sent (including re-sends).
    pub telemetry_sent: u64,
    /// Telemetry records acknowledged by the peer (and removed from the source).
    pub telemetry_acked: u64,
    /// Fleet commands handed to the host (duplicates not counted).
    pub commands_received: u64,
    /// Fleet commands answered again from the recorded acknowledgement.
    pub commands_duplicate: u64,
    /// The last error (connect, transport, store), for logs.
    pub last_error: Option<String>,
}

/// Opens a transport to the fleet; called on every (re)connect.
#[async_trait]
pub trait Connector: Send {
    /// A fresh link, or an error when the fleet is unreachable.
    async fn connect(&mut self) -> Result<Box<dyn Transport>>;
}

/// The future a [`FnConnector`] closure returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Box<dyn Transport>>> + Send>>;

/// A [`Connector`] from a closure (tests hand out in-memory links this way).
pub struct FnConnector<F>(pub F);

impl<F> std::fmt::Debug for FnConnector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnConnector")
    }
}

#[async_trait]
impl<F> Connector for FnConnector<F>
where
    F: FnMut() -> ConnectFuture + Send,
{
    async fn connect(&mut self) -> Result<Box<dyn Transport>> {
        (self.0)().await
    }
}

/// Connects with [`crate::transport::WsTransport::connect_with_token`] to a
/// `ws://` URL (fleetd: `ws://host:port/api/v1/devices/<id>/sync`), sending
/// `Authorization: Bearer <token>` when a token (the device credential) is set.
#[cfg(feature = "ws")]
#[derive(Clone)]
pub struct WsConnector {
    /// The fleet's sync URL.
    pub url: String,
    /// The bearer token sent on the handshake (`wrd_...`).
    pub token: Option<String>,
}

#[cfg(feature = "ws")]
impl WsConnector {
    /// A connector without a token.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` on every handshake.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// The token is never printed.
#[cfg(feature = "ws")]
impl std::fmt::Debug for WsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConnector")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(feature = "ws")]
#[async_trait]
impl Connector for WsConnector {
    async fn connect(&mut self) -> Result<Box<dyn Transport>> {
        let t = crate::transport::WsTransport::connect_with_token(&self.url, self.token.as_deref())
            .await?;
        Ok(Box::new(t))
    }
}

/// A fleet command for the host to validate, execute and answer. Answer with
/// [`IncomingCommand::respond`] (or [`done`](IncomingCommand::done),
/// [`refused`](IncomingCommand::refused), [`failed`](IncomingCommand::failed));
/// dropping it unanswered answers `failed` with code `dropped`.
#[derive(Debug)]
pub struct IncomingCommand {
    /// The fleet's command id.
    pub id: String,
    /// What to do, who asked and why.
    pub request: CommandRequest,
    reply: oneshot::Sender<CommandReply>,
}

impl IncomingCommand {
    /// Answers the command (the reply's id is set to this command's id).
    pub fn respond(self, mut reply: CommandReply) {
        reply.id = self.id;
        // The agent stopped: nobody to tell.
        let _ = self.reply.send(reply);
    }

    /// Executed, with an optional result.
    pub fn done(self, result: Option<serde_json::Value>) {
        let id = self.id.clone();
        self.respond(CommandReply::done(id, result));
    }

    /// Refused (not executed), with a stable code and a message.
    pub fn refused(self, code: impl Into<String>, message: impl Into<String>) {
        let id = self.id.clone();
        self.respond(CommandReply::refused(id, code, message));
    }

    /// Failed while executing, with a stable code and a message.
    pub fn failed(self, code: impl Into<String>, message: impl Into<String>) {
        let id = self.id.clone();
        self.respond(CommandReply::failed(id, code, message));
    }
}

/// Commands handed to the host and not answered yet.
type Pending = Vec<(String, oneshot::Receiver<CommandReply>)>;

/// Waits for the next answered command (forever when none is pending).
fn next_reply(pending: &mut Pending) -> impl Future<Output = (String, Option<CommandReply>)> + '_ {
    std::future::poll_fn(move |cx| {
        for i in 0..pending.len() {
            if let Poll::Ready(r) = Pin::new(&mut pending[i].1).poll(cx) {
                let (id, _) = pending.swap_remove(i);
                return Poll::Ready((id, r.ok()));
            }
        }
        Poll::Pending
    })
}

/// How many answered commands are kept in memory to answer duplicates exactly
/// (older ones are answered from the `ack.<id>` record, without message/result).
const RECENT_REPLIES: usize = 64;

/// Where telemetry batches come from. Records are opaque (typically
/// [`crate::telemetry::encode_batch`] outputs); the cursor marks the end of a
/// batch and is passed back once the peer acknowledged it.
pub trait TelemetrySource: Send {
    /// Up to `max` records not yet acknowledged, oldest first, and the cursor
    /// just after them.
    fn peek(&mut self, max: usize) -> Result<(Vec<Vec<u8>>, Cursor)>;
    /// Removes everything before `cursor`.
    fn ack(&mut self, cursor: Cursor) -> Result<()>;
}

impl TelemetrySource for RingBuffer {
    fn peek(&mut self, max: usize) -> Result<(Vec<Vec<u8>>, Cursor)> {
        RingBuffer::peek(self, max)
    }
    fn ack(&mut self, cursor: Cursor) -> Result<()> {
        RingBuffer::ack(self, cursor)
    }
}

/// A ring shared with the host, which pushes while the agent ships.
impl TelemetrySource for Arc<Mutex<RingBuffer>> {
    fn peek(&mut self, max: usize) -> Result<(Vec<Vec<u8>>, Cursor)> {
        lock(self).peek(max)
    }
    fn ack(&mut self, cursor: Cursor) -> Result<()> {
        lock(self).ack(cursor)
    }
}

// The telemetry frame codec lives in `envelope` (the hub needs it without this
// module); re-exported here where agents have always found it.
pub use crate::envelope::{
    decode_telemetry, decode_telemetry_ack, encode_telemetry, encode_telemetry_ack,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// The host's side of a running agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    twin: Arc<Mutex<Twin>>,
    changed: Arc<Notify>,
    verdict: watch::Receiver<Option<ConfigVerdict>>,
    status: watch::Receiver<AgentStatus>,
    commands: Arc<Mutex<Option<mpsc::Receiver<IncomingCommand>>>>,
}

impl AgentHandle {
    /// Edits the twin (local operator or device writes) and wakes the agent so
    /// the change is synced (now, or after the next reconnect).
    pub fn edit<R>(&self, f: impl FnOnce(&mut Twin) -> R) -> R {
        let r = f(&mut lock(&self.twin));
        self.changed.notify_one();
        r
    }

    /// Reads the twin (`&mut` because some reads, like heads, need it; changes
    /// made here are not announced: use [`AgentHandle::edit`] for writes).
    pub fn with_twin<R>(&self, f: impl FnOnce(&mut Twin) -> R) -> R {
        f(&mut lock(&self.twin))
    }

    /// The verdict on the current desired config (`None` before the first one).
    pub fn verdicts(&self) -> watch::Receiver<Option<ConfigVerdict>> {
        self.verdict.clone()
    }

    /// Mode and connection counters.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// The fleet commands for this host to execute; `Some` only on the first call
    /// (one consumer). Until it is taken, the agent refuses commands with code
    /// `commands_unsupported`; when the queue is full, with `busy`. Each
    /// [`IncomingCommand`] must be answered.
    pub fn commands(&self) -> Option<mpsc::Receiver<IncomingCommand>> {
        lock(&self.commands).take()
    }
}

/// A telemetry batch sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    cursor: Cursor,
    records: usize,
    sent: tokio::time::Instant,
}

/// Why a connection ended.
enum Ended {
    Cancelled,
    Lost,
}

/// The edge agent. Build with [`Agent::new`], run with [`Agent::run`].
pub struct Agent {
    twin: Arc<Mutex<Twin>>,
    changed: Arc<Notify>,
    store: Box<dyn Store>,
    connector: Box<dyn Connector>,
    validator: Box<dyn ConfigValidator + Send>,
    telemetry: Option<Box<dyn TelemetrySource>>,
    config: AgentConfig,
    rng: SmallRng,
    verdict_tx: watch::Sender<Option<ConfigVerdict>>,
    status_tx: watch::Sender<AgentStatus>,
    last_desired: Option<std::collections::BTreeMap<String, FieldValue>>,
    telemetry_seq: u64,
    commands_tx: mpsc::Sender<IncomingCommand>,
    commands_rx: Arc<Mutex<Option<mpsc::Receiver<IncomingCommand>>>>,
    pending: Pending,
    recent: VecDeque<CommandReply>,
    replies_out: VecDeque<CommandReply>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent for `twin` (load it with [`crate::store::load_twin`] first),
    /// persisting to `store`, reaching the fleet through `connector` and
    /// validating desired configs with `validator`.
    pub fn new(
        twin: Twin,
        store: Box<dyn Store>,
        connector: Box<dyn Connector>,
        validator: Box<dyn ConfigValidator + Send>,
        config: AgentConfig,
    ) -> (Agent, AgentHandle) {
        let seed = config.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        });
        let twin = Arc::new(Mutex::new(twin));
        let changed = Arc::new(Notify::new());
        let (verdict_tx, verdict) = watch::channel(None);
        let (status_tx, status) = watch::channel(AgentStatus::default());
        let (commands_tx, rx) = mpsc::channel(config.command_queue.max(1));
        let commands_rx = Arc::new(Mutex::new(Some(rx)));
        let handle = AgentHandle {
            twin: twin.clone(),
            changed: changed.clone(),
            verdict,
            status,
            commands: commands_rx.clone(),
        };
        let agent = Agent {
            twin,
            changed,
            store,
            connector,
            validator,
            telemetry: None,
            config,
            rng: SmallRng::seed_from_u64(seed),
            verdict_tx,
            status_tx,
            last_desired: None,
            telemetry_seq: 0,
            commands_tx,
            commands_rx,
            pending: Vec::new(),
            recent: VecDeque::new(),
            replies_out: VecDeque::new(),
        };
        (agent, handle)
    }

    /// Ships telemetry from `source` while connected.
    pub fn with_telemetry(mut self, source: Box<dyn TelemetrySource>) -> Agent {
        self.telemetry = Some(source);
        self
    }

    fn status(&self, f: impl FnOnce(&mut AgentStatus)) {
        self.status_tx.send_modify(f);
    }

    /// Runs until `shutdown` completes (a signal, a test's oneshot...).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let token = CancellationToken::new();
        let run = self.run(token.clone());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            () = shutdown => {
                token.cancel();
                run.await
            }
        }
    }

    /// Runs until `cancel` fires: connects, syncs, reconnects with backoff. Returns
    /// `Ok` on cancellation after persisting; an error only when the store fails
    /// at startup.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<()> {
        // Run on the last desired state from the start (degraded until connected).
        self.after_change(now())?;
        let mut attempt: u32 = 0;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let connected = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                r = self.connector.connect() => r,
            };
            match connected {
                Ok(transport) => {
                    self.status(|s| s.connected = true);
                    let (ended, progressed) = self.serve(transport, &cancel).await;
                    self.status(|s| {
                        s.connected = false;
                        s.mode = AgentMode::Degraded;
                    });
                    if progressed {
                        attempt = 0;
                    }
                    // Edits made while the link was failing count as lag too.
                    if let Err(e) = self.offline_change() {
                        self.status(|s| s.last_error = Some(e.to_string()));
                    }
                    match ended {
                        Ok(Ended::Cancelled) => return Ok(()),
                        Ok(Ended::Lost) => {}
                        Err(e) => self.status(|s| s.last_error = Some(e.to_string())),
                    }
                }
                Err(e) => self.status(|s| {
                    s.mode = AgentMode::Degraded;
                    s.last_error = Some(e.to_string());
                }),
            }
            let delay = self.config.backoff.delay(attempt, &mut self.rng);
            attempt = attempt.saturating_add(1);
            self.status(|s| {
                s.reconnects += 1;
                s.last_backoff = Some(delay);
            });
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = &mut sleep => break,
                    () = self.changed.notified() => {
                        // Degraded: local edits are validated, kept and merged later.
                        if let Err(e) = self.offline_change() {
                            self.status(|s| s.last_error = Some(e.to_string()));
                        }
                    }
                    (id, reply) = next_reply(&mut self.pending) => {
                        // Recorded now, sent on the next connection.
                        if let Err(e) = self
                            .command_answered(id, reply)
                            .and_then(|()| self.offline_change())
                        {
                            self.status(|s| s.last_error = Some(e.to_string()));
                        }
                    }
                }
            }
        }
    }

    /// A local edit while disconnected: evaluate, persist, count the lag against
    /// the peer's saved sync state.
    fn offline_change(&mut self) -> Result<()> {
        self.after_change(now())?;
        let mut twin = lock(&self.twin);
        let doc = twin.device().to_string();
        let saved = self
            .store
            .sync_state(&doc, &self.config.peer)?
            .unwrap_or_default();
        let lag = Self::lag(&mut twin, &saved);
        self.status(|s| s.sync_lag = lag);
        Ok(())
    }

    /// Checks whether `desired` moved; if so evaluates it and publishes the verdict.
    /// Persists the twin either way.
    fn after_change(&mut self, at: Timestamp) -> Result<()> {
        let mut twin = lock(&self.twin);
        let desired = twin.fields(Section::Desired)?;
        if self.last_desired.as_ref() != Some(&desired) {
            let verdict = twin.evaluate_desired(self.validator.as_ref(), at)?;
            self.last_desired = Some(desired);
            self.verdict_tx.send_replace(Some(verdict));
        }
        persist(self.store.as_mut(), &mut twin, self.config.snapshot_every)
    }

    fn lag(twin: &mut Twin, saved: &[u8]) -> usize {
        let mut pos = 0;
        let shared = read_varint(saved, &mut pos)
            .and_then(|_| automerge::sync::State::decode(&saved[pos..]).ok())
            .map(|s| s.shared_heads)
            .unwrap_or_default();
        twin.doc.get_changes(&shared).len()
    }

    /// Persists the sync state and updates the counters.
    fn save_session(&mut self, session: &SyncSession) -> Result<()> {
        let saved = session.saved_state();
        let doc = {
            let mut twin = lock(&self.twin);
            let lag = Self::lag(&mut twin, &saved);
            self.status(|s| s.sync_lag = lag);
            twin.device().to_string()
        };
        self.store.put_sync_state(&doc, &self.config.peer, &saved)
    }

    /// Frames the session wants to send now.
    fn outgoing(&self, session: &mut SyncSession) -> Vec<Vec<u8>> {
        session.generate_round(&mut lock(&self.twin))
    }

    async fn flush(
        &mut self,
        session: &mut SyncSession,
        transport: &mut dyn Transport,
    ) -> Result<()> {
        for f in self.outgoing(session) {
            let n = f.len() as u64;
            transport.send(f).await?;
            self.status(|s| s.bytes_sent += n);
        }
        Ok(())
    }

    /// Sends the next telemetry batch when none is in flight.
    async fn ship_telemetry(
        &mut self,
        in_flight: &mut Option<InFlight>,
        transport: &mut dyn Transport,
    ) -> Result<()> {
        if in_flight.is_some() {
            return Ok(());
        }
        let Some(source) = self.telemetry.as_mut() else {
            return Ok(());
        };
        let (records, cursor) = source.peek(self.config.telemetry_batch.max(1))?;
        if records.is_empty() {
            return Ok(());
        }
        self.telemetry_seq += 1;
        let seq = self.telemetry_seq;
        let (doc, epoch) = {
            let twin = lock(&self.twin);
            (twin.device().to_string(), twin.epoch())
        };
        transport
            .send(encode_telemetry(&doc, epoch, seq, &records))
            .await?;
        *in_flight = Some(InFlight {
            seq,
            cursor,
            records: records.len(),
            sent: tokio::time::Instant::now(),
        });
        self.status(|s| s.telemetry_sent += 1);
        Ok(())
    }

    /// Handles one frame from the peer: `Ok(Some(changed))` for a sync frame,
    /// `Ok(None)` for a telemetry ack.
    fn receive(
        &mut self,
        session: &mut SyncSession,
        frame: &[u8],
        in_flight: &mut Option<InFlight>,
    ) -> Result<Option<bool>> {
        let at = now();
        self.status(|s| s.bytes_received += frame.len() as u64);
        if let Ok(env) = Envelope::decode(frame) {
            if env.kind == FrameKind::TelemetryAck {
                let ours = lock(&self.twin).device().to_string();
                if env.doc != ours {
                    return Err(Error::WrongDevice {
                        ours,
                        theirs: env.doc,
                    });
                }
                let seq = decode_telemetry_ack(&env.payload)?;
                if let Some(f) = *in_flight
                    && f.seq == seq
                {
                    if let Some(source) = self.telemetry.as_mut() {
                        source.ack(f.cursor)?;
                    }
                    *in_flight = None;
                    self.status(|s| s.telemetry_acked += f.records as u64);
                }
                return Ok(None);
            }
            if env.kind == FrameKind::Command {
                let ours = lock(&self.twin).device().to_string();
                if env.doc != ours {
                    return Err(Error::WrongDevice {
                        ours,
                        theirs: env.doc,
                    });
                }
                let command = decode_command(&env.payload)?;
                self.command_received(command)?;
                return Ok(None);
            }
        }
        let (received, epoch_switch) = {
            let mut twin = lock(&self.twin);
            let old_epoch = twin.epoch();
            let r = session.receive(&mut twin, frame, at)?;
            let switch = match &r {
                Received::Adopted(a) => a
                    .archived
                    .as_ref()
                    .map(|archived| (old_epoch, archived.clone(), a.new_epoch, twin.save())),
                _ => None,
            };
            (r, switch)
        };
        if let Some((old, archived, new, snapshot)) = epoch_switch {
            let doc = lock(&self.twin).device().to_string();
            self.store
                .switch_epoch(&doc, old, &archived, new, &snapshot)?;
        }
        let changed = match received {
            Received::Applied { changed } => {
                self.status(|s| {
                    s.last_sync = Some(at);
                    s.mode = AgentMode::Normal;
                });
                changed
            }
            Received::Adopted(_) => {
                self.status(|s| {
                    s.last_sync = Some(at);
                    s.mode = AgentMode::Normal;
                });
                true
            }
            Received::Ignored(_) => false,
        };
        Ok(Some(changed))
    }

    /// A command frame from the fleet: hand it to the host once, answer
    /// duplicates from what was recorded.
    fn command_received(&mut self, command: FleetCommand) -> Result<()> {
        let id = command.id.clone();
        if self.pending.iter().any(|(p, _)| *p == id) {
            // Still executing: the answer goes out when the host gives it.
            self.status(|s| s.commands_duplicate += 1);
            return Ok(());
        }
        if let Some(r) = self.recent.iter().find(|r| r.id == id) {
            let r = r.clone();
            self.status(|s| s.commands_duplicate += 1);
            self.replies_out.push_back(r);
            return Ok(());
        }
        let recorded = lock(&self.twin).reported()?.acks.get(&id).cloned();
        if let Some(ack) = recorded {
            let r = CommandReply::from_ack(id.clone(), &ack).unwrap_or_else(|| {
                CommandReply::failed(
                    id,
                    "unreadable_ack",
                    format!("already answered, but the recorded ack {ack:?} does not parse"),
                )
            });
            self.status(|s| s.commands_duplicate += 1);
            self.replies_out.push_back(r);
            return Ok(());
        }
        if lock(&self.commands_rx).is_some() {
            self.replies_out.push_back(CommandReply::refused(
                id,
                "commands_unsupported",
                "this device does not accept fleet commands",
            ));
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let incoming = IncomingCommand {
            id: id.clone(),
            request: command.request,
            reply: tx,
        };
        match self.commands_tx.try_send(incoming) {
            Ok(()) => {
                self.pending.push((id, rx));
                self.status(|s| s.commands_received += 1);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.replies_out.push_back(CommandReply::refused(
                    id,
                    "busy",
                    "too many commands waiting on this device; retry later",
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.replies_out.push_back(CommandReply::failed(
                    id,
                    "host_gone",
                    "the device's command handler stopped",
                ));
            }
        }
        Ok(())
    }

    /// The host answered (or dropped) a command: record the ack in `reported`
    /// and queue the result frame. Persisting is the caller's job.
    fn command_answered(&mut self, id: String, reply: Option<CommandReply>) -> Result<()> {
        let mut reply = reply.unwrap_or_else(|| {
            CommandReply::failed(
                id.clone(),
                "dropped",
                "the host dropped the command without answering",
            )
        });
        reply.id = id.clone();
        let update = ReportedUpdate {
            acks: [(id, reply.ack_value())].into(),
            ..ReportedUpdate::default()
        };
        lock(&self.twin).report(&update, now())?;
        if self.recent.len() >= RECENT_REPLIES {
            self.recent.pop_front();
        }
        self.recent.push_back(reply.clone());
        self.replies_out.push_back(reply);
        Ok(())
    }

    /// Sends the queued command results.
    async fn send_replies(&mut self, transport: &mut dyn Transport) -> Result<()> {
        while let Some(r) = self.replies_out.front() {
            let frame = {
                let twin = lock(&self.twin);
                encode_command_result(twin.device().as_str(), twin.epoch(), r)
            };
            transport.send(frame).await?;
            self.replies_out.pop_front();
        }
        Ok(())
    }

    /// Serves one connection; returns how it ended and whether any frame from
    /// the peer was accepted (which resets the backoff).
    async fn serve(
        &mut self,
        mut transport: Box<dyn Transport>,
        cancel: &CancellationToken,
    ) -> (Result<Ended>, bool) {
        let mut progressed = false;
        let r = self
            .serve_inner(transport.as_mut(), cancel, &mut progressed)
            .await;
        (r, progressed)
    }

    async fn serve_inner(
        &mut self,
        transport: &mut dyn Transport,
        cancel: &CancellationToken,
        progressed: &mut bool,
    ) -> Result<Ended> {
        let mut session = {
            let twin = lock(&self.twin);
            let doc = twin.device().to_string();
            match self.store.sync_state(&doc, &self.config.peer)? {
                // A state that does not decode is dropped: a fresh session is
                // always correct, only larger.
                Some(saved) => SyncSession::with_saved_state(&twin, &self.config.peer, &saved)
                    .unwrap_or_else(|_| SyncSession::new(&twin, &self.config.peer)),
                None => SyncSession::new(&twin, &self.config.peer),
            }
        };
        let mut in_flight: Option<InFlight> = None;
        let mut tick =
            tokio::time::interval(self.config.telemetry_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.flush(&mut session, transport).await?;
        self.send_replies(transport).await?;
        let mut last_rx = tokio::time::Instant::now();
        loop {
            enum Event {
                Frame(Option<Vec<u8>>),
                Local,
                Tick,
                Answered(String, Option<CommandReply>),
            }
            let ev = tokio::select! {
                () = cancel.cancelled() => {
                    self.save_session(&session)?;
                    return Ok(Ended::Cancelled);
                }
                r = transport.recv() => Event::Frame(r?),
                () = self.changed.notified() => Event::Local,
                _ = tick.tick() => Event::Tick,
                (id, reply) = next_reply(&mut self.pending) => Event::Answered(id, reply),
            };
            match ev {
                Event::Frame(None) => {
                    self.save_session(&session)?;
                    return Ok(Ended::Lost);
                }
                Event::Frame(Some(frame)) => {
                    match self.receive(&mut session, &frame, &mut in_flight) {
                        Ok(changed) => {
                            *progressed = true;
                            if changed.is_some() {
                                // Only sync traffic proves the session is alive.
                                last_rx = tokio::time::Instant::now();
                            }
                            if changed == Some(true) {
                                self.after_change(now())?;
                            }
                        }
                        Err(e) => {
                            // The twin is untouched; keep the link.
                            self.status(|s| {
                                s.frames_rejected += 1;
                                s.last_error = Some(e.to_string());
                            });
                        }
                    }
                    self.flush(&mut session, transport).await?;
                    self.save_session(&session)?;
                    self.send_replies(transport).await?;
                    self.ship_telemetry(&mut in_flight, transport).await?;
                }
                Event::Answered(id, reply) => {
                    self.command_answered(id, reply)?;
                    self.after_change(now())?;
                    self.flush(&mut session, transport).await?;
                    self.save_session(&session)?;
                    self.send_replies(transport).await?;
                }
                Event::Local => {
                    self.after_change(now())?;
                    self.flush(&mut session, transport).await?;
                    self.save_session(&session)?;
                }
                Event::Tick => {
                    let quiet = self.config.resync_after;
                    if in_flight.is_some_and(|f| f.sent.elapsed() >= quiet) {
                        // Never acknowledged: send the records again (new number).
                        in_flight = None;
                    }
                    if last_rx.elapsed() >= quiet {
                        session.reset();
                        self.flush(&mut session, transport).await?;
                        last_rx = tokio::time::Instant::now();
                    }
                    self.ship_telemetry(&mut in_flight, transport).await?;
                }
            }
        }
    }
}
