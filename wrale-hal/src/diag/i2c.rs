//! I2C bus scan against the expected devices.

use std::collections::BTreeSet;

use super::{CheckKind, CheckResult, CheckStatus, DiagOptions, ExpectedI2cDevice, is_absent};
use crate::board::Board;

const NAME: CheckKind = CheckKind::I2cScan;

/// Scans every I2C bus of the board, one result per bus.
///
/// - the addresses that answer are listed (`measured.found`, e.g. `"0x40 0x44"`);
/// - an expected device (from `i2c.expected`) that does not answer is `fail`,
///   named with its address; devices nobody expects are listed, never judged;
/// - a scan error is `fail` with the error text (a bus that cannot be scanned
///   hides every device on it);
/// - an expected device on a bus the board does not have is `fail` for that bus.
///
/// Skipped when the board has no I2C bus and nothing is expected.
pub fn i2c_scan(board: &Board, options: &DiagOptions) -> Vec<CheckResult> {
    let buses = board.i2c_buses();
    let expected = &options.i2c.expected;
    if buses.is_empty() && expected.is_empty() {
        return vec![CheckResult::skip(NAME, "the board has no I2C buses")];
    }
    let mut results = Vec::new();
    for bus in buses {
        let name = bus.name();
        let want: Vec<&ExpectedI2cDevice> = expected.iter().filter(|d| d.bus == name).collect();
        let r = CheckResult::new(NAME, CheckStatus::Pass, String::new()).with_subject(name);
        let r = if want.is_empty() {
            r
        } else {
            r.with_threshold("expected", describe(&want))
        };
        let found = match bus.scan() {
            Ok(f) => f.into_iter().collect::<BTreeSet<u8>>(),
            Err(e) if is_absent(&e) && want.is_empty() => {
                results.push(r.with_error(&e).with_status(
                    CheckStatus::Skip,
                    format!("bus {name} cannot be scanned on this backend: {e}"),
                ));
                continue;
            }
            Err(e) => {
                let hidden = if want.is_empty() {
                    String::new()
                } else {
                    format!("; cannot confirm {}", describe(&want))
                };
                results.push(r.with_error(&e).with_status(
                    CheckStatus::Fail,
                    format!("scan of {name} failed: {e}{hidden}"),
                ));
                continue;
            }
        };
        let found_text = found
            .iter()
            .map(|a| format!("0x{a:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        let r = r
            .with_measured("found", found_text.clone())
            .with_measured("found_count", found.len());
        let missing: Vec<&ExpectedI2cDevice> = want
            .iter()
            .copied()
            .filter(|d| !found.contains(&d.address))
            .collect();
        let shown = if found.is_empty() {
            "nothing".to_owned()
        } else {
            found_text
        };
        if missing.is_empty() {
            results.push(r.with_status(CheckStatus::Pass, format!("bus {name}: found {shown}")));
        } else {
            results.push(r.with_measured("missing", describe(&missing)).with_status(
                CheckStatus::Fail,
                format!("bus {name}: missing {}; found {shown}", describe(&missing)),
            ));
        }
    }

    // Expected devices on buses the board does not have.
    let absent: BTreeSet<&str> = expected
        .iter()
        .map(|d| d.bus.as_str())
        .filter(|b| !buses.iter().any(|x| x.name() == *b))
        .collect();
    for bus in absent {
        let want: Vec<&ExpectedI2cDevice> = expected.iter().filter(|d| d.bus == bus).collect();
        results.push(
            CheckResult::new(
                NAME,
                CheckStatus::Fail,
                format!(
                    "bus {bus} does not exist on this board; expected {}",
                    describe(&want)
                ),
            )
            .with_subject(bus)
            .with_threshold("expected", describe(&want))
            .with_measured("missing", describe(&want)),
        );
    }
    results
}

/// `0x40 (ina219), 0x44 (sht3x)`.
fn describe(devices: &[&ExpectedI2cDevice]) -> String {
    devices
        .iter()
        .map(|d| {
            if d.name.is_empty() {
                format!("0x{:02x}", d.address)
            } else {
                format!("0x{:02x} ({})", d.address, d.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
