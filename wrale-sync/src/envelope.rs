//! The wire envelope around every sync frame.
//!
//! ```text
//! byte 0      'W' (0x57)           magic
//! byte 1      version (1)
//! byte 2      kind: 1 sync message, 2 epoch snapshot, 3 epoch request,
//!             4 telemetry, 5 telemetry ack, 6 command, 7 command result
//! LEB128      epoch of the sender's document
//! u8 + bytes  document id (1-64 bytes of a-z 0-9 - . : _)
//! rest        payload (an automerge sync message, a saved document, telemetry
//!             records, command JSON, or empty)
//! ```
//!
//! Decoding checks every field and names the first problem; a frame that fails
//! never reaches a document.

use std::fmt;

/// Magic first byte.
pub const MAGIC: u8 = b'W';
/// Envelope version written by this crate.
pub const VERSION: u8 = 1;
/// Largest frame accepted (a saved twin of a fresh epoch is a few kilobytes).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// An automerge sync message for the document at `epoch`.
    Sync,
    /// A whole saved document of epoch `epoch`, sent to a peer on an older epoch.
    EpochSnapshot,
    /// "I am on epoch `epoch` and saw a newer one: send me the snapshot."
    EpochRequest,
    /// Telemetry records from the device's ring (see `agent`); never reaches a twin.
    Telemetry,
    /// The peer's acknowledgement of a [`FrameKind::Telemetry`] frame.
    TelemetryAck,
    /// A fleet command for the device: JSON [`crate::FleetCommand`]
    /// ([`crate::encode_command`]); never reaches a twin.
    Command,
    /// The device's answer to a [`FrameKind::Command`]: JSON
    /// [`crate::CommandReply`] ([`crate::encode_command_result`]).
    CommandResult,
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            FrameKind::Sync => 1,
            FrameKind::EpochSnapshot => 2,
            FrameKind::EpochRequest => 3,
            FrameKind::Telemetry => 4,
            FrameKind::TelemetryAck => 5,
            FrameKind::Command => 6,
            FrameKind::CommandResult => 7,
        }
    }
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Fewer bytes than the fixed header.
    #[error("frame too short ({0} bytes)")]
    TooShort(usize),
    /// First byte is not the magic.
    #[error("bad magic byte 0x{0:02x} (expected 0x57 'W')")]
    BadMagic(u8),
    /// Unknown envelope version.
    #[error("unsupported envelope version {0} (this peer speaks 1)")]
    UnsupportedVersion(u8),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The epoch varint is cut off or longer than 64 bits.
    #[error("bad epoch varint")]
    BadEpoch,
    /// The document id is cut off, empty, too long or has bad characters.
    #[error("bad document id: {0}")]
    BadDocId(String),
    /// The frame exceeds the 16 MiB limit.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
}

/// A decoded frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// What it carries.
    pub kind: FrameKind,
    /// The sender's epoch.
    pub epoch: u64,
    /// The document (twin) id.
    pub doc: String,
    /// The payload.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("epoch", &self.epoch)
            .field("doc", &self.doc)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

fn valid_doc_id(id: &[u8]) -> Result<&str, EnvelopeError> {
    if id.is_empty() || id.len() > 64 {
        return Err(EnvelopeError::BadDocId(format!("length {}", id.len())));
    }
    if let Some(b) = id.iter().find(|b| {
        !(b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':' | b'_'))
    }) {
        return Err(EnvelopeError::BadDocId(format!("byte 0x{b:02x}")));
    }
    std::str::from_utf8(id).map_err(|e| EnvelopeError::BadDocId(e.to_string()))
}

pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Reads a LEB128 u64 at `*pos`; `None` when cut off or over 64 bits.
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        let part = u64::from(b & 0x7f);
        if shift == 63 && part > 1 {
            return None;
        }
        v |= part << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Encodes a telemetry frame: sequence number, then each record as LEB128
/// length + bytes.
pub fn encode_telemetry(doc: &str, epoch: u64, seq: u64, records: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = Vec::new();
    write_varint(&mut payload, seq);
    for r in records {
        write_varint(&mut payload, r.len() as u64);
        payload.extend_from_slice(r);
    }
    Envelope::new(FrameKind::Telemetry, doc, epoch, payload).encode()
}

/// Decodes the payload of a [`FrameKind::Telemetry`] frame into its sequence
/// number and records.
pub fn decode_telemetry(payload: &[u8]) -> crate::Result<(u64, Vec<Vec<u8>>)> {
    let bad = |reason: &str| crate::Error::Telemetry(format!("telemetry frame: {reason}"));
    let mut pos = 0;
    let seq = read_varint(payload, &mut pos).ok_or_else(|| bad("bad sequence number"))?;
    let mut records = Vec::new();
    while pos < payload.len() {
        let len = read_varint(payload, &mut pos).ok_or_else(|| bad("bad record length"))?;
        let len = usize::try_from(len).map_err(|_| bad("record too long"))?;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= payload.len())
            .ok_or_else(|| bad("record cut off"))?;
        records.push(payload[pos..end].to_vec());
        pos = end;
    }
    Ok((seq, records))
}

