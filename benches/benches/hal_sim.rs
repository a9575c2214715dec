//! The simulator's hot path: one board step (100 ms of virtual time: thermal RC,
//! fan, supply sag, firmware, battery, noise) plus a full `Board::sample()`, and a
//! simulated fleet tick (100 boards stepped one second and sampled once).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wrale_core::board::BoardModel;
use wrale_core::units::Percent;
use wrale_hal::sim::{BatteryConfig, SimBoard, SimConfig};

fn board(seed: u64) -> SimBoard {
    let config = SimConfig {
        model: BoardModel::Pi4B,
        seed,
        load_pct: Percent::saturating(60.0),
        battery: Some(BatteryConfig::default()),
        ..SimConfig::default()
    };
    match SimBoard::new(&config) {
        Ok(b) => b,
        Err(e) => panic!("cannot build the simulated Pi 4: {e}"),
    }
}

fn hal_sim(c: &mut Criterion) {
    let sim = board(1);
    let hal = sim.board();
    c.bench_function("sim_step_100ms_and_sample", |b| {
        b.iter(|| {
            sim.step(Duration::from_millis(100));
            std::hint::black_box(hal.sample())
        })
    });

    let fleet: Vec<(SimBoard, wrale_hal::Board)> = (0..100)
        .map(|i| {
            let s = board(i);
            let b = s.board();
            (s, b)
        })
        .collect();
    let mut group = c.benchmark_group("sim_fleet");
    group.throughput(Throughput::Elements(fleet.len() as u64));
    group.bench_function("tick_100_boards_1s_and_sample", |b| {
        b.iter(|| {
            for (s, hal) in &fleet {
                s.step(Duration::from_secs(1));
                std::hint::black_box(hal.sample());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, hal_sim);
criterion_main!(benches);
