//! Temperature-sensor plausibility: range, rate of change, stuck die sensor.

use wrale_core::Timestamp;
use wrale_core::model::SensorKind;
use wrale_core::units::{Celsius, Percent};

use super::{CheckKind, CheckResult, CheckStatus, DiagOptions, LoadGuard, is_absent, round};
use crate::board::Board;
use crate::error::HalError;

const NAME: CheckKind = CheckKind::SensorPlausibility;

/// Checks every temperature sensor of the board, one result per sensor.
///
/// Reads all sensors `reads` times, `interval` apart ([`Board::sleep`]), with the
/// CPU at 100 % load when `apply_load` is set and the board has a load generator
/// (the load is set back to zero afterwards, always). Then, per sensor:
///
/// - a read error is `fail` with the error text (the board lists the sensor, so
///   an error means it is broken or gone);
/// - a reading outside `min_c..=max_c` (or not a number) is `fail`;
/// - a change between two consecutive reads faster than `max_rate_c_per_s`
///   (measured on the board's clock) is `fail`: no die or air changes
///   temperature that fast, so the sensor or its bus is glitching;
/// - **stuck-suspect** (`warn`): a die sensor (kind `cpu` or `gpu`) returning the
///   bit-identical value on every read *while this check holds the CPU at 100 %
///   load*. The rule is deliberately narrow to avoid false positives: air and
///   board sensors legitimately sit still for minutes; a die at idle can sit on one
///   quantisation step; and a die under a *known* load step must move (a Pi 4's
///   die rises ~0.4 °C/s at first, and its sensor jitters by a quantisation step
///   anyway). It can still misfire on a die already pinned at full load and at
///   its thermal limit by another workload, which is why it is a `warn`, not a
///   `fail`. Without a load generator the rule is not evaluated
///   (`measured.stuck_check = "not_evaluated"`).
///
/// Skipped when the board has no temperature sensors.
pub fn sensor_plausibility(board: &Board, options: &DiagOptions) -> Vec<CheckResult> {
    let sensors = board.thermal();
    if sensors.is_empty() {
        return vec![CheckResult::skip(
            NAME,
            "the board has no temperature sensors",
        )];
    }
    let opts = &options.sensors;
    let reads = opts.reads.max(2);

    let mut results = Vec::new();
    let load = if opts.apply_load {
        board.load_generator()
    } else {
        None
    };
    let guard = load.map(|l| LoadGuard::new(l.as_ref()));
    let under_load = match load {
        Some(l) => match l.set_load(Percent::FULL) {
            Ok(()) => true,
            Err(e) if is_absent(&e) => false,
            Err(e) => {
                results.push(
                    CheckResult::new(
                        NAME,
                        CheckStatus::Warn,
                        format!("could not load the CPU, stuck-sensor rule not evaluated: {e}"),
                    )
                    .with_subject("load_generator")
                    .with_error(&e),
                );
                false
            }
        },
        None => false,
    };

    let mut series: Vec<Series> = sensors.iter().map(|_| Series::default()).collect();
    for i in 0..reads {
        if i > 0 {
            board.sleep(opts.interval);
        }
        let at = board.now();
        for (sensor, s) in sensors.iter().zip(series.iter_mut()) {
            match sensor.read() {
                Ok(v) => s.values.push((at, v)),
                Err(e) => {
                    s.errors += 1;
                    s.first_error.get_or_insert(e);
                }
            }
        }
    }

    if let Some(g) = guard {
        if let Err(e) = g.finish() {
            results.push(
                CheckResult::new(
                    NAME,
                    CheckStatus::Fail,
                    format!("could not set the CPU load back to zero: {e}"),
                )
                .with_subject("load_generator")
                .with_error(&e),
            );
        }
    }

    for (sensor, s) in sensors.iter().zip(series) {
        results.push(evaluate(sensor.id(), sensor.kind(), s, under_load, options));
    }
    results
}

#[derive(Debug, Default)]
struct Series {
    values: Vec<(Timestamp, Celsius)>,
    errors: u32,
    first_error: Option<HalError>,
}

fn evaluate(
    id: &str,
    kind: SensorKind,
    s: Series,
    under_load: bool,
    options: &DiagOptions,
) -> CheckResult {
    let opts = &options.sensors;
    let die = matches!(kind, SensorKind::Cpu | SensorKind::Gpu);
    let mut r = CheckResult::new(NAME, CheckStatus::Pass, String::new())
        .with_subject(id)
        .with_threshold("min_c", opts.min_c)
        .with_threshold("max_c", opts.max_c)
        .with_threshold("max_rate_c_per_s", opts.max_rate_c_per_s)
        .with_measured("reads", s.values.len())
        .with_measured("under_load", under_load);

    if let Some(e) = &s.first_error {
        return r
            .with_measured("read_errors", s.errors)
            .with_error(e)
            .with_status(
                CheckStatus::Fail,
                format!("sensor {id} cannot be read: {e}"),
            );
    }
    let Some(&(_, first)) = s.values.first() else {
        return r.with_status(CheckStatus::Fail, format!("sensor {id} returned nothing"));
    };
    if let Some((_, bad)) = s.values.iter().find(|(_, v)| !v.is_finite()) {
        return r.with_status(
            CheckStatus::Fail,
            format!("sensor {id} returned a non-number ({})", bad.get()),
        );
    }
    let min = s.values.iter().map(|v| v.1).fold(first, Celsius::min);
    let max = s.values.iter().map(|v| v.1).fold(first, Celsius::max);
    let max_rate = s
        .values
        .windows(2)
        .map(|w| {
            let (t0, v0) = w[0];
            let (t1, v1) = w[1];
            let mut dt = t1.saturating_since(t0).as_secs_f64();
            if dt <= 0.0 {
                // Clock too coarse to tell: assume the configured spacing.
                dt = opts.interval.as_secs_f64();
            }
            if dt > 0.0 {
                (v1 - v0).get().abs() / dt
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max);
    let stuck = die && under_load && s.values.iter().all(|(_, v)| *v == first);
    r = r
        .with_measured("first_c", round(first.get(), 3))
        .with_measured("min_c", round(min.get(), 3))
        .with_measured("max_c", round(max.get(), 3))
        .with_measured("max_rate_c_per_s", round(max_rate, 3));
    if die {
        r = r.with_measured(
            "stuck_check",
            if under_load {
                "evaluated"
            } else {
                "not_evaluated"
            },
        );
    }

    if min < opts.min_c || max > opts.max_c {
        let v = if min < opts.min_c { min } else { max };
        return r.with_status(
            CheckStatus::Fail,
            format!(
                "sensor {id} read {v:.1}, outside the plausible range {:.0}..{:.0}",
                opts.min_c, opts.max_c
            ),
        );
    }
    if max_rate > opts.max_rate_c_per_s {
        return r.with_status(
            CheckStatus::Fail,
            format!(
                "sensor {id} jumped at {max_rate:.1} °C/s (limit {} °C/s) between {min:.1} and {max:.1}",
                opts.max_rate_c_per_s
            ),
        );
    }
    if stuck {
        return r.with_measured("stuck_suspect", true).with_status(
            CheckStatus::Warn,
            format!(
                "die sensor {id} read exactly {first:.3} on all {} reads under 100 % load: suspected stuck",
                s.values.len()
            ),
        );
    }
    r.with_status(
        CheckStatus::Pass,
        format!("sensor {id}: {min:.1} to {max:.1}, at most {max_rate:.2} °C/s"),
    )
}
