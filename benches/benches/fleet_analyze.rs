//! `fleet_analyze`: one analyzer pass (`analyze_fleet`) over 10,000 devices, each
//! with an hour of telemetry at one point per minute (CPU and ambient temperature,
//! power, load, supply, fan duty and tach, bytes written), in 250 racks of 40.
//!
//! Goal (issue #7): under 1 s per pass.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wrale_core::fleet::analyzer::{AnalyzerConfig, DeviceWindow, TelemetryPoint, analyze_fleet};
use wrale_core::model::{DeviceId, Location};
use wrale_core::units::{Celsius, Percent, Rpm, Volts, Watts};
use wrale_core::{BoardModel, Timestamp};

const DEVICES: usize = 10_000;
const POINTS: usize = 60;

/// A small deterministic generator (no dependency, same data every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn fleet() -> Vec<DeviceWindow> {
    let mut rng = Lcg(7);
    let t0 = 1_795_000_000i64;
    (0..DEVICES)
        .map(|i| {
            let rack = i / 40;
            let ambient = 22.0 + if rack % 25 == 0 { 8.0 } else { 0.0 } + rng.next();
            let load = 20.0 + 60.0 * rng.next();
            let heat = 2.7 + 3.7 * load / 100.0;
            let eff = if i % 97 == 0 { 0.2 } else { 1.0 };
            let points = (0..POINTS)
                .map(|k| {
                    let duty = if (k / 10) % 2 == 0 { 30.0 } else { 70.0 };
                    let g = 1.0 / 8.0 + eff * duty / 100.0 * (1.0 / 4.5 - 1.0 / 8.0);
                    TelemetryPoint {
                        cpu_temp: Some(Celsius(
                            ambient + heat / g + 0.02 * k as f64 + 0.3 * rng.next(),
                        )),
                        ambient: Some(Celsius(ambient)),
                        power: Some(Watts(heat + 0.45 * duty / 100.0)),
                        cpu_load: Some(Percent::saturating(load)),
                        supply_voltage: Some(Volts(5.05 - 0.02 * rng.next())),
                        fan_duty: Some(Percent::saturating(duty)),
                        fan_rpm: Some(Rpm(5000.0 * duty / 100.0)),
                        bytes_written: Some(k as u64 * 4096),
                        ..TelemetryPoint::at(Timestamp::from_secs(t0 + 60 * k as i64))
                    }
                })
                .collect();
            let mut w = DeviceWindow::new(
                DeviceId::new(format!("pi-{i:05}")).unwrap(),
                BoardModel::Pi4B,
                Location {
                    site: Some(format!("site{}", rack / 50)),
                    rack: Some(format!("r{rack:03}")),
                    shelf: Some(format!("s{}", (i % 40) / 10)),
                    slot: None,
                },
                points,
            );
            w.group = None;
            w
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let windows = fleet();
    let cfg = AnalyzerConfig::default();
    let now = Timestamp::from_secs(1_795_000_000 + 3600);
    // Sanity: the pass finds the hot racks and the clogged fans.
    let fa = analyze_fleet(&windows, &cfg, now);
    assert!(!fa.hot_spots.is_empty());
    assert!(fa.devices.iter().any(|d| d.health.score < 80.0));
    let mut g = c.benchmark_group("analyze_fleet");
    g.sample_size(10);
    g.throughput(Throughput::Elements(DEVICES as u64));
    g.bench_function("10000_devices_60_points", |b| {
        b.iter(|| black_box(analyze_fleet(black_box(&windows), &cfg, now)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
