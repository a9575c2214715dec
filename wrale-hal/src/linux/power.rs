//! Supply monitoring: the `rpi_volt` under-voltage alarm, the firmware throttle
//! word, and an INA2xx-family hwmon for voltage, current and power.
//!
//! Under-voltage comes from hwmon `rpi_volt` `in0_lcrit_alarm`, not from
//! `vcgencmd`: the raspberrypi-hwmon driver polls the firmware every 2 s asking it
//! to clear the sticky bits, so bit 16 of any other read only means "since the
//! driver's last poll" (shared/PHYSICS.md 1.3). The alarm is the driver's latch of
//! that bit and is the authority for `under_voltage_occurred`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wrale_core::model::ThrottleFlags;
use wrale_core::units::{Amps, Volts, Watts};

use super::sysfs::{self, HwmonDevice};
use crate::board::Clock;
use crate::error::{HalError, Result};
use crate::events::{EventHub, HalEvent};
use crate::power::PowerMonitor;

/// Where Raspberry Pi kernels have put the firmware's `get_throttled` attribute.
const KNOWN_THROTTLE_PATHS: &[&str] = &[
    "sys/devices/platform/soc/soc:firmware/get_throttled",
    "sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled",
    "sys/devices/platform/axi/axi:firmware/get_throttled",
];

