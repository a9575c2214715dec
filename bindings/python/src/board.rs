//! Boards (sim, linux, rpi, or sensors supplied by the host as callables) and samples.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use wrale_core::board::{BoardModel, BoardProfile};
use wrale_core::model::{Level, SecurityKind, SensorKind};
use wrale_core::units::{Celsius, Hertz, Percent, Rpm};
use wrale_hal::gpio::PinSet;
use wrale_hal::sim::{SimBoard, SimFault};
use wrale_hal::thermal::{Fan, ThermalSensor};
use wrale_hal::{BackendConfig, HalError};

use crate::errors::{Failure, py_err};
use crate::{from_json, to_json};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn percent(what: &str, v: f64) -> PyResult<Percent> {
    Percent::new(v)
        .map_err(|e| Failure::invalid_input("invalid_argument", format!("{what}: {e}")).into())
}

pub(crate) fn parse_model(name: &str) -> PyResult<BoardModel> {
    from_json("board model", &serde_json::Value::from(name).to_string())
}

/// One reading of every sensor of a board (`wrale_core::Sample`).
#[pyclass(module = "wrale._native", frozen)]
#[derive(Debug)]
pub struct Sample {
    pub(crate) inner: wrale_core::Sample,
}

#[pymethods]
impl Sample {
    /// A sample from its JSON form (what `to_json` gives).
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Sample> {
        Ok(Sample {
            inner: from_json("sample", text)?,
        })
    }

    /// The sample as JSON text (the crate's serde shape).
    fn to_json(&self) -> PyResult<String> {
        to_json(&self.inner)
    }

    /// The sample as a dict (`json.loads(to_json())`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = to_json(&self.inner)?;
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Time of the sample, milliseconds since the Unix epoch.
    #[getter]
    fn at_ms(&self) -> i64 {
        self.inner.at.as_millis()
    }

    /// The CPU temperature in °C, `None` when the sensor is missing or faulty.
    #[getter]
    fn cpu_temp_c(&self) -> Option<f64> {
        self.inner.cpu_temp().ok().map(Celsius::get)
    }

    fn __repr__(&self) -> String {
        format!(
            "Sample(at_ms={}, cpu_temp_c={:?})",
            self.inner.at.as_millis(),
            self.inner.cpu_temp().ok().map(Celsius::get)
        )
    }
}

/// A temperature sensor read by a Python callable returning °C.
struct HostThermal {
    id: String,
    kind: SensorKind,
    read: Py<PyAny>,
}

impl std::fmt::Debug for HostThermal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostThermal").field("id", &self.id).finish()
    }
}

impl ThermalSensor for HostThermal {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> SensorKind {
        self.kind
    }
    fn read(&self) -> wrale_hal::Result<Celsius> {
        Python::attach(|py| {
            self.read
                .call0(py)
                .and_then(|v| v.extract::<f64>(py))
                .map(Celsius)
                .map_err(|e| HalError::sensor_fault(&self.id, format!("host callback: {e}")))
        })
    }
}

/// A fan driven by a Python callable taking the duty in percent.
struct HostFan {
    id: String,
    set: Py<PyAny>,
    duty: Mutex<Percent>,
}

impl std::fmt::Debug for HostFan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFan").field("id", &self.id).finish()
    }
}

impl Fan for HostFan {
    fn id(&self) -> &str {
        &self.id
    }
    fn set_duty(&self, duty: Percent) -> wrale_hal::Result<()> {
        Python::attach(|py| self.set.call1(py, (duty.get(),))).map_err(|e| HalError::Bus {
            bus: format!("host fan {}", self.id),
            detail: e.to_string(),
        })?;
        *lock(&self.duty) = duty;
        Ok(())
    }
    fn duty(&self) -> wrale_hal::Result<Percent> {
        Ok(*lock(&self.duty))
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

/// A board: every subsystem of one device (`wrale_hal::Board`), plus the
/// simulator's controls when it is a `sim` board.
#[pyclass(module = "wrale._native", frozen)]
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

    fn sim(&self) -> PyResult<&SimBoard> {
        self.sim.as_ref().ok_or_else(|| {
            py_err(HalError::unsupported(format!(
                "simulator controls on a {} board",
                self.board.backend()
            )))
        })
    }
}

#[pymethods]
impl Board {
    /// Opens the backend a config names: JSON of `wrale_hal::BackendConfig`
    /// (`{"backend": "sim", "seed": 7, "faults": [...]}`, `{"backend": "linux"}`).
    #[staticmethod]
    fn open(py: Python<'_>, config_json: &str) -> PyResult<Board> {
        let config: BackendConfig = from_json("board config", config_json)?;
        match &config {
            BackendConfig::Sim(c) => {
                let sim = SimBoard::new(c).map_err(py_err)?;
                Ok(Board::wrap(sim.board(), Some(sim)))
            }
            _ => {
                let board = py.detach(|| wrale_hal::open(&config)).map_err(py_err)?;
                Ok(Board::wrap(board, None))
            }
        }
    }

    /// A board whose sensors and fans are Python callables: `temperatures` maps a
    /// sensor id to a function returning °C (`cpu` drives the safety engine),
    /// `fans` maps a fan id to a function taking the duty in percent.
    #[staticmethod]
    #[pyo3(signature = (model, temperatures, fans=None))]
    fn from_callbacks(
        model: &str,
        temperatures: &Bound<'_, PyDict>,
        fans: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Board> {
        let profile = BoardProfile::builtin(parse_model(model)?);
        let mut b = wrale_hal::Board::builder(profile, "host");
        for (k, v) in temperatures.iter() {
            let id: String = k.extract()?;
            let kind = SensorKind::for_sensor_id(&id);
            b = b.thermal(std::sync::Arc::new(HostThermal {
                id,
                kind,
                read: v.unbind(),
            }));
        }
        if let Some(fans) = fans {
            for (k, v) in fans.iter() {
                b = b.fan(std::sync::Arc::new(HostFan {
                    id: k.extract()?,
                    set: v.unbind(),
                    duty: Mutex::new(Percent::ZERO),
                }));
            }
        }
        Ok(Board::wrap(b.build(), None))
    }

    /// `sim`, `linux`, `rpi` or `host`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.board.backend()
    }

