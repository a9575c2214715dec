//! The `linux` backend against fixture trees that mirror real Raspberry Pi sysfs
//! and procfs layouts (`tests/fixtures/sysfs/{pi4,pi5,cm4,broken}`).
//!
//! Every test works on a temporary copy of its fixture: the fan writes its safe
//! duty when the board is dropped, and the committed fixtures must stay as they are.
#![cfg(all(feature = "linux", target_os = "linux"))]

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tempfile::TempDir;
use wrale_core::board::BoardModel;
use wrale_core::model::{
    HalErrorKind, PreEol, Reading, SensorKind, StorageKind, StorageWear, ThrottleFlags,
};
use wrale_core::units::{Amps, Celsius, MegaHertz, Percent, Rpm, Volts, Watts};
use wrale_hal::{BackendConfig, Board, HalEvent, LinuxConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name)
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A private copy of a fixture tree.
fn copy_fixture(name: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(name), dir.path());
    dir
}

fn config(root: &Path) -> LinuxConfig {
    LinuxConfig {
        root: root.to_owned(),
        model: None,
        gpio_chip: None,
    }
}

fn open(root: &Path) -> Board {
    wrale_hal::open(&BackendConfig::Linux(config(root))).unwrap()
}

fn temp(board_sample: &wrale_core::Sample, id: &str) -> Reading<Celsius> {
    board_sample
        .temperatures
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("no sensor {id:?} in {:?}", board_sample.temperatures))
        .value
}

fn fault<T>() -> Reading<T> {
    Reading::Fault(HalErrorKind::SensorFault)
}

fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    fs::write(root.join(rel), content).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap()
}

#[test]
fn pi4_sample_is_exact() {
    let dir = copy_fixture("pi4");
    let board = open(dir.path());
    assert_eq!(board.backend(), "linux");
    assert_eq!(board.profile().model, BoardModel::Pi4B);

    let s = board.sample();
    // thermal_zone0 only: hwmon `cpu_thermal` is the thermal core's mirror of it.
    assert_eq!(s.temperatures.len(), 1, "{:?}", s.temperatures);
    assert_eq!(s.temperatures[0].id, "cpu");
    assert_eq!(s.temperatures[0].kind, SensorKind::Cpu);
    assert_eq!(s.cpu_temp(), Reading::Ok(Celsius(54.53)));
    assert!(s.fans.is_empty());

    // get_throttled reads 0x40005 (bit 16 cleared by the hwmon driver's polling);
    // in0_lcrit_alarm = 1 restores under_voltage_occurred.
    let flags = s.throttle.ok().unwrap();
    assert_eq!(flags, ThrottleFlags::from_bits(0x5_0005));
    assert!(flags.under_voltage && flags.throttled && flags.throttled_occurred);
    assert!(flags.under_voltage_occurred);
    assert!(!flags.freq_capped && !flags.soft_temp_limit);

    // No INA2xx: no voltage, current or power figures, and no fault either.
    assert_eq!(s.supply_voltage, Reading::Missing);
    assert_eq!(s.current, Reading::Missing);
    assert_eq!(s.power, Reading::Missing);

    assert_eq!(s.cpu_freq, Reading::Ok(MegaHertz(1500.0)));
    // First call: since boot. busy = user+nice+system+irq+softirq+steal = 13 500 of 94 000.
    assert_eq!(
        s.cpu_load,
        Reading::Ok(Percent::saturating(13_500.0 / 94_000.0 * 100.0))
    );
    assert_eq!(
        s.storage,
        vec![StorageWear {
            device: "mmcblk0".into(),
            kind: StorageKind::Sd,
            life_time_a: None,
            life_time_b: None,
            pre_eol: None,
            bytes_written: 409_600 * 512,
        }]
    );
}

#[test]
fn cpu_load_is_the_delta_between_two_snapshots() {
    let dir = copy_fixture("pi4");
    let board = open(dir.path());
    let platform = board.platform().unwrap();
    platform.cpu_load().unwrap();
    // 1 600 ticks later, 700 of them idle (600 idle + 100 iowait): 900 busy.
    write(
        dir.path(),
        "proc/stat",
        "cpu  10600 200 3200 80600 600 0 400 0 0 0\ncpu0 1 1 1 1 1 0 0 0 0 0\n",
    );
    assert_eq!(
        board.sample().cpu_load,
        Reading::Ok(Percent::saturating(56.25))
    );
    // No tick since: the last figure stands.
    assert_eq!(platform.cpu_load().unwrap(), Percent::saturating(56.25));
    // Counters going backwards are a fault, not a negative or made-up load...
    write(dir.path(), "proc/stat", "cpu  1 0 1 1 0 0 0 0 0 0\n");
    assert_eq!(
        board.sample().cpu_load,
        Reading::Fault(HalErrorKind::SensorFault)
    );
    // ...and measuring restarts from that snapshot.
    write(dir.path(), "proc/stat", "cpu  3 0 1 3 0 0 0 0 0 0\n");
    assert_eq!(platform.cpu_load().unwrap(), Percent::saturating(50.0));
}

