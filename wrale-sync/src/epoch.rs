//! Bounded history: epoch compaction and carrying offline edits across it.
//!
//! An automerge document keeps every change forever: about 180 bytes of memory and
//! 5.6 bytes of saved file per change, and a peer without saved sync state pays
//! about one byte per change of history. So a twin lives in **epochs**. When its
//! history passes a threshold, the authority (fleetd) calls [`Twin::compact`]: it
//! starts a new document for epoch `n + 1` from the shared genesis plus one snapshot
//! change per author kind holding the current resolved values, and records in the
//! new document's `prev` map the *clock* of the old one: for every actor, the
//! highest sequence number the snapshot includes. The old document is returned for
//! the archive (kept for audit, never loaded again).
//!
//! A peer still on epoch `n` that receives the new document calls
//! [`Twin::adopt_epoch`]. Its changes above the recorded clock are exactly the
//! edits the authority never saw. For every field they touched, the peer writes its
//! value into the new epoch:
//!
//! - **sequentially** (after the snapshot) when the snapshot still holds the value
//!   the peer started from: nobody else changed the field, the edit simply applies;
//! - **concurrently** (on a fork at the new genesis, then merged) when the snapshot
//!   holds something else: someone changed the field meanwhile, so both values
//!   become concurrent candidates and the field's policy decides, exactly as it
//!   would have in the old epoch.
//!
//! Nothing acknowledged is lost, and the result is the same whichever peer carries
//! an edit over first (a second carry of the same edit adds an identical candidate).

use automerge::{ChangeHash, ObjId};
use std::collections::{BTreeMap, HashMap, HashSet};

use wrale_core::Timestamp;

use crate::author::{Author, AuthorKind};
use crate::error::{Error, Result};
use crate::schema::{Candidate, FieldPath, FieldPolicy, FieldValue, Section, policy_for, resolve};
use crate::twin::{FieldWrite, Twin, actor_of, author_of, genesis};

/// How many past epochs' clocks a new epoch keeps, so a peer that slept through
/// several compactions still finds its clock.
pub const KEPT_CLOCKS: u64 = 8;

/// What [`Twin::compact`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Compaction {
    /// The epoch that was closed.
    pub old_epoch: u64,
    /// The new epoch.
    pub new_epoch: u64,
    /// The saved old document, for the archive.
    pub archived: Vec<u8>,
    /// Changes in the old epoch.
    pub old_changes: usize,
}

/// What [`Twin::adopt_epoch`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    /// The epoch left behind.
    pub old_epoch: u64,
    /// The epoch now current.
    pub new_epoch: u64,
    /// The saved old document, for the archive (`None` when the document was
    /// of the same epoch and was simply merged).
    pub archived: Option<Vec<u8>>,
    /// Fields carried over from unsynced local edits.
    pub carried: usize,
}

fn clock_key(epoch: u64, actor_hex: &str) -> String {
    format!("c{epoch}:{actor_hex}")
}

/// The snapshot author for values written by `kind`.
fn snapshot_author(kind: AuthorKind) -> Author {
    Author::new(kind, "epoch-snapshot")
}

enum Mode {
    Sequential,
    Concurrent,
}

impl Twin {
    /// Whether this epoch's history has passed `max_changes`.
    pub fn needs_compaction(&mut self, max_changes: usize) -> bool {
        self.change_count() > max_changes
    }

