//! `wrale device ...`.

use serde_json::{Map, Value};
use wrale_client::models::{
    Command, CommandOutcome, CommandStatus, Device, DeviceFilter, DevicePatch, GroupId, Twin,
};

use super::{Ctx, json_value};
use crate::args::{DeviceCmd, DeviceCommandArgs, DeviceListArgs, DeviceSetArgs};
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};
use crate::progress::with_progress;

pub(crate) async fn run(ctx: &Ctx, cmd: DeviceCmd) -> CliResult {
    match cmd {
        DeviceCmd::List(a) => list(ctx, a).await,
        DeviceCmd::Show { id, twin } => show(ctx, &id, twin).await,
        DeviceCmd::Set(a) => set(ctx, a).await,
        DeviceCmd::History { id } => history(ctx, &id).await,
        DeviceCmd::Rollback { id, version } => rollback(ctx, &id, &version).await,
        DeviceCmd::Command(a) => command(ctx, a).await,
        DeviceCmd::Diag { id, reason } => diag(ctx, &id, reason).await,
    }
}

pub(crate) fn filter(a: &DeviceListArgs) -> DeviceFilter {
    DeviceFilter {
        labels: a.labels.clone(),
        group: a.group.clone(),
        site: a.site.clone(),
        rack: a.rack.clone(),
        shelf: a.shelf.clone(),
        model: a.model.clone(),
        status: a.status.clone(),
        health: a.health.clone(),
        limit: a.limit,
        cursor: a.cursor.clone(),
    }
}

pub(crate) fn device_table(devices: &[Device]) -> String {
    let mut t = Table::new(&[
        "ID", "MODEL", "STATUS", "HEALTH", "GROUP", "LOCATION", "LABELS",
    ]);
    for d in devices {
        t.row(vec![
            d.id.to_string(),
            d.model.to_string(),
            d.status.to_string(),
            d.health.to_string(),
            output::opt(d.group.as_ref()),
            d.location.to_string(),
            output::labels(&d.labels),
        ]);
    }
    t.render("No devices.")
}

async fn list(ctx: &Ctx, a: DeviceListArgs) -> CliResult {
    let f = filter(&a);
    let (devices, next) = if a.limit.is_some() {
        let page = ctx.client.list_devices(&f).await?;
        (page.items, page.next_cursor)
    } else {
        (ctx.client.list_all_devices(&f).await?, None)
    };
    if ctx.json {
        output::print(&output::json(&devices)?);
    } else {
        output::print(&device_table(&devices));
    }
    if let Some(c) = next {
        eprintln!("More devices: --cursor {c}");
    }
    Ok(())
}

fn device_block(d: &Device) -> String {
    output::key_values(&[
        ("id", d.id.to_string()),
        ("model", d.model.to_string()),
        ("serial", output::opt(d.serial.as_deref())),
        ("status", d.status.to_string()),
        ("health", d.health.to_string()),
        ("group", output::opt(d.group.as_ref())),
        ("location", d.location.to_string()),
        ("labels", output::labels(&d.labels)),
        ("enrolled", output::time(d.enrolled_at)),
        ("last seen", output::opt_time(d.last_seen)),
        ("agent", output::opt(d.agent_version.as_deref())),
    ])
}

fn fields_table(title: &str, map: &Map<String, Value>) -> String {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for (k, v) in map {
        t.row(vec![k.clone(), output::cell(v)]);
    }
    format!("\n{title}:\n{}", t.render("  (empty)"))
}

fn twin_block(t: &Twin) -> String {
    let mut s = output::key_values(&[
        ("version", t.version.join(",")),
        ("epoch", t.epoch.to_string()),
        ("conflicts", t.conflicts.len().to_string()),
    ]);
    s.push_str(&fields_table("desired", &t.desired));
    s.push_str(&fields_table("reported", &t.reported));
    s
}

async fn show(ctx: &Ctx, id: &str, with_twin: bool) -> CliResult {
    let device = ctx.client.get_device(id).await?;
    let twin = if with_twin {
        Some(ctx.client.get_twin(id).await?)
    } else {
        None
    };
    if ctx.json {
        let mut v = serde_json::to_value(&device)
            .map_err(|e| CliError::failure("internal", e.to_string()))?;
        if let (Some(t), Some(obj)) = (&twin, v.as_object_mut()) {
            obj.insert(
                "twin".into(),
                serde_json::to_value(t)
                    .map_err(|e| CliError::failure("internal", e.to_string()))?,
            );
        }
        output::print(&output::json(&v)?);
    } else {
        let mut s = device_block(&device);
        if let Some(t) = &twin {
            s.push_str("\ntwin:\n");
            s.push_str(&twin_block(t));
        }
        output::print(&s);
    }
    Ok(())
}

