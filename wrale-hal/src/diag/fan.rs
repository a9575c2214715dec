//! Fan spin test through the tachometer.

use std::time::Duration;

use wrale_core::model::SensorKind;
use wrale_core::units::{Celsius, Percent, Rpm};

use super::{CheckKind, CheckResult, CheckStatus, DiagOptions, round};
use crate::board::Board;
use crate::error::{HalError, Result};
use crate::thermal::Fan;

const NAME: CheckKind = CheckKind::FanSpin;

/// Spin-tests every fan, one result per fan.
///
/// For a fan with a tachometer: remember its duty, set 100 %, wait the profile's
/// `fan.spin_up_s` plus `spin_up_margin` ([`Board::sleep`]), read the rpm; then set
/// `low_duty_pct`, wait the same, read again; finally put the remembered duty back
/// (always: also when a step fails, and on unwinding).
///
/// - fewer than `stall_rpm` at 100 % is `fail` (stalled), with the measured rpm;
/// - a step, tach read or the restore failing is `fail` with the error text;
/// - less than `min_full_fraction` of the profile's `max_rpm` at 100 % is `warn`
///   (degraded: worn bearing, blocked intake);
/// - at the low step not slower than `follow_fraction` of full speed is `warn`:
///   the fan ignores its duty (a broken PWM line runs most fans at full speed,
///   which is thermally safe but not controlled).
///
/// Safety: if a die sensor already reads at or above the profile's `warn_c`, the
/// low step is left out (the fan is only tested at 100 %).
///
/// Fans without a tachometer are `skip` with the reason; a board without fans
/// gives one `skip`.
pub fn fan_spin(board: &Board, options: &DiagOptions) -> Vec<CheckResult> {
    let fans = board.fans();
    if fans.is_empty() {
        return vec![CheckResult::skip(NAME, "the board has no fans")];
    }
    let spin_up_s = board.profile().fan.spin_up_s;
    let spin_up = if spin_up_s.is_finite() && spin_up_s > 0.0 {
        Duration::from_secs_f64(spin_up_s.min(600.0))
    } else {
        Duration::ZERO
    };
    let wait = spin_up + options.fan.spin_up_margin;
    let hot = hottest_die(board).filter(|t| *t >= board.profile().thermal.warn_c);
    fans.iter()
        .map(|f| one_fan(board, f.as_ref(), wait, hot, options))
        .collect()
}

fn hottest_die(board: &Board) -> Option<Celsius> {
    board
        .thermal()
        .iter()
        .filter(|s| matches!(s.kind(), SensorKind::Cpu | SensorKind::Gpu))
        .filter_map(|s| s.read().ok())
        .filter(|t| t.is_finite())
        .reduce(Celsius::max)
}

