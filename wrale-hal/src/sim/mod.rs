//! The `sim` backend: a deterministic, seeded physical model of a Raspberry Pi
//! board on virtual time.
//!
//! What is modelled (parameters from the board profile, figures from
//! `shared/PHYSICS.md`):
//!
//! - **Thermal**: a second-order RC circuit. A fast die node and a slow board node
//!   (time constants `tau_die_s` / `tau_board_s`) carry the whole-board power
//!   `idle_w + load × (load_w − idle_w)` (scaled by the clock the firmware allows)
//!   to the ambient air through `R_th`: `r_th_bare`, `r_th_heatsink`, or with a fan
//!   interpolated from `r_th_heatsink` (no airflow) to `r_th_fan` (full airflow).
//! - **Fan**: the rotor follows the duty with the profile's spin-up lag, does not
//!   start below `min_start_duty_pct`, runs at 100 % for any duty on an on/off fan;
//!   a stalled fan reads 0 rpm and cools nothing; a degraded one turns normally but
//!   moves less air.
//! - **Supply**: `V = V_nominal − I·R` with `I = P/V`; below the profile's
//!   threshold the firmware reports under-voltage (never on the Zero range).
//! - **Firmware**: above `firmware_throttle_c` (and on under-voltage) it caps the
//!   ARM clock and sets the throttled / frequency-capped bits (and their sticky
//!   "occurred" bits); the 3B+ soft limit sets `soft_temp_limit`.
//! - **Sources**: main, an optional battery (voltage-vs-charge curve, charging,
//!   discharging) and optional solar, with failover when the active one is lost.
//! - **Security inputs, GPIO, I2C, storage**: scriptable case/motion/tamper inputs
//!   that also drive their pins, a GPIO controller with pulls, loopback wiring,
//!   drop states, debounced edges and hardware PWM, an I2C bus `i2c-1` with the
//!   INA219-like monitor (0x40), SHT3x-like ambient sensor (0x44) and fuel gauge
//!   (0x36), and a storage device whose writes grow with load.
//!
//! Noise is drawn inside [`SimBoard::step`] from a ChaCha generator seeded by
//! [`SimConfig::seed`]; reads never draw, so the same seed and script give the same
//! readings bit for bit, whatever the order of reads.
//!
//! **Powered off** ([`SimBoard::power_off`], or a brown-out when no source can
//! feed the board): the model keeps cooling down, but every HAL read fails with
//! [`HalError::Timeout`](crate::HalError::Timeout) ("nothing answers"), so a
//! [`Board::sample`] shows [`Reading::Fault`](wrale_core::Reading::Fault) with kind
//! `timeout` everywhere; [`SimBoard::state`] still shows the true physics.
//!
//! **Boots**: the board reports a boot id and boot time ([`Board::boot`]). The id
//! is derived from the seed, the start time and a boot counter, so it is the same
//! on every run, and it changes whenever the board boots again: a
//! [`SimBoard::reboot`] (or a `reboot` script action), a power-on after
//! [`SimBoard::power_off`], or the return of a source after a brown-out.
//!
//! ```
//! use std::time::Duration;
//! use wrale_core::units::Percent;
//! use wrale_hal::sim::{SimBoard, SimConfig};
//!
//! let sim = SimBoard::new(&SimConfig::default())?;   // a Pi 4 with a fan, 22 °C room
//! let board = sim.board();
//! sim.set_load(Percent::FULL);
//! sim.run_for(Duration::from_secs(600));           // ten minutes in a few milliseconds
//! let s = board.sample();
//! assert!(s.cpu_temp().ok().unwrap().get() > 60.0);
//! # Ok::<(), wrale_hal::HalError>(())
//! ```

mod gpio;
mod model;
mod parts;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrale_core::Timestamp;
use wrale_core::model::{PowerSourceKind, SecurityKind, ThrottleFlags};
use wrale_core::units::{Amps, Celsius, KelvinPerWatt, MegaHertz, Percent, Rpm, Volts, Watts};

use crate::board::{Board, Clock};
use crate::error::Result;
use crate::events::{EventHub, HalEvent};

pub use crate::sim_config::{
    BatteryConfig, Cooling, DEFAULT_SIM_START, SIM_I2C_BUS, SIM_SENSORS, ScriptStep, SimAction,
    SimConfig, SimFault, SimTime,
};
pub use model::SUB_STEP;

use model::Model;
use parts::{
    SimBattery, SimFan, SimI2c, SimLoad, SimPlatform, SimPowerMonitor, SimSecurity, SimSupply,
    SimThermal, TempSource,
};

/// I2C address of the simulated INA219-like power monitor.
pub const ADDR_INA219: u8 = 0x40;
/// I2C address of the simulated SHT3x-like ambient sensor.
pub const ADDR_SHT3X: u8 = 0x44;
/// I2C address of the simulated fuel gauge (MAX17048-like).
pub const ADDR_GAUGE: u8 = 0x36;

/// Opens a simulated board (what [`crate::open`] calls for `backend = "sim"`).
pub fn open(config: &SimConfig) -> Result<Board> {
    Ok(SimBoard::new(config)?.board())
}

