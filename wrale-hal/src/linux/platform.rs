//! CPU load from `/proc/stat`, CPU frequency from cpufreq, storage wear from
//! `/proc/diskstats` and the eMMC `life_time` / `pre_eol_info` attributes, the
//! boot identity from `/proc/sys/kernel/random/boot_id` and `btime` of `/proc/stat`.

use std::path::PathBuf;
use std::sync::Mutex;

use wrale_core::Timestamp;
use wrale_core::model::{PreEol, StorageKind, StorageWear};
use wrale_core::units::{MegaHertz, Percent};

use super::sysfs;
use crate::error::{HalError, Result};
use crate::platform::{BootInfo, Platform};

/// Aggregate CPU time counters of the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuTimes {
    /// Ticks spent idle (idle + iowait).
    pub(crate) idle: u64,
    /// All ticks (user, nice, system, idle, iowait, irq, softirq, steal).
    pub(crate) total: u64,
}

/// Parses the aggregate `cpu ` line. Guest time is already inside user/nice, so
/// only the first eight counters are summed. Kernels before 2.6.11 print fewer
/// columns; at least four are required.
pub(crate) fn parse_proc_stat(sensor: &str, text: &str) -> Result<CpuTimes> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or_else(|| HalError::sensor_fault(sensor, "no aggregate `cpu` line"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            HalError::sensor_fault(sensor, format!("bad cpu line: {}", sysfs::excerpt(line)))
        })?;
    if fields.len() < 4 {
        return Err(HalError::sensor_fault(
            sensor,
            format!("cpu line has {} counters, need at least 4", fields.len()),
        ));
    }
    let idle = fields[3].checked_add(fields.get(4).copied().unwrap_or(0));
    let total = fields.iter().try_fold(0u64, |a, &f| a.checked_add(f));
    match (idle, total) {
        (Some(idle), Some(total)) => Ok(CpuTimes { idle, total }),
        _ => Err(HalError::sensor_fault(sensor, "cpu counters overflow")),
    }
}

/// Busy fraction between two snapshots; `None` if no tick passed. Counters that go
/// backwards are a fault.
pub(crate) fn load_between(sensor: &str, prev: CpuTimes, now: CpuTimes) -> Result<Option<Percent>> {
    let (Some(d_total), Some(d_idle)) = (
        now.total.checked_sub(prev.total),
        now.idle.checked_sub(prev.idle),
    ) else {
        return Err(HalError::sensor_fault(
            sensor,
            "cpu counters went backwards",
        ));
    };
    if d_idle > d_total {
        return Err(HalError::sensor_fault(
            sensor,
            "idle time grew more than total time",
        ));
    }
    if d_total == 0 {
        return Ok(None);
    }
    let busy = (d_total - d_idle) as f64 / d_total as f64;
    Ok(Some(Percent::saturating(busy * 100.0)))
}

/// The kernel's boot id: a hyphenated UUID (8-4-4-4-12 hex digits), returned in
/// lower case. Anything else is a fault (never a made-up id: a wrong one would look
/// like a reboot to the fleet).
pub(crate) fn parse_boot_id(sensor: &str, text: &str) -> Result<String> {
    let t = text.trim();
    let groups: Vec<&str> = t.split('-').collect();
    let shape_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if shape_ok {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(HalError::sensor_fault(
            sensor,
            format!("not a boot id: {}", sysfs::excerpt(t)),
        ))
    }
}

/// `btime` of `/proc/stat`: the boot time in seconds since the Unix epoch.
pub(crate) fn parse_btime(sensor: &str, text: &str) -> Result<Timestamp> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("btime"))
        .ok_or_else(|| HalError::sensor_fault(sensor, "no `btime` line"))?;
    let mut cols = line.split_whitespace().skip(1);
    match (cols.next().map(str::parse::<i64>), cols.next()) {
        // Seconds since the epoch; anything past year 9999 is garbage, not a time.
        (Some(Ok(secs)), None) if (0..253_402_300_800).contains(&secs) => {
            Ok(Timestamp::from_secs(secs))
        }
        _ => Err(HalError::sensor_fault(
            sensor,
            format!("bad btime line: {}", sysfs::excerpt(line)),
        )),
    }
}

