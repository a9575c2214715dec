//! The effective policy: a board's safety floor tightened by fleet, group and
//! device layers, and the store that swaps it only when a new one is valid.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::cel::Expr;
use super::layer::{CustomRule, Interlock, PolicyLayer, QuietHours, RateLimit, Scope};
use crate::board::{BoardModel, BoardProfile, FanKind};
use crate::error::{Error, Refused, RuleId};
use crate::model::{CommandKind, FanProfileName, Severity};
use crate::units::{Celsius, Percent, Rpm, Volts};

/// Thermal limits in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermalPolicy {
    /// Warning threshold.
    pub warn_c: Celsius,
    /// Throttle threshold.
    pub throttle_c: Celsius,
    /// Critical threshold.
    pub critical_c: Celsius,
    /// Alerts clear this far below their threshold.
    pub hysteresis_c: Celsius,
    /// Hold before the warning alert.
    pub warn_hold: Duration,
    /// Hold before throttling.
    pub throttle_hold: Duration,
    /// Critical must persist this long before an emergency shutdown.
    pub shutdown_after: Duration,
    /// An alert clears only after its clear condition held this long.
    pub clear_hold: Duration,
}

/// Fan policy in force.
#[derive(Debug, Clone, PartialEq)]
pub struct FanPolicy {
    /// Whether the board has a fan the engine drives.
    pub present: bool,
    /// The quietest profile a command may select.
    pub min_profile: FanProfileName,
    /// The profile in force until a command selects another.
    pub default_profile: FanProfileName,
    /// The fan never runs below this duty.
    pub min_duty: Percent,
    /// Duty when the temperature cannot be trusted (from the board profile).
    pub safe_duty: Percent,
    /// Below this duty the fan does not start, so no stall is judged.
    pub min_start_duty: Percent,
    /// Speed at 100 %, where known.
    pub max_rpm: Option<Rpm>,
    /// How long a commanded fan may show no rotation before it counts as stalled.
    pub stall_hold: Duration,
}

/// Power policy in force.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerPolicy {
    /// Under-voltage threshold.
    pub undervoltage_v: Volts,
    /// Brown-out threshold.
    pub brownout_v: Volts,
    /// Hysteresis on the voltage thresholds.
    pub hysteresis_v: Volts,
    /// How long under-voltage must persist before it counts.
    pub undervoltage_hold: Duration,
    /// Battery warning level.
    pub battery_warn: Percent,
    /// Battery critical level.
    pub battery_critical: Percent,
    /// Hysteresis on battery levels.
    pub battery_hysteresis: Percent,
    /// Switch to the battery when the main supply is lost.
    pub failover: bool,
}

/// Physical-security policy in force.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityPolicy {
    /// Severity of the case-open alert.
    pub case_open_severity: Severity,
    /// Severity of motion in quiet hours.
    pub motion_severity: Severity,
    /// Severity of tamper.
    pub tamper_severity: Severity,
    /// Lock GPIO outputs while the case is open.
    pub lock_gpio_when_case_open: bool,
    /// Quiet-hours windows (UTC), sorted.
    pub quiet_hours: Vec<QuietHours>,
    /// The motion alert clears after this long without motion.
    pub motion_clear_after: Duration,
}

/// Sensor-trust policy in force.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorPolicy {
    /// A temperature that does not change at all for this long is stuck.
    pub stuck_after: Duration,
    /// Lowest plausible reading.
    pub plausible_min_c: Celsius,
    /// Highest plausible reading.
    pub plausible_max_c: Celsius,
}

/// Command-handling policy in force.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandPolicy {
    /// Lifetime of a two-phase confirmation token.
    pub confirm_ttl: Duration,
    /// Highest usable GPIO.
    pub max_gpio: u8,
    /// Pins wired to the fan, tachometer and security/voltage inputs: never commandable.
    pub reserved_pins: Vec<u8>,
}

/// Every limit of a policy, concrete.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Thermal.
    pub thermal: ThermalPolicy,
    /// Fan.
    pub fan: FanPolicy,
    /// Power.
    pub power: PowerPolicy,
    /// Physical security.
    pub security: SecurityPolicy,
    /// Sensor trust.
    pub sensors: SensorPolicy,
    /// Commands.
    pub commands: CommandPolicy,
}

