//! Telemetry queries, alerts and the audit log.

use reqwest::Method;

use super::devices::MAX_PAGES;
use crate::client::Client;
use crate::error::Result;
use crate::models::{
    AlertFilter, AuditEntry, AuditFilter, DeviceTelemetry, FleetAlert, GroupTelemetry, IdPage,
    NewAlert, TelemetryQuery,
};

impl Client {
    /// `GET /devices/{id}/telemetry`: one metric of one device over a range.
    pub async fn device_telemetry(
        &self,
        id: &str,
        query: &TelemetryQuery,
    ) -> Result<DeviceTelemetry> {
        self.get(&["devices", id, "telemetry"], &query.to_query(false))
            .await
    }

    /// `GET /groups/{id}/telemetry`: one metric aggregated across a group.
    pub async fn group_telemetry(
        &self,
        id: &str,
        query: &TelemetryQuery,
    ) -> Result<GroupTelemetry> {
        self.get(&["groups", id, "telemetry"], &query.to_query(true))
            .await
    }

    /// `GET /alerts`: one page of alerts, newest first.
    pub async fn list_alerts(&self, filter: &AlertFilter) -> Result<IdPage<FleetAlert>> {
        self.get(&["alerts"], &filter.to_query()).await
    }

    /// Every alert matching `filter`, following `next_before` page by page.
    pub async fn list_all_alerts(&self, filter: &AlertFilter) -> Result<Vec<FleetAlert>> {
        let mut filter = filter.clone();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.list_alerts(&filter).await?;
            out.extend(page.items);
            match page.next_before {
                Some(b) if filter.before != Some(b) => filter.before = Some(b),
                _ => break,
            }
        }
        Ok(out)
    }

    /// `POST /alerts`: raises an alert (operator). Raising one whose key is
    /// active returns the active alert.
    pub async fn raise_alert(&self, alert: &NewAlert) -> Result<FleetAlert> {
        self.call(Method::POST, &["alerts"], &[], Some(alert)).await
    }

    /// `POST /alerts/{id}/ack` (operator).
    pub async fn ack_alert(&self, id: i64) -> Result<FleetAlert> {
        let id = id.to_string();
        self.call::<(), _>(Method::POST, &["alerts", &id, "ack"], &[], None)
            .await
    }

    /// `POST /alerts/{id}/clear` (operator).
    pub async fn clear_alert(&self, id: i64) -> Result<FleetAlert> {
        let id = id.to_string();
        self.call::<(), _>(Method::POST, &["alerts", &id, "clear"], &[], None)
            .await
    }

    /// `GET /audit`: one page of audit entries, newest first.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<IdPage<AuditEntry>> {
        self.get(&["audit"], &filter.to_query()).await
    }

    /// Every audit entry matching `filter`, following `next_before`.
    pub async fn audit_all(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut filter = filter.clone();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.audit(&filter).await?;
            out.extend(page.items);
            match page.next_before {
                Some(b) if filter.before != Some(b) => filter.before = Some(b),
                _ => break,
            }
        }
        Ok(out)
    }
}
