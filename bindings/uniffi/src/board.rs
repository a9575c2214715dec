//! Boards (sim, linux, rpi): samples, GPIO, PWM, fans, diagnostics and the
//! simulator's controls.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wrale_core::board::BoardModel;
use wrale_core::model::{Level, SecurityKind};
use wrale_core::units::{Celsius, Hertz, Percent};
use wrale_hal::gpio::PinSet;
use wrale_hal::sim::{SimBoard, SimFault};
use wrale_hal::{BackendConfig, HalError};

use crate::{Sample, WraleError, from_json, from_name, to_json};

pub(crate) fn percent(what: &str, v: f64) -> Result<Percent, WraleError> {
    Percent::new(v).map_err(|e| WraleError::invalid_argument(format!("{what}: {e}")))
}

pub(crate) fn parse_model(name: &str) -> Result<BoardModel, WraleError> {
    from_name("board model", name)
}

pub(crate) fn secs(what: &str, s: f64) -> Result<Duration, WraleError> {
    Duration::try_from_secs_f64(s).map_err(|e| WraleError::invalid_argument(format!("{what}: {e}")))
}

/// A fault given as a kind (`fan_stall`) or as a JSON fault object
/// (`{"kind": "sensor_stuck", ...}`, `wrale_hal::sim::SimFault`).
fn parse_fault(text: &str) -> Result<SimFault, WraleError> {
    let t = text.trim();
    if t.starts_with('{') {
        from_json("fault", t)
    } else {
        serde_json::from_value(json!({ "kind": t }))
            .map_err(|e| WraleError::invalid_argument(format!("fault {t:?}: {e}")))
    }
}

/// How to simulate a board.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SimOptions {
    /// The random seed: the same seed and script give the same readings.
    #[uniffi(default = 0)]
    pub seed: u64,
    /// The CPU load, %.
    #[uniffi(default = 0.0)]
    pub load_pct: f64,
    /// The room temperature, °C (the model's default when absent).
    #[uniffi(default)]
    pub ambient_c: Option<f64>,
    /// Faults present from the start: kinds (`fan_stall`) or JSON fault objects.
    #[uniffi(default)]
    pub faults: Vec<String>,
    /// Sensor noise.
    #[uniffi(default = true)]
    pub noise: bool,
}

/// A board: every subsystem of one device (`wrale_hal::Board`), plus the
/// simulator's controls on a `sim` board.
#[derive(Debug, uniffi::Object)]
pub struct Board {
    pub(crate) board: wrale_hal::Board,
    sim: Option<SimBoard>,
    pins: PinSet,
}

impl Board {
    fn wrap(board: wrale_hal::Board, sim: Option<SimBoard>) -> Arc<Board> {
        Arc::new(Board {
            board,
            sim,
            pins: PinSet::new(),
        })
    }

    pub(crate) fn from_host(board: wrale_hal::Board) -> Arc<Board> {
        Board::wrap(board, None)
    }

    pub(crate) fn is_virtual_sim(&self) -> bool {
        self.sim.is_some() && self.board.backend() == "sim"
    }

    fn sim_controls(&self) -> Result<&SimBoard, WraleError> {
        self.sim.as_ref().ok_or_else(|| {
            HalError::unsupported(format!(
                "simulator controls on a {} board",
                self.board.backend()
            ))
            .into()
        })
    }

    fn open_config(config: BackendConfig) -> Result<Arc<Board>, WraleError> {
        match &config {
            BackendConfig::Sim(c) => {
                let sim = SimBoard::new(c)?;
                Ok(Board::wrap(sim.board(), Some(sim)))
            }
            _ => Ok(Board::wrap(wrale_hal::open(&config)?, None)),
        }
    }
}

#[uniffi::export]
impl Board {
    /// Opens the backend a config names: metald's `[hal]` table as JSON
    /// (`{"backend": "sim", "seed": 7}`, `{"backend": "linux", "root": "/"}`,
    /// `{"backend": "rpi"}`).
    #[uniffi::constructor]
    pub fn open(config_json: String) -> Result<Arc<Board>, WraleError> {
        Board::open_config(from_json("board config", &config_json)?)
    }

