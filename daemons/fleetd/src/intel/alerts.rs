//! Fleet alerts: the rules over each analysis, the alert book (de-duplication,
//! acknowledgement, silences), the mirror into fleetd's alert list, and the
//! webhook deliveries the notifications become.
//!
//! - Every open fleet alert of a rule other than a `device_alert` one has a
//!   record in `/api/v1/alerts` with key `fleet:<book key>` and `raised_by`
//!   [`super::ACTOR`]; it is cleared there when the alert resolves, and raised
//!   anew (the old record cleared) when it escalates.
//! - Device alerts (from twins, or raised by users about a device) are already in
//!   that list: they enter the book through the `device_alert` rules (so they
//!   count for rack storms and reach the webhooks) and are not mirrored again.
//! - Acknowledging or clearing a record in the list acknowledges or clears the
//!   book alert behind it ([`on_transition`]).
//! - Every record raised or cleared here is audited with fleetd's system actor
//!   ([`AUDIT_ACTOR`]): `alert.raise` / `alert.clear` on `alert:<id>`, with the
//!   reason (`rule fired`, `resolved`, `severity changed`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use wrale_core::fleet::alerting::{
    self, AlertInput, AlertStatus, Condition, Delivery, DeviceStatus, Notification, Subject,
};
use wrale_core::fleet::analyzer::FleetAnalysis;
use wrale_core::fleet::registry::{DeviceRecord, DeviceStatus as Conn};
use wrale_core::model::{Alert, AlertCode};
use wrale_core::{DeviceId, Timestamp};

use super::ACTOR;
use crate::state::{AppState, EventKind, now};
use crate::store::{AlertRecord, NewAlert};

/// Prefix of the keys of mirrored fleet alerts in the alert list.
pub const KEY_PREFIX: &str = "fleet:";

fn alert_code(code: &str) -> AlertCode {
    serde_json::from_value(serde_json::Value::String(code.to_owned()))
        .unwrap_or_else(|_| AlertCode::Custom(code.to_owned()))
}

/// The book keys a device alert record enters the book under (one per
/// `device_alert` rule).
fn device_alert_keys(rules: &[alerting::Rule], rec: &AlertRecord) -> Vec<String> {
    let Some(device) = &rec.device else {
        return Vec::new();
    };
    let code = alert_code(&rec.code);
    rules
        .iter()
        .filter(|r| matches!(r.condition, Condition::DeviceAlert { .. }))
        .map(|r| {
            alerting::Firing::new(
                &format!("{}:{code}", r.id),
                rec.severity,
                Subject::Device {
                    device: device.clone(),
                },
                "",
            )
            .key
        })
        .collect()
}

/// The book keys behind a record of the alert list.
pub fn book_keys(rules: &[alerting::Rule], rec: &AlertRecord) -> Vec<String> {
    match rec.key.strip_prefix(KEY_PREFIX) {
        Some(k) if rec.raised_by == ACTOR => vec![k.to_owned()],
        _ => device_alert_keys(rules, rec),
    }
}

fn is_device_alert_rule(rules: &[alerting::Rule], rule: &str) -> bool {
    rules.iter().any(|r| {
        matches!(r.condition, Condition::DeviceAlert { .. })
            && rule
                .strip_prefix(r.id.as_str())
                .is_some_and(|rest| rest.starts_with(':'))
    })
}

/// What fleetd knows of each device besides its analysis.
fn statuses(
    devices: &[DeviceRecord],
    fa: &FleetAnalysis,
    active: &[AlertRecord],
    now: Timestamp,
) -> Vec<DeviceStatus> {
    let mut alerts: BTreeMap<&DeviceId, Vec<Alert>> = BTreeMap::new();
    for a in active.iter().filter(|a| a.raised_by != ACTOR) {
        if let Some(d) = &a.device {
            alerts.entry(d).or_default().push(Alert {
                code: alert_code(&a.code),
                severity: a.severity,
                message: a.message.clone(),
                since: a.raised_at,
                cleared_at: None,
            });
        }
    }
    devices
        .iter()
        .filter(|d| !d.revoked)
        .map(|d| {
            // Last heard of: connected now, the newest telemetry point, the last
            // connection; a device never heard of counts from its enrollment.
            let seen = [
                (d.status == Conn::Online).then_some(now),
                fa.device(&d.id).and_then(|a| a.last_seen),
                d.last_seen,
                Some(d.enrolled_at),
            ]
            .into_iter()
            .flatten()
            .max();
            DeviceStatus {
                device: d.id.clone(),
                location: d.location.clone(),
                last_seen: seen,
                alerts: alerts.remove(&d.id).unwrap_or_default(),
            }
        })
        .collect()
}