    /// Starts a new epoch from the current state (authority only; see the module
    /// docs). Refused while a `manual` conflict is open, because a snapshot holds
    /// one value per field.
    pub fn compact(&mut self, author: &Author, now: Timestamp) -> Result<Compaction> {
        let open = self
            .conflicts()?
            .iter()
            .filter(|c| c.policy == FieldPolicy::Manual)
            .count();
        if open > 0 {
            return Err(Error::OpenConflicts(open));
        }
        let old_epoch = self.epoch();
        let new_epoch = old_epoch + 1;
        let old_changes = self.change_count();
        let archived = self.save();

        // The clock of the closing epoch, and those of earlier epochs still kept.
        let mut prev: BTreeMap<String, FieldValue> = BTreeMap::new();
        for c in self.doc.get_changes(&[]) {
            let key = clock_key(old_epoch, &c.actor_id().to_hex_string());
            let seq = c.seq() as i64;
            let e = prev.entry(key).or_insert(FieldValue::Int(seq));
            if e.as_f64().is_some_and(|v| (seq as f64) > v) {
                *e = FieldValue::Int(seq);
            }
        }
        for (k, vals) in self.prev_entries() {
            let epoch = k
                .strip_prefix('c')
                .and_then(|r| r.split_once(':'))
                .and_then(|(e, _)| e.parse::<u64>().ok());
            if let Some(e) = epoch {
                if e + KEPT_CLOCKS > new_epoch {
                    if let Some(min) = min_int(&vals) {
                        prev.insert(k, FieldValue::Int(min));
                    }
                }
            }
        }

        // The snapshot: current resolved values, each written by an actor of the
        // same kind as the value's writer, so fleet-wins / device-wins keep working.
        let mut by_kind: BTreeMap<AuthorKind, Vec<FieldWrite>> = BTreeMap::new();
        for section in Section::ALL {
            for key in self.keys(section, None) {
                let path = FieldPath::new(section, key);
                let cands = self.candidates(section, &path.key, None)?;
                let policy = policy_for(&path);
                if let Some(v) = resolve(policy, &cands) {
                    let kind = winner_kind(policy, &cands, &v);
                    by_kind.entry(kind).or_default().push((path, Some(v)));
                }
            }
        }

        let mut next = Twin::attach(
            genesis(self.device(), new_epoch)?,
            self.local_author().clone(),
        )?;
        prev.insert("from_epoch".into(), FieldValue::Int(old_epoch as i64));
        next.commit_inner(
            author,
            now,
            Some(format!("epoch {new_epoch} from {old_epoch}")),
            Vec::new(),
            &prev,
        )?;
        for (kind, writes) in by_kind {
            next.commit_writes(
                &snapshot_author(kind),
                now,
                Some(format!("epoch {new_epoch} snapshot")),
                writes,
            )?;
        }
        self.replace_doc(next);
        Ok(Compaction {
            old_epoch,
            new_epoch,
            archived,
            old_changes,
        })
    }

