//! Telemetry: ingest of device batches, retention and downsampling, range
//! queries. Placeholder (helper "telemetry" fills this file in).

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::state::AppState;

/// `[telemetry]` config section (retention and downsampling keys).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {}

impl TelemetryConfig {
    /// Checks the section; returns the dotted key (`telemetry.<key>`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

/// The telemetry store, shared by the handlers and the hub (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Telemetry {}

impl Telemetry {
    /// Opens the telemetry store under `config.data.dir`.
    pub fn open(_config: &Config) -> anyhow::Result<Telemetry> {
        Ok(Telemetry {})
    }
}

/// Starts background work; stops when `state.shutdown` is cancelled.
pub fn start(_state: &AppState) {}

/// Appends this module's Prometheus lines to a `/metrics` answer.
pub fn render_metrics(_state: &AppState, _out: &mut String) {}
