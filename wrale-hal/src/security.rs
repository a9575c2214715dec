//! Physical security inputs: case switch, motion (PIR), tamper loop, voltage monitor.

use std::fmt;

use wrale_core::model::SecurityKind;

use crate::error::Result;

/// A physical-security input. Changes are also delivered as
/// [`HalEvent::Security`](crate::HalEvent::Security) on the board's event hub.
pub trait SecurityInput: Send + Sync + fmt::Debug {
    /// Stable id (`case`, `pir0`).
    fn id(&self) -> &str;
    /// Kind of input.
    fn kind(&self) -> SecurityKind;
    /// `true` when active (case open, motion, tamper, rail out of range).
    fn active(&self) -> Result<bool>;
}
