//! Thermal: temperature sensors and fans.

use std::fmt;

use wrale_core::model::SensorKind;
use wrale_core::units::{Celsius, Percent, Rpm};

use crate::error::Result;

/// A named temperature sensor (SoC, GPU, ambient, any hwmon or I2C sensor).
pub trait ThermalSensor: Send + Sync + fmt::Debug {
    /// Stable id (`cpu`, `gpu`, `ambient`, `hwmon2/temp1`).
    fn id(&self) -> &str;
    /// What it measures.
    fn kind(&self) -> SensorKind;
    /// Reads the temperature. Garbage from the device is a
    /// [`HalError::SensorFault`](crate::HalError::SensorFault), never a made-up value.
    fn read(&self) -> Result<Celsius>;
}

/// A fan output (PWM duty or on/off), with an optional tachometer.
///
/// Backends drive the fan to its profile's safe duty when the fan is dropped.
pub trait Fan: Send + Sync + fmt::Debug {
    /// Stable id (`fan0`).
    fn id(&self) -> &str;
    /// Sets the duty. On/off fans run at 100 % for any duty above 0.
    fn set_duty(&self, duty: Percent) -> Result<()>;
    /// The duty last set.
    fn duty(&self) -> Result<Percent>;
    /// Whether the fan has a tachometer.
    fn has_tach(&self) -> bool;
    /// Tachometer reading; [`HalError::Unsupported`](crate::HalError::Unsupported)
    /// without a tachometer. A stalled fan reads 0 rpm.
    fn rpm(&self) -> Result<Rpm>;
}
