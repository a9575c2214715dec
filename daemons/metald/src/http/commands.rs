//! Command routes: `POST /api/v1/commands`, `/api/v1/commands/validate` (phase one
//! of two), `/api/v1/commands/confirm` (phase two) and `POST /api/v1/mode`.
//!
//! A body is a `wrale_core::model::Command` (`{"type": "set_gpio", "pin": 17,
//! "level": "high"}`) plus a `reason`. Every command takes the sampling loop's one
//! command path ([`CommandSender::execute`](crate::sampler::CommandSender::execute)):
//! the device must have what it names, safe mode refuses commands that drive
//! outputs (409 `safe_mode`), the safety engine admits or refuses it (422
//! `policy_violation` with the rule, whoever sends it), the HAL applies it, the
//! audit log records it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wrale_core::model::{Actor, Command, CommandRequest};

use super::ApiState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::sampler::ModeRequest;

/// Parses `bytes` as a JSON object; 400 naming the problem otherwise.
fn object(bytes: &Bytes) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_body(format!("the body is not JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid_body("the body must be a JSON object")),
    }
}

fn field_error(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_body(format!("{field}: {message}")).with_detail("field", field)
}

/// Takes the `reason` out of a body: a non-empty string.
fn take_reason(m: &mut Map<String, Value>) -> Result<String, ApiError> {
    match m.remove("reason") {
        Some(Value::String(r)) if !r.trim().is_empty() => Ok(r),
        Some(Value::String(_)) => Err(field_error("reason", "must not be empty")),
        Some(_) => Err(field_error("reason", "must be a string")),
        None => Err(field_error(
            "reason",
            "missing: say why (it goes to the audit log)",
        )),
    }
}