/// Finds the firmware's `get_throttled` attribute: the known paths first, then any
/// `sys/devices/platform/*/*firmware*/get_throttled` or
/// `sys/devices/platform/*firmware*/get_throttled` (the node name carries the SoC's
/// bus address, which differs between boards).
pub(crate) fn find_get_throttled(root: &Path) -> Option<PathBuf> {
    for p in KNOWN_THROTTLE_PATHS {
        let p = root.join(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let platform = root.join("sys/devices/platform");
    let mut candidates = Vec::new();
    for level1 in read_dir_sorted(&platform) {
        if is_firmware_node(&level1) {
            candidates.push(level1.join("get_throttled"));
        }
        for level2 in read_dir_sorted(&level1) {
            if is_firmware_node(&level2) {
                candidates.push(level2.join("get_throttled"));
            }
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn is_firmware_node(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("firmware"))
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// Parses the throttle word. The kernel prints it with `%x` (hex without a
/// prefix, e.g. `50005`); a `0x` prefix is accepted too. Bits outside the eight
/// documented flags are allowed (future firmware) but ignored by the decoding.
pub(crate) fn parse_throttle_word(sensor: &str, text: &str) -> Result<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HalError::sensor_fault(
            sensor,
            format!("not a hex throttle word: {}", sysfs::excerpt(t)),
        ));
    }
    u32::from_str_radix(digits, 16).map_err(|_| {
        HalError::sensor_fault(
            sensor,
            format!("throttle word wider than 32 bits: {}", sysfs::excerpt(t)),
        )
    })
}

/// Supply monitor of a Linux board: throttle flags from the firmware and the
/// `rpi_volt` alarm; voltage, current and power from an INA2xx hwmon when fitted.
#[derive(Debug)]
pub struct SysfsPower {
    /// `in0_lcrit_alarm` of hwmon `rpi_volt`.
    undervoltage_alarm: Option<PathBuf>,
    /// The firmware's `get_throttled`.
    throttle_word: Option<PathBuf>,
    /// Directory of an INA2xx hwmon device (`in1_input` mV, `curr1_input` mA,
    /// `power1_input` µW).
    ina: Option<PathBuf>,
    /// Where under-voltage changes seen by [`PowerMonitor::throttle`] are published.
    events: EventHub,
    clock: Arc<dyn Clock>,
    /// Under-voltage as last read (`None` before the first good read).
    last_under_voltage: Mutex<Option<bool>>,
}

/// Whether an hwmon name belongs to the kernel's ina2xx driver family (ina209,
/// ina219, ina220, ina226, ina230, ina231, ina238, ina260), whose channel layout
/// is the one read here. INA3221 (three channels, other layout) is not.
fn is_ina2xx(name: &str) -> bool {
    name.strip_prefix("ina2")
        .is_some_and(|rest| rest.len() == 2 && rest.bytes().all(|b| b.is_ascii_digit()))
}

impl SysfsPower {
    /// Finds the sources under `root`. Returns `None` when there is none at all
    /// (then the board has no power monitor and the sample shows Missing).
    /// Under-voltage changes observed while reading the flags are published on
    /// `events` as [`HalEvent::UnderVoltage`], stamped by `clock`.
    pub(crate) fn discover(
        root: &Path,
        hwmon: &[HwmonDevice],
        events: EventHub,
        clock: Arc<dyn Clock>,
    ) -> Option<Self> {
        let undervoltage_alarm = hwmon
            .iter()
            .find(|d| d.name == "rpi_volt")
            .map(|d| d.dir.join("in0_lcrit_alarm"));
        let throttle_word = find_get_throttled(root);
        let ina = hwmon
            .iter()
            .find(|d| is_ina2xx(&d.name))
            .map(|d| d.dir.clone());
        if undervoltage_alarm.is_none() && throttle_word.is_none() && ina.is_none() {
            return None;
        }
        Some(Self {
            undervoltage_alarm,
            throttle_word,
            ina,
            events,
            clock,
            last_under_voltage: Mutex::new(None),
        })
    }

    fn ina_file(&self, file: &str, what: &str) -> Result<PathBuf> {
        self.ina
            .as_ref()
            .map(|d| d.join(file))
            .ok_or_else(|| HalError::unsupported(format!("{what}: no INA2xx power monitor")))
    }
}

impl PowerMonitor for SysfsPower {
    fn voltage(&self) -> Result<Volts> {
        // Bus voltage in mV; the INA2xx family measures up to 26-36 V.
        let mv = sysfs::read_int_in(&self.ina_file("in1_input", "supply voltage")?, 0..=40_000)?;
        Ok(Volts(mv as f64 / 1000.0))
    }

    fn current(&self) -> Result<Amps> {
        // mA, signed (a reversed shunt reads negative).
        let ma = sysfs::read_int_in(
            &self.ina_file("curr1_input", "supply current")?,
            -100_000..=100_000,
        )?;
        Ok(Amps(ma as f64 / 1000.0))
    }

    fn power(&self) -> Result<Watts> {
        // µW; a Pi board and its HATs draw well under 1 kW.
        let uw = sysfs::read_int_in(
            &self.ina_file("power1_input", "supply power")?,
            0..=1_000_000_000,
        )?;
        Ok(Watts(uw as f64 / 1_000_000.0))
    }

    fn throttle(&self) -> Result<ThrottleFlags> {
        // A source whose file has vanished counts as absent; garbage in either is a fault.
        let alarm = optional(self.undervoltage_alarm.as_deref(), |p| {
            Ok(sysfs::read_int_in(p, 0..=1)? == 1)
        })?;
        let word = optional(self.throttle_word.as_deref(), |p| {
            parse_throttle_word(&p.display().to_string(), &sysfs::read_text(p)?)
        })?;
        if word.is_none() && alarm.is_none() {
            return Err(HalError::not_found(
                "throttle flags: neither hwmon rpi_volt in0_lcrit_alarm nor firmware get_throttled",
            ));
        }
        let mut flags = ThrottleFlags::from_bits(word.unwrap_or(0));
        // The alarm is the driver's latch of bit 16 (which it clears in the firmware on
        // every poll). A set bit 16 in the word is an under-voltage too, so either one
        // marks it: neither can be a false positive. Without the word, the "now" bits
        // are not known and stay false.
        if let Some(a) = alarm {
            flags.under_voltage_occurred |= a;
        }
        self.note_under_voltage(flags.under_voltage || alarm.unwrap_or(false));
        Ok(flags)
    }
}

impl SysfsPower {
    /// Publishes [`HalEvent::UnderVoltage`] when the state differs from the last
    /// read (the first read publishes only an under-voltage). Detection is at the
    /// sampling rate: metald samples at 1 Hz, the driver latches for 2 s.
    fn note_under_voltage(&self, active: bool) {
        let mut last = self
            .last_under_voltage
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let changed = match *last {
            None => active,
            Some(prev) => prev != active,
        };
        *last = Some(active);
        drop(last);
        if changed {
            self.events.publish(HalEvent::UnderVoltage {
                at: self.clock.now(),
                active,
            });
        }
    }
}

/// Reads an optional source: `Ok(None)` when there is no such file.
fn optional<T>(path: Option<&Path>, read: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
    match path.map(read) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(e)) if e.kind() == crate::HalErrorKind::NotFound => Ok(None),
        Some(Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HalErrorKind;

    #[test]
    fn throttle_word_formats() {
        assert_eq!(parse_throttle_word("t", "50005\n").unwrap(), 0x50005);
        assert_eq!(parse_throttle_word("t", "0x80008").unwrap(), 0x80008);
        assert_eq!(parse_throttle_word("t", "0").unwrap(), 0);
        for bad in ["", "0x", "throttled=0x0", "-1", "123456789", "5 0005"] {
            assert_eq!(
                parse_throttle_word("t", bad).unwrap_err().kind(),
                HalErrorKind::SensorFault,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ina_family_names() {
        for n in ["ina219", "ina226", "ina260", "ina238"] {
            assert!(is_ina2xx(n), "{n}");
        }
        for n in ["ina3221", "ina2", "ina", "rpi_volt", "ina2x9"] {
            assert!(!is_ina2xx(n), "{n}");
        }
    }
}
