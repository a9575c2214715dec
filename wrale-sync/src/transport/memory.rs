//! An in-memory network with injectable faults, for tests and simulations.
//!
//! [`LossyNet`] is a deterministic (seeded) network between numbered nodes: every
//! frame may be lost, duplicated, delayed (which reorders it against later frames)
//! or replayed later from the link's history. Tests drive it synchronously;
//! [`MemoryTransport`] wraps one link as an async [`Transport`].

use async_trait::async_trait;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use super::Transport;
use crate::error::{Error, Result};

/// Fault probabilities (0.0 to 1.0) and the largest delay in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Probability that a frame is dropped.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that an old frame of the same link is delivered again.
    pub replay: f64,
    /// Each frame is delayed by 0..=`max_delay` ticks (reordering them).
    pub max_delay: u64,
}

impl Faults {
    /// No faults: in order, exactly once.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        replay: 0.0,
        max_delay: 0,
    };
}

/// SplitMix64: small, seeded, good enough for fault injection.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[derive(Debug, Clone)]
struct InFlight {
    at: u64,
    seq: u64,
    from: usize,
    to: usize,
    frame: Vec<u8>,
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetStats {
    /// Frames handed to the network.
    pub sent: u64,
    /// Frames delivered (including duplicates and replays).
    pub delivered: u64,
    /// Frames dropped.
    pub lost: u64,
    /// Extra copies injected.
    pub duplicated: u64,
    /// Old frames replayed.
    pub replayed: u64,
    /// Bytes delivered.
    pub bytes: u64,
}

/// A seeded, lossy network between `n` nodes.
#[derive(Debug)]
pub struct LossyNet {
    rng: Rng,
    faults: Faults,
    now: u64,
    seq: u64,
    flight: Vec<InFlight>,
    history: Vec<(usize, usize, Vec<u8>)>,
    stats: NetStats,
}

impl LossyNet {
    /// A network with the given faults, seeded.
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            faults,
            now: 0,
            seq: 0,
            flight: Vec::new(),
            history: Vec::new(),
            stats: NetStats::default(),
        }
    }

    /// Changes the faults (e.g. [`Faults::NONE`] to let the network heal).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    fn push(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        let delay = self.rng.below(self.faults.max_delay + 1);
        self.seq += 1;
        self.flight.push(InFlight {
            at: self.now + delay,
            seq: self.seq,
            from,
            to,
            frame,
        });
    }

    /// Sends a frame from node `from` to node `to`.
    pub fn send(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        self.stats.sent += 1;
        if self.history.len() < 4096 {
            self.history.push((from, to, frame.clone()));
        }
        if self.rng.chance(self.faults.replay) {
            let same: Vec<usize> = (0..self.history.len())
                .filter(|i| self.history[*i].0 == from && self.history[*i].1 == to)
                .collect();
            if !same.is_empty() {
                let i = same[self.rng.below(same.len() as u64) as usize];
                let old = self.history[i].2.clone();
                self.stats.replayed += 1;
                self.push(from, to, old);
            }
        }
        if self.rng.chance(self.faults.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            self.push(from, to, frame.clone());
        }
        self.push(from, to, frame);
    }

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
    }

    /// Whether frames are still in flight.
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }

    /// Takes every frame due for node `to`, as `(from, frame)`, in delivery order.
    pub fn deliver(&mut self, to: usize) -> Vec<(usize, Vec<u8>)> {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut keep = Vec::with_capacity(self.flight.len());
        for f in self.flight.drain(..) {
            if f.to == to && f.at <= now {
                due.push(f);
            } else {
                keep.push(f);
            }
        }
        self.flight = keep;
        due.sort_by_key(|f| (f.at, f.seq));
        self.stats.delivered += due.len() as u64;
        self.stats.bytes += due.iter().map(|f| f.frame.len() as u64).sum::<u64>();
        due.into_iter().map(|f| (f.from, f.frame)).collect()
    }

    /// Takes the next frame for `to`, advancing time to it when none is due yet.
    fn next_for(&mut self, to: usize) -> Option<Vec<u8>> {
        let earliest = self
            .flight
            .iter()
            .filter(|f| f.to == to)
            .map(|f| f.at)
            .min()?;
        self.now = self.now.max(earliest);
        let idx = self
            .flight
            .iter()
            .enumerate()
            .filter(|(_, f)| f.to == to && f.at <= self.now)
            .min_by_key(|(_, f)| (f.at, f.seq))
            .map(|(i, _)| i)?;
        let f = self.flight.remove(idx);
        self.stats.delivered += 1;
        self.stats.bytes += f.frame.len() as u64;
        Some(f.frame)
    }
}

