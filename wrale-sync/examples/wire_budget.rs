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
        // One reported field changes; saved sync state on both sides.
        device.report(
            &ReportedUpdate::default().reading("cpu_temp_c", 90.5),
            t(10_000_000),
        )?;
        let change = device.save_incremental();
        let (frames, bytes, rounds) = sync(&mut device, &mut sd, &mut brain, &mut sb);
        assert_eq!(brain.reported()?.cpu_temp(), Some(Celsius(90.5)));
        let topic = format!("$aws/things/{id}/shadow/update");
        let payload = r#"{"state":{"reported":{"cpu_temp_c":90.5}}}"#;
        println!(
            "one reported field, history {history:>6} changes, saved state: {frames} frames, {bytes} B on the wire \
             ({rounds} round trip(s)); the change itself {} B; AWS shadow update: topic {} B + payload {} B = {} B",
            change.len(),
            topic.len(),
            payload.len(),
            topic.len() + payload.len()
        );
    }

    // 1,000 offline edits per side.
    let mut brain = Twin::new(&info, fleet.clone(), t(0))?;
    let mut device = Twin::empty(&id, dev.clone())?;
    let mut sb = SyncSession::new(&brain, "device");
    let mut sd = SyncSession::new(&device, "brain");
    sync(&mut brain, &mut sb, &mut device, &mut sd);
    let hb = brain.heads();
    let alice = Author::user("alice");
    for i in 0..1000 {
        device.report(
            &ReportedUpdate::default().reading("cpu_temp_c", (i % 2) as f64 * 10.0),
            t(i * 61),
        )?;
        brain.edit_desired(|c| c.config_version = i as u64 + 1, &alice, t(i))?;
    }
    let own: usize = device.save_incremental().len() + brain.save_incremental().len();
    let _ = hb;
    let (frames, bytes, rounds) = sync(&mut device, &mut sd, &mut brain, &mut sb);
    assert_eq!(brain.heads(), device.heads());
    println!(
        "1,000 offline edits per side: {rounds} round trip(s), {frames} frames, {bytes} B on the wire; \
         the changes' own bytes {own} B (ratio {:.2})",
        bytes as f64 / own as f64
    );
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
