//! Register-level tests of the I2C sensor drivers against embedded-hal-mock.
//!
//! Every expected value is computed here from the datasheet scale factors, not by
//! calling the driver's own conversion code. Every mock ends with `.done()`, so an
//! expected transfer that never happened fails the test.

use std::sync::Arc;

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as Delay};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use wrale_core::board::{BoardModel, BoardProfile};
use wrale_core::model::{ChargeState, Reading, SensorKind};
use wrale_core::units::{Amps, Ohms, Percent};
use wrale_hal::drivers::ina219::{
    self, AdcMode, BusVoltageRange, Calibration, OperatingMode, ResetPolicy, Settings, ShuntGain,
};
use wrale_hal::drivers::max17048::{self, charge_state};
use wrale_hal::drivers::sht3x::crc8;
use wrale_hal::drivers::{
    Ina219, Ina219PowerMonitor, Max17048, Max17048Battery, Sht3x, Sht3xThermal, scan,
};
use wrale_hal::prelude::*;
use wrale_hal::{Board, HalError, HalErrorKind};

const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

fn assert_close(got: f64, want: f64) {
    assert!(close(got, want), "got {got}, want {want}");
}

// ---------------------------------------------------------------------------
// INA219
// ---------------------------------------------------------------------------

const INA: u8 = 0x40;

/// 0.1 Ω and 3.2 A (320 mV, the ÷8 range) with a round Current_LSB of 100 µA:
/// Cal = 0.04096 / (1e-4 × 0.1) = 4096.
fn cal_100ua() -> Calibration {
    Calibration::with_current_lsb(Ohms(0.1), Amps(3.2), Amps(100e-6)).unwrap()
}

fn init_transactions(config: u16, cal: u16) -> Vec<T> {
    vec![
        T::write(INA, vec![0x00, (config >> 8) as u8, config as u8]),
        T::write(INA, vec![0x05, (cal >> 8) as u8, cal as u8]),
    ]
}

/// A driver already initialised with POR settings and `cal_100ua`, with `then`
/// expected after the init writes.
fn ina_with(then: Vec<T>) -> (Ina219<Mock>, Mock) {
    let mut all = init_transactions(0x399F, 0x1000);
    all.extend(then);
    let mock = Mock::new(&all);
    let mut ina = Ina219::new(mock.clone(), INA)
        .unwrap()
        .with_bus_name("i2c-1");
    ina.init(Settings::default(), cal_100ua()).unwrap();
    (ina, mock)
}

#[test]
fn ina219_calibration_follows_the_datasheet_formula() {
    // 0.1 Ω, 100 µA/LSB -> 4096 (PHYSICS.md example).
    let c = cal_100ua();
    assert_eq!(c.register(), 4096);
    assert_close(c.current_lsb().get(), 100e-6);
    assert_close(c.power_lsb().get(), 20.0 * 100e-6);

    // A chosen LSB below I_max / 32768 would overflow CURRENT before I_max.
    let e = Calibration::with_current_lsb(Ohms(0.1), Amps(3.2), Amps(90e-6)).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::InvalidArgument);

    // 0.1 Ω, 3.2 A: LSB >= 3.2/32768 = 97.65625 µA; 0.04096/(97.65625e-6 × 0.1) = 4194.3 -> 4194.
    let c = Calibration::new(Ohms(0.1), Amps(3.2)).unwrap();
    assert_eq!(c.register(), 4194);
    // The LSB the chip really applies with Cal = 4194, never finer than I_max/32768.
    assert_close(c.current_lsb().get(), 0.04096 / (4194.0 * 0.1));
    assert!(c.current_lsb().get() >= 3.2 / 32768.0);

    // 0.01 Ω, 0.1524 mA/LSB -> 26876 (PHYSICS.md example).
    let c = Calibration::new(Ohms(0.01), Amps(0.1524e-3 * 32768.0)).unwrap();
    assert_eq!(c.register(), 26876);
}