    /// Moves this twin onto a newer epoch's document (`bytes`, from the authority
    /// or any peer already on it), carrying over every local edit the new epoch
    /// does not contain. A document of the same epoch is merged instead; an older
    /// one is refused with [`Error::EpochMismatch`]. On error, the twin is unchanged.
    pub fn adopt_epoch(&mut self, bytes: &[u8], now: Timestamp) -> Result<Adoption> {
        let mut next = Twin::load(bytes, self.local_author().clone())?;
        if next.device() != self.device() {
            return Err(Error::WrongDevice {
                ours: self.device().to_string(),
                theirs: next.device().to_string(),
            });
        }
        let old_epoch = self.epoch();
        if next.epoch() == old_epoch {
            self.merge(&mut next)?;
            return Ok(Adoption {
                old_epoch,
                new_epoch: old_epoch,
                archived: None,
                carried: 0,
            });
        }
        if next.epoch() < old_epoch {
            return Err(Error::EpochMismatch {
                ours: old_epoch,
                theirs: next.epoch(),
            });
        }

        // The clock of our epoch as the new document recorded it (min over
        // concurrent records: a lower clock only means more is carried again).
        let prefix = format!("c{old_epoch}:");
        let clock: HashMap<String, i64> = next
            .prev_entries()
            .into_iter()
            .filter_map(|(k, vals)| {
                let hex = k.strip_prefix(&prefix)?.to_owned();
                Some((hex, min_int(&vals)?))
            })
            .collect();

        // Changes the snapshot included, and their heads.
        let changes = self.doc.get_changes(&[]);
        let included: Vec<_> = changes
            .iter()
            .filter(|c| {
                clock
                    .get(&c.actor_id().to_hex_string())
                    .is_some_and(|s| (c.seq() as i64) <= *s)
            })
            .collect();
        if included.len() == changes.len() {
            let archived = self.save();
            self.replace_doc(next);
            return Ok(Adoption {
                old_epoch,
                new_epoch: self.epoch(),
                archived: Some(archived),
                carried: 0,
            });
        }
        let inc_hashes: HashSet<ChangeHash> = included.iter().map(|c| c.hash()).collect();
        let deps: HashSet<ChangeHash> = included
            .iter()
            .flat_map(|c| c.deps().iter().copied())
            .collect();
        let base_heads: Vec<ChangeHash> = inc_hashes.difference(&deps).copied().collect();

        // Field by field: what our unsynced changes wrote.
        let registry = self.registry();
        let mut carry: BTreeMap<(Author, bool), Vec<FieldWrite>> = BTreeMap::new();
        let mut carried = 0;
        for section in Section::ALL {
            let mut keys: Vec<String> = self.keys(section, None);
            if !base_heads.is_empty() {
                keys.extend(self.keys(section, Some(&base_heads)));
            }
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = FieldPath::new(section, key);
                let policy = policy_for(&path);
                let cur = self.raw_candidates(section, &path.key, None)?;
                let base = if base_heads.is_empty() {
                    Vec::new()
                } else {
                    self.raw_candidates(section, &path.key, Some(&base_heads))?
                };
                let base_ids: HashSet<&ObjId> = base.iter().map(|(_, id)| id).collect();
                let fresh: Vec<&(FieldValue, ObjId)> = cur
                    .iter()
                    .filter(|(_, id)| !base_ids.contains(id))
                    .collect();
                let base_value = resolve(policy, &to_candidates(&base));
                let their_value = next.field(&path)?;
                let unchanged_there = match (&base_value, &their_value) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.same(b),
                    _ => false,
                };
                if fresh.is_empty() {
                    // Deleted offline: carry the delete when nobody changed it since.
                    if cur.is_empty()
                        && !base.is_empty()
                        && unchanged_there
                        && their_value.is_some()
                    {
                        let author = author_of(&registry, &base[0].1);
                        carry.entry((author, false)).or_default().push((path, None));
                        carried += 1;
                    }
                    continue;
                }
                let fresh_cands: Vec<(FieldValue, ObjId)> = fresh
                    .iter()
                    .map(|(v, id)| (v.clone(), id.clone()))
                    .collect();
                let Some(value) = resolve(policy, &to_candidates(&fresh_cands)) else {
                    continue;
                };
                let writer = fresh_cands
                    .iter()
                    .find(|(v, _)| v.same(&value))
                    .map(|(_, id)| author_of(&registry, id))
                    .unwrap_or_else(|| self.local_author().clone());
                let mode = if unchanged_there {
                    Mode::Sequential
                } else {
                    Mode::Concurrent
                };
                carry
                    .entry((writer, matches!(mode, Mode::Concurrent)))
                    .or_default()
                    .push((path, Some(value)));
                carried += 1;
            }
        }

        let message = Some(format!("carried over from epoch {old_epoch}"));
        let genesis_heads = genesis(next.device(), next.epoch())?.get_heads();
        let mut fork: Option<Twin> = None;
        for ((author, concurrent), writes) in carry {
            if concurrent {
                if fork.is_none() {
                    let doc = next.doc.fork_at(&genesis_heads)?;
                    fork = Some(Twin::attach(doc, self.local_author().clone())?);
                }
                if let Some(f) = fork.as_mut() {
                    f.commit_writes(&author, now, message.clone(), writes)?;
                }
            } else {
                next.commit_writes(&author, now, message.clone(), writes)?;
            }
        }
        if let Some(mut f) = fork {
            next.doc.merge(&mut f.doc)?;
        }
        let archived = self.save();
        self.replace_doc(next);
        Ok(Adoption {
            old_epoch,
            new_epoch: self.epoch(),
            archived: Some(archived),
            carried,
        })
    }
}

fn to_candidates(raw: &[(FieldValue, ObjId)]) -> Vec<Candidate> {
    raw.iter()
        .map(|(v, id)| Candidate {
            value: v.clone(),
            kind: actor_of(id)
                .map(AuthorKind::of_actor)
                .unwrap_or(AuthorKind::Fleet),
        })
        .collect()
}

fn min_int(vals: &[FieldValue]) -> Option<i64> {
    vals.iter()
        .filter_map(|v| match v {
            FieldValue::Int(i) => Some(*i),
            _ => None,
        })
        .min()
}

/// The kind to write a snapshot value with: that of a candidate holding the
/// winning value, preferring the side the policy favours.
fn winner_kind(policy: FieldPolicy, cands: &[Candidate], v: &FieldValue) -> AuthorKind {
    let holders: Vec<AuthorKind> = cands
        .iter()
        .filter(|c| c.value.same(v))
        .map(|c| c.kind)
        .collect();
    let prefer = |f: fn(AuthorKind) -> bool| holders.iter().copied().find(|k| f(*k));
    let pick = match policy {
        FieldPolicy::DeviceWins => prefer(AuthorKind::is_device_side),
        _ => prefer(AuthorKind::is_fleet_side),
    };
    pick.or_else(|| holders.iter().copied().max())
        .unwrap_or(AuthorKind::Fleet)
}
