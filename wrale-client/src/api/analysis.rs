//! Fleet intelligence: the analyzer's latest pass (per device, per scope, hot
//! spots), the open fleet alerts, silences and webhook dead letters. The bodies
//! are re-exported from [`crate::models`].

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::Result;
use wrale_core::Timestamp;
use wrale_core::fleet::alerting::{Delivery, FleetAlert as BookAlert, Silence};
use wrale_core::fleet::analyzer::{Anomaly, DeviceAnalysis, GroupHealth, HotSpot};
use wrale_core::fleet::registry::Health;
use wrale_core::model::{DeviceId, GroupId, Location};

/// The answer to `GET /analysis/devices/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAnalysisReport {
    /// The device.
    pub device: DeviceId,
    /// When the analysis ran.
    pub at: Timestamp,
    /// The device's health in the registry.
    pub health: Health,
    /// Everything the analyzer says about it.
    pub analysis: DeviceAnalysis,
    /// Its anomalies against its peers, with the evidence.
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
    /// The hot spots it is in.
    #[serde(default)]
    pub hot_spots: Vec<HotSpot>,
}

/// One device in `GET /analysis/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceScore {
    /// The device.
    pub device: DeviceId,
    /// Health score 0-100.
    pub score: f64,
    /// The level it maps to.
    pub health: Health,
    /// Codes of the factors that lowered the score, largest first.
    #[serde(default)]
    pub factors: Vec<String>,
    /// Where it is.
    #[serde(default)]
    pub location: Location,
    /// Its group.
    #[serde(default)]
    pub group: Option<GroupId>,
}

/// The answer to `GET /analysis/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetAnalysisReport {
    /// When the analysis ran.
    pub at: Timestamp,
    /// Whether the analyzer has run at all since fleetd started.
    pub analysed: bool,
    /// Per device.
    pub devices: Vec<DeviceScore>,
    /// Per fleet, site, rack and group.
    pub groups: Vec<GroupHealth>,
    /// Devices unlike their peers.
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
    /// Hot spots, hottest first.
    #[serde(default)]
    pub hot_spots: Vec<HotSpot>,
}

/// The answer to `GET /analysis/hotspots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotSpots {
    /// When the analysis ran.
    pub at: Timestamp,
    /// Hottest first.
    pub items: Vec<HotSpot>,
}

/// An open fleet alert of the alert book (`GET /fleet-alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenFleetAlert {
    /// The alert.
    #[serde(flatten)]
    pub alert: BookAlert,
    /// Ids of the silences holding its notifications back.
    #[serde(default)]
    pub silenced_by: Vec<String>,
}

/// The body of `POST /silences`: at least one matcher, and `duration` or `until`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewSilence {
    /// Only alerts of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Only alerts about this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Only alerts whose key starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// How long (`"2h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// End, instead of `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

impl Client {
    /// `GET /analysis/devices/{id}`: the latest analysis of one device.
    pub async fn device_analysis(&self, id: &str) -> Result<DeviceAnalysisReport> {
        self.get(&["analysis", "devices", id], &[]).await
    }

    /// `GET /analysis/fleet`: health per device and per scope.
    pub async fn fleet_analysis(&self) -> Result<FleetAnalysisReport> {
        self.get(&["analysis", "fleet"], &[]).await
    }

    /// `GET /analysis/hotspots`.
    pub async fn hot_spots(&self) -> Result<HotSpots> {
        self.get(&["analysis", "hotspots"], &[]).await
    }

    /// `GET /fleet-alerts`: the open fleet alerts.
    pub async fn fleet_alerts(&self) -> Result<Vec<OpenFleetAlert>> {
        let r: Items<OpenFleetAlert> = self.get(&["fleet-alerts"], &[]).await?;
        Ok(r.items)
    }

    /// `GET /silences`.
    pub async fn list_silences(&self) -> Result<Vec<Silence>> {
        let r: Items<Silence> = self.get(&["silences"], &[]).await?;
        Ok(r.items)
    }

    /// `POST /silences` (operator).
    pub async fn create_silence(&self, silence: &NewSilence) -> Result<Silence> {
        self.call(Method::POST, &["silences"], &[], Some(silence))
            .await
    }

    /// `DELETE /silences/{id}` (operator).
    pub async fn delete_silence(&self, id: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &["silences", id], None)
            .await
    }

    /// `GET /dead-letters`: webhook deliveries given up.
    pub async fn dead_letters(&self) -> Result<Vec<Delivery>> {
        let r: Items<Delivery> = self.get(&["dead-letters"], &[]).await?;
        Ok(r.items)
    }

    /// `DELETE /dead-letters/{id}` (operator).
    pub async fn delete_dead_letter(&self, id: u64) -> Result<()> {
        let id = id.to_string();
        self.call_empty::<()>(Method::DELETE, &["dead-letters", &id], None)
            .await
    }
}