#[test]
fn ina219_calibration_rejects_nonsense() {
    for (r, i) in [
        (0.0, 1.0),
        (-0.1, 1.0),
        (0.1, 0.0),
        (f64::NAN, 1.0),
        (0.1, f64::INFINITY),
    ] {
        let e = Calibration::new(Ohms(r), Amps(i)).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::InvalidArgument, "{r} Ω, {i} A");
    }
    // 0.04096 / ((1e6/32768) × 1) < 2: cannot be represented.
    let e = Calibration::new(Ohms(1.0), Amps(1e6)).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::InvalidArgument);
}

#[test]
fn ina219_config_word_packs_the_fields() {
    assert_eq!(Settings::default().config_word(), ina219::POWER_ON_CONFIG);
    let s = Settings {
        bus_range: BusVoltageRange::V16,
        gain: ShuntGain::Div2,
        bus_adc: AdcMode::Samples128,
        shunt_adc: AdcMode::Bits12,
        mode: OperatingMode::ShuntBusContinuous,
    };
    // BRNG 0 | PG 01 << 11 | BADC 1111 << 7 | SADC 0011 << 3 | MODE 111
    assert_eq!(s.config_word(), 0x0800 | 0x0780 | 0x0018 | 0x0007);
    // 3.2 A × 0.1 Ω = 320 mV needs ÷8; 0.4 A × 0.1 Ω = 40 mV fits ÷1.
    let c = Calibration::new(Ohms(0.1), Amps(3.2)).unwrap();
    assert_eq!(Settings::for_calibration(&c).gain, ShuntGain::Div8);
    let c = Calibration::new(Ohms(0.1), Amps(0.4)).unwrap();
    assert_eq!(Settings::for_calibration(&c).gain, ShuntGain::Div1);
}

#[test]
fn ina219_init_writes_config_then_calibration() {
    // 0.01 Ω, 3.2 A: 32 mV full scale fits ÷2 (±80 mV).
    // 0.04096 / ((3.2/32768) × 0.01) = 41943.04 -> 41943 -> 41942 (bit 0 does not exist).
    let cal = Calibration::new(Ohms(0.01), Amps(3.2)).unwrap();
    assert_eq!(cal.register(), 41942);
    let s = Settings {
        bus_range: BusVoltageRange::V16,
        gain: ShuntGain::Div2,
        bus_adc: AdcMode::Samples128,
        shunt_adc: AdcMode::Bits12,
        mode: OperatingMode::ShuntBusContinuous,
    };
    let mut mock = Mock::new(&init_transactions(0x0F9F, 41942));
    let mut ina = Ina219::new(mock.clone(), INA).unwrap();
    ina.init(s, cal).unwrap();
    assert_eq!(ina.calibration(), Some(&cal));
    mock.done();
}

#[test]
fn ina219_from_config_picks_calibration_and_gain() {
    // 0.4 A through 0.1 Ω = 40 mV -> ÷1. Cal = trunc(0.04096 / ((0.4 / 32768) × 0.1))
    // = trunc(33554.43) = 33554 = 0x8312.
    // CONFIG = BRNG 1 << 13 | PG 0 | BADC 0011 << 7 | SADC 0011 << 3 | MODE 111 = 0x219F.
    let mut mock = Mock::new(&[
        T::write(0x41, vec![0x00, 0x21, 0x9F]),
        T::write(0x41, vec![0x05, 0x83, 0x12]),
    ]);
    let config = wrale_hal::Ina219Config {
        address: 0x41,
        shunt_ohms: 0.1,
        max_current_a: 0.4,
    };
    let ina = Ina219::from_config(mock.clone(), &config, "i2c-1").unwrap();
    assert_eq!(ina.calibration().map(|c| c.register()), Some(33554));
    mock.done();
}

