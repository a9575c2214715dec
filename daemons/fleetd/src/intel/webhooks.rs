//! Webhook delivery: posts each due delivery of the queue as JSON, reports the
//! outcome to wrale-core's [`DeliveryQueue`](wrale_core::fleet::alerting::DeliveryQueue)
//! (retries with exponential backoff, dead letter after `intel.retry.max_attempts`
//! or a permanent 4xx) and persists every change in `intel.db`.
//!
//! - **Receivers in parallel, each in order.** Every webhook (receiver) has at
//!   most one worker at a time, which sends that receiver's deliveries oldest
//!   first, one after the other: a delivery waits until the ones before it to the
//!   same receiver were delivered or given up, so a receiver sees its
//!   notifications in the order they were raised. Up to
//!   `intel.webhook_concurrency` receivers are served at once, so a slow or
//!   unreachable receiver holds up only its own queue.
//! - **Jitter.** The queue's backoff after a failed attempt is spread over its
//!   upper half ("equal jitter": between half and all of it), so the retries of
//!   many deliveries that failed together do not hit a receiver at the same moment.
//!
//! The body posted is `{"webhook", "delivery", "attempt", "notification"}` where
//! `notification` is `{kind: raised|escalated|resolved, alert, at}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use wrale_core::Timestamp;
use wrale_core::fleet::alerting::{Delivery, DeliveryQueue, DeliveryStatus, Outcome, equal_jitter};

use crate::state::{AppState, now};

/// Delivered records are dropped after this long.
const KEEP_DELIVERED: Duration = Duration::from_secs(24 * 3600);

/// Longest the sender sleeps without looking at the queue.
const IDLE: Duration = Duration::from_secs(60);

/// Webhooks with a worker running.
type Busy = Arc<Mutex<BTreeSet<String>>>;

fn busy_set(b: &Busy) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    b.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A uniform draw in `[0, 1)` from the OS's random source (0.5 if it fails).
fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// Per webhook, its oldest pending delivery (the head of its queue).
fn heads(q: &DeliveryQueue) -> BTreeMap<&str, &Delivery> {
    let mut out: BTreeMap<&str, &Delivery> = BTreeMap::new();
    // Deliveries are keyed by id, which grows with enqueue order.
    for d in q
        .deliveries
        .values()
        .filter(|d| d.status == DeliveryStatus::Pending)
    {
        out.entry(d.webhook.as_str()).or_insert(d);
    }
    out
}

/// What the sender does now: the webhooks whose head delivery is due and that
/// have no worker, and how long to sleep until the next head is due otherwise.
fn plan(q: &DeliveryQueue, busy: &BTreeSet<String>, t: Timestamp) -> (Vec<String>, Duration) {
    let mut ready = Vec::new();
    let mut wait = IDLE;
    for (hook, d) in heads(q) {
        if busy.contains(hook) {
            continue;
        }
        match d.next_attempt_at {
            Some(due) if due <= t => ready.push(hook.to_owned()),
            Some(due) => wait = wait.min(due.saturating_since(t)),
            None => {}
        }
    }
    (ready, wait)
}

/// The head delivery of `hook` if it is due now.
fn head_due(state: &AppState, hook: &str, t: Timestamp) -> Option<Delivery> {
    let a = state.intel.lock();
    heads(&a.queue)
        .get(hook)
        .filter(|d| d.next_attempt_at.is_some_and(|due| due <= t))
        .map(|d| (*d).clone())
}

