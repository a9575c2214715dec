//! Reading sysfs and procfs files under a configurable root, and finding hwmon
//! devices and thermal zones.
//!
//! Every read goes through [`read_text`], which maps a missing file to
//! [`HalError::NotFound`] and undecodable bytes to [`HalError::SensorFault`], and
//! every number through [`parse_int_in`], which refuses empty, non-numeric and
//! out-of-range text with [`HalError::SensorFault`]: nothing is ever guessed.

use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::error::{HalError, Result};

/// Reads a small text attribute: the whole file, decoded as UTF-8, with trailing
/// whitespace and NUL bytes (device-tree strings) removed.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| HalError::sensor_fault(path.display().to_string(), "not UTF-8 text"))?;
    Ok(text
        .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
        .trim_start()
        .to_owned())
}

/// Writes a small text attribute (sysfs wants the whole value in one write).
pub(crate) fn write_text(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| io_error(path, e))
}

/// Maps an I/O error on `path`: a missing file is [`HalError::NotFound`] naming the
/// path; anything else keeps the OS error with the path as context.
pub(crate) fn io_error(path: &Path, e: io::Error) -> HalError {
    if e.kind() == io::ErrorKind::NotFound {
        HalError::not_found(path.display().to_string())
    } else {
        HalError::io(path.display().to_string(), e)
    }
}

/// Parses a decimal integer and checks it lies in `range`. Empty text, anything
/// that is not a plain integer, and values outside `range` are a
/// [`HalError::SensorFault`] on `sensor`.
pub(crate) fn parse_int_in(sensor: &str, text: &str, range: RangeInclusive<i64>) -> Result<i64> {
    let t = text.trim();
    if t.is_empty() {
        return Err(HalError::sensor_fault(sensor, "empty value"));
    }
    let v: i64 = t
        .parse()
        .map_err(|_| HalError::sensor_fault(sensor, format!("not an integer: {}", excerpt(t))))?;
    if !range.contains(&v) {
        return Err(HalError::sensor_fault(
            sensor,
            format!(
                "{v} is outside the plausible range {}..={}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(v)
}

/// Reads `path` and parses it with [`parse_int_in`]; the sensor is named by its path.
pub(crate) fn read_int_in(path: &Path, range: RangeInclusive<i64>) -> Result<i64> {
    let text = read_text(path)?;
    parse_int_in(&path.display().to_string(), &text, range)
}

/// At most 32 characters of `s`, for error messages about garbage values.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(32).collect();
    if s.chars().count() > 32 {
        out.push('…');
    }
    format!("{out:?}")
}

/// The entries of `dir` whose file name starts with `prefix` and continues with a
/// decimal index, sorted by that index. Symlinks (as in `/sys/class/*`) are kept
/// as paths and followed by later reads. A missing directory gives no entries.
pub(crate) fn indexed_entries(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let idx = name.to_str()?.strip_prefix(prefix)?.parse::<u32>().ok()?;
            // `metadata` follows symlinks: only keep entries that lead to a directory.
            fs::metadata(e.path())
                .ok()?
                .is_dir()
                .then(|| (idx, e.path()))
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out
}

/// One hwmon device found under `sys/class/hwmon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HwmonDevice {
    /// The driver-chosen `name` (`rpi_volt`, `pwmfan`, `ina219`, `cpu_thermal`).
    pub(crate) name: String,
    /// The device's directory (`sys/class/hwmon/hwmonN`, a symlink on real systems).
    pub(crate) dir: PathBuf,
}

/// Every hwmon device under `root`, in index order. Devices are identified by their
/// `name` file, never by their number (hwmon numbering changes between boots);
/// a device whose `name` cannot be read is skipped.
pub(crate) fn hwmon_devices(root: &Path) -> Vec<HwmonDevice> {
    indexed_entries(&root.join("sys/class/hwmon"), "hwmon")
        .into_iter()
        .filter_map(|(_, dir)| {
            let name = read_text(&dir.join("name")).ok()?;
            (!name.is_empty()).then_some(HwmonDevice { name, dir })
        })
        .collect()
}

/// The channels `N` for which `dir` has a file `{prefix}N{suffix}` (`temp1_input`),
/// ascending.
pub(crate) fn channels(dir: &Path, prefix: &str, suffix: &str) -> Vec<u32> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?
                .strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u32>()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HalErrorKind;

    #[test]
    fn parse_int_refuses_garbage() {
        let r = -10..=10;
        assert_eq!(parse_int_in("s", " 7\n", r.clone()).unwrap(), 7);
        for bad in [
            "",
            "  ",
            "abc",
            "1.5",
            "0x10",
            "11",
            "-11",
            "99999999999999999999",
        ] {
            let e = parse_int_in("s", bad, r.clone()).unwrap_err();
            assert_eq!(e.kind(), HalErrorKind::SensorFault, "{bad:?}");
        }
    }

    #[test]
    fn missing_file_is_not_found() {
        let e = read_text(Path::new("/nonexistent/wrale/x")).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::NotFound);
        assert!(e.to_string().contains("/nonexistent/wrale/x"));
    }

    #[test]
    fn text_is_trimmed_of_nuls_and_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model");
        fs::write(&p, b"Raspberry Pi 4 Model B Rev 1.4\0").unwrap();
        assert_eq!(read_text(&p).unwrap(), "Raspberry Pi 4 Model B Rev 1.4");
        fs::write(&p, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read_text(&p).unwrap_err().kind(), HalErrorKind::SensorFault);
    }

    #[test]
    fn entries_sorted_by_index_and_channels() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["hwmon10", "hwmon2", "hwmonx", "other0"] {
            fs::create_dir(dir.path().join(n)).unwrap();
        }
        fs::write(dir.path().join("hwmon3"), "a file, not a device").unwrap();
        let found: Vec<u32> = indexed_entries(dir.path(), "hwmon")
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found, vec![2, 10]);
        let d = dir.path().join("hwmon2");
        for f in ["temp3_input", "temp1_input", "temp1_label", "tempx_input"] {
            fs::write(d.join(f), "1").unwrap();
        }
        assert_eq!(channels(&d, "temp", "_input"), vec![1, 3]);
    }
}