#[test]
fn ina219_init_refuses_a_gain_that_would_clip() {
    let mut mock = Mock::new(&[]);
    let mut ina = Ina219::new(mock.clone(), INA).unwrap();
    let s = Settings {
        gain: ShuntGain::Div1,
        ..Settings::default()
    };
    // 3.2 A × 0.1 Ω = 320 mV > 40 mV.
    let e = ina
        .init(s, Calibration::new(Ohms(0.1), Amps(3.2)).unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::InvalidArgument);
    assert!(e.to_string().contains("320.0 mV"), "{e}");
    mock.done();
}

#[test]
fn ina219_rejects_addresses_outside_its_range() {
    let mut mock = Mock::new(&[]);
    let e = Ina219::new(mock.clone(), 0x36).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::InvalidArgument);
    mock.done();
}

#[test]
fn ina219_bus_voltage_is_4mv_per_lsb_in_bits_15_to_3() {
    // 5.1 V / 4 mV = 1275 counts; << 3, with CNVR (bit 1) set.
    let raw: u16 = (1275 << 3) | 0b10;
    let (mut ina, mut mock) = ina_with(vec![T::write_read(
        INA,
        vec![0x02],
        raw.to_be_bytes().to_vec(),
    )]);
    assert_close(ina.bus_voltage().unwrap().get(), 1275.0 * 0.004);
    mock.done();
}

#[test]
fn ina219_overflow_flag_is_a_sensor_fault() {
    let raw: u16 = (1275 << 3) | 0b01;
    let (mut ina, mut mock) = ina_with(vec![
        T::write_read(INA, vec![0x02], raw.to_be_bytes().to_vec()),
        // current() checks OVF first and never reads CURRENT
        T::write_read(INA, vec![0x02], raw.to_be_bytes().to_vec()),
    ]);
    let e = ina.bus_voltage().unwrap_err();
    assert!(matches!(e, HalError::SensorFault { .. }), "{e:?}");
    assert!(e.to_string().contains("OVF"), "{e}");
    let e = ina.current().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::SensorFault);
    mock.done();
}

#[test]
fn ina219_shunt_voltage_is_signed_10uv_per_lsb() {
    let (mut ina, mut mock) = ina_with(vec![
        T::write_read(INA, vec![0x01], (-1234i16).to_be_bytes().to_vec()),
        T::write_read(INA, vec![0x01], vec![0x7D, 0x00]),
    ]);
    assert_close(ina.shunt_voltage().unwrap().get(), -1234.0 * 10e-6);
    assert_close(ina.shunt_voltage().unwrap().get(), 32000.0 * 10e-6);
    mock.done();
}

#[test]
fn ina219_current_and_power_use_the_calibrated_lsb() {
    let bus_ok = T::write_read(INA, vec![0x02], ((1250u16 << 3) | 2).to_be_bytes().to_vec());
    let (mut ina, mut mock) = ina_with(vec![
        bus_ok.clone(),
        T::write_read(INA, vec![0x04], 10000i16.to_be_bytes().to_vec()),
        bus_ok.clone(),
        T::write_read(INA, vec![0x04], (-500i16).to_be_bytes().to_vec()),
        bus_ok,
        T::write_read(INA, vec![0x03], 4000u16.to_be_bytes().to_vec()),
    ]);
    // 10000 × 100 µA = 1 A; -500 × 100 µA = -50 mA; 4000 × 20 × 100 µA = 8 W.
    assert_close(ina.current().unwrap().get(), 1.0);
    assert_close(ina.current().unwrap().get(), -0.05);
    assert_close(ina.power().unwrap().get(), 8.0);
    mock.done();
}

#[test]
fn ina219_zero_current_with_calibration_intact_is_a_real_zero() {
    let bus_ok = T::write_read(INA, vec![0x02], (1250u16 << 3).to_be_bytes().to_vec());
    let (mut ina, mut mock) = ina_with(vec![
        bus_ok,
        T::write_read(INA, vec![0x04], vec![0, 0]),
        T::write_read(INA, vec![0x05], vec![0x10, 0x00]),
    ]);
    assert_eq!(ina.current().unwrap().get(), 0.0);
    assert_eq!(ina.resets_detected(), 0);
    mock.done();
}

