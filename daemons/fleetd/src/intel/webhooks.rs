//! Webhook delivery: posts each due delivery of the queue as JSON, reports the
//! outcome to wrale-core's [`DeliveryQueue`](wrale_core::fleet::alerting::DeliveryQueue)
//! (retries with exponential backoff, dead letter after `intel.retry.max_attempts`
//! or a permanent 4xx) and persists every change in `intel.db`.
//!
//! The body posted is `{"webhook", "delivery", "attempt", "notification"}` where
//! `notification` is `{kind: raised|escalated|resolved, alert, at}`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use wrale_core::fleet::alerting::{Delivery, DeliveryStatus, Outcome};

use crate::state::{AppState, now};

/// Delivered records are dropped after this long.
const KEEP_DELIVERED: Duration = Duration::from_secs(24 * 3600);

/// Starts the sender: it sleeps until the next delivery is due (at most a
/// minute) or it is woken, then sends what is due.
pub fn start(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            let wait = {
                let t = now();
                let a = state.intel.lock();
                a.queue
                    .deliveries
                    .values()
                    .filter(|d| d.status == DeliveryStatus::Pending)
                    .filter_map(|d| d.next_attempt_at)
                    .min()
                    .map_or(Duration::from_secs(60), |due| {
                        if due <= t {
                            Duration::ZERO
                        } else {
                            due.saturating_since(t).min(Duration::from_secs(60))
                        }
                    })
            };
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = state.intel.wake.notified() => {}
            }
            send_due(&state).await;
        }
    });
}

async fn attempt(client: &reqwest::Client, d: &Delivery, timeout: Duration) -> Outcome {
    let body = json!({
        "webhook": d.webhook,
        "delivery": d.id,
        "attempt": d.attempts.len() + 1,
        "notification": d.notification,
    });
    match client
        .post(&d.url)
        .timeout(timeout)
        .json(&body)
        .send()
        .await
    {
        Ok(r) => Outcome::Status {
            code: r.status().as_u16(),
        },
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(e) => Outcome::NetworkError {
            message: e.to_string(),
        },
    }
}

/// Sends every delivery due now, one after the other.
pub async fn send_due(state: &AppState) {
    let cfg = state.config();
    let due: Vec<Delivery> = {
        let a = state.intel.lock();
        a.queue
            .due(now())
            .iter()
            .filter_map(|id| a.queue.deliveries.get(id).cloned())
            .collect()
    };
    if due.is_empty() {
        return;
    }
    let client = reqwest::Client::new();
    let stats = &state.intel.stats;
    for d in due {
        let outcome = attempt(&client, &d, cfg.intel.webhook_timeout).await;
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
            let changed = a.queue.deliveries.get(&d.id).cloned();
            let before: Vec<u64> = a.queue.deliveries.keys().copied().collect();
            a.queue.prune_delivered(t, KEEP_DELIVERED);
            let pruned: Vec<u64> = before
                .into_iter()
                .filter(|id| !a.queue.deliveries.contains_key(id))
                .collect();
            (changed, pruned)
        };
        let Some(changed) = changed else { continue };
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
}