/// The built-in safety floor of a board model: what no remote layer may loosen.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardFloor {
    /// The model.
    pub model: BoardModel,
    /// The floor's limits.
    pub limits: Limits,
    /// The floor's rate limits.
    pub rate_limits: Vec<RateLimit>,
}

impl BoardFloor {
    /// The floor of a board profile: its warn / throttle / critical temperatures,
    /// its under-voltage threshold, its fan's safe duty and pin map, plus Wrale's
    /// built-in holds, hysteresis and rate limits (see `docs/policies.md`).
    pub fn from_profile(p: &BoardProfile) -> BoardFloor {
        let uv = p.power.undervoltage_v.unwrap_or(p.power.nominal_v * 0.908);
        let pins = &p.pins;
        let mut reserved: Vec<u8> = [
            pins.fan,
            pins.fan_tach,
            pins.case_switch,
            pins.motion,
            pins.tamper,
            pins.voltage_monitor,
        ]
        .into_iter()
        .flatten()
        .collect();
        reserved.sort_unstable();
        reserved.dedup();
        BoardFloor {
            model: p.model,
            limits: Limits {
                thermal: ThermalPolicy {
                    warn_c: p.thermal.warn_c,
                    throttle_c: p.thermal.throttle_c,
                    critical_c: p.thermal.critical_c,
                    hysteresis_c: Celsius(3.0),
                    warn_hold: Duration::from_secs(5),
                    throttle_hold: Duration::from_secs(3),
                    shutdown_after: Duration::from_secs(30),
                    clear_hold: Duration::from_secs(5),
                },
                fan: FanPolicy {
                    present: p.fan.kind != FanKind::None,
                    min_profile: FanProfileName::Quiet,
                    default_profile: FanProfileName::Balance,
                    min_duty: Percent::ZERO,
                    safe_duty: p.fan.safe_duty_pct,
                    min_start_duty: p.fan.min_start_duty_pct,
                    max_rpm: p.fan.max_rpm,
                    stall_hold: Duration::from_secs_f64(p.fan.spin_up_s.max(0.0) + 4.0),
                },
                power: PowerPolicy {
                    undervoltage_v: uv,
                    brownout_v: uv * 0.95,
                    hysteresis_v: Volts(0.05),
                    undervoltage_hold: Duration::from_secs(2),
                    battery_warn: Percent::saturating(20.0),
                    battery_critical: Percent::saturating(10.0),
                    battery_hysteresis: Percent::saturating(2.0),
                    failover: true,
                },
                security: SecurityPolicy {
                    case_open_severity: Severity::Warning,
                    motion_severity: Severity::Warning,
                    tamper_severity: Severity::Critical,
                    lock_gpio_when_case_open: false,
                    quiet_hours: Vec::new(),
                    motion_clear_after: Duration::from_secs(60),
                },
                sensors: SensorPolicy {
                    stuck_after: Duration::from_secs(120),
                    plausible_min_c: Celsius(-40.0),
                    plausible_max_c: Celsius(125.0),
                },
                commands: CommandPolicy {
                    confirm_ttl: Duration::from_secs(30),
                    max_gpio: pins.max_gpio,
                    reserved_pins: reserved,
                },
            },
            rate_limits: vec![
                RateLimit {
                    command: CommandKind::Reboot,
                    max: 3,
                    per: Duration::from_secs(600),
                },
                RateLimit {
                    command: CommandKind::Shutdown,
                    max: 3,
                    per: Duration::from_secs(600),
                },
            ],
        }
    }
}

/// A custom CEL rule, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompiledRule {
    pub(crate) rule: CustomRule,
    pub(crate) expr: Expr,
}

/// An interlock with its compiled condition expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompiledInterlock {
    pub(crate) interlock: Interlock,
    pub(crate) expr: Option<Expr>,
}

