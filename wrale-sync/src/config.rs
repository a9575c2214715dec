//! The typed desired configuration, its validation seam, and config layering.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use wrale_core::BoardProfile;
use wrale_core::model::{Command, FanProfileName, Level};
use wrale_core::units::{Celsius, Percent};

use crate::error::{Error, Result};
use crate::schema::FieldValue;

/// One point of a fan curve: at `temp` the fan runs at least at `duty`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Temperature.
    pub temp: Celsius,
    /// Duty at that temperature.
    pub duty: Percent,
}

/// The desired configuration of a device, as the twin's `desired` section resolves it.
///
/// `None` means "not set here": the board profile's default applies (or, in a
/// [`PartialConfig`] layer, the layer below).
///
/// Its serde form (the bindings' JSON) uses these field names and refuses any
/// other: a twin key such as `warn_c` is an error naming it, not an edit that
/// silently changes nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredConfig {
    /// Warning threshold.
    pub warn: Option<Celsius>,
    /// Throttle threshold.
    pub throttle: Option<Celsius>,
    /// Critical threshold.
    pub critical: Option<Celsius>,
    /// Fan profile name, one the device's policy engine runs: `quiet`, `balance`, `cool`, `max`.
    pub fan_profile: Option<String>,
    /// Fan curve points, sorted by temperature (for the `custom` profile).
    pub fan_curve: Option<Vec<CurvePoint>>,
    /// Lowest fan duty the controller may use.
    pub min_fan_duty: Option<Percent>,
    /// GPIO outputs: BCM pin to level.
    pub gpio_outputs: BTreeMap<u8, Level>,
    /// Workload switches (`workload.<name>`): `true` runs the workload, `false`
    /// stops it; a workload without a switch runs as the device configures it.
    pub workloads: BTreeMap<String, bool>,
    /// Policy overrides, as TOML or JSON text for the policy engine.
    pub policy_overrides: Option<String>,
    /// Version of this config, bumped by the fleet on every rollout.
    pub config_version: u64,
}

pub(crate) const K_WARN: &str = "warn_c";
pub(crate) const K_THROTTLE: &str = "throttle_c";
pub(crate) const K_CRITICAL: &str = "critical_c";
const K_FAN_PROFILE: &str = "fan_profile";
const K_FAN_CURVE: &str = "fan_curve";
const K_MIN_DUTY: &str = "min_fan_duty_pct";
const K_POLICY: &str = "policy_overrides";
const K_VERSION: &str = "config_version";
const P_GPIO: &str = "gpio.";
const P_WORKLOAD: &str = "workload.";

fn encode_curve(points: &[CurvePoint]) -> String {
    points
        .iter()
        .map(|p| format!("{}:{}", p.temp.get(), p.duty.get()))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_curve(s: &str) -> Result<Vec<CurvePoint>> {
    let bad = |reason: String| Error::InvalidField {
        field: K_FAN_CURVE.into(),
        reason,
    };
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|p| {
            let (t, d) = p
                .split_once(':')
                .ok_or_else(|| bad(format!("point {p:?} is not temp:duty")))?;
            let temp: f64 = t
                .parse()
                .map_err(|_| bad(format!("bad temperature {t:?}")))?;
            let duty: f64 = d.parse().map_err(|_| bad(format!("bad duty {d:?}")))?;
            Ok(CurvePoint {
                temp: Celsius(temp),
                duty: Percent::new(duty).map_err(|e| bad(e.to_string()))?,
            })
        })
        .collect()
}

fn float(key: &str, v: &FieldValue) -> Result<f64> {
    v.as_f64().ok_or_else(|| Error::InvalidField {
        field: key.into(),
        reason: format!("expected a number, found {v}"),
    })
}

fn string(key: &str, v: &FieldValue) -> Result<String> {
    match v {
        FieldValue::Str(s) => Ok(s.clone()),
        other => Err(Error::InvalidField {
            field: key.into(),
            reason: format!("expected a string, found {other}"),
        }),
    }
}

