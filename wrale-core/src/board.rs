//! Board models and board profiles.
//!
//! A [`BoardProfile`] describes one kind of board as data: CPU frequencies, the
//! firmware's thermal limits, the safety defaults the policy engine starts from,
//! supply figures, the parameters of the simulator's physical model, the fan, and
//! the pin map of the fan, case switch, motion and voltage sensors. Profiles are
//! TOML; the built-ins below ship inside the crate (see `wrale-core/profiles/`), and
//! an operator can load their own with [`BoardProfile::from_toml`].
//!
//! The figures come from `shared/PHYSICS.md` (official Raspberry Pi documentation,
//! kernel sources and third-party measurements); each built-in file says where.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::units::{
    Amps, Celsius, Hertz, KelvinPerWatt, MegaHertz, Ohms, Percent, Rpm, Volts, Watts,
};

/// A board model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardModel {
    /// Raspberry Pi 3 Model B+.
    #[serde(rename = "pi3bplus", alias = "pi3b+")]
    Pi3BPlus,
    /// Raspberry Pi 4 Model B.
    #[serde(rename = "pi4b")]
    Pi4B,
    /// Raspberry Pi 5.
    #[serde(rename = "pi5")]
    Pi5,
    /// Compute Module 4.
    #[serde(rename = "cm4")]
    Cm4,
    /// Raspberry Pi Zero 2 W.
    #[serde(rename = "zero2w")]
    Zero2W,
    /// Any other Linux single-board computer.
    #[serde(rename = "generic")]
    Generic,
}

impl BoardModel {
    /// Every model with a built-in profile.
    pub const ALL: [BoardModel; 6] = [
        BoardModel::Pi3BPlus,
        BoardModel::Pi4B,
        BoardModel::Pi5,
        BoardModel::Cm4,
        BoardModel::Zero2W,
        BoardModel::Generic,
    ];

    /// The model's stable short name (`pi4b`).
    pub fn as_str(self) -> &'static str {
        match self {
            BoardModel::Pi3BPlus => "pi3bplus",
            BoardModel::Pi4B => "pi4b",
            BoardModel::Pi5 => "pi5",
            BoardModel::Cm4 => "cm4",
            BoardModel::Zero2W => "zero2w",
            BoardModel::Generic => "generic",
        }
    }

    /// Guesses the model from the device-tree model string
    /// (`/proc/device-tree/model`, e.g. `"Raspberry Pi 4 Model B Rev 1.4"`).
    pub fn from_device_tree(model: &str) -> BoardModel {
        let m = model.trim_end_matches('\0');
        if m.contains("Raspberry Pi 5") {
            BoardModel::Pi5
        } else if m.contains("Raspberry Pi 4") || m.contains("Raspberry Pi 400") {
            BoardModel::Pi4B
        } else if m.contains("Compute Module 4") {
            BoardModel::Cm4
        } else if m.contains("Raspberry Pi 3 Model B Plus") {
            BoardModel::Pi3BPlus
        } else if m.contains("Zero 2 W") {
            BoardModel::Zero2W
        } else {
            BoardModel::Generic
        }
    }
}

impl fmt::Display for BoardModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown model name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown board model {0:?} (known: pi3bplus, pi4b, pi5, cm4, zero2w, generic)")]
pub struct UnknownModel(pub String);

impl FromStr for BoardModel {
    type Err = UnknownModel;
    fn from_str(s: &str) -> Result<Self, UnknownModel> {
        BoardModel::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .or((s == "pi3b+").then_some(BoardModel::Pi3BPlus))
            .ok_or_else(|| UnknownModel(s.to_owned()))
    }
}

/// CPU figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuProfile {
    /// Number of cores.
    pub cores: u8,
    /// Lowest ARM frequency.
    pub freq_min_mhz: MegaHertz,
    /// Highest ARM frequency.
    pub freq_max_mhz: MegaHertz,
}

/// Thermal limits: the firmware's own, and the safety defaults Wrale starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalLimits {
    /// Firmware soft limit where the board lowers its clock (3B+ only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_soft_limit_c: Option<Celsius>,
    /// Firmware throttle start (ARM cores progressively throttled above this).
    pub firmware_throttle_c: Celsius,
    /// Firmware hard limit (ARM and GPU throttled).
    pub firmware_hard_limit_c: Celsius,
    /// Wrale default: warning alert.
    pub warn_c: Celsius,
    /// Wrale default: throttle workloads.
    pub throttle_c: Celsius,
    /// Wrale default: critical; emergency shutdown when it persists.
    pub critical_c: Celsius,
}