/// The effective policy of one device: floor plus layers, tighten-only.
///
/// The safety engine's entry points ([`evaluate`](Self::evaluate),
/// [`check`](Self::check), [`admit`](Self::admit), [`validate`](Self::validate),
/// [`confirm`](Self::confirm)) are methods of this type.
#[derive(Clone, PartialEq)]
pub struct PolicySet {
    pub(crate) floor: BoardFloor,
    pub(crate) limits: Limits,
    pub(crate) interlocks: Vec<CompiledInterlock>,
    pub(crate) rate_limits: Vec<RateLimit>,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) scopes: Vec<Scope>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("model", &self.floor.model)
            .field("scopes", &self.scopes)
            .field("limits", &self.limits)
            .field("interlocks", &self.interlocks.len())
            .field("rate_limits", &self.rate_limits)
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn violation(field: &'static str, scope: &Scope, reason: String) -> Refused {
    Refused::new(RuleId::builtin(field), format!("{scope} layer: {reason}"))
}

/// Tightens `cur` with a layer value; refuses values looser than the floor.
/// `lower_is_tighter` gives the direction.
fn tighten<T: PartialOrd + Copy + fmt::Debug>(
    rule: &'static str,
    scope: &Scope,
    floor: T,
    cur: &mut T,
    value: Option<T>,
    lower_is_tighter: bool,
) -> Result<(), Refused> {
    let Some(v) = value else { return Ok(()) };
    let Some(ord) = v.partial_cmp(&floor) else {
        return Err(violation(rule, scope, format!("{v:?} is not a number")));
    };
    let looser = if lower_is_tighter {
        ord.is_gt()
    } else {
        ord.is_lt()
    };
    if looser {
        return Err(violation(
            rule,
            scope,
            format!(
                "{v:?} would loosen the safety floor ({floor:?}); remote layers may only tighten it"
            ),
        ));
    }
    let tighter = if lower_is_tighter { v < *cur } else { v > *cur };
    if tighter {
        *cur = v;
    }
    Ok(())
}

impl PolicySet {
    /// The board's floor alone (no remote layer).
    pub fn for_board(profile: &BoardProfile) -> PolicySet {
        let floor = BoardFloor::from_profile(profile);
        // The floor alone cannot loosen itself.
        match PolicySet::assemble(&floor, &[]) {
            Ok(p) => p,
            Err(_) => PolicySet {
                limits: floor.limits.clone(),
                rate_limits: floor.rate_limits.clone(),
                floor,
                interlocks: Vec::new(),
                rules: Vec::new(),
                scopes: Vec::new(),
            },
        }
    }