#[test]
fn boot_identity_from_proc() {
    let dir = copy_fixture("pi4");
    let board = open(dir.path());
    let boot = board.boot().unwrap();
    assert_eq!(boot.boot_id, "6e1f0a2c-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(
        boot.booted_at,
        wrale_core::Timestamp::from_secs(1_795_000_000)
    );
    // A reboot: the kernel draws a new id and the boot time moves.
    write(
        dir.path(),
        "proc/sys/kernel/random/boot_id",
        "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D\n",
    );
    write(
        dir.path(),
        "proc/stat",
        "cpu  1 0 1 1 0 0 0 0 0 0\nbtime 1795003600\n",
    );
    let again = board.boot().unwrap();
    assert_eq!(again.boot_id, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
    assert_eq!(
        again.booted_at,
        wrale_core::Timestamp::from_secs(1_795_003_600)
    );
    // Garbage is a sensor fault, never a made-up id; a missing file is not found.
    write(dir.path(), "proc/sys/kernel/random/boot_id", "not-a-uuid\n");
    assert_eq!(board.boot().unwrap_err().kind(), HalErrorKind::SensorFault);
    write(
        dir.path(),
        "proc/sys/kernel/random/boot_id",
        "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\n",
    );
    write(dir.path(), "proc/stat", "cpu  1 0 1 1 0 0 0 0 0 0\n");
    assert_eq!(board.boot().unwrap_err().kind(), HalErrorKind::SensorFault);
    fs::remove_file(dir.path().join("proc/sys/kernel/random/boot_id")).unwrap();
    assert_eq!(board.boot().unwrap_err().kind(), HalErrorKind::NotFound);
}

#[test]
fn pi5_sample_is_exact() {
    let dir = copy_fixture("pi5");
    let board = open(dir.path());
    assert_eq!(board.profile().model, BoardModel::Pi5);
    let s = board.sample();

    let ids: Vec<&str> = s.temperatures.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["cpu", "rp1_adc/temp1"]);
    assert_eq!(s.cpu_temp(), Reading::Ok(Celsius(61.25)));
    assert_eq!(temp(&s, "rp1_adc/temp1"), Reading::Ok(Celsius(55.422)));

    assert_eq!(s.fans.len(), 1);
    assert_eq!(s.fans[0].id, "fan0");
    assert_eq!(
        s.fans[0].duty,
        Reading::Ok(Percent::saturating(75.0 * 100.0 / 255.0))
    );
    assert_eq!(s.fans[0].rpm, Reading::Ok(Rpm(3310.0)));

    assert_eq!(s.throttle, Reading::Ok(ThrottleFlags::default()));
    assert_eq!(s.supply_voltage, Reading::Missing);
    assert_eq!(s.cpu_freq, Reading::Ok(MegaHertz(2400.0)));
    assert_eq!(s.cpu_load, Reading::Ok(Percent::saturating(6.0)));
    assert_eq!(
        s.storage,
        vec![
            StorageWear {
                device: "mmcblk0".into(),
                kind: StorageKind::Sd,
                life_time_a: None,
                life_time_b: None,
                pre_eol: None,
                bytes_written: 65_536 * 512,
            },
            StorageWear {
                device: "nvme0n1".into(),
                kind: StorageKind::Other,
                life_time_a: None,
                life_time_b: None,
                pre_eol: None,
                bytes_written: 2_000_000 * 512,
            },
        ]
    );
}

