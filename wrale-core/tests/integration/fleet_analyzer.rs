//! Fleet analyzer and alerting: synthetic windows built from the thermal model
//! (`T = T_ambient + P / G(duty)`) so the expected answers are known.

use proptest::prelude::*;
use std::time::Duration;

use wrale_core::fleet::alerting::{self, AlertBook, AlertInput, Condition, DeviceStatus, Rule};
use wrale_core::fleet::analyzer::{
    AnalyzerConfig, AnomalyMetric, DeviceWindow, FanMethod, FanStatus, TelemetryPoint,
    analyze_device, analyze_fleet, stats,
};
use wrale_core::model::{DeviceId, Location, Severity};
use wrale_core::units::{Celsius, Percent, Rpm, Volts, Watts};
use wrale_core::{BoardModel, Timestamp};

const G_HS: f64 = 1.0 / 8.0; // Pi 4 heatsink
const G_FAN: f64 = 1.0 / 4.5; // Pi 4 fan at 100 %

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn loc(rack: &str, shelf: &str) -> Location {
    Location {
        site: Some("lab".into()),
        rack: Some(rack.into()),
        shelf: Some(shelf.into()),
        slot: None,
    }
}

/// One hour at one point per 30 s: duty alternates 30 % / 100 % every 10 min;
/// temperatures are the steady state for the fan's effectiveness.
fn fan_window(eff: f64, ambient: f64, power: f64) -> Vec<TelemetryPoint> {
    (0..120)
        .map(|i| {
            let duty = if (i / 20) % 2 == 0 { 30.0 } else { 100.0 };
            let g = G_HS + eff * duty / 100.0 * (G_FAN - G_HS);
            TelemetryPoint {
                cpu_temp: Some(Celsius(ambient + power / g)),
                ambient: Some(Celsius(ambient)),
                // Board power includes the fan's own 0.45 W at 100 %.
                power: Some(Watts(power + 0.45 * duty / 100.0)),
                cpu_load: Some(Percent::saturating(60.0)),
                supply_voltage: Some(Volts(5.05)),
                fan_duty: Some(Percent::saturating(duty)),
                fan_rpm: Some(Rpm(5000.0 * duty / 100.0)),
                ..TelemetryPoint::at(Timestamp::from_secs(30 * i))
            }
        })
        .collect()
}

#[test]
fn fan_effectiveness_from_periods_of_different_duty() {
    let cfg = AnalyzerConfig::default();
    let now = Timestamp::from_secs(3600);
    let healthy = analyze_device(
        &DeviceWindow::new(
            id("ok"),
            BoardModel::Pi4B,
            loc("r1", "s1"),
            fan_window(1.0, 25.0, 5.0),
        ),
        &cfg,
        now,
    );
    let f = healthy.fan.unwrap();
    assert_eq!(f.method, Some(FanMethod::Differential));
    assert_eq!(f.status, FanStatus::Healthy);
    assert!((f.effectiveness.unwrap() - 1.0).abs() < 0.05, "{f:?}");
    assert!(f.duty_spread_pct >= 69.0);
    let drop = f.drop_c_per_duty_pct.unwrap();
    let exp = f.expected_drop_c_per_duty_pct.unwrap();
    assert!(
        drop > 0.0 && (drop / exp - 1.0).abs() < 0.1,
        "{drop} vs {exp}"
    );

    // Tach reads normally but the airflow is gone: failing, and the health says why.
    let clogged = analyze_device(
        &DeviceWindow::new(
            id("clogged"),
            BoardModel::Pi4B,
            loc("r1", "s1"),
            fan_window(0.1, 25.0, 5.0),
        ),
        &cfg,
        now,
    );
    let f = clogged.fan.unwrap();
    assert_eq!(f.status, FanStatus::Failing, "{f:?}");
    assert_eq!(f.tach_ok, Some(true));
    let factor = &clogged.health.factors[0];
    assert_eq!(factor.code, "fan_failing");
    assert!(
        factor.detail.contains("tach reads normally"),
        "{}",
        factor.detail
    );
    assert!(clogged.health.score < healthy.health.score);
}

