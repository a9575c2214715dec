//! Epoch compaction, with a device editing offline across the brain's epoch change.

use wrale_core::units::Celsius;
use wrale_sync::{Received, ReportedUpdate, SyncSession, Twin};

use crate::common::*;

#[test]
fn compaction_bounds_history_and_keeps_values_and_author_kinds() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut d = Twin::load(&f.save(), dev()).unwrap();
    for i in 0..300 {
        d.report(
            &ReportedUpdate::default().reading("cpu_temp_c", 40.0 + (i % 20) as f64),
            t(i * 120),
        )
        .unwrap();
    }
    f.edit_desired(|c| c.warn = Some(Celsius(66.0)), &alice(), t(1))
        .unwrap();
    f.merge(&mut d).unwrap();
    assert!(f.needs_compaction(200));
    let before = state(&f);
    let saved_before = f.save().len();
    let c = f.compact(&fleet(), t(99_999)).unwrap();
    assert_eq!((c.old_epoch, c.new_epoch), (0, 1));
    assert!(c.old_changes > 300);
    assert!(f.change_count() <= 6, "{}", f.change_count());
    let saved_after = f.save().len();
    // The new epoch's size depends on the number of fields and actors, not on
    // the history (a history this repetitive compresses to about the same).
    assert!(
        saved_after < 1500,
        "new epoch {saved_after} B, old {saved_before} B"
    );
    assert_eq!(state(&f), before, "same resolved values");
    // Archived epoch still loads, for audit.
    let old = Twin::load(&c.archived, fleet()).unwrap();
    assert_eq!(old.epoch(), 0);
    // Kinds survive: a concurrent fleet write of a reported (device-wins) field
    // still loses to the device's value written after the snapshot.
    let mut d2 = Twin::empty(&device_id(), dev()).unwrap();
    d2.adopt_epoch(&f.save(), t(100_000)).unwrap();
    d2.report(
        &ReportedUpdate::default().reading("cpu_temp_c", 70.0),
        t(100_001),
    )
    .unwrap();
    f.set_field(
        &wrale_sync::FieldPath::reported("reading.cpu_temp_c"),
        Some(wrale_sync::FieldValue::Float(10.0)),
        &alice(),
        t(100_001),
    )
    .unwrap();
    f.merge(&mut d2).unwrap();
    assert_eq!(f.reported().unwrap().cpu_temp(), Some(Celsius(70.0)));
}

/// The scenario of the issue: the device is offline while the brain compacts;
/// its edits made offline are carried onto the new epoch, nothing is lost, and
/// conflicts resolve as if there had been no epoch change.
#[test]
fn device_edits_offline_across_an_epoch_change() {
    let mut brain = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut device = Twin::empty(&device_id(), dev()).unwrap();
    let mut sb = SyncSession::new(&brain, "device");
    let mut sd = SyncSession::new(&device, "brain");
    brain
        .edit_desired(
            |c| {
                c.warn = Some(Celsius(70.0));
                c.fan_profile = Some("balance".into());
                c.workloads.insert("agent".into(), true);
            },
            &alice(),
            t(1),
        )
        .unwrap();
    sync_pair(&mut brain, &mut sb, &mut device, &mut sd, t(2));
    assert_eq!(device.desired().unwrap().warn, Some(Celsius(70.0)));
    // Some synced device history, then the device goes offline.
    device
        .report(&ReportedUpdate::default().reading("cpu_temp_c", 45.0), t(3))
        .unwrap();
    sync_pair(&mut brain, &mut sb, &mut device, &mut sd, t(4));

    // Offline edits on the device (a local operator and the agent).
    let tech = wrale_sync::Author::local_operator("tech");
    device
        .edit_desired(
            |c| {
                c.warn = Some(Celsius(68.0)); // concurrent with the brain below
                c.fan_profile = Some("quiet".into()); // brain leaves it alone: sequential
                c.workloads.insert("offline-job".into(), true);
                c.workloads.remove("agent");
            },
            &tech,
            t(10),
        )
        .unwrap();
    device
        .report(
            &ReportedUpdate {
                alerts: Some([("uv".into(), "under-voltage".into())].into()),
                ..Default::default()
            }
            .reading("cpu_temp_c", 61.0),
            t(100),
        )
        .unwrap();
    // Meanwhile the brain edits and starts a new epoch.
    brain
        .edit_desired(|c| c.warn = Some(Celsius(72.0)), &alice(), t(12))
        .unwrap();
    let comp = brain.compact(&fleet(), t(13)).unwrap();
    assert_eq!(comp.new_epoch, 1);

    // Reconnect: saved sync states are kept on both sides.
    sb.reset();
    sd.reset();
    let mut adopted = None;
    for _ in 0..20 {
        let mut quiet = true;
        while let Some(f) = sd.generate(&mut device) {
            quiet = false;
            sb.receive(&mut brain, &f, t(20)).unwrap();
        }
        while let Some(f) = sb.generate(&mut brain) {
            quiet = false;
            if let Received::Adopted(a) = sd.receive(&mut device, &f, t(20)).unwrap() {
                adopted = Some(a);
            }
        }
        if quiet {
            break;
        }
    }
    let a = adopted.expect("device adopted the new epoch");
    assert_eq!((a.old_epoch, a.new_epoch), (0, 1));
    assert!(a.archived.is_some());
    assert!(a.carried >= 5, "carried {}", a.carried);
    assert_eq!(device.epoch(), 1);
    assert_eq!(brain.heads(), device.heads());
    for tw in [&brain, &device] {
        let c = tw.desired().unwrap();
        assert_eq!(c.warn, Some(Celsius(68.0)), "safety-first across the epoch");
        assert_eq!(
            c.fan_profile.as_deref(),
            Some("quiet"),
            "sequential offline edit applies"
        );
        assert!(c.workloads.contains_key("offline-job"));
        assert!(!c.workloads.contains_key("agent"), "offline delete carried");
        let r = tw.reported().unwrap();
        assert_eq!(r.cpu_temp(), Some(Celsius(61.0)));
        assert!(r.alerts.contains_key("uv"));
    }
    let h = brain.history().unwrap();
    assert!(
        h.iter()
            .any(|v| v.author.name == "tech" && v.summary.contains("carried over from epoch 0")),
        "{h:#?}"
    );
}

