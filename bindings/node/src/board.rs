//! Boards (sim, linux, rpi) and samples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::Env;
use napi::bindgen_prelude::{Either, FunctionRef, JsValuesTupleIntoVec, Unknown};
use napi::threadsafe_function::UnknownReturnValue;
use napi_derive::napi;
use serde_json::{Value, json};
use wrale_core::board::{BoardModel, BoardProfile};
use wrale_core::model::{Level, SecurityKind};
use wrale_core::units::{Celsius, Hertz, Percent};
use wrale_hal::gpio::PinSet;
use wrale_hal::sim::{SimBoard, SimFault};
use wrale_hal::{BackendConfig, HalError};

use crate::errors::{Failure, OrThrow};
use crate::host::{HostFan, HostFn, HostThermal};
use crate::{from_name, from_value, to_value};

pub(crate) fn percent(what: &str, v: f64) -> Result<Percent, Failure> {
    Percent::new(v).map_err(|e| Failure::invalid_input("invalid_argument", format!("{what}: {e}")))
}

pub(crate) fn parse_model(name: &str) -> Result<BoardModel, Failure> {
    from_name("board model", name)
}

pub(crate) fn secs(what: &str, s: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(s)
        .map_err(|e| Failure::invalid_input("invalid_argument", format!("{what}: {e}")))
}

/// A fault kind (`"fan_stall"`) or a fault object (`{kind: "sensor_stuck", ...}`).
fn fault_value(f: Value) -> Value {
    match f {
        Value::String(kind) => json!({ "kind": kind }),
        other => other,
    }
}

/// How to simulate a board (every field optional).
#[napi(object)]
#[derive(Debug, Default)]
pub struct SimOptions {
    /// The random seed: the same seed and script give the same readings.
    pub seed: Option<u32>,
    /// The CPU load in percent.
    pub load_pct: Option<f64>,
    /// The room temperature in °C.
    pub ambient_c: Option<f64>,
    /// Faults present from the start: kinds (`"fan_stall"`) or fault objects.
    pub faults: Option<Vec<Value>>,
    /// Sensor noise (default on).
    pub noise: Option<bool>,
}

/// A host callback as passed: a function, or a value that should have been one.
type Callback<'a, A, R> = Either<FunctionRef<A, R>, Unknown<'a>>;

/// The function of a [`Callback`], or an error naming the value that is none.
fn function<A: JsValuesTupleIntoVec, R>(
    env: &Env,
    what: &str,
    id: &str,
    f: Callback<'_, A, R>,
) -> napi::Result<FunctionRef<A, R>> {
    match f {
        Either::A(f) => Ok(f),
        Either::B(v) => {
            let ty = v.get_type().map(|t| t.to_string()).unwrap_or_default();
            Err(Failure::invalid_input(
                "invalid_argument",
                format!("{what}.{id}: expected a function, got {ty}"),
            ))
            .or_throw(env)
        }
    }
}

/// How a board of host callbacks calls them (every field optional).
#[napi(object)]
#[derive(Debug, Default)]
pub struct HostBoardOptions {
    /// How long a call from the device's runtime thread waits for the JS thread
    /// before the reading is a sensor fault (or the fan command an error), in
    /// ms; default 1000.
    pub timeout_ms: Option<f64>,
}

/// One reading of every sensor of a board (`wrale_core::Sample`).
#[napi]
#[derive(Debug)]
pub struct Sample {
    pub(crate) inner: wrale_core::Sample,
}

#[napi]
impl Sample {
    /// A sample from its object form (what `toJSON` gives).
    #[napi(factory)]
    pub fn from(env: Env, value: Value) -> napi::Result<Sample> {
        Ok(Sample {
            inner: from_value("sample", value).or_throw(&env)?,
        })
    }

    /// The sample as a plain object (the crate's serde shape).
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self, env: Env) -> napi::Result<Value> {
        to_value(&self.inner).or_throw(&env)
    }

    /// Time of the sample, milliseconds since the Unix epoch.
    #[napi(getter)]
    pub fn at_ms(&self) -> i64 {
        self.inner.at.as_millis()
    }

    /// The CPU temperature in °C, `null` when the sensor is missing or faulty.
    #[napi(getter)]
    pub fn cpu_temp_c(&self) -> Option<f64> {
        self.inner.cpu_temp().ok().map(Celsius::get)
    }
}

/// A board: every subsystem of one device (`wrale_hal::Board`), plus the
/// simulator's controls when it is a `sim` board.
#[napi]
#[derive(Debug)]
pub struct Board {
    pub(crate) board: wrale_hal::Board,
    sim: Option<SimBoard>,
    pins: PinSet,
}

impl Board {
    fn wrap(board: wrale_hal::Board, sim: Option<SimBoard>) -> Board {
        Board {
            board,
            sim,
            pins: PinSet::new(),
        }
    }