#[test]
fn headroom_supply_and_storage() {
    let mut points = fan_window(1.0, 25.0, 5.0);
    for (i, p) in points.iter_mut().enumerate() {
        // Two dips below 4.63 V, and 1 MB written per point with a reboot at 60.
        if i == 30 || i == 31 || i == 90 {
            p.supply_voltage = Some(Volts(4.5));
        }
        let k = if i < 60 { i } else { i - 60 } as u64;
        p.bytes_written = Some(k * 1_000_000);
    }
    let mut w = DeviceWindow::new(id("pi-1"), BoardModel::Pi4B, loc("r1", "s1"), points);
    w.storage = Some(wrale_core::fleet::analyzer::StorageRating {
        endurance_bytes: 10_000_000_000,
        lifetime_written_bytes: 9_000_000_000,
    });
    let a = analyze_device(&w, &AnalyzerConfig::default(), Timestamp::from_secs(3600));
    let h = a.headroom.unwrap();
    assert_eq!(h.throttle, Celsius(80.0));
    assert!(!h.ambient_assumed && !h.power_estimated);
    assert!((h.headroom.get() - (80.0 - h.temp.get())).abs() < 1e-9);
    // Power headroom = headroom / R.
    assert!((h.power_headroom.get() - h.headroom.get() / h.r_th.get()).abs() < 1e-9);
    let s = a.supply.unwrap();
    assert_eq!(s.under_voltage_events, 2);
    assert!((s.under_voltage_per_day - 2.0 * 86400.0 / 3570.0).abs() < 1e-6);
    assert!(s.margin.unwrap().get() > 0.0, "p5 above the threshold");
    let st = a.storage.unwrap();
    // 118 MB over 118 intervals of 30 s (the reboot interval skipped).
    assert!(
        (st.bytes_per_day - 1_000_000.0 * 2880.0).abs() < 1.0,
        "{st:?}"
    );
    let days = st.days_left.unwrap();
    assert!((days - 1e9 / 2.88e9).abs() < 1e-6);
    assert!(a.health.factors.iter().any(|f| f.code == "storage_wear"));
    assert!(a.health.factors.iter().any(|f| f.code == "under_voltage"));
}

fn flat_window(dev: &str, l: Location, temp: f64, ambient: f64) -> DeviceWindow {
    let points = (0..60)
        .map(|i| TelemetryPoint {
            cpu_temp: Some(Celsius(temp + 0.05 * ((i % 3) as f64))),
            ambient: Some(Celsius(ambient)),
            power: Some(Watts(5.0)),
            cpu_load: Some(Percent::saturating(60.0)),
            supply_voltage: Some(Volts(5.05)),
            ..TelemetryPoint::at(Timestamp::from_secs(60 * i))
        })
        .collect();
    DeviceWindow::new(id(dev), BoardModel::Pi4B, l, points)
}

