//! Power: supply monitoring, throttle flags, power sources and batteries.

use std::fmt;

use wrale_core::model::{BatteryStatus, PowerSourceKind, PowerSourceStatus, ThrottleFlags};
use wrale_core::units::{Amps, Volts, Watts};

use crate::error::Result;

/// Supply voltage, current and power where a monitor exists, and the firmware's
/// under-voltage / throttle state.
pub trait PowerMonitor: Send + Sync + fmt::Debug {
    /// Supply voltage at the board.
    fn voltage(&self) -> Result<Volts>;
    /// Supply current.
    fn current(&self) -> Result<Amps>;
    /// Power drawn.
    fn power(&self) -> Result<Watts>;
    /// Under-voltage and throttle flags as the Pi reports them.
    fn throttle(&self) -> Result<ThrottleFlags>;
}

/// Power sources (main, battery, solar): which is available, which is active, and
/// switching between them.
pub trait PowerSupply: Send + Sync + fmt::Debug {
    /// Every source with its state.
    fn sources(&self) -> Result<Vec<PowerSourceStatus>>;
    /// Switches to `source`. Fails if it is not available.
    fn select(&self, source: PowerSourceKind) -> Result<()>;
}

/// A battery (UPS HAT or fuel gauge).
pub trait Battery: Send + Sync + fmt::Debug {
    /// Level, voltage and charging state.
    fn status(&self) -> Result<BatteryStatus>;
    /// Enables or disables charging.
    fn set_charging(&self, enabled: bool) -> Result<()>;
}