/// One whole-disk line of `/proc/diskstats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskLine {
    pub(crate) name: String,
    pub(crate) sectors_written: u64,
}

/// Whether a block device name is a whole disk Wrale reports on: `mmcblkN`, `sdX`,
/// `nvmeXnY`. Partitions (`mmcblk0p1`, `sda1`, `nvme0n1p2`), eMMC boot and RPMB
/// areas, loop, ram, zram and device-mapper devices are not.
pub(crate) fn is_whole_disk(name: &str) -> bool {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = name.strip_prefix("mmcblk") {
        return all_digits(rest);
    }
    if let Some(rest) = name.strip_prefix("nvme") {
        return rest
            .split_once('n')
            .is_some_and(|(ctrl, ns)| all_digits(ctrl) && all_digits(ns));
    }
    if let Some(rest) = name.strip_prefix("sd") {
        return !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase());
    }
    false
}

/// Whole-disk lines of `/proc/diskstats` (column 10 is sectors written, always in
/// 512-byte units). Lines that do not parse are skipped: a device whose counter is
/// unreadable is left out rather than reported with a made-up figure.
pub(crate) fn parse_diskstats(text: &str) -> Vec<DiskLine> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.get(2)?;
            if !is_whole_disk(name) {
                return None;
            }
            let sectors_written = cols.get(9)?.parse::<u64>().ok()?;
            Some(DiskLine {
                name: name.to_owned(),
                sectors_written,
            })
        })
        .collect()
}

/// One EXT_CSD byte written as `0xNN` (the kernel's `0x%02x`).
fn parse_hex_byte(token: &str) -> Option<u8> {
    let digits = token.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 2 {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}

/// `life_time` (`"0xAA 0xBB"`, EXT_CSD 268/269) into the two estimates. Valid
/// values are 0x01..=0x0B; 0x00 means "not defined" and gives `None`, as does
/// anything that is not exactly two such bytes (the field is skipped, never guessed).
pub(crate) fn parse_life_time(text: &str) -> (Option<u8>, Option<u8>) {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let [a, b] = tokens.as_slice() else {
        return (None, None);
    };
    let one = |t: &str| parse_hex_byte(t).filter(|v| (1..=0x0B).contains(v));
    match (parse_hex_byte(a), parse_hex_byte(b)) {
        (Some(_), Some(_)) => (one(a), one(b)),
        _ => (None, None),
    }
}

/// `pre_eol_info` (`"0x01"`, EXT_CSD 267); unparseable text gives `None`.
pub(crate) fn parse_pre_eol(text: &str) -> Option<PreEol> {
    let t = text.trim();
    if t.split_whitespace().count() != 1 {
        return None;
    }
    parse_hex_byte(t).map(PreEol::from_byte)
}

/// CPU and storage figures from procfs and sysfs under a root.
#[derive(Debug)]
pub struct ProcPlatform {
    root: PathBuf,
    proc_stat: PathBuf,
    /// Previous `/proc/stat` snapshot and the last load computed.
    cpu: Mutex<CpuState>,
}

#[derive(Debug, Default)]
struct CpuState {
    prev: CpuTimes,
    last: Option<Percent>,
}

impl ProcPlatform {
    /// Platform figures read under `root` (`/` on a device).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            proc_stat: root.join("proc/stat"),
            root,
            cpu: Mutex::new(CpuState::default()),
        }
    }

    fn storage_of(&self, disk: &DiskLine) -> Option<StorageWear> {
        let dev = self.root.join("sys/block").join(&disk.name).join("device");
        let kind = match sysfs::read_text(&dev.join("type")).as_deref() {
            Ok("MMC") => StorageKind::Emmc,
            Ok("SD") => StorageKind::Sd,
            _ => StorageKind::Other,
        };
        let (life_time_a, life_time_b) = sysfs::read_text(&dev.join("life_time"))
            .map(|t| parse_life_time(&t))
            .unwrap_or((None, None));
        let pre_eol = sysfs::read_text(&dev.join("pre_eol_info"))
            .ok()
            .and_then(|t| parse_pre_eol(&t));
        Some(StorageWear {
            device: disk.name.clone(),
            kind,
            life_time_a,
            life_time_b,
            pre_eol,
            bytes_written: disk.sectors_written.checked_mul(512)?,
        })
    }
}