    /// Assembles the effective policy from a board floor and layers.
    ///
    /// Every layer may only tighten the floor: a lower temperature threshold, a
    /// higher minimum fan duty, a shorter hold before shutdown, more interlocks,
    /// rate limits and rules. A loosening value is refused with the rule it would
    /// break (`floor.thermal.critical_c`, ...). Where several layers set the same
    /// limit the strictest wins, so the result does not depend on the order or
    /// grouping of `layers`; a narrower layer cannot relax a broader one.
    pub fn assemble(floor: &BoardFloor, layers: &[PolicyLayer]) -> Result<PolicySet, Refused> {
        let f = &floor.limits;
        let mut l = f.clone();
        let mut interlocks: Vec<CompiledInterlock> = Vec::new();
        let mut rate_limits = floor.rate_limits.clone();
        let mut rules: Vec<CompiledRule> = Vec::new();
        let mut scopes = Vec::new();
        for layer in layers {
            let s = &layer.scope;
            scopes.push(s.clone());
            let t = &layer.thermal;
            tighten(
                "floor.thermal.warn_c",
                s,
                f.thermal.warn_c,
                &mut l.thermal.warn_c,
                t.warn_c,
                true,
            )?;
            tighten(
                "floor.thermal.throttle_c",
                s,
                f.thermal.throttle_c,
                &mut l.thermal.throttle_c,
                t.throttle_c,
                true,
            )?;
            tighten(
                "floor.thermal.critical_c",
                s,
                f.thermal.critical_c,
                &mut l.thermal.critical_c,
                t.critical_c,
                true,
            )?;
            tighten(
                "floor.thermal.hysteresis_c",
                s,
                f.thermal.hysteresis_c,
                &mut l.thermal.hysteresis_c,
                t.hysteresis_c,
                false,
            )?;
            tighten(
                "floor.thermal.warn_hold",
                s,
                f.thermal.warn_hold,
                &mut l.thermal.warn_hold,
                t.warn_hold,
                true,
            )?;
            tighten(
                "floor.thermal.throttle_hold",
                s,
                f.thermal.throttle_hold,
                &mut l.thermal.throttle_hold,
                t.throttle_hold,
                true,
            )?;
            tighten(
                "floor.thermal.shutdown_after",
                s,
                f.thermal.shutdown_after,
                &mut l.thermal.shutdown_after,
                t.shutdown_after,
                true,
            )?;
            let fa = &layer.fan;
            tighten(
                "floor.fan.min_profile",
                s,
                f.fan.min_profile,
                &mut l.fan.min_profile,
                fa.min_profile,
                false,
            )?;
            tighten(
                "floor.fan.default_profile",
                s,
                f.fan.min_profile,
                &mut l.fan.default_profile,
                fa.default_profile,
                false,
            )?;
            tighten(
                "floor.fan.min_duty_pct",
                s,
                f.fan.min_duty,
                &mut l.fan.min_duty,
                fa.min_duty_pct,
                false,
            )?;
            tighten(
                "floor.fan.stall_hold",
                s,
                f.fan.stall_hold,
                &mut l.fan.stall_hold,
                fa.stall_hold,
                true,
            )?;
            let p = &layer.power;
            tighten(
                "floor.power.undervoltage_v",
                s,
                f.power.undervoltage_v,
                &mut l.power.undervoltage_v,
                p.undervoltage_v,
                false,
            )?;
            tighten(
                "floor.power.brownout_v",
                s,
                f.power.brownout_v,
                &mut l.power.brownout_v,
                p.brownout_v,
                false,
            )?;
            tighten(
                "floor.power.undervoltage_hold",
                s,
                f.power.undervoltage_hold,
                &mut l.power.undervoltage_hold,
                p.undervoltage_hold,
                true,
            )?;
            tighten(
                "floor.power.battery_warn_pct",
                s,
                f.power.battery_warn,
                &mut l.power.battery_warn,
                p.battery_warn_pct,
                false,
            )?;
            tighten(
                "floor.power.battery_critical_pct",
                s,
                f.power.battery_critical,
                &mut l.power.battery_critical,
                p.battery_critical_pct,
                false,
            )?;
            tighten(
                "floor.power.failover",
                s,
                f.power.failover,
                &mut l.power.failover,
                p.failover,
                false,
            )?;
            let se = &layer.security;
            tighten(
                "floor.security.case_open_severity",
                s,
                f.security.case_open_severity,
                &mut l.security.case_open_severity,
                se.case_open_severity,
                false,
            )?;
            tighten(
                "floor.security.motion_severity",
                s,
                f.security.motion_severity,
                &mut l.security.motion_severity,
                se.motion_severity,
                false,
            )?;
            tighten(
                "floor.security.tamper_severity",
                s,
                f.security.tamper_severity,
                &mut l.security.tamper_severity,
                se.tamper_severity,
                false,
            )?;
            tighten(
                "floor.security.lock_gpio_when_case_open",
                s,
                f.security.lock_gpio_when_case_open,
                &mut l.security.lock_gpio_when_case_open,
                se.lock_gpio_when_case_open,
                false,
            )?;
            l.security
                .quiet_hours
                .extend(se.quiet_hours.iter().copied());
            let sn = &layer.sensors;
            tighten(
                "floor.sensors.stuck_after",
                s,
                f.sensors.stuck_after,
                &mut l.sensors.stuck_after,
                sn.stuck_after,
                true,
            )?;
            tighten(
                "floor.sensors.plausible_min_c",
                s,
                f.sensors.plausible_min_c,
                &mut l.sensors.plausible_min_c,
                sn.plausible_min_c,
                false,
            )?;
            tighten(
                "floor.sensors.plausible_max_c",
                s,
                f.sensors.plausible_max_c,
                &mut l.sensors.plausible_max_c,
                sn.plausible_max_c,
                true,
            )?;
            tighten(
                "floor.commands.confirm_ttl",
                s,
                f.commands.confirm_ttl,
                &mut l.commands.confirm_ttl,
                layer.commands.confirm_ttl,
                true,
            )?;
            for i in &layer.interlocks {
                let expr = match &i.when.expr {
                    Some(src) => Some(Expr::new(src).map_err(|m| {
                        violation(
                            "policy.invalid_interlock",
                            s,
                            format!("interlock {:?}: {m}", i.id),
                        )
                    })?),
                    None => None,
                };
                interlocks.push(CompiledInterlock {
                    interlock: i.clone(),
                    expr,
                });
            }
            rate_limits.extend(layer.rate_limits.iter().cloned());
            for r in &layer.rules {
                let expr = Expr::new(&r.when).map_err(|m| {
                    violation("policy.invalid_rule", s, format!("rule {:?}: {m}", r.id))
                })?;
                rules.push(CompiledRule {
                    rule: r.clone(),
                    expr,
                });
            }
        }
        // Keep the ordering invariant warn <= throttle <= critical: a layer that
        // lowers only the critical threshold pulls the others down with it.
        l.thermal.throttle_c = l.thermal.throttle_c.min(l.thermal.critical_c);
        l.thermal.warn_c = l.thermal.warn_c.min(l.thermal.throttle_c);
        l.power.brownout_v = l.power.brownout_v.min(l.power.undervoltage_v);
        l.power.battery_critical = l.power.battery_critical.min(l.power.battery_warn);
        l.security.quiet_hours.sort_unstable();
        l.security.quiet_hours.dedup();
        // Canonical order, so that assembly is independent of layer order.
        interlocks.sort_by_key(|a| canonical(&a.interlock));
        interlocks.dedup();
        rate_limits.sort_unstable();
        rate_limits.dedup();
        rules.sort_by_key(|a| canonical_rule(&a.rule));
        rules.dedup();
        scopes.sort_unstable();
        scopes.dedup();
        Ok(PolicySet {
            floor: floor.clone(),
            limits: l,
            interlocks,
            rate_limits,
            rules,
            scopes,
        })
    }