fn subject_device(s: &Subject) -> Option<DeviceId> {
    match s {
        Subject::Device { device } => Some(device.clone()),
        _ => None,
    }
}

/// Evaluates the rules on a new analysis, steps the book, mirrors it into the
/// alert list, queues the notifications and persists the book and deliveries.
pub async fn evaluate(
    state: &AppState,
    fa: &FleetAnalysis,
    devices: &[DeviceRecord],
    active: &[AlertRecord],
    t: Timestamp,
) -> anyhow::Result<()> {
    let cfg = state.config();
    let rules = &cfg.intel.rules;
    let firings = alerting::evaluate(rules, fa, &statuses(devices, fa, active, t), t);
    let (notes, open) = {
        let mut a = state.intel.lock();
        a.queue.policy = cfg.intel.retry.clone();
        let notes = a.book.step(&AlertInput::Evaluation { firings }, t);
        let open: BTreeMap<String, alerting::FleetAlert> = a
            .book
            .open()
            .filter(|al| !is_device_alert_rule(rules, &al.rule))
            .map(|al| (al.key.clone(), al.clone()))
            .collect();
        (notes, open)
    };
    mirror(state, &open, active).await;
    queue(state, &notes, t).await;
    Ok(())
}

/// The audit log's actor for what the analyzer does on its own: fleetd's
/// `system` actor. The alert records themselves name [`ACTOR`] as raiser and
/// clearer, which the audit entries carry as `by`.
pub const AUDIT_ACTOR: &str = "system";

