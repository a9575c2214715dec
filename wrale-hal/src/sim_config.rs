//! Settings of the `sim` backend (always compiled, so configs parse in any build).

use serde::{Deserialize, Serialize};
use wrale_core::board::BoardModel;

/// Settings of the `sim` backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Board model whose profile parameterises the physics.
    pub model: BoardModel,
    /// Seed of the noise generator: same seed and script, same readings.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            model: BoardModel::Pi4B,
            seed: 0,
        }
    }
}
