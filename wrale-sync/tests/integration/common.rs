//! Shared helpers.

use std::collections::BTreeMap;

use wrale_core::model::DeviceInfo;
use wrale_core::{BoardModel, DeviceId, Timestamp};
use wrale_sync::{Author, Section, SyncSession, Twin};

pub fn device_id() -> DeviceId {
    DeviceId::new("pi-rack1-07").unwrap()
}

pub fn info() -> DeviceInfo {
    DeviceInfo {
        id: device_id(),
        model: BoardModel::Pi4B,
        serial: Some("10000000abcdef".into()),
        firmware_version: None,
        agent_version: Some("0.1.0".into()),
        labels: BTreeMap::from([("role".into(), "camera".into())]),
        location: Default::default(),
        group: None,
    }
}

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + secs)
}

pub fn fleet() -> Author {
    Author::fleet("fleetd")
}

pub fn alice() -> Author {
    Author::user("alice")
}

pub fn dev() -> Author {
    Author::device(&device_id())
}

/// Exchanges frames between two twins over a perfect link until both are quiet;
/// returns (messages, bytes, round trips).
pub fn sync_pair(
    a: &mut Twin,
    sa: &mut SyncSession,
    b: &mut Twin,
    sb: &mut SyncSession,
    now: Timestamp,
) -> (usize, usize, usize) {
    let (mut msgs, mut bytes, mut rounds) = (0, 0, 0);
    for _ in 0..50 {
        let mut any = false;
        let mut leg = |x: &mut Twin, sx: &mut SyncSession, y: &mut Twin, sy: &mut SyncSession| {
            let mut sent = false;
            for f in sx.generate_round(x) {
                msgs += 1;
                bytes += f.len();
                sy.receive(y, &f, now).expect("valid frame");
                sent = true;
            }
            sent
        };
        any |= leg(a, sa, b, sb);
        any |= leg(b, sb, a, sa);
        if !any {
            break;
        }
        rounds += 1;
    }
    (msgs, bytes, rounds)
}

/// Resolved values of every section.
pub fn state(t: &Twin) -> Vec<BTreeMap<String, wrale_sync::FieldValue>> {
    Section::ALL.iter().map(|s| t.fields(*s).unwrap()).collect()
}