/// Starts the sender: it sleeps until the next delivery is due (at most a
/// minute) or it is woken, then starts a worker for every receiver with a
/// delivery due (at most `intel.webhook_concurrency` run at once; a reload
/// changes the limit at once, see [`super::limit`]).
pub fn start(state: &AppState) {
    let state = state.clone();
    let permits = super::limit::WorkerLimit::new(state.config().intel.webhook_concurrency);
    let busy: Busy = Arc::default();
    let mut ca_file = state.config().intel.webhook_ca_file.clone();
    let mut client = http_client(ca_file.as_deref());
    tokio::spawn(async move {
        loop {
            // A reload may name another CA file: later sends trust it.
            let configured = state.config().intel.webhook_ca_file.clone();
            if configured != ca_file {
                client = http_client(configured.as_deref());
                ca_file = configured;
            }
            // A reload may change `intel.webhook_concurrency`: applied at once.
            let limit = state.config().intel.webhook_concurrency;
            if permits.set(limit) {
                tracing::info!(limit, "intel.webhook_concurrency: new limit applied");
            }
            let (ready, wait) = {
                let a = state.intel.lock();
                plan(&a.queue, &busy_set(&busy), now())
            };
            for hook in ready {
                busy_set(&busy).insert(hook.clone());
                let (state, permits, busy, client) =
                    (state.clone(), permits.clone(), busy.clone(), client.clone());
                tokio::spawn(async move {
                    // Closed only when the runtime goes away.
                    if let Some(_permit) = permits.acquire().await {
                        tokio::select! {
                            () = state.shutdown.cancelled() => {}
                            () = serve(&state, &client, &hook) => {}
                        }
                    }
                    busy_set(&busy).remove(&hook);
                    state.intel.wake.notify_one();
                });
            }
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = state.intel.wake.notified() => {}
            }
        }
    });
}

/// The webhook HTTP client: `https://` receivers are trusted by the system
/// store plus `intel.webhook_ca_file`. If those cannot be loaded the error is
/// logged and only `http://` receivers can be reached.
fn http_client(ca_file: Option<&std::path::Path>) -> wrale_tls::HttpClient {
    let roots = match ca_file {
        Some(path) => wrale_tls::Roots::SystemAnd(path.to_owned()),
        None => wrale_tls::Roots::System,
    };
    let tls = wrale_tls::client_config(&roots).unwrap_or_else(|e| {
        tracing::error!("webhooks: {e}; https:// receivers will fail (intel.webhook_ca_file)");
        wrale_tls::client_config(&wrale_tls::Roots::Empty)
            .expect("a config with no roots always builds")
    });
    // The per-request limit is intel.webhook_timeout; connecting gets as long.
    wrale_tls::HttpClient::new(tls, Duration::from_secs(30), Duration::from_secs(30))
        .user_agent(concat!("fleetd/", env!("CARGO_PKG_VERSION")))
}

/// One receiver's worker: sends its due head deliveries one after the other
/// until its head is not due (delivered all, or waiting for a retry).
async fn serve(state: &AppState, client: &wrale_tls::HttpClient, hook: &str) {
    while let Some(d) = head_due(state, hook, now()) {
        send_one(state, client, d).await;
    }
}

async fn attempt(client: &wrale_tls::HttpClient, d: &Delivery, timeout: Duration) -> Outcome {
    let body = json!({
        "webhook": d.webhook,
        "delivery": d.id,
        "attempt": d.attempts.len() + 1,
        "notification": d.notification,
    });
    match client
        .request(
            wrale_tls::Method::POST,
            &d.url,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
            Some(timeout),
        )
        .await
    {
        Ok(r) => Outcome::Status { code: r.status },
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(e) => Outcome::NetworkError {
            message: e.to_string(),
        },
    }
}

