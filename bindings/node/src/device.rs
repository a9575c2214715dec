//! An in-process fleet device: a board, the safety engine and the edge agent
//! (`wrale_sync::embedded::EmbeddedDevice`) on napi's tokio runtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use napi::Env;
use napi::bindgen_prelude::{PromiseRaw, within_runtime_if_available};
use napi_derive::napi;
use serde_json::{Value, json};
use wrale_client::models::EnrollRequest;
use wrale_core::model::DeviceInfo;
use wrale_core::policy::PolicyLayer;
use wrale_sync::AgentMode;
use wrale_sync::credential::{CREDENTIAL_FILE, load_or_enroll};
use wrale_sync::embedded::{DeviceConfig, EmbeddedDevice, FleetLink};

use crate::board::{Board, secs};
use crate::engine::Thresholds;
use crate::errors::{Failure, OrThrow};
use crate::{from_value, promise, to_value};

/// How a device runs (`deviceId` is required).
#[napi(object)]
#[derive(Debug, Default)]
pub struct DeviceOptions {
    /// The device id.
    pub device_id: String,
    /// Labels of the device.
    pub labels: Option<HashMap<String, String>>,
    /// Physical location (`site`, `rack`, `shelf`, ...).
    pub location: Option<HashMap<String, String>>,
    /// fleetd's URL (with `credential`, or with `enrollmentToken` for `enroll`).
    pub fleet_url: Option<String>,
    /// The device credential (`wrd_...`).
    pub credential: Option<String>,
    /// The enrollment token (`wre_...`), for `Device.enroll`.
    pub enrollment_token: Option<String>,
    /// Seconds between samples (default 1).
    pub interval_s: Option<f64>,
    /// TOML policy layers on top of the board's floor.
    pub policies: Option<Vec<String>>,
    /// Advance a sim board's virtual clock by the interval per sample
    /// (default: on for a sim board).
    pub step_clock: Option<bool>,
}

/// Everything `EmbeddedDevice::start` needs, prepared on the JS thread.
struct Plan {
    board: wrale_hal::Board,
    dir: PathBuf,
    info: DeviceInfo,
    config: DeviceConfig,
}

impl Plan {
    fn new(board: &Board, dir: &str, o: &DeviceOptions) -> Result<Plan, Failure> {
        let info: DeviceInfo = from_value(
            "device",
            json!({
                "id": o.device_id,
                "model": board.model(),
                "labels": o.labels.clone().unwrap_or_default(),
                "location": o.location.clone().unwrap_or_default(),
                "agent_version": format!("wrale-node {}", env!("CARGO_PKG_VERSION")),
            }),
        )?;
        let layers = o
            .policies
            .iter()
            .flatten()
            .map(|text| PolicyLayer::from_toml(text, "<node>"))
            .collect::<Result<Vec<_>, _>>()?;
        let interval = secs("intervalS", o.interval_s.unwrap_or(1.0))?;
        let config = DeviceConfig::sampling_every(
            interval,
            o.step_clock.unwrap_or_else(|| board.is_virtual_sim()),
            layers,
        );
        Ok(Plan {
            board: board.board.clone(),
            dir: PathBuf::from(dir),
            info,
            config,
        })
    }

    fn start(self, fleet: Option<FleetLink>) -> Result<Device, Failure> {
        let id = self.info.id.to_string();
        let dev = EmbeddedDevice::start(self.board, &self.dir, self.info, fleet, self.config)?;
        Ok(Device {
            inner: Arc::new(Mutex::new(Some(dev))),
            id,
        })
    }
}

/// A running in-process device.
#[napi]
#[derive(Debug)]
pub struct Device {
    inner: Arc<Mutex<Option<EmbeddedDevice>>>,
    id: String,
}

fn lock(m: &Mutex<Option<EmbeddedDevice>>) -> MutexGuard<'_, Option<EmbeddedDevice>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Device {
    fn with<T>(
        &self,
        env: &Env,
        f: impl FnOnce(&EmbeddedDevice) -> Result<T, Failure>,
    ) -> napi::Result<T> {
        let r = match lock(&self.inner).as_ref() {
            Some(d) => f(d),
            None => Err(Failure::new(
                wrale_core::ErrorCategory::InvalidInput,
                "stopped",
                format!("device {} was stopped", self.id),
            )),
        };
        r.or_throw(env)
    }
}

