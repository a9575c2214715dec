//! Supply checks: voltage at rest, and minimum voltage plus the under-voltage flag
//! under 100 % CPU load.

use std::time::Duration;

use wrale_core::model::ThrottleFlags;
use wrale_core::units::{Percent, Volts};

use super::{
    CheckKind, CheckResult, CheckStatus, DiagOptions, LoadGuard, from_error, is_absent, merge,
    round,
};
use crate::board::Board;
use crate::error::{HalError, Result};
use crate::power::PowerMonitor;

/// Checks the supply at rest (one board-wide result).
///
/// With a voltage reading: within `warn_band_v` of the profile's `nominal_v` is
/// `pass`; outside it `warn`; outside `fail_band_v`, or below the profile's
/// `undervoltage_v`, `fail`. Whatever the voltage, the firmware's under-voltage flag
/// set *now* is `fail`, and set *since boot* (sticky bit) only is `warn`.
/// Boards whose monitor gives only the flags (the `linux` backend's `rpi_volt`)
/// are judged on the flags alone. Skipped without a power monitor.
pub fn supply_voltage(board: &Board, options: &DiagOptions) -> Vec<CheckResult> {
    const NAME: CheckKind = CheckKind::SupplyVoltage;
    let Some(monitor) = board.power() else {
        return vec![CheckResult::skip(NAME, "the board has no power monitor")];
    };
    let opts = &options.supply;
    let power = &board.profile().power;
    let nominal = power.nominal_v;
    let mut r = CheckResult::new(NAME, CheckStatus::Pass, String::new())
        .with_threshold("nominal_v", nominal)
        .with_threshold("warn_band_v", opts.warn_band_v)
        .with_threshold("fail_band_v", opts.fail_band_v);
    if let Some(uv) = power.undervoltage_v {
        r = r.with_threshold("undervoltage_v", uv);
    }

    let voltage = match monitor.voltage() {
        Ok(v) if v.is_finite() => Some(v),
        Ok(v) => {
            return vec![r.with_status(CheckStatus::Fail, format!("supply monitor returned {v}"))];
        }
        Err(e) if is_absent(&e) => None,
        Err(e) => return vec![merge(r, from_error(NAME, "cannot read supply voltage", &e))],
    };
    let flags = match monitor.throttle() {
        Ok(f) => Some(f),
        Err(e) if is_absent(&e) => None,
        Err(e) => return vec![merge(r, from_error(NAME, "cannot read throttle flags", &e))],
    };
    if voltage.is_none() && flags.is_none() {
        return vec![CheckResult::skip(
            NAME,
            "the power monitor reports neither voltage nor under-voltage flags",
        )];
    }

    let mut status = CheckStatus::Pass;
    let mut notes = Vec::new();
    if let Some(v) = voltage {
        r = r.with_measured("supply_v", round(v.get(), 3));
        let off = (v - nominal).get().abs();
        let below_uv = power.undervoltage_v.is_some_and(|uv| v < uv);
        if below_uv || off > opts.fail_band_v.get() {
            status = CheckStatus::Fail;
            notes.push(format!(
                "supply {v:.3} is {} nominal {nominal:.2}{}",
                if v < nominal {
                    "far below"
                } else {
                    "far above"
                },
                if below_uv {
                    " and below the under-voltage threshold"
                } else {
                    ""
                }
            ));
        } else if off > opts.warn_band_v.get() {
            status = CheckStatus::Warn;
            notes.push(format!(
                "supply {v:.3} is more than {:.2} from nominal {nominal:.2}",
                opts.warn_band_v
            ));
        } else {
            notes.push(format!("supply {v:.3} (nominal {nominal:.2})"));
        }
    }
    if let Some(f) = flags {
        r = r
            .with_measured("under_voltage_now", f.under_voltage)
            .with_measured("under_voltage_occurred", f.under_voltage_occurred);
        if f.under_voltage {
            status = CheckStatus::Fail;
            notes.push("firmware reports under-voltage now".to_owned());
        } else if f.under_voltage_occurred {
            status = status.max(CheckStatus::Warn);
            notes.push("firmware reports under-voltage has occurred".to_owned());
        } else if voltage.is_none() {
            notes.push("no under-voltage flagged by the firmware".to_owned());
        }
    }
    vec![r.with_status(status, notes.join("; "))]
}

