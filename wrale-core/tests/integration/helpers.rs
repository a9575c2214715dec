//! Sample builders and a small rig that drives the engine in virtual time.

use std::time::Duration;

use wrale_core::model::{
    Actor, BatteryStatus, ChargeState, Command, CommandRequest, FanReading, PowerSourceKind,
    Reading, Sample, SecurityKind, SecurityReading, SensorKind, TemperatureReading, ThrottleFlags,
};
use wrale_core::policy::{Decision, PolicySet, SafetyState, Verdict};
use wrale_core::units::{Celsius, Percent, Rpm, Volts};
use wrale_core::{BoardModel, BoardProfile, Timestamp};

pub fn pi4_policy() -> PolicySet {
    PolicySet::for_board(&BoardProfile::builtin(BoardModel::Pi4B))
}

/// A full Pi 4 sample: CPU temperature, one fan spinning at its duty, a healthy
/// 5.1 V supply, main power, a full battery, closed case.
pub fn sample(temp: f64, fan_duty: Percent) -> Sample {
    Sample {
        temperatures: vec![TemperatureReading {
            id: "cpu".into(),
            kind: SensorKind::Cpu,
            value: Reading::Ok(Celsius(temp)),
        }],
        fans: vec![FanReading {
            id: "fan0".into(),
            duty: Reading::Ok(fan_duty),
            rpm: Reading::Ok(Rpm(5000.0 * fan_duty.fraction())),
        }],
        supply_voltage: Reading::Ok(Volts(5.1)),
        throttle: Reading::Ok(ThrottleFlags::default()),
        power_source: Reading::Ok(PowerSourceKind::Main),
        main_power_available: Reading::Ok(true),
        battery: Reading::Ok(BatteryStatus {
            level: Percent::FULL,
            voltage: Volts(4.1),
            state: ChargeState::Full,
            charging_enabled: true,
        }),
        security: vec![
            SecurityReading {
                id: "case".into(),
                kind: SecurityKind::CaseSwitch,
                active: Reading::Ok(false),
            },
            SecurityReading {
                id: "pir0".into(),
                kind: SecurityKind::Motion,
                active: Reading::Ok(false),
            },
            SecurityReading {
                id: "tamper".into(),
                kind: SecurityKind::Tamper,
                active: Reading::Ok(false),
            },
        ],
        cpu_load: Reading::Ok(Percent::saturating(30.0)),
        ..Sample::default()
    }
}

pub fn set_security(s: &mut Sample, kind: SecurityKind, active: bool) {
    for r in s.security.iter_mut().filter(|r| r.kind == kind) {
        r.active = Reading::Ok(active);
    }
}

pub fn req(command: Command) -> CommandRequest {
    CommandRequest::new(Actor::User("ada".into()), "test", command)
}

pub fn pct(v: f64) -> Percent {
    Percent::saturating(v)
}

/// Drives a policy in virtual time, with a fan that obeys the engine.
pub struct Rig {
    pub policy: PolicySet,
    pub state: SafetyState,
    pub now: Timestamp,
    pub fan_duty: Percent,
}

impl Rig {
    pub fn new(policy: PolicySet) -> Self {
        let state = SafetyState::new(&policy);
        Self {
            policy,
            state,
            now: Timestamp::from_secs(1_795_000_000),
            fan_duty: Percent::ZERO,
        }
    }

    /// Evaluates `s` (its time and fan duty are filled in), applies fan actions, then advances 1 s.
    pub fn feed(&mut self, mut s: Sample) -> Decision {
        s.at = self.now;
        for f in &mut s.fans {
            if f.duty.is_ok() {
                f.duty = Reading::Ok(self.fan_duty);
            }
            if let Reading::Ok(r) = f.rpm {
                if r.get() > 0.0 || self.fan_duty.get() == 0.0 {
                    f.rpm = Reading::Ok(Rpm(5000.0 * self.fan_duty.fraction()));
                }
            }
        }
        let d = self.policy.evaluate(&mut self.state, &s, self.now);
        for a in &d.actions {
            if let wrale_core::Action::SetFanDuty { duty, .. } = a {
                self.fan_duty = *duty;
            }
        }
        self.now = self.now + Duration::from_secs(1);
        d
    }

    /// Feeds the same temperature for `secs` seconds; returns every decision.
    pub fn hold(&mut self, temp: f64, secs: u32) -> Vec<Decision> {
        (0..secs)
            .map(|_| self.feed(sample(temp, self.fan_duty)))
            .collect()
    }

    pub fn check(&self, c: Command) -> Verdict {
        self.policy.check(&self.state, &req(c), self.now)
    }

    pub fn admit(&mut self, c: Command) -> Verdict {
        self.policy.admit(&mut self.state, &req(c), self.now)
    }
}

pub fn refused_rule(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Refused { rule, .. } => Some(rule.as_str()),
        Verdict::Allowed => None,
    }
}