    pub(crate) fn is_virtual_sim(&self) -> bool {
        self.sim.is_some() && self.board.backend() == "sim"
    }

    fn sim_controls(&self) -> Result<&SimBoard, Failure> {
        self.sim.as_ref().ok_or_else(|| {
            HalError::unsupported(format!(
                "simulator controls on a {} board",
                self.board.backend()
            ))
            .into()
        })
    }

    fn open_config(config: BackendConfig) -> Result<Board, Failure> {
        match &config {
            BackendConfig::Sim(c) => {
                let sim = SimBoard::new(c)?;
                Ok(Board::wrap(sim.board(), Some(sim)))
            }
            _ => Ok(Board::wrap(wrale_hal::open(&config)?, None)),
        }
    }
}

#[napi]
impl Board {
    /// Opens the backend a config names (`wrale_hal::BackendConfig`, the TOML
    /// `[hal]` table of metald as an object: `{backend: "sim", seed: 7}`,
    /// `{backend: "linux", root: "/"}`, `{backend: "rpi"}`).
    #[napi(factory)]
    pub fn open(env: Env, config: Value) -> napi::Result<Board> {
        let config: BackendConfig = from_value("board config", config).or_throw(&env)?;
        Board::open_config(config).or_throw(&env)
    }

    /// A simulated board on virtual time (model `pi4b` by default).
    #[napi(factory)]
    pub fn sim(
        env: Env,
        model: Option<String>,
        options: Option<SimOptions>,
    ) -> napi::Result<Board> {
        let o = options.unwrap_or_default();
        let mut config = json!({
            "backend": "sim",
            "model": model.as_deref().unwrap_or("pi4b"),
            "seed": o.seed.unwrap_or(0),
            "load_pct": o.load_pct.unwrap_or(0.0),
            "noise": o.noise.unwrap_or(true),
            "faults": o.faults.unwrap_or_default().into_iter().map(fault_value).collect::<Vec<_>>(),
        });
        if let Some(a) = o.ambient_c {
            config["ambient_c"] = a.into();
        }
        Board::open(env, config)
    }