#[derive(Debug)]
struct Shared {
    net: LossyNet,
    open: [bool; 2],
}

/// One end of an in-memory link (node 0 or 1 of a two-node [`LossyNet`]).
#[derive(Debug)]
pub struct MemoryTransport {
    shared: Arc<Mutex<Shared>>,
    me: usize,
}

impl MemoryTransport {
    /// Two connected ends with the given faults.
    pub fn pair(faults: Faults, seed: u64) -> (MemoryTransport, MemoryTransport) {
        let shared = Arc::new(Mutex::new(Shared {
            net: LossyNet::new(faults, seed),
            open: [true, true],
        }));
        (
            MemoryTransport {
                shared: shared.clone(),
                me: 0,
            },
            MemoryTransport { shared, me: 1 },
        )
    }

    /// Network counters of the link.
    pub fn stats(&self) -> NetStats {
        self.shared
            .lock()
            .map(|s| s.net.stats())
            .unwrap_or_default()
    }

    /// Takes the next frame without waiting (`None` when nothing is in flight).
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        self.shared.lock().ok()?.net.next_for(self.me)
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.lock() {
            s.open[self.me] = false;
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        let mut s = self
            .shared
            .lock()
            .map_err(|_| Error::Transport("link poisoned".into()))?;
        if !s.open[1 - self.me] {
            return Err(Error::Transport("peer closed the link".into()));
        }
        s.net.send(self.me, 1 - self.me, frame);
        Ok(())
    }

    async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        let me = self.me;
        let shared = self.shared.clone();
        poll_fn(move |cx| {
            let Ok(mut s) = shared.lock() else {
                return Poll::Ready(Err(Error::Transport("link poisoned".into())));
            };
            if let Some(f) = s.net.next_for(me) {
                return Poll::Ready(Ok(Some(f)));
            }
            if !s.open[1 - me] {
                return Poll::Ready(Ok(None));
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_happen_and_are_seeded() {
        let faults = Faults {
            loss: 0.2,
            duplicate: 0.2,
            replay: 0.1,
            max_delay: 3,
        };
        let run = |seed| {
            let mut net = LossyNet::new(faults, seed);
            let mut got = Vec::new();
            for i in 0..200u8 {
                net.send(0, 1, vec![i]);
                net.tick();
                got.extend(net.deliver(1).into_iter().map(|(_, f)| f[0]));
            }
            for _ in 0..5 {
                net.tick();
                got.extend(net.deliver(1).into_iter().map(|(_, f)| f[0]));
            }
            (got, net.stats())
        };
        let (a, sa) = run(7);
        let (b, _) = run(7);
        assert_eq!(a, b, "same seed, same run");
        assert!(
            sa.lost > 10 && sa.duplicated > 10 && sa.replayed > 5,
            "{sa:?}"
        );
        assert!(a.windows(2).any(|w| w[0] > w[1]), "reordered");
        let mut clean = LossyNet::new(Faults::NONE, 1);
        for i in 0..10u8 {
            clean.send(0, 1, vec![i]);
        }
        let got: Vec<u8> = clean.deliver(1).into_iter().map(|(_, f)| f[0]).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn memory_transport_moves_frames_and_reports_close() {
        let (mut a, mut b) = MemoryTransport::pair(Faults::NONE, 1);
        a.send(b"hi".to_vec()).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Some(b"hi".to_vec()));
        drop(a);
        assert_eq!(b.recv().await.unwrap(), None);
        assert!(b.send(vec![1]).await.is_err());
    }
}