    /// The board profile as JSON.
    fn profile_json(&self) -> PyResult<String> {
        to_json(self.board.profile())
    }

    /// Reads every sensor once.
    fn sample(&self, py: Python<'_>) -> Sample {
        let board = &self.board;
        Sample {
            inner: py.detach(|| board.sample()),
        }
    }

    /// The board's clock (virtual on a `sim` board), ms since the Unix epoch.
    fn now_ms(&self) -> i64 {
        self.board.now().as_millis()
    }

    /// Advances a `sim` board's virtual time by `seconds`.
    fn step(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let sim = self.sim()?;
        let d = Duration::try_from_secs_f64(seconds).map_err(|e| {
            py_err(Failure::invalid_input(
                "invalid_argument",
                format!("seconds: {e}"),
            ))
        })?;
        py.detach(|| sim.run_for(d));
        Ok(())
    }

    /// Sets a `sim` board's CPU load.
    fn set_load(&self, load_pct: f64) -> PyResult<()> {
        self.sim()?.set_load(percent("load_pct", load_pct)?);
        Ok(())
    }

    /// Sets a `sim` board's room temperature.
    fn set_ambient(&self, celsius: f64) -> PyResult<()> {
        self.sim()?.set_ambient(Celsius(celsius));
        Ok(())
    }

    /// Injects a fault into a `sim` board: JSON of `wrale_hal::SimFault`
    /// (`{"kind": "fan_stall"}`).
    fn inject(&self, fault_json: &str) -> PyResult<()> {
        let fault: SimFault = from_json("fault", fault_json)?;
        self.sim()?.try_inject(fault).map_err(py_err)
    }

    /// Clears every injected fault of a `sim` board.
    fn clear_faults(&self) -> PyResult<()> {
        self.sim()?.clear_faults();
        Ok(())
    }

    /// Sets a `sim` board's security input (`case_open`, `tamper`, `motion`...).
    fn set_security(&self, kind: &str, active: bool) -> PyResult<()> {
        let kind: SecurityKind =
            from_json("security kind", &serde_json::Value::from(kind).to_string())?;
        self.sim()?.set_security(kind, active);
        Ok(())
    }

    /// The fan ids.
    fn fans(&self) -> Vec<String> {
        self.board
            .fans()
            .iter()
            .map(|f| f.id().to_owned())
            .collect()
    }

    /// Sets a fan's duty (bypasses the safety engine: the `Device` runtime and
    /// `SafetyEngine.check` are the checked path).
    fn set_fan(&self, py: Python<'_>, fan: &str, duty_pct: f64) -> PyResult<()> {
        let duty = percent("duty_pct", duty_pct)?;
        let board = &self.board;
        py.detach(|| board.fan(fan).and_then(|f| f.set_duty(duty)))
            .map_err(py_err)
    }

    /// A fan's current duty in percent.
    fn fan_duty(&self, fan: &str) -> PyResult<f64> {
        self.board
            .fan(fan)
            .and_then(|f| f.duty())
            .map(Percent::get)
            .map_err(py_err)
    }

    /// Drives a GPIO output (claimed on first use, released when the board is dropped).
    fn gpio_write(&self, py: Python<'_>, pin: u8, high: bool) -> PyResult<()> {
        let level = if high { Level::High } else { Level::Low };
        py.detach(|| self.pins.write(&self.board, pin, level))
            .map_err(py_err)
    }

    /// Reads a GPIO line (the driven level of an output this board claimed; else
    /// the line as an input without pull).
    fn gpio_read(&self, py: Python<'_>, pin: u8) -> PyResult<bool> {
        py.detach(|| self.pins.read(&self.board, pin))
            .map(|l| l == Level::High)
            .map_err(py_err)
    }

    /// Sets a hardware PWM output (claimed on first use).
    #[pyo3(signature = (pin, duty_pct, frequency_hz=None))]
    fn pwm(
        &self,
        py: Python<'_>,
        pin: u8,
        duty_pct: f64,
        frequency_hz: Option<f64>,
    ) -> PyResult<()> {
        let duty = percent("duty_pct", duty_pct)?;
        py.detach(|| {
            self.pins
                .pwm(&self.board, pin, duty, frequency_hz.map(Hertz))
        })
        .map_err(py_err)
    }

    /// Runs the hardware diagnostics; `options_json` is JSON of
    /// `wrale_hal::diag::DiagOptions` (only what differs). Returns the report as JSON.
    #[pyo3(signature = (options_json=None))]
    fn diagnostics(&self, py: Python<'_>, options_json: Option<&str>) -> PyResult<String> {
        let options: wrale_hal::diag::DiagOptions = match options_json {
            Some(t) => from_json("diagnostics options", t)?,
            None => Default::default(),
        };
        let board = &self.board;
        let report = py.detach(|| wrale_hal::diag::run(board, &options));
        to_json(&report)
    }

    fn __repr__(&self) -> String {
        format!(
            "Board(backend={:?}, model={:?})",
            self.board.backend(),
            self.board.profile().model.as_str()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Sample>()?;
    m.add_class::<Board>()?;
    Ok(())
}
