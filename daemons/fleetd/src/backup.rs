//! `fleetd backup --to FILE` and `fleetd restore --from FILE`. Placeholder
//! (helper "telemetry" fills this file in).

use std::path::Path;

use crate::config::Config;

/// Writes a consistent snapshot of every store in `config.data.dir` to `to`.
pub fn backup(_config: &Config, to: &Path) -> anyhow::Result<()> {
    anyhow::bail!("backup to {} is not implemented yet", to.display())
}

/// Restores a snapshot made by [`backup`] into `config.data.dir` (fleetd stopped).
pub fn restore(_config: &Config, from: &Path) -> anyhow::Result<()> {
    anyhow::bail!("restore from {} is not implemented yet", from.display())
}