#[test]
fn ina219_reset_chip_is_detected_and_recalibrated() {
    let bus_ok = T::write_read(INA, vec![0x02], (1250u16 << 3).to_be_bytes().to_vec());
    let mut then = vec![
        bus_ok.clone(),
        T::write_read(INA, vec![0x03], vec![0, 0]),
        // CALIBRATION reads 0: the chip lost it.
        T::write_read(INA, vec![0x05], vec![0, 0]),
    ];
    then.extend(init_transactions(0x399F, 0x1000)); // re-calibration
    then.extend([
        bus_ok,
        T::write_read(INA, vec![0x03], 500u16.to_be_bytes().to_vec()),
    ]);
    let (mut ina, mut mock) = ina_with(then);
    let e = ina.power().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::SensorFault);
    assert!(e.to_string().contains("reset"), "{e}");
    assert!(e.to_string().contains("re-calibrated"), "{e}");
    assert_eq!(ina.resets_detected(), 1);
    // 500 × 20 × 100 µA = 1 W
    assert_close(ina.power().unwrap().get(), 1.0);
    mock.done();
}

#[test]
fn ina219_reset_chip_is_only_reported_under_report_policy() {
    let mut all = init_transactions(0x399F, 0x1000);
    all.extend([
        T::write_read(INA, vec![0x02], (1250u16 << 3).to_be_bytes().to_vec()),
        T::write_read(INA, vec![0x04], vec![0, 0]),
        T::write_read(INA, vec![0x05], vec![0, 0]),
    ]);
    let mut mock = Mock::new(&all);
    let mut ina = Ina219::new(mock.clone(), INA)
        .unwrap()
        .with_reset_policy(ResetPolicy::Report);
    ina.init(Settings::default(), cal_100ua()).unwrap();
    let e = ina.current().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::SensorFault);
    assert!(e.to_string().contains("call init()"), "{e}");
    mock.done();
}

#[test]
fn ina219_current_before_init_is_refused_without_bus_traffic() {
    let mut mock = Mock::new(&[]);
    let mut ina = Ina219::new(mock.clone(), INA).unwrap();
    assert_eq!(
        ina.current().unwrap_err().kind(),
        HalErrorKind::InvalidArgument
    );
    mock.done();
}

#[test]
fn ina219_nack_becomes_a_bus_error_naming_chip_and_address() {
    let (mut ina, mut mock) = ina_with(vec![
        T::write_read(INA, vec![0x02], vec![0, 0]).with_error(NACK),
    ]);
    let e = ina.bus_voltage().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::Bus);
    match &e {
        HalError::Bus { bus, detail } => {
            assert_eq!(bus, "i2c-1@0x40");
            assert!(detail.contains("INA219"), "{detail}");
            assert!(detail.contains("0x40"), "{detail}");
            assert!(detail.contains("no acknowledge"), "{detail}");
        }
        other => panic!("expected HalError::Bus, got {other:?}"),
    }
    mock.done();
}

#[test]
fn ina219_init_write_failure_is_a_bus_error() {
    let mut mock = Mock::new(&[T::write(INA, vec![0x00, 0x39, 0x9F]).with_error(ErrorKind::Bus)]);
    let mut ina = Ina219::new(mock.clone(), INA).unwrap();
    let e = ina.init(Settings::default(), cal_100ua()).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::Bus);
    assert!(ina.calibration().is_none());
    mock.done();
}

