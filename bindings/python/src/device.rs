//! An in-process fleet device: a board, the safety engine and the edge agent
//! (`wrale_sync::embedded::EmbeddedDevice`) on the shared runtime.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use serde_json::json;
use wrale_client::models::EnrollRequest;
use wrale_core::model::DeviceInfo;
use wrale_core::policy::PolicyLayer;
use wrale_sync::AgentMode;
use wrale_sync::credential::{CREDENTIAL_FILE, load_or_enroll};
use wrale_sync::embedded::{DeviceConfig, EmbeddedDevice, FleetLink};

use crate::board::Board;
use crate::errors::{Failure, py_err};
use crate::{block_on, from_json, runtime, to_json};

fn secs(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|e| Failure::invalid_input("invalid_argument", format!("{what}: {e}")).into())
}

/// A running in-process device.
#[pyclass(module = "wrale._native", frozen)]
#[derive(Debug)]
pub struct Device {
    inner: Mutex<Option<EmbeddedDevice>>,
    id: String,
}

impl Device {
    fn lock(&self) -> MutexGuard<'_, Option<EmbeddedDevice>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T>(&self, f: impl FnOnce(&EmbeddedDevice) -> PyResult<T>) -> PyResult<T> {
        match self.lock().as_ref() {
            Some(d) => f(d),
            None => Err(Failure::new(
                wrale_core::ErrorCategory::InvalidInput,
                "stopped",
                format!("device {} was stopped", self.id),
            )
            .into()),
        }
    }
}

#[pymethods]
impl Device {
    /// Starts a device on `board` with its twin and telemetry ring in `data_dir`.
    /// `device_json` is JSON of `DeviceInfo`; with `fleet_url` and `credential`
    /// it syncs with fleetd, else it runs degraded. `policies` are TOML policy
    /// layers `(text, source_name)`. `step_clock` (default: for a `sim` board)
    /// advances the board's virtual clock by `interval_s` per sample.
    #[staticmethod]
    #[pyo3(signature = (board, data_dir, device_json, fleet_url=None, credential=None, interval_s=1.0, policies=None, step_clock=None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        board: &Board,
        data_dir: PathBuf,
        device_json: &str,
        fleet_url: Option<&str>,
        credential: Option<String>,
        interval_s: f64,
        policies: Option<Vec<(String, String)>>,
        step_clock: Option<bool>,
    ) -> PyResult<Device> {
        let device: DeviceInfo = from_json("device", device_json)?;
        let id = device.id.to_string();
        let layers = policies
            .unwrap_or_default()
            .iter()
            .map(|(text, source)| PolicyLayer::from_toml(text, source).map_err(py_err))
            .collect::<PyResult<Vec<_>>>()?;
        let interval = secs("interval_s", interval_s)?;
        let config = DeviceConfig::sampling_every(
            interval,
            step_clock.unwrap_or_else(|| board.is_virtual_sim()),
            layers,
        );
        let fleet = match (fleet_url, credential) {
            (Some(url), Some(cred)) => Some(FleetLink::for_fleetd(url, &id, cred)),
            (None, None) => None,
            _ => {
                return Err(Failure::invalid_input(
                    "invalid_argument",
                    "fleet_url and credential go together",
                )
                .into());
            }
        };
        let rt = runtime()?;
        let _enter = rt.enter();
        let dev = EmbeddedDevice::start(board.board.clone(), &data_dir, device, fleet, config)
            .map_err(py_err)?;
        Ok(Device {
            inner: Mutex::new(Some(dev)),
            id,
        })
    }

    /// Enrolls once (`wrale_sync::credential::load_or_enroll`): the credential
    /// stored in `data_dir`, or a new one from fleetd at `fleet_url` for the
    /// enroll request (JSON of `EnrollRequest`), written there with mode 0600.
    #[staticmethod]
    fn load_or_enroll(
        py: Python<'_>,
        data_dir: PathBuf,
        fleet_url: &str,
        request_json: &str,
    ) -> PyResult<String> {
        let request: EnrollRequest = from_json("enroll request", request_json)?;
        let client = wrale_client::Client::new(fleet_url, None).map_err(py_err)?;
        let path = data_dir.join(CREDENTIAL_FILE);
        block_on(py, async move {
            load_or_enroll(&path, || async {
                let enrolled = client.enroll(&request).await?;
                Ok(enrolled.credential)
            })
            .await
            .map_err(py_err)
        })
    }

    /// The device id.
    #[getter]
    fn id(&self) -> String {
        self.id.clone()
    }

    /// What the runtime did so far, as JSON (`DeviceStatus`).
    fn status_json(&self) -> PyResult<String> {
        self.with(|d| to_json(&d.status()))
    }

    /// The agent's connection state and counters, as JSON.
    fn agent_status_json(&self) -> PyResult<String> {
        self.with(|d| {
            let s = d.agent_status();
            to_json(&json!({
                "mode": match s.mode { AgentMode::Normal => "normal", _ => "degraded" },
                "connected": s.connected,
                "last_sync_ms": s.last_sync.map(|t| t.as_millis()),
                "sync_lag": s.sync_lag,
                "reconnects": s.reconnects,
                "telemetry_sent": s.telemetry_sent,
                "telemetry_acked": s.telemetry_acked,
                "commands_received": s.commands_received,
                "bytes_sent": s.bytes_sent,
                "bytes_received": s.bytes_received,
                "last_error": s.last_error,
            }))
        })
    }

    /// The twin's `desired` section as JSON.
    fn desired_json(&self) -> PyResult<String> {
        self.with(|d| {
            let v = d.agent().with_twin(|t| t.desired()).map_err(py_err)?;
            to_json(&v)
        })
    }

    /// The twin's `reported` section as JSON.
    fn reported_json(&self) -> PyResult<String> {
        self.with(|d| {
            let v = d.agent().with_twin(|t| t.reported()).map_err(py_err)?;
            to_json(&v)
        })
    }

    /// The policy's thermal thresholds in force, JSON `{"warn_c", "throttle_c", "critical_c"}`.
    fn thresholds_json(&self) -> PyResult<String> {
        self.with(|d| {
            let p = d.policy();
            let t = &p.limits().thermal;
            to_json(&json!({
                "warn_c": t.warn_c.get(),
                "throttle_c": t.throttle_c.get(),
                "critical_c": t.critical_c.get(),
            }))
        })
    }

    /// Whether it is running.
    #[getter]
    fn running(&self) -> bool {
        self.lock().is_some()
    }

    /// Stops sampling and the agent (the twin is persisted first). Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let dev = self.lock().take();
        match dev {
            Some(d) => block_on(py, async move { d.stop().await.map_err(py_err) }),
            None => Ok(()),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Device(id={:?}, running={})",
            self.id,
            self.lock().is_some()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CREDENTIAL_FILE", CREDENTIAL_FILE)?;
    m.add_class::<Device>()
}
