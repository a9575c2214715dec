//! Temperature sensors from sysfs thermal zones and hwmon `temp*_input` files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use wrale_core::model::SensorKind;
use wrale_core::units::Celsius;

use super::sysfs::{self, HwmonDevice};
use crate::error::Result;
use crate::thermal::ThermalSensor;

/// Plausible range of a board temperature sensor, in millidegrees Celsius. Silicon
/// sensors are specified from about -40 °C and nothing on a Pi survives 150 °C, so a
/// value outside -60..=150 °C is a faulty read, not a temperature.
const MILLI_C_RANGE: std::ops::RangeInclusive<i64> = -60_000..=150_000;

/// A temperature read from a sysfs file holding millidegrees Celsius: a thermal
/// zone's `temp` or an hwmon `tempN_input`.
#[derive(Debug)]
pub struct SysfsThermal {
    id: String,
    kind: SensorKind,
    path: PathBuf,
}

impl SysfsThermal {
    /// A sensor named `id` reading millidegrees from `path`.
    pub fn new(id: impl Into<String>, kind: SensorKind, path: impl Into<PathBuf>) -> Self {
        Self {
            id: id.into(),
            kind,
            path: path.into(),
        }
    }

    /// The file this sensor reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ThermalSensor for SysfsThermal {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> SensorKind {
        self.kind
    }

    fn read(&self) -> Result<Celsius> {
        let milli = sysfs::read_int_in(&self.path, MILLI_C_RANGE)?;
        Ok(Celsius(milli as f64 / 1000.0))
    }
}

/// The id and kind of a thermal zone from its `type`: the SoC zone (`cpu-thermal`
/// on Pi 4/5 kernels, `cpu_thermal` on some) is `cpu`; a zone whose type names a
/// GPU is [`SensorKind::Gpu`]; anything else keeps its type as id.
fn zone_identity(zone_type: &str) -> (String, SensorKind) {
    let norm = zone_type.to_ascii_lowercase().replace('_', "-");
    if norm == "cpu-thermal" || norm == "soc-thermal" || norm == "bcm2835-thermal" {
        ("cpu".to_owned(), SensorKind::Cpu)
    } else if norm.contains("gpu") {
        (zone_type.to_owned(), SensorKind::Gpu)
    } else {
        (zone_type.to_owned(), SensorKind::Other)
    }
}

/// hwmon names get '-' replaced by '_' when the thermal core mirrors a zone
/// (`cpu-thermal` zone -> `cpu_thermal` hwmon).
fn hwmon_form(name: &str) -> String {
    name.replace('-', "_")
}

/// Every temperature sensor under `root`: one per thermal zone (in zone order), then
/// one per hwmon `tempN_input` of devices that are not just the thermal core's mirror
/// of a zone (ids `{hwmon name}/temp{N}`).
pub(crate) fn discover(root: &Path, hwmon: &[HwmonDevice]) -> Vec<SysfsThermal> {
    let mut out = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut zone_types: HashSet<String> = HashSet::new();

    for (idx, dir) in sysfs::indexed_entries(&root.join("sys/class/thermal"), "thermal_zone") {
        let zone_name = format!("thermal_zone{idx}");
        let (mut id, kind) = match sysfs::read_text(&dir.join("type")) {
            Ok(t) if !t.is_empty() => {
                zone_types.insert(hwmon_form(&t));
                zone_identity(&t)
            }
            _ => (zone_name.clone(), SensorKind::Other),
        };
        if ids.contains(&id) {
            id = zone_name;
        }
        ids.insert(id.clone());
        out.push(SysfsThermal::new(id, kind, dir.join("temp")));
    }

    let mut seen_names: HashSet<&str> = HashSet::new();
    for dev in hwmon {
        if zone_types.contains(&hwmon_form(&dev.name)) {
            continue;
        }
        // Two devices with one name (two NVMe drives): the second gets its index.
        let base = if seen_names.insert(dev.name.as_str()) {
            dev.name.clone()
        } else {
            let n = dev
                .dir
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("hwmon");
            format!("{}@{n}", dev.name)
        };
        for ch in sysfs::channels(&dev.dir, "temp", "_input") {
            let id = format!("{base}/temp{ch}");
            if ids.insert(id.clone()) {
                out.push(SysfsThermal::new(
                    id,
                    SensorKind::Other,
                    dev.dir.join(format!("temp{ch}_input")),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names() {
        assert_eq!(
            zone_identity("cpu-thermal"),
            ("cpu".into(), SensorKind::Cpu)
        );
        assert_eq!(
            zone_identity("cpu_thermal"),
            ("cpu".into(), SensorKind::Cpu)
        );
        assert_eq!(
            zone_identity("gpu-thermal"),
            ("gpu-thermal".into(), SensorKind::Gpu)
        );
        assert_eq!(
            zone_identity("rp1_adc"),
            ("rp1_adc".into(), SensorKind::Other)
        );
    }
}