    /// A board whose sensors and fans are JS functions: `temperatures` maps a
    /// sensor id to a function returning °C (`cpu` drives the safety engine;
    /// `gpu` and `ambient` are known kinds), `fans` maps a fan id to a function
    /// taking the duty in percent. A function that throws, or returns no finite
    /// number, gives a sensor fault in the sample. The functions run on the JS
    /// thread: directly when the board is read there, and queued to it (waiting
    /// at most `timeoutMs`) when a running `Device` reads the board.
    #[napi(
        factory,
        ts_args_type = "model: string, temperatures: Record<string, () => number>, fans?: Record<string, (dutyPct: number) => void> | undefined | null, options?: HostBoardOptions | undefined | null"
    )]
    pub fn from_callbacks(
        env: Env,
        model: String,
        temperatures: HashMap<String, Callback<'_, (), f64>>,
        fans: Option<HashMap<String, Callback<'_, f64, UnknownReturnValue>>>,
        options: Option<HostBoardOptions>,
    ) -> napi::Result<Board> {
        let o = options.unwrap_or_default();
        let timeout = secs("timeoutMs", o.timeout_ms.unwrap_or(1000.0) / 1000.0).or_throw(&env)?;
        let profile = BoardProfile::builtin(parse_model(&model).or_throw(&env)?);
        let mut b = wrale_hal::Board::builder(profile, "host");
        let mut temperatures: Vec<_> = temperatures.into_iter().collect();
        temperatures.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, f) in temperatures {
            let f = function(&env, "temperatures", &id, f)?;
            b = b.thermal(Arc::new(HostThermal {
                id,
                read: HostFn::new(&env, f, timeout)?,
            }));
        }
        let mut fans: Vec<_> = fans.unwrap_or_default().into_iter().collect();
        fans.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, f) in fans {
            let f = function(&env, "fans", &id, f)?;
            b = b.fan(Arc::new(HostFan {
                id,
                set: HostFn::new(&env, f, timeout)?,
                duty: Mutex::new(Percent::ZERO),
            }));
        }
        Ok(Board::wrap(b.build(), None))
    }

    /// `sim`, `linux`, `rpi` or `host`.
    #[napi(getter)]
    pub fn backend(&self) -> &'static str {
        self.board.backend()
    }

    /// The board model (`pi4b`, `pi5`, ...).
    #[napi(getter)]
    pub fn model(&self) -> String {
        self.board.profile().model.as_str().to_owned()
    }

    /// The board profile (`wrale_core::board::BoardProfile`).
    #[napi]
    pub fn profile(&self, env: Env) -> napi::Result<Value> {
        to_value(self.board.profile()).or_throw(&env)
    }

    /// Reads every sensor once.
    #[napi]
    pub fn sample(&self) -> Sample {
        Sample {
            inner: self.board.sample(),
        }
    }

    /// The board's clock (virtual on a `sim` board), ms since the Unix epoch.
    #[napi]
    pub fn now_ms(&self) -> i64 {
        self.board.now().as_millis()
    }

    /// Advances a `sim` board's virtual time by `seconds`.
    #[napi]
    pub fn step(&self, env: Env, seconds: f64) -> napi::Result<()> {
        let sim = self.sim_controls().or_throw(&env)?;
        sim.run_for(secs("seconds", seconds).or_throw(&env)?);
        Ok(())
    }

    /// Sets a `sim` board's CPU load.
    #[napi]
    pub fn set_load(&self, env: Env, load_pct: f64) -> napi::Result<()> {
        let load = percent("loadPct", load_pct).or_throw(&env)?;
        self.sim_controls().or_throw(&env)?.set_load(load);
        Ok(())
    }

    /// Sets a `sim` board's room temperature.
    #[napi]
    pub fn set_ambient(&self, env: Env, celsius: f64) -> napi::Result<()> {
        self.sim_controls()
            .or_throw(&env)?
            .set_ambient(Celsius(celsius));
        Ok(())
    }

    /// Injects a fault into a `sim` board: a kind (`"fan_stall"`) or a fault
    /// object (`wrale_hal::SimFault`).
    #[napi(ts_args_type = "fault: string | Record<string, unknown>")]
    pub fn inject(&self, env: Env, fault: Value) -> napi::Result<()> {
        let fault: SimFault = from_value("fault", fault_value(fault)).or_throw(&env)?;
        self.sim_controls()
            .or_throw(&env)?
            .try_inject(fault)
            .or_throw(&env)
    }

    /// Clears every injected fault of a `sim` board.
    #[napi]
    pub fn clear_faults(&self, env: Env) -> napi::Result<()> {
        self.sim_controls().or_throw(&env)?.clear_faults();
        Ok(())
    }

    /// Sets a `sim` board's security input (`case_switch`, `tamper`, `motion`, `voltage_monitor`).
    #[napi]
    pub fn set_security(&self, env: Env, kind: String, active: bool) -> napi::Result<()> {
        let kind: SecurityKind = from_name("security kind", &kind).or_throw(&env)?;
        self.sim_controls()
            .or_throw(&env)?
            .set_security(kind, active);
        Ok(())
    }

    /// The fan ids.
    #[napi]
    pub fn fans(&self) -> Vec<String> {
        self.board
            .fans()
            .iter()
            .map(|f| f.id().to_owned())
            .collect()
    }

    /// Sets a fan's duty in percent (bypasses the safety engine: the `Device`
    /// runtime and `SafetyEngine.check` are the checked path).
    #[napi]
    pub fn set_fan(&self, env: Env, fan: String, duty_pct: f64) -> napi::Result<()> {
        let duty = percent("dutyPct", duty_pct).or_throw(&env)?;
        self.board
            .fan(&fan)
            .and_then(|f| f.set_duty(duty))
            .or_throw(&env)
    }

    /// A fan's current duty in percent.
    #[napi]
    pub fn fan_duty(&self, env: Env, fan: String) -> napi::Result<f64> {
        self.board
            .fan(&fan)
            .and_then(|f| f.duty())
            .map(Percent::get)
            .or_throw(&env)
    }

    /// Drives a GPIO output (claimed on first use, released with the board).
    #[napi]
    pub fn gpio_write(&self, env: Env, pin: u8, high: bool) -> napi::Result<()> {
        let level = if high { Level::High } else { Level::Low };
        self.pins.write(&self.board, pin, level).or_throw(&env)
    }

    /// Reads a GPIO line (the driven level of an output this board claimed;
    /// else the line as an input without pull).
    #[napi]
    pub fn gpio_read(&self, env: Env, pin: u8) -> napi::Result<bool> {
        self.pins
            .read(&self.board, pin)
            .map(|l| l == Level::High)
            .or_throw(&env)
    }

    /// Sets a hardware PWM output (claimed on first use; 1 kHz by default).
    #[napi]
    pub fn pwm(
        &self,
        env: Env,
        pin: u8,
        duty_pct: f64,
        frequency_hz: Option<f64>,
    ) -> napi::Result<()> {
        let duty = percent("dutyPct", duty_pct).or_throw(&env)?;
        self.pins
            .pwm(&self.board, pin, duty, frequency_hz.map(Hertz))
            .or_throw(&env)
    }

    /// Runs the hardware diagnostics (`options`: the fields of
    /// `wrale_hal::diag::DiagOptions` that differ) and returns the report.
    #[napi]
    pub fn diagnostics(&self, env: Env, options: Option<Value>) -> napi::Result<Value> {
        let options: wrale_hal::diag::DiagOptions = match options {
            Some(v) => from_value("diagnostics options", v).or_throw(&env)?,
            None => Default::default(),
        };
        to_value(&wrale_hal::diag::run(&self.board, &options)).or_throw(&env)
    }
}
