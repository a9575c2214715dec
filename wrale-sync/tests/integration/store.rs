//! Stores: the same behaviour from memory and SQLite, and crash safety.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use wrale_sync::store::{load_twin, persist};
use wrale_sync::{MemoryStore, SqliteStore, Store, Twin};

use crate::common::*;

fn conformance(store: &mut dyn Store) {
    let doc = device_id().to_string();
    assert!(store.load(&doc).unwrap().is_none());
    let mut tw = Twin::new(&info(), fleet(), t(0)).unwrap();
    persist(store, &mut tw, 3).unwrap();
    for i in 0..10 {
        tw.edit_desired(
            |c| {
                c.workloads.insert(format!("w{i}"), true);
            },
            &alice(),
            t(i),
        )
        .unwrap();
        persist(store, &mut tw, 3).unwrap();
    }
    let st = store.load(&doc).unwrap().unwrap();
    assert!(
        st.changes.len() <= 4,
        "snapshots taken: {}",
        st.changes.len()
    );
    let mut back = load_twin(store, &doc, fleet()).unwrap().unwrap();
    assert_eq!(back.heads(), tw.heads());
    assert_eq!(back.desired().unwrap().workloads.len(), 10);
    store.put_sync_state(&doc, "brain", b"state-1").unwrap();
    store.put_sync_state(&doc, "brain", b"state-2").unwrap();
    assert_eq!(
        store.sync_state(&doc, "brain").unwrap().as_deref(),
        Some(&b"state-2"[..])
    );
    assert!(
        store.append_changes(&doc, 9, b"x").is_err(),
        "wrong epoch refused"
    );
    let c = tw.compact(&fleet(), t(100)).unwrap();
    store
        .switch_epoch(&doc, c.old_epoch, &c.archived, c.new_epoch, &tw.save())
        .unwrap();
    assert_eq!(store.archived_epochs(&doc).unwrap(), vec![0]);
    assert_eq!(store.load_archived(&doc, 0).unwrap().unwrap(), c.archived);
    assert!(
        store.sync_state(&doc, "brain").unwrap().is_none(),
        "old epoch's states dropped"
    );
    tw.edit_desired(
        |c| {
            c.workloads.insert("after".into(), true);
        },
        &alice(),
        t(101),
    )
    .unwrap();
    persist(store, &mut tw, 3).unwrap();
    let mut back = load_twin(store, &doc, fleet()).unwrap().unwrap();
    assert_eq!(back.epoch(), 1);
    assert_eq!(back.heads(), tw.heads());
    assert_eq!(store.docs().unwrap(), vec![doc.clone()]);
}

#[test]
fn memory_store_conformance() {
    conformance(&mut MemoryStore::new());
}

#[test]
fn sqlite_store_conformance_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twins.db");
    conformance(&mut SqliteStore::open(&path).unwrap());
    let store = SqliteStore::open(&path).unwrap();
    let mut tw = load_twin(&store, device_id().as_str(), fleet())
        .unwrap()
        .unwrap();
    assert!(tw.desired().unwrap().workloads.contains_key("after"));
    let _ = tw.heads();
}

const CHILD_ENV: &str = "WRALE_SYNC_CRASH_CHILD";

/// The writer run by the crash test in a child process: edits, persists, and
/// prints `ACK n` after each durable write, until killed.
#[test]
#[ignore = "helper: run as a child process by sqlite_store_survives_sigkill_at_random_points"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var("WRALE_SYNC_CRASH_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let doc = device_id().to_string();
    let mut store = SqliteStore::open(&path).unwrap();
    let mut tw = match load_twin(&store, &doc, dev()).unwrap() {
        Some(tw) => tw,
        None => Twin::new(&info(), dev(), t(0)).unwrap(),
    };
    let out = std::io::stdout();
    for n in start.. {
        tw.edit_desired(
            |c| {
                c.workloads.insert(format!("w{n}"), true);
            },
            &dev(),
            t(n as i64),
        )
        .unwrap();
        persist(&mut store, &mut tw, 16).unwrap();
        if n % 5 == 0 {
            store
                .put_sync_state(&doc, "brain", &n.to_le_bytes())
                .unwrap();
        }
        if n % 40 == 39 {
            let c = tw.compact(&dev(), t(n as i64)).unwrap();
            let snap = tw.save();
            store
                .switch_epoch(&doc, c.old_epoch, &c.archived, c.new_epoch, &snap)
                .unwrap();
        }
        let mut o = out.lock();
        writeln!(o, "ACK {n}").unwrap();
        o.flush().unwrap();
    }
}

#[test]
fn sqlite_store_survives_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut next: u64 = 0;
    let exe = std::env::current_exe().unwrap();
    for round in 0..5 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 1 + seed % 70;
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "store::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env("WRALE_SYNC_CRASH_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut last_ack = None;
        let mut acks = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ACK ") {
                last_ack = Some(n.trim().parse::<u64>().unwrap());
                acks += 1;
                if acks >= kill_after {
                    child.kill().unwrap();
                    break;
                }
            }
        }
        let _ = child.wait();
        let last = last_ack.unwrap_or_else(|| panic!("round {round}: child acked nothing"));
        // Reopen: loadable, and every acknowledged write is there.
        let store = SqliteStore::open(&path).unwrap();
        let tw = load_twin(&store, device_id().as_str(), dev())
            .unwrap()
            .expect("store loads");
        let wl = tw.desired().unwrap().workloads;
        // Workloads of earlier epochs are carried in the snapshot too.
        for n in 0..=last {
            assert!(
                wl.contains_key(&format!("w{n}")),
                "round {round}: acked w{n} lost (seed {seed})"
            );
        }
        next = last + 1;
    }
    assert!(next > 5);
}
