//! `wrale telemetry`: one metric of a device, or aggregated across a group, over
//! a time range (fleetd's telemetry query routes).

use std::time::SystemTime;

use wrale_client::models::{Aggregate, DeviceTelemetry, GroupTelemetry, Points, TelemetryQuery};
use wrale_core::Timestamp;

use super::Ctx;
use crate::args::{Since, TelemetryArgs};
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// The query of the arguments at `now`: `--since` as a duration counts back from
/// `--until` (or now).
fn query(a: &TelemetryArgs, now: Timestamp) -> CliResult<TelemetryQuery> {
    if a.agg.is_some() && a.group.is_none() {
        return Err(CliError::usage(
            "--agg aggregates across a group: it needs --group",
        ));
    }
    let to = a.until;
    let from = match a.since {
        None => None,
        Some(Since::At(t)) => Some(t),
        Some(Since::Ago(d)) => {
            let end = to.unwrap_or(now).to_system();
            let start = end.checked_sub(d).ok_or_else(|| {
                CliError::usage(format!(
                    "--since {}: reaches before 1970",
                    humantime::format_duration(d)
                ))
            })?;
            Some(Timestamp::from_system(start))
        }
    };
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(CliError::usage(format!(
                "--since ({}) must be before --until ({})",
                output::time(f),
                output::time(t)
            )));
        }
    }
    let mut q = TelemetryQuery::new(a.metric.clone()).resolution(a.resolution);
    q.from = from;
    q.to = to;
    q.agg = a.agg;
    Ok(q)
}

fn number(v: f64) -> String {
    format!("{v:.2}")
}

fn device_table(t: &DeviceTelemetry) -> String {
    let head = format!(
        "{} {} ({}), {} to {}: {} points\n",
        t.device,
        t.metric,
        t.resolution.as_str(),
        output::time(t.from),
        output::time(t.to),
        t.points.len()
    );
    let body = match &t.points {
        Points::Raw(points) => {
            let mut table = Table::new(&["TIME", "VALUE"]);
            for p in points {
                table.row(vec![output::time(p.t), number(p.value)]);
            }
            table.render("No data in this range.")
        }
        Points::Buckets(buckets) => {
            let mut table = Table::new(&["TIME", "MIN", "AVG", "MAX", "SAMPLES"]);
            for b in buckets {
                table.row(vec![
                    output::time(b.t),
                    number(b.min),
                    number(b.avg),
                    number(b.max),
                    b.count.to_string(),
                ]);
            }
            table.render("No data in this range.")
        }
    };
    head + &body
}

fn group_table(t: &GroupTelemetry) -> String {
    let head = format!(
        "group {} ({} devices) {} {} ({}), {} to {}: {} points\n",
        t.group,
        t.devices.len(),
        t.metric,
        t.agg.as_str(),
        t.resolution.as_str(),
        output::time(t.from),
        output::time(t.to),
        t.points.len()
    );
    let mut table = Table::new(&["TIME", agg_header(t.agg), "DEVICES"]);
    for p in &t.points {
        table.row(vec![
            output::time(p.t),
            number(p.value),
            p.devices.to_string(),
        ]);
    }
    head + &table.render("No data in this range.")
}

/// An aggregate's column header.
fn agg_header(a: Aggregate) -> &'static str {
    match a {
        Aggregate::Avg => "AVG",
        Aggregate::Min => "MIN",
        Aggregate::Max => "MAX",
    }
}

pub(crate) async fn run(ctx: &Ctx, a: TelemetryArgs) -> CliResult {
    let q = query(&a, Timestamp::from_system(SystemTime::now()))?;
    match (&a.device, &a.group) {
        (Some(id), None) => {
            let t = ctx.client.device_telemetry(id, &q).await?;
            if ctx.json {
                output::print(&output::json(&t)?);
            } else {
                output::print(&device_table(&t));
            }
        }
        (None, Some(g)) => {
            let t = ctx.client.group_telemetry(g, &q).await?;
            if ctx.json {
                output::print(&output::json(&t)?);
            } else {
                output::print(&group_table(&t));
            }
        }
        // clap requires exactly one of them.
        _ => return Err(CliError::usage("give a device id or --group, not both")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use wrale_client::models::Resolution;

    fn args(since: Option<Since>, until: Option<Timestamp>) -> TelemetryArgs {
        TelemetryArgs {
            device: Some("pi-1".into()),
            group: None,
            metric: "cpu_temp_c".into(),
            since,
            until,
            resolution: Resolution::Auto,
            agg: None,
        }
    }

    #[test]
    fn since_counts_back_from_until_or_now() {
        let now = Timestamp::from_secs(1_800_000_000);
        let q = query(&args(Some(Since::Ago(Duration::from_secs(600))), None), now).unwrap();
        assert_eq!(q.from, Some(Timestamp::from_secs(1_800_000_000 - 600)));
        assert_eq!(q.to, None, "the server's now");
        let until = Timestamp::from_secs(1_700_000_000);
        let q = query(
            &args(Some(Since::Ago(Duration::from_secs(60))), Some(until)),
            now,
        )
        .unwrap();
        assert_eq!(q.from, Some(Timestamp::from_secs(1_700_000_000 - 60)));
        assert_eq!(q.to, Some(until));
    }

    #[test]
    fn agg_needs_a_group() {
        let mut a = args(None, None);
        a.agg = Some(Aggregate::Max);
        let e = query(&a, Timestamp::from_secs(1_800_000_000)).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        a.device = None;
        a.group = Some("lab".into());
        assert_eq!(
            query(&a, Timestamp::from_secs(1_800_000_000)).unwrap().agg,
            Some(Aggregate::Max)
        );
    }

    #[test]
    fn since_after_until_is_a_usage_error() {
        let now = Timestamp::from_secs(1_800_000_000);
        let e = query(
            &args(
                Some(Since::At(Timestamp::from_secs(1_800_000_100))),
                Some(Timestamp::from_secs(1_800_000_000)),
            ),
            now,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.message.contains("--since"), "{e}");
    }
}
