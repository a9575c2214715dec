//! A fan driven by the kernel's `pwm-fan` driver (hwmon `pwmfan`; the Pi 5 fan
//! header): `pwm1` 0-255, optional `pwm1_enable`, tachometer in `fan1_input`.
//!
//! On the Pi 5 the same driver is a thermal cooling device: the firmware's fan
//! curve (device-tree trip points) may write `pwm1` again when the SoC temperature
//! crosses a trip. Wrale's own duty is therefore re-applied by whoever drives the
//! fan (the safety engine does so on every sample).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use wrale_core::units::{Percent, Rpm};

use super::sysfs::{self, HwmonDevice};
use crate::error::Result;
use crate::thermal::Fan;

/// Largest raw `pwm1` value (100 % duty).
const PWM_MAX: i64 = 255;

/// A fan on an hwmon `pwmfan` device.
///
/// Fail-safe: once Wrale has set a duty (taking the fan over from the kernel's
/// automatic control, `pwm1_enable` = 1), dropping the fan writes its safe duty
/// (the board profile's `fan.safe_duty_pct`), so a daemon that goes away leaves
/// the fan running, not stopped or stuck at a low duty. A fan Wrale never drove is
/// left alone on drop: the kernel's own fan curve is still in charge of it.
#[derive(Debug)]
pub struct HwmonFan {
    id: String,
    dir: PathBuf,
    has_tach: bool,
    safe_duty: Percent,
    /// Whether Wrale has written a duty (then it owns the fan's safety on drop).
    driven: AtomicBool,
}

impl HwmonFan {
    /// A fan named `id` on the hwmon device in `dir`, going to `safe_duty` on drop.
    pub fn new(id: impl Into<String>, dir: impl Into<PathBuf>, safe_duty: Percent) -> Self {
        let dir = dir.into();
        let has_tach = dir.join("fan1_input").exists();
        Self {
            id: id.into(),
            dir,
            has_tach,
            safe_duty,
            driven: AtomicBool::new(false),
        }
    }

    /// The hwmon directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_duty(&self, duty: Percent) -> Result<()> {
        let enable = self.dir.join("pwm1_enable");
        if enable.exists() {
            // 1: PWM enabled, under user-space control.
            sysfs::write_text(&enable, "1")?;
        }
        sysfs::write_text(&self.dir.join("pwm1"), &duty_to_raw(duty).to_string())
    }
}

/// Duty in percent to the nearest raw 0-255 value.
fn duty_to_raw(duty: Percent) -> i64 {
    (duty.fraction() * PWM_MAX as f64).round() as i64
}

impl Fan for HwmonFan {
    fn id(&self) -> &str {
        &self.id
    }

    fn set_duty(&self, duty: Percent) -> Result<()> {
        // Marked before writing: even a half-done write (enable without duty) has
        // taken the fan away from the kernel.
        self.driven.store(true, Ordering::SeqCst);
        self.write_duty(duty)
    }

    fn duty(&self) -> Result<Percent> {
        let raw = sysfs::read_int_in(&self.dir.join("pwm1"), 0..=PWM_MAX)?;
        Ok(Percent::saturating(raw as f64 * 100.0 / PWM_MAX as f64))
    }

    fn has_tach(&self) -> bool {
        self.has_tach
    }

    fn rpm(&self) -> Result<Rpm> {
        // No fan that fits a Pi turns faster than ~30 000 rpm.
        let rpm = sysfs::read_int_in(&self.dir.join("fan1_input"), 0..=30_000)?;
        Ok(Rpm(rpm as f64))
    }
}

impl Drop for HwmonFan {
    fn drop(&mut self) {
        // Fail-safe; nothing to report to from a destructor, and nothing better to do
        // if the write fails.
        if self.driven.load(Ordering::SeqCst) {
            let _ = self.write_duty(self.safe_duty);
        }
    }
}

/// The `pwmfan` hwmon devices, as fans `fan0`, `fan1`, ...
pub(crate) fn discover(hwmon: &[HwmonDevice], safe_duty: Percent) -> Vec<HwmonFan> {
    hwmon
        .iter()
        .filter(|d| d.name == "pwmfan" && d.dir.join("pwm1").exists())
        .enumerate()
        .map(|(i, d)| HwmonFan::new(format!("fan{i}"), d.dir.clone(), safe_duty))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duty_rounds_to_raw() {
        assert_eq!(duty_to_raw(Percent::ZERO), 0);
        assert_eq!(duty_to_raw(Percent::FULL), 255);
        assert_eq!(duty_to_raw(Percent::saturating(40.0)), 102);
        assert_eq!(duty_to_raw(Percent::saturating(29.4)), 75);
    }
}