/// Supply figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerProfile {
    /// Nominal PSU voltage at no load.
    pub nominal_v: Volts,
    /// Firmware under-voltage threshold; `None` on boards without a detector (Zero range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undervoltage_v: Option<Volts>,
    /// PSU current rating.
    pub psu_rating_a: Amps,
    /// Whole-board power at idle.
    pub idle_w: Watts,
    /// Whole-board power at full CPU load.
    pub load_w: Watts,
    /// Source resistance of PSU plus cable (for the simulator's sag model).
    pub supply_r_ohm: Ohms,
}

/// Parameters of the simulator's physical model (second-order thermal RC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalModel {
    /// Default ambient temperature.
    pub ambient_c: Celsius,
    /// Thermal resistance die-to-ambient with no cooling.
    pub r_th_bare: KelvinPerWatt,
    /// With a passive heatsink.
    pub r_th_heatsink: KelvinPerWatt,
    /// With the fan at 100 %.
    pub r_th_fan: KelvinPerWatt,
    /// Fast (die) time constant in seconds.
    pub tau_die_s: f64,
    /// Slow (board / case) time constant in seconds.
    pub tau_board_s: f64,
}

/// Kind of fan a board is fitted with by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanKind {
    /// No fan.
    None,
    /// Switched on/off from a GPIO (Pi 4 case fan): duty is 0 or 100 %.
    #[serde(rename = "onoff")]
    OnOff,
    /// 4-wire PWM fan with tachometer.
    Pwm,
}

/// The fan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanProfile {
    /// Kind of fan.
    pub kind: FanKind,
    /// Speed at 100 % duty, where there is a tachometer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rpm: Option<Rpm>,
    /// Tach pulses per revolution (2 for standard PC-style fans).
    #[serde(default = "default_ppr")]
    pub pulses_per_rev: u8,
    /// Below this duty the fan does not start.
    #[serde(default)]
    pub min_start_duty_pct: Percent,
    /// Seconds from stop to full speed.
    #[serde(default)]
    pub spin_up_s: f64,
    /// PWM carrier frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwm_hz: Option<Hertz>,
    /// Duty the fan goes to when the controller cannot be trusted (fail-safe).
    pub safe_duty_pct: Percent,
}

fn default_ppr() -> u8 {
    2
}

/// GPIO pin map (BCM numbers) of the board's standard wiring.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinMap {
    /// Fan PWM output (hardware PWM capable pin) or on/off switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan: Option<u8>,
    /// Fan tachometer input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_tach: Option<u8>,
    /// Case (lid) switch input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_switch: Option<u8>,
    /// PIR motion sensor input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<u8>,
    /// Tamper loop input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<u8>,
    /// External voltage-monitor output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voltage_monitor: Option<u8>,
    /// A pair of pins wired together for the diagnostics loopback test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopback: Option<[u8; 2]>,
    /// Pins that can do hardware PWM.
    #[serde(default)]
    pub hardware_pwm: Vec<u8>,
    /// Highest usable GPIO number.
    pub max_gpio: u8,
}

/// A board profile: everything Wrale knows about a kind of board, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    /// The model.
    pub model: BoardModel,
    /// Human name.
    pub name: String,
    /// CPU.
    pub cpu: CpuProfile,
    /// Thermal limits.
    pub thermal: ThermalLimits,
    /// Power.
    pub power: PowerProfile,
    /// Simulator parameters.
    pub thermal_model: ThermalModel,
    /// Fan.
    pub fan: FanProfile,
    /// Pin map.
    pub pins: PinMap,
}

