//! The `rpi` backend: the `linux` backend's sysfs parts, with GPIO and hardware PWM
//! through rppal and I2C sensor drivers on `/dev/i2c-N`.
//!
//! | part | type | source |
//! |---|---|---|
//! | GPIO, edges, PWM | [`RppalGpio`] | rppal (`/dev/gpiomem`, GPIO character device for edges, `/sys/class/pwm`) |
//! | I2C bus (scan) | [`RpiI2cBus`] | `/dev/i2c-N` via linux-embedded-hal |
//! | power monitor | [`Ina219PowerMonitor`], with the firmware's throttle flags from `linux` | [`RpiConfig::ina219`] |
//! | battery | [`Max17048Battery`] | [`RpiConfig::max17048`] |
//! | ambient temperature | [`Sht3xThermal`], id `ambient` | [`RpiConfig::sht3x`] |
//! | temperatures, fan, platform, load | as the `linux` backend | [`RpiConfig::linux`] |
//!
//! **rppal is retired upstream** (its README, July 2025: no new boards, no fixes).
//! That is why it is used only for GPIO and PWM, and why the sensor drivers are
//! written against `embedded-hal` and run here on linux-embedded-hal's `I2cdev`,
//! not on rppal's I2C: moving GPIO to the character device (linux-embedded-hal's
//! `CdevPin`, or the `linux` backend's `CdevGpio`) later is a backend-only change.
//!
//! PWM needs the channel routed to the pin by an overlay (`dtoverlay=pwm-2chan` on
//! Pi 1–4, where GPIO 12/18 share channel 0 and 13/19 channel 1; the Pi 5's RP1 has
//! one channel per pin). Any other pin is refused: Wrale never fakes PWM in software.
//!
//! On a machine rppal cannot identify as a Raspberry Pi, opening the backend
//! ([`crate::open`] with [`BackendConfig::Rpi`](crate::BackendConfig::Rpi)) fails with
//! [`HalError::Unsupported`] and says so.

mod gpio;
mod i2c;

use std::path::Path;
use std::sync::Arc;

use wrale_core::model::ThrottleFlags;
use wrale_core::units::{Amps, Volts, Watts};

pub use gpio::{Debouncer, PwmLayout, RppalGpio};
pub use i2c::{PiI2c, PiI2cError, RpiI2cBus, errno_kind};

use crate::board::{Board, SystemClock};
use crate::drivers::{
    Ina219, Ina219PowerMonitor, Max17048, Max17048Battery, Sht3x, Sht3xThermal, StdDelay,
};
use crate::error::{HalError, Result};
use crate::events::EventHub;
use crate::power::PowerMonitor;
use crate::{LinuxConfig, RpiConfig};

/// Identifies the board through rppal, or explains that this is not a Pi.
fn identify() -> Result<rppal::system::DeviceInfo> {
    rppal::system::DeviceInfo::new().map_err(|e| {
        HalError::unsupported(format!(
            "not a Raspberry Pi: rppal could not identify the board ({e}); use the `linux` \
             backend on other Linux boards"
        ))
    })
}

/// Opens the `rpi` backend.
///
/// Fails with [`HalError::Unsupported`] off a Raspberry Pi, and with a clear error
/// when a configured sensor does not answer or is the wrong chip (the config says it
/// is fitted, so its absence is not silently ignored).
pub(crate) fn open(config: &RpiConfig) -> Result<Board> {
    let info = identify()?;
    let events = EventHub::new();

    // The linux parts, without its GPIO controller: rppal owns GPIO here.
    let linux = LinuxConfig {
        gpio_chip: None,
        ..config.linux.clone()
    };
    let base = crate::linux::board_builder_with_events(&linux, events.clone())?.build();
    let gpio = RppalGpio::new(PwmLayout::for_soc(info.soc()), events.clone())?;

    let mut b = Board::builder(base.profile().clone(), "rpi")
        .clock(Arc::new(SystemClock))
        .events(events)
        .gpio(Arc::new(gpio));
    for t in base.thermal() {
        b = b.thermal(Arc::clone(t));
    }
    for f in base.fans() {
        b = b.fan(Arc::clone(f));
    }
    for s in base.security() {
        b = b.security(Arc::clone(s));
    }
    for bus in base.i2c_buses() {
        b = b.i2c(Arc::clone(bus));
    }
    if let Some(p) = base.platform() {
        b = b.platform(Arc::clone(p));
    }
    if let Some(l) = base.load_generator() {
        b = b.load_generator(Arc::clone(l));
    }
    if let Some(s) = base.supply() {
        b = b.supply(Arc::clone(s));
    }

    let bus_name = format!("i2c-{}", config.i2c_bus);
    let wants_sensor =
        config.ina219.is_some() || config.max17048.is_some() || config.sht3x.is_some();
    if wants_sensor || Path::new(&format!("/dev/i2c-{}", config.i2c_bus)).exists() {
        b = b.i2c(Arc::new(RpiI2cBus::open(config.i2c_bus)?));
    }

    let linux_power = base.power().cloned();
    match &config.ina219 {
        Some(c) => {
            let driver = Ina219::from_config(PiI2c::open(config.i2c_bus)?, c, bus_name.clone())?;
            b = b.power(Arc::new(RpiPower {
                meter: Ina219PowerMonitor::new(driver),
                flags: linux_power,
            }));
        }
        None => {
            if let Some(p) = linux_power {
                b = b.power(p);
            }
        }
    }

    match config.max17048 {
        Some(address) => {
            let mut gauge = Max17048::new(PiI2c::open(config.i2c_bus)?)
                .with_address(address)
                .with_bus_name(bus_name.clone());
            gauge.init()?;
            b = b.battery(Arc::new(Max17048Battery::new(gauge)));
        }
        None => {
            if let Some(bat) = base.battery() {
                b = b.battery(Arc::clone(bat));
            }
        }
    }

    if let Some(address) = config.sht3x {
        if base.thermal().iter().any(|t| t.id() == "ambient") {
            return Err(HalError::InvalidArgument(format!(
                "SHT3x at {bus_name}@0x{address:02x}: the board already has an `ambient` \
                 sensor (a kernel hwmon driver bound to it?)"
            )));
        }
        let mut sensor = Sht3x::new(PiI2c::open(config.i2c_bus)?, StdDelay, address)?
            .with_bus_name(bus_name.clone());
        // One reading proves the sensor answers. A reply with a bad CRC still proves
        // it is there: it stays on the board and its readings show as faults.
        match sensor.measure() {
            Ok(_) | Err(HalError::SensorFault { .. }) => {}
            Err(e) => return Err(e),
        }
        b = b.thermal(Arc::new(Sht3xThermal::new(sensor)));
    }

    Ok(b.build())
}