#[test]
fn ina219_power_monitor_adapter() {
    let bus = T::write_read(INA, vec![0x02], ((1275u16 << 3) | 2).to_be_bytes().to_vec());
    let (ina, mut mock) = ina_with(vec![
        bus.clone(),
        bus.clone(),
        T::write_read(INA, vec![0x04], 7000i16.to_be_bytes().to_vec()),
        bus,
        T::write_read(INA, vec![0x03], 1785u16.to_be_bytes().to_vec()),
    ]);
    let pm: Arc<dyn PowerMonitor> = Arc::new(Ina219PowerMonitor::new(ina));
    assert_close(pm.voltage().unwrap().get(), 5.1);
    assert_close(pm.current().unwrap().get(), 0.7);
    assert_close(pm.power().unwrap().get(), 1785.0 * 20.0 * 100e-6);
    assert_eq!(pm.throttle().unwrap_err().kind(), HalErrorKind::Unsupported);
    mock.done();
}

// ---------------------------------------------------------------------------
// MAX17048
// ---------------------------------------------------------------------------

const GAUGE: u8 = 0x36;

#[test]
fn max17048_init_accepts_version_001x() {
    let mut mock = Mock::new(&[T::write_read(GAUGE, vec![0x08], vec![0x00, 0x12])]);
    let mut g = Max17048::new(mock.clone());
    assert_eq!(g.init().unwrap(), 0x0012);
    mock.done();
}

#[test]
fn max17048_wrong_version_is_a_clear_error() {
    let mut mock = Mock::new(&[T::write_read(GAUGE, vec![0x08], vec![0x00, 0x03])]);
    let mut g = Max17048::new(mock.clone()).with_bus_name("i2c-1");
    let e = g.init().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::NotFound);
    let msg = e.to_string();
    assert!(msg.contains("0x0003"), "{msg}");
    assert!(msg.contains("i2c-1@0x36"), "{msg}");
    mock.done();
}

#[test]
fn max17048_absent_gauge_is_a_bus_error() {
    let mut mock = Mock::new(&[T::write_read(GAUGE, vec![0x08], vec![0, 0]).with_error(NACK)]);
    let mut g = Max17048::new(mock.clone());
    let e = g.init().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::Bus);
    assert!(e.to_string().contains("MAX17048 at 0x36"), "{e}");
    mock.done();
}

#[test]
fn max17048_conversions() {
    let mut mock = Mock::new(&[
        // 0xB400 = 46080 × 78.125 µV = 3.6 V
        T::write_read(GAUGE, vec![0x02], vec![0xB4, 0x00]),
        // 0x5780: 87 + 128/256 = 87.5 %
        T::write_read(GAUGE, vec![0x04], vec![0x57, 0x80]),
        // 0x6480: 100.5 % (not yet learned) -> clamped to 100 %
        T::write_read(GAUGE, vec![0x04], vec![0x64, 0x80]),
        // 0x7000: 112 % -> garbage
        T::write_read(GAUGE, vec![0x04], vec![0x70, 0x00]),
        // -50 × 0.208 %/h = -10.4 %/h
        T::write_read(GAUGE, vec![0x16], (-50i16).to_be_bytes().to_vec()),
        T::write_read(GAUGE, vec![0x16], 25i16.to_be_bytes().to_vec()),
    ]);
    let mut g = Max17048::new(mock.clone());
    assert_close(g.voltage().unwrap().get(), 46080.0 * 78.125e-6);
    assert_close(g.soc().unwrap().get(), 87.5);
    assert_eq!(g.soc().unwrap(), Percent::FULL);
    assert_eq!(g.soc().unwrap_err().kind(), HalErrorKind::SensorFault);
    assert_close(g.charge_rate().unwrap(), -10.4);
    assert_close(g.charge_rate().unwrap(), 5.2);
    mock.done();
}