/// Checks the supply under 100 % CPU load (one board-wide result).
///
/// Reads the monitor, sets the load generator to 100 %, and every
/// `sample_interval` for `load_duration` reads the voltage (tracking the minimum)
/// and the throttle flags, then sets the load back to zero (always, also when a
/// read fails). The under-voltage flag appearing during the test (now-bit, or the
/// sticky bit when it was clear before) or a minimum below the profile's
/// `undervoltage_v` is `fail`; a minimum within `min_margin_v` of it is `warn`.
/// Failing to reset the load is `fail`. Skipped without a load generator or a
/// power monitor.
pub fn supply_under_load(board: &Board, options: &DiagOptions) -> Vec<CheckResult> {
    const NAME: CheckKind = CheckKind::SupplyUnderLoad;
    let Some(load) = board.load_generator() else {
        return vec![CheckResult::skip(NAME, "the board has no load generator")];
    };
    let Some(monitor) = board.power() else {
        return vec![CheckResult::skip(NAME, "the board has no power monitor")];
    };
    let opts = &options.supply;
    let uv_threshold = board.profile().power.undervoltage_v;
    let mut r = CheckResult::new(NAME, CheckStatus::Pass, String::new())
        .with_threshold("min_margin_v", opts.min_margin_v)
        .with_threshold("load_pct", 100.0)
        .with_threshold(
            "load_duration_s",
            round(opts.load_duration.as_secs_f64(), 3),
        );
    if let Some(uv) = uv_threshold {
        r = r.with_threshold("undervoltage_v", uv);
    }

    let before = match Track::read(monitor.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            return vec![merge(
                r,
                from_error(NAME, "cannot read the power monitor", &e),
            )];
        }
    };
    if let Some(v) = before.voltage {
        r = r.with_measured("idle_supply_v", round(v.get(), 3));
    }
    let sticky_before = before.flags.is_some_and(|f| f.under_voltage_occurred);

    let guard = LoadGuard::new(load.as_ref());
    if let Err(e) = load.set_load(Percent::FULL) {
        drop(guard);
        return vec![merge(
            r,
            from_error(NAME, "cannot start the load generator", &e),
        )];
    }
    let (track, read_error) = hold_load(board, monitor.as_ref(), opts);
    let reset = guard.finish();

    let mut status = CheckStatus::Pass;
    let mut notes = Vec::new();
    r = r.with_measured("samples", track.samples);
    if let Some(min) = track.min_v {
        r = r.with_measured("min_supply_v", round(min.get(), 3));
    }
    let uv_appeared = track.uv_now || (track.uv_sticky && !sticky_before);
    if track.flags_seen {
        r = r.with_measured("under_voltage_seen", uv_appeared);
    }
    if let Err(e) = &reset {
        status = CheckStatus::Fail;
        notes.push(format!("could not reset the load to zero: {e}"));
        r = r.with_error(e);
    }
    if let Some(e) = &read_error {
        status = CheckStatus::Fail;
        notes.push(format!("power monitor failed under load: {e}"));
        r = r.with_error(e);
    }
    if uv_appeared {
        status = CheckStatus::Fail;
        notes.push("under-voltage flagged under load".to_owned());
    }
    match (track.min_v, uv_threshold) {
        (Some(min), Some(uv)) => {
            let margin = (min - uv).get();
            r = r.with_measured("margin_v", round(margin, 3));
            if margin < 0.0 {
                status = CheckStatus::Fail;
                notes.push(format!(
                    "minimum {min:.3} is below the under-voltage threshold {uv:.2}"
                ));
            } else if margin < opts.min_margin_v.get() {
                status = status.max(CheckStatus::Warn);
                notes.push(format!(
                    "minimum {min:.3} is only {margin:.3} V above the under-voltage threshold {uv:.2}"
                ));
            } else {
                notes.push(format!(
                    "minimum {min:.3} under load, {margin:.3} V above the under-voltage threshold"
                ));
            }
        }
        (Some(min), None) => notes.push(format!(
            "minimum {min:.3} under load (this board has no under-voltage detector)"
        )),
        (None, _) if !track.flags_seen && status == CheckStatus::Pass => {
            return vec![r.with_status(
                CheckStatus::Skip,
                "the power monitor gives neither voltage nor under-voltage flags",
            )];
        }
        (None, _) => {
            if track.flags_seen && !uv_appeared {
                notes.push("no under-voltage flagged under load (no voltage reading)".to_owned());
            }
        }
    }
    vec![r.with_status(status, notes.join("; "))]
}

/// Holds the load for the configured duration; returns what was seen and the
/// first read error (which ends the test early).
fn hold_load(
    board: &Board,
    monitor: &dyn PowerMonitor,
    opts: &super::SupplyCheckOptions,
) -> (Track, Option<HalError>) {
    let mut track = Track::default();
    let step = opts.sample_interval.max(Duration::from_millis(10));
    let mut elapsed = Duration::ZERO;
    while elapsed < opts.load_duration {
        let d = step.min(opts.load_duration - elapsed);
        board.sleep(d);
        elapsed += d;
        match Track::read(monitor) {
            Ok(t) => track.add(t),
            Err(e) => return (track, Some(e)),
        }
    }
    (track, None)
}

/// What the supply check saw.
#[derive(Debug, Default)]
struct Track {
    samples: u32,
    min_v: Option<Volts>,
    uv_now: bool,
    uv_sticky: bool,
    flags_seen: bool,
    voltage: Option<Volts>,
    flags: Option<ThrottleFlags>,
}

impl Track {
    /// One reading: voltage and flags, each optional when the monitor does not
    /// provide it; any other error is returned.
    fn read(monitor: &dyn PowerMonitor) -> Result<Track> {
        let voltage = match monitor.voltage() {
            Ok(v) if v.is_finite() => Some(v),
            Ok(v) => {
                return Err(HalError::sensor_fault(
                    "supply",
                    format!("non-finite voltage {v}"),
                ));
            }
            Err(e) if is_absent(&e) => None,
            Err(e) => return Err(e),
        };
        let flags = match monitor.throttle() {
            Ok(f) => Some(f),
            Err(e) if is_absent(&e) => None,
            Err(e) => return Err(e),
        };
        Ok(Track {
            voltage,
            flags,
            ..Track::default()
        })
    }

    fn add(&mut self, t: Track) {
        self.samples += 1;
        if let Some(v) = t.voltage {
            self.min_v = Some(self.min_v.map_or(v, |m| m.min(v)));
        }
        if let Some(f) = t.flags {
            self.flags_seen = true;
            self.uv_now |= f.under_voltage;
            self.uv_sticky |= f.under_voltage_occurred;
        }
    }
}
