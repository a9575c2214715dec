//! `wrale analysis show|fleet|hotspots` and the fleet-alert parts of `wrale
//! alert` (`fleet`, `silence`, `dead-letters`).

use wrale_client::models::{
    DeviceAnalysisReport, FleetAnalysisReport, HealthScope, HotSpot, NewSilence,
};

use super::Ctx;
use crate::args::{AlertCmd, AnalysisCmd, SilenceCmd};
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

pub(crate) async fn run(ctx: &Ctx, cmd: AnalysisCmd) -> CliResult {
    match cmd {
        AnalysisCmd::Show { device } => {
            let r = ctx.client.device_analysis(&device).await?;
            if ctx.json {
                output::print(&output::json(&r)?);
            } else {
                output::print(&device_text(&r));
            }
        }
        AnalysisCmd::Fleet => {
            let r = ctx.client.fleet_analysis().await?;
            if ctx.json {
                output::print(&output::json(&r)?);
            } else {
                output::print(&fleet_text(&r));
            }
        }
        AnalysisCmd::Hotspots => {
            let r = ctx.client.hot_spots().await?;
            if ctx.json {
                output::print(&output::json(&r)?);
            } else {
                output::print(&hot_spot_table(&r.items));
            }
        }
    }
    Ok(())
}

fn num(v: f64, unit: &str) -> String {
    format!("{v:.1}{unit}")
}

fn device_text(r: &DeviceAnalysisReport) -> String {
    let a = &r.analysis;
    let mut pairs: Vec<(&str, String)> = vec![
        ("device", r.device.to_string()),
        ("analysed at", output::time(r.at)),
        ("health", r.health.to_string()),
        ("score", format!("{:.0}", a.health.score)),
        ("points", a.points.to_string()),
    ];
    if let Some(t) = &a.trend {
        pairs.push((
            "temperature",
            format!(
                "{} ({:+.2} °C/h)",
                num(t.level.get(), " °C"),
                t.slope_c_per_h
            ),
        ));
    }
    pairs.push((
        "time to throttle",
        a.time_to_throttle_s
            .map_or("-".to_owned(), |s| format!("{:.1} h", s / 3600.0)),
    ));
    if let Some(h) = &a.headroom {
        pairs.push((
            "headroom",
            format!(
                "{} below {} ({} W more at steady state)",
                num(h.headroom.get(), " °C"),
                num(h.throttle.get(), " °C"),
                num(h.power_headroom.get(), "")
            ),
        ));
    }
    if let Some(f) = &a.fan {
        pairs.push((
            "fan",
            format!(
                "{:?}{}",
                f.status,
                f.effectiveness.map_or(String::new(), |e| format!(
                    ", {:.0} % of expected cooling",
                    e * 100.0
                ))
            )
            .to_lowercase(),
        ));
    }
    if let Some(s) = &a.supply {
        pairs.push((
            "supply",
            format!(
                "median {:.2} V, min {:.2} V, {} under-voltage events",
                s.median.get(),
                s.min.get(),
                s.under_voltage_events
            ),
        ));
    }
    if let Some(s) = &a.storage {
        pairs.push((
            "storage",
            format!(
                "{:.0} bytes/day, end of life {}",
                s.bytes_per_day,
                output::opt_time(s.predicted_end_of_life)
            ),
        ));
    }
    let mut out = output::key_values(&pairs);
    if !a.health.factors.is_empty() {
        out.push_str("\nfactors:\n");
        for f in &a.health.factors {
            out.push_str(&format!("  -{:<4.0} {}: {}\n", f.penalty, f.code, f.detail));
        }
    }
    if !r.anomalies.is_empty() {
        out.push_str("\nanomalies:\n");
        for x in &r.anomalies {
            out.push_str(&format!("  {}\n", x.message));
        }
    }
    for h in &r.hot_spots {
        out.push_str(&format!(
            "\nin hot spot {} ({:+.1} °C)\n",
            h.location,
            h.excess.get()
        ));
    }
    out
}

fn scope(s: &HealthScope) -> String {
    match s {
        HealthScope::Fleet => "fleet".into(),
        HealthScope::Site { site } => format!("site {site}"),
        HealthScope::Rack { site, rack } => format!("rack {site}/{rack}"),
        HealthScope::Group { group } => format!("group {group}"),
    }
}

fn fleet_text(r: &FleetAnalysisReport) -> String {
    if !r.analysed {
        return "The analyzer has not run yet.\n".into();
    }
    let mut t = Table::new(&["DEVICE", "SCORE", "HEALTH", "LOCATION", "FACTORS"]);
    for d in &r.devices {
        let loc = [&d.location.site, &d.location.rack, &d.location.shelf]
            .iter()
            .filter_map(|x| x.as_deref())
            .collect::<Vec<_>>()
            .join("/");
        t.row(vec![
            d.device.to_string(),
            format!("{:.0}", d.score),
            d.health.to_string(),
            if loc.is_empty() { "-".into() } else { loc },
            if d.factors.is_empty() {
                "-".into()
            } else {
                d.factors.join(",")
            },
        ]);
    }
    let mut g = Table::new(&["SCOPE", "DEVICES", "MEAN", "MIN", "WORST"]);
    for s in &r.groups {
        g.row(vec![
            scope(&s.scope),
            s.devices.to_string(),
            format!("{:.0}", s.mean_score),
            format!("{:.0}", s.min_score),
            s.worst_device.to_string(),
        ]);
    }
    format!(
        "Analysed at {}\n\n{}\n{}",
        output::time(r.at),
        t.render("No device with telemetry."),
        g.render("No scope.")
    )
}