#[napi]
impl Device {
    /// Starts a device on `board` with its twin and telemetry ring in `dataDir`.
    /// With `fleetUrl` and `credential` it syncs with fleetd, else it runs degraded.
    #[napi(factory)]
    pub fn start(
        env: Env,
        board: &Board,
        data_dir: String,
        options: DeviceOptions,
    ) -> napi::Result<Device> {
        let r = (|| -> Result<Device, Failure> {
            let plan = Plan::new(board, &data_dir, &options)?;
            let fleet = match (&options.fleet_url, &options.credential) {
                (Some(url), Some(cred)) => {
                    Some(FleetLink::for_fleetd(url, &options.device_id, cred.clone()))
                }
                (None, None) => None,
                _ => {
                    return Err(Failure::invalid_input(
                        "invalid_argument",
                        "fleetUrl and credential go together",
                    ));
                }
            };
            within_runtime_if_available(|| plan.start(fleet))
        })();
        r.or_throw(&env)
    }

    /// Enrolls with fleetd (once: the credential is kept in `dataDir`, mode
    /// 0600) and starts the device synced to it. Needs `fleetUrl` and
    /// `enrollmentToken` (unless a credential is already kept).
    #[napi(ts_return_type = "Promise<Device>")]
    pub fn enroll<'env>(
        env: &'env Env,
        board: &Board,
        data_dir: String,
        options: DeviceOptions,
    ) -> napi::Result<PromiseRaw<'env, Device>> {
        let plan = Plan::new(board, &data_dir, &options);
        let model = board.model();
        promise(env, async move {
            let plan = plan?;
            let url = options.fleet_url.clone().ok_or_else(|| {
                Failure::invalid_input("invalid_argument", "enroll needs fleetUrl")
            })?;
            let path = plan.dir.join(CREDENTIAL_FILE);
            let credential = load_or_enroll(&path, || async {
                let token = options.enrollment_token.clone().ok_or_else(|| {
                    Failure::invalid_input("invalid_argument", "enroll needs enrollmentToken")
                })?;
                let req: EnrollRequest = from_value(
                    "enroll request",
                    json!({
                        "token": token,
                        "device_id": options.device_id,
                        "model": model,
                        "labels": options.labels.clone().unwrap_or_default(),
                        "location": options.location.clone().unwrap_or_default(),
                        "agent_version": format!("wrale-node {}", env!("CARGO_PKG_VERSION")),
                    }),
                )?;
                let client = wrale_client::Client::new(&url, None)?;
                Ok(client.enroll(&req).await?.credential)
            })
            .await?;
            plan.start(Some(FleetLink::for_fleetd(
                &url,
                &options.device_id,
                credential,
            )))
        })
    }

    /// The device id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// Whether it is running.
    #[napi(getter)]
    pub fn running(&self) -> bool {
        lock(&self.inner).is_some()
    }

    /// What the runtime did so far (`DeviceStatus`: samples, last sample and
    /// decision, actions applied, alerts, flags).
    #[napi]
    pub fn status(&self, env: Env) -> napi::Result<Value> {
        self.with(&env, |d| to_value(&d.status()))
    }

    /// The fleet link: `mode`, `connected`, telemetry and sync counters.
    #[napi]
    pub fn agent_status(&self, env: Env) -> napi::Result<Value> {
        self.with(&env, |d| {
            let s = d.agent_status();
            Ok(json!({
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

    /// The twin's `desired` section.
    #[napi]
    pub fn desired(&self, env: Env) -> napi::Result<Value> {
        self.with(&env, |d| to_value(&d.agent().with_twin(|t| t.desired())?))
    }

    /// The twin's `reported` section.
    #[napi]
    pub fn reported(&self, env: Env) -> napi::Result<Value> {
        self.with(&env, |d| to_value(&d.agent().with_twin(|t| t.reported())?))
    }

    /// The thermal thresholds of the policy in force.
    #[napi]
    pub fn thresholds(&self, env: Env) -> napi::Result<Thresholds> {
        self.with(&env, |d| Ok(Thresholds::of(&d.policy())))
    }

    /// Stops sampling and the agent (the twin is persisted first). Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let dev = lock(&self.inner).take();
        promise(env, async move {
            if let Some(d) = dev {
                d.stop().await?;
            }
            Ok(())
        })
    }
}