#[test]
fn concurrent_fleet_wins_edit_across_epoch_keeps_the_fleet_value() {
    let mut brain = Twin::new(&info(), fleet(), t(0)).unwrap();
    brain
        .edit_desired(|c| c.fan_profile = Some("balance".into()), &alice(), t(1))
        .unwrap();
    let mut device = Twin::load(&brain.save(), dev()).unwrap();
    device
        .edit_desired(
            |c| c.fan_profile = Some("quiet".into()),
            &wrale_sync::Author::local_operator("tech"),
            t(2),
        )
        .unwrap();
    brain
        .edit_desired(|c| c.fan_profile = Some("cool".into()), &alice(), t(2))
        .unwrap();
    brain.compact(&fleet(), t(3)).unwrap();
    let a = device.adopt_epoch(&brain.save(), t(4)).unwrap();
    assert_eq!(a.carried, 1);
    let mut b2 = Twin::load(&device.save(), fleet()).unwrap();
    brain.merge(&mut b2).unwrap();
    assert_eq!(
        brain.desired().unwrap().fan_profile.as_deref(),
        Some("cool"),
        "fleet-wins: the concurrent fleet value stays"
    );
    assert_eq!(
        brain.conflicts().unwrap().len(),
        1,
        "both values still listed"
    );
}

#[test]
fn a_peer_that_slept_through_two_epochs_still_carries_its_edits() {
    let mut brain = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut device = Twin::load(&brain.save(), dev()).unwrap();
    device
        .edit_desired(
            |c| {
                c.workloads.insert("late".into(), true);
            },
            &dev(),
            t(1),
        )
        .unwrap();
    brain.compact(&fleet(), t(2)).unwrap();
    brain
        .edit_desired(|c| c.warn = Some(Celsius(60.0)), &alice(), t(3))
        .unwrap();
    brain.compact(&fleet(), t(4)).unwrap();
    assert_eq!(brain.epoch(), 2);
    let a = device.adopt_epoch(&brain.save(), t(5)).unwrap();
    assert_eq!(a.old_epoch, 0);
    assert_eq!(device.epoch(), 2);
    let c = device.desired().unwrap();
    assert!(c.workloads.contains_key("late"));
    assert_eq!(c.warn, Some(Celsius(60.0)));
    // An older epoch's document is refused and changes nothing.
    let heads = device.heads();
    let mut old = Twin::new(&info(), fleet(), t(0)).unwrap();
    assert!(device.adopt_epoch(&old.save(), t(6)).is_err());
    assert_eq!(device.heads(), heads);
}