/// Parses the command part of a body, naming the field that is wrong. serde's
/// messages for internally tagged enums do not carry the field, so each field is
/// checked against a known-good command of the same type.
pub fn parse_command(m: Map<String, Value>) -> Result<Command, ApiError> {
    match m.get("type") {
        None => {
            return Err(field_error(
                "type",
                "missing: the command type (set_gpio, set_pwm, set_fan_duty, set_fan_profile, select_power_source, enable_charging, reboot, shutdown, run_diagnostics, start_workload, throttle_workload, resume_workload)",
            ));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(field_error("type", "must be a string")),
    }
    let kind = m
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let value = Value::Object(m.clone());
    match serde_json::from_value::<Command>(value) {
        Ok(c) => {
            // The command type ignores fields it does not know; a typo must not
            // pass silently.
            let known = serde_json::to_value(&c).unwrap_or(Value::Null);
            if let Some(k) = m
                .keys()
                .find(|k| known.get(k.as_str()).is_none() && !m[k.as_str()].is_null())
            {
                return Err(field_error(
                    k,
                    format!("unknown field for a {} command", c.kind()),
                ));
            }
            Ok(c)
        }
        Err(e) => {
            let msg = e.to_string();
            if msg.starts_with(&format!("unknown variant `{kind}`")) {
                return Err(field_error("type", msg));
            }
            if let Some(f) = quoted_field(&msg) {
                return Err(field_error(&f, msg));
            }
            // Find the field whose value is wrong: drop each in turn and see whether
            // the error becomes "missing field".
            for key in m.keys().filter(|k| *k != "type") {
                let mut without = m.clone();
                without.remove(key);
                if let Err(e2) = serde_json::from_value::<Command>(Value::Object(without))
                    && e2.to_string().contains(&format!("missing field `{key}`"))
                {
                    return Err(field_error(key, msg));
                }
            }
            Err(ApiError::invalid_body(msg))
        }
    }
}

/// The field named in a serde message like "missing field `pin`" or
/// "unknown field `x`, expected ...".
fn quoted_field(msg: &str) -> Option<String> {
    let rest = msg
        .strip_prefix("missing field `")
        .or_else(|| msg.strip_prefix("unknown field `"))?;
    rest.split('`').next().map(str::to_owned)
}

/// `{"type": ..., ..., "reason": "..."}` as a request from `who`.
fn request(bytes: &Bytes, who: &Principal) -> Result<CommandRequest, ApiError> {
    let mut m = object(bytes)?;
    let reason = take_reason(&mut m)?;
    let command = parse_command(m)?;
    Ok(CommandRequest::new(
        Actor::LocalOperator(who.name.clone()),
        reason,
        command,
    ))
}

/// `POST /api/v1/commands`: validated by the engine, then applied.
pub(super) async fn execute(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = request(&body, &who)?;
    tracing::info!(token = %who.name, command = ?req.command, "command");
    let outcome = s.commands.execute(req).await?;
    Ok(Json(json!(outcome)))
}

/// `POST /api/v1/commands/validate`: phase one; the verdict and a token.
pub(super) async fn validate(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = request(&body, &who)?;
    let command = req.command.clone();
    let v = s.commands.validate_request(req).await?;
    let mut out = json!(v);
    out["command"] = json!(command);
    Ok(Json(out))
}

/// `POST /api/v1/commands/confirm`: phase two (fan and every other command):
/// `{"token": 3}`, optionally with the `command` the caller means to confirm
/// (refused with `confirm.mismatch` when the token was issued for another).
pub(super) async fn confirm(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let m = object(&body)?;
    let token = match m.get("token") {
        None => return Err(field_error("token", "missing")),
        Some(t) => t.as_u64().ok_or_else(|| {
            field_error("token", "must be the number phase one returned (token.id)")
        })?,
    };
    let command = match m.get("command") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(parse_command(c.clone()).map_err(|e| {
            ApiError::invalid_body(format!("command.{}", e.message()))
                .with_detail("field", "command")
        })?),
        Some(_) => return Err(field_error("command", "must be a command object")),
    };
    if let Some(k) = m.keys().find(|k| *k != "token" && *k != "command") {
        return Err(field_error(k, "unknown field (expected token, command)"));
    }
    tracing::info!(token = %who.name, confirm = token, "command confirmation");
    let outcome = s
        .commands
        .confirm_request(token, Actor::LocalOperator(who.name.clone()), command)
        .await?;
    Ok(Json(json!(outcome)))
}

/// Body of `POST /api/v1/mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModeBody {
    /// Only `normal`.
    mode: String,
    /// Why (logged).
    reason: String,
    /// Leave while the fault is present (admin).
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/mode {"mode": "normal", "reason": "..."}`: leaves safe mode.
/// Operators may leave it once the fault is gone (without waiting for the hold
/// time); `"force": true` (admin) leaves it while the fault is still present.
pub(super) async fn set_mode(
    State(s): State<ApiState>,
    axum::Extension(who): axum::Extension<Principal>,
    crate::error::ApiJson(body): crate::error::ApiJson<ModeBody>,
) -> Result<Json<Value>, ApiError> {
    if body.mode != "normal" {
        return Err(field_error(
            "mode",
            format!(
                "{:?}: only \"normal\" can be asked for (safe mode is entered by a fault, degraded by losing the fleet)",
                body.mode
            ),
        ));
    }
    if body.reason.trim().is_empty() {
        return Err(field_error("reason", "must not be empty"));
    }
    if body.force && who.role < Role::Admin {
        return Err(ApiError::forbidden(format!(
            "\"force\": true needs the admin role; token {:?} has {}",
            who.name, who.role
        ))
        .with_detail("required_role", Role::Admin.to_string()));
    }
    let modes = s
        .commands
        .leave_safe_mode(ModeRequest {
            actor: Actor::LocalOperator(who.name.clone()),
            reason: body.reason,
            force: body.force,
        })
        .await?;
    Ok(Json(json!({ "mode": modes.mode(), "modes": modes })))
}