/// Sends one delivery, records the outcome (with a jittered retry time) and
/// persists the change.
async fn send_one(state: &AppState, client: &wrale_tls::HttpClient, d: Delivery) {
    let cfg = state.config();
    let stats = &state.intel.stats;
    let outcome = attempt(client, &d, cfg.intel.webhook_timeout).await;
    let ok = matches!(outcome, Outcome::Status { code } if (200..300).contains(&code));
    if ok {
        stats.deliveries_ok.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.deliveries_failed.fetch_add(1, Ordering::Relaxed);
    }
    let t = now();
    let (changed, pruned) = {
        let mut a = state.intel.lock();
        a.queue.record(d.id, outcome.clone(), t);
        if let Some(x) = a.queue.deliveries.get_mut(&d.id) {
            if let (DeliveryStatus::Pending, Some(next)) = (x.status, x.next_attempt_at) {
                x.next_attempt_at = Some(t + equal_jitter(next.saturating_since(t), unit_random()));
            }
        }
        let changed = a.queue.deliveries.get(&d.id).cloned();
        let before: Vec<u64> = a.queue.deliveries.keys().copied().collect();
        a.queue.prune_delivered(t, KEEP_DELIVERED);
        let pruned: Vec<u64> = before
            .into_iter()
            .filter(|id| !a.queue.deliveries.contains_key(id))
            .collect();
        (changed, pruned)
    };
    let Some(changed) = changed else { return };
    match changed.status {
        DeliveryStatus::DeadLetter => {
            stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                delivery = changed.id,
                webhook = %changed.webhook,
                attempts = changed.attempts.len(),
                "webhook delivery given up (dead letter): {outcome:?}"
            );
        }
        DeliveryStatus::Pending => tracing::info!(
            delivery = changed.id,
            webhook = %changed.webhook,
            "webhook delivery failed, will retry: {outcome:?}"
        ),
        DeliveryStatus::Delivered => {}
    }
    if let Some(db) = state.intel.db() {
        let r = tokio::task::spawn_blocking(move || {
            db.save_deliveries(&[changed], t)?;
            db.delete_deliveries(&pruned)
        })
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("cannot persist a webhook delivery: {e:#}"),
            Err(e) => tracing::error!("webhook persistence task: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_core::fleet::alerting::{RetryPolicy, Webhook};

    #[test]
    fn jitter_stays_in_the_upper_half() {
        // The bounds are wrale-core's test; here, that the draws are random.
        let base = Duration::from_secs(10);
        let draws: Vec<Duration> = (0..64).map(|_| equal_jitter(base, unit_random())).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(5) && *d <= base)
        );
        // 64 draws from 2^53 values: equal ones would mean no randomness at all.
        let distinct: BTreeSet<Duration> = draws.iter().copied().collect();
        assert!(distinct.len() > 32, "{draws:?}");
    }

    fn notification(key: &str) -> wrale_core::fleet::alerting::Notification {
        serde_json::from_value(json!({
            "kind": "raised",
            "at": "2026-01-01T00:00:00Z",
            "alert": {
                "key": key, "rule": "r", "severity": "critical", "subject": {"kind": "device", "device": "pi-1"},
                "message": "m", "status": "firing",
                "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-01T00:00:00Z",
            },
        }))
        .unwrap()
    }

    #[test]
    fn each_receiver_waits_behind_its_own_head_only() {
        let t0 = Timestamp::from_secs(1_800_000_000);
        let hooks: Vec<Webhook> = ["a", "b"]
            .iter()
            .map(|id| Webhook {
                id: (*id).into(),
                url: format!("http://{id}"),
                min_severity: wrale_core::model::Severity::Info,
            })
            .collect();
        let mut q = DeliveryQueue::new(RetryPolicy::default());
        let first = q.enqueue(&notification("k1"), &hooks, t0);
        q.enqueue(&notification("k2"), &hooks, t0);
        let (ready, _) = plan(&q, &BTreeSet::new(), t0);
        assert_eq!(ready, ["a", "b"]);
        // a's head fails: a waits for its retry (its second delivery is not
        // sent before it), b goes on; the sleep ends when a's retry is due.
        q.record(first[0], Outcome::Status { code: 500 }, t0);
        let (ready, wait) = plan(&q, &BTreeSet::new(), t0);
        assert_eq!(ready, ["b"]);
        assert_eq!(wait, RetryPolicy::default().backoff(1));
        // A receiver with a worker is left to it.
        let (ready, _) = plan(&q, &["b".to_owned()].into(), t0);
        assert!(ready.is_empty());
        let heads = heads(&q);
        assert_eq!(heads["a"].id, first[0]);
        assert_eq!(heads["b"].id, first[1]);
    }
}
