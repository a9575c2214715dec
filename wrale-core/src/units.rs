//! Physical units as newtypes.
//!
//! Every quantity that crosses a crate boundary carries its unit in its type, so a
//! temperature can never be passed where a voltage is expected. All types are
//! `#[serde(transparent)]`: in JSON they are plain numbers, and the unit lives in the
//! field name (`cpu_temp_c`, `supply_v`, ...), as DESIGN.md prescribes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Div, Mul, Sub};

/// Error returned when a value is outside the range its unit allows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{value} is out of range for {unit} ({min}..={max})")]
pub struct UnitRangeError {
    /// Name of the unit, e.g. `"percent"`.
    pub unit: &'static str,
    /// The rejected value.
    pub value: f64,
    /// Smallest value allowed.
    pub min: f64,
    /// Largest value allowed.
    pub max: f64,
}

macro_rules! float_unit {
    ($(#[$meta:meta])* $name:ident, $symbol:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        impl $name {
            /// Wraps a raw value.
            pub const fn new(value: f64) -> Self {
                Self(value)
            }
            /// The raw value in this unit.
            pub const fn get(self) -> f64 {
                self.0
            }
            /// The larger of two values.
            pub fn max(self, other: Self) -> Self {
                Self(self.0.max(other.0))
            }
            /// The smaller of two values.
            pub fn min(self, other: Self) -> Self {
                Self(self.0.min(other.0))
            }
            /// Whether the value is a finite number (not NaN or infinite).
            pub fn is_finite(self) -> bool {
                self.0.is_finite()
            }
        }

        impl Add for $name {
            type Output = Self;
            fn add(self, rhs: Self) -> Self {
                Self(self.0 + rhs.0)
            }
        }

        impl Sub for $name {
            type Output = Self;
            fn sub(self, rhs: Self) -> Self {
                Self(self.0 - rhs.0)
            }
        }

        impl Mul<f64> for $name {
            type Output = Self;
            fn mul(self, rhs: f64) -> Self {
                Self(self.0 * rhs)
            }
        }

        impl Div<f64> for $name {
            type Output = Self;
            fn div(self, rhs: f64) -> Self {
                Self(self.0 / rhs)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match f.precision() {
                    Some(p) => write!(f, "{:.*} {}", p, self.0, $symbol),
                    None => write!(f, "{} {}", self.0, $symbol),
                }
            }
        }
    };
}

float_unit!(
    /// Temperature in degrees Celsius (also used for temperature differences).
    Celsius,
    "°C"
);
float_unit!(
    /// Electric potential in volts.
    Volts,
    "V"
);
float_unit!(
    /// Electric current in amperes.
    Amps,
    "A"
);
float_unit!(
    /// Power in watts.
    Watts,
    "W"
);
float_unit!(
    /// Electrical resistance in ohms.
    Ohms,
    "Ω"
);
float_unit!(
    /// Frequency in megahertz (CPU clocks).
    MegaHertz,
    "MHz"
);
float_unit!(
    /// Frequency in hertz (PWM carriers).
    Hertz,
    "Hz"
);
float_unit!(
    /// Fan speed in revolutions per minute.
    Rpm,
    "rpm"
);
float_unit!(
    /// Thermal resistance in kelvin per watt.
    KelvinPerWatt,
    "K/W"
);
float_unit!(
    /// Relative humidity in percent.
    RelativeHumidity,
    "%RH"
);

impl Mul<Amps> for Volts {
    type Output = Watts;
    fn mul(self, rhs: Amps) -> Watts {
        Watts(self.0 * rhs.0)
    }
}

impl Mul<Ohms> for Amps {
    type Output = Volts;
    fn mul(self, rhs: Ohms) -> Volts {
        Volts(self.0 * rhs.0)
    }
}

impl Div<Volts> for Watts {
    type Output = Amps;
    fn div(self, rhs: Volts) -> Amps {
        Amps(self.0 / rhs.0)
    }
}

