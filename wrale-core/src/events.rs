//! The in-process typed event bus.
//!
//! A [`tokio::sync::broadcast`] channel of [`Event`]s with a bounded buffer.
//! Publishing never blocks and never fails, so the safety path can publish freely;
//! a subscriber that falls behind loses its oldest events and is told how many with
//! a [`Received::Lagged`] notice (also counted in [`Subscription::lagged_total`]).

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::RuleId;
use crate::model::{Alert, Command, CommandRequest};
use crate::policy::{Action, ThermalLevel};
use crate::time::Timestamp;
use crate::units::Celsius;

/// Something that happened on a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A sample was taken and evaluated.
    SampleTaken {
        /// When.
        at: Timestamp,
        /// CPU temperature if trusted.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            rename = "cpu_temp_c"
        )]
        cpu_temp: Option<Celsius>,
    },
    /// An action of the safety engine was applied through the HAL.
    ActionApplied {
        /// When.
        at: Timestamp,
        /// The action.
        action: Action,
        /// `None` on success, the error message otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A command passed the safety check.
    CommandAccepted {
        /// When.
        at: Timestamp,
        /// The request.
        request: CommandRequest,
    },
    /// A command was refused.
    CommandRefused {
        /// When.
        at: Timestamp,
        /// The request.
        request: CommandRequest,
        /// The rule that refused.
        rule: RuleId,
        /// Why.
        reason: String,
    },
    /// An alert was raised.
    AlertRaised(Alert),
    /// An alert was cleared.
    AlertCleared(Alert),
    /// The thermal state changed.
    StateTransition {
        /// When.
        at: Timestamp,
        /// Previous state.
        from: ThermalLevel,
        /// New state.
        to: ThermalLevel,
    },
}

impl Event {
    /// The command, for command events.
    pub fn command(&self) -> Option<&Command> {
        match self {
            Event::CommandAccepted { request, .. } | Event::CommandRefused { request, .. } => {
                Some(&request.command)
            }
            _ => None,
        }
    }
}

/// A bounded, non-blocking broadcast bus of [`Event`]s. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    /// A bus whose subscribers each buffer at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Publishes an event to every current subscriber; returns how many there were.
    /// Never blocks: with no subscriber the event is dropped.
    pub fn publish(&self, event: Event) -> usize {
        self.tx.send(event).unwrap_or(0)
    }

    /// A new subscriber, receiving events published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            lagged_total: 0,
        }
    }

    /// Number of current subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Default for EventBus {
    /// A bus with a 1024-event buffer.
    fn default() -> Self {
        Self::new(1024)
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Event),
    /// The subscriber fell behind and this many older events were lost.
    Lagged(u64),
}

/// One subscriber of an [`EventBus`].
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    lagged_total: u64,
}

impl Subscription {
    /// Waits for the next event or lag notice; `None` when the bus is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.lagged_total += n;
                Some(Received::Lagged(n))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event or lag notice if one is ready; `None` if none is (or the bus is gone).
    pub fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                self.lagged_total += n;
                Some(Received::Lagged(n))
            }
            Err(_) => None,
        }
    }

    /// Total events this subscriber has lost by lagging.
    pub fn lagged_total(&self) -> u64 {
        self.lagged_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: i64) -> Event {
        Event::SampleTaken {
            at: Timestamp::from_secs(i),
            cpu_temp: None,
        }
    }

    #[test]
    fn slow_subscriber_lags_without_blocking_the_publisher() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe();
        for i in 0..10 {
            assert_eq!(bus.publish(sample(i)), 1);
        }
        assert_eq!(slow.try_recv(), Some(Received::Lagged(6)));
        assert_eq!(slow.lagged_total(), 6);
        for i in 6..10 {
            assert_eq!(slow.try_recv(), Some(Received::Event(sample(i))));
        }
        assert_eq!(slow.try_recv(), None);
    }

    #[test]
    fn publishing_without_subscribers_is_fine() {
        let bus = EventBus::default();
        assert_eq!(bus.publish(sample(0)), 0);
        assert_eq!(bus.subscriber_count(), 0);
    }

    #[test]
    fn async_recv_delivers_in_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let bus = EventBus::new(8);
            let mut sub = bus.subscribe();
            bus.publish(sample(1));
            bus.publish(sample(2));
            assert_eq!(sub.recv().await, Some(Received::Event(sample(1))));
            assert_eq!(sub.recv().await, Some(Received::Event(sample(2))));
            drop(bus);
            assert_eq!(sub.recv().await, None);
        });
    }
}
