//! Hardware events (GPIO edges, security inputs, power changes) and the hub that
//! fans them out to subscribers.
//!
//! Delivery never blocks the producer: each subscriber has a bounded queue, and
//! events that do not fit are dropped and counted ([`EventHub::dropped`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wrale_core::Timestamp;
use wrale_core::model::{Level, PowerSourceKind, SecurityKind};

/// One hardware event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HalEvent {
    /// A watched GPIO input changed level (after debouncing).
    Edge {
        /// When.
        at: Timestamp,
        /// BCM pin.
        pin: u8,
        /// The new level (high = rising edge).
        level: Level,
    },
    /// A physical-security input changed.
    Security {
        /// When.
        at: Timestamp,
        /// Input id.
        id: String,
        /// Kind of input.
        kind: SecurityKind,
        /// Whether it is now active.
        active: bool,
    },
    /// The active power source changed (failover or a command).
    PowerSource {
        /// When.
        at: Timestamp,
        /// Previous source.
        from: PowerSourceKind,
        /// New source.
        to: PowerSourceKind,
    },
    /// The supply crossed the under-voltage threshold.
    UnderVoltage {
        /// When.
        at: Timestamp,
        /// Whether under-voltage is now present.
        active: bool,
    },
}

impl HalEvent {
    /// When the event happened.
    pub fn at(&self) -> Timestamp {
        match self {
            HalEvent::Edge { at, .. }
            | HalEvent::Security { at, .. }
            | HalEvent::PowerSource { at, .. }
            | HalEvent::UnderVoltage { at, .. } => *at,
        }
    }
}

/// Fans hardware events out to any number of subscribers without ever blocking.
#[derive(Clone, Default)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    subscribers: Mutex<Vec<SyncSender<HalEvent>>>,
    dropped: AtomicU64,
    published: AtomicU64,
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field("published", &self.published())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl EventHub {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes with a queue of `capacity` events (at least 1).
    pub fn subscribe(&self, capacity: usize) -> Receiver<HalEvent> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        self.lock().push(tx);
        rx
    }

    /// Delivers an event to every live subscriber; a full queue drops the event
    /// for that subscriber (counted), a closed one is forgotten.
    pub fn publish(&self, event: HalEvent) {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let mut subs = self.lock();
        subs.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Events dropped because a subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Events published.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SyncSender<HalEvent>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ms: i64) -> HalEvent {
        HalEvent::UnderVoltage {
            at: Timestamp::from_millis(ms),
            active: true,
        }
    }

    #[test]
    fn full_subscriber_loses_events_counted_others_unaffected() {
        let hub = EventHub::new();
        let slow = hub.subscribe(1);
        let fast = hub.subscribe(10);
        for i in 0..3 {
            hub.publish(ev(i));
        }
        assert_eq!(hub.dropped(), 2);
        assert_eq!(slow.try_recv().unwrap().at(), Timestamp::from_millis(0));
        assert!(slow.try_recv().is_err());
        assert_eq!(fast.try_iter().count(), 3);
    }

    #[test]
    fn closed_subscriber_is_forgotten() {
        let hub = EventHub::new();
        drop(hub.subscribe(1));
        hub.publish(ev(1));
        hub.publish(ev(2));
        assert_eq!(hub.dropped(), 0);
        assert_eq!(hub.published(), 2);
    }
}
