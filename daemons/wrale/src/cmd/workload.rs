//! `wrale workload ...`, `wrale placement ...`, `wrale recommend ...`.

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::args::{PlacementCmd, RecommendCmd, WorkloadCmd, WorkloadCreateArgs};
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// Prints `v` as JSON or as `text(v)`.
pub(super) fn show(ctx: &Ctx, v: &Value, text: impl FnOnce(&Value) -> String) -> CliResult {
    if ctx.json {
        output::print(&output::json(v)?);
    } else {
        output::print(&text(v));
    }
    Ok(())
}

fn items(v: &Value) -> &[Value] {
    v["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// `KEY=VALUE` pairs into a map of strings.
fn pairs(raw: &[String]) -> CliResult<Map<String, Value>> {
    raw.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .ok_or_else(|| CliError::usage(format!("{kv:?} is not KEY=VALUE")))
        })
        .collect()
}

fn workload_body(a: &WorkloadCreateArgs) -> CliResult<Value> {
    let mut w = json!({
        "name": a.name,
        "cpu_pct": a.cpu,
        "power_w": a.power,
        "replicas": a.replicas,
        "priority": a.priority,
        "constraints": {
            "labels": pairs(&a.labels)?,
            "models": a.models,
            "anti_affinity": a.anti_affinity,
            "spread_racks": a.spread_racks,
        },
    });
    if let Some(c) = &a.command {
        w["command"] = json!(c);
    }
    Ok(w)
}

fn decisions_text(ds: &Value) -> String {
    let mut out = String::new();
    for d in ds.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        out.push_str(&format!(
            "{}/{} {}: {}\n",
            output::cell(&d["workload"]),
            output::cell(&d["replica"]),
            output::cell(&d["action"]["kind"]),
            output::cell(&d["reason"])
        ));
    }
    out
}

pub(crate) async fn workload(ctx: &Ctx, cmd: WorkloadCmd) -> CliResult {
    match cmd {
        WorkloadCmd::List => {
            let v = ctx.client.list_workloads().await?;
            show(ctx, &v, |v| {
                let mut t = Table::new(&["NAME", "CPU %", "POWER W", "REPLICAS", "PRIORITY", "BY"]);
                for w in items(v) {
                    t.row(vec![
                        output::cell(&w["name"]),
                        output::cell(&w["cpu_pct"]),
                        output::cell(&w["power_w"]),
                        output::cell(&w["replicas"]),
                        output::cell(&w["priority"]),
                        output::cell(&w["created_by"]),
                    ]);
                }
                t.render("No workloads.")
            })
        }
        WorkloadCmd::Create(a) => {
            let v = ctx.client.create_workload(&workload_body(&a)?).await?;
            show(ctx, &v, |v| {
                let mut s = format!("Declared workload {}.\n", a.name);
                for p in v["placements"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    s.push_str(&format!(
                        "{}/{} on {}: {}\n",
                        output::cell(&p["workload"]),
                        output::cell(&p["replica"]),
                        output::cell(&p["device"]),
                        output::cell(&p["decision"]["reason"])
                    ));
                }
                s.push_str(&decisions_text(&v["pending"]));
                s
            })
        }
        WorkloadCmd::Delete { name } => {
            let v = ctx.client.delete_workload(&name).await?;
            show(ctx, &v, |v| {
                format!(
                    "Deleted workload {name}.\n{}",
                    decisions_text(&v["decisions"])
                )
            })
        }
    }
}

pub(crate) async fn placement(ctx: &Ctx, cmd: PlacementCmd) -> CliResult {
    let PlacementCmd::List { workload, device } = cmd;
    let v = ctx
        .client
        .list_placements(workload.as_deref(), device.as_deref())
        .await?;
    show(ctx, &v, |v| {
        let mut t = Table::new(&["WORKLOAD", "REPLICA", "DEVICE", "SINCE", "WHY"]);
        for p in items(v) {
            t.row(vec![
                output::cell(&p["workload"]),
                output::cell(&p["replica"]),
                output::cell(&p["device"]),
                output::cell(&p["since"]),
                output::cell(&p["decision"]["reason"]),
            ]);
        }
        let mut s = t.render("No placements.");
        for d in v["pending"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            s.push_str(&format!(
                "pending {}/{}: {}\n",
                output::cell(&d["workload"]),
                output::cell(&d["replica"]),
                output::cell(&d["reason"])
            ));
        }
        s
    })
}

pub(crate) async fn recommend(ctx: &Ctx, cmd: RecommendCmd) -> CliResult {
    match cmd {
        RecommendCmd::List => {
            let v = ctx.client.list_recommendations().await?;
            show(ctx, &v, |v| {
                let mut t = Table::new(&["ID", "KIND", "AUTO", "WHY"]);
                for r in items(v) {
                    t.row(vec![
                        output::cell(&r["id"]),
                        output::cell(&r["kind"]),
                        output::cell(&r["auto_apply"]),
                        output::cell(&r["detail"]["reason"]),
                    ]);
                }
                let e = &v["expected"];
                format!(
                    "{}Expected: peak {} -> {} °C, power {} -> {} W\n",
                    t.render("No recommendations."),
                    output::cell(&e["peak_temp_before_c"]),
                    output::cell(&e["peak_temp_after_c"]),
                    output::cell(&e["total_power_before_w"]),
                    output::cell(&e["total_power_after_w"]),
                )
            })
        }
        RecommendCmd::Accept { id } => {
            let v = ctx.client.accept_recommendation(&id).await?;
            show(ctx, &v, |_| format!("Applied recommendation {id}.\n"))
        }
    }
}
