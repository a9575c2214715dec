//! Hardware PWM through the kernel's PWM class (`sys/class/pwm/pwmchipN`).
//!
//! The header's PWM pins only reach the PWM controller when the device tree says
//! so (`dtoverlay=pwm` or `dtoverlay=pwm-2chan` in `config.txt`); without it there
//! is no chip and a claim is refused with [`HalError::Unsupported`]. The chip is
//! found by the controller it belongs to (its resolved sysfs path), never by its
//! number: on a Pi 5 the fan's PWM controller is a `pwmchip` too.
//!
//! | board | controller | GPIO -> channel |
//! |---|---|---|
//! | Pi 3B+, Zero 2 W, Pi 4, CM4 | `…20c000.pwm` (BCM PWM0) | 12, 18 -> 0; 13, 19 -> 1 |
//! | Pi 5 | `1f00098000.pwm` (RP1 PWM0) | 12 -> 0, 13 -> 1, 18 -> 2, 19 -> 3 |
//!
//! On the BCM boards two pins share each channel: claiming GPIO 18 while GPIO 12
//! holds channel 0 is refused as busy.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wrale_core::board::BoardModel;
use wrale_core::units::{Hertz, Percent};

use super::sysfs;
use crate::error::{HalError, Result};
use crate::gpio::{DropState, PwmPin};

/// How long to wait for the kernel (and udev) to create an exported channel.
const EXPORT_WAIT: Duration = Duration::from_secs(1);

/// Highest carrier frequency accepted (the BCM PWM clock is tens of MHz; a period
/// under 20 ns is not a PWM signal any more).
const MAX_HZ: f64 = 50_000_000.0;

/// The PWM channel that drives `pin` on `model`, if any.
pub(crate) fn channel_for(model: BoardModel, pin: u8) -> Option<u32> {
    match (model, pin) {
        (BoardModel::Pi5, 12) => Some(0),
        (BoardModel::Pi5, 13) => Some(1),
        (BoardModel::Pi5, 18) => Some(2),
        (BoardModel::Pi5, 19) => Some(3),
        (BoardModel::Pi5 | BoardModel::Generic, _) => None,
        (_, 12 | 18) => Some(0),
        (_, 13 | 19) => Some(1),
        _ => None,
    }
}

/// The node-name fragment of the header's PWM controller on `model`.
fn controller_node(model: BoardModel) -> Option<&'static str> {
    match model {
        BoardModel::Pi5 => Some("1f00098000.pwm"),
        BoardModel::Generic => None,
        _ => Some("20c000.pwm"),
    }
}

fn ns_to_string(ns: u64) -> String {
    ns.to_string()
}

fn period_ns(frequency: Hertz) -> Result<u64> {
    let f = frequency.get();
    if !(f.is_finite() && f > 0.0 && f <= MAX_HZ) {
        return Err(HalError::InvalidArgument(format!(
            "PWM frequency {f} Hz (allowed: above 0 up to {MAX_HZ} Hz)"
        )));
    }
    Ok((1e9 / f).round() as u64)
}

fn duty_ns(period_ns: u64, duty: Percent) -> u64 {
    (period_ns as f64 * duty.fraction()).round() as u64
}

/// The header's PWM controller under a root.
#[derive(Debug, Clone)]
pub(crate) struct SysfsPwm {
    root: PathBuf,
    model: BoardModel,
    /// Channels held by live pins (shared pins on the BCM controller collide here).
    channels: Arc<Mutex<BTreeSet<u32>>>,
}

