//! An in-process fleet device: a board, the safety engine and the edge agent
//! (`wrale_sync::embedded::EmbeddedDevice`) on the library's runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::json;
use wrale_client::models::EnrollRequest;
use wrale_core::model::DeviceInfo;
use wrale_core::policy::PolicyLayer;
use wrale_core::{ErrorCategory, ErrorReport};
use wrale_sync::AgentMode;
use wrale_sync::embedded::{DeviceConfig, EmbeddedDevice, FleetLink};

use crate::board::{Board, secs};
use crate::engine::Thresholds;
use crate::types::Alert;
use crate::{Decision, Sample, WraleError, runtime, spawn, to_json};

/// The file in a device's data directory that keeps its fleet credential.
const CREDENTIAL_FILE: &str = "fleet-credential";

/// How an in-process device runs.
#[derive(Debug, Clone, uniffi::Record)]
pub struct AgentOptions {
    /// The device id.
    pub device_id: String,
    /// Labels of the device.
    #[uniffi(default)]
    pub labels: HashMap<String, String>,
    /// Physical location (`site`, `rack`, `shelf`, `slot`).
    #[uniffi(default)]
    pub location: HashMap<String, String>,
    /// fleetd's URL (with `credential`, or with `enrollment_token` to enroll).
    #[uniffi(default)]
    pub fleet_url: Option<String>,
    /// The device credential (`wrd_...`).
    #[uniffi(default)]
    pub credential: Option<String>,
    /// The enrollment token (`wre_...`), for `Agent.enroll`.
    #[uniffi(default)]
    pub enrollment_token: Option<String>,
    /// Seconds between samples.
    #[uniffi(default = 1.0)]
    pub interval_s: f64,
    /// TOML policy layers on top of the board's floor.
    #[uniffi(default)]
    pub policies: Vec<String>,
    /// Advance a sim board's virtual clock by the interval per sample
    /// (default: on for a sim board).
    #[uniffi(default)]
    pub step_clock: Option<bool>,
}

/// The fleet link's state (`wrale_sync::AgentStatus`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AgentStatus {
    /// `normal` (synced with fleetd) or `degraded` (local only).
    pub mode: String,
    /// Whether the WebSocket to fleetd is up.
    pub connected: bool,
    /// Last sync, ms since the Unix epoch.
    pub last_sync_ms: Option<i64>,
    /// Changes not yet acknowledged by fleetd.
    pub sync_lag: u64,
    /// Reconnects so far.
    pub reconnects: u64,
    /// Telemetry points sent.
    pub telemetry_sent: u64,
    /// Telemetry points acknowledged.
    pub telemetry_acked: u64,
    /// Commands received.
    pub commands_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// The last error of the link.
    pub last_error: Option<String>,
}

/// What the device runtime did so far (`wrale_sync::embedded::DeviceStatus`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DeviceRunStatus {
    /// Samples taken.
    pub samples: u64,
    /// The last sample.
    pub last_sample: Option<Sample>,
    /// The decision on the last sample.
    pub last_decision: Option<Decision>,
    /// Actions applied to the board.
    pub actions_applied: u64,
    /// Actions that failed.
    pub action_errors: u64,
    /// Active alerts.
    pub alerts: Vec<Alert>,
    /// Whether workloads are throttled.
    pub throttled: bool,
    /// Whether GPIO outputs are locked.
    pub gpio_locked: bool,
    /// Why a shutdown was requested, if it was.
    pub shutdown_requested: Option<String>,
    /// The desired-config version applied.
    pub config_version: Option<i64>,
    /// Desired configs refused.
    pub configs_rejected: u64,
    /// Commands done.
    pub commands_done: u64,
    /// Commands refused.
    pub commands_refused: u64,
    /// Telemetry points written.
    pub telemetry_points: u64,
    /// The last error.
    pub last_error: Option<String>,
}