/// Encodes the acknowledgement of telemetry frame `seq`.
pub fn encode_telemetry_ack(doc: &str, epoch: u64, seq: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    write_varint(&mut payload, seq);
    Envelope::new(FrameKind::TelemetryAck, doc, epoch, payload).encode()
}

/// Decodes the payload of a [`FrameKind::TelemetryAck`] frame.
pub fn decode_telemetry_ack(payload: &[u8]) -> crate::Result<u64> {
    let mut pos = 0;
    let seq = read_varint(payload, &mut pos)
        .ok_or_else(|| crate::Error::Telemetry("telemetry ack: bad sequence number".into()))?;
    if pos != payload.len() {
        return Err(crate::Error::Telemetry(
            "telemetry ack: trailing bytes".into(),
        ));
    }
    Ok(seq)
}

impl Envelope {
    /// A frame.
    pub fn new(kind: FrameKind, doc: impl Into<String>, epoch: u64, payload: Vec<u8>) -> Self {
        Self {
            kind,
            epoch,
            doc: doc.into(),
            payload,
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + self.doc.len() + 16);
        out.extend_from_slice(&[MAGIC, VERSION, self.kind.byte()]);
        write_varint(&mut out, self.epoch);
        out.push(self.doc.len().min(255) as u8);
        out.extend_from_slice(&self.doc.as_bytes()[..self.doc.len().min(255)]);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes and checks a frame.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > MAX_FRAME {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        if bytes.len() < 5 {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        if bytes[0] != MAGIC {
            return Err(EnvelopeError::BadMagic(bytes[0]));
        }
        if bytes[1] != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(bytes[1]));
        }
        let kind = match bytes[2] {
            1 => FrameKind::Sync,
            2 => FrameKind::EpochSnapshot,
            3 => FrameKind::EpochRequest,
            4 => FrameKind::Telemetry,
            5 => FrameKind::TelemetryAck,
            6 => FrameKind::Command,
            7 => FrameKind::CommandResult,
            k => return Err(EnvelopeError::UnknownKind(k)),
        };
        let mut pos = 3;
        let epoch = read_varint(bytes, &mut pos).ok_or(EnvelopeError::BadEpoch)?;
        let len = *bytes
            .get(pos)
            .ok_or_else(|| EnvelopeError::BadDocId("missing".into()))? as usize;
        pos += 1;
        let id = bytes
            .get(pos..pos + len)
            .ok_or_else(|| EnvelopeError::BadDocId("cut off".into()))?;
        let doc = valid_doc_id(id)?.to_owned();
        pos += len;
        Ok(Envelope {
            kind,
            epoch,
            doc,
            payload: bytes[pos..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let e = Envelope::new(FrameKind::Sync, "pi-01", 300, vec![1, 2, 3]);
        let b = e.encode();
        assert_eq!(b.len(), 3 + 2 + 1 + 5 + 3);
        assert_eq!(Envelope::decode(&b).unwrap(), e);
    }

    #[test]
    fn errors_name_the_problem() {
        let good = Envelope::new(FrameKind::EpochRequest, "pi-01", 2, vec![]).encode();
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Envelope::decode(&b), Err(EnvelopeError::BadMagic(b'X')));
        let mut b = good.clone();
        b[1] = 9;
        assert!(
            Envelope::decode(&b)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        let mut b = good.clone();
        b[2] = 8;
        assert_eq!(Envelope::decode(&b), Err(EnvelopeError::UnknownKind(8)));
        assert!(matches!(
            Envelope::decode(&good[..6]),
            Err(EnvelopeError::BadDocId(_))
        ));
        let bad_id = Envelope::new(FrameKind::Sync, "Pi 01", 0, vec![]).encode();
        assert!(matches!(
            Envelope::decode(&bad_id),
            Err(EnvelopeError::BadDocId(_))
        ));
        assert_eq!(
            Envelope::decode(&[b'W', 1, 1, 0xff, 0xff]),
            Err(EnvelopeError::BadEpoch)
        );
    }

    #[test]
    fn varint_edges() {
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            let mut b = Vec::new();
            write_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varint(&b, &mut p), Some(v));
            assert_eq!(p, b.len());
        }
        let mut p = 0;
        assert_eq!(read_varint(&[0xff; 11], &mut p), None);
    }
}
