//! Where twins, peers' sync states and archived epochs are kept.
//!
//! A [`Store`] holds, per document: the current epoch's saved snapshot plus the
//! incremental changes appended after it, the sync state of every peer, and the
//! saved documents of closed epochs (the archive). [`MemoryStore`] is for tests and
//! simulations; [`sqlite::SqliteStore`] is the embedded store of metald and a
//! single-machine fleetd. A PostgreSQL store implements the same trait.

use std::collections::BTreeMap;

use crate::author::Author;
use crate::error::{Error, Result};
use crate::twin::Twin;

#[cfg(feature = "sqlite")]
pub mod sqlite;

/// A twin as stored: snapshot plus appended changes, at an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredTwin {
    /// Epoch of the snapshot.
    pub epoch: u64,
    /// A full [`Twin::save`].
    pub snapshot: Vec<u8>,
    /// [`Twin::save_incremental`] outputs appended since, oldest first.
    pub changes: Vec<Vec<u8>>,
}

/// Storage for twins. Every method is one atomic, durable step: when it returns
/// `Ok`, the data survives a crash.
pub trait Store: Send {
    /// The stored twin, if any.
    fn load(&self, doc: &str) -> Result<Option<StoredTwin>>;
    /// Replaces the snapshot of `doc` (same or first epoch) and drops the appended
    /// changes it includes.
    fn save_snapshot(&mut self, doc: &str, epoch: u64, snapshot: &[u8]) -> Result<()>;
    /// Appends incremental changes; returns how many appended chunks are pending.
    /// Fails when `epoch` is not the stored epoch.
    fn append_changes(&mut self, doc: &str, epoch: u64, changes: &[u8]) -> Result<usize>;
    /// Atomically archives the old epoch's document and starts the new epoch with
    /// `snapshot`. Sync states of the old epoch are dropped.
    fn switch_epoch(
        &mut self,
        doc: &str,
        old_epoch: u64,
        archived: &[u8],
        new_epoch: u64,
        snapshot: &[u8],
    ) -> Result<()>;
    /// Saves a peer's sync state ([`crate::SyncSession::saved_state`]).
    fn put_sync_state(&mut self, doc: &str, peer: &str, state: &[u8]) -> Result<()>;
    /// A peer's saved sync state.
    fn sync_state(&self, doc: &str, peer: &str) -> Result<Option<Vec<u8>>>;
    /// Epochs in the archive of `doc`.
    fn archived_epochs(&self, doc: &str) -> Result<Vec<u64>>;
    /// An archived epoch's saved document.
    fn load_archived(&self, doc: &str, epoch: u64) -> Result<Option<Vec<u8>>>;
    /// Every stored document id.
    fn docs(&self) -> Result<Vec<String>>;
}

/// Loads a twin from a store.
pub fn load_twin(store: &dyn Store, doc: &str, local: Author) -> Result<Option<Twin>> {
    let Some(st) = store.load(doc)? else {
        return Ok(None);
    };
    let twin = Twin::load_parts(&st.snapshot, st.changes.iter().map(Vec::as_slice), local)?;
    if twin.epoch() != st.epoch {
        return Err(Error::Store(format!(
            "{doc}: stored epoch {} but the document says {}",
            st.epoch,
            twin.epoch()
        )));
    }
    Ok(Some(twin))
}

/// Persists what changed in `twin` since its last save: the first time a full
/// snapshot, then appended changes, and a fresh snapshot once more than
/// `snapshot_every` chunks are pending.
pub fn persist(store: &mut dyn Store, twin: &mut Twin, snapshot_every: usize) -> Result<()> {
    let doc = twin.device().to_string();
    match store.load(&doc)? {
        Some(st) if st.epoch == twin.epoch() => {
            let inc = twin.save_incremental();
            if inc.is_empty() {
                return Ok(());
            }
            let pending = store.append_changes(&doc, twin.epoch(), &inc)?;
            if pending > snapshot_every {
                store.save_snapshot(&doc, twin.epoch(), &twin.save())?;
            }
            Ok(())
        }
        Some(st) => Err(Error::Store(format!(
            "{doc}: store is at epoch {} and the twin at {}; use switch_epoch",
            st.epoch,
            twin.epoch()
        ))),
        None => store.save_snapshot(&doc, twin.epoch(), &twin.save()),
    }
}