/// Plausible CPU clock: 1 MHz ..= 10 GHz, in kHz as cpufreq writes it.
const CPU_KHZ_RANGE: std::ops::RangeInclusive<i64> = 1_000..=10_000_000;

impl Platform for ProcPlatform {
    fn cpu_load(&self) -> Result<Percent> {
        let sensor = self.proc_stat.display().to_string();
        let now = parse_proc_stat(&sensor, &sysfs::read_text(&self.proc_stat)?)?;
        let mut st = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
        let prev = st.prev;
        match load_between(&sensor, prev, now) {
            Ok(Some(load)) => {
                st.prev = now;
                st.last = Some(load);
                Ok(load)
            }
            // Called again within one clock tick: the last figure still stands.
            Ok(None) => st
                .last
                .ok_or_else(|| HalError::sensor_fault(sensor, "no CPU time has passed")),
            Err(e) => {
                // Start again from this snapshot, so one bad read does not stick.
                st.prev = now;
                st.last = None;
                Err(e)
            }
        }
    }

    fn cpu_freq(&self) -> Result<MegaHertz> {
        let dir = self.root.join("sys/devices/system/cpu/cpu0/cpufreq");
        let cur = dir.join("scaling_cur_freq");
        let path = if cur.exists() {
            cur
        } else {
            dir.join("cpuinfo_cur_freq")
        };
        let khz = sysfs::read_int_in(&path, CPU_KHZ_RANGE)?;
        Ok(MegaHertz(khz as f64 / 1000.0))
    }

    fn storage(&self) -> Result<Vec<StorageWear>> {
        let text = sysfs::read_text(&self.root.join("proc/diskstats"))?;
        Ok(parse_diskstats(&text)
            .iter()
            .filter_map(|d| self.storage_of(d))
            .collect())
    }