#[test]
fn max17048_status_reads_voltage_soc_and_rate() {
    let mut mock = Mock::new(&[
        T::write_read(GAUGE, vec![0x02], vec![0xB4, 0x00]),
        T::write_read(GAUGE, vec![0x04], vec![0x57, 0x80]),
        T::write_read(GAUGE, vec![0x16], (-50i16).to_be_bytes().to_vec()),
    ]);
    let battery: Arc<dyn Battery> = Arc::new(Max17048Battery::new(Max17048::new(mock.clone())));
    let s = battery.status().unwrap();
    assert_close(s.voltage.get(), 3.6);
    assert_close(s.level.get(), 87.5);
    assert_eq!(s.state, ChargeState::Discharging);
    let e = battery.set_charging(false).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::Unsupported);
    mock.done();
}

#[test]
fn max17048_charge_state_classification() {
    let p = |v| Percent::new(v).unwrap();
    let d = max17048::DEFAULT_RATE_DEADBAND;
    assert_eq!(charge_state(p(50.0), 5.2, d), ChargeState::Charging);
    assert_eq!(charge_state(p(50.0), -10.4, d), ChargeState::Discharging);
    assert_eq!(charge_state(p(50.0), 0.208, d), ChargeState::Idle);
    assert_eq!(charge_state(p(50.0), -0.416, d), ChargeState::Idle);
    assert_eq!(charge_state(p(100.0), 0.208, d), ChargeState::Full);
    // A full cell still trickling in counts as full; one being drained does not.
    assert_eq!(charge_state(p(99.6), 3.0, d), ChargeState::Full);
    assert_eq!(charge_state(p(100.0), -5.0, d), ChargeState::Discharging);
}

#[test]
fn max17048_quick_start_and_power_on_reset() {
    let mut mock = Mock::new(&[
        T::write(GAUGE, vec![0x06, 0x40, 0x00]),
        // The chip resets mid-write and NACKs: that is success.
        T::write(GAUGE, vec![0xFE, 0x54, 0x00])
            .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)),
        T::write(GAUGE, vec![0xFE, 0x54, 0x00]).with_error(ErrorKind::ArbitrationLoss),
    ]);
    let mut g = Max17048::new(mock.clone());
    g.quick_start().unwrap();
    g.power_on_reset().unwrap();
    let e = g.power_on_reset().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::Bus);
    assert!(e.to_string().contains("arbitration"), "{e}");
    mock.done();
}

// ---------------------------------------------------------------------------
// SHT3x
// ---------------------------------------------------------------------------

const SHT: u8 = 0x44;

#[test]
fn sht3x_crc_known_vectors() {
    // Datasheet example, and values computed with an independent implementation.
    assert_eq!(crc8(&[0xBE, 0xEF]), 0x92);
    assert_eq!(crc8(&[0x00, 0x00]), 0x81);
    assert_eq!(crc8(&[0x66, 0x66]), 0x93);
    assert_eq!(crc8(&[0x80, 0x00]), 0xA2);
}

#[test]
fn sht3x_measure_sends_0x2400_waits_then_checks_both_crcs() {
    let mut i2c = Mock::new(&[
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, vec![0x66, 0x66, 0x93, 0x80, 0x00, 0xA2]),
    ]);
    // Datasheet: up to 15.5 ms for a high-repeatability conversion -> 16 ms.
    let mut delay = CheckedDelay::new(&[Delay::delay_ms(16)]);
    let mut s = Sht3x::new(i2c.clone(), delay.clone(), SHT).unwrap();
    let m = s.measure().unwrap();
    // 0x6666 = 26214 = 0.4 × 65535 -> -45 + 175 × 0.4 = 25 °C
    assert_close(m.temperature.get(), -45.0 + 175.0 * 26214.0 / 65535.0);
    assert_close(m.temperature.get(), 25.0);
    // 0x8000 = 32768 -> 100 × 32768 / 65535
    assert_close(m.humidity.get(), 100.0 * 32768.0 / 65535.0);
    i2c.done();
    delay.done();
}