    /// The board floor this policy was built on.
    pub fn floor(&self) -> &BoardFloor {
        &self.floor
    }

    /// The effective limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The scopes of the layers in force, sorted.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// The interlocks in force, in canonical order.
    pub fn interlocks(&self) -> impl Iterator<Item = &Interlock> {
        self.interlocks.iter().map(|c| &c.interlock)
    }

    /// The rate limits in force, in canonical order.
    pub fn rate_limits(&self) -> &[RateLimit] {
        &self.rate_limits
    }

    /// The custom rules in force, in canonical order.
    pub fn custom_rules(&self) -> impl Iterator<Item = &CustomRule> {
        self.rules.iter().map(|c| &c.rule)
    }
}

fn canonical(i: &Interlock) -> String {
    format!("{}\u{0}{i:?}", i.id)
}

fn canonical_rule(r: &CustomRule) -> String {
    format!("{}\u{0}{r:?}", r.id)
}

/// Holds the policy in force and replaces it only with a valid one.
///
/// A reload parses the new layer, checks it, assembles the whole set with the
/// other layers, and only then swaps; on any error the previous policy stays in
/// force and the error says why (file, line, key, or the floor rule broken).
#[derive(Debug, Clone)]
pub struct PolicyStore {
    floor: BoardFloor,
    layers: BTreeMap<Scope, (String, PolicyLayer)>,
    current: Arc<PolicySet>,
}