/// The patch for `wrale device set`: labels are merged into the current ones.
pub(crate) fn build_patch(current: &Device, a: &DeviceSetArgs) -> CliResult<DevicePatch> {
    let mut patch = DevicePatch::default();
    if !a.labels.is_empty() || !a.unlabels.is_empty() {
        let mut labels = current.labels.clone();
        for k in &a.unlabels {
            labels.remove(k);
        }
        for (k, v) in &a.labels {
            labels.insert(k.clone(), v.clone());
        }
        patch.labels = Some(labels);
    }
    if a.site.is_some() || a.rack.is_some() || a.shelf.is_some() || a.slot.is_some() {
        let mut loc = current.location.clone();
        let set = |field: &mut Option<String>, v: &Option<String>| {
            if let Some(v) = v {
                *field = if v.is_empty() { None } else { Some(v.clone()) };
            }
        };
        set(&mut loc.site, &a.site);
        set(&mut loc.rack, &a.rack);
        set(&mut loc.shelf, &a.shelf);
        set(&mut loc.slot, &a.slot);
        patch.location = Some(loc);
    }
    if let Some(g) = &a.group {
        // `--group ''` takes the device out of its group.
        patch.group = Some(if g.is_empty() {
            None
        } else {
            Some(GroupId::new(g.clone()).map_err(|e| CliError::usage(e.to_string()))?)
        });
    }
    if patch == DevicePatch::default() {
        return Err(CliError::usage(
            "nothing to change: pass --label, --unlabel, --group, --site, --rack, --shelf or --slot",
        ));
    }
    Ok(patch)
}

async fn set(ctx: &Ctx, a: DeviceSetArgs) -> CliResult {
    let current = ctx.client.get_device(&a.id).await?;
    let patch = build_patch(&current, &a)?;
    let device = ctx.client.update_device(&a.id, &patch).await?;
    if ctx.json {
        output::print(&output::json(&device)?);
    } else {
        output::print(&device_block(&device));
    }
    Ok(())
}

async fn history(ctx: &Ctx, id: &str) -> CliResult {
    let versions = ctx.client.twin_history(id).await?;
    if ctx.json {
        output::print(&output::json(&versions)?);
        return Ok(());
    }
    let mut t = Table::new(&["TIME", "AUTHOR", "VERSION", "FIELDS"]);
    for v in &versions {
        t.row(vec![
            output::time(v.time),
            v.author.clone(),
            version_text(&v.version),
            if v.fields.is_empty() {
                v.summary.clone()
            } else {
                v.fields.join(",")
            },
        ]);
    }
    output::print(&t.render("No history."));
    Ok(())
}

/// A version as typed on the command line: heads joined by commas.
fn version_text(v: &Value) -> String {
    match v {
        Value::Array(heads) => heads.iter().map(output::cell).collect::<Vec<_>>().join(","),
        other => output::cell(other),
    }
}

/// The version to send: a list of heads when given with commas (as history shows
/// it), JSON when it is JSON, else the string.
pub(crate) fn version_value(raw: &str) -> Value {
    if raw.trim_start().starts_with('[') {
        return json_value(raw);
    }
    if raw.contains(',') {
        return Value::Array(
            raw.split(',')
                .map(|h| Value::String(h.trim().to_owned()))
                .collect(),
        );
    }
    Value::String(raw.to_owned())
}

async fn rollback(ctx: &Ctx, id: &str, version: &str) -> CliResult {
    let out = ctx.client.rollback(id, version_value(version)).await?;
    if ctx.json {
        output::print(&output::json(&out)?);
    } else {
        eprintln!("Rolled {id} back to {version}.");
    }
    Ok(())
}

/// Builds a typed command from `TYPE KEY=VALUE...`, checked by wrale-core's serde.
pub(crate) fn build_command(kind: &str, args: &[(String, String)]) -> CliResult<Command> {
    let mut obj = Map::new();
    obj.insert("type".into(), Value::String(kind.to_owned()));
    for (k, v) in args {
        obj.insert(k.clone(), json_value(v));
    }
    serde_json::from_value(Value::Object(obj))
        .map_err(|e| CliError::usage(format!("invalid command {kind}: {e}")))
}

fn outcome_text(id: &str, o: &CommandOutcome) -> String {
    let mut s = format!("{id}: command {} {}", o.id, o.status);
    if let Some(code) = &o.code {
        s.push_str(&format!(" ({code})"));
    }
    if let Some(m) = &o.message {
        s.push_str(&format!(": {m}"));
    }
    s.push('\n');
    if let Some(r) = &o.result {
        if let Ok(pretty) = serde_json::to_string_pretty(r) {
            s.push_str(&pretty);
            s.push('\n');
        }
    }
    s
}