#[test]
fn sht3x_bad_crc_is_a_sensor_fault_never_a_value() {
    let mut i2c = Mock::new(&[
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, vec![0x66, 0x66, 0x94, 0x80, 0x00, 0xA2]),
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, vec![0x66, 0x66, 0x93, 0x80, 0x01, 0xA2]),
    ]);
    let mut s = Sht3x::new(i2c.clone(), NoopDelay::new(), SHT).unwrap();
    let e = s.measure().unwrap_err();
    assert!(matches!(e, HalError::SensorFault { .. }), "{e:?}");
    assert!(e.to_string().contains("temperature"), "{e}");
    let e = s.measure().unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::SensorFault);
    assert!(e.to_string().contains("humidity"), "{e}");
    i2c.done();
}

#[test]
fn sht3x_nack_on_read_is_a_bus_error() {
    let mut i2c = Mock::new(&[
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, vec![0; 6]).with_error(NACK),
    ]);
    let mut s = Sht3x::new(i2c.clone(), NoopDelay::new(), SHT)
        .unwrap()
        .with_bus_name("i2c-1");
    let e = s.measure().unwrap_err();
    match &e {
        HalError::Bus { bus, detail } => {
            assert_eq!(bus, "i2c-1@0x44");
            assert!(detail.contains("SHT3x at 0x44"), "{detail}");
        }
        other => panic!("expected a bus error, got {other:?}"),
    }
    i2c.done();
}

#[test]
fn every_i2c_error_kind_becomes_a_bus_error_with_its_meaning() {
    let cases = [
        (NACK, "no acknowledge to its address"),
        (
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data),
            "no acknowledge to a data byte",
        ),
        (
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown),
            "no acknowledge",
        ),
        (ErrorKind::Bus, "bus error"),
        (ErrorKind::ArbitrationLoss, "arbitration lost"),
        (ErrorKind::Overrun, "overrun"),
        (ErrorKind::Other, "I2C transfer failed"),
    ];
    for (kind, words) in cases {
        let mut i2c = Mock::new(&[T::write(SHT, vec![0x30, 0x6D]).with_error(kind)]);
        let mut s = Sht3x::new(i2c.clone(), NoopDelay::new(), SHT)
            .unwrap()
            .with_bus_name("i2c-3");
        let e = s.set_heater(true).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::Bus, "{kind:?}");
        let HalError::Bus { bus, detail } = &e else {
            panic!("{kind:?}: expected HalError::Bus, got {e:?}");
        };
        assert_eq!(bus, "i2c-3@0x44");
        assert!(detail.contains(words), "{kind:?}: {detail}");
        assert!(detail.contains("SHT3x at 0x44"), "{kind:?}: {detail}");
        i2c.done();
    }
}

#[test]
fn sht3x_soft_reset_heater_and_status() {
    let mut i2c = Mock::new(&[
        T::write(0x45, vec![0x30, 0xA2]),
        T::write(0x45, vec![0x30, 0x6D]),
        // status 0x2000: heater on (bit 13), CRC 0x5D
        T::write_read(0x45, vec![0xF3, 0x2D], vec![0x20, 0x00, 0x5D]),
        T::write(0x45, vec![0x30, 0x66]),
        T::write_read(0x45, vec![0xF3, 0x2D], vec![0x00, 0x00, 0x81]),
        T::write(0x45, vec![0x30, 0x41]),
        // a corrupted status reply
        T::write_read(0x45, vec![0xF3, 0x2D], vec![0x00, 0x00, 0x80]),
    ]);
    // Datasheet: soft reset takes up to 1.5 ms -> 2 ms.
    let mut delay = CheckedDelay::new(&[Delay::delay_ms(2)]);
    let mut s = Sht3x::new(i2c.clone(), delay.clone(), 0x45).unwrap();
    s.soft_reset().unwrap();
    s.set_heater(true).unwrap();
    assert!(s.heater_on().unwrap());
    s.set_heater(false).unwrap();
    assert!(!s.heater_on().unwrap());
    s.clear_status().unwrap();
    assert_eq!(s.status().unwrap_err().kind(), HalErrorKind::SensorFault);
    i2c.done();
    delay.done();
}