impl SysfsPwm {
    pub(crate) fn new(root: &Path, model: BoardModel) -> Self {
        Self {
            root: root.to_owned(),
            model,
            channels: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// The `pwmchipN` directory of the header's controller.
    fn chip_dir(&self) -> Result<PathBuf> {
        let node = controller_node(self.model).ok_or_else(|| {
            HalError::unsupported(format!("hardware PWM pin map for board {}", self.model))
        })?;
        sysfs::indexed_entries(&self.root.join("sys/class/pwm"), "pwmchip")
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| {
                fs::canonicalize(p)
                    .ok()
                    .is_some_and(|real| real.to_string_lossy().contains(node))
            })
            .ok_or_else(|| {
                HalError::unsupported(format!(
                    "hardware PWM: no {node} controller in sys/class/pwm \
                     (enable it with dtoverlay=pwm-2chan in config.txt)"
                ))
            })
    }

    /// Claims `pin`'s channel, sets the carrier and duty and enables the output.
    /// `guard` is dropped with the pin (the controller's claim-set entry).
    pub(crate) fn claim<G: Send + std::fmt::Debug + 'static>(
        &self,
        pin: u8,
        frequency: Hertz,
        duty: Percent,
        on_drop: DropState,
        guard: G,
    ) -> Result<SysfsPwmPin> {
        let channel = channel_for(self.model, pin).ok_or_else(|| {
            HalError::unsupported(format!(
                "GPIO {pin} has no hardware PWM channel on {} (Wrale never generates PWM in software)",
                self.model
            ))
        })?;
        let period = period_ns(frequency)?;
        let chip = self.chip_dir()?;
        {
            let mut held = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            if !held.insert(channel) {
                return Err(HalError::Busy {
                    what: format!("PWM channel {channel} (needed by GPIO {pin})"),
                });
            }
        }
        let mut pwm = SysfsPwmPin {
            pin,
            dir: chip.join(format!("pwm{channel}")),
            chip,
            channel,
            period_ns: 0,
            duty_ns: 0,
            frequency,
            duty,
            on_drop,
            channels: Arc::clone(&self.channels),
            _guard: Box::new(guard),
        };
        // From here on, dropping `pwm` releases the channel again.
        pwm.export()?;
        pwm.period_ns = sysfs::read_int_in(&pwm.dir.join("period"), 0..=i64::MAX)
            .map(|v| v as u64)
            .unwrap_or(0);
        pwm.duty_ns = sysfs::read_int_in(&pwm.dir.join("duty_cycle"), 0..=i64::MAX)
            .map(|v| v as u64)
            .unwrap_or(0);
        pwm.apply(period, duty_ns(period, duty))?;
        sysfs::write_text(&pwm.dir.join("enable"), "1")?;
        Ok(pwm)
    }
}

/// A hardware PWM output on a sysfs PWM channel.
#[derive(Debug)]
pub struct SysfsPwmPin {
    pin: u8,
    chip: PathBuf,
    dir: PathBuf,
    channel: u32,
    period_ns: u64,
    duty_ns: u64,
    frequency: Hertz,
    duty: Percent,
    on_drop: DropState,
    channels: Arc<Mutex<BTreeSet<u32>>>,
    _guard: Box<dyn std::fmt::Debug + Send>,
}

