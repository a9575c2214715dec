//! Storage wear: eMMC life-time estimates and pre-EOL flag; SD cards report only
//! the bytes written.

use wrale_core::model::{PreEol, StorageKind, StorageWear};

use super::{CheckKind, CheckResult, CheckStatus, DiagOptions, from_error};
use crate::board::Board;

const NAME: CheckKind = CheckKind::StorageWear;

/// eMMC `DEVICE_LIFE_TIME_EST` at or above this (80-90 % used) is `warn`.
pub(crate) const LIFE_WARN: u8 = 0x09;
/// At or above this (maximum estimated life exceeded) is `fail`.
pub(crate) const LIFE_FAIL: u8 = 0x0B;

/// Checks the wear of every block device the platform reports, one result per
/// device.
///
/// - eMMC: the worse of `life_time` A/B (SLC and MLC areas) at `0x09` (80-90 %
///   of the estimated life used) or more is `warn`, `0x0B` (exceeded) is `fail`;
///   `pre_eol_info` warning (80 % of reserved blocks used) is `warn`, urgent (90 %)
///   is `fail`. An eMMC that reports neither passes with a note.
/// - SD cards and other devices report no wear data: `pass`, with the bytes written
///   since boot as the only measurement.
///
/// Skipped when the board has no platform figures or no block devices.
pub fn storage_wear(board: &Board, _options: &DiagOptions) -> Vec<CheckResult> {
    let Some(platform) = board.platform() else {
        return vec![CheckResult::skip(
            NAME,
            "the board reports no platform figures",
        )];
    };
    let devices = match platform.storage() {
        Ok(d) => d,
        Err(e) => return vec![from_error(NAME, "cannot read storage wear", &e)],
    };
    if devices.is_empty() {
        return vec![CheckResult::skip(NAME, "no block devices reported")];
    }
    devices.iter().map(device).collect()
}

fn device(w: &StorageWear) -> CheckResult {
    let r = CheckResult::new(NAME, CheckStatus::Pass, String::new())
        .with_subject(&w.device)
        .with_measured("bytes_written", w.bytes_written)
        .with_measured("kind", kind_name(w.kind));
    match w.kind {
        StorageKind::Emmc => emmc(w, r),
        StorageKind::Sd => CheckResult {
            message: format!(
                "SD card: {} written since boot; SD cards report no wear estimate",
                bytes(w.bytes_written)
            ),
            ..r
        },
        StorageKind::Other => CheckResult {
            message: format!(
                "{} written since boot; no wear estimate available",
                bytes(w.bytes_written)
            ),
            ..r
        },
    }
}

fn emmc(w: &StorageWear, mut r: CheckResult) -> CheckResult {
    r = r
        .with_threshold("life_time_warn", format!("0x{LIFE_WARN:02x}"))
        .with_threshold("life_time_fail", format!("0x{LIFE_FAIL:02x}"))
        .with_threshold("pre_eol_warn", "warning")
        .with_threshold("pre_eol_fail", "urgent");
    if let Some(a) = w.life_time_a {
        r = r.with_measured("life_time_a", a);
    }
    if let Some(b) = w.life_time_b {
        r = r.with_measured("life_time_b", b);
    }
    if let Some(p) = w.life_used_upper_pct() {
        r = r.with_measured("life_used_max_pct", p);
    }
    if let Some(p) = w.pre_eol {
        r = r.with_measured("pre_eol", pre_eol_name(p));
    }
    // 0x00 means "not defined"; anything above 0x0B is reserved, read as exceeded.
    let worst_life = w
        .life_time_a
        .into_iter()
        .chain(w.life_time_b)
        .filter(|v| *v >= 1)
        .max();

    let mut status = CheckStatus::Pass;
    let mut notes = Vec::new();
    if let Some(l) = worst_life {
        if l >= LIFE_FAIL {
            status = status.max(CheckStatus::Fail);
            notes.push(format!(
                "life-time estimate 0x{l:02x}: maximum estimated life exceeded"
            ));
        } else if l >= LIFE_WARN {
            status = status.max(CheckStatus::Warn);
            notes.push(format!(
                "life-time estimate 0x{l:02x}: {}-{} % of the estimated life used",
                (u32::from(l) - 1) * 10,
                u32::from(l) * 10
            ));
        }
    }
    match w.pre_eol {
        Some(PreEol::Urgent) => {
            status = status.max(CheckStatus::Fail);
            notes.push("pre-EOL urgent: 90 % of reserved blocks consumed".to_owned());
        }
        Some(PreEol::Warning) => {
            status = status.max(CheckStatus::Warn);
            notes.push("pre-EOL warning: 80 % of reserved blocks consumed".to_owned());
        }
        _ => {}
    }
    r.status = status;
    r.message = if !notes.is_empty() {
        format!("eMMC {}: {}", w.device, notes.join("; "))
    } else if worst_life.is_none() && matches!(w.pre_eol, None | Some(PreEol::Undefined)) {
        format!(
            "eMMC {} reports no life-time estimate; {} written since boot",
            w.device,
            bytes(w.bytes_written)
        )
    } else {
        let used = worst_life.map_or_else(
            || "unknown".to_owned(),
            |l| format!("at most {} %", u32::from(l) * 10),
        );
        let eol = match w.pre_eol {
            Some(PreEol::Normal) => "pre-EOL normal",
            _ => "no pre-EOL flag",
        };
        format!("eMMC {}: life used {used}, {eol}", w.device)
    };
    r
}

fn kind_name(k: StorageKind) -> &'static str {
    match k {
        StorageKind::Emmc => "emmc",
        StorageKind::Sd => "sd",
        StorageKind::Other => "other",
    }
}

fn pre_eol_name(p: PreEol) -> &'static str {
    match p {
        PreEol::Normal => "normal",
        PreEol::Warning => "warning",
        PreEol::Urgent => "urgent",
        PreEol::Undefined => "undefined",
    }
}

fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}
