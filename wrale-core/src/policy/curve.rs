//! Fan curves: step tables with hysteresis, one per [`FanProfileName`].
//!
//! A step engages when the temperature reaches its threshold and disengages only
//! when the temperature falls `hysteresis` below it, the way the Pi 5 firmware's
//! `pwm-fan` trips work (trips 50/60/67.5/75 °C, hysteresis 5 °C). Every profile's
//! duty is at least the quieter profile's at every temperature, so "a more cooling
//! profile" is a well-defined tightening.

use crate::model::FanProfileName;
use crate::units::{Celsius, Percent};

/// A step: at or above `temp_c`, run at `duty_pct`.
pub type Step = (f64, f64);

const QUIET: &[Step] = &[
    (f64::NEG_INFINITY, 0.0),
    (55.0, 20.0),
    (65.0, 40.0),
    (72.0, 70.0),
    (78.0, 100.0),
];
const BALANCE: &[Step] = &[
    (f64::NEG_INFINITY, 0.0),
    (50.0, 30.0),
    (60.0, 50.0),
    (67.5, 70.0),
    (75.0, 100.0),
];
const COOL: &[Step] = &[
    (f64::NEG_INFINITY, 20.0),
    (45.0, 40.0),
    (55.0, 60.0),
    (65.0, 80.0),
    (70.0, 100.0),
];
const MAX: &[Step] = &[(f64::NEG_INFINITY, 100.0)];

/// Hysteresis of the fan curve's steps.
pub const FAN_HYSTERESIS: Celsius = Celsius(5.0);

/// The step table of a profile, lowest step first.
pub fn steps(profile: FanProfileName) -> &'static [Step] {
    match profile {
        FanProfileName::Quiet => QUIET,
        FanProfileName::Balance => BALANCE,
        FanProfileName::Cool => COOL,
        FanProfileName::Max => MAX,
    }
}

/// The index of the highest step engaged at `t` when rising (no hysteresis).
pub fn engaged_step(profile: FanProfileName, t: Celsius) -> usize {
    let s = steps(profile);
    s.iter().rposition(|(thr, _)| t.get() >= *thr).unwrap_or(0)
}

/// The duty a profile asks for at `t` when rising (no hysteresis).
pub fn duty_at(profile: FanProfileName, t: Celsius) -> Percent {
    Percent::saturating(steps(profile)[engaged_step(profile, t)].1)
}

/// Moves the current step `idx` for temperature `t`: up at once, down only when
/// `t` has fallen `hysteresis` below the current step's threshold.
pub fn next_step(profile: FanProfileName, idx: usize, t: Celsius, hysteresis: Celsius) -> usize {
    let s = steps(profile);
    let target = engaged_step(profile, t);
    let mut idx = idx.min(s.len() - 1);
    if target >= idx {
        return target;
    }
    while idx > target && t.get() < s[idx].0 - hysteresis.get() {
        idx -= 1;
    }
    idx
}

/// The duty of step `idx` of a profile.
pub fn step_duty(profile: FanProfileName, idx: usize) -> Percent {
    let s = steps(profile);
    Percent::saturating(s[idx.min(s.len() - 1)].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_ordered_at_every_temperature() {
        for t in (0..=110).map(|t| Celsius(f64::from(t) * 0.5 + 20.0)) {
            for w in FanProfileName::ALL.windows(2) {
                assert!(
                    duty_at(w[0], t) <= duty_at(w[1], t),
                    "{:?} vs {:?} at {t}",
                    w[0],
                    w[1]
                );
            }
        }
    }

    #[test]
    fn steps_up_at_once_and_down_with_hysteresis() {
        let p = FanProfileName::Balance;
        let i = next_step(p, 0, Celsius(61.0), FAN_HYSTERESIS);
        assert_eq!(step_duty(p, i), Percent::saturating(50.0));
        // 58 °C: below the 60 °C trip but inside the 5 °C band: stays.
        let i = next_step(p, i, Celsius(58.0), FAN_HYSTERESIS);
        assert_eq!(step_duty(p, i), Percent::saturating(50.0));
        // 54.9 °C: leaves the 60 °C step, lands on the 50 °C step (still engaged).
        let i = next_step(p, i, Celsius(54.9), FAN_HYSTERESIS);
        assert_eq!(step_duty(p, i), Percent::saturating(30.0));
        let i = next_step(p, i, Celsius(30.0), FAN_HYSTERESIS);
        assert_eq!(step_duty(p, i), Percent::ZERO);
        assert_eq!(duty_at(FanProfileName::Max, Celsius(-10.0)), Percent::FULL);
    }
}
