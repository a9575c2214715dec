//! One tick of K changed reported fields: deadband check, one commit.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;

use wrale_core::model::DeviceInfo;
use wrale_core::{BoardModel, DeviceId, Timestamp};
use wrale_sync::{Author, ReportedUpdate, Twin};

fn info() -> DeviceInfo {
    DeviceInfo {
        id: DeviceId::new("pi-bench").expect("valid id"),
        model: BoardModel::Pi4B,
        serial: None,
        firmware_version: None,
        agent_version: None,
        labels: BTreeMap::new(),
        location: Default::default(),
        group: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("twin_update");
    for k in [1usize, 5, 20] {
        g.throughput(Throughput::Elements(k as u64));
        g.bench_with_input(BenchmarkId::new("changed_fields", k), &k, |b, &k| {
            let info = info();
            let mut twin =
                Twin::new(&info, Author::device(&info.id), Timestamp::EPOCH).expect("twin");
            let mut tick: i64 = 0;
            b.iter(|| {
                tick += 1;
                let mut u = ReportedUpdate::default();
                for f in 0..k {
                    // Alternates by 10 units: always outside the deadband.
                    u.readings
                        .insert(format!("r{f}"), if tick % 2 == 0 { 10.0 } else { 20.0 });
                }
                let changed = twin
                    .report(&u, Timestamp::from_secs(tick * 61))
                    .expect("report");
                black_box(changed)
            });
        });
    }
    g.bench_function("at_rest_tick", |b| {
        let info = info();
        let mut twin = Twin::new(&info, Author::device(&info.id), Timestamp::EPOCH).expect("twin");
        let u = ReportedUpdate::default().reading("cpu_temp_c", 50.0);
        twin.report(&u, Timestamp::EPOCH).expect("report");
        let mut s = 0;
        b.iter(|| {
            s += 1;
            black_box(twin.report(&u, Timestamp::from_secs(s)).expect("report"))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
