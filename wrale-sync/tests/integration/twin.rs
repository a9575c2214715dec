//! The twin: typed sections, deadband reporting, history, rollback, conflicts.

use std::time::Duration;

use wrale_core::model::{Level, ThrottleFlags};
use wrale_core::units::{Celsius, Percent};
use wrale_core::{BoardModel, BoardProfile};
use wrale_sync::{
    AuthorKind, BoardFloorValidator, ConfigVerdict, Error, FieldPath, FieldPolicy, FieldValue,
    Health, ReportedUpdate, Twin,
};

use crate::common::*;

#[test]
fn typed_sections_round_trip_through_save_and_load() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    f.edit_desired(
        |d| {
            d.warn = Some(Celsius(65.0));
            d.min_fan_duty = Some(Percent::new(25.0).unwrap());
            d.gpio_outputs.insert(17, Level::High);
            d.workloads.insert("camera".into(), true);
            d.config_version = 3;
        },
        &alice(),
        t(1),
    )
    .unwrap()
    .expect("a change");
    let mut d = Twin::load(&f.save(), dev()).unwrap();
    let cfg = d.desired().unwrap();
    assert_eq!(cfg.warn, Some(Celsius(65.0)));
    assert_eq!(cfg.gpio_outputs.get(&17), Some(&Level::High));
    assert_eq!(cfg.config_version, 3);
    assert_eq!(d.meta().unwrap(), info());
    d.report(
        &ReportedUpdate {
            health: Some(Health::Ok),
            throttle: Some(ThrottleFlags::from_bits(0x5_0005)),
            agent_version: Some("0.1.0".into()),
            ..Default::default()
        }
        .reading("cpu_temp_c", 48.5),
        t(2),
    )
    .unwrap();
    let r = d.reported().unwrap();
    assert_eq!(r.health, Some(Health::Ok));
    assert_eq!(r.throttle.map(|t| t.bits()), Some(0x5_0005));
    assert_eq!(r.cpu_temp(), Some(Celsius(48.5)));
}

#[test]
fn one_tick_is_one_change_and_a_device_at_rest_adds_nothing() {
    let mut d = Twin::new(&info(), dev(), t(0)).unwrap();
    let n0 = d.change_count();
    let tick = |temp: f64| {
        ReportedUpdate {
            health: Some(Health::Ok),
            throttle: Some(ThrottleFlags::default()),
            ..Default::default()
        }
        .reading("cpu_temp_c", temp)
        .reading("supply_v", 5.08)
        .reading("power_w", 3.1)
    };
    assert!(d.report(&tick(50.0), t(1)).unwrap());
    assert_eq!(d.change_count(), n0 + 1, "5 fields, one change");
    // An hour at rest: jitter inside every deadband, one tick per second.
    for s in 0..3600 {
        let jitter = ((s % 7) as f64 - 3.0) * 0.1;
        assert!(!d.report(&tick(50.0 + jitter), t(2 + s)).unwrap());
    }
    assert_eq!(d.change_count(), n0 + 1, "0 changes per hour at rest");
    // Leaving the deadband before the minimum interval: held back.
    assert!(!d.report(&tick(52.0), t(30)).unwrap());
    // ...and written once the interval passed.
    assert!(d.report(&tick(52.0), t(1 + 61)).unwrap());
    // Discrete state is written at once, regardless of the interval.
    let alert = ReportedUpdate {
        health: Some(Health::Warning),
        ..Default::default()
    };
    assert!(d.report(&alert, t(63)).unwrap());
    assert_eq!(d.reported().unwrap().health, Some(Health::Warning));
}

#[test]
fn alerts_are_a_set_and_acks_accumulate() {
    let mut d = Twin::new(&info(), dev(), t(0)).unwrap();
    let mut u = ReportedUpdate {
        alerts: Some([("hot".into(), "cpu 81 °C".into())].into()),
        ..Default::default()
    };
    u.acks.insert("cmd-1".into(), "done".into());
    d.report(&u, t(1)).unwrap();
    let u2 = ReportedUpdate {
        alerts: Some([("uv".into(), "under-voltage".into())].into()),
        ..Default::default()
    };
    d.report(&u2, t(2)).unwrap();
    let r = d.reported().unwrap();
    assert_eq!(r.alerts.keys().collect::<Vec<_>>(), vec!["uv"]);
    assert_eq!(r.acks.get("cmd-1").map(String::as_str), Some("done"));
}

