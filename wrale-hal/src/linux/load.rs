//! A CPU load generator for diagnostics: one busy thread per core, each spinning
//! for a share of every short period and sleeping for the rest.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wrale_core::units::Percent;

use crate::error::{HalError, Result};
use crate::platform::LoadGenerator;

/// One duty period of a worker.
const PERIOD: Duration = Duration::from_millis(20);

/// Runs busy threads at a chosen duty cycle. [`Percent::ZERO`] stops and joins
/// them; so does dropping the generator.
#[derive(Debug)]
pub struct BusyLoad {
    threads: usize,
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Duty in hundredths of a percent (0..=10 000).
    duty: AtomicU32,
    stop: AtomicBool,
    /// Busy periods completed by all workers (for tests and diagnostics).
    periods: AtomicU64,
}

impl BusyLoad {
    /// A generator with one worker per available core.
    pub fn new() -> Self {
        Self::with_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// A generator with `threads` workers (at least one).
    pub fn with_threads(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            shared: Arc::new(Shared::default()),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// Number of worker threads running now.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// Busy periods completed so far by all workers.
    pub fn periods(&self) -> u64 {
        self.shared.periods.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop_all(&self) {
        let mut workers = self.lock();
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in workers.drain(..) {
            // A worker cannot panic (it only spins and sleeps); nothing to report if it did.
            let _ = w.join();
        }
        self.shared.stop.store(false, Ordering::SeqCst);
    }
}

impl Default for BusyLoad {
    fn default() -> Self {
        Self::new()
    }
}

fn worker(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let duty = f64::from(shared.duty.load(Ordering::Relaxed)) / 10_000.0;
        let busy = PERIOD.mul_f64(duty);
        let start = Instant::now();
        while start.elapsed() < busy {
            std::hint::spin_loop();
        }
        shared.periods.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(PERIOD.saturating_sub(start.elapsed()));
    }
}

impl LoadGenerator for BusyLoad {
    fn set_load(&self, load: Percent) -> Result<()> {
        if load == Percent::ZERO {
            self.stop_all();
            return Ok(());
        }
        let hundredths = (load.get() * 100.0).round() as u32;
        self.shared.duty.store(hundredths, Ordering::Relaxed);
        let mut workers = self.lock();
        while workers.len() < self.threads {
            let shared = Arc::clone(&self.shared);
            let handle = std::thread::Builder::new()
                .name("wrale-load".into())
                .spawn(move || worker(shared))
                .map_err(|e| HalError::io("spawning a load thread", e))?;
            workers.push(handle);
        }
        Ok(())
    }
}

impl Drop for BusyLoad {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_joins() {
        let g = BusyLoad::with_threads(2);
        g.set_load(Percent::saturating(50.0)).unwrap();
        assert_eq!(g.running(), 2);
        // Changing the duty does not add threads.
        g.set_load(Percent::saturating(10.0)).unwrap();
        assert_eq!(g.running(), 2);
        std::thread::sleep(Duration::from_millis(120));
        assert!(g.periods() >= 2, "workers ran {} periods", g.periods());
        g.set_load(Percent::ZERO).unwrap();
        assert_eq!(g.running(), 0);
        let after_stop = g.periods();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(g.periods(), after_stop, "a worker survived ZERO");
        // And it can start again.
        g.set_load(Percent::FULL).unwrap();
        assert_eq!(g.running(), 2);
    }

    #[test]
    fn drop_joins_workers() {
        let g = BusyLoad::with_threads(1);
        g.set_load(Percent::FULL).unwrap();
        let shared = Arc::clone(&g.shared);
        drop(g);
        let n = shared.periods.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(shared.periods.load(Ordering::Relaxed), n);
    }
}
