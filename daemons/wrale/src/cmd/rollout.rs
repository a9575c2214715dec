//! `wrale rollout ...`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::workload::show;
use super::{Ctx, json_value};
use crate::args::{RolloutCmd, RolloutCreateArgs};
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

fn body(a: &RolloutCreateArgs) -> CliResult<Value> {
    let mut change = Map::new();
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--set {kv:?} is not KEY=VALUE")))?;
        change.insert(k.to_owned(), json_value(v));
    }
    let canary = match (&a.canary_percent, a.canary.is_empty()) {
        (Some(p), _) => json!({"kind": "percent", "percent": p}),
        (None, false) => json!({"kind": "devices", "devices": a.canary}),
        (None, true) => {
            return Err(CliError::usage(
                "give --canary DEVICE or --canary-percent N",
            ));
        }
    };
    let waves = if a.by_rack {
        json!({"kind": "by_rack"})
    } else {
        json!({"kind": "by_size", "size": a.wave_size.unwrap_or(10)})
    };
    let mut b = json!({
        "change": change,
        "canary": canary,
        "waves": waves,
        "soak": a.soak,
        "auto_rollback": a.auto_rollback,
    });
    if let Some(id) = &a.id {
        b["id"] = json!(id);
    }
    match (&a.group, a.devices.is_empty()) {
        (Some(g), _) => b["group"] = json!(g),
        (None, false) => b["devices"] = json!(a.devices),
        (None, true) => {
            return Err(CliError::usage(
                "give --device DEVICE (repeatable) or --group GROUP",
            ));
        }
    }
    let mut gates = Map::new();
    if let Some(m) = a.health_margin {
        gates.insert("health_margin".into(), json!(m));
    }
    if let Some(t) = &a.apply_timeout {
        gates.insert("apply_timeout".into(), json!(t));
    }
    if !gates.is_empty() {
        b["gates"] = Value::Object(gates);
    }
    Ok(b)
}

fn progress_line(r: &Value) -> String {
    let p = &r["progress"];
    format!(
        "{} {}: wave {}/{} passed, {}/{} devices changed",
        output::cell(&r["id"]),
        output::cell(&r["status"]),
        output::cell(&p["waves_passed"]),
        output::cell(&p["waves"]),
        output::cell(&p["devices_changed"]),
        output::cell(&p["devices"]),
    )
}

fn detail(r: &Value) -> String {
    let mut s = format!("{}\nchange: {}\n", progress_line(r), r["change"]);
    let mut t = Table::new(&["WAVE", "STATUS", "DEVICES", "SOAK UNTIL"]);
    for w in r["waves"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let devs: Vec<String> = w["devices"]
            .as_array()
            .map(|d| d.iter().map(output::cell).collect())
            .unwrap_or_default();
        t.row(vec![
            output::cell(&w["index"]),
            output::cell(&w["status"]),
            devs.join(","),
            output::cell(&w["soak_until"]),
        ]);
    }
    s.push_str(&t.render("No waves."));
    for f in r["failures"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        s.push_str(&format!(
            "gate failed: {} {}: {}\n",
            output::cell(&f["device"]),
            output::cell(&f["gate"]),
            output::cell(&f["detail"])
        ));
    }
    if let Some(rb) = r["rolled_back"].as_array().filter(|a| !a.is_empty()) {
        let d: Vec<String> = rb.iter().map(output::cell).collect();
        s.push_str(&format!("rolled back: {}\n", d.join(",")));
    }
    s
}

pub(crate) async fn run(ctx: &Ctx, cmd: RolloutCmd) -> CliResult {
    match cmd {
        RolloutCmd::Create(a) => {
            let v = ctx.client.create_rollout(&body(&a)?).await?;
            show(ctx, &v, detail)
        }
        RolloutCmd::List { status } => {
            let v = ctx.client.list_rollouts(status.as_deref()).await?;
            show(ctx, &v, |v| {
                let mut t = Table::new(&["ID", "STATUS", "WAVES", "DEVICES", "BY"]);
                for r in v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    let p = &r["progress"];
                    t.row(vec![
                        output::cell(&r["id"]),
                        output::cell(&r["status"]),
                        format!(
                            "{}/{}",
                            output::cell(&p["waves_passed"]),
                            output::cell(&p["waves"])
                        ),
                        format!(
                            "{}/{}",
                            output::cell(&p["devices_changed"]),
                            output::cell(&p["devices"])
                        ),
                        output::cell(&r["created_by"]),
                    ]);
                }
                t.render("No rollouts.")
            })
        }
        RolloutCmd::Show { id } => {
            let v = ctx.client.get_rollout(&id).await?;
            show(ctx, &v, detail)
        }
        RolloutCmd::Watch { id, interval } => {
            if !(interval.is_finite() && interval > 0.0) {
                return Err(CliError::usage(
                    "--interval must be a positive number of seconds",
                ));
            }
            let mut last = String::new();
            loop {
                let v = ctx.client.get_rollout(&id).await?;
                let line = if ctx.json {
                    output::json_line(&v)?
                } else {
                    format!("{}\n", progress_line(&v))
                };
                if line != last {
                    output::print(&line);
                    last = line;
                }
                match v["status"].as_str() {
                    Some("running") => {}
                    Some("completed") => return Ok(()),
                    other => {
                        if !ctx.json {
                            output::print(&detail(&v));
                        }
                        return Err(CliError::failure(
                            "rollout_stopped",
                            format!("rollout {id} is {}", other.unwrap_or("unknown")),
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_secs_f64(interval)).await;
            }
        }
        RolloutCmd::Pause { id } => op(ctx, &id, "pause").await,
        RolloutCmd::Resume { id } => op(ctx, &id, "resume").await,
        RolloutCmd::Abort { id } => op(ctx, &id, "abort").await,
        RolloutCmd::Rollback { id } => op(ctx, &id, "rollback").await,
    }
}

async fn op(ctx: &Ctx, id: &str, what: &str) -> CliResult {
    let v = ctx.client.rollout_op(id, what).await?;
    show(ctx, &v, detail)
}
