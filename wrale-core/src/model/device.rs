//! Device identity and description.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::board::BoardModel;

/// Error for an id that is not DNS-label-like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} id {id:?}: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
)]
pub struct InvalidId {
    /// `"device"` or `"group"`.
    pub what: &'static str,
    /// The rejected id.
    pub id: String,
}

fn validate_label(what: &'static str, s: &str) -> Result<(), InvalidId> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(InvalidId {
            what,
            id: s.to_owned(),
        })
    }
}

macro_rules! label_id {
    ($(#[$meta:meta])* $name:ident, $what:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                validate_label($what, &s)?;
                Ok(Self(s))
            }
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_id!(
    /// A device id: DNS-label-like (`[a-z0-9-]{1,63}`), stable across renames.
    DeviceId,
    "device"
);
label_id!(
    /// A group id: DNS-label-like (`[a-z0-9-]{1,63}`).
    GroupId,
    "group"
);

/// Where a device physically is. Every level is optional; devices on the same
/// shelf of the same rack of the same site are physical neighbours.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Site (building, room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Rack within the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Shelf within the rack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelf: Option<String>,
    /// Slot within the shelf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

impl Location {
    /// Whether two locations are on the same shelf (site, rack and shelf all known and equal).
    pub fn same_shelf(&self, other: &Location) -> bool {
        self.same_rack(other) && self.shelf.is_some() && self.shelf == other.shelf
    }

    /// Whether two locations are in the same rack (site and rack known and equal).
    pub fn same_rack(&self, other: &Location) -> bool {
        self.rack.is_some() && self.site == other.site && self.rack == other.rack
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [&self.site, &self.rack, &self.shelf, &self.slot]
            .into_iter()
            .map(|p| p.as_deref().unwrap_or("-"))
            .collect();
        f.write_str(&parts.join("/"))
    }
}

/// Identity and description of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Stable id.
    pub id: DeviceId,
    /// Board model.
    pub model: BoardModel,
    /// Hardware serial (from `/proc/cpuinfo` or the device tree), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Firmware version, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// Version of the Wrale agent (metald) running on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Free-form labels (`role=camera`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Physical location.
    #[serde(default)]
    pub location: Location,
    /// Group the device belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dns_labels() {
        assert!(DeviceId::new("pi-rack1-07").is_ok());
        for bad in ["", "-a", "a-", "Upper", "a_b", "a.b", &"x".repeat(64)] {
            let e = DeviceId::new(bad).unwrap_err();
            assert!(e.to_string().contains("invalid device id"), "{e}");
        }
        assert!(serde_json::from_str::<GroupId>("\"Bad Group\"").is_err());
    }

    #[test]
    fn neighbours() {
        let a = Location {
            site: Some("lab".into()),
            rack: Some("r1".into()),
            shelf: Some("s2".into()),
            slot: Some("1".into()),
        };
        let b = Location {
            slot: Some("2".into()),
            ..a.clone()
        };
        let c = Location {
            shelf: Some("s3".into()),
            ..a.clone()
        };
        assert!(a.same_shelf(&b));
        assert!(!a.same_shelf(&c));
        assert!(a.same_rack(&c));
        assert!(!Location::default().same_rack(&Location::default()));
        assert_eq!(a.to_string(), "lab/r1/s2/1");
    }
}
