//! The sans-I/O sync session between this twin and one peer.

use automerge::sync::{self, SyncDoc};

use wrale_core::Timestamp;

use crate::envelope::{Envelope, FrameKind, read_varint, write_varint};
use crate::epoch::Adoption;
use crate::error::{Error, Result};
use crate::twin::Twin;

/// What [`SyncSession::receive`] did with a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A sync message was applied; `changed` when it brought new changes.
    Applied {
        /// Whether the twin's heads moved.
        changed: bool,
    },
    /// A newer epoch's document was adopted (or a same-epoch one merged); archive
    /// `archived` and persist the twin anew.
    Adopted(Adoption),
    /// The frame was valid but not for us now (old epoch, duplicate snapshot);
    /// the session may answer it on the next [`SyncSession::generate`].
    Ignored(&'static str),
}

/// Traffic counters of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Frames generated.
    pub frames_sent: u64,
    /// Bytes of the frames generated.
    pub bytes_sent: u64,
    /// Frames received (valid or not).
    pub frames_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

/// The sync protocol with one peer, as pure functions over a twin: no I/O, no
/// clock, no tasks. [`generate`](SyncSession::generate) produces the next frame to
/// send (or `None`), [`receive`](SyncSession::receive) applies a frame. The peer's
/// automerge sync state is kept here; persist [`saved_state`](SyncSession::saved_state)
/// after each exchange so a reconnect sends only what is missing.
///
/// Driving rule: call `generate` until it returns `None` after every `receive`,
/// and call [`reset`](SyncSession::reset) on reconnect or when a peer went quiet
/// (a lost frame otherwise leaves both sides waiting for each other).
#[derive(Debug)]
pub struct SyncSession {
    peer: String,
    state: sync::State,
    epoch: u64,
    send_snapshot: bool,
    request_epoch: bool,
    stats: SessionStats,
}

impl SyncSession {
    /// A session with a peer we have never synced with.
    pub fn new(twin: &Twin, peer: impl Into<String>) -> Self {
        Self {
            peer: peer.into(),
            state: sync::State::new(),
            epoch: twin.epoch(),
            send_snapshot: false,
            request_epoch: false,
            stats: SessionStats::default(),
        }
    }

    /// A session resumed from [`SyncSession::saved_state`]. A state saved for
    /// another epoch is dropped (the session starts fresh).
    pub fn with_saved_state(twin: &Twin, peer: impl Into<String>, saved: &[u8]) -> Result<Self> {
        let mut s = Self::new(twin, peer);
        let mut pos = 0;
        let epoch = read_varint(saved, &mut pos).ok_or_else(|| Error::Decode {
            what: "sync state",
            reason: "bad epoch prefix".into(),
        })?;
        if epoch == twin.epoch() {
            s.state = sync::State::decode(&saved[pos..]).map_err(|e| Error::Decode {
                what: "sync state",
                reason: e.to_string(),
            })?;
        }
        Ok(s)
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The persistent part of the peer's sync state, prefixed with the epoch.
    pub fn saved_state(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, self.epoch);
        out.extend_from_slice(&self.state.encode());
        out
    }

    /// Traffic counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Forgets in-flight state (keeps what both sides are known to share). Call on
    /// reconnect or after a timeout.
    pub fn reset(&mut self) {
        let kept = self.state.encode();
        self.state = sync::State::decode(&kept).unwrap_or_default();
    }

    fn follow_epoch(&mut self, twin: &Twin) {
        if self.epoch != twin.epoch() {
            self.epoch = twin.epoch();
            self.state = sync::State::new();
            self.send_snapshot = false;
            self.request_epoch = false;
        }
    }

    /// Every frame to send now: pending epoch frames, then at most one sync
    /// message. One sync message per round trip is the protocol; asking automerge
    /// again before the peer answered can keep producing messages (a peer that
    /// needs changes we do not have), so the round stops after the first.
    pub fn generate_round(&mut self, twin: &mut Twin) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let epoch_frame = self.send_snapshot || self.request_epoch;
            match self.generate(twin) {
                Some(f) => out.push(f),
                None => break,
            }
            if !epoch_frame {
                break;
            }
        }
        out
    }

    /// The next frame to send, or `None` when the peer has everything we know of.
    pub fn generate(&mut self, twin: &mut Twin) -> Option<Vec<u8>> {
        self.follow_epoch(twin);
        let doc = twin.device().to_string();
        let env = if self.send_snapshot {
            self.send_snapshot = false;
            // The peer will start from this document; sync afresh afterwards.
            self.state = sync::State::new();
            Envelope::new(FrameKind::EpochSnapshot, doc, self.epoch, twin.save())
        } else if self.request_epoch {
            self.request_epoch = false;
            Envelope::new(FrameKind::EpochRequest, doc, self.epoch, Vec::new())
        } else {
            let msg = twin.doc.sync().generate_sync_message(&mut self.state)?;
            Envelope::new(FrameKind::Sync, doc, self.epoch, msg.encode())
        };
        let bytes = env.encode();
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        Some(bytes)
    }

    /// Applies a frame from the peer. Malformed frames are rejected with an error
    /// naming the problem and leave the twin untouched.
    pub fn receive(&mut self, twin: &mut Twin, frame: &[u8], now: Timestamp) -> Result<Received> {
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame.len() as u64;
        self.follow_epoch(twin);
        let env = Envelope::decode(frame)?;
        if env.doc != twin.device().as_str() {
            return Err(Error::WrongDevice {
                ours: twin.device().to_string(),
                theirs: env.doc,
            });
        }
        let ours = twin.epoch();
        match env.kind {
            FrameKind::Sync => {
                if env.epoch < ours {
                    self.send_snapshot = true;
                    return Ok(Received::Ignored("sync message of an older epoch"));
                }
                if env.epoch > ours {
                    self.request_epoch = true;
                    return Ok(Received::Ignored("sync message of a newer epoch"));
                }
                let msg = sync::Message::decode(&env.payload).map_err(|e| Error::Decode {
                    what: "sync message",
                    reason: e.to_string(),
                })?;
                let before = twin.heads();
                twin.doc
                    .sync()
                    .receive_sync_message(&mut self.state, msg)
                    .map_err(|e| Error::Decode {
                        what: "sync message changes",
                        reason: e.to_string(),
                    })?;
                let changed = twin.heads() != before;
                Ok(Received::Applied { changed })
            }
            FrameKind::EpochSnapshot => {
                if env.epoch < ours {
                    self.send_snapshot = true;
                    return Ok(Received::Ignored("snapshot of an older epoch"));
                }
                let adoption = twin.adopt_epoch(&env.payload, now)?;
                if adoption.new_epoch != self.epoch {
                    self.follow_epoch(twin);
                }
                Ok(Received::Adopted(adoption))
            }
            FrameKind::EpochRequest => {
                if env.epoch < ours {
                    self.send_snapshot = true;
                    Ok(Received::Ignored("peer asks for our epoch"))
                } else {
                    Ok(Received::Ignored(
                        "epoch request for an epoch we are not past",
                    ))
                }
            }
            FrameKind::Telemetry | FrameKind::TelemetryAck => Ok(Received::Ignored(
                "telemetry frame: not for the sync session",
            )),
            FrameKind::Command | FrameKind::CommandResult => {
                Ok(Received::Ignored("command frame: not for the sync session"))
            }
        }
    }
}