impl From<wrale_sync::embedded::DeviceStatus> for DeviceRunStatus {
    fn from(s: wrale_sync::embedded::DeviceStatus) -> Self {
        DeviceRunStatus {
            samples: s.samples,
            last_sample: s.last_sample.map(Sample::from),
            last_decision: s.last_decision.map(Decision::from),
            actions_applied: s.actions_applied,
            action_errors: s.action_errors,
            alerts: s.alerts.into_iter().map(Alert::from).collect(),
            throttled: s.throttled,
            gpio_locked: s.gpio_locked,
            shutdown_requested: s.shutdown_requested,
            config_version: s.config_version,
            configs_rejected: s.configs_rejected,
            commands_done: s.commands_done,
            commands_refused: s.commands_refused,
            telemetry_points: s.telemetry_points,
            last_error: s.last_error,
        }
    }
}

/// Everything `EmbeddedDevice::start` needs.
struct Plan {
    board: wrale_hal::Board,
    dir: PathBuf,
    info: DeviceInfo,
    config: DeviceConfig,
}

impl Plan {
    fn new(board: &Board, dir: &str, o: &AgentOptions) -> Result<Plan, WraleError> {
        let info: DeviceInfo = serde_json::from_value(json!({
            "id": o.device_id,
            "model": board.model(),
            "labels": o.labels,
            "location": o.location,
            "agent_version": format!("wrale-uniffi {}", env!("CARGO_PKG_VERSION")),
        }))
        .map_err(|e| WraleError::invalid_argument(format!("device: {e}")))?;
        let layers = o
            .policies
            .iter()
            .map(|text| PolicyLayer::from_toml(text, "<kotlin>"))
            .collect::<Result<Vec<_>, _>>()?;
        let interval = secs("interval_s", o.interval_s)?;
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

    /// Starts the device (inside the library's runtime).
    fn start(self, fleet: Option<FleetLink>) -> Result<Arc<Agent>, WraleError> {
        let id = self.info.id.to_string();
        let _guard = runtime()?.enter();
        let dev = EmbeddedDevice::start(self.board, &self.dir, self.info, fleet, self.config)?;
        Ok(Arc::new(Agent {
            inner: Mutex::new(Some(dev)),
            id,
        }))
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> WraleError {
    ErrorReport::new(
        ErrorCategory::Sync,
        "io",
        format!("{}: {e}", path.display()),
    )
    .into()
}

fn read_credential(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn write_credential(path: &Path, credential: &str) -> Result<(), WraleError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| io_error(path, &e))?;
    f.write_all(credential.as_bytes())
        .map_err(|e| io_error(path, &e))
}

/// A running in-process device.
#[derive(Debug, uniffi::Object)]
pub struct Agent {
    inner: Mutex<Option<EmbeddedDevice>>,
    id: String,
}

impl Agent {
    fn lock(&self) -> MutexGuard<'_, Option<EmbeddedDevice>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&EmbeddedDevice) -> Result<T, WraleError>,
    ) -> Result<T, WraleError> {
        match self.lock().as_ref() {
            Some(d) => f(d),
            None => Err(ErrorReport::invalid_input(
                "stopped",
                format!("device {} was stopped", self.id),
            )
            .into()),
        }
    }
}

#[uniffi::export]
impl Agent {
    /// Starts a device on `board` with its twin and telemetry ring in
    /// `data_dir`. With `fleet_url` and `credential` it syncs with fleetd,
    /// else it runs degraded (local only).
    #[uniffi::constructor]
    pub fn start(
        board: Arc<Board>,
        data_dir: String,
        options: AgentOptions,
    ) -> Result<Arc<Agent>, WraleError> {
        let plan = Plan::new(&board, &data_dir, &options)?;
        let fleet = match (&options.fleet_url, &options.credential) {
            (Some(url), Some(cred)) => {
                Some(FleetLink::for_fleetd(url, &options.device_id, cred.clone()))
            }
            (None, None) => None,
            _ => {
                return Err(WraleError::invalid_argument(
                    "fleet_url and credential go together",
                ));
            }
        };
        plan.start(fleet)
    }