/// A meter's voltage, current and power (the INA219), with the throttle flags of
/// the `linux` backend's firmware/hwmon monitor when there is one.
#[derive(Debug)]
struct RpiPower<M> {
    meter: M,
    flags: Option<Arc<dyn PowerMonitor>>,
}

impl<M: PowerMonitor> PowerMonitor for RpiPower<M> {
    fn voltage(&self) -> Result<Volts> {
        self.meter.voltage()
    }

    fn current(&self) -> Result<Amps> {
        self.meter.current()
    }

    fn power(&self) -> Result<Watts> {
        self.meter.power()
    }

    fn throttle(&self) -> Result<ThrottleFlags> {
        match &self.flags {
            Some(f) => f.throttle(),
            None => self.meter.throttle(),
        }
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    use super::*;
    use crate::HalErrorKind;
    use crate::drivers::ina219::{Calibration, Settings};
    use wrale_core::units::Ohms;

    /// Stands in for the linux backend's firmware monitor: only the flags matter.
    #[derive(Debug)]
    struct Firmware(u32);

    impl PowerMonitor for Firmware {
        fn voltage(&self) -> Result<Volts> {
            Err(HalError::unsupported("test"))
        }
        fn current(&self) -> Result<Amps> {
            Err(HalError::unsupported("test"))
        }
        fn power(&self) -> Result<Watts> {
            Err(HalError::unsupported("test"))
        }
        fn throttle(&self) -> Result<ThrottleFlags> {
            Ok(ThrottleFlags::from_bits(self.0))
        }
    }

    fn meter(then: &[T]) -> (Ina219PowerMonitor<Mock>, Mock) {
        let mut all = vec![
            T::write(0x40, vec![0x00, 0x39, 0x9F]),
            T::write(0x40, vec![0x05, 0x10, 0x00]),
        ];
        all.extend_from_slice(then);
        let mock = Mock::new(&all);
        let mut ina = Ina219::new(mock.clone(), 0x40).unwrap();
        let cal = Calibration::with_current_lsb(Ohms(0.1), Amps(3.2), Amps(100e-6)).unwrap();
        ina.init(Settings::default(), cal).unwrap();
        (Ina219PowerMonitor::new(ina), mock)
    }

    #[test]
    fn ina219_values_with_firmware_throttle_flags() {
        // BUS 5.0 V = 1250 counts << 3
        let (m, mut mock) = meter(&[T::write_read(
            0x40,
            vec![0x02],
            (1250u16 << 3).to_be_bytes().to_vec(),
        )]);
        let p = RpiPower {
            meter: m,
            flags: Some(Arc::new(Firmware(0x5_0005))),
        };
        assert!((p.voltage().unwrap().get() - 5.0).abs() < 1e-9);
        let flags = p.throttle().unwrap();
        assert!(flags.under_voltage && flags.throttled && flags.under_voltage_occurred);
        mock.done();
    }

    #[test]
    fn without_firmware_flags_throttle_is_unsupported() {
        let (m, mut mock) = meter(&[]);
        let p = RpiPower {
            meter: m,
            flags: None,
        };
        assert_eq!(p.throttle().unwrap_err().kind(), HalErrorKind::Unsupported);
        mock.done();
    }
}
