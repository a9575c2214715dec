//! A [`Board`]: every subsystem of one device, described by a board profile.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wrale_core::Timestamp;
use wrale_core::board::BoardProfile;
use wrale_core::model::{
    FanReading, PowerSourceKind, Reading, Sample, SecurityReading, TemperatureReading,
};

use crate::error::{HalError, Result};
use crate::events::EventHub;
use crate::gpio::Gpio;
use crate::platform::{BootInfo, I2cBus, LoadGenerator, Platform};
use crate::power::{Battery, PowerMonitor, PowerSupply};
use crate::security::SecurityInput;
use crate::thermal::{Fan, ThermalSensor};

/// Where a board gets "now" from: the wall clock, or the simulator's virtual time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Lets `d` pass: sleeps on real hardware; on the simulator's virtual clock,
    /// advances the physical model by `d` (so diagnostics that wait for a fan to
    /// spin up run instantly and deterministically).
    fn sleep(&self, d: Duration);
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Every subsystem of one device. Cheap to clone (all parts are shared).
///
/// Build one with [`Board::builder`] (backends do), or open one from a
/// [`BackendConfig`](crate::BackendConfig) with [`open`](crate::open).
#[derive(Clone)]
pub struct Board {
    profile: Arc<BoardProfile>,
    backend: &'static str,
    clock: Arc<dyn Clock>,
    gpio: Option<Arc<dyn Gpio>>,
    thermal: Vec<Arc<dyn ThermalSensor>>,
    fans: Vec<Arc<dyn Fan>>,
    power: Option<Arc<dyn PowerMonitor>>,
    supply: Option<Arc<dyn PowerSupply>>,
    battery: Option<Arc<dyn Battery>>,
    security: Vec<Arc<dyn SecurityInput>>,
    platform: Option<Arc<dyn Platform>>,
    i2c: Vec<Arc<dyn I2cBus>>,
    load: Option<Arc<dyn LoadGenerator>>,
    events: EventHub,
}

