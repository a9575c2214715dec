//! GPIO loopback between the profile's two wired-together pins.

use std::time::Duration;

use wrale_core::model::{Level, Pull};

use super::{CheckKind, CheckResult, CheckStatus, DiagOptions};
use crate::board::Board;
use crate::error::HalError;
use crate::gpio::{DropState, Gpio};

const NAME: CheckKind = CheckKind::GpioLoopback;

/// Time the line gets to settle after a write before it is read back.
const SETTLE: Duration = Duration::from_millis(1);

/// Tests the loopback pair of the profile (`pins.loopback = [a, b]`, wired
/// together on the board), one board-wide result.
///
/// Both directions are tested: `a` is claimed as an output and `b` as an input
/// with pull-down, `a` is driven high then low and `b` must follow; then the roles
/// are swapped. Every line is released afterwards (outputs are claimed with
/// [`DropState::Release`]).
///
/// - a read-back that differs from the driven level is `fail` (open wire, a pin
///   stuck or shorted), with the levels seen;
/// - a pin that cannot be claimed is `fail`; when someone else holds it the message
///   says so and names the error (`PinUsed`);
/// - skipped when the profile has no loopback pair or the board has no GPIO.
pub fn gpio_loopback(board: &Board, _options: &DiagOptions) -> Vec<CheckResult> {
    let Some([a, b]) = board.profile().pins.loopback else {
        return vec![CheckResult::skip(
            NAME,
            "the board profile configures no loopback pin pair (pins.loopback)",
        )];
    };
    let subject = format!("gpio{a}-{b}");
    let gpio = match board.gpio() {
        Ok(g) => g,
        Err(e) => {
            return vec![
                CheckResult::skip(NAME, format!("no GPIO on this board: {e}"))
                    .with_subject(subject),
            ];
        }
    };
    let base = CheckResult::new(NAME, CheckStatus::Pass, String::new())
        .with_subject(&subject)
        .with_measured("pin_a", a)
        .with_measured("pin_b", b)
        .with_threshold("settle_ms", SETTLE.as_millis() as u64);

    let mut readings = Vec::new();
    for (out, inp) in [(a, b), (b, a)] {
        match one_direction(board, gpio.as_ref(), out, inp) {
            Ok(seen) => {
                for (level, got) in seen {
                    readings.push((out, inp, level, got));
                }
            }
            Err(Claim { pin, error }) => {
                let why = match &error {
                    HalError::PinUsed { .. } => format!(
                        "GPIO {pin} is held by someone else (PinUsed): {error}; release it and rerun"
                    ),
                    _ => format!("cannot claim GPIO {pin}: {error}"),
                };
                return vec![
                    base.with_measured("blocked_pin", pin)
                        .with_error(&error)
                        .with_status(CheckStatus::Fail, why),
                ];
            }
        }
    }

    let bad: Vec<_> = readings
        .iter()
        .filter(|(_, _, driven, got)| got.as_ref().ok() != Some(driven))
        .collect();
    let mut r = base;
    for (out, inp, driven, got) in &readings {
        let key = format!(
            "gpio{inp}_when_gpio{out}_{}",
            if driven.is_high() { "high" } else { "low" }
        );
        let value = match got {
            Ok(l) => level_name(*l).to_owned(),
            Err(e) => format!("error: {e}"),
        };
        r = r.with_measured(&key, value);
    }
    if bad.is_empty() {
        return vec![r.with_status(
            CheckStatus::Pass,
            format!("GPIO {a} and {b} follow each other both ways"),
        )];
    }
    let detail: Vec<String> = bad
        .iter()
        .map(|(out, inp, driven, got)| match got {
            Ok(l) => format!(
                "GPIO {inp} read {} while GPIO {out} drove {}",
                level_name(*l),
                level_name(*driven)
            ),
            Err(e) => format!("GPIO {inp} could not be read: {e}"),
        })
        .collect();
    if let Some((_, _, _, Err(e))) = bad.first() {
        r = r.with_error(e);
    }
    vec![r.with_status(
        CheckStatus::Fail,
        format!("loopback broken: {}", detail.join("; ")),
    )]
}

/// A pin that could not be claimed.
#[derive(Debug)]
struct Claim {
    pin: u8,
    error: HalError,
}

type Seen = Vec<(Level, Result<Level, HalError>)>;

/// Drives `out` high then low and reads `inp` each time. Both lines are released
/// when this returns (the handles drop).
fn one_direction(board: &Board, gpio: &dyn Gpio, out: u8, inp: u8) -> Result<Seen, Claim> {
    let mut output = gpio
        .claim_output(out, Level::Low, DropState::Release)
        .map_err(|error| Claim { pin: out, error })?;
    let input = gpio
        .claim_input(inp, Pull::Down)
        .map_err(|error| Claim { pin: inp, error })?;
    let mut seen = Vec::new();
    for level in [Level::High, Level::Low] {
        let got = output.write(level).and_then(|()| {
            board.sleep(SETTLE);
            input.read()
        });
        seen.push((level, got));
    }
    Ok(seen)
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::High => "high",
        Level::Low => "low",
    }
}
