//! Boards whose sensors and fans are the host program's: callback interfaces
//! implemented in Kotlin or Swift, wrapped as `wrale_hal` thermal sensors and
//! fans, so an `Agent` or the safety engine runs on the program's own hardware.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use wrale_core::board::BoardProfile;
use wrale_core::model::SensorKind;
use wrale_core::units::{Celsius, Percent, Rpm};
use wrale_hal::HalError;
use wrale_hal::thermal::{Fan, ThermalSensor};

use crate::WraleError;
use crate::board::{Board, parse_model};

/// A temperature sensor implemented by the host program.
#[uniffi::export(callback_interface)]
pub trait HostTemperature: Send + Sync {
    /// Reads the temperature, °C. Throwing makes the reading a sensor fault.
    fn read_celsius(&self) -> Result<f64, WraleError>;
}

/// A fan implemented by the host program.
#[uniffi::export(callback_interface)]
pub trait HostFan: Send + Sync {
    /// Sets the duty, %. Throwing makes the command a bus error.
    fn set_duty(&self, duty_pct: f64) -> Result<(), WraleError>;
}

struct Thermal {
    id: String,
    kind: SensorKind,
    source: Box<dyn HostTemperature>,
}

impl fmt::Debug for Thermal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostTemperature")
            .field("id", &self.id)
            .finish()
    }
}

impl ThermalSensor for Thermal {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> SensorKind {
        self.kind
    }
    fn read(&self) -> wrale_hal::Result<Celsius> {
        self.source
            .read_celsius()
            .map(Celsius)
            .map_err(|e| HalError::sensor_fault(&self.id, format!("host callback: {e}")))
    }
}

struct FanOut {
    id: String,
    sink: Box<dyn HostFan>,
    duty: Mutex<Percent>,
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFan").field("id", &self.id).finish()
    }
}

impl Fan for FanOut {
    fn id(&self) -> &str {
        &self.id
    }
    fn set_duty(&self, duty: Percent) -> wrale_hal::Result<()> {
        self.sink.set_duty(duty.get()).map_err(|e| HalError::Bus {
            bus: format!("host fan {}", self.id),
            detail: e.to_string(),
        })?;
        *self.duty.lock().unwrap_or_else(PoisonError::into_inner) = duty;
        Ok(())
    }
    fn duty(&self) -> wrale_hal::Result<Percent> {
        Ok(*self.duty.lock().unwrap_or_else(PoisonError::into_inner))
    }
    fn has_tach(&self) -> bool {
        false
    }
    fn rpm(&self) -> wrale_hal::Result<Rpm> {
        Err(HalError::unsupported(format!(
            "fan {} has no tachometer",
            self.id
        )))
    }
}

/// Builds a board (backend `host`) from the host program's sensors and fans.
#[derive(Debug, uniffi::Object)]
pub struct HostBoardBuilder {
    inner: Mutex<Option<wrale_hal::BoardBuilder>>,
}

impl HostBoardBuilder {
    fn with(
        &self,
        f: impl FnOnce(wrale_hal::BoardBuilder) -> wrale_hal::BoardBuilder,
    ) -> Result<(), WraleError> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let b = guard
            .take()
            .ok_or_else(|| WraleError::invalid_argument("the host board was already built"))?;
        *guard = Some(f(b));
        Ok(())
    }
}

#[uniffi::export]
impl HostBoardBuilder {
    /// A builder for a board of `model` (`pi4b`, `pi5`, ...).
    #[uniffi::constructor]
    pub fn new(model: String) -> Result<Arc<HostBoardBuilder>, WraleError> {
        let profile = BoardProfile::builtin(parse_model(&model)?);
        Ok(Arc::new(HostBoardBuilder {
            inner: Mutex::new(Some(wrale_hal::Board::builder(profile, "host"))),
        }))
    }

    /// Adds a temperature sensor (`cpu` of kind `CPU` drives the safety engine).
    pub fn temperature(
        &self,
        id: String,
        kind: SensorKind,
        source: Box<dyn HostTemperature>,
    ) -> Result<(), WraleError> {
        self.with(|b| b.thermal(Arc::new(Thermal { id, kind, source })))
    }

    /// Adds a fan (at 0 % until the first command).
    pub fn fan(&self, id: String, sink: Box<dyn HostFan>) -> Result<(), WraleError> {
        self.with(|b| {
            b.fan(Arc::new(FanOut {
                id,
                sink,
                duty: Mutex::new(Percent::ZERO),
            }))
        })
    }

    /// The board (once).
    pub fn build(&self) -> Result<Arc<Board>, WraleError> {
        let b = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| WraleError::invalid_argument("the host board was already built"))?;
        Ok(Board::from_host(b.build()))
    }
}