/// Brings the alert list in line with the book's open alerts. Every record
/// raised or cleared here is audited (actor [`AUDIT_ACTOR`]), as an operator's
/// raise, ack or clear is.
async fn mirror(
    state: &AppState,
    open: &BTreeMap<String, alerting::FleetAlert>,
    active: &[AlertRecord],
) {
    let mine: BTreeMap<&str, &AlertRecord> = active
        .iter()
        .filter(|a| a.raised_by == ACTOR)
        .filter_map(|a| a.key.strip_prefix(KEY_PREFIX).map(|k| (k, a)))
        .collect();
    // (record, why) and (new record, why).
    let mut clear: Vec<(i64, &'static str)> = Vec::new();
    let mut raise: Vec<(NewAlert, &'static str)> = Vec::new();
    for (key, rec) in &mine {
        match open.get(*key) {
            None => clear.push((rec.id, "resolved")),
            Some(al) if al.severity != rec.severity => {
                clear.push((rec.id, "severity changed"));
                raise.push((new_alert(al), "severity changed"));
            }
            Some(_) => {}
        }
    }
    for (key, al) in open {
        if !mine.contains_key(key.as_str()) {
            raise.push((new_alert(al), "rule fired"));
        }
    }
    for (id, why) in clear {
        let t = now();
        match state.store(move |s| s.clear_alert(id, ACTOR, t)).await {
            Ok(rec) => {
                state
                    .audit(
                        AUDIT_ACTOR,
                        "alert.clear",
                        &format!("alert:{}", rec.id),
                        "allowed",
                        json!({"state": rec.state, "code": rec.code, "key": rec.key,
                               "by": ACTOR, "reason": why}),
                        rec.device.clone(),
                    )
                    .await;
                state
                    .publish(
                        EventKind::Alert,
                        rec.device.clone(),
                        json!({"event": "cleared", "alert": rec}),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(id, "cannot clear fleet alert: {}", e.message());
                state
                    .audit(
                        AUDIT_ACTOR,
                        "alert.clear",
                        &format!("alert:{id}"),
                        "failed",
                        json!({"by": ACTOR, "reason": why, "error": e.message()}),
                        None,
                    )
                    .await;
            }
        }
    }
    for (na, why) in raise {
        let t = now();
        let (key, device) = (na.key.clone(), na.device.clone());
        match state.store(move |s| s.raise_alert(&na, ACTOR, t)).await {
            Ok((rec, true)) => {
                state
                    .audit(
                        AUDIT_ACTOR,
                        "alert.raise",
                        &format!("alert:{}", rec.id),
                        "allowed",
                        json!({"code": rec.code, "severity": rec.severity, "key": rec.key,
                               "by": ACTOR, "reason": why}),
                        rec.device.clone(),
                    )
                    .await;
                state
                    .publish(
                        EventKind::Alert,
                        rec.device.clone(),
                        json!({"event": "raised", "alert": rec}),
                    )
                    .await;
            }
            Ok((_, false)) => {}
            Err(e) => {
                tracing::warn!("cannot raise fleet alert: {}", e.message());
                state
                    .audit(
                        AUDIT_ACTOR,
                        "alert.raise",
                        &format!("alert:{key}"),
                        "failed",
                        json!({"by": ACTOR, "reason": why, "error": e.message()}),
                        device,
                    )
                    .await;
            }
        }
    }
}

fn new_alert(al: &alerting::FleetAlert) -> NewAlert {
    NewAlert {
        device: subject_device(&al.subject),
        code: al.rule.clone(),
        severity: al.severity,
        message: al.message.clone(),
        key: format!("{KEY_PREFIX}{}", al.key),
    }
}

/// Queues notifications for the webhooks and persists the book and the new
/// deliveries; wakes the sender.
pub async fn queue(state: &AppState, notes: &[Notification], t: Timestamp) {
    let hooks = state.config().intel.webhooks();
    let (book, new): (_, Vec<Delivery>) = {
        let mut a = state.intel.lock();
        let mut ids = Vec::new();
        for n in notes {
            ids.extend(a.queue.enqueue(n, &hooks, t));
        }
        let new = ids
            .iter()
            .filter_map(|id| a.queue.deliveries.get(id).cloned())
            .collect();
        (a.book.clone(), new)
    };
    if let Some(db) = state.intel.db() {
        let r = tokio::task::spawn_blocking(move || {
            db.save_book(&book, t)?;
            db.save_deliveries(&new, t)
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot persist fleet alerts: {e:#}"),
            Err(e) => tracing::error!("fleet alert persistence task: {e}"),
        }
    }
    if !notes.is_empty() {
        state.intel.wake.notify_one();
    }
}

/// Steps the book after an operator acknowledged (`ack`) or cleared a record
/// of the alert list, so fleet alerts and device alerts stay in step.
pub async fn on_transition(state: &AppState, rec: &AlertRecord, ack: bool, by: &str) {
    let rules = state.config().intel.rules.clone();
    let keys = book_keys(&rules, rec);
    if keys.is_empty() {
        return;
    }
    let t = now();
    let notes = {
        let mut a = state.intel.lock();
        let mut notes = Vec::new();
        for key in keys {
            let input = if ack {
                AlertInput::Ack {
                    key,
                    by: by.to_owned(),
                }
            } else {
                AlertInput::Clear {
                    key,
                    by: by.to_owned(),
                }
            };
            notes.extend(a.book.step(&input, t));
        }
        notes
    };
    queue(state, &notes, t).await;
}

/// The open fleet alerts of the book (firing or acknowledged), silenced ones
/// marked, newest first.
pub fn open_alerts(state: &AppState) -> Vec<serde_json::Value> {
    let t = now();
    let a = state.intel.lock();
    let mut v: Vec<&alerting::FleetAlert> = a
        .book
        .alerts
        .values()
        .filter(|al| al.status != AlertStatus::Resolved)
        .collect();
    v.sort_by(|x, y| y.first_seen.cmp(&x.first_seen).then(x.key.cmp(&y.key)));
    let silenced_by = |al: &alerting::FleetAlert| -> BTreeSet<String> {
        a.book
            .silences
            .iter()
            .filter(|s| s.covers(al, t))
            .map(|s| s.id.clone())
            .collect()
    };
    v.into_iter()
        .map(|al| {
            let mut j = serde_json::to_value(al).unwrap_or_default();
            j["silenced_by"] = json!(silenced_by(al));
            j
        })
        .collect()
}