impl SysfsPwmPin {
    fn export(&self) -> Result<()> {
        if self.dir.join("period").exists() {
            return Ok(());
        }
        sysfs::write_text(&self.chip.join("export"), &self.channel.to_string())?;
        let start = Instant::now();
        while !self.dir.join("period").exists() {
            if start.elapsed() > EXPORT_WAIT {
                return Err(HalError::Timeout {
                    what: format!("PWM channel {} did not appear after export", self.channel),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Writes period and duty in the order that keeps duty <= period at every step
    /// (the kernel refuses anything else).
    fn apply(&mut self, period: u64, duty: u64) -> Result<()> {
        if period >= self.duty_ns {
            if period != self.period_ns {
                sysfs::write_text(&self.dir.join("period"), &ns_to_string(period))?;
                self.period_ns = period;
            }
            sysfs::write_text(&self.dir.join("duty_cycle"), &ns_to_string(duty))?;
        } else {
            sysfs::write_text(&self.dir.join("duty_cycle"), &ns_to_string(duty))?;
            self.duty_ns = duty;
            sysfs::write_text(&self.dir.join("period"), &ns_to_string(period))?;
            self.period_ns = period;
        }
        self.duty_ns = duty;
        Ok(())
    }
}

impl PwmPin for SysfsPwmPin {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn set_frequency(&mut self, frequency: Hertz) -> Result<()> {
        let period = period_ns(frequency)?;
        self.apply(period, duty_ns(period, self.duty))?;
        self.frequency = frequency;
        Ok(())
    }

    fn set_duty(&mut self, duty: Percent) -> Result<()> {
        self.apply(self.period_ns, duty_ns(self.period_ns, duty))?;
        self.duty = duty;
        Ok(())
    }

    fn frequency(&self) -> Hertz {
        self.frequency
    }

    fn duty(&self) -> Percent {
        self.duty
    }
}

impl Drop for SysfsPwmPin {
    fn drop(&mut self) {
        // Best effort: nobody to report to from a destructor.
        match self.on_drop {
            DropState::Low => {
                let _ = sysfs::write_text(&self.dir.join("duty_cycle"), "0");
            }
            DropState::High => {
                let _ =
                    sysfs::write_text(&self.dir.join("duty_cycle"), &ns_to_string(self.period_ns));
            }
            DropState::Release => {
                let _ = sysfs::write_text(&self.dir.join("enable"), "0");
                let _ = sysfs::write_text(&self.chip.join("unexport"), &self.channel.to_string());
            }
        }
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HalErrorKind;

    /// A Pi 4 style tree: sys/class/pwm/pwmchip0 -> the controller under
    /// sys/devices/platform/soc/fe20c000.pwm, with channel 0 already exported.
    fn pi4_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let chip = dir
            .path()
            .join("sys/devices/platform/soc/fe20c000.pwm/pwm/pwmchip0");
        fs::create_dir_all(chip.join("pwm0")).unwrap();
        fs::create_dir_all(chip.join("pwm1")).unwrap();
        for ch in ["pwm0", "pwm1"] {
            fs::write(chip.join(ch).join("period"), "0\n").unwrap();
            fs::write(chip.join(ch).join("duty_cycle"), "0\n").unwrap();
            fs::write(chip.join(ch).join("enable"), "0\n").unwrap();
        }
        fs::write(chip.join("npwm"), "2\n").unwrap();
        fs::create_dir_all(dir.path().join("sys/class/pwm")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/platform/soc/fe20c000.pwm/pwm/pwmchip0",
            dir.path().join("sys/class/pwm/pwmchip0"),
        )
        .unwrap();
        dir
    }

    fn read(dir: &Path, rel: &str) -> String {
        fs::read_to_string(
            dir.join("sys/devices/platform/soc/fe20c000.pwm/pwm/pwmchip0")
                .join(rel),
        )
        .unwrap()
    }

    #[test]
    fn pin_map() {
        assert_eq!(channel_for(BoardModel::Pi4B, 18), Some(0));
        assert_eq!(channel_for(BoardModel::Pi4B, 13), Some(1));
        assert_eq!(channel_for(BoardModel::Pi5, 18), Some(2));
        assert_eq!(channel_for(BoardModel::Pi5, 19), Some(3));
        assert_eq!(channel_for(BoardModel::Pi4B, 17), None);
        assert_eq!(channel_for(BoardModel::Generic, 18), None);
    }

    #[test]
    fn claim_writes_period_duty_enable_and_drop_state() {
        let dir = pi4_tree();
        let pwm = SysfsPwm::new(dir.path(), BoardModel::Pi4B);
        let mut p = pwm
            .claim(
                18,
                Hertz(25_000.0),
                Percent::saturating(50.0),
                DropState::High,
                (),
            )
            .unwrap();
        assert_eq!(read(dir.path(), "pwm0/period"), "40000");
        assert_eq!(read(dir.path(), "pwm0/duty_cycle"), "20000");
        assert_eq!(read(dir.path(), "pwm0/enable"), "1");

        // GPIO 12 shares channel 0.
        let e = pwm
            .claim(12, Hertz(1000.0), Percent::ZERO, DropState::Low, ())
            .unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::Busy);

        p.set_duty(Percent::saturating(25.0)).unwrap();
        assert_eq!(read(dir.path(), "pwm0/duty_cycle"), "10000");
        // A shorter period: duty first, then period.
        p.set_frequency(Hertz(100_000.0)).unwrap();
        assert_eq!(read(dir.path(), "pwm0/period"), "10000");
        assert_eq!(read(dir.path(), "pwm0/duty_cycle"), "2500");
        assert_eq!(p.frequency(), Hertz(100_000.0));
        assert_eq!(p.duty(), Percent::saturating(25.0));

        drop(p);
        assert_eq!(
            read(dir.path(), "pwm0/duty_cycle"),
            "10000",
            "High = full period"
        );
        // The channel is free again.
        let q = pwm
            .claim(12, Hertz(1000.0), Percent::ZERO, DropState::Release, ())
            .unwrap();
        drop(q);
        assert_eq!(read(dir.path(), "pwm0/enable"), "0");
        assert_eq!(read(dir.path(), "unexport"), "0");
    }

    #[test]
    fn refusals() {
        let dir = pi4_tree();
        let pwm = SysfsPwm::new(dir.path(), BoardModel::Pi4B);
        let e = pwm
            .claim(17, Hertz(1000.0), Percent::ZERO, DropState::Low, ())
            .unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::Unsupported);
        let e = pwm
            .claim(18, Hertz(0.0), Percent::ZERO, DropState::Low, ())
            .unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::InvalidArgument);
        // Pi 5 wants the RP1 controller, which this tree does not have.
        let e = SysfsPwm::new(dir.path(), BoardModel::Pi5)
            .claim(18, Hertz(1000.0), Percent::ZERO, DropState::Low, ())
            .unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::Unsupported);
        assert!(e.to_string().contains("dtoverlay"), "{e}");
        // An unexported channel that never appears times out.
        let chip = dir
            .path()
            .join("sys/devices/platform/soc/fe20c000.pwm/pwm/pwmchip0");
        fs::remove_dir_all(chip.join("pwm1")).unwrap();
        let e = pwm
            .claim(13, Hertz(1000.0), Percent::ZERO, DropState::Low, ())
            .unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::Timeout);
        assert_eq!(fs::read_to_string(chip.join("export")).unwrap(), "1");
    }
}