#[test]
fn anomaly_has_evidence_and_hot_rack_is_a_hot_spot() {
    let mut windows = Vec::new();
    for i in 0..6 {
        let t = if i == 2 { 67.0 } else { 55.0 + 0.3 * i as f64 };
        windows.push(flat_window(&format!("a-{i}"), loc("r1", "s1"), t, 25.0));
    }
    for i in 0..4 {
        windows.push(flat_window(
            &format!("b-{i}"),
            loc("r2", "s1"),
            64.0 + 0.2 * i as f64,
            34.0,
        ));
    }
    let fa = analyze_fleet(
        &windows,
        &AnalyzerConfig::default(),
        Timestamp::from_secs(3600),
    );
    let a = fa.anomalies_of(&id("a-2"));
    let temp = a
        .iter()
        .find(|x| x.metric == AnomalyMetric::CpuTemp)
        .expect("cpu anomaly");
    assert_eq!(temp.peers.len(), 6);
    assert!((temp.value - 67.0).abs() < 0.2 && temp.z > 3.5, "{temp:?}");
    assert!(temp.message.contains("peer median"), "{}", temp.message);
    assert!(
        fa.anomalies.iter().all(|x| x.device.as_str() == "a-2"),
        "{:?}",
        fa.anomalies
    );
    let d = fa.device(&id("a-2")).unwrap();
    assert!(
        d.health
            .factors
            .iter()
            .any(|f| f.code == "anomaly_cpu_temp")
    );
    // r2 runs ~9 °C hotter than r1 at the same load: a hot spot with its ambient.
    let hs = &fa.hot_spots[0];
    assert_eq!(hs.rack, "r2");
    assert!(hs.excess.get() > 7.0, "{hs:?}");
    assert_eq!(hs.ambient, Some(Celsius(34.0)));
    assert!(fa.hot_spots.iter().all(|h| h.rack != "r1"));
    // Aggregates.
    let rack2 = fa
        .groups
        .iter()
        .find(|g| matches!(&g.scope, wrale_core::fleet::analyzer::HealthScope::Rack { rack, .. } if rack == "r2"))
        .unwrap();
    assert_eq!(rack2.devices, 4);

    // Alert rules over it: anomaly, hot spot, offline, and a rack storm.
    let rules = vec![
        Rule::new(
            "anomaly",
            Condition::Anomaly { metric: None },
            Severity::Warning,
        ),
        Rule::new(
            "hot",
            Condition::HotSpot { min_excess_c: 5.0 },
            Severity::Warning,
        ),
        Rule::new(
            "offline",
            Condition::Offline {
                after: Duration::from_secs(300),
            },
            Severity::Critical,
        ),
        Rule::new(
            "storm",
            Condition::RackStorm {
                min_devices: 3,
                min_fraction: 0.5,
            },
            Severity::Critical,
        ),
    ];
    let now = Timestamp::from_secs(3600);
    let mut status: Vec<DeviceStatus> = fa
        .devices
        .iter()
        .map(|d| DeviceStatus {
            device: d.device.clone(),
            location: d.location.clone(),
            last_seen: d.last_seen,
            alerts: vec![],
        })
        .collect();
    for s in status
        .iter_mut()
        .filter(|s| s.device.as_str().starts_with("b-"))
    {
        s.last_seen = Some(Timestamp::from_secs(0));
    }
    let firings = alerting::evaluate(&rules, &fa, &status, now);
    let keys: Vec<&str> = firings.iter().map(|f| f.key.as_str()).collect();
    assert!(keys.contains(&"anomaly/device:a-2"), "{keys:?}");
    assert!(keys.contains(&"hot/location:lab/r2"), "{keys:?}");
    assert!(keys.contains(&"offline/device:b-0"), "{keys:?}");
    assert!(keys.contains(&"storm/rack:lab/r2"), "{keys:?}");
    assert!(!keys.contains(&"storm/rack:lab/r1"), "{keys:?}");
    let mut book = AlertBook::default();
    let n = book.step(
        &AlertInput::Evaluation {
            firings: firings.clone(),
        },
        now,
    );
    assert_eq!(n.len(), firings.len());
    assert!(
        book.step(
            &AlertInput::Evaluation { firings },
            now + Duration::from_secs(60)
        )
        .is_empty()
    );
}

proptest! {
    /// The robust z-score of every ordinary peer does not depend on how extreme
    /// one outlier is: median and MAD only see its rank.
    #[test]
    fn robust_z_invariant_to_one_extreme_outlier(
        base in proptest::collection::vec(40.0f64..60.0, 5..25),
        k in 0usize..25,
        v1 in 1e3f64..1e6,
        v2 in 1e3f64..1e9,
        floor in 0.0f64..2.0,
    ) {
        let k = k % base.len();
        let with = |v: f64| {
            let mut x = base.clone();
            x[k] = v;
            let med = stats::median(&x).unwrap();
            let mad = stats::mad(&x, med).unwrap();
            (0..x.len()).filter(|&i| i != k).map(|i| stats::robust_z(x[i], med, mad, floor)).collect::<Vec<_>>()
        };
        prop_assert_eq!(with(v1), with(v2));
    }

    /// Theil–Sen recovers a line through data with a minority of wild points.
    #[test]
    fn theil_sen_recovers_slope(slope in -5.0f64..5.0, icpt in -50.0f64..50.0, wild in proptest::collection::vec((0usize..40, -1e4f64..1e4), 0..5)) {
        let x: Vec<f64> = (0..40).map(f64::from).collect();
        let mut y: Vec<f64> = x.iter().map(|x| slope * x + icpt).collect();
        for (i, v) in wild { y[i] = v; }
        let (s, _) = stats::theil_sen(&x, &y).unwrap();
        prop_assert!((s - slope).abs() < 0.5, "{} vs {}", s, slope);
    }
}