fn one_fan(
    board: &Board,
    fan: &dyn Fan,
    wait: Duration,
    hot: Option<Celsius>,
    options: &DiagOptions,
) -> CheckResult {
    let id = fan.id();
    let opts = &options.fan;
    if !fan.has_tach() {
        return CheckResult::skip(
            NAME,
            format!(
                "fan {id} has no tachometer (on/off or 3-wire fan): its spin cannot be verified"
            ),
        )
        .with_subject(id);
    }
    let max_rpm = board.profile().fan.max_rpm;
    let mut r = CheckResult::new(NAME, CheckStatus::Pass, String::new())
        .with_subject(id)
        .with_threshold("stall_rpm", opts.stall_rpm)
        .with_threshold("follow_fraction", opts.follow_fraction)
        .with_threshold("spin_up_wait_s", round(wait.as_secs_f64(), 3));
    if let Some(m) = max_rpm {
        r = r.with_threshold("min_full_rpm", round(m.get() * opts.min_full_fraction, 1));
    }

    let previous = match fan.duty() {
        Ok(d) => d,
        Err(e) => {
            return r.with_error(&e).with_status(
                CheckStatus::Fail,
                format!("cannot read the duty of fan {id}, so it was not touched: {e}"),
            );
        }
    };
    r = r.with_measured("previous_duty_pct", previous);

    let low = (hot.is_none() && opts.low_duty_pct < Percent::FULL).then_some(opts.low_duty_pct);
    let guard = DutyGuard::new(fan, previous);
    let steps = run_steps(board, fan, wait, low);
    let restored = guard.finish();

    let mut notes = Vec::new();
    let mut status = CheckStatus::Pass;
    if let Some(t) = hot {
        r = r.with_measured("die_temp_c", round(t.get(), 1));
        notes.push(format!("low-duty step left out: a die sensor reads {t:.1}"));
    }
    if let Some(l) = low {
        r = r.with_measured("low_duty_pct", l);
    }
    match &restored {
        Ok(()) => r = r.with_measured("restored_duty_pct", previous),
        Err(e) => {
            status = CheckStatus::Fail;
            notes.push(format!("could not restore the duty to {previous:.0}: {e}"));
            r = r.with_error(e);
        }
    }
    let (full, low_rpm) = match steps {
        Ok(v) => v,
        Err(e) => {
            notes.insert(0, format!("fan {id} test step failed: {e}"));
            return r
                .with_error(&e)
                .with_status(CheckStatus::Fail, notes.join("; "));
        }
    };
    r = r.with_measured("rpm_full", round(full.get(), 1));
    if let Some(l) = low_rpm {
        r = r.with_measured("rpm_low", round(l.get(), 1));
    }

    if !full.is_finite() || full < opts.stall_rpm {
        status = CheckStatus::Fail;
        notes.insert(
            0,
            format!(
                "fan {id} stalled: {:.0} rpm at 100 % duty (stall below {:.0})",
                full.get(),
                opts.stall_rpm
            ),
        );
    } else {
        if let Some(m) = max_rpm {
            let min_full = m.get() * opts.min_full_fraction;
            if full.get() < min_full {
                status = status.max(CheckStatus::Warn);
                notes.insert(
                    0,
                    format!(
                        "fan {id} degraded: {:.0} rpm at 100 % duty, expected at least {min_full:.0} (max {:.0})",
                        full.get(),
                        m.get()
                    ),
                );
            }
        }
        if let Some(l) = low_rpm {
            if l.get() > full.get() * opts.follow_fraction {
                status = status.max(CheckStatus::Warn);
                notes.push(format!(
                    "fan {id} does not follow its duty: {:.0} rpm at {:.0} vs {:.0} rpm at 100 %",
                    l.get(),
                    low.unwrap_or(Percent::ZERO),
                    full.get()
                ));
            }
        }
        if status == CheckStatus::Pass {
            let low_text = match (low, low_rpm) {
                (Some(d), Some(l)) => format!(", {:.0} rpm at {d:.0}", l.get()),
                _ => String::new(),
            };
            notes.insert(
                0,
                format!("fan {id}: {:.0} rpm at 100 %{low_text}", full.get()),
            );
        }
    }
    if restored.is_ok() {
        notes.push(format!("duty restored to {previous:.0}"));
    }
    r.with_status(status, notes.join("; "))
}

/// Full step, then the optional low step; returns the rpm at each.
fn run_steps(
    board: &Board,
    fan: &dyn Fan,
    wait: Duration,
    low: Option<Percent>,
) -> Result<(Rpm, Option<Rpm>), HalError> {
    fan.set_duty(Percent::FULL)?;
    board.sleep(wait);
    let full = fan.rpm()?;
    let low_rpm = match low {
        Some(d) => {
            fan.set_duty(d)?;
            board.sleep(wait);
            Some(fan.rpm()?)
        }
        None => None,
    };
    Ok((full, low_rpm))
}

/// Puts a fan's duty back when dropped (unwinding included) unless
/// [`DutyGuard::finish`] already did and reported the result.
#[derive(Debug)]
struct DutyGuard<'a> {
    fan: &'a dyn Fan,
    duty: Percent,
    armed: bool,
}

impl<'a> DutyGuard<'a> {
    fn new(fan: &'a dyn Fan, duty: Percent) -> Self {
        Self {
            fan,
            duty,
            armed: true,
        }
    }

    fn finish(mut self) -> Result<()> {
        self.armed = false;
        self.fan.set_duty(self.duty)
    }
}

impl Drop for DutyGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Best effort on the unwind path; the normal path reports the result.
            let _ = self.fan.set_duty(self.duty);
        }
    }
}