/// Error loading a profile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// The TOML did not parse or did not match the schema (the message names line and key).
    #[error("board profile {source_name}: {message}")]
    Parse {
        /// File name or `"<builtin pi4b>"`.
        source_name: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// The values are inconsistent.
    #[error("board profile {source_name}: {message}")]
    Invalid {
        /// File name.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

impl BoardProfile {
    /// The built-in profile of a model.
    pub fn builtin(model: BoardModel) -> BoardProfile {
        let text = match model {
            BoardModel::Pi3BPlus => include_str!("../profiles/pi3bplus.toml"),
            BoardModel::Pi4B => include_str!("../profiles/pi4b.toml"),
            BoardModel::Pi5 => include_str!("../profiles/pi5.toml"),
            BoardModel::Cm4 => include_str!("../profiles/cm4.toml"),
            BoardModel::Zero2W => include_str!("../profiles/zero2w.toml"),
            BoardModel::Generic => include_str!("../profiles/generic.toml"),
        };
        // The built-ins are tested below; a failure here is a build defect.
        BoardProfile::from_toml(text, &format!("<builtin {model}>"))
            .unwrap_or_else(|e| panic!("built-in profile is invalid: {e}"))
    }

    /// Parses and validates a profile from TOML text. `source_name` (a file name)
    /// appears in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<BoardProfile, ProfileError> {
        let p: BoardProfile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
        p.validate().map_err(|message| ProfileError::Invalid {
            source_name: source_name.to_owned(),
            message,
        })?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.thermal;
        if !(t.warn_c < t.throttle_c && t.throttle_c < t.critical_c) {
            return Err(format!(
                "thermal: need warn_c < throttle_c < critical_c, got {} / {} / {}",
                t.warn_c.get(),
                t.throttle_c.get(),
                t.critical_c.get()
            ));
        }
        if t.critical_c > t.firmware_hard_limit_c + Celsius(5.0) {
            return Err(
                "thermal.critical_c may not be more than 5 °C above firmware_hard_limit_c".into(),
            );
        }
        if self.cpu.freq_min_mhz > self.cpu.freq_max_mhz {
            return Err("cpu: freq_min_mhz > freq_max_mhz".into());
        }
        let m = &self.thermal_model;
        if !(m.r_th_fan.get() > 0.0
            && m.r_th_fan <= m.r_th_heatsink
            && m.r_th_heatsink <= m.r_th_bare)
        {
            return Err("thermal_model: need 0 < r_th_fan <= r_th_heatsink <= r_th_bare".into());
        }
        if m.tau_die_s <= 0.0 || m.tau_board_s <= 0.0 {
            return Err("thermal_model: time constants must be positive".into());
        }
        if self.power.idle_w > self.power.load_w {
            return Err("power: idle_w > load_w".into());
        }
        if let Some(uv) = self.power.undervoltage_v {
            if uv >= self.power.nominal_v {
                return Err("power: undervoltage_v must be below nominal_v".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load_and_match_their_model() {
        for m in BoardModel::ALL {
            let p = BoardProfile::builtin(m);
            assert_eq!(p.model, m);
            assert_eq!(m.as_str().parse::<BoardModel>().unwrap(), m);
        }
    }

    #[test]
    fn pi4_defaults_match_the_issue() {
        let p = BoardProfile::builtin(BoardModel::Pi4B);
        assert_eq!(p.thermal.warn_c, Celsius(70.0));
        assert_eq!(p.thermal.throttle_c, Celsius(80.0));
        assert_eq!(p.thermal.critical_c, Celsius(85.0));
        assert_eq!(p.power.undervoltage_v, Some(Volts(4.63)));
        assert!(
            BoardProfile::builtin(BoardModel::Zero2W)
                .power
                .undervoltage_v
                .is_none()
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let text =
            include_str!("../profiles/pi4b.toml").replace("warn_c = 70.0", "warn_c = \"hot\"");
        let e = BoardProfile::from_toml(&text, "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mine.toml") && e.contains("line") && e.contains("warn_c"),
            "{e}"
        );
        let text = include_str!("../profiles/pi4b.toml").replace("warn_c = 70.0", "warn_c = 90.0");
        let e = BoardProfile::from_toml(&text, "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("warn_c < throttle_c"), "{e}");
    }

    #[test]
    fn device_tree_names() {
        assert_eq!(
            BoardModel::from_device_tree("Raspberry Pi 4 Model B Rev 1.4\0"),
            BoardModel::Pi4B
        );
        assert_eq!(
            BoardModel::from_device_tree("Raspberry Pi 5 Model B Rev 1.0"),
            BoardModel::Pi5
        );
        assert_eq!(
            BoardModel::from_device_tree("Raspberry Pi Zero 2 W Rev 1.0"),
            BoardModel::Zero2W
        );
        assert_eq!(
            BoardModel::from_device_tree("Raspberry Pi Compute Module 4 Rev 1.1"),
            BoardModel::Cm4
        );
        assert_eq!(
            BoardModel::from_device_tree("Raspberry Pi 3 Model B Plus Rev 1.3"),
            BoardModel::Pi3BPlus
        );
        assert_eq!(
            BoardModel::from_device_tree("Pine64 RockPro64"),
            BoardModel::Generic
        );
    }
}