#[test]
fn cm4_emmc_wear_and_ina219_power() {
    let dir = copy_fixture("cm4");
    let board = open(dir.path());
    assert_eq!(board.profile().model, BoardModel::Cm4);
    let s = board.sample();
    assert_eq!(s.cpu_temp(), Reading::Ok(Celsius(47.712)));
    assert_eq!(s.supply_voltage, Reading::Ok(Volts(5.08)));
    assert_eq!(s.current, Reading::Ok(Amps(0.82)));
    assert_eq!(s.power, Reading::Ok(Watts(4.16)));
    // No get_throttled on this tree; the alarm alone gives the flags.
    assert_eq!(s.throttle, Reading::Ok(ThrottleFlags::default()));
    assert_eq!(s.cpu_freq, Reading::Ok(MegaHertz(600.0)));
    assert_eq!(
        s.storage,
        vec![
            StorageWear {
                device: "mmcblk0".into(),
                kind: StorageKind::Emmc,
                life_time_a: Some(1),
                life_time_b: Some(2),
                pre_eol: Some(PreEol::Normal),
                bytes_written: 123_456 * 512,
            },
            StorageWear {
                device: "sda".into(),
                kind: StorageKind::Other,
                life_time_a: None,
                life_time_b: None,
                pre_eol: None,
                bytes_written: 80 * 512,
            },
        ]
    );
    assert_eq!(
        s.storage[0].life_used_upper_pct(),
        Some(Percent::saturating(20.0))
    );

    // The alarm going up is seen on the next sample, and published once.
    let events = board.events().subscribe(8);
    write(dir.path(), "sys/class/hwmon/hwmon0/in0_lcrit_alarm", "1\n");
    let flags = board.sample().throttle.ok().unwrap();
    assert!(flags.under_voltage_occurred);
    assert!(
        !flags.under_voltage,
        "`now` bits come from get_throttled only"
    );
    board.sample();
    write(dir.path(), "sys/class/hwmon/hwmon0/in0_lcrit_alarm", "0\n");
    board.sample();
    let seen: Vec<bool> = events
        .try_iter()
        .map(|e| match e {
            HalEvent::UnderVoltage { active, .. } => active,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(seen, [true, false]);
}

#[test]
fn model_from_config_wins_over_device_tree() {
    let dir = copy_fixture("pi4");
    let mut c = config(dir.path());
    c.model = Some(BoardModel::Cm4);
    let board = wrale_hal::open(&BackendConfig::Linux(c)).unwrap();
    assert_eq!(board.profile().model, BoardModel::Cm4);
}

#[test]
fn broken_tree_gives_faults_and_missing_never_values() {
    let dir = copy_fixture("broken");
    let board = open(dir.path());
    // No device-tree model: the generic profile.
    assert_eq!(board.profile().model, BoardModel::Generic);
    let s = board.sample();

    let ids: Vec<(&str, SensorKind)> = s
        .temperatures
        .iter()
        .map(|t| (t.id.as_str(), t.kind))
        .collect();
    assert_eq!(
        ids,
        [
            ("cpu", SensorKind::Cpu),
            ("gpu-thermal", SensorKind::Gpu),
            ("pmic-thermal", SensorKind::Other),
            ("board-thermal", SensorKind::Other),
        ],
        "hwmon3 has no name file and must be skipped"
    );
    assert_eq!(temp(&s, "cpu"), fault()); // "not a number"
    assert_eq!(temp(&s, "gpu-thermal"), fault()); // 200000000 m°C
    assert_eq!(temp(&s, "pmic-thermal"), fault()); // empty
    assert_eq!(temp(&s, "board-thermal"), Reading::Missing); // no temp file

    assert_eq!(s.fans.len(), 1);
    assert_eq!(s.fans[0].duty, fault()); // pwm1 = 300
    assert_eq!(s.fans[0].rpm, fault()); // fan1_input = -5

    assert_eq!(s.throttle, fault()); // in0_lcrit_alarm = 7
    assert_eq!(s.supply_voltage, fault()); // "5.1V"
    assert_eq!(s.current, Reading::Missing); // no curr1_input
    assert_eq!(s.power, fault()); // 10^14 µW
    assert_eq!(s.cpu_load, fault());
    assert_eq!(s.cpu_freq, fault());

    // mmcblk0's sector count is garbage: left out. mmcblk1's life_time and
    // pre_eol_info are garbage: those fields are skipped, the rest is kept.
    assert_eq!(
        s.storage,
        vec![
            StorageWear {
                device: "sda".into(),
                kind: StorageKind::Other,
                life_time_a: None,
                life_time_b: None,
                pre_eol: None,
                bytes_written: 4096 * 512,
            },
            StorageWear {
                device: "mmcblk1".into(),
                kind: StorageKind::Emmc,
                life_time_a: None,
                life_time_b: None,
                pre_eol: None,
                bytes_written: 10 * 512,
            },
        ]
    );
}

#[test]
fn empty_root_opens_with_nothing_and_samples_missing() {
    let dir = tempfile::tempdir().unwrap();
    let board = open(dir.path());
    assert_eq!(board.profile().model, BoardModel::Generic);
    let s = board.sample();
    assert!(s.temperatures.is_empty() && s.fans.is_empty() && s.storage.is_empty());
    assert!(board.power().is_none());
    assert_eq!(s.throttle, Reading::Missing);
    assert_eq!(s.cpu_freq, Reading::Missing);
    assert_eq!(s.cpu_load, Reading::Missing);
}

#[test]
fn fan_duty_is_written_and_safe_duty_on_drop() {
    let dir = copy_fixture("pi5");
    let root = dir.path();

    // A fan Wrale never drove stays under the kernel's control: nothing is written.
    drop(open(root));
    assert_eq!(read(root, "sys/class/hwmon/hwmon2/pwm1"), "75\n");
    assert_eq!(read(root, "sys/class/hwmon/hwmon2/pwm1_enable"), "2\n");

    let board = open(root);
    let fan = board.fan("fan0").unwrap();
    assert!(fan.has_tach());

    fan.set_duty(Percent::saturating(40.0)).unwrap();
    assert_eq!(read(root, "sys/class/hwmon/hwmon2/pwm1"), "102");
    assert_eq!(read(root, "sys/class/hwmon/hwmon2/pwm1_enable"), "1");
    assert_eq!(fan.duty().unwrap(), Percent::saturating(40.0));

    fan.set_duty(Percent::ZERO).unwrap();
    assert_eq!(read(root, "sys/class/hwmon/hwmon2/pwm1"), "0");
    assert_eq!(board.sample().fans[0].duty, Reading::Ok(Percent::ZERO));

    // Fail-safe: dropping the board (the last owner of the fan) writes the Pi 5
    // profile's safe duty, 100 %.
    let clone = board.clone();
    drop(board);
    assert_eq!(
        read(root, "sys/class/hwmon/hwmon2/pwm1"),
        "0",
        "a clone still owns it"
    );
    drop(clone);
    assert_eq!(read(root, "sys/class/hwmon/hwmon2/pwm1"), "255");
}

#[cfg(unix)]
#[test]
fn hwmon_and_thermal_symlinks_are_followed_and_found_by_name() {
    use std::os::unix::fs::symlink;
    let dir = copy_fixture("pi5");
    let root = dir.path();
    // Real sysfs: /sys/class/hwmon/hwmonN -> ../../devices/.../hwmon/hwmonN, and the
    // numbers change between boots. Move the fan to hwmon7 behind a symlink.
    let real = root.join("sys/devices/platform/cooling_fan/hwmon/hwmon7");
    fs::create_dir_all(real.parent().unwrap()).unwrap();
    fs::rename(root.join("sys/class/hwmon/hwmon2"), &real).unwrap();
    symlink(
        "../../devices/platform/cooling_fan/hwmon/hwmon7",
        root.join("sys/class/hwmon/hwmon7"),
    )
    .unwrap();
    let zone = root.join("sys/devices/virtual/thermal/thermal_zone0");
    fs::create_dir_all(zone.parent().unwrap()).unwrap();
    fs::rename(root.join("sys/class/thermal/thermal_zone0"), &zone).unwrap();
    symlink(
        "../../devices/virtual/thermal/thermal_zone0",
        root.join("sys/class/thermal/thermal_zone0"),
    )
    .unwrap();

    let board = open(root);
    let s = board.sample();
    assert_eq!(s.cpu_temp(), Reading::Ok(Celsius(61.25)));
    assert_eq!(s.fans.len(), 1);
    assert_eq!(s.fans[0].rpm, Reading::Ok(Rpm(3310.0)));
    board.fan("fan0").unwrap().set_duty(Percent::FULL).unwrap();
    assert_eq!(fs::read_to_string(real.join("pwm1")).unwrap(), "255");
}

#[test]
fn gpio_disabled_missing_chip_and_non_chip() {
    let dir = copy_fixture("pi4");
    // None: no GPIO controller, the rest works.
    let board = open(dir.path());
    assert_eq!(board.gpio().unwrap_err().kind(), HalErrorKind::Unsupported);

    // A configured chip that does not exist: a clear NotFound naming it.
    let mut c = config(dir.path());
    c.gpio_chip = Some(PathBuf::from("/dev/gpiochip-wrale-missing"));
    let e = wrale_hal::open(&BackendConfig::Linux(c.clone())).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::NotFound);
    assert!(e.to_string().contains("/dev/gpiochip-wrale-missing"), "{e}");

    // A relative chip path is taken under the root; a plain file is not a chip.
    write(dir.path(), "gpiochip0", "plain file");
    c.gpio_chip = Some(PathBuf::from("gpiochip0"));
    let e = wrale_hal::open(&BackendConfig::Linux(c)).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("not a GPIO character device"), "{e}");
}

