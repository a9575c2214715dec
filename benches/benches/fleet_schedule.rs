//! `fleet_schedule`: one scheduling pass over 10,000 devices (250 racks of 40,
//! Pi 4 and Pi 5, two roles) and 1,000 workloads with 1-5 replicas (about 3,000
//! replicas; label, model, anti-affinity and rack-spread constraints).
//!
//! - `place_all`: from no placements.
//! - `rebalance`: from the placements of `place_all`, with the ambient of every
//!   every other device hosting a replica raised by 45 °C (evictions and moves).
//!
//! Goal (issue #7): under 1 s per pass.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wrale_core::BoardModel;
use wrale_core::fleet::scheduler::{Node, ScheduleInput, SchedulerConfig, Workload, schedule};
use wrale_core::model::{DeviceId, Location};
use wrale_core::units::{Celsius, KelvinPerWatt, Watts};

fn input() -> ScheduleInput {
    let nodes = (0..10_000usize)
        .map(|i| {
            let pi5 = i % 4 == 0;
            let mut n = Node::new(
                DeviceId::new(format!("pi-{i:05}")).unwrap(),
                if pi5 {
                    BoardModel::Pi5
                } else {
                    BoardModel::Pi4B
                },
                Location {
                    site: Some("lab".into()),
                    rack: Some(format!("r{:03}", i / 40)),
                    ..Location::default()
                },
                Celsius(20.0 + (i % 13) as f64),
                KelvinPerWatt(if pi5 { 4.2 } else { 4.5 + (i % 7) as f64 * 0.5 }),
                Watts(if pi5 { 2.8 } else { 2.7 }),
                Celsius(80.0),
                Watts(if pi5 { 20.0 } else { 12.0 }),
            );
            n.labels.insert(
                "role".into(),
                if i % 3 == 0 { "edge" } else { "batch" }.into(),
            );
            n
        })
        .collect();
    let workloads = (0..1_000usize)
        .map(|i| {
            let mut w = Workload::new(
                format!("w{i:04}"),
                10.0 + (i % 5) as f64 * 10.0,
                Watts(0.5 + (i % 6) as f64 * 0.4),
            );
            w.replicas = 1 + (i % 5) as u32;
            w.priority = (i % 4) as i32;
            if i % 3 == 0 {
                w.constraints.labels.insert("role".into(), "edge".into());
            }
            if i % 10 == 0 {
                w.constraints.models = vec![BoardModel::Pi5];
            }
            if i % 7 == 0 {
                w.constraints.anti_affinity = vec![format!("w{:04}", (i + 1) % 1000)];
            }
            w.constraints.spread_racks = i % 2 == 0;
            w
        })
        .collect();
    ScheduleInput {
        nodes,
        workloads,
        placements: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let cfg = SchedulerConfig::default();
    let fresh = input();
    let first = schedule(&fresh, &cfg);
    let replicas: u32 = fresh.workloads.iter().map(|w| w.replicas).sum();
    assert_eq!(first.placements.len() as u32, replicas, "everything fits");
    let mut hot = fresh.clone();
    hot.placements = first.placements.clone();
    // Every other device that hosts something gets a 45 °C hotter room.
    let mut hosts: Vec<&DeviceId> = first.placements.iter().map(|p| &p.device).collect();
    hosts.sort();
    hosts.dedup();
    let heated: std::collections::BTreeSet<DeviceId> =
        hosts.into_iter().step_by(2).cloned().collect();
    for n in hot.nodes.iter_mut().filter(|n| heated.contains(&n.device)) {
        n.ambient = n.ambient + Celsius(45.0);
    }

    let mut g = c.benchmark_group("schedule");
    g.sample_size(10);
    g.throughput(Throughput::Elements(replicas as u64));
    g.bench_function("place_all_10000_devices", |b| {
        b.iter(|| black_box(schedule(black_box(&fresh), &cfg)))
    });
    g.bench_function("rebalance_10000_devices", |b| {
        b.iter(|| black_box(schedule(black_box(&hot), &cfg)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