#[derive(Debug, Default, Clone)]
struct MemDoc {
    current: StoredTwin,
    sync: BTreeMap<String, Vec<u8>>,
    archive: BTreeMap<u64, Vec<u8>>,
}

/// A store in memory (tests, simulations, the fleet-scale harness).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    docs: BTreeMap<String, MemDoc>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn load(&self, doc: &str) -> Result<Option<StoredTwin>> {
        Ok(self
            .docs
            .get(doc)
            .filter(|d| !d.current.snapshot.is_empty())
            .map(|d| d.current.clone()))
    }

    fn save_snapshot(&mut self, doc: &str, epoch: u64, snapshot: &[u8]) -> Result<()> {
        let d = self.docs.entry(doc.to_owned()).or_default();
        if !d.current.snapshot.is_empty() && d.current.epoch != epoch {
            return Err(Error::Store(format!(
                "{doc}: snapshot for epoch {epoch} but the store is at {}",
                d.current.epoch
            )));
        }
        d.current = StoredTwin {
            epoch,
            snapshot: snapshot.to_vec(),
            changes: Vec::new(),
        };
        Ok(())
    }

    fn append_changes(&mut self, doc: &str, epoch: u64, changes: &[u8]) -> Result<usize> {
        let d = self
            .docs
            .get_mut(doc)
            .filter(|d| !d.current.snapshot.is_empty())
            .ok_or_else(|| Error::Store(format!("{doc}: no snapshot to append to")))?;
        if d.current.epoch != epoch {
            return Err(Error::Store(format!(
                "{doc}: changes for epoch {epoch} but the store is at {}",
                d.current.epoch
            )));
        }
        d.current.changes.push(changes.to_vec());
        Ok(d.current.changes.len())
    }

    fn switch_epoch(
        &mut self,
        doc: &str,
        old_epoch: u64,
        archived: &[u8],
        new_epoch: u64,
        snapshot: &[u8],
    ) -> Result<()> {
        check_epoch_order(doc, old_epoch, new_epoch)?;
        let d = self.docs.entry(doc.to_owned()).or_default();
        d.archive.insert(old_epoch, archived.to_vec());
        d.current = StoredTwin {
            epoch: new_epoch,
            snapshot: snapshot.to_vec(),
            changes: Vec::new(),
        };
        d.sync.clear();
        Ok(())
    }

    fn put_sync_state(&mut self, doc: &str, peer: &str, state: &[u8]) -> Result<()> {
        self.docs
            .entry(doc.to_owned())
            .or_default()
            .sync
            .insert(peer.to_owned(), state.to_vec());
        Ok(())
    }

    fn sync_state(&self, doc: &str, peer: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.docs.get(doc).and_then(|d| d.sync.get(peer).cloned()))
    }

    fn archived_epochs(&self, doc: &str) -> Result<Vec<u64>> {
        Ok(self
            .docs
            .get(doc)
            .map(|d| d.archive.keys().copied().collect())
            .unwrap_or_default())
    }

    fn load_archived(&self, doc: &str, epoch: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .docs
            .get(doc)
            .and_then(|d| d.archive.get(&epoch).cloned()))
    }

    fn docs(&self) -> Result<Vec<String>> {
        Ok(self.docs.keys().cloned().collect())
    }
}

/// The precondition every store checks before an epoch switch: epochs only move
/// forward (shared by all `Store` implementations so they refuse alike).
pub(crate) fn check_epoch_order(doc: &str, old_epoch: u64, new_epoch: u64) -> Result<()> {
    if new_epoch <= old_epoch {
        return Err(Error::Store(format!(
            "{doc}: new epoch {new_epoch} is not after {old_epoch}"
        )));
    }
    Ok(())
}