impl Mul<KelvinPerWatt> for Watts {
    type Output = Celsius;
    /// Temperature rise over ambient of a heat flow through a thermal resistance.
    fn mul(self, rhs: KelvinPerWatt) -> Celsius {
        Celsius(self.0 * rhs.0)
    }
}

/// A percentage in `0.0..=100.0` (fan duty, CPU load, battery level).
///
/// Constructed through [`Percent::new`] (checked) or [`Percent::saturating`]
/// (clamped), so a stored `Percent` is always in range and never NaN.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
pub struct Percent(f64);

impl Percent {
    /// 0 %.
    pub const ZERO: Percent = Percent(0.0);
    /// 100 %.
    pub const FULL: Percent = Percent(100.0);

    /// A checked percentage; values outside `0..=100` (or NaN) are an error.
    pub fn new(value: f64) -> Result<Self, UnitRangeError> {
        if (0.0..=100.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(UnitRangeError {
                unit: "percent",
                value,
                min: 0.0,
                max: 100.0,
            })
        }
    }

    /// A percentage clamped into `0..=100`; NaN becomes 0.
    pub fn saturating(value: f64) -> Self {
        if value.is_nan() {
            Self(0.0)
        } else {
            Self(value.clamp(0.0, 100.0))
        }
    }

    /// The raw value.
    pub const fn get(self) -> f64 {
        self.0
    }

    /// The value as a fraction in `0.0..=1.0`.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }

    /// The larger of two percentages.
    pub fn max(self, other: Self) -> Self {
        Self(self.0.max(other.0))
    }

    /// The smaller of two percentages.
    pub fn min(self, other: Self) -> Self {
        Self(self.0.min(other.0))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Percent::new(v).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match f.precision() {
            Some(p) => write!(f, "{:.*} %", p, self.0),
            None => write!(f, "{} %", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ohms_law_and_power() {
        let v = Volts(5.0);
        let a = Amps(1.2);
        assert_eq!(v * a, Watts(6.0));
        assert!(((Amps(2.0) * Ohms(0.1)).get() - 0.2).abs() < 1e-12);
        assert_eq!(Watts(6.0) / Volts(5.0), Amps(1.2));
        assert_eq!(Watts(2.0) * KelvinPerWatt(10.0), Celsius(20.0));
    }

    #[test]
    fn percent_rejects_out_of_range_and_nan() {
        assert!(Percent::new(-0.1).is_err());
        assert!(Percent::new(100.1).is_err());
        assert!(Percent::new(f64::NAN).is_err());
        assert_eq!(Percent::new(42.0).unwrap().get(), 42.0);
        assert_eq!(Percent::saturating(150.0), Percent::FULL);
        assert_eq!(Percent::saturating(f64::NAN), Percent::ZERO);
        let err: Result<Percent, _> = serde_json::from_str("101");
        assert!(err.unwrap_err().to_string().contains("out of range"));
    }

    #[test]
    fn display_uses_symbols() {
        assert_eq!(format!("{:.1}", Celsius(45.25)), "45.2 °C");
        assert_eq!(format!("{}", Volts(5.1)), "5.1 V");
        assert_eq!(format!("{:.0}", Percent::new(50.0).unwrap()), "50 %");
    }

    #[test]
    fn serde_is_transparent() {
        assert_eq!(serde_json::to_string(&Celsius(21.5)).unwrap(), "21.5");
        let v: Volts = serde_json::from_str("4.9").unwrap();
        assert_eq!(v, Volts(4.9));
    }

    proptest! {
        #[test]
        fn percent_saturating_always_in_range(v in proptest::num::f64::ANY) {
            let p = Percent::saturating(v);
            prop_assert!((0.0..=100.0).contains(&p.get()));
        }

        #[test]
        fn watts_round_trip(v in 0.1f64..10.0, a in 0.0f64..5.0) {
            let w = Volts(v) * Amps(a);
            prop_assert!(((w / Volts(v)).get() - a).abs() < 1e-9);
        }
    }
}
