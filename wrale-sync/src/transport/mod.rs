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
    /// Closes the link with a WebSocket close `code` (1000 normal, 1008 policy
    /// violation) and a short `reason` the peer can log. Transports without close
    /// frames just stop (the default does nothing: dropping the link closes it).
    async fn close_with(&mut self, code: u16, reason: &str) -> Result<()> {
        let _ = (code, reason);
        Ok(())
    }
}
#[cfg(feature = "ws")]
pub use ws::WsTransport;
#[cfg(feature = "axum")]
pub mod axum_ws;
#[cfg(feature = "axum")]
pub use axum_ws::AxumWsTransport;
