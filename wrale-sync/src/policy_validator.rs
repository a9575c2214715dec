//! The desired-config validator backed by wrale-core's safety/policy engine.
//!
//! A desired config is turned into a device policy layer (thresholds, fan profile,
//! minimum duty, plus the free-form `policy_overrides` layer) and assembled on top of
//! the board's safety floor and the fleet/group layers in force. Layers may tighten
//! the floor but never loosen it, so a config that would loosen it is rejected with
//! the floor rule it breaks. Desired GPIO outputs are then checked as commands
//! against the assembled policy (reserved pins, interlocks that hold in a fresh state).
//!
//! fleetd runs this before it writes a desired config; the device runs it again on
//! receipt ([`Twin::evaluate_desired`](crate::Twin::evaluate_desired)) and reports
//! the verdict.

use wrale_core::board::BoardProfile;
use wrale_core::model::{Actor, Command, CommandRequest};
use wrale_core::policy::{BoardFloor, PolicyLayer, PolicySet, Scope};
use wrale_core::{Timestamp, policy::SafetyState};

use crate::config::{BoardFloorValidator, ConfigValidator, DesiredConfig, Rejection};

/// Validates desired configs with the full policy engine.
#[derive(Debug, Clone)]
pub struct PolicyValidator {
    profile: BoardProfile,
    floor: BoardFloor,
    layers: Vec<PolicyLayer>,
}

impl PolicyValidator {
    /// A validator for a board, with no fleet or group layers.
    pub fn new(profile: &BoardProfile) -> Self {
        Self {
            profile: profile.clone(),
            floor: BoardFloor::from_profile(profile),
            layers: Vec::new(),
        }
    }

    /// Adds the fleet and group layers in force (in any order: assembly is
    /// order-independent).
    pub fn with_layers(mut self, layers: impl IntoIterator<Item = PolicyLayer>) -> Self {
        self.layers.extend(layers);
        self
    }

    /// The device layer a desired config stands for.
    pub fn layer_of(cfg: &DesiredConfig) -> Result<PolicyLayer, Rejection> {
        let mut layer = PolicyLayer::empty(Scope::Fleet);
        layer.thermal.warn_c = cfg.warn;
        layer.thermal.throttle_c = cfg.throttle;
        layer.thermal.critical_c = cfg.critical;
        layer.fan.min_duty_pct = cfg.min_fan_duty;
        layer.fan.default_profile = cfg.fan_profile_name()?;
        Ok(layer)
    }

    /// Assembles the policy a desired config would put in force.
    pub fn assemble(&self, cfg: &DesiredConfig) -> Result<PolicySet, Rejection> {
        let mut layers = self.layers.clone();
        layers.push(Self::layer_of(cfg)?);
        if let Some(text) = cfg
            .policy_overrides
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            let overrides = PolicyLayer::from_toml(text, "desired.policy_overrides")
                .map_err(|e| Rejection::new(e.code(), e.to_string()))?;
            layers.push(overrides);
        }
        PolicySet::assemble(&self.floor, &layers)
            .map_err(|r| Rejection::new(r.rule.as_str(), r.reason))
    }
}

impl ConfigValidator for PolicyValidator {
    fn validate(&self, cfg: &DesiredConfig) -> Result<(), Rejection> {
        // Structure first (ordering of thresholds, curve sanity), then the engine.
        BoardFloorValidator::new(self.profile.clone()).validate(cfg)?;
        let policy = self.assemble(cfg)?;
        let state = SafetyState::new(&policy);
        for (&pin, &level) in &cfg.gpio_outputs {
            let req = CommandRequest::new(
                Actor::Fleet,
                "desired config",
                Command::SetGpio { pin, level },
            );
            // Time only matters for rate limits and quiet hours, neither of which
            // applies to a fresh state's first command.
            if let wrale_core::policy::Verdict::Refused { rule, reason } =
                policy.check(&state, &req, Timestamp::EPOCH)
            {
                return Err(Rejection::new(
                    rule.as_str(),
                    format!("gpio output {pin}: {reason}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_core::board::BoardModel;
    use wrale_core::model::Level;
    use wrale_core::units::{Celsius, Percent};

    fn pi4() -> PolicyValidator {
        PolicyValidator::new(&BoardProfile::builtin(BoardModel::Pi4B))
    }

    #[test]
    fn tightening_is_accepted() {
        let cfg = DesiredConfig {
            warn: Some(Celsius(65.0)),
            throttle: Some(Celsius(75.0)),
            critical: Some(Celsius(82.0)),
            fan_profile: Some("cool".into()),
            min_fan_duty: Some(Percent::saturating(30.0)),
            ..DesiredConfig::default()
        };
        pi4().validate(&cfg).unwrap();
        let set = pi4().assemble(&cfg).unwrap();
        assert!(format!("{set:?}").contains("82"), "critical 82 in force");
    }

    #[test]
    fn loosening_the_floor_is_rejected_with_the_rule() {
        // The structural check already refuses thresholds above the board's; the
        // engine's own floor rule must agree when asked directly.
        let cfg = DesiredConfig {
            critical: Some(Celsius(95.0)),
            ..DesiredConfig::default()
        };
        let e = pi4().validate(&cfg).unwrap_err();
        assert!(e.reason.contains("95"), "{e:?}");
        let e = pi4().assemble(&cfg).unwrap_err();
        assert_eq!(e.rule, "floor.thermal.critical_c", "{e:?}");
    }

    #[test]
    fn unknown_fan_profile_is_rejected() {
        let cfg = DesiredConfig {
            fan_profile: Some("turbo".into()),
            ..DesiredConfig::default()
        };
        let e = pi4().validate(&cfg).unwrap_err();
        assert_eq!(e.rule, "fan.unknown_profile");
    }

    #[test]
    fn bad_policy_override_text_is_rejected_naming_the_problem() {
        let cfg = DesiredConfig {
            policy_overrides: Some("scope = \"fleet\"\n[thermal]\nwarn_c = \"hot\"\n".into()),
            ..DesiredConfig::default()
        };
        let e = pi4().validate(&cfg).unwrap_err();
        assert_eq!(e.rule, "invalid_policy", "{e:?}");
        assert!(e.reason.contains("desired.policy_overrides"), "{e:?}");
    }

    #[test]
    fn gpio_output_on_a_reserved_pin_is_rejected() {
        // GPIO 18 drives the Pi 4 profile's fan: a desired output may not take it.
        let mut cfg = DesiredConfig::default();
        cfg.gpio_outputs.insert(18, Level::High);
        let e = pi4().validate(&cfg).unwrap_err();
        assert!(e.reason.contains("gpio output 18"), "{e:?}");
        let mut ok = DesiredConfig::default();
        ok.gpio_outputs.insert(17, Level::High);
        pi4().validate(&ok).unwrap();
    }
}