#[test]
fn history_lists_author_time_and_summary_and_rollback_writes_forward() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let v1 = f
        .edit_desired(|d| d.warn = Some(Celsius(65.0)), &alice(), t(10))
        .unwrap()
        .unwrap();
    f.edit_desired(
        |d| {
            d.warn = Some(Celsius(60.0));
            d.fan_profile = Some("quiet".into());
        },
        &Author_bob(),
        t(20),
    )
    .unwrap();
    let h = f.history().unwrap();
    let last = h.last().unwrap();
    assert_eq!(last.author.name, "bob");
    assert_eq!(last.author.kind, AuthorKind::User);
    assert_eq!(last.at, t(20));
    assert!(
        last.summary.contains("warn_c") && last.summary.contains("fan_profile"),
        "{}",
        last.summary
    );
    assert!(h.iter().any(|v| v.hash == v1 && v.author == alice()));
    let n = h.len();
    f.rollback(&[v1], &alice(), t(30))
        .unwrap()
        .expect("a change");
    let cfg = f.desired().unwrap();
    assert_eq!(cfg.warn, Some(Celsius(65.0)));
    assert_eq!(cfg.fan_profile, None, "fields added later are removed");
    let h = f.history().unwrap();
    assert_eq!(h.len(), n + 1, "rollback is a new change, history kept");
    assert!(h.last().unwrap().summary.starts_with("rollback to"));
    let bogus = wrale_sync::ChangeHash([7; 32]);
    assert!(matches!(
        f.rollback(&[bogus], &alice(), t(31)),
        Err(Error::UnknownVersion(_))
    ));
}

#[allow(non_snake_case)]
fn Author_bob() -> wrale_sync::Author {
    wrale_sync::Author::user("bob")
}

/// Fleet and device edit the same fields while apart; after merging, each field
/// shows its policy's value on both sides.
#[test]
fn concurrent_edits_resolve_by_field_policy_on_every_peer() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut d = Twin::load(&f.save(), dev()).unwrap();
    let op = wrale_sync::Author::local_operator("tech");
    f.edit_desired(
        |c| {
            c.warn = Some(Celsius(70.0));
            c.min_fan_duty = Some(Percent::new(20.0).unwrap());
            c.fan_profile = Some("balance".into());
            c.gpio_outputs.insert(17, Level::High);
        },
        &alice(),
        t(1),
    )
    .unwrap();
    d.edit_desired(
        |c| {
            c.warn = Some(Celsius(66.0));
            c.min_fan_duty = Some(Percent::new(10.0).unwrap());
            c.fan_profile = Some("quiet".into());
            c.gpio_outputs.insert(17, Level::Low);
        },
        &op,
        t(1),
    )
    .unwrap();
    let mut f2 = Twin::load(&f.save(), fleet()).unwrap();
    f.merge(&mut d).unwrap();
    d.merge(&mut f2).unwrap();
    for tw in [&f, &d] {
        let c = tw.desired().unwrap();
        assert_eq!(c.warn, Some(Celsius(66.0)), "safety-first: lower limit");
        assert_eq!(
            c.min_fan_duty.map(|p| p.get()),
            Some(20.0),
            "safety-first: higher duty"
        );
        assert_eq!(c.fan_profile.as_deref(), Some("balance"), "fleet-wins");
        assert_eq!(c.gpio_outputs.get(&17), Some(&Level::Low), "device-wins");
    }
    assert_eq!(f.heads(), d.heads());
    let conflicts = f.conflicts().unwrap();
    let warn = conflicts
        .iter()
        .find(|c| c.field == FieldPath::desired("warn_c"))
        .unwrap();
    assert_eq!(warn.policy, FieldPolicy::SafetyFirstMin);
    assert_eq!(warn.values.len(), 2);
    assert!(
        warn.values
            .iter()
            .any(|(v, a)| v == &FieldValue::Float(66.0) && a.name == "tech")
    );
    assert!(warn.values.iter().any(|(_, a)| a == &alice()));
}

#[test]
fn manual_conflicts_stay_open_block_the_config_and_resolve() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut d = Twin::load(&f.save(), dev()).unwrap();
    f.edit_desired(
        |c| c.policy_overrides = Some("a = 1".into()),
        &alice(),
        t(1),
    )
    .unwrap();
    d.edit_desired(
        |c| c.policy_overrides = Some("a = 2".into()),
        &wrale_sync::Author::local_operator("tech"),
        t(1),
    )
    .unwrap();
    f.merge(&mut d).unwrap();
    let open: Vec<_> = f
        .conflicts()
        .unwrap()
        .into_iter()
        .filter(|c| c.policy == FieldPolicy::Manual)
        .collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].values.len(), 2);
    let v = BoardFloorValidator::new(BoardProfile::builtin(BoardModel::Pi4B));
    match f.evaluate_desired(&v, t(2)).unwrap() {
        ConfigVerdict::Rejected(r) => assert_eq!(r.rule, "open_conflict"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.compact(&fleet(), t(2)),
        Err(Error::OpenConflicts(1))
    ));
    f.resolve(
        &FieldPath::desired("policy_overrides"),
        FieldValue::from("a = 2"),
        &alice(),
        t(3),
    )
    .unwrap();
    assert!(f.conflicts().unwrap().is_empty());
    assert_eq!(
        f.desired().unwrap().policy_overrides.as_deref(),
        Some("a = 2")
    );
    assert!(matches!(
        f.evaluate_desired(&v, t(4)).unwrap(),
        ConfigVerdict::Accepted(_)
    ));
    let st = f.reported().unwrap().config.unwrap();
    assert!(st.accepted);
}

