//! Transports move frames; they never look inside them.

use async_trait::async_trait;

use crate::error::Result;

pub mod memory;
pub use memory::{Faults, LossyNet, MemoryTransport};
#[cfg(feature = "ws")]
pub mod ws;

/// A bidirectional, message-oriented link to one peer.
#[async_trait]
pub trait Transport: Send {
    /// Sends one frame.
    async fn send(&mut self, frame: Vec<u8>) -> Result<()>;
    /// Receives the next frame; `Ok(None)` when the peer closed the link.
    async fn recv(&mut self) -> Result<Option<Vec<u8>>>;
}
#[cfg(feature = "ws")]
pub use ws::WsTransport;
