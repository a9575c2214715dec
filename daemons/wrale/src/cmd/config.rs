//! `wrale config get|set|apply`.

use std::path::Path;

use serde_json::{Map, Value};
use wrale_client::models::{ConfigScope, DeviceId, EffectiveConfig, GroupId, JsonMap};

use super::{Ctx, json_value};
use crate::args::{ConfigCmd, ScopeArgs};
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

pub(crate) fn scope(a: &ScopeArgs) -> CliResult<ConfigScope> {
    let usage = |e: wrale_core::model::InvalidId| CliError::usage(e.to_string());
    Ok(match (&a.group, &a.device) {
        (Some(g), _) => ConfigScope::Group(GroupId::new(g.clone()).map_err(usage)?),
        (None, Some(d)) => ConfigScope::Device(DeviceId::new(d.clone()).map_err(usage)?),
        (None, None) => ConfigScope::Fleet,
    })
}

fn layer_table(layer: &JsonMap) -> String {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for (k, v) in layer {
        t.row(vec![k.clone(), output::cell(v)]);
    }
    t.render("No fields.")
}

fn effective_table(e: &EffectiveConfig) -> String {
    let mut t = Table::new(&["FIELD", "VALUE", "LAYER"]);
    for (k, f) in &e.fields {
        t.row(vec![k.clone(), output::cell(&f.value), f.layer.clone()]);
    }
    t.render("No fields.")
}

/// The body of `config set`: the fields, plus `null` for each `--unset`.
pub(crate) fn patch_body(fields: &[(String, String)], unset: &[String]) -> CliResult<JsonMap> {
    let mut m = Map::new();
    for (k, v) in fields {
        m.insert(k.clone(), json_value(v));
    }
    for k in unset {
        if m.contains_key(k) {
            return Err(CliError::usage(format!("{k} is both set and unset")));
        }
        m.insert(k.clone(), Value::Null);
    }
    if m.is_empty() {
        return Err(CliError::usage(
            "nothing to set: pass KEY=VALUE or --unset KEY",
        ));
    }
    Ok(m)
}

/// Flattens nested objects into dotted keys (`{gpio: {17: true}}` -> `gpio.17`),
/// since layers are flat maps of desired fields.
fn flatten(prefix: &str, value: Value, out: &mut JsonMap) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other);
        }
    }
}

/// Reads a layer from a TOML or JSON file (by extension; `-` is JSON on stdin;
/// anything else is tried as JSON, then TOML).
pub(crate) fn read_layer(path: &Path) -> CliResult<JsonMap> {
    let (text, name) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CliError::failure("io", format!("cannot read standard input: {e}")))?;
        (s, "standard input".to_owned())
    } else {
        let s = std::fs::read_to_string(path)
            .map_err(|e| CliError::failure("io", format!("cannot read {}: {e}", path.display())))?;
        (s, path.display().to_string())
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let bad = |e: String| CliError::usage(format!("{name}: {e}"));
    let value: Value = match ext {
        "toml" => toml::from_str::<Value>(&text).map_err(|e| bad(e.to_string()))?,
        "json" => serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?,
        _ => match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => toml::from_str::<Value>(&text)
                .map_err(|e| bad(format!("neither JSON nor TOML: {e}")))?,
        },
    };
    if !value.is_object() {
        return Err(bad("a config layer must be a table/object of fields".into()));
    }
    let mut out = Map::new();
    flatten("", value, &mut out);
    Ok(out)
}

/// Prints a layer answer (`{scope, fields, ...}`): its fields.
fn print_layer(ctx: &Ctx, scope: &ConfigScope, answer: &JsonMap) -> CliResult {
    let empty = JsonMap::new();
    let layer = match answer.get("fields") {
        Some(Value::Object(fields)) => fields,
        _ => &empty,
    };
    if ctx.json {
        output::print(&output::json(layer)?);
    } else {
        output::print(&format!("Config layer: {scope}\n{}", layer_table(layer)));
    }
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, cmd: ConfigCmd) -> CliResult {
    match cmd {
        ConfigCmd::Get {
            scope: s,
            effective,
        } => {
            if effective {
                let device = s.device.as_deref().unwrap_or_default();
                let e = ctx.client.effective_config(device).await?;
                if ctx.json {
                    output::print(&output::json(&e)?);
                } else {
                    output::print(&effective_table(&e));
                }
                return Ok(());
            }
            let sc = scope(&s)?;
            let layer = ctx.client.get_config(&sc).await?;
            print_layer(ctx, &sc, &layer)
        }
        ConfigCmd::Set {
            scope: s,
            fields,
            unset,
        } => {
            let sc = scope(&s)?;
            let body = patch_body(&fields, &unset)?;
            let layer = ctx.client.patch_config(&sc, &body).await?;
            print_layer(ctx, &sc, &layer)
        }
        ConfigCmd::Apply { scope: s, file } => {
            let sc = scope(&s)?;
            let body = read_layer(&file)?;
            let layer = ctx.client.put_config(&sc, &body).await?;
            print_layer(ctx, &sc, &layer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_tables_become_dotted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.toml");
        std::fs::write(
            &p,
            "fan_profile = \"cool\"\nwarn_c = 65\n\"gpio.17\" = true\n[workload]\ncam = true\n",
        )
        .unwrap();
        let layer = read_layer(&p).unwrap();
        assert_eq!(
            Value::Object(layer),
            serde_json::json!({"fan_profile": "cool", "warn_c": 65, "gpio.17": true, "workload.cam": true})
        );
        let j = dir.path().join("lab.json");
        std::fs::write(&j, r#"{"warn_c": 60}"#).unwrap();
        assert_eq!(read_layer(&j).unwrap()["warn_c"], 60);
        std::fs::write(&j, "[1]").unwrap();
        assert_eq!(read_layer(&j).unwrap_err().exit_code(), 2);
        std::fs::write(&j, "{oops").unwrap();
        let e = read_layer(&j).unwrap_err();
        assert!(e.message.contains("lab.json"), "{e}");
        assert_eq!(
            read_layer(&dir.path().join("none.toml"))
                .unwrap_err()
                .exit_code(),
            1
        );
    }

    #[test]
    fn set_body_and_scopes() {
        let b = patch_body(&[("warn_c".into(), "65".into())], &["fan_profile".into()]).unwrap();
        assert_eq!(
            Value::Object(b),
            serde_json::json!({"warn_c": 65, "fan_profile": null})
        );
        assert!(patch_body(&[], &[]).is_err());
        assert!(patch_body(&[("a".into(), "1".into())], &["a".into()]).is_err());
        assert_eq!(scope(&ScopeArgs::default()).unwrap(), ConfigScope::Fleet);
        let s = ScopeArgs {
            group: Some("Lab!".into()),
            device: None,
        };
        assert_eq!(scope(&s).unwrap_err().exit_code(), 2);
    }
}