impl PolicyStore {
    /// A store holding the board's floor only.
    pub fn new(profile: &BoardProfile) -> Self {
        let floor = BoardFloor::from_profile(profile);
        Self {
            current: Arc::new(PolicySet::for_board(profile)),
            floor,
            layers: BTreeMap::new(),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<PolicySet> {
        Arc::clone(&self.current)
    }

    /// Loads (or replaces) the layer in `text`, named `source_name` in errors.
    /// On error nothing changes.
    pub fn reload(&mut self, text: &str, source_name: &str) -> Result<Arc<PolicySet>, Error> {
        let layer = PolicyLayer::from_toml(text, source_name)?;
        let mut layers = self.layers.clone();
        layers.insert(layer.scope.clone(), (source_name.to_owned(), layer));
        self.install(layers, source_name)
    }

    /// Removes the layer of `scope` (returns whether there was one).
    pub fn remove(&mut self, scope: &Scope) -> Result<bool, Error> {
        let mut layers = self.layers.clone();
        let had = layers.remove(scope).is_some();
        self.install(layers, &scope.to_string())?;
        Ok(had)
    }

    fn install(
        &mut self,
        layers: BTreeMap<Scope, (String, PolicyLayer)>,
        source_name: &str,
    ) -> Result<Arc<PolicySet>, Error> {
        let list: Vec<PolicyLayer> = layers.values().map(|(_, l)| l.clone()).collect();
        let set = PolicySet::assemble(&self.floor, &list).map_err(|r| Error::PolicyViolation {
            rule: r.rule,
            reason: format!("{source_name}: {}", r.reason),
        })?;
        self.layers = layers;
        self.current = Arc::new(set);
        Ok(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pi4() -> BoardProfile {
        BoardProfile::builtin(BoardModel::Pi4B)
    }

    #[test]
    fn policy_and_state_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PolicySet>();
        send_sync::<PolicyStore>();
        send_sync::<super::super::SafetyState>();
    }

    #[test]
    fn pi4_floor_has_issue_defaults() {
        let p = PolicySet::for_board(&pi4());
        let t = &p.limits().thermal;
        assert_eq!(
            (t.warn_c, t.throttle_c, t.critical_c),
            (Celsius(70.0), Celsius(80.0), Celsius(85.0))
        );
        assert_eq!(p.limits().power.undervoltage_v, Volts(4.63));
        assert!(p.limits().commands.reserved_pins.contains(&18));
        let pi5 = PolicySet::for_board(&BoardProfile::builtin(BoardModel::Pi5));
        assert_eq!(pi5.limits().thermal.warn_c, Celsius(75.0));
    }

    #[test]
    fn tightening_is_applied_and_loosening_refused() {
        let floor = BoardFloor::from_profile(&pi4());
        let mut layer = PolicyLayer::empty(Scope::Fleet);
        layer.thermal.critical_c = Some(Celsius(78.0));
        let p = PolicySet::assemble(&floor, &[layer.clone()]).unwrap();
        assert_eq!(p.limits().thermal.critical_c, Celsius(78.0));
        assert_eq!(p.limits().thermal.throttle_c, Celsius(78.0));
        layer.thermal.critical_c = Some(Celsius(90.0));
        let r = PolicySet::assemble(&floor, &[layer]).unwrap_err();
        assert_eq!(r.rule.as_str(), "floor.thermal.critical_c");
        assert!(
            r.reason.contains("fleet") && r.reason.contains("loosen"),
            "{}",
            r.reason
        );
        let mut l2 = PolicyLayer::empty(Scope::Fleet);
        l2.thermal.shutdown_after = Some(Duration::from_secs(600));
        assert_eq!(
            PolicySet::assemble(&floor, &[l2])
                .unwrap_err()
                .rule
                .as_str(),
            "floor.thermal.shutdown_after"
        );
    }

    #[test]
    fn store_keeps_previous_policy_on_error() {
        let mut s = PolicyStore::new(&pi4());
        s.reload(
            "scope = \"fleet\"\n[thermal]\nwarn_c = 65.0\n",
            "fleet.toml",
        )
        .unwrap();
        assert_eq!(s.current().limits().thermal.warn_c, Celsius(65.0));
        let e = s
            .reload(
                "scope = \"fleet\"\n[thermal]\nwarn_c = 75.0\n",
                "fleet.toml",
            )
            .unwrap_err();
        assert_eq!(e.code(), "policy_violation");
        assert!(e.to_string().contains("fleet.toml"), "{e}");
        let e = s
            .reload("scope = \"fleet\"\n[thermal\n", "fleet.toml")
            .unwrap_err();
        assert_eq!(e.code(), "invalid_policy");
        assert_eq!(s.current().limits().thermal.warn_c, Celsius(65.0));
        assert!(s.remove(&Scope::Fleet).unwrap());
        assert_eq!(s.current().limits().thermal.warn_c, Celsius(70.0));
    }
}