/// Prints an outcome; a refused or failed command is exit 1.
fn finish(ctx: &Ctx, id: &str, o: &CommandOutcome) -> CliResult {
    if ctx.json {
        output::print(&output::json(o)?);
    } else {
        output::print(&outcome_text(id, o));
    }
    match o.status {
        CommandStatus::Done | CommandStatus::Pending => Ok(()),
        CommandStatus::Refused | CommandStatus::Failed => Err(CliError::failure(
            o.code.as_deref().unwrap_or(match o.status {
                CommandStatus::Refused => "refused",
                _ => "failed",
            }),
            format!(
                "{id} {} the command: {}",
                if o.status == CommandStatus::Refused {
                    "refused"
                } else {
                    "failed"
                },
                o.message.as_deref().unwrap_or("no reason given")
            ),
        )),
    }
}

async fn command(ctx: &Ctx, a: DeviceCommandArgs) -> CliResult {
    let cmd = build_command(&a.kind, &a.args)?;
    let what = format!("waiting for {} to run {}", a.id, cmd.kind());
    let outcome = with_progress(&what, ctx.client.send_command(&a.id, cmd, a.reason)).await?;
    finish(ctx, &a.id, &outcome)
}

async fn diag(ctx: &Ctx, id: &str, reason: String) -> CliResult {
    let what = format!("running diagnostics on {id}");
    let outcome = with_progress(
        &what,
        ctx.client.send_command(id, Command::RunDiagnostics, reason),
    )
    .await?;
    finish(ctx, id, &outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use wrale_client::models::{BoardModel, DeviceId, DeviceStatus, Health, Location, Timestamp};

    fn device() -> Device {
        Device {
            id: DeviceId::new("pi-1").unwrap(),
            model: BoardModel::Pi4B,
            serial: None,
            labels: BTreeMap::from([("role".into(), "cam".into()), ("tier".into(), "a".into())]),
            location: Location {
                site: Some("lab".into()),
                rack: Some("r1".into()),
                shelf: None,
                slot: None,
            },
            group: None,
            status: DeviceStatus::Online,
            health: Health::Unknown,
            revoked: false,
            enrolled_at: Timestamp::from_secs(0),
            last_seen: None,
            agent_version: None,
        }
    }

    fn set_args(extra: &[&str]) -> DeviceSetArgs {
        use clap::Parser;
        let mut argv = vec!["wrale", "device", "set", "pi-1"];
        argv.extend_from_slice(extra);
        match crate::args::Cli::try_parse_from(argv).unwrap().command {
            crate::args::Command::Device(DeviceCmd::Set(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_merges_labels_and_location() {
        let p = build_patch(
            &device(),
            &set_args(&[
                "-l",
                "role=gw",
                "--unlabel",
                "tier",
                "--shelf",
                "2",
                "--rack",
                "",
            ]),
        )
        .unwrap();
        assert_eq!(
            p.labels,
            Some(BTreeMap::from([("role".into(), "gw".into())]))
        );
        let loc = p.location.unwrap();
        assert_eq!(loc.site.as_deref(), Some("lab"));
        assert_eq!(loc.rack, None);
        assert_eq!(loc.shelf.as_deref(), Some("2"));
        assert_eq!(p.group, None);
        let e = build_patch(&device(), &set_args(&[])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = build_patch(&device(), &set_args(&["--group", "Bad Group"])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn commands_are_checked_before_sending() {
        let c = build_command(
            "set_fan_duty",
            &[
                ("fan".into(), "fan0".into()),
                ("duty_pct".into(), "40".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.kind().as_str(), "set_fan_duty");
        assert_eq!(build_command("reboot", &[]).unwrap(), Command::Reboot);
        for (kind, args) in [
            ("explode", vec![]),
            ("set_fan_duty", vec![("fan".to_owned(), "fan0".to_owned())]),
            (
                "set_fan_duty",
                vec![
                    ("fan".to_owned(), "fan0".to_owned()),
                    ("duty_pct".to_owned(), "140".to_owned()),
                ],
            ),
        ] {
            let e = build_command(kind, &args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{kind}: {e}");
        }
    }

    #[test]
    fn versions_round_trip_from_history_text() {
        assert_eq!(version_value("ab12"), Value::String("ab12".into()));
        assert_eq!(version_value("ab,cd"), serde_json::json!(["ab", "cd"]));
        assert_eq!(version_value("[\"ab\"]"), serde_json::json!(["ab"]));
        assert_eq!(version_text(&serde_json::json!(["ab", "cd"])), "ab,cd");
    }

    #[test]
    fn device_table_shows_dashes_for_unknowns() {
        let out = device_table(&[device()]);
        assert_eq!(
            out,
            "ID    MODEL  STATUS  HEALTH   GROUP  LOCATION    LABELS\n\
             pi-1  pi4b   online  unknown  -      lab/r1/-/-  role=cam,tier=a\n"
        );
    }

    #[test]
    fn refusals_are_failures_with_the_rule() {
        let o = CommandOutcome {
            id: "c1".into(),
            status: CommandStatus::Refused,
            code: Some("fan_min_duty".into()),
            message: Some("duty below the curve".into()),
            result: None,
        };
        assert_eq!(
            outcome_text("pi-1", &o),
            "pi-1: command c1 refused (fan_min_duty): duty below the curve\n"
        );
    }
}
