//! The `rpi` backend on a machine that is not a Raspberry Pi (CI, a laptop): opening
//! it must fail with a clear, portable error, never panic or half-open.

use wrale_hal::{BackendConfig, HalErrorKind, RpiConfig};

fn is_raspberry_pi() -> bool {
    [
        "/proc/device-tree/model",
        "/sys/firmware/devicetree/base/model",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .any(|m| m.contains("Raspberry Pi"))
}

#[cfg(all(feature = "rpi", target_os = "linux"))]
#[test]
fn rpi_backend_off_a_pi_says_so() {
    if is_raspberry_pi() {
        eprintln!("skipped: this machine is a Raspberry Pi");
        return;
    }
    let config = BackendConfig::Rpi(RpiConfig {
        sht3x: Some(0x44),
        ..RpiConfig::default()
    });
    let e = wrale_hal::open(&config).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::Unsupported, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("not a Raspberry Pi"), "{msg}");
    assert!(msg.contains("rppal"), "{msg}");
}

#[cfg(not(all(feature = "rpi", target_os = "linux")))]
#[test]
fn rpi_backend_not_compiled_says_so() {
    let _ = is_raspberry_pi();
    let e = wrale_hal::open(&BackendConfig::Rpi(RpiConfig::default())).unwrap_err();
    assert_eq!(e.kind(), HalErrorKind::BackendNotCompiled);
}

#[test]
fn rpi_config_from_toml() {
    let text = r#"
        backend = "rpi"
        i2c_bus = 1
        max17048 = 0x36
        sht3x = 0x45

        [linux]
        root = "/"

        [ina219]
        address = 0x40
        shunt_ohms = 0.1
        max_current_a = 3.2
    "#;
    let config: BackendConfig = toml::from_str(text).unwrap();
    let BackendConfig::Rpi(c) = config else {
        panic!("expected the rpi backend, got {config:?}");
    };
    assert_eq!(c.max17048, Some(0x36));
    assert_eq!(c.sht3x, Some(0x45));
    let ina = c.ina219.unwrap();
    assert_eq!(ina.address, 0x40);
    assert_eq!(ina.shunt_ohms, 0.1);

    let bad = "backend = \"rpi\"\nina219 = { address = 64, shunt_ohms = 0.1 }\n";
    let e = toml::from_str::<BackendConfig>(bad).unwrap_err();
    assert!(e.to_string().contains("max_current_a"), "{e}");
}