#[test]
fn device_rejects_an_unsafe_config_and_reports_why() {
    let mut f = Twin::new(&info(), fleet(), t(0)).unwrap();
    let v = BoardFloorValidator::new(BoardProfile::builtin(BoardModel::Pi4B));
    // The fleet's checked edit refuses it outright...
    let e = f
        .edit_desired_checked(|c| c.critical = Some(Celsius(99.0)), &v, &alice(), t(1))
        .unwrap_err();
    assert!(
        matches!(e, Error::Rejected(ref r) if r.rule == "threshold_above_board"),
        "{e}"
    );
    assert_eq!(f.desired().unwrap().critical, None, "nothing written");
    // ...but a peer without the check can still write it; the device refuses it.
    f.edit_desired(
        |c| {
            c.critical = Some(Celsius(99.0));
            c.config_version = 9;
        },
        &alice(),
        t(2),
    )
    .unwrap();
    let mut d = Twin::load(&f.save(), dev()).unwrap();
    match d.evaluate_desired(&v, t(3)).unwrap() {
        ConfigVerdict::Rejected(r) => assert!(r.reason.contains("critical_c"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    let st = d.reported().unwrap().config.unwrap();
    assert_eq!(st.version, 9);
    assert!(!st.accepted);
    assert_eq!(st.rejection.unwrap().rule, "threshold_above_board");
    // A wrongly typed raw value is refused with the field named.
    d.set_field(
        &FieldPath::desired("min_fan_duty_pct"),
        Some(FieldValue::Float(140.0)),
        &alice(),
        t(4),
    )
    .unwrap();
    match d.evaluate_desired(&v, t(5)).unwrap() {
        ConfigVerdict::Rejected(r) => {
            assert_eq!(r.rule, "invalid_field");
            assert!(r.reason.contains("min_fan_duty_pct"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn independently_created_twins_share_genesis_and_merge() {
    let mut a = Twin::new(&info(), fleet(), t(0)).unwrap();
    let mut b = Twin::empty(&device_id(), dev()).unwrap();
    b.report(&ReportedUpdate::default().reading("cpu_temp_c", 40.0), t(1))
        .unwrap();
    a.merge(&mut b).unwrap();
    assert_eq!(a.reported().unwrap().cpu_temp(), Some(Celsius(40.0)));
    assert_eq!(a.meta().unwrap(), info());
    let _ = Duration::ZERO;
}

/// Fleet and group configs are documents too; the effective config is layered,
/// validated, and written into the device twin in one change.
#[test]
fn layered_config_from_documents_is_validated_and_written() {
    use wrale_core::DeviceId;
    use wrale_sync::{PartialConfig, effective_config};
    let v = BoardFloorValidator::new(BoardProfile::builtin(BoardModel::Pi4B));
    let mut fleet_doc = Twin::empty(&DeviceId::new("fleet").unwrap(), fleet()).unwrap();
    fleet_doc
        .edit_desired(
            |c| {
                c.warn = Some(Celsius(68.0));
                c.workloads.insert("agent".into(), true);
            },
            &alice(),
            t(1),
        )
        .unwrap();
    let mut group_doc = Twin::empty(&DeviceId::new("group-lab").unwrap(), fleet()).unwrap();
    group_doc
        .edit_desired(|c| c.warn = Some(Celsius(64.0)), &alice(), t(2))
        .unwrap();
    let mut overrides = PartialConfig::new();
    overrides.set("min_fan_duty_pct", 30.0).unwrap();
    let cfg = effective_config(
        &PartialConfig::from_doc(&fleet_doc).unwrap(),
        Some(&PartialConfig::from_doc(&group_doc).unwrap()),
        &overrides,
        &v,
    )
    .unwrap();
    let mut d = Twin::new(&info(), fleet(), t(0)).unwrap();
    let n = d.change_count();
    d.edit_desired_checked(|c| *c = cfg.clone(), &v, &fleet(), t(3))
        .unwrap()
        .expect("written");
    assert_eq!(d.change_count(), n + 1);
    let got = d.desired().unwrap();
    assert_eq!(got.warn, Some(Celsius(64.0)));
    assert!(got.workloads.contains_key("agent"));
    assert_eq!(got.min_fan_duty.map(|p| p.get()), Some(30.0));
}
