//! Prints the size budget figures of `docs/sync.md`:
//! `cargo run -p wrale-sync --release --example wire_budget`.

use std::collections::BTreeMap;

use wrale_core::model::DeviceInfo;
use wrale_core::units::Celsius;
use wrale_core::{BoardModel, DeviceId, Timestamp};
use wrale_sync::{Author, ReportedUpdate, SyncSession, Twin};

fn t(s: i64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + s)
}

/// Runs the protocol to quiet; returns (frames, bytes, round trips).
fn sync(
    a: &mut Twin,
    sa: &mut SyncSession,
    b: &mut Twin,
    sb: &mut SyncSession,
) -> (usize, usize, usize) {
    let (mut frames, mut bytes, mut rounds) = (0, 0, 0);
    loop {
        let mut any = false;
        while let Some(f) = sa.generate(a) {
            frames += 1;
            bytes += f.len();
            any = true;
            sb.receive(b, &f, t(0)).expect("frame");
        }
        while let Some(f) = sb.generate(b) {
            frames += 1;
            bytes += f.len();
            any = true;
            sa.receive(a, &f, t(0)).expect("frame");
        }
        if !any {
            return (frames, bytes, rounds);
        }
        rounds += 1;
    }
}

/// Like `sync`, also returning each frame's size.
fn sync_sizes(
    a: &mut Twin,
    sa: &mut SyncSession,
    b: &mut Twin,
    sb: &mut SyncSession,
) -> (usize, usize, usize, Vec<usize>) {
    let mut sizes = Vec::new();
    let mut rounds = 0;
    loop {
        let mut any = false;
        while let Some(f) = sa.generate(a) {
            sizes.push(f.len());
            any = true;
            sb.receive(b, &f, t(0)).expect("frame");
        }
        while let Some(f) = sb.generate(b) {
            sizes.push(f.len());
            any = true;
            sa.receive(a, &f, t(0)).expect("frame");
        }
        if !any {
            let total = sizes.iter().sum();
            return (sizes.len(), total, rounds, sizes);
        }
        rounds += 1;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id = DeviceId::new("pi-rack1-07")?;
    let info = DeviceInfo {
        id: id.clone(),
        model: BoardModel::Pi4B,
        serial: None,
        firmware_version: None,
        agent_version: None,
        labels: BTreeMap::new(),
        location: Default::default(),
        group: None,
    };
    let dev = Author::device(&id);
    let fleet = Author::fleet("fleetd");

    for history in [0usize, 10_000] {
        let mut brain = Twin::new(&info, fleet.clone(), t(0))?;
        let mut device = Twin::empty(&id, dev.clone())?;
        for i in 0..history {
            device.report(
                &ReportedUpdate::default().reading("cpu_temp_c", 30.0 + (i % 40) as f64),
                t(i as i64 * 61),
            )?;
        }
        let mut sb = SyncSession::new(&brain, "device");
        let mut sd = SyncSession::new(&device, "brain");
        sync(&mut brain, &mut sb, &mut device, &mut sd);
        // One reported field changes; saved sync state on both sides. The first
        // edit of this twin instance also registers its actor; measure the next.
        for (n, temp) in [(0, 90.5), (1, 91.5)] {
            device.save_incremental();
            device.report(
                &ReportedUpdate::default().reading("cpu_temp_c", temp),
                t(10_000_000 + n * 61),
            )?;
            let change = device.save_incremental();
            let (frames, bytes, rounds, sizes) =
                sync_sizes(&mut device, &mut sd, &mut brain, &mut sb);
            assert_eq!(brain.reported()?.cpu_temp(), Some(Celsius(temp)));
            let what = if n == 0 {
                "first edit of the instance"
            } else {
                "steady state"
            };
            let topic = format!("$aws/things/{id}/shadow/update");
            let payload = r#"{"state":{"reported":{"cpu_temp_c":90.5}}}"#;
            println!(
                "one reported field, history {history:>6}, saved state, {what}: {frames} frames {sizes:?} = {bytes} B \
                 ({rounds} round trip(s)); the change itself {} B; AWS shadow update: topic {} B + payload {} B = {} B",
                change.len(),
                topic.len(),
                payload.len(),
                topic.len() + payload.len()
            );
        }
    }

    // 1,000 offline edits per side, after a short and a long shared history.
    for shared in [0usize, 10_000] {
        let mut brain = Twin::new(&info, fleet.clone(), t(0))?;
        let mut device = Twin::empty(&id, dev.clone())?;
        for i in 0..shared {
            device.report(
                &ReportedUpdate::default().reading("supply_v", (i % 2) as f64),
                t(i as i64 * 61),
            )?;
        }
        let mut sb = SyncSession::new(&brain, "device");
        let mut sd = SyncSession::new(&device, "brain");
        sync(&mut brain, &mut sb, &mut device, &mut sd);
        brain.save_incremental();
        device.save_incremental();
        let alice = Author::user("alice");
        for i in 0..1000i64 {
            device.report(
                &ReportedUpdate::default().reading("cpu_temp_c", (i % 2) as f64 * 10.0),
                t(1_000_000 + i * 61),
            )?;
            brain.edit_desired(|c| c.config_version = i as u64 + 1, &alice, t(i))?;
        }
        let own: usize = device.save_incremental().len() + brain.save_incremental().len();
        let (frames, bytes, rounds) = sync(&mut device, &mut sd, &mut brain, &mut sb);
        assert_eq!(brain.heads(), device.heads());
        println!(
            "1,000 offline edits per side after {shared} shared changes: {rounds} round trip(s), {frames} frames, \
             {bytes} B on the wire; the changes' own bytes {own} B (ratio {:.2})",
            bytes as f64 / own as f64
        );
    }
    let mut at_rest = Twin::new(&info, dev.clone(), t(0))?;
    at_rest.report(&ReportedUpdate::default().reading("cpu_temp_c", 50.0), t(0))?;
    let n0 = at_rest.change_count();
    for s in 1..=3600 {
        let jitter = ((s % 9) as f64 - 4.0) * 0.1;
        at_rest.report(
            &ReportedUpdate::default().reading("cpu_temp_c", 50.0 + jitter),
            t(s),
        )?;
    }
    println!(
        "device at rest, 1 Hz for an hour: {} changes",
        at_rest.change_count() - n0
    );
    Ok(())
}
