//! Loading a saved twin: history size matters, compaction bounds it.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;

use wrale_core::model::DeviceInfo;
use wrale_core::{BoardModel, DeviceId, Timestamp};
use wrale_sync::{Author, ReportedUpdate, Twin};

fn bench(c: &mut Criterion) {
    let info = DeviceInfo {
        id: DeviceId::new("pi-bench").expect("valid id"),
        model: BoardModel::Pi4B,
        serial: None,
        firmware_version: None,
        agent_version: None,
        labels: BTreeMap::new(),
        location: Default::default(),
        group: None,
    };
    let dev = Author::device(&info.id);
    let mut g = c.benchmark_group("twin_load");
    g.sample_size(20);
    for changes in [1_000usize, 10_000] {
        let mut twin = Twin::new(&info, dev.clone(), Timestamp::EPOCH).expect("twin");
        for i in 0..changes {
            twin.report(
                &ReportedUpdate::default()
                    .reading("cpu_temp_c", (i % 40) as f64)
                    .reading("supply_v", 5.0 + (i % 3) as f64 * 0.1),
                Timestamp::from_secs(i as i64 * 61),
            )
            .expect("report");
        }
        let bytes = twin.save();
        g.bench_with_input(BenchmarkId::new("history", changes), &bytes, |b, bytes| {
            b.iter(|| black_box(Twin::load(bytes, dev.clone()).expect("load")))
        });
        twin.compact(&Author::fleet("fleetd"), Timestamp::from_secs(1 << 30))
            .expect("compact");
        let compacted = twin.save();
        g.bench_with_input(
            BenchmarkId::new("compacted_from", changes),
            &compacted,
            |b, bytes| b.iter(|| black_box(Twin::load(bytes, dev.clone()).expect("load"))),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