fn hot_spot_table(items: &[HotSpot]) -> String {
    let mut t = Table::new(&["LOCATION", "EXCESS", "AMBIENT", "FLEET AMBIENT", "DEVICES"]);
    for h in items {
        t.row(vec![
            h.location.clone(),
            format!("{:+.1} °C", h.excess.get()),
            output::opt(h.ambient.map(|a| num(a.get(), " °C"))),
            output::opt(h.fleet_ambient.map(|a| num(a.get(), " °C"))),
            h.devices
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    t.render("No hot spots.")
}

pub(crate) async fn alert(ctx: &Ctx, cmd: AlertCmd) -> CliResult {
    match cmd {
        AlertCmd::Fleet => {
            let items = ctx.client.fleet_alerts().await?;
            if ctx.json {
                output::print(&output::json(&items)?);
                return Ok(());
            }
            let mut t = Table::new(&["KEY", "SEVERITY", "STATUS", "SINCE", "SILENCED", "MESSAGE"]);
            for a in &items {
                t.row(vec![
                    a.alert.key.clone(),
                    a.alert.severity.to_string(),
                    format!("{:?}", a.alert.status).to_lowercase(),
                    output::time(a.alert.first_seen),
                    if a.silenced_by.is_empty() {
                        "-".into()
                    } else {
                        a.silenced_by.join(",")
                    },
                    a.alert.message.clone(),
                ]);
            }
            output::print(&t.render("No open fleet alerts."));
        }
        AlertCmd::Silence(SilenceCmd::List) => {
            let items = ctx.client.list_silences().await?;
            if ctx.json {
                output::print(&output::json(&items)?);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "MATCHES", "FROM", "UNTIL", "COMMENT"]);
            for s in &items {
                let m = &s.matcher;
                let matches = [
                    m.rule.as_ref().map(|r| format!("rule={r}")),
                    m.device.as_ref().map(|d| format!("device={d}")),
                    m.key_prefix.as_ref().map(|k| format!("key^={k}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(",");
                t.row(vec![
                    s.id.clone(),
                    matches,
                    output::time(s.from),
                    output::time(s.until),
                    s.comment.clone(),
                ]);
            }
            output::print(&t.render("No silences."));
        }
        AlertCmd::Silence(SilenceCmd::Create {
            rule,
            device,
            key_prefix,
            duration,
            until,
            comment,
        }) => {
            if rule.is_none() && device.is_none() && key_prefix.is_none() {
                return Err(CliError::usage(
                    "a silence needs at least one of --rule, --device, --key-prefix",
                ));
            }
            if duration.is_some() && until.is_some() {
                return Err(CliError::usage("give --for or --until, not both"));
            }
            let duration = match (&duration, until) {
                (None, None) => Some("1h".to_owned()),
                _ => duration,
            };
            let s = ctx
                .client
                .create_silence(&NewSilence {
                    rule,
                    device,
                    key_prefix,
                    duration,
                    until,
                    comment,
                })
                .await?;
            if ctx.json {
                output::print(&output::json(&s)?);
            } else {
                eprintln!("Created silence {} until {}.", s.id, output::time(s.until));
            }
        }
        AlertCmd::Silence(SilenceCmd::Delete { id }) => {
            ctx.client.delete_silence(&id).await?;
            if ctx.json {
                output::print(&output::json(&serde_json::json!({"deleted": id}))?);
            } else {
                eprintln!("Deleted silence {id}.");
            }
        }
        AlertCmd::DeadLetters { delete: Some(id) } => {
            ctx.client.delete_dead_letter(id).await?;
            if ctx.json {
                output::print(&output::json(&serde_json::json!({"deleted": id}))?);
            } else {
                eprintln!("Deleted dead letter {id}.");
            }
        }
        AlertCmd::DeadLetters { delete: None } => {
            let items = ctx.client.dead_letters().await?;
            if ctx.json {
                output::print(&output::json(&items)?);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "WEBHOOK", "ALERT", "KIND", "ATTEMPTS", "LAST"]);
            for d in &items {
                t.row(vec![
                    d.id.to_string(),
                    d.webhook.clone(),
                    d.notification.alert.key.clone(),
                    format!("{:?}", d.notification.kind).to_lowercase(),
                    d.attempts.len().to_string(),
                    d.attempts
                        .last()
                        .map_or("-".into(), |a| format!("{:?}", a.outcome)),
                ]);
            }
            output::print(&t.render("No dead letters."));
        }
        AlertCmd::List { .. } | AlertCmd::Ack { .. } | AlertCmd::Clear { .. } => {}
    }
    Ok(())
}