#[test]
fn load_generator_is_present_and_stops() {
    let dir = copy_fixture("pi4");
    let board = open(dir.path());
    let load = board.load_generator().unwrap();
    load.set_load(Percent::saturating(20.0)).unwrap();
    load.set_load(Percent::ZERO).unwrap();
}

/// The text a sysfs attribute holds: UTF-8, without surrounding whitespace and
/// trailing NULs.
fn sysfs_text(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    Some(
        s.trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
            .trim(),
    )
}

/// What a correct reader may report for a file holding `bytes`: the integer if the
/// text is one and lies in `range`.
fn expected_int(bytes: &[u8], range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    let v: i64 = sysfs_text(bytes)?.parse().ok()?;
    range.contains(&v).then_some(v)
}

fn sensor_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        "[-+]?[0-9]{0,12}[ \n\t]?".prop_map(String::into_bytes),
        "(0x)?[0-9a-fA-F ]{0,10}\n?".prop_map(String::into_bytes),
    ]
}

#[test]
fn random_bytes_in_sensor_files_never_panic_nor_lie() {
    let dir = copy_fixture("pi5");
    let root = dir.path().to_owned();
    let board = open(&root);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(
            &(
                sensor_bytes(),
                sensor_bytes(),
                sensor_bytes(),
                sensor_bytes(),
                sensor_bytes(),
            ),
            |(temp_b, pwm_b, freq_b, throttle_b, stat_b)| {
                write(&root, "sys/class/thermal/thermal_zone0/temp", &temp_b);
                write(&root, "sys/class/hwmon/hwmon2/pwm1", &pwm_b);
                write(
                    &root,
                    "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
                    &freq_b,
                );
                write(
                    &root,
                    "sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled",
                    &throttle_b,
                );
                write(&root, "proc/stat", &stat_b);
                let s = board.sample();

                match (s.cpu_temp(), expected_int(&temp_b, -60_000..=150_000)) {
                    (Reading::Ok(c), Some(m)) => prop_assert_eq!(c, Celsius(m as f64 / 1000.0)),
                    (Reading::Fault(HalErrorKind::SensorFault), None) => {}
                    (got, want) => {
                        prop_assert!(false, "temp {:?}: got {:?}, want {:?}", temp_b, got, want)
                    }
                }

                let pwm = expected_int(&pwm_b, 0..=255);
                match (s.fans[0].duty, pwm) {
                    (Reading::Ok(d), Some(raw)) => {
                        prop_assert_eq!(d, Percent::saturating(raw as f64 * 100.0 / 255.0))
                    }
                    (Reading::Fault(HalErrorKind::SensorFault), None) => {}
                    (got, want) => {
                        prop_assert!(false, "pwm {:?}: got {:?}, want {:?}", pwm_b, got, want)
                    }
                }

                let khz = expected_int(&freq_b, 1_000..=10_000_000);
                match (s.cpu_freq, khz) {
                    (Reading::Ok(f), Some(k)) => prop_assert_eq!(f, MegaHertz(k as f64 / 1000.0)),
                    (Reading::Fault(HalErrorKind::SensorFault), None) => {}
                    (got, want) => {
                        prop_assert!(false, "freq {:?}: got {:?}, want {:?}", freq_b, got, want)
                    }
                }

                // The throttle word: a flag may only be reported if the text is a hex
                // word and the flags are exactly its bits (rpi_volt alarm is 0 here).
                if let Reading::Ok(flags) = s.throttle {
                    let t = sysfs_text(&throttle_b).unwrap();
                    let digits = t.strip_prefix("0x").or(t.strip_prefix("0X")).unwrap_or(t);
                    let word = u32::from_str_radix(digits, 16).unwrap();
                    prop_assert!(!digits.starts_with('+'));
                    prop_assert_eq!(flags, ThrottleFlags::from_bits(word));
                } else {
                    prop_assert_eq!(s.throttle, Reading::Fault(HalErrorKind::SensorFault));
                }

                // CPU load is a percentage or a fault, never out of range.
                match s.cpu_load {
                    Reading::Ok(p) => prop_assert!((0.0..=100.0).contains(&p.get())),
                    Reading::Fault(HalErrorKind::SensorFault) => {}
                    other => prop_assert!(false, "cpu load {:?}", other),
                }
                Ok(())
            },
        )
        .unwrap();
}
