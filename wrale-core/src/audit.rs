//! The audit record of every command: who asked, what, the verdict and the rule,
//! the result, and when.
//!
//! [`AuditStore`] is the storage seam: [`MemoryAuditStore`] lives here (tests,
//! bindings, a daemon's recent-history view); the daemons persist records with their
//! own implementations. Stores are append-only.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use crate::error::{Error, Refused, Result, RuleId};
use crate::model::{Actor, Command};
use crate::time::Timestamp;

/// The safety engine's verdict on a command, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AuditVerdict {
    /// Allowed.
    Allowed,
    /// Refused by a rule.
    Refused {
        /// The rule.
        rule: RuleId,
        /// Why.
        reason: String,
    },
}

impl From<&Result<(), Refused>> for AuditVerdict {
    fn from(r: &Result<(), Refused>) -> Self {
        match r {
            Ok(()) => AuditVerdict::Allowed,
            Err(e) => AuditVerdict::Refused {
                rule: e.rule.clone(),
                reason: e.reason.clone(),
            },
        }
    }
}

/// What happened after the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Refused, so not executed.
    NotExecuted,
    /// Allowed and waiting for a two-phase confirmation.
    AwaitingConfirmation,
    /// Executed successfully.
    Applied,
    /// Executed, but the hardware reported an error.
    Failed(String),
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number assigned by the store (0 before it is stored).
    #[serde(default)]
    pub seq: u64,
    /// When the command was decided.
    pub at: Timestamp,
    /// Who asked.
    pub actor: Actor,
    /// Why they asked.
    #[serde(default)]
    pub reason: String,
    /// The command.
    pub command: Command,
    /// The verdict and the rule.
    pub verdict: AuditVerdict,
    /// The result.
    pub outcome: AuditOutcome,
}

/// Append-only storage of audit records.
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// Stores a record and returns its sequence number (increasing from 1).
    fn append(&self, record: AuditRecord) -> Result<u64>;
    /// Records with `seq > after`, oldest first, at most `limit`.
    fn since(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;
}

/// An in-memory audit store keeping the most recent `capacity` records.
#[derive(Debug)]
pub struct MemoryAuditStore {
    inner: Mutex<MemoryInner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct MemoryInner {
    next_seq: u64,
    records: VecDeque<AuditRecord>,
}

impl MemoryAuditStore {
    /// A store keeping at most `capacity` records (oldest dropped first; at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(MemoryInner {
                next_seq: 1,
                records: VecDeque::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>> {
        self.inner
            .lock()
            .map_err(|_| Error::Audit("memory store lock poisoned".into()))
    }
}

impl Default for MemoryAuditStore {
    /// A store keeping 10 000 records.
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl AuditStore for MemoryAuditStore {
    fn append(&self, mut record: AuditRecord) -> Result<u64> {
        let mut inner = self.lock()?;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        record.seq = seq;
        if inner.records.len() == self.capacity {
            inner.records.pop_front();
        }
        inner.records.push_back(record);
        Ok(seq)
    }

    fn since(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let inner = self.lock()?;
        Ok(inner
            .records
            .iter()
            .filter(|r| r.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64, refused: bool) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at: Timestamp::from_secs(i),
            actor: Actor::User("ada".into()),
            reason: "test".into(),
            command: Command::Reboot,
            verdict: if refused {
                AuditVerdict::Refused {
                    rule: RuleId::builtin("rate_limit"),
                    reason: "too often".into(),
                }
            } else {
                AuditVerdict::Allowed
            },
            outcome: if refused {
                AuditOutcome::NotExecuted
            } else {
                AuditOutcome::Applied
            },
        }
    }

    #[test]
    fn memory_store_appends_in_order_and_bounds() {
        let s = MemoryAuditStore::new(3);
        for i in 0..5 {
            assert_eq!(s.append(record(i, i % 2 == 1)).unwrap(), i as u64 + 1);
        }
        let all = s.since(0, 100).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(s.since(4, 100).unwrap().len(), 1);
        assert_eq!(s.since(0, 1).unwrap()[0].seq, 3);
    }

    #[test]
    fn record_json_carries_verdict_and_rule() {
        let j = serde_json::to_value(record(1, true)).unwrap();
        assert_eq!(j["verdict"]["status"], "refused");
        assert_eq!(j["verdict"]["rule"], "rate_limit");
        assert_eq!(j["outcome"]["status"], "not_executed");
        assert_eq!(j["command"]["type"], "reboot");
        let back: AuditRecord = serde_json::from_value(j).unwrap();
        assert_eq!(back, record(1, true));
    }
}