/// The model plus the hub its events go to; shared by every part.
pub(crate) struct Shared {
    model: Mutex<Model>,
    events: EventHub,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: formatting a part must never deadlock on the model's own lock.
        let mut d = f.debug_struct("Shared");
        match self.model.try_lock() {
            Ok(m) => d.field("now", &m.now()),
            Err(_) => d.field("now", &"<locked>"),
        };
        d.finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Model> {
        // The model is only mutated through short, non-panicking updates; a poisoned
        // lock (a panic in a caller's test) leaves it usable.
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the model (after catching up with the wall clock in real-time
    /// mode), then publishes the events it produced, outside the lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Model) -> R) -> R {
        let (r, events) = {
            let mut m = self.lock();
            m.sync_realtime();
            let r = f(&mut m);
            (r, m.take_events())
        };
        for e in events {
            self.events.publish(e);
        }
        r
    }
}

/// The virtual clock: `now()` is virtual time; `sleep(d)` advances the model by `d`
/// (in real-time mode it really sleeps, and the model follows the wall clock).
#[derive(Debug)]
struct SimClock {
    shared: Arc<Shared>,
    realtime: bool,
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        self.shared.with(|m| m.now())
    }

    fn sleep(&self, d: Duration) {
        if self.realtime {
            std::thread::sleep(d);
            self.shared.with(|_| ());
        } else {
            self.shared.with(|m| m.advance(d));
        }
    }
}

/// True physical values of a simulated board (for tests and the fleet demo): what
/// the sensors would read without noise, faults or quantisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    /// Virtual time.
    pub at: Timestamp,
    /// Whether the board has power.
    pub powered: bool,
    /// Die (SoC) temperature.
    pub die_c: Celsius,
    /// Board (PCB / heatsink) node temperature.
    pub board_c: Celsius,
    /// Room temperature.
    pub ambient_c: Celsius,
    /// Total CPU load (base plus load generator).
    pub load_pct: Percent,
    /// ARM clock the firmware allows.
    pub cpu_freq_mhz: MegaHertz,
    /// Die-to-ambient thermal resistance now (depends on cooling and airflow).
    pub r_th_k_per_w: KelvinPerWatt,
    /// Power drawn from the active source (board, fan, charger).
    pub power_w: Watts,
    /// Voltage at the board input.
    pub supply_v: Volts,
    /// Current drawn from the active source.
    pub current_a: Amps,
    /// Effective fan duty (0/100 on an on/off fan).
    pub fan_duty_pct: Percent,
    /// True rotor speed.
    pub fan_rpm: Rpm,
    /// Cooling airflow as a fraction of a healthy fan at full speed.
    pub fan_airflow: f64,
    /// The firmware's throttle word.
    pub throttle: ThrottleFlags,
    /// Active power source.
    pub source: PowerSourceKind,
    /// Whether the main supply is available.
    pub main_available: bool,
    /// Battery state of charge, if fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_level_pct: Option<Percent>,
    /// Battery terminal voltage, if fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_v: Option<Volts>,
    /// Battery current (positive discharging, negative charging), if fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_current_a: Option<Amps>,
    /// Bytes written to storage since start.
    pub bytes_written: u64,
    /// Active faults.
    pub faults: Vec<SimFault>,
}

/// A simulated board: the model, its controls and its HAL view.
///
/// Cheap to clone; clones share the same model. [`SimBoard::board`] returns the
/// [`Board`] (every HAL part, the virtual clock and the event hub) on the same model.
#[derive(Clone)]
pub struct SimBoard {
    shared: Arc<Shared>,
    board: Board,
}

impl fmt::Debug for SimBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBoard")
            .field("board", &self.board)
            .field("now", &self.now())
            .finish()
    }
}

