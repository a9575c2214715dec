//! Custom conditions in CEL (the Common Expression Language, as in Kubernetes
//! validation policies), through the `cel-interpreter` crate.
//!
//! Expressions see the device's [`Facts`] as variables:
//!
//! | variable | type | meaning |
//! |---|---|---|
//! | `cpu_temp_c` | double or null | CPU temperature, null when untrusted |
//! | `supply_v` | double or null | supply voltage |
//! | `battery_pct` | double or null | battery level |
//! | `cpu_load_pct` | double or null | CPU load |
//! | `fan_duty_pct` | double | the duty the engine holds the fan at |
//! | `case_open`, `tamper`, `motion` | bool or null | security inputs |
//! | `under_voltage`, `on_battery`, `throttled` | bool | engine state |
//! | `hour_utc` | int | hour of day, UTC |
//! | `command` | string | for interlocks: the command kind (`set_gpio`); `""` otherwise |
//!
//! An expression that fails (a null in arithmetic, a type error) or does not yield a
//! bool has no value: a rule then changes nothing, an interlock then denies.

use cel_interpreter::{Context, Program, Value};
use std::fmt;
use std::sync::Arc;

use super::state::Facts;
use crate::model::CommandKind;

/// A compiled CEL expression with its source.
#[derive(Clone)]
pub(crate) struct Expr {
    source: String,
    program: Arc<Program>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Expr {
    /// Compiles `source`.
    pub(crate) fn new(source: &str) -> Result<Self, String> {
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(compile(source)?),
        })
    }

    /// Evaluates to a bool; `None` when the expression fails or is not a bool.
    pub(crate) fn eval(&self, facts: &Facts, command: Option<CommandKind>) -> Option<bool> {
        let mut ctx = Context::default();
        bind(&mut ctx, facts, command);
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }
}

/// Compiles a CEL expression; the error message is the parser's, one line.
pub(crate) fn compile(source: &str) -> Result<Program, String> {
    // The parser (an ANTLR port) can panic on some malformed input; a bad policy
    // file must be an error, never a crash of the safety daemon.
    let parsed = std::panic::catch_unwind(|| Program::compile(source));
    match parsed {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(format!(
            "invalid CEL expression: {}",
            e.to_string().replace('\n', " ")
        )),
        Err(_) => Err("invalid CEL expression: the parser rejected it".to_owned()),
    }
}

fn opt_f64(v: Option<f64>) -> Value {
    v.map(Value::Float).unwrap_or(Value::Null)
}

fn opt_bool(v: Option<bool>) -> Value {
    v.map(Value::Bool).unwrap_or(Value::Null)
}

fn bind(ctx: &mut Context<'_>, f: &Facts, command: Option<CommandKind>) {
    ctx.add_variable_from_value("cpu_temp_c", opt_f64(f.cpu_temp.map(|t| t.get())));
    ctx.add_variable_from_value("supply_v", opt_f64(f.supply_v.map(|v| v.get())));
    ctx.add_variable_from_value("battery_pct", opt_f64(f.battery.map(|b| b.get())));
    ctx.add_variable_from_value("cpu_load_pct", opt_f64(f.cpu_load.map(|b| b.get())));
    ctx.add_variable_from_value("fan_duty_pct", Value::Float(f.fan_duty.get()));
    ctx.add_variable_from_value("case_open", opt_bool(f.case_open));
    ctx.add_variable_from_value("tamper", opt_bool(f.tamper));
    ctx.add_variable_from_value("motion", opt_bool(f.motion));
    ctx.add_variable_from_value("under_voltage", Value::Bool(f.under_voltage));
    ctx.add_variable_from_value("on_battery", Value::Bool(f.on_battery));
    ctx.add_variable_from_value("throttled", Value::Bool(f.throttled));
    ctx.add_variable_from_value("hour_utc", Value::Int(i64::from(f.hour_utc)));
    ctx.add_variable_from_value("command", command.map(|c| c.as_str()).unwrap_or(""));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{Celsius, Percent};

    #[test]
    fn evaluates_over_facts() {
        let mut f = Facts {
            cpu_temp: Some(Celsius(72.0)),
            on_battery: true,
            ..Facts::default()
        };
        let e = Expr::new("cpu_temp_c > 70 && on_battery").unwrap();
        assert_eq!(e.eval(&f, None), Some(true));
        f.on_battery = false;
        assert_eq!(e.eval(&f, None), Some(false));
        f.cpu_temp = None;
        // Null in a comparison: no value, never a guess.
        assert_eq!(e.eval(&f, None), None);
        let c = Expr::new("command == 'set_gpio' && fan_duty_pct < 50.0").unwrap();
        f.fan_duty = Percent::saturating(40.0);
        assert_eq!(c.eval(&f, Some(CommandKind::SetGpio)), Some(true));
        assert_eq!(Expr::new("1 + 1").unwrap().eval(&f, None), None);
    }

    #[test]
    fn bad_expressions_are_errors() {
        for bad in ["cpu_temp_c >", "&&", "(((", "a ? b"] {
            assert!(compile(bad).is_err(), "{bad}");
        }
    }
}
