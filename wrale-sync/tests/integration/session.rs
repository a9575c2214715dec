//! Sync sessions: persisted state, reconnects, bad frames.

use wrale_core::units::Celsius;
use wrale_sync::{Envelope, Error, FrameKind, ReportedUpdate, SyncSession, Twin};

use crate::common::*;

#[test]
fn saved_sync_state_makes_a_reconnect_send_only_what_is_missing() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut d = Twin::empty(&device_id(), dev()).unwrap();
    // Some history first.
    for i in 0..3000 {
        d.report(
            &ReportedUpdate::default().reading("cpu_temp_c", (i % 50) as f64),
            t(i * 100),
        )
        .unwrap();
    }
    let mut sf = SyncSession::new(&f, "device");
    let mut sd = SyncSession::new(&d, "brain");
    sync_pair(&mut f, &mut sf, &mut d, &mut sd, t(0));
    assert_eq!(f.heads(), d.heads());
    let saved_f = sf.saved_state();
    let saved_d = sd.saved_state();

    let edit = |d: &mut Twin| {
        d.report(
            &ReportedUpdate::default().reading("cpu_temp_c", 99.0),
            t(60_000),
        )
        .unwrap();
    };
    // Reconnect with saved state.
    let mut d1 = Twin::load(&d.save(), dev()).unwrap();
    let mut f1 = Twin::load(&f.save(), fleet()).unwrap();
    edit(&mut d1);
    let mut sf1 = SyncSession::with_saved_state(&f1, "device", &saved_f).unwrap();
    let mut sd1 = SyncSession::with_saved_state(&d1, "brain", &saved_d).unwrap();
    let (_, kept_bytes, _) = sync_pair(&mut f1, &mut sf1, &mut d1, &mut sd1, t(1));
    assert_eq!(f1.reported().unwrap().cpu_temp(), Some(Celsius(99.0)));
    // Reconnect without it.
    let mut d2 = Twin::load(&d.save(), dev()).unwrap();
    let mut f2 = Twin::load(&f.save(), fleet()).unwrap();
    edit(&mut d2);
    let mut sf2 = SyncSession::new(&f2, "device");
    let mut sd2 = SyncSession::new(&d2, "brain");
    let (_, fresh_bytes, _) = sync_pair(&mut f2, &mut sf2, &mut d2, &mut sd2, t(1));
    assert!(
        kept_bytes * 4 < fresh_bytes,
        "saved state {kept_bytes} B vs fresh {fresh_bytes} B"
    );
    assert!(kept_bytes < 800, "{kept_bytes}");
}

#[test]
fn bad_frames_are_named_and_never_touch_the_twin() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut s = SyncSession::new(&f, "x");
    let heads = f.heads();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "too short"),
        (b"XX\x01\x01\x00".to_vec(), "magic"),
        (
            Envelope::new(FrameKind::Sync, "pi-rack1-07", 0, vec![0x42, 1, 2]).encode(),
            "sync message",
        ),
        (
            Envelope::new(FrameKind::Sync, "other-pi", 0, vec![]).encode(),
            "other-pi",
        ),
        (
            Envelope::new(FrameKind::EpochSnapshot, "pi-rack1-07", 5, b"junk".to_vec()).encode(),
            "decode",
        ),
    ];
    for (frame, needle) in cases {
        let e = s.receive(&mut f, &frame, t(1)).unwrap_err();
        assert!(
            e.to_string().contains(needle),
            "{e} should mention {needle}"
        );
        assert_eq!(f.heads(), heads);
    }
    assert!(matches!(
        SyncSession::with_saved_state(&f, "x", &[0xff]),
        Err(Error::Decode { .. })
    ));
}

/// A device that lost its data (a fresh twin, new actor, no saved state) meets a
/// brain that kept the sync state of its former self. Each round sends at most one
/// sync message per side, and the two converge in a few rounds. (Asking automerge
/// for messages in a loop before the peer answered never ended in this situation.)
#[test]
fn a_device_that_lost_its_data_resyncs_one_message_per_round() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut d = Twin::new(&info(), dev(), t(0)).unwrap();
    for i in 0..200 {
        d.report(
            &ReportedUpdate::default().reading("cpu_temp_c", (i % 40) as f64),
            t(i * 1000),
        )
        .unwrap();
    }
    let mut sf = SyncSession::new(&f, "device");
    let mut sd = SyncSession::new(&d, "brain");
    sync_pair(&mut f, &mut sf, &mut d, &mut sd, t(0));
    assert_eq!(f.heads(), d.heads());
    let saved_f = sf.saved_state();

    let mut fresh = Twin::new(&info(), dev(), t(500_000)).unwrap();
    let mut sf = SyncSession::with_saved_state(&f, "device", &saved_f).unwrap();
    let mut sn = SyncSession::new(&fresh, "brain");
    let mut converged = false;
    for _ in 0..30 {
        let from_f = sf.generate_round(&mut f);
        let from_n = sn.generate_round(&mut fresh);
        assert!(
            from_f.len() <= 3 && from_n.len() <= 3,
            "{} / {}",
            from_f.len(),
            from_n.len()
        );
        let idle = from_f.is_empty() && from_n.is_empty();
        for fr in &from_f {
            sn.receive(&mut fresh, fr, t(1)).expect("valid frame");
        }
        for fr in &from_n {
            sf.receive(&mut f, fr, t(1)).expect("valid frame");
        }
        if idle && f.heads() == fresh.heads() {
            converged = true;
            break;
        }
    }
    assert!(converged, "the fresh device and the brain did not converge");
    assert_eq!(
        fresh.reported().unwrap().cpu_temp(),
        f.reported().unwrap().cpu_temp()
    );
}