impl DesiredConfig {
    /// The config as flat fields (what the twin's `desired` section stores).
    pub fn to_fields(&self) -> BTreeMap<String, FieldValue> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<FieldValue>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put(K_WARN, self.warn.map(|c| c.get().into()));
        put(K_THROTTLE, self.throttle.map(|c| c.get().into()));
        put(K_CRITICAL, self.critical.map(|c| c.get().into()));
        put(K_FAN_PROFILE, self.fan_profile.clone().map(Into::into));
        put(
            K_FAN_CURVE,
            self.fan_curve.as_deref().map(|c| encode_curve(c).into()),
        );
        put(K_MIN_DUTY, self.min_fan_duty.map(|p| p.get().into()));
        put(K_POLICY, self.policy_overrides.clone().map(Into::into));
        if self.config_version > 0 {
            put(K_VERSION, Some(FieldValue::Int(self.config_version as i64)));
        }
        for (pin, level) in &self.gpio_outputs {
            let v = if level.is_high() { "high" } else { "low" };
            m.insert(format!("{P_GPIO}{pin}"), v.into());
        }
        for (w, on) in &self.workloads {
            m.insert(format!("{P_WORKLOAD}{w}"), (*on).into());
        }
        m
    }

    /// Builds the typed config from flat fields. Unknown keys are ignored (a newer
    /// fleet may know more fields); known keys with bad values are an error naming
    /// the field.
    pub fn from_fields(fields: &BTreeMap<String, FieldValue>) -> Result<DesiredConfig> {
        let mut c = DesiredConfig::default();
        for (k, v) in fields {
            match k.as_str() {
                K_WARN => c.warn = Some(Celsius(float(k, v)?)),
                K_THROTTLE => c.throttle = Some(Celsius(float(k, v)?)),
                K_CRITICAL => c.critical = Some(Celsius(float(k, v)?)),
                K_FAN_PROFILE => c.fan_profile = Some(string(k, v)?),
                K_FAN_CURVE => c.fan_curve = Some(decode_curve(&string(k, v)?)?),
                K_MIN_DUTY => {
                    c.min_fan_duty =
                        Some(Percent::new(float(k, v)?).map_err(|e| Error::InvalidField {
                            field: k.clone(),
                            reason: e.to_string(),
                        })?)
                }
                K_POLICY => c.policy_overrides = Some(string(k, v)?),
                K_VERSION => match v {
                    FieldValue::Int(i) if *i >= 0 => c.config_version = *i as u64,
                    other => {
                        return Err(Error::InvalidField {
                            field: k.clone(),
                            reason: format!("expected a non-negative integer, found {other}"),
                        });
                    }
                },
                _ => {
                    if let Some(pin) = k.strip_prefix(P_GPIO) {
                        let pin: u8 = pin.parse().map_err(|_| Error::InvalidField {
                            field: k.clone(),
                            reason: "GPIO pin is not a number 0-255".into(),
                        })?;
                        let level = match string(k, v)?.as_str() {
                            "high" => Level::High,
                            "low" => Level::Low,
                            other => {
                                return Err(Error::InvalidField {
                                    field: k.clone(),
                                    reason: format!("level {other:?} is not high or low"),
                                });
                            }
                        };
                        c.gpio_outputs.insert(pin, level);
                    } else if let Some(name) = k.strip_prefix(P_WORKLOAD) {
                        let FieldValue::Bool(on) = v else {
                            return Err(Error::InvalidField {
                                field: k.clone(),
                                reason: "a workload switch is true or false".into(),
                            });
                        };
                        c.workloads.insert(name.to_owned(), *on);
                    }
                }
            }
        }
        Ok(c)
    }

    /// Whether a flat key belongs to the desired schema.
    pub fn is_known_key(key: &str) -> bool {
        matches!(
            key,
            K_WARN
                | K_THROTTLE
                | K_CRITICAL
                | K_FAN_PROFILE
                | K_FAN_CURVE
                | K_MIN_DUTY
                | K_POLICY
                | K_VERSION
        ) || key.starts_with(P_GPIO)
            || key.starts_with(P_WORKLOAD)
    }
}

