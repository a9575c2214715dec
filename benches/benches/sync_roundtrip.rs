//! Sync round trips: a one-field edit with saved state, and 1,000 offline edits
//! per side.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;

use wrale_core::model::DeviceInfo;
use wrale_core::{BoardModel, DeviceId, Timestamp};
use wrale_sync::{Author, ReportedUpdate, SyncSession, Twin};

fn t(s: i64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + s)
}

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

fn sync(a: &mut Twin, sa: &mut SyncSession, b: &mut Twin, sb: &mut SyncSession) -> usize {
    let mut bytes = 0;
    loop {
        let mut any = false;
        while let Some(f) = sa.generate(a) {
            bytes += f.len();
            any = true;
            sb.receive(b, &f, t(0)).expect("frame");
        }
        while let Some(f) = sb.generate(b) {
            bytes += f.len();
            any = true;
            sa.receive(a, &f, t(0)).expect("frame");
        }
        if !any {
            return bytes;
        }
    }
}

struct Pair {
    brain: Twin,
    device: Twin,
    sb: SyncSession,
    sd: SyncSession,
}

fn pair(history: usize) -> Pair {
    let info = info();
    let mut brain = Twin::new(&info, Author::fleet("fleetd"), t(0)).expect("twin");
    let mut device = Twin::empty(&info.id, Author::device(&info.id)).expect("twin");
    for i in 0..history {
        device
            .report(
                &ReportedUpdate::default().reading("cpu_temp_c", (i % 40) as f64),
                t(i as i64 * 61),
            )
            .expect("report");
    }
    let mut sb = SyncSession::new(&brain, "device");
    let mut sd = SyncSession::new(&device, "brain");
    sync(&mut brain, &mut sb, &mut device, &mut sd);
    Pair {
        brain,
        device,
        sb,
        sd,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync_roundtrip");
    g.sample_size(20);
    g.bench_function("one_field_saved_state", |b| {
        let mut p = pair(1000);
        let mut i: i64 = 0;
        b.iter(|| {
            i += 1;
            p.device
                .report(
                    &ReportedUpdate::default().reading("cpu_temp_c", (i % 2) as f64 * 50.0),
                    t(100_000 + i * 61),
                )
                .expect("report");
            black_box(sync(&mut p.device, &mut p.sd, &mut p.brain, &mut p.sb))
        });
    });
    g.bench_function("offline_1000_edits_per_side", |b| {
        b.iter_batched(
            || {
                let mut p = pair(0);
                let alice = Author::user("alice");
                for i in 0..1000 {
                    p.device
                        .report(
                            &ReportedUpdate::default().reading("cpu_temp_c", (i % 2) as f64 * 10.0),
                            t(i * 61),
                        )
                        .expect("report");
                    p.brain
                        .edit_desired(|c| c.config_version = i as u64 + 1, &alice, t(i))
                        .expect("edit");
                }
                p
            },
            |mut p| black_box(sync(&mut p.device, &mut p.sd, &mut p.brain, &mut p.sb)),
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