    /// A simulated board (`pi4b`, `pi5`, ...) on virtual time.
    #[uniffi::constructor]
    pub fn sim(model: String, options: SimOptions) -> Result<Arc<Board>, WraleError> {
        let faults = options
            .faults
            .iter()
            .map(|f| {
                parse_fault(f).and_then(|f| {
                    serde_json::to_value(f).map_err(|e| WraleError::internal(e.to_string()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = json!({
            "backend": "sim",
            "model": model,
            "seed": options.seed,
            "load_pct": options.load_pct,
            "noise": options.noise,
            "faults": faults,
        });
        if let Some(a) = options.ambient_c {
            config["ambient_c"] = a.into();
        }
        let config: BackendConfig = serde_json::from_value(config)
            .map_err(|e| WraleError::invalid_argument(format!("sim board: {e}")))?;
        Board::open_config(config)
    }

    /// `sim`, `linux` or `rpi`.
    pub fn backend(&self) -> String {
        self.board.backend().to_owned()
    }

    /// The board model (`pi4b`, `pi5`, ...).
    pub fn model(&self) -> String {
        self.board.profile().model.as_str().to_owned()
    }

    /// The board profile as JSON (`wrale_core::board::BoardProfile`).
    pub fn profile_json(&self) -> Result<String, WraleError> {
        to_json(self.board.profile())
    }

    /// Reads every sensor once.
    pub fn sample(&self) -> Sample {
        self.board.sample().into()
    }

    /// The board's clock (virtual on a `sim` board), ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.board.now().as_millis()
    }

    /// Advances a `sim` board's virtual time.
    pub fn step(&self, seconds: f64) -> Result<(), WraleError> {
        let d = secs("seconds", seconds)?;
        self.sim_controls()?.run_for(d);
        Ok(())
    }

    /// Sets a `sim` board's CPU load, %.
    pub fn set_load(&self, load_pct: f64) -> Result<(), WraleError> {
        let load = percent("load_pct", load_pct)?;
        self.sim_controls()?.set_load(load);
        Ok(())
    }

    /// Sets a `sim` board's room temperature, °C.
    pub fn set_ambient(&self, celsius: f64) -> Result<(), WraleError> {
        self.sim_controls()?.set_ambient(Celsius(celsius));
        Ok(())
    }

    /// Injects a fault into a `sim` board: a kind (`fan_stall`) or a JSON
    /// fault object (`wrale_hal::sim::SimFault`).
    pub fn inject(&self, fault: String) -> Result<(), WraleError> {
        let fault = parse_fault(&fault)?;
        Ok(self.sim_controls()?.try_inject(fault)?)
    }

    /// Clears every injected fault of a `sim` board.
    pub fn clear_faults(&self) -> Result<(), WraleError> {
        self.sim_controls()?.clear_faults();
        Ok(())
    }

    /// Sets a `sim` board's security input.
    pub fn set_security(&self, kind: SecurityKind, active: bool) -> Result<(), WraleError> {
        self.sim_controls()?.set_security(kind, active);
        Ok(())
    }

    /// The fan ids.
    pub fn fans(&self) -> Vec<String> {
        self.board
            .fans()
            .iter()
            .map(|f| f.id().to_owned())
            .collect()
    }

    /// Sets a fan's duty, % (bypasses the safety engine: `Agent` and
    /// `SafetyEngine.check` are the checked path).
    pub fn set_fan(&self, fan: String, duty_pct: f64) -> Result<(), WraleError> {
        let duty = percent("duty_pct", duty_pct)?;
        Ok(self.board.fan(&fan).and_then(|f| f.set_duty(duty))?)
    }

    /// A fan's current duty, %.
    pub fn fan_duty(&self, fan: String) -> Result<f64, WraleError> {
        Ok(self
            .board
            .fan(&fan)
            .and_then(|f| f.duty())
            .map(Percent::get)?)
    }

    /// Drives a GPIO output (claimed on first use, released with the board).
    pub fn gpio_write(&self, pin: u8, high: bool) -> Result<(), WraleError> {
        let level = if high { Level::High } else { Level::Low };
        Ok(self.pins.write(&self.board, pin, level)?)
    }

    /// Reads a GPIO line (the driven level of an output this board claimed,
    /// else the line as an input without pull).
    pub fn gpio_read(&self, pin: u8) -> Result<bool, WraleError> {
        Ok(self.pins.read(&self.board, pin)? == Level::High)
    }

    /// Sets a hardware PWM output (claimed on first use; 1 kHz unless given).
    pub fn pwm(&self, pin: u8, duty_pct: f64, frequency_hz: Option<f64>) -> Result<(), WraleError> {
        let duty = percent("duty_pct", duty_pct)?;
        Ok(self
            .pins
            .pwm(&self.board, pin, duty, frequency_hz.map(Hertz))?)
    }

    /// Runs the hardware diagnostics (`options_json`: the fields of
    /// `wrale_hal::diag::DiagOptions` that differ, or `null`) and returns the
    /// report as JSON.
    pub fn diagnostics(&self, options_json: Option<String>) -> Result<String, WraleError> {
        let options: wrale_hal::diag::DiagOptions = match options_json {
            Some(t) => from_json("diagnostics options", &t)?,
            None => Default::default(),
        };
        to_json(&wrale_hal::diag::run(&self.board, &options))
    }
}
