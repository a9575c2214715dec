//! Fleet commands on the device link.
//!
//! The fleet sends a [`FrameKind::Command`] frame whose payload is the JSON of a
//! [`FleetCommand`] (`{"id": "...", "request": <CommandRequest>}`); the device
//! validates the request with its safety engine, executes it and answers with a
//! [`FrameKind::CommandResult`] frame carrying a [`CommandReply`]
//! (`{"id", "status": "done"|"refused"|"failed", "code"?, "message"?, "result"?}`).
//! The device also records the answer in `reported` (`ack.<id>`, see
//! [`CommandReply::ack_value`]), so a command re-sent after a reconnect is
//! answered from that record instead of being executed twice.

use serde::{Deserialize, Serialize};
use wrale_core::model::CommandRequest;

use crate::envelope::{Envelope, FrameKind};
use crate::error::{Error, Result};

/// Longest command id accepted (ids are opaque strings chosen by the fleet).
pub const MAX_COMMAND_ID: usize = 64;

/// A command sent by the fleet to one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetCommand {
    /// The fleet's id for this command (unique per device; 1 to 64 characters of
    /// `a-z A-Z 0-9 - _ .`).
    pub id: String,
    /// What to do, who asked and why.
    pub request: CommandRequest,
}

/// How a device answered a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Executed.
    Done,
    /// Not executed: the safety engine (or the device's state) refused it.
    Refused,
    /// Accepted but execution failed (hardware error, timeout...).
    Failed,
}

impl CommandStatus {
    /// `"done"`, `"refused"` or `"failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Done => "done",
            CommandStatus::Refused => "refused",
            CommandStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<CommandStatus> {
        [
            CommandStatus::Done,
            CommandStatus::Refused,
            CommandStatus::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// A device's answer to a [`FleetCommand`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    /// The command's id.
    pub id: String,
    /// The outcome.
    pub status: CommandStatus,
    /// A stable snake_case code (the refusing rule, `hal_error`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Command-specific result data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl CommandReply {
    /// The command was executed, with an optional result.
    pub fn done(id: impl Into<String>, result: Option<serde_json::Value>) -> Self {
        Self {
            id: id.into(),
            status: CommandStatus::Done,
            code: None,
            message: None,
            result,
        }
    }

    /// The command was refused (not executed).
    pub fn refused(
        id: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            status: CommandStatus::Refused,
            code: Some(code.into()),
            message: Some(message.into()),
            result: None,
        }
    }

    /// The command failed while executing.
    pub fn failed(
        id: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            status: CommandStatus::Failed,
            code: Some(code.into()),
            message: Some(message.into()),
            result: None,
        }
    }

    /// The value recorded in `reported` under `ack.<id>`: the status, followed by
    /// `:<code>` when there is a code (`"done"`, `"refused:max_temp"`).
    pub fn ack_value(&self) -> String {
        match &self.code {
            Some(code) => format!("{}:{code}", self.status.as_str()),
            None => self.status.as_str().to_owned(),
        }
    }

    /// Rebuilds a reply from a recorded [`ack_value`](CommandReply::ack_value)
    /// (the message and result are not recorded); `None` when it does not parse.
    pub fn from_ack(id: impl Into<String>, ack: &str) -> Option<Self> {
        let (status, code) = match ack.split_once(':') {
            Some((s, c)) => (s, Some(c.to_owned())),
            None => (ack, None),
        };
        Some(Self {
            id: id.into(),
            status: CommandStatus::parse(status)?,
            code,
            message: Some("answered from the recorded acknowledgement".into()),
            result: None,
        })
    }
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_COMMAND_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Decode {
            what: "command",
            reason: format!("bad command id {id:?} (1-{MAX_COMMAND_ID} of a-z A-Z 0-9 - _ .)"),
        })
    }
}

/// Encodes a [`FrameKind::Command`] frame for device `doc` at `epoch`.
pub fn encode_command(doc: &str, epoch: u64, command: &FleetCommand) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    let payload = serde_json::to_vec(command).unwrap_or_default();
    Envelope::new(FrameKind::Command, doc, epoch, payload).encode()
}

/// Decodes the payload of a [`FrameKind::Command`] frame (and checks the id).
pub fn decode_command(payload: &[u8]) -> Result<FleetCommand> {
    let c: FleetCommand = serde_json::from_slice(payload).map_err(|e| Error::Decode {
        what: "command",
        reason: e.to_string(),
    })?;
    check_id(&c.id)?;
    Ok(c)
}

/// Encodes a [`FrameKind::CommandResult`] frame for device `doc` at `epoch`.
pub fn encode_command_result(doc: &str, epoch: u64, reply: &CommandReply) -> Vec<u8> {
    let payload = serde_json::to_vec(reply).unwrap_or_default();
    Envelope::new(FrameKind::CommandResult, doc, epoch, payload).encode()
}

/// Decodes the payload of a [`FrameKind::CommandResult`] frame (and checks the id).
pub fn decode_command_result(payload: &[u8]) -> Result<CommandReply> {
    let r: CommandReply = serde_json::from_slice(payload).map_err(|e| Error::Decode {
        what: "command result",
        reason: e.to_string(),
    })?;
    check_id(&r.id)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_core::model::{Actor, Command};

    #[test]
    fn command_and_reply_round_trip_in_the_documented_json() {
        let c = FleetCommand {
            id: "c-1".into(),
            request: CommandRequest::new(Actor::User("alice".into()), "test", Command::Reboot),
        };
        let frame = encode_command("pi-01", 3, &c);
        let env = Envelope::decode(&frame).unwrap();
        assert_eq!(env.kind, FrameKind::Command);
        assert_eq!(env.epoch, 3);
        let json: serde_json::Value = serde_json::from_slice(&env.payload).unwrap();
        assert_eq!(json["id"], "c-1");
        assert_eq!(json["request"]["command"]["type"], "reboot");
        assert_eq!(decode_command(&env.payload).unwrap(), c);

        let r = CommandReply::refused("c-1", "max_temp", "too hot");
        let env = Envelope::decode(&encode_command_result("pi-01", 3, &r)).unwrap();
        assert_eq!(env.kind, FrameKind::CommandResult);
        let json: serde_json::Value = serde_json::from_slice(&env.payload).unwrap();
        assert_eq!(json["status"], "refused");
        assert_eq!(json["code"], "max_temp");
        assert!(json.get("result").is_none());
        assert_eq!(decode_command_result(&env.payload).unwrap(), r);
    }

    #[test]
    fn bad_payloads_are_named() {
        assert!(
            decode_command(b"{")
                .unwrap_err()
                .to_string()
                .contains("command")
        );
        let bad_id =
            br#"{"id":"","request":{"actor":{"kind":"fleet"},"command":{"type":"reboot"}}}"#;
        assert!(
            decode_command(bad_id)
                .unwrap_err()
                .to_string()
                .contains("bad command id")
        );
        assert!(decode_command_result(br#"{"id":"a","status":"maybe"}"#).is_err());
    }

    #[test]
    fn ack_values_round_trip() {
        let r = CommandReply::failed("x", "hal_error", "bus stuck");
        assert_eq!(r.ack_value(), "failed:hal_error");
        let back = CommandReply::from_ack("x", &r.ack_value()).unwrap();
        assert_eq!((back.status, back.code), (r.status, r.code));
        assert_eq!(
            CommandReply::from_ack("y", "done").unwrap().status,
            CommandStatus::Done
        );
        assert!(CommandReply::from_ack("y", "weird").is_none());
    }
}
