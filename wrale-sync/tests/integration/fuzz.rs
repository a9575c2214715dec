//! Fuzz-style tests: arbitrary bytes into every decoder never panic and never
//! change a document.

use proptest::prelude::*;

use wrale_sync::{Envelope, FrameKind, SyncSession, Twin};

use crate::common::*;

fn mutate(base: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for (i, x) in flips {
        if !b.is_empty() {
            let n = b.len();
            b[i % n] ^= x;
        }
    }
    b.truncate(cut.min(b.len()));
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512)))]

    #[test]
    fn envelope_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Envelope::decode(&bytes);
    }

    /// Random and mutated frames (envelope valid, payload garbage; or a real
    /// sync message with bits flipped) are rejected or harmless; the twin never
    /// changes unless a frame was accepted.
    #[test]
    fn session_receive_never_panics_or_corrupts(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        kind in 1u8..4,
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        cut in 0usize..400,
    ) {
        let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
        let mut d = Twin::empty(&device_id(), dev()).unwrap();
        let mut sf = SyncSession::new(&f, "d");
        let real = sf.generate(&mut f).unwrap();
        let kind = match kind { 1 => FrameKind::Sync, 2 => FrameKind::EpochSnapshot, _ => FrameKind::EpochRequest };
        let frames = [
            Envelope::new(kind, device_id().as_str(), 0, payload.clone()).encode(),
            mutate(&real, &flips, cut),
            payload,
        ];
        for frame in frames {
            let mut sd = SyncSession::new(&d, "f");
            let before = d.save();
            let heads = d.heads();
            match sd.receive(&mut d, &frame, t(1)) {
                Err(_) => {
                    prop_assert_eq!(d.heads(), heads.clone());
                    prop_assert_eq!(d.save(), before);
                }
                Ok(_) => {
                    // Accepted: the document still loads and reads.
                    let bytes = d.save();
                    let back = Twin::load(&bytes, dev()).unwrap();
                    let _ = back.desired();
                    let _ = back.reported().unwrap();
                }
            }
        }
    }

    #[test]
    fn twin_load_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Twin::load(&bytes, dev());
    }
}

/// Crashers found so far are kept as fixtures and replayed.
#[test]
fn fixture_crashers_are_rejected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crashers");
    let mut d = Twin::empty(&device_id(), dev()).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let mut s = SyncSession::new(&d, "x");
        let heads = d.heads();
        let r = s.receive(&mut d, &bytes, t(0));
        assert!(r.is_err(), "{:?} was accepted", e.path());
        assert_eq!(d.heads(), heads, "{:?}", e.path());
        n += 1;
    }
    assert!(n >= 2, "fixtures missing");
}