impl SimBoard {
    /// Builds a simulated board from `config`. Fails with
    /// [`HalError::InvalidArgument`](crate::HalError::InvalidArgument) on an
    /// inconsistent config (a fan cooling on a fanless board, an unknown sensor in a
    /// fault, a negative resistance, ...).
    pub fn new(config: &SimConfig) -> Result<SimBoard> {
        let model = Model::new(config)?;
        let profile = model.profile().clone();
        let has_fan = model.has_fan();
        let has_tach = model.fan_has_tach();
        let has_battery = model.has_battery();
        let security: Vec<(&'static str, SecurityKind)> =
            model.security.iter().map(|s| (s.id, s.kind)).collect();
        let events = EventHub::new();
        let shared = Arc::new(Shared {
            model: Mutex::new(model),
            events: events.clone(),
        });
        let s = || shared.clone();
        let mut b = Board::builder(profile, "sim")
            .events(events)
            .clock(Arc::new(SimClock {
                shared: s(),
                realtime: config.time == SimTime::Realtime,
            }))
            .gpio(Arc::new(gpio::SimGpio { shared: s() }))
            .thermal(Arc::new(SimThermal {
                shared: s(),
                source: TempSource::Cpu,
            }))
            .thermal(Arc::new(SimThermal {
                shared: s(),
                source: TempSource::Ambient,
            }))
            .power(Arc::new(SimPowerMonitor { shared: s() }))
            .supply(Arc::new(SimSupply { shared: s() }))
            .platform(Arc::new(SimPlatform { shared: s() }))
            .i2c(Arc::new(SimI2c { shared: s() }))
            .load_generator(Arc::new(SimLoad { shared: s() }));
        if has_fan {
            b = b.fan(Arc::new(SimFan {
                shared: s(),
                has_tach,
            }));
        }
        if has_battery {
            b = b.battery(Arc::new(SimBattery { shared: s() }));
        }
        for (id, kind) in security {
            b = b.security(Arc::new(SimSecurity {
                shared: s(),
                id,
                kind,
            }));
        }
        Ok(SimBoard {
            board: b.build(),
            shared,
        })
    }

    /// The HAL view of this board (shares the model; its clock is the virtual clock).
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// The board's event hub (edges, security, power source, under-voltage).
    pub fn events(&self) -> &EventHub {
        self.board.events()
    }

    /// Advances virtual time by `dt` (integrating in fixed [`SUB_STEP`]s on a grid,
    /// so how a caller splits its steps never changes the result) and applies the
    /// config script's steps that fall due.
    pub fn step(&self, dt: Duration) {
        self.shared.with(|m| m.advance(dt));
    }

    /// Runs the model for `total` of virtual time, running the config script
    /// (the same as [`SimBoard::step`]; the name reads better for long runs).
    pub fn run_for(&self, total: Duration) {
        self.step(total);
    }

    /// Virtual time now.
    pub fn now(&self) -> Timestamp {
        self.shared.with(|m| m.now())
    }

    /// Virtual time since start.
    pub fn elapsed(&self) -> Duration {
        self.shared.with(|m| m.elapsed())
    }

    /// Sets the base CPU load (the load generator adds to it).
    pub fn set_load(&self, load: Percent) {
        self.shared.with(|m| m.set_base_load(load));
    }

    /// Sets the room temperature (non-finite values are ignored).
    pub fn set_ambient(&self, t: Celsius) {
        self.shared.with(|m| m.set_ambient(t));
    }

    /// Sets the fan duty directly (as the board's `fan0` would); no effect without a fan.
    pub fn set_fan_duty(&self, duty: Percent) {
        self.shared.with(|m| m.set_fan_duty(duty));
    }

    /// Injects a fault now (replacing one of the same kind on the same target).
    /// A fault naming an unknown sensor or bus matches nothing and has no effect;
    /// use [`SimBoard::try_inject`] to have it refused.
    pub fn inject(&self, fault: SimFault) {
        self.shared.with(|m| {
            let at = m.now();
            m.inject_at(fault, at);
        });
    }

    /// Injects a fault after checking its names and parameters.
    pub fn try_inject(&self, fault: SimFault) -> Result<()> {
        fault
            .validate()
            .map_err(|e| crate::HalError::InvalidArgument(format!("sim fault: {e}")))?;
        self.inject(fault);
        Ok(())
    }

    /// Clears a fault (matched by kind and target, parameters ignored).
    pub fn clear(&self, fault: &SimFault) {
        self.shared.with(|m| {
            let at = m.now();
            m.clear_at(fault, at);
        });
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        self.shared.with(|m| m.clear_all());
    }

    /// Sets a physical-security input (case open, motion, tamper, voltage monitor);
    /// a change is published as [`HalEvent::Security`] and drives the input's pin
    /// (active = high). No effect when the profile has no such input.
    pub fn set_security(&self, kind: SecurityKind, active: bool) {
        self.shared.with(|m| {
            let at = m.now();
            m.set_security_at(kind, active, at);
        });
    }

    /// Applies a script action now.
    pub fn apply(&self, action: SimAction) {
        self.shared.with(|m| {
            let at = m.now();
            m.apply(action, at);
        });
    }

    /// Powers the board off (what an emergency shutdown does on the simulator):
    /// load and fan stop, the model cools down, every HAL read fails with
    /// `Timeout` until [`SimBoard::power_on`].
    pub fn power_off(&self) {
        self.shared.with(|m| {
            let at = m.now();
            m.power_off_at(at);
        });
    }

    /// Powers the board back on (it boots if a source can feed it).
    pub fn power_on(&self) {
        self.shared.with(|m| {
            let at = m.now();
            m.power_on_at(at);
        });
    }

    /// Reboots the board: a power cycle it comes back from at once when a source
    /// can feed it. The boot id changes ([`Board::boot`]), the boot time is now,
    /// the firmware's sticky throttle bits start afresh.
    pub fn reboot(&self) {
        self.apply(SimAction::Reboot);
    }

    /// Whether the board has power.
    pub fn is_powered(&self) -> bool {
        self.shared.with(|m| m.is_powered())
    }

    /// True physical values.
    pub fn state(&self) -> SimState {
        self.shared.with(|m| m.state())
    }

    /// Subscribes to the board's hardware events (a shorthand for
    /// `board().events().subscribe(capacity)`).
    pub fn subscribe(&self, capacity: usize) -> std::sync::mpsc::Receiver<HalEvent> {
        self.board.events().subscribe(capacity)
    }
}