    fn boot(&self) -> Result<BootInfo> {
        let id_path = self.root.join("proc/sys/kernel/random/boot_id");
        let boot_id = parse_boot_id(&id_path.display().to_string(), &sysfs::read_text(&id_path)?)?;
        let booted_at = parse_btime(
            &self.proc_stat.display().to_string(),
            &sysfs::read_text(&self.proc_stat)?,
        )?;
        Ok(BootInfo { boot_id, booted_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HalErrorKind;

    #[test]
    fn proc_stat_and_load() {
        let a = parse_proc_stat("s", "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                idle: 800,
                total: 1000
            }
        );
        let b = parse_proc_stat("s", "cpu  250 0 150 850 150 0 0 0 0 0\n").unwrap();
        // 200 busy of 400 ticks.
        assert_eq!(
            load_between("s", a, b).unwrap(),
            Some(Percent::saturating(50.0))
        );
        assert_eq!(load_between("s", b, b).unwrap(), None);
        assert_eq!(
            load_between("s", b, a).unwrap_err().kind(),
            HalErrorKind::SensorFault
        );
        for bad in ["", "cpu0 1 2 3 4", "cpu  1 2 x 4", "cpu 1 2", "intr 5"] {
            assert_eq!(
                parse_proc_stat("s", bad).unwrap_err().kind(),
                HalErrorKind::SensorFault,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn boot_id_and_btime() {
        assert_eq!(
            parse_boot_id("s", "4B0B5C2E-96f1-4c3a-9d47-0123456789ab\n").unwrap(),
            "4b0b5c2e-96f1-4c3a-9d47-0123456789ab"
        );
        for bad in [
            "",
            "banana",
            "4b0b5c2e96f14c3a9d470123456789ab",
            "4b0b5c2e-96f1-4c3a-9d47-0123456789a",
            "4b0b5c2e-96f1-4c3a-9d47-0123456789ag",
            "4b0b5c2e-96f1-4c3a-9d47-0123456789ab-00",
        ] {
            assert_eq!(
                parse_boot_id("s", bad).unwrap_err().kind(),
                HalErrorKind::SensorFault,
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_btime("s", "cpu  1 2 3 4\nbtime 1795000000\nprocesses 4\n").unwrap(),
            Timestamp::from_secs(1_795_000_000)
        );
        for bad in [
            "",
            "cpu  1 2 3 4\n",
            "btime\n",
            "btime -5\n",
            "btime 12x\n",
            "btime 1 2\n",
            "btime 99999999999999\n",
        ] {
            assert_eq!(
                parse_btime("s", bad).unwrap_err().kind(),
                HalErrorKind::SensorFault,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn whole_disks_only() {
        for d in ["mmcblk0", "mmcblk1", "sda", "sdab", "nvme0n1"] {
            assert!(is_whole_disk(d), "{d}");
        }
        for d in [
            "mmcblk0p1",
            "mmcblk0boot0",
            "mmcblk0rpmb",
            "sda1",
            "nvme0n1p2",
            "loop0",
            "ram0",
            "zram0",
            "dm-0",
            "mmcblk",
            "sd",
            "nvme0",
        ] {
            assert!(!is_whole_disk(d), "{d}");
        }
    }

    #[test]
    fn diskstats_column_ten() {
        let text = " 179       0 mmcblk0 5 6 7 8 9 10 2048 12 13 14 15\n\
                    179       1 mmcblk0p1 5 6 7 8 9 10 999 12 13 14 15\n\
                      7       0 loop0 1 2 3 4 5 6 7 8 9 10 11\n\
                      8       0 sda 1 2 3 4 5 6 oops 8 9 10 11\n\
                    short line\n";
        assert_eq!(
            parse_diskstats(text),
            vec![DiskLine {
                name: "mmcblk0".into(),
                sectors_written: 2048
            }]
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic_nor_invent(text in "\\PC{0,64}", lines in proptest::collection::vec(proptest::prop_oneof![
            "[a-z0-9 ]{0,40}",
            " *[0-9]{1,3} +[0-9]{1,3} (mmcblk[0-9]|mmcblk0p[0-9]|sd[a-c]|nvme0n1|loop0)( [0-9x]{1,6}){5,12}",
        ], 0..6)) {
            let (a, b) = parse_life_time(&text);
            for v in [a, b].into_iter().flatten() {
                proptest::prop_assert!((1..=0x0B).contains(&v));
            }
            let _ = parse_pre_eol(&text);
            let _ = parse_proc_stat("s", &text);
            let joined = lines.join("\n");
            for d in parse_diskstats(&joined) {
                proptest::prop_assert!(is_whole_disk(&d.name));
                // The figure is column 10 of one of the disk's own lines, verbatim.
                let from_a_line = joined.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.get(2) == Some(&d.name.as_str())
                        && cols.get(9).and_then(|c| c.parse::<u64>().ok()) == Some(d.sectors_written)
                });
                proptest::prop_assert!(from_a_line);
            }
        }
    }

    #[test]
    fn emmc_attributes() {
        assert_eq!(parse_life_time("0x01 0x02\n"), (Some(1), Some(2)));
        assert_eq!(parse_life_time("0x00 0x0b"), (None, Some(11)));
        assert_eq!(parse_life_time("0x0c 0x02"), (None, Some(2)));
        for bad in [
            "",
            "0x01",
            "0x01 0x02 0x03",
            "1 2",
            "0xZZ 0x02",
            "0x001 0x02",
        ] {
            assert_eq!(parse_life_time(bad), (None, None), "{bad:?}");
        }
        assert_eq!(parse_pre_eol("0x01"), Some(PreEol::Normal));
        assert_eq!(parse_pre_eol("0x03\n"), Some(PreEol::Urgent));
        assert_eq!(parse_pre_eol("0x07"), Some(PreEol::Undefined));
        for bad in ["", "banana", "0x01 0x02", "1"] {
            assert_eq!(parse_pre_eol(bad), None, "{bad:?}");
        }
    }
}