/// Why a config was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The rule that refused it (`thresholds_above_board`, `open_conflict`, ...).
    pub rule: String,
    /// A human explanation naming the values.
    pub reason: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            rule: rule.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.reason)
    }
}

/// The validation seam: the policy engine (or the built-in board floor) decides
/// whether a desired config is safe before it is written and again on the device
/// before it is applied.
pub trait ConfigValidator {
    /// `Ok` when the config may be applied.
    fn validate(&self, cfg: &DesiredConfig) -> Result<(), Rejection>;
}

/// The built-in validator: desired thresholds may not exceed the board profile's
/// warn/throttle/critical limits, must stay ordered, and the fan curve must be sane.
#[derive(Debug, Clone)]
pub struct BoardFloorValidator {
    profile: BoardProfile,
}

impl BoardFloorValidator {
    /// A validator for one board profile.
    pub fn new(profile: BoardProfile) -> Self {
        Self { profile }
    }
}

impl ConfigValidator for BoardFloorValidator {
    fn validate(&self, cfg: &DesiredConfig) -> Result<(), Rejection> {
        let t = &self.profile.thermal;
        let limits = [
            ("warn_c", cfg.warn, t.warn_c),
            ("throttle_c", cfg.throttle, t.throttle_c),
            ("critical_c", cfg.critical, t.critical_c),
        ];
        for (name, want, limit) in limits {
            if let Some(v) = want {
                if !v.is_finite() {
                    return Err(Rejection::new(
                        "threshold_not_finite",
                        format!("{name} is {}", v.get()),
                    ));
                }
                if v > limit {
                    return Err(Rejection::new(
                        "threshold_above_board",
                        format!(
                            "{name} {:.1} is above the {} limit {:.1}",
                            v, self.profile.model, limit
                        ),
                    ));
                }
            }
        }
        let warn = cfg.warn.unwrap_or(t.warn_c);
        let throttle = cfg.throttle.unwrap_or(t.throttle_c);
        let critical = cfg.critical.unwrap_or(t.critical_c);
        if !(warn.get() < throttle.get() && throttle.get() < critical.get()) {
            return Err(Rejection::new(
                "thresholds_unordered",
                format!(
                    "need warn < throttle < critical, got {:.1} / {:.1} / {:.1}",
                    warn, throttle, critical
                ),
            ));
        }
        if let Some(curve) = &cfg.fan_curve {
            for w in curve.windows(2) {
                if w[0].temp.partial_cmp(&w[1].temp) != Some(std::cmp::Ordering::Less) {
                    return Err(Rejection::new(
                        "fan_curve_unsorted",
                        "fan curve temperatures must increase",
                    ));
                }
            }
            if let (Some(min), Some(last)) = (cfg.min_fan_duty, curve.last()) {
                if last.duty < min {
                    return Err(Rejection::new(
                        "fan_curve_below_min_duty",
                        format!(
                            "curve tops out at {:.0} below min duty {:.0}",
                            last.duty, min
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One layer of configuration (fleet defaults, a group, or a device's overrides):
/// flat desired fields, any subset.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PartialConfig {
    /// The flat fields this layer sets. A `workload.<name> = false` or a missing
    /// GPIO key in a higher layer does not remove a lower layer's entry unless it is
    /// set here (`false` for workloads).
    pub fields: BTreeMap<String, FieldValue>,
}

impl PartialConfig {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The layer kept in a config document: group and fleet configs are documents
    /// too, twins whose id names the layer (`fleet`, `group-lab`) and of which only
    /// `desired` is used. They get history, authors, rollback and merging for free.
    pub fn from_doc(doc: &crate::Twin) -> Result<PartialConfig> {
        Ok(PartialConfig {
            fields: doc.fields(crate::Section::Desired)?,
        })
    }

    /// Sets one field (unknown keys are an error).
    pub fn set(&mut self, key: &str, value: impl Into<FieldValue>) -> Result<&mut Self> {
        if !DesiredConfig::is_known_key(key) {
            return Err(Error::UnknownField(key.to_owned()));
        }
        self.fields.insert(key.to_owned(), value.into());
        Ok(self)
    }
}

/// The effective desired config: fleet defaults, then the group, then the device's
/// overrides (a later layer replaces a field of an earlier one), validated.
pub fn effective_config(
    fleet: &PartialConfig,
    group: Option<&PartialConfig>,
    device: &PartialConfig,
    validator: &dyn ConfigValidator,
) -> Result<DesiredConfig> {
    let mut fields = fleet.fields.clone();
    for layer in group.into_iter().chain(Some(device)) {
        fields.extend(layer.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let cfg = DesiredConfig::from_fields(&fields)?;
    validator.validate(&cfg).map_err(Error::Rejected)?;
    Ok(cfg)
}

/// Name of the fleet-wide layer in [`LayeredConfig::sources`].
pub const FLEET_LAYER: &str = "fleet";

/// The flat fields of a stack of config layers folded lowest first (fleet
/// defaults, then each group from the root of the tree down to the device's own
/// group, then the device's overrides), with the layer each field came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LayeredConfig {
    /// The effective flat fields.
    pub fields: BTreeMap<String, FieldValue>,
    /// For each field, the name of the layer that set it last (`fleet`,
    /// `group:lab`, `device:pi-01`: the names given to [`LayeredConfig::fold`]).
    pub sources: BTreeMap<String, String>,
}

impl LayeredConfig {
    /// Folds `layers`, lowest first: a later layer replaces a field of an earlier one.
    pub fn fold<'a>(layers: impl IntoIterator<Item = (String, &'a PartialConfig)>) -> Self {
        let mut out = LayeredConfig::default();
        for (name, layer) in layers {
            for (k, v) in &layer.fields {
                out.fields.insert(k.clone(), v.clone());
                out.sources.insert(k.clone(), name.clone());
            }
        }
        out
    }

    /// The typed config (an error names a field with a bad value).
    pub fn config(&self) -> Result<DesiredConfig> {
        DesiredConfig::from_fields(&self.fields)
    }

    /// The writes that turn the effective fields `before` into these: a new or
    /// changed field with its value, a field no layer sets any more with `None`.
    /// A device's own edits of fields whose effective value did not change are
    /// left alone by applying only these.
    pub fn changes_since(&self, before: &LayeredConfig) -> BTreeMap<String, Option<FieldValue>> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.fields {
            if before.fields.get(k).is_none_or(|old| !old.same(v)) {
                out.insert(k.clone(), Some(v.clone()));
            }
        }
        for k in before.fields.keys() {
            if !self.fields.contains_key(k) {
                out.insert(k.clone(), None);
            }
        }
        out
    }
}

impl PartialConfig {
    /// A layer as a user wrote it: every key must belong to the desired schema,
    /// `config_version` is refused (the fleet bumps it on every write), and each
    /// value must have the field's type and range. Errors name the field.
    pub fn from_layer_fields(fields: BTreeMap<String, FieldValue>) -> Result<PartialConfig> {
        for k in fields.keys() {
            if k == K_VERSION {
                return Err(Error::InvalidField {
                    field: k.clone(),
                    reason: "config_version is set by the fleet on every write, not by a layer"
                        .into(),
                });
            }
            if !DesiredConfig::is_known_key(k) {
                return Err(Error::UnknownField(k.clone()));
            }
        }
        DesiredConfig::from_fields(&fields)?;
        for (k, v) in &fields {
            if let Some(name) = k.strip_prefix(P_WORKLOAD) {
                if name.is_empty() || !matches!(v, FieldValue::Bool(_)) {
                    return Err(Error::InvalidField {
                        field: k.clone(),
                        reason: "a workload needs a name and a true/false value".into(),
                    });
                }
            }
        }
        Ok(PartialConfig { fields })
    }
}

impl DesiredConfig {
    /// The fan profile this config names, parsed; `fan.unknown_profile` when the
    /// device's engine does not run one of that name.
    pub fn fan_profile_name(&self) -> Result<Option<FanProfileName>, Rejection> {
        let Some(name) = &self.fan_profile else {
            return Ok(None);
        };
        FanProfileName::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .map(Some)
            .ok_or_else(|| {
                Rejection::new(
                    "fan.unknown_profile",
                    format!(
                        "fan profile {name:?} is not one the device can run \
                         (known: quiet, balance, cool, max)"
                    ),
                )
            })
    }

    /// The commands that put this config's outputs in force on a device where
    /// `last` is in force (`None`: nothing yet): the fan profile if it changed,
    /// then each GPIO output whose level changed. Thresholds and duty limits are
    /// not commands; they reach the engine as a policy layer.
    pub fn commands_since(&self, last: Option<&DesiredConfig>) -> Result<Vec<Command>, Rejection> {
        let mut out = Vec::new();
        if let Some(profile) = self.fan_profile_name()? {
            if last.and_then(|l| l.fan_profile.as_ref()) != self.fan_profile.as_ref() {
                out.push(Command::SetFanProfile { profile });
            }
        }
        for (&pin, &level) in &self.gpio_outputs {
            if last.and_then(|l| l.gpio_outputs.get(&pin)) != Some(&level) {
                out.push(Command::SetGpio { pin, level });
            }
        }
        Ok(out)
    }
}

/// The configured workloads a device runs under the raw `desired` fields: every
/// one of `configured` except those switched off (`workload.<name> = false`); a
/// workload without a key runs as configured. A workload switched on that is not
/// configured is refused (`workload.unknown`).
pub fn workloads_to_run<'a>(
    fields: &BTreeMap<String, FieldValue>,
    configured: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<Vec<&'a str>, Rejection> {
    let mut wanted: BTreeMap<&str, bool> = BTreeMap::new();
    for (k, v) in fields {
        if let Some(name) = k.strip_prefix(P_WORKLOAD) {
            wanted.insert(name, *v == FieldValue::Bool(true));
        }
    }
    if let Some((name, _)) = wanted
        .iter()
        .find(|(n, on)| **on && !configured.clone().into_iter().any(|c| c == **n))
    {
        return Err(Rejection::new(
            "workload.unknown",
            format!("workload {name:?} is not configured on this device ([[workloads]])"),
        ));
    }
    Ok(configured
        .into_iter()
        .filter(|c| wanted.get(c) != Some(&false))
        .collect())
}

/// `desired` fields after applying `writes` (from [`LayeredConfig::changes_since`]),
/// with `config_version` bumped: what a device's twin will hold, to validate
/// before anything is written.
pub fn apply_changes(
    desired: &BTreeMap<String, FieldValue>,
    writes: &BTreeMap<String, Option<FieldValue>>,
) -> BTreeMap<String, FieldValue> {
    let mut out = desired.clone();
    for (k, v) in writes {
        match v {
            Some(v) => {
                out.insert(k.clone(), v.clone());
            }
            None => {
                out.remove(k);
            }
        }
    }
    let version = match out.get(K_VERSION) {
        Some(FieldValue::Int(v)) if *v >= 0 => *v,
        _ => 0,
    };
    out.insert(K_VERSION.to_owned(), FieldValue::Int(version + 1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_refuses_unknown_fields() {
        let mut v = serde_json::to_value(DesiredConfig::default()).unwrap();
        v["warn"] = serde_json::json!(63.0);
        let c: DesiredConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(c.warn, Some(Celsius(63.0)));
        v["warn_c"] = serde_json::json!(63.0);
        let e = serde_json::from_value::<DesiredConfig>(v).unwrap_err();
        assert!(e.to_string().contains("warn_c"), "{e}");
    }
    use wrale_core::BoardModel;

    #[test]
    fn commands_since_name_only_what_changed() {
        let mut cfg = DesiredConfig {
            fan_profile: Some("cool".into()),
            gpio_outputs: [(17, Level::High), (27, Level::Low)].into(),
            ..DesiredConfig::default()
        };
        let all = cfg.commands_since(None).unwrap();
        assert_eq!(
            all,
            vec![
                Command::SetFanProfile {
                    profile: FanProfileName::Cool
                },
                Command::SetGpio {
                    pin: 17,
                    level: Level::High
                },
                Command::SetGpio {
                    pin: 27,
                    level: Level::Low
                },
            ]
        );
        let last = cfg.clone();
        cfg.gpio_outputs.insert(27, Level::High);
        assert_eq!(
            cfg.commands_since(Some(&last)).unwrap(),
            vec![Command::SetGpio {
                pin: 27,
                level: Level::High
            }]
        );
        assert!(last.commands_since(Some(&last)).unwrap().is_empty());
        cfg.fan_profile = Some("turbo".into());
        let r = cfg.commands_since(Some(&last)).unwrap_err();
        assert_eq!(r.rule, "fan.unknown_profile");
        assert!(r.reason.contains("turbo"), "{}", r.reason);
    }

    #[test]
    fn workloads_to_run_follow_switches_and_refuse_unknown_ones() {
        let fields: BTreeMap<String, FieldValue> = [
            ("workload.cam".to_owned(), FieldValue::Bool(false)),
            ("workload.log".to_owned(), FieldValue::Bool(true)),
        ]
        .into();
        let configured = ["cam", "log", "web"];
        assert_eq!(
            workloads_to_run(&fields, configured.iter().copied()).unwrap(),
            vec!["log", "web"]
        );
        let r = workloads_to_run(&fields, ["cam", "web"].iter().copied()).unwrap_err();
        assert_eq!(r.rule, "workload.unknown");
        assert!(r.reason.contains("\"log\""), "{}", r.reason);
    }

    fn sample() -> DesiredConfig {
        DesiredConfig {
            warn: Some(Celsius(65.0)),
            throttle: Some(Celsius(75.0)),
            critical: None,
            fan_profile: Some("custom".into()),
            fan_curve: Some(vec![
                CurvePoint {
                    temp: Celsius(40.0),
                    duty: Percent::new(20.0).unwrap(),
                },
                CurvePoint {
                    temp: Celsius(70.5),
                    duty: Percent::new(100.0).unwrap(),
                },
            ]),
            min_fan_duty: Some(Percent::new(15.0).unwrap()),
            gpio_outputs: [(17, Level::High), (27, Level::Low)].into(),
            workloads: [("camera".to_string(), true), ("backup".to_string(), false)].into(),
            policy_overrides: Some("[rules]".into()),
            config_version: 7,
        }
    }

    #[test]
    fn flat_fields_round_trip() {
        let c = sample();
        let f = c.to_fields();
        assert_eq!(f["gpio.17"], FieldValue::from("high"));
        assert_eq!(f["fan_curve"], FieldValue::from("40:20,70.5:100"));
        // A `false` switch stops a workload: it survives the round trip.
        assert_eq!(f["workload.backup"], FieldValue::Bool(false));
        assert_eq!(DesiredConfig::from_fields(&f).unwrap(), c);
        let mut bad = f.clone();
        bad.insert("workload.backup".into(), FieldValue::from("off"));
        let e = DesiredConfig::from_fields(&bad).unwrap_err().to_string();
        assert!(e.contains("workload.backup"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut f = sample().to_fields();
        f.insert("min_fan_duty_pct".into(), 140.0.into());
        let e = DesiredConfig::from_fields(&f).unwrap_err().to_string();
        assert!(
            e.contains("min_fan_duty_pct") && e.contains("out of range"),
            "{e}"
        );
        let mut f = sample().to_fields();
        f.insert("gpio.17".into(), "up".into());
        let e = DesiredConfig::from_fields(&f).unwrap_err().to_string();
        assert!(e.contains("gpio.17"), "{e}");
    }

    #[test]
    fn board_floor_refuses_thresholds_above_the_profile() {
        let v = BoardFloorValidator::new(BoardProfile::builtin(BoardModel::Pi4B));
        assert!(v.validate(&sample()).is_ok());
        let hot = DesiredConfig {
            critical: Some(Celsius(95.0)),
            ..sample()
        };
        let r = v.validate(&hot).unwrap_err();
        assert_eq!(r.rule, "threshold_above_board");
        assert!(r.reason.contains("critical_c"), "{r}");
        let unordered = DesiredConfig {
            warn: Some(Celsius(69.0)),
            throttle: Some(Celsius(65.0)),
            ..sample()
        };
        assert_eq!(
            v.validate(&unordered).unwrap_err().rule,
            "thresholds_unordered"
        );
    }

    #[test]
    fn layering_overrides_in_order_and_validates() {
        let v = BoardFloorValidator::new(BoardProfile::builtin(BoardModel::Pi4B));
        let mut fleet = PartialConfig::new();
        fleet.set("warn_c", 68.0).unwrap();
        fleet.set("workload.agent", true).unwrap();
        fleet.set("workload.camera", true).unwrap();
        let mut group = PartialConfig::new();
        group.set("warn_c", 66.0).unwrap();
        let mut dev = PartialConfig::new();
        dev.set("workload.camera", false).unwrap();
        dev.set("min_fan_duty_pct", 30.0).unwrap();
        let c = effective_config(&fleet, Some(&group), &dev, &v).unwrap();
        assert_eq!(c.warn, Some(Celsius(66.0)));
        // The device layer switches the camera off: the switch is kept, not dropped.
        assert_eq!(
            c.workloads,
            [("agent".to_string(), true), ("camera".to_string(), false)].into()
        );
        assert_eq!(c.min_fan_duty.map(|p| p.get()), Some(30.0));
        dev.set("critical_c", 99.0).unwrap();
        assert!(matches!(
            effective_config(&fleet, Some(&group), &dev, &v),
            Err(Error::Rejected(r)) if r.rule == "threshold_above_board"
        ));
        assert!(matches!(dev.set("nope", 1i64), Err(Error::UnknownField(_))));
    }

    #[test]
    fn layers_fold_with_sources_and_changes_leave_other_fields_alone() {
        let mut fleet = PartialConfig::new();
        fleet.set("fan_profile", "quiet").unwrap();
        fleet.set("warn_c", 70.0).unwrap();
        let mut root = PartialConfig::new();
        root.set("fan_profile", "balance").unwrap();
        let mut leaf = PartialConfig::new();
        leaf.set("fan_profile", "cool").unwrap();
        let dev = PartialConfig::new();
        let before = LayeredConfig::fold([(FLEET_LAYER.to_string(), &fleet)]);
        let after = LayeredConfig::fold([
            (FLEET_LAYER.to_string(), &fleet),
            ("group:site".to_string(), &root),
            ("group:rack".to_string(), &leaf),
            ("device:pi".to_string(), &dev),
        ]);
        assert_eq!(after.fields["fan_profile"], FieldValue::from("cool"));
        assert_eq!(after.sources["fan_profile"], "group:rack");
        assert_eq!(after.sources["warn_c"], "fleet");
        let writes = after.changes_since(&before);
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(writes["fan_profile"], Some(FieldValue::from("cool")));
        let removed = before.changes_since(&after);
        assert_eq!(removed["fan_profile"], Some(FieldValue::from("quiet")));
        // A device-side field outside the layers stays; the version is bumped.
        let mut twin = BTreeMap::new();
        twin.insert("min_fan_duty_pct".to_string(), FieldValue::Float(30.0));
        twin.insert("config_version".to_string(), FieldValue::Int(4));
        let next = apply_changes(&twin, &writes);
        assert_eq!(next["min_fan_duty_pct"], FieldValue::Float(30.0));
        assert_eq!(next["config_version"], FieldValue::Int(5));
        assert_eq!(next["fan_profile"], FieldValue::from("cool"));
    }

    #[test]
    fn layer_fields_are_checked_by_name() {
        let ok: BTreeMap<String, FieldValue> = [
            ("warn_c".to_string(), FieldValue::Int(65)),
            ("workload.cam".to_string(), true.into()),
        ]
        .into();
        PartialConfig::from_layer_fields(ok).unwrap();
        for (k, v, want) in [
            ("nope", FieldValue::Int(1), "nope"),
            ("config_version", FieldValue::Int(3), "config_version"),
            ("warn_c", FieldValue::from("hot"), "warn_c"),
            ("gpio.17", FieldValue::Bool(true), "gpio.17"),
            ("workload.cam", FieldValue::from("yes"), "workload.cam"),
        ] {
            let e = PartialConfig::from_layer_fields([(k.to_string(), v)].into())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{k}: {e}");
        }
    }
}
