//! The twin hub. Placeholder (helper "wiring" fills this file in).

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::state::AppState;

/// `[hub]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Twins kept loaded in memory.
    pub max_resident: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { max_resident: 1000 }
    }
}

impl HubConfig {
    /// Checks the section; returns the dotted key (`hub.<key>`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_resident == 0 {
            return Err(("hub.max_resident".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The hub, shared by the handlers (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Hub {}

impl Hub {
    /// A hub for `config`.
    pub fn new(_config: &Config) -> anyhow::Result<Hub> {
        Ok(Hub {})
    }

    /// Closes the live sync session of `device`, if any.
    pub fn disconnect(&self, _device: &wrale_core::DeviceId) {}

    /// Number of devices connected now.
    pub fn connected(&self) -> usize {
        0
    }
}

/// Starts background work; stops when `state.shutdown` is cancelled.
pub fn start(_state: &AppState) {}

/// Appends this module's Prometheus lines to a `/metrics` answer.
pub fn render_metrics(_state: &AppState, _out: &mut String) {}