    /// Enrolls with fleetd (once: the credential is kept in `data_dir`, mode
    /// 0600) and starts the device synced to it. Needs `fleet_url` and
    /// `enrollment_token` (unless a credential is already kept).
    #[uniffi::constructor]
    pub async fn enroll(
        board: Arc<Board>,
        data_dir: String,
        options: AgentOptions,
    ) -> Result<Arc<Agent>, WraleError> {
        let plan = Plan::new(&board, &data_dir, &options)?;
        let model = board.model();
        spawn(async move {
            let url = options
                .fleet_url
                .clone()
                .ok_or_else(|| WraleError::invalid_argument("enroll needs fleet_url"))?;
            std::fs::create_dir_all(&plan.dir).map_err(|e| io_error(&plan.dir, &e))?;
            let path = plan.dir.join(CREDENTIAL_FILE);
            let credential = match read_credential(&path) {
                Some(c) => c,
                None => {
                    let token = options.enrollment_token.clone().ok_or_else(|| {
                        WraleError::invalid_argument("enroll needs enrollment_token")
                    })?;
                    let req: EnrollRequest = serde_json::from_value(json!({
                        "token": token,
                        "device_id": options.device_id,
                        "model": model,
                        "labels": options.labels,
                        "location": options.location,
                        "agent_version": format!("wrale-uniffi {}", env!("CARGO_PKG_VERSION")),
                    }))
                    .map_err(|e| WraleError::invalid_argument(format!("enroll request: {e}")))?;
                    let client = wrale_client::Client::new(&url, None)?;
                    let enrolled = client.enroll(&req).await?;
                    write_credential(&path, &enrolled.credential)?;
                    enrolled.credential
                }
            };
            plan.start(Some(FleetLink::for_fleetd(
                &url,
                &options.device_id,
                credential,
            )))
        })
        .await
    }

    /// The device id.
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.lock().is_some()
    }

    /// What the runtime did so far.
    pub fn status(&self) -> Result<DeviceRunStatus, WraleError> {
        self.with(|d| Ok(d.status().into()))
    }

    /// The fleet link's state.
    pub fn agent_status(&self) -> Result<AgentStatus, WraleError> {
        self.with(|d| {
            let s = d.agent_status();
            Ok(AgentStatus {
                mode: match s.mode {
                    AgentMode::Normal => "normal".to_owned(),
                    _ => "degraded".to_owned(),
                },
                connected: s.connected,
                last_sync_ms: s.last_sync.map(|t| t.as_millis()),
                sync_lag: u64::try_from(s.sync_lag).unwrap_or(u64::MAX),
                reconnects: s.reconnects,
                telemetry_sent: s.telemetry_sent,
                telemetry_acked: s.telemetry_acked,
                commands_received: s.commands_received,
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                last_error: s.last_error,
            })
        })
    }

    /// The twin's `desired` section as JSON.
    pub fn desired_json(&self) -> Result<String, WraleError> {
        self.with(|d| to_json(&d.agent().with_twin(|t| t.desired())?))
    }

    /// The twin's `reported` section as JSON.
    pub fn reported_json(&self) -> Result<String, WraleError> {
        self.with(|d| to_json(&d.agent().with_twin(|t| t.reported())?))
    }

    /// The thermal thresholds of the policy in force.
    pub fn thresholds(&self) -> Result<Thresholds, WraleError> {
        self.with(|d| Ok(Thresholds::of(&d.policy())))
    }

    /// Stops sampling and the agent (the twin is persisted first). Idempotent.
    pub async fn stop(&self) -> Result<(), WraleError> {
        let dev = self.lock().take();
        if let Some(d) = dev {
            spawn(async move { Ok(d.stop().await?) }).await?;
        }
        Ok(())
    }
}
