//! How many webhook workers run at once (`intel.webhook_concurrency`), as a
//! limit a reload can change while workers run or wait.
//!
//! A higher limit lets waiting workers start at once; a lower one takes effect
//! as running workers finish (their permits are not handed on until the number
//! running is under the new limit). Nothing running is interrupted.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limit and what is owed to it.
#[derive(Debug)]
struct Counts {
    /// The limit in force.
    limit: usize,
    /// Permits still to take out of circulation after a lower limit (they were
    /// held by running workers when the limit dropped).
    owed: usize,
}

/// At most `limit` holders of a [`WorkerPermit`] at once; see the module docs.
#[derive(Debug)]
pub struct WorkerLimit {
    sem: Arc<Semaphore>,
    counts: Mutex<Counts>,
}

impl WorkerLimit {
    /// A limit of `limit` (at least 1).
    pub fn new(limit: usize) -> Arc<Self> {
        let limit = limit.max(1);
        Arc::new(Self {
            sem: Arc::new(Semaphore::new(limit)),
            counts: Mutex::new(Counts { limit, owed: 0 }),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.counts().limit
    }

    /// Changes the limit (at least 1); returns whether it changed.
    pub fn set(&self, limit: usize) -> bool {
        let limit = limit.max(1);
        let mut c = self.counts();
        if limit > c.limit {
            let more = limit - c.limit;
            // Cancel what a lower limit still owed first.
            let cancel = more.min(c.owed);
            c.owed -= cancel;
            self.sem.add_permits(more - cancel);
        } else if limit < c.limit {
            let fewer = c.limit - limit;
            let taken = self.sem.forget_permits(fewer);
            c.owed += fewer - taken;
        } else {
            return false;
        }
        c.limit = limit;
        true
    }

    /// Waits for a turn; `None` only if the semaphore was closed (never here).
    pub async fn acquire(self: &Arc<Self>) -> Option<WorkerPermit> {
        let permit = self.sem.clone().acquire_owned().await.ok()?;
        Some(WorkerPermit {
            permit: Some(permit),
            limit: self.clone(),
        })
    }
}

/// A running worker's turn; dropping it hands the turn on (or retires it when a
/// lower limit is still owed).
#[derive(Debug)]
pub struct WorkerPermit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<WorkerLimit>,
}

impl Drop for WorkerPermit {
    fn drop(&mut self) {
        let mut c = self.limit.counts();
        if let Some(p) = self.permit.take() {
            if c.owed > 0 {
                c.owed -= 1;
                p.forget();
            } else {
                drop(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn try_acquire(l: &Arc<WorkerLimit>) -> Option<WorkerPermit> {
        tokio::time::timeout(Duration::from_millis(50), l.acquire())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_higher_limit_lets_waiting_workers_start() {
        let l = WorkerLimit::new(1);
        let a = try_acquire(&l).await.unwrap();
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.map(|_p| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        assert!(l.set(2));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the waiting worker starts")
            .unwrap()
            .unwrap();
        drop(a);
        assert!(!l.set(2));
    }

    #[tokio::test]
    async fn a_lower_limit_applies_as_running_workers_finish() {
        let l = WorkerLimit::new(3);
        let a = try_acquire(&l).await.unwrap();
        let b = try_acquire(&l).await.unwrap();
        // Two running, one free: the free one goes now, one more when one ends.
        l.set(1);
        assert_eq!(l.limit(), 1);
        assert!(try_acquire(&l).await.is_none(), "two still run");
        drop(a);
        assert!(try_acquire(&l).await.is_none(), "one still runs: the limit");
        drop(b);
        let c = try_acquire(&l).await.expect("none running");
        assert!(try_acquire(&l).await.is_none(), "one at a time");
        drop(c);
        // Back up again: a limit owed and then raised is not lost.
        let a = try_acquire(&l).await.unwrap();
        l.set(0); // taken as 1
        l.set(3);
        let b = try_acquire(&l).await.unwrap();
        let c = try_acquire(&l).await.unwrap();
        assert!(try_acquire(&l).await.is_none());
        drop((a, b, c));
        let all: Vec<_> = [
            try_acquire(&l).await,
            try_acquire(&l).await,
            try_acquire(&l).await,
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(all.len(), 3);
        assert!(try_acquire(&l).await.is_none());
    }

    #[tokio::test]
    async fn lowering_while_one_runs_then_raising_cancels_the_debt() {
        let l = WorkerLimit::new(2);
        let a = try_acquire(&l).await.unwrap();
        let b = try_acquire(&l).await.unwrap();
        l.set(1); // one owed
        l.set(2); // the debt is cancelled, nothing added
        assert!(try_acquire(&l).await.is_none());
        drop(a);
        let c = try_acquire(&l).await.expect("a's turn is handed on");
        assert!(try_acquire(&l).await.is_none());
        drop((b, c));
    }
}
