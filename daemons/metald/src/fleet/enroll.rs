//! Enrollment: a one-time enrollment token exchanged for a device credential
//! (`POST /api/v1/enroll`, docs/fleet-api.md), and the credential file.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrale_core::model::DeviceInfo;

/// How long one enrollment request may take.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of `POST /api/v1/enroll`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrollRequest {
    /// The enrollment token.
    pub token: String,
    /// The device's id.
    pub device_id: String,
    /// Board model.
    pub model: String,
    /// Hardware serial, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Location.
    pub location: wrale_core::model::Location,
}

impl EnrollRequest {
    /// The request for a device.
    pub fn new(token: String, device: &DeviceInfo) -> Self {
        Self {
            token,
            device_id: device.id.to_string(),
            model: device.model.as_str().to_owned(),
            serial: device.serial.clone(),
            labels: device.labels.clone(),
            location: device.location.clone(),
        }
    }
}

/// fleetd's answer to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Enrolled {
    /// The device id fleetd enrolled.
    pub device_id: String,
    /// The device credential (`wrd_...`).
    pub credential: String,
    /// The group the token placed the device in.
    #[serde(default)]
    pub group: Option<String>,
    /// The sync path.
    #[serde(default)]
    pub sync_path: Option<String>,
}

/// Why an enrollment did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnrollError {
    /// No enrollment token is configured (or its file cannot be read).
    #[error("no enrollment token: {0}")]
    NoToken(String),
    /// fleetd refused the token (401 `enrollment_invalid`: unknown, expired or used up).
    #[error("fleetd refused the enrollment token (enrollment_invalid): {0}")]
    Refused(String),
    /// The device id is enrolled already and not revoked (409).
    #[error("fleetd says device id is already enrolled (conflict): {0}")]
    Conflict(String),
    /// fleetd is unreachable or answered something unusable; retried with backoff.
    #[error("enrollment failed: {0}")]
    Unreachable(String),
}

impl EnrollError {
    /// Whether retrying soon could help (else retry at the slow pace).
    pub fn is_transient(&self) -> bool {
        matches!(self, EnrollError::Unreachable(_))
    }
}

/// The `message` of a fleetd error body, or the raw text.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = &v["error"];
            Some(format!(
                "{} ({})",
                e["message"].as_str()?,
                e["code"].as_str().unwrap_or("?")
            ))
        })
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// Calls `POST <url>` with the request; returns the credential.
pub async fn enroll(
    client: &wrale_tls::HttpClient,
    url: reqwest::Url,
    req: &EnrollRequest,
) -> Result<Enrolled, EnrollError> {
    let json = serde_json::to_vec(req)
        .map_err(|e| EnrollError::Unreachable(format!("cannot encode the request: {e}")))?;
    let resp = client
        .request(
            wrale_tls::Method::POST,
            url.as_str(),
            &[("content-type", "application/json")],
            Some(json),
            Some(ENROLL_TIMEOUT),
        )
        .await
        .map_err(|e| EnrollError::Unreachable(format!("{url}: {e}")))?;
    let status = resp.status;
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    match status {
        200 | 201 => {
            let enrolled: Enrolled = serde_json::from_str(&body)
                .map_err(|e| EnrollError::Unreachable(format!("{url}: unusable answer: {e}")))?;
            if enrolled.credential.trim().is_empty() || enrolled.credential.contains('\n') {
                return Err(EnrollError::Unreachable(format!(
                    "{url}: the answer carries no usable credential"
                )));
            }
            if enrolled.device_id != req.device_id {
                return Err(EnrollError::Unreachable(format!(
                    "{url}: enrolled {:?}, but this device is {:?}",
                    enrolled.device_id, req.device_id
                )));
            }
            Ok(enrolled)
        }
        401 => Err(EnrollError::Refused(error_message(&body))),
        409 => Err(EnrollError::Conflict(error_message(&body))),
        _ => Err(EnrollError::Unreachable(format!(
            "{url}: HTTP {status}: {}",
            error_message(&body)
        ))),
    }
}

pub use wrale_sync::credential::{read_credential, write_credential};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_summarised() {
        let m = error_message(r#"{"error":{"code":"enrollment_invalid","message":"expired"}}"#);
        assert_eq!(m, "expired (enrollment_invalid)");
        assert_eq!(error_message("plain"), "plain");
    }
}
