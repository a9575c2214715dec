//! One full `Board::sample()` of the `linux` backend over the Raspberry Pi 4 fixture
//! tree (`wrale-hal/tests/fixtures/sysfs/pi4`): every thermal zone, hwmon file,
//! cpufreq, `/proc/stat`, `/proc/diskstats` and eMMC attribute read and parsed once.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use wrale_hal::{BackendConfig, LinuxConfig};

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wrale-hal/tests/fixtures/sysfs/pi4")
}

fn sysfs_read(c: &mut Criterion) {
    let config = BackendConfig::Linux(LinuxConfig {
        root: fixture_root(),
        model: None,
        gpio_chip: None,
    });
    let board = match wrale_hal::open(&config) {
        Ok(b) => b,
        Err(e) => panic!("cannot open the Pi 4 fixture tree: {e}"),
    };
    c.bench_function("linux_sample_pi4_fixture", |b| {
        b.iter(|| std::hint::black_box(board.sample()))
    });
}

criterion_group!(benches, sysfs_read);
criterion_main!(benches);