#[test]
fn sht3x_rejects_other_addresses() {
    let mut i2c = Mock::new(&[]);
    let e = Sht3x::new(i2c.clone(), NoopDelay::new(), 0x40).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::InvalidArgument);
    i2c.done();
}

#[test]
fn sht3x_thermal_adapter_is_the_ambient_sensor() {
    let mut i2c = Mock::new(&[
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, vec![0x66, 0x66, 0x93, 0x80, 0x00, 0xA2]),
    ]);
    let sensor: Arc<dyn ThermalSensor> = Arc::new(Sht3xThermal::new(
        Sht3x::new(i2c.clone(), NoopDelay::new(), SHT).unwrap(),
    ));
    assert_eq!(sensor.id(), "ambient");
    assert_eq!(sensor.kind(), SensorKind::Ambient);
    assert_close(sensor.read().unwrap().get(), 25.0);
    i2c.done();
}

// ---------------------------------------------------------------------------
// On a board, and the bus scan
// ---------------------------------------------------------------------------

#[test]
fn drivers_on_a_board_sample_values_and_faults() {
    let mut i2c = Mock::new(&[
        // sample 1: good reading
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, vec![0x66, 0x66, 0x93, 0x80, 0x00, 0xA2]),
        T::write_read(GAUGE, vec![0x02], vec![0xB4, 0x00]),
        T::write_read(GAUGE, vec![0x04], vec![0x57, 0x80]),
        T::write_read(GAUGE, vec![0x16], 25i16.to_be_bytes().to_vec()),
        // sample 2: corrupted temperature, gauge gone
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, vec![0x66, 0x66, 0x00, 0x80, 0x00, 0xA2]),
        T::write_read(GAUGE, vec![0x02], vec![0, 0]).with_error(NACK),
    ]);
    let board = Board::builder(BoardProfile::builtin(BoardModel::Pi4B), "rpi")
        .thermal(Arc::new(Sht3xThermal::new(
            Sht3x::new(i2c.clone(), NoopDelay::new(), SHT).unwrap(),
        )))
        .battery(Arc::new(Max17048Battery::new(Max17048::new(i2c.clone()))))
        .build();

    let s = board.sample();
    assert_eq!(
        s.temperature(SensorKind::Ambient).ok().map(|c| c.get()),
        Some(25.0)
    );
    let b = s.battery.ok().unwrap();
    assert_eq!(b.state, ChargeState::Charging);

    let s = board.sample();
    assert_eq!(
        s.temperature(SensorKind::Ambient),
        Reading::Fault(HalErrorKind::SensorFault)
    );
    assert_eq!(s.battery, Reading::Fault(HalErrorKind::Bus));
    i2c.done();
}

#[test]
fn scan_lists_acknowledging_addresses() {
    let expectations: Vec<T> = (0x03..=0x77u8)
        .map(|a| match a {
            0x36 | 0x40 | 0x44 => T::read(a, vec![0]),
            _ => T::read(a, vec![0]).with_error(NACK),
        })
        .collect();
    let mut i2c = Mock::new(&expectations);
    assert_eq!(scan(&mut i2c, "i2c-1").unwrap(), vec![0x36, 0x40, 0x44]);
    i2c.done();
}

#[test]
fn scan_stops_on_a_real_bus_error() {
    let expectations: Vec<T> = (0x03..=0x10u8)
        .map(|a| match a {
            0x10 => T::read(a, vec![0]).with_error(ErrorKind::ArbitrationLoss),
            _ => T::read(a, vec![0]).with_error(NACK),
        })
        .collect();
    let mut i2c = Mock::new(&expectations);
    let e = scan(&mut i2c, "i2c-1").unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::Bus);
    assert!(e.to_string().contains("0x10"), "{e}");
    i2c.done();
}