impl fmt::Debug for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Board")
            .field("model", &self.profile.model)
            .field("backend", &self.backend)
            .field(
                "thermal",
                &self.thermal.iter().map(|t| t.id()).collect::<Vec<_>>(),
            )
            .field(
                "fans",
                &self.fans.iter().map(|t| t.id()).collect::<Vec<_>>(),
            )
            .field("power", &self.power.is_some())
            .field("supply", &self.supply.is_some())
            .field("battery", &self.battery.is_some())
            .field(
                "security",
                &self.security.iter().map(|t| t.id()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Board {
    /// Starts building a board for `profile`, from backend `backend` (`"sim"`, `"linux"`, `"rpi"`).
    pub fn builder(profile: BoardProfile, backend: &'static str) -> BoardBuilder {
        BoardBuilder {
            board: Board {
                profile: Arc::new(profile),
                backend,
                clock: Arc::new(SystemClock),
                gpio: None,
                thermal: Vec::new(),
                fans: Vec::new(),
                power: None,
                supply: None,
                battery: None,
                security: Vec::new(),
                platform: None,
                i2c: Vec::new(),
                load: None,
                events: EventHub::new(),
            },
        }
    }

    /// The board profile.
    pub fn profile(&self) -> &BoardProfile {
        &self.profile
    }

    /// Name of the backend (`"sim"`, `"linux"`, `"rpi"`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The board's notion of now (virtual time on `sim`).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The GPIO controller, if the board has one.
    pub fn gpio(&self) -> Result<&Arc<dyn Gpio>> {
        self.gpio
            .as_ref()
            .ok_or_else(|| HalError::unsupported("this board has no GPIO controller"))
    }

    /// Temperature sensors.
    pub fn thermal(&self) -> &[Arc<dyn ThermalSensor>] {
        &self.thermal
    }

    /// A temperature sensor by id.
    pub fn thermal_sensor(&self, id: &str) -> Result<&Arc<dyn ThermalSensor>> {
        self.thermal
            .iter()
            .find(|s| s.id() == id)
            .ok_or_else(|| HalError::not_found(format!("temperature sensor {id:?}")))
    }

    /// Fans.
    pub fn fans(&self) -> &[Arc<dyn Fan>] {
        &self.fans
    }

    /// A fan by id.
    pub fn fan(&self, id: &str) -> Result<&Arc<dyn Fan>> {
        self.fans
            .iter()
            .find(|s| s.id() == id)
            .ok_or_else(|| HalError::not_found(format!("fan {id:?}")))
    }

    /// The power monitor, if any.
    pub fn power(&self) -> Option<&Arc<dyn PowerMonitor>> {
        self.power.as_ref()
    }

    /// The power-source switch, if any.
    pub fn supply(&self) -> Option<&Arc<dyn PowerSupply>> {
        self.supply.as_ref()
    }

    /// The battery, if any.
    pub fn battery(&self) -> Option<&Arc<dyn Battery>> {
        self.battery.as_ref()
    }

    /// Physical-security inputs.
    pub fn security(&self) -> &[Arc<dyn SecurityInput>] {
        &self.security
    }

    /// CPU and storage figures, if available.
    pub fn platform(&self) -> Option<&Arc<dyn Platform>> {
        self.platform.as_ref()
    }

    /// The running boot's id and time (a new id after every reboot);
    /// `Unsupported` when the board has no platform figures or its backend no boot id.
    pub fn boot(&self) -> Result<BootInfo> {
        self.platform
            .as_ref()
            .ok_or_else(|| HalError::unsupported("this board has no platform figures"))?
            .boot()
    }

    /// I2C buses (for diagnostics).
    pub fn i2c_buses(&self) -> &[Arc<dyn I2cBus>] {
        &self.i2c
    }

    /// The CPU load generator used by diagnostics (supply check under load), if any.
    pub fn load_generator(&self) -> Option<&Arc<dyn LoadGenerator>> {
        self.load.as_ref()
    }

    /// Lets `d` pass on the board's clock (virtual time on `sim`).
    pub fn sleep(&self, d: Duration) {
        self.clock.sleep(d);
    }

    /// The hardware event hub (GPIO edges, security inputs, power changes).
    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// Reads every sensor once into a [`Sample`] stamped with [`Board::now`].
    ///
    /// A sensor that fails becomes [`Reading::Fault`] with the error's kind (or
    /// [`Reading::Missing`] for not-found / unsupported); sampling itself never fails.
    pub fn sample(&self) -> Sample {
        let kind = |e: &HalError| e.kind();
        let mut s = Sample {
            at: self.now(),
            ..Sample::default()
        };
        s.temperatures = self
            .thermal
            .iter()
            .map(|t| TemperatureReading {
                id: t.id().to_owned(),
                kind: t.kind(),
                value: Reading::from_result(t.read(), kind),
            })
            .collect();
        s.fans = self
            .fans
            .iter()
            .map(|f| FanReading {
                id: f.id().to_owned(),
                duty: Reading::from_result(f.duty(), kind),
                rpm: if f.has_tach() {
                    Reading::from_result(f.rpm(), kind)
                } else {
                    Reading::Missing
                },
            })
            .collect();
        if let Some(p) = &self.power {
            s.supply_voltage = Reading::from_result(p.voltage(), kind);
            s.current = Reading::from_result(p.current(), kind);
            s.power = Reading::from_result(p.power(), kind);
            s.throttle = Reading::from_result(p.throttle(), kind);
        }
        if let Some(sup) = &self.supply {
            match sup.sources() {
                Ok(sources) => {
                    s.power_source = sources
                        .iter()
                        .find(|x| x.active)
                        .map(|x| Reading::Ok(x.kind))
                        .unwrap_or(Reading::Missing);
                    s.main_power_available = sources
                        .iter()
                        .find(|x| x.kind == PowerSourceKind::Main)
                        .map(|x| Reading::Ok(x.available))
                        .unwrap_or(Reading::Missing);
                }
                Err(e) => {
                    s.power_source = Reading::from_result(Err(e), kind);
                }
            }
        }
        if let Some(b) = &self.battery {
            s.battery = Reading::from_result(b.status(), kind);
        }
        s.security = self
            .security
            .iter()
            .map(|i| SecurityReading {
                id: i.id().to_owned(),
                kind: i.kind(),
                active: Reading::from_result(i.active(), kind),
            })
            .collect();
        if let Some(p) = &self.platform {
            s.cpu_load = Reading::from_result(p.cpu_load(), kind);
            s.cpu_freq = Reading::from_result(p.cpu_freq(), kind);
            s.storage = p.storage().unwrap_or_default();
        }
        s
    }
}

/// Assembles a [`Board`] from backend parts.
#[derive(Debug)]
pub struct BoardBuilder {
    board: Board,
}

impl BoardBuilder {
    /// Sets the clock (default: the wall clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.board.clock = clock;
        self
    }
    /// Sets the GPIO controller.
    pub fn gpio(mut self, gpio: Arc<dyn Gpio>) -> Self {
        self.board.gpio = Some(gpio);
        self
    }
    /// Adds a temperature sensor.
    pub fn thermal(mut self, sensor: Arc<dyn ThermalSensor>) -> Self {
        self.board.thermal.push(sensor);
        self
    }
    /// Adds a fan.
    pub fn fan(mut self, fan: Arc<dyn Fan>) -> Self {
        self.board.fans.push(fan);
        self
    }
    /// Sets the power monitor.
    pub fn power(mut self, power: Arc<dyn PowerMonitor>) -> Self {
        self.board.power = Some(power);
        self
    }
    /// Sets the power-source switch.
    pub fn supply(mut self, supply: Arc<dyn PowerSupply>) -> Self {
        self.board.supply = Some(supply);
        self
    }
    /// Sets the battery.
    pub fn battery(mut self, battery: Arc<dyn Battery>) -> Self {
        self.board.battery = Some(battery);
        self
    }
    /// Adds a security input.
    pub fn security(mut self, input: Arc<dyn SecurityInput>) -> Self {
        self.board.security.push(input);
        self
    }
    /// Sets the platform figures.
    pub fn platform(mut self, platform: Arc<dyn Platform>) -> Self {
        self.board.platform = Some(platform);
        self
    }
    /// Adds an I2C bus.
    pub fn i2c(mut self, bus: Arc<dyn I2cBus>) -> Self {
        self.board.i2c.push(bus);
        self
    }
    /// Sets the CPU load generator.
    pub fn load_generator(mut self, load: Arc<dyn LoadGenerator>) -> Self {
        self.board.load = Some(load);
        self
    }
    /// Uses an existing event hub (so backend parts built earlier can publish to it).
    pub fn events(mut self, hub: EventHub) -> Self {
        self.board.events = hub;
        self
    }
    /// Finishes the board.
    pub fn build(self) -> Board {
        self.board
    }
}
