//! The `linux` backend: sysfs thermal zones and hwmon, the Raspberry Pi
//! firmware's throttle word, cpufreq, `/proc/stat`, `/proc/diskstats`, eMMC wear
//! attributes, the `pwm-fan` hwmon, GPIO through the character device, and a busy
//! thread CPU load generator.
//!
//! Every path is read under [`LinuxConfig::root`] (`/` on a device), so the whole
//! backend runs against fixture trees in tests (`wrale-hal/tests/fixtures/sysfs/`).
//! Devices are found by what they are, not where they happen to be numbered:
//! hwmon devices by their `name` file (`rpi_volt`, `pwmfan`, `ina219`), thermal
//! zones by their `type`; `/sys/class/*` symlinks are followed.
//!
//! Values are never invented: a missing file is [`HalError::NotFound`](crate::HalError::NotFound) (the sample
//! shows Missing), an empty, non-numeric or physically absurd value is
//! [`HalError::SensorFault`](crate::HalError::SensorFault) (the sample shows `Fault(SensorFault)`).
//!
//! | part | type | source |
//! |---|---|---|
//! | temperatures | [`SysfsThermal`] | `sys/class/thermal/thermal_zone*/temp` (`cpu` for the SoC zone), hwmon `temp*_input` |
//! | fan | [`HwmonFan`] | hwmon `pwmfan`: `pwm1`, `pwm1_enable`, `fan1_input` |
//! | power | [`SysfsPower`] | hwmon `rpi_volt` `in0_lcrit_alarm`, firmware `get_throttled`, INA2xx hwmon |
//! | platform | [`ProcPlatform`] | `proc/stat`, cpufreq, `proc/diskstats`, `sys/block/*/device/{type,life_time,pre_eol_info}` |
//! | GPIO | [`CdevGpio`] | `/dev/gpiochipN` ([`LinuxConfig::gpio_chip`]) |
//! | hardware PWM | [`SysfsPwmPin`] | `sys/class/pwm/pwmchipN` of the header's controller (needs `dtoverlay=pwm-2chan`) |
//! | load | [`BusyLoad`] | busy threads |

mod fan;
mod gpio;
mod load;
mod platform;
mod power;
mod pwm;
mod sysfs;
mod thermal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wrale_core::board::{BoardModel, BoardProfile};

pub use fan::HwmonFan;
pub use gpio::{CdevGpio, CdevInput, CdevOutput};
pub use load::BusyLoad;
pub use platform::ProcPlatform;
pub use power::SysfsPower;
pub use pwm::SysfsPwmPin;
pub use thermal::SysfsThermal;

use crate::LinuxConfig;
use crate::board::{Board, BoardBuilder, Clock, SystemClock};
use crate::error::Result;
use crate::events::EventHub;

/// The board model: [`LinuxConfig::model`] when set, else the device tree's model
/// string (`proc/device-tree/model`, or `sys/firmware/devicetree/base/model` that
/// it links to), else [`BoardModel::Generic`].
pub fn detect_model(c: &LinuxConfig) -> BoardModel {
    if let Some(m) = c.model {
        return m;
    }
    [
        "proc/device-tree/model",
        "sys/firmware/devicetree/base/model",
    ]
    .iter()
    .find_map(|p| sysfs::read_text(&c.root.join(p)).ok())
    .map_or(BoardModel::Generic, |s| BoardModel::from_device_tree(&s))
}

/// The GPIO chip path: absolute paths as given, relative ones under the root.
fn chip_path(c: &LinuxConfig, chip: &Path) -> PathBuf {
    if chip.is_absolute() {
        chip.to_owned()
    } else {
        c.root.join(chip)
    }
}

/// A [`BoardBuilder`] with everything the linux backend found under
/// `c.root`, with a new event hub. See [`board_builder_with_events`].
pub(crate) fn board_builder(c: &LinuxConfig) -> Result<BoardBuilder> {
    board_builder_with_events(c, EventHub::new())
}

/// A [`BoardBuilder`] with everything the linux backend found under `c.root`:
/// thermal sensors, `pwmfan` fans, the power monitor (if any source exists), the
/// platform figures, the GPIO controller (unless `c.gpio_chip` is `None`), the load
/// generator and the wall clock. GPIO edge events and under-voltage changes (seen
/// when the flags are read) go to `events`, which is also set
/// as the board's hub, so a backend layered on top (`rpi`) can hand the same hub to
/// its own parts.
///
/// Fails only when the configured GPIO chip cannot be opened (a missing device is
/// [`HalError::NotFound`](crate::HalError::NotFound) naming it); missing sensors
/// simply leave their part out.
pub(crate) fn board_builder_with_events(c: &LinuxConfig, events: EventHub) -> Result<BoardBuilder> {
    let model = detect_model(c);
    let profile = BoardProfile::builtin(model);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let hwmon = sysfs::hwmon_devices(&c.root);

    let gpio = match &c.gpio_chip {
        Some(chip) => Some(
            CdevGpio::open(&chip_path(c, chip), events.clone(), Arc::clone(&clock))?
                .with_pwm(&c.root, model),
        ),
        None => None,
    };

    let power = SysfsPower::discover(&c.root, &hwmon, events.clone(), Arc::clone(&clock));

    let safe_duty = profile.fan.safe_duty_pct;
    let mut b = Board::builder(profile, "linux")
        .clock(clock)
        .events(events)
        .platform(Arc::new(ProcPlatform::new(&c.root)))
        .load_generator(Arc::new(BusyLoad::new()));
    for t in thermal::discover(&c.root, &hwmon) {
        b = b.thermal(Arc::new(t));
    }
    for f in fan::discover(&hwmon, safe_duty) {
        b = b.fan(Arc::new(f));
    }
    if let Some(p) = power {
        b = b.power(Arc::new(p));
    }
    if let Some(g) = gpio {
        b = b.gpio(Arc::new(g));
    }
    Ok(b)
}

/// Opens the linux backend: [`board_builder`], built.
pub(crate) fn open(c: &LinuxConfig) -> Result<Board> {
    Ok(board_builder(c)?.build())
}
