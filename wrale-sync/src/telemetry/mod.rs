//! The telemetry path: live samples never go into the twin.
//!
//! Samples are projected onto fixed numeric [`Channel`]s ([`Point`]), encoded in
//! compact batches ([`encode_batch`] / [`decode_batch`]: quantized, delta-encoded,
//! zigzag LEB128), buffered on the device in a bounded on-disk [`ring::RingBuffer`]
//! that survives restarts and drops the oldest records first (counting them), and
//! decoded on the receiving side.
//!
//! ```text
//! "WT" 1                          magic, version
//! u8 + bytes                      device id
//! varint count, varint mask       number of points, channels present in the batch
//! zigzag first timestamp (ms)
//! per point: zigzag Δt, varint presence bits, per present channel zigzag Δvalue
//! ```

use wrale_core::model::SensorKind;
use wrale_core::{Reading, Sample, Timestamp};

use crate::envelope::{read_varint, write_varint};
use crate::error::{Error, Result};

pub mod ring;

/// A numeric channel of a telemetry point, with its fixed quantization step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// CPU temperature, 0.01 °C.
    CpuTempC,
    /// Ambient temperature, 0.01 °C.
    AmbientTempC,
    /// Supply voltage, 1 mV.
    SupplyV,
    /// Supply current, 1 mA.
    CurrentA,
    /// Power, 1 mW.
    PowerW,
    /// First fan's duty, 0.1 %.
    FanDutyPct,
    /// First fan's speed, 1 rpm.
    FanRpm,
    /// CPU load, 0.1 %.
    CpuLoadPct,
    /// CPU frequency, 1 MHz.
    CpuFreqMhz,
    /// Firmware throttle word.
    ThrottleBits,
}

impl Channel {
    /// Every channel, in wire order.
    pub const ALL: [Channel; 10] = [
        Channel::CpuTempC,
        Channel::AmbientTempC,
        Channel::SupplyV,
        Channel::CurrentA,
        Channel::PowerW,
        Channel::FanDutyPct,
        Channel::FanRpm,
        Channel::CpuLoadPct,
        Channel::CpuFreqMhz,
        Channel::ThrottleBits,
    ];

    /// The quantization step.
    pub fn step(self) -> f64 {
        match self {
            Channel::CpuTempC | Channel::AmbientTempC => 0.01,
            Channel::SupplyV | Channel::CurrentA | Channel::PowerW => 0.001,
            Channel::FanDutyPct | Channel::CpuLoadPct => 0.1,
            Channel::FanRpm | Channel::CpuFreqMhz | Channel::ThrottleBits => 1.0,
        }
    }

    /// Prometheus-style name with the unit (`cpu_temp_c`).
    pub fn name(self) -> &'static str {
        match self {
            Channel::CpuTempC => "cpu_temp_c",
            Channel::AmbientTempC => "ambient_temp_c",
            Channel::SupplyV => "supply_v",
            Channel::CurrentA => "current_a",
            Channel::PowerW => "power_w",
            Channel::FanDutyPct => "fan_duty_pct",
            Channel::FanRpm => "fan_rpm",
            Channel::CpuLoadPct => "cpu_load_pct",
            Channel::CpuFreqMhz => "cpu_freq_mhz",
            Channel::ThrottleBits => "throttle_bits",
        }
    }
}

const NCH: usize = Channel::ALL.len();

/// One timestamped point: a value per channel, `None` when missing or faulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When it was sampled.
    pub at: Timestamp,
    /// Values in [`Channel::ALL`] order.
    pub values: [Option<f64>; NCH],
}

impl Point {
    /// An empty point.
    pub fn new(at: Timestamp) -> Self {
        Self {
            at,
            values: [None; NCH],
        }
    }

    /// The value of a channel.
    pub fn get(&self, ch: Channel) -> Option<f64> {
        self.values[ch as usize]
    }

    /// Sets a channel.
    pub fn set(&mut self, ch: Channel, v: f64) -> &mut Self {
        self.values[ch as usize] = Some(v);
        self
    }

    /// The compact projection of a full sample.
    pub fn from_sample(s: &Sample) -> Point {
        let mut p = Point::new(s.at);
        let mut put = |ch: Channel, r: Reading<f64>| {
            if let Reading::Ok(v) = r {
                p.values[ch as usize] = Some(v);
            }
        };
        put(Channel::CpuTempC, s.cpu_temp().map(|c| c.get()));
        put(
            Channel::AmbientTempC,
            s.temperature(SensorKind::Ambient).map(|c| c.get()),
        );
        put(Channel::SupplyV, s.supply_voltage.map(|v| v.get()));
        put(Channel::CurrentA, s.current.map(|a| a.get()));
        put(Channel::PowerW, s.power.map(|w| w.get()));
        if let Some(f) = s.fans.first() {
            put(Channel::FanDutyPct, f.duty.map(|d| d.get()));
            put(Channel::FanRpm, f.rpm.map(|r| r.get()));
        }
        put(Channel::CpuLoadPct, s.cpu_load.map(|l| l.get()));
        put(Channel::CpuFreqMhz, s.cpu_freq.map(|f| f.get()));
        put(
            Channel::ThrottleBits,
            s.throttle.map(|t| f64::from(t.bits())),
        );
        p
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn quantize(ch: Channel, v: f64) -> i64 {
    let q = (v / ch.step()).round();
    if q.is_finite() {
        q.clamp(-(1i64 << 52) as f64, (1i64 << 52) as f64) as i64
    } else {
        0
    }
}

const MAGIC: &[u8; 2] = b"WT";
const VERSION: u8 = 1;
/// Most points accepted in one batch.
pub const MAX_POINTS: u64 = 1 << 20;

/// Encodes a batch of points for one device. Values are quantized to each
/// channel's step (see [`Channel::step`]); NaN and infinities are sent as missing.
pub fn encode_batch(device: &str, points: &[Point]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + points.len() * 8);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let id = &device.as_bytes()[..device.len().min(255)];
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    write_varint(&mut out, points.len() as u64);
    let present = |p: &Point, i: usize| p.values[i].is_some_and(f64::is_finite);
    let mut mask: u64 = 0;
    for p in points {
        for i in 0..NCH {
            if present(p, i) {
                mask |= 1 << i;
            }
        }
    }
    write_varint(&mut out, mask);
    let mut prev_t = 0i64;
    let mut prev = [0i64; NCH];
    for (n, p) in points.iter().enumerate() {
        let t = p.at.as_millis();
        write_varint(
            &mut out,
            zigzag(if n == 0 { t } else { t.wrapping_sub(prev_t) }),
        );
        prev_t = t;
        let mut bits: u64 = 0;
        let mut j = 0;
        for i in 0..NCH {
            if mask & (1 << i) != 0 {
                if present(p, i) {
                    bits |= 1 << j;
                }
                j += 1;
            }
        }
        write_varint(&mut out, bits);
        for (i, ch) in Channel::ALL.iter().enumerate() {
            if let Some(v) = p.values[i].filter(|v| v.is_finite()) {
                let q = quantize(*ch, v);
                write_varint(&mut out, zigzag(q.wrapping_sub(prev[i])));
                prev[i] = q;
            }
        }
    }
    out
}

/// A decoded batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The device that sent it.
    pub device: String,
    /// Its points.
    pub points: Vec<Point>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Telemetry(format!("bad batch: {}", reason.into()))
}

/// Decodes a batch; any malformed input is an error naming the problem, never a
/// panic.
pub fn decode_batch(bytes: &[u8]) -> Result<Batch> {
    if bytes.len() < 4 || &bytes[..2] != MAGIC {
        return Err(bad("missing \"WT\" magic"));
    }
    if bytes[2] != VERSION {
        return Err(bad(format!("unsupported version {}", bytes[2])));
    }
    let len = bytes[3] as usize;
    let id = bytes
        .get(4..4 + len)
        .ok_or_else(|| bad("device id cut off"))?;
    let device = std::str::from_utf8(id)
        .map_err(|_| bad("device id is not UTF-8"))?
        .to_owned();
    let mut pos = 4 + len;
    let varint = |what: &str, pos: &mut usize| {
        read_varint(bytes, pos).ok_or_else(|| bad(format!("{what} cut off or too long")))
    };
    let count = varint("point count", &mut pos)?;
    if count > MAX_POINTS {
        return Err(bad(format!("{count} points exceed the limit {MAX_POINTS}")));
    }
    let mask = varint("channel mask", &mut pos)?;
    if mask >> NCH != 0 {
        return Err(bad(format!("unknown channels in mask {mask:#x}")));
    }
    let width = mask.count_ones();
    let mut points = Vec::with_capacity((count as usize).min(bytes.len()));
    let mut prev_t = 0i64;
    let mut prev = [0i64; NCH];
    for n in 0..count {
        let dt = unzigzag(varint("timestamp", &mut pos)?);
        let t = if n == 0 {
            dt
        } else {
            prev_t
                .checked_add(dt)
                .ok_or_else(|| bad("timestamp overflow"))?
        };
        prev_t = t;
        let bits = varint("presence bits", &mut pos)?;
        if bits >> width != 0 {
            return Err(bad("presence bits outside the channel mask"));
        }
        let mut p = Point::new(Timestamp::from_millis(t));
        let mut j = 0;
        for (i, ch) in Channel::ALL.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            if bits & (1 << j) != 0 {
                let d = unzigzag(varint(ch.name(), &mut pos)?);
                let q = prev[i]
                    .checked_add(d)
                    .ok_or_else(|| bad(format!("{} overflow", ch.name())))?;
                prev[i] = q;
                p.values[i] = Some(q as f64 * ch.step());
            }
            j += 1;
        }
        points.push(p);
    }
    if pos != bytes.len() {
        return Err(bad(format!("{} trailing bytes", bytes.len() - pos)));
    }
    Ok(Batch { device, points })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn points(n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| {
                let mut p = Point::new(Timestamp::from_millis(1_800_000_000_000 + i as i64 * 1000));
                p.set(Channel::CpuTempC, 50.0 + (i as f64 * 0.37).sin() * 3.0)
                    .set(Channel::SupplyV, 5.08 + (i % 3) as f64 * 0.001)
                    .set(Channel::FanRpm, 3000.0 + (i % 7) as f64 * 10.0);
                if i % 10 != 0 {
                    p.set(Channel::PowerW, 4.2);
                }
                p
            })
            .collect()
    }

    #[test]
    fn round_trip_is_exact_to_the_step_and_compact() {
        let pts = points(600);
        let b = encode_batch("pi-01", &pts);
        let back = decode_batch(&b).unwrap();
        assert_eq!(back.device, "pi-01");
        assert_eq!(back.points.len(), 600);
        for (a, b) in pts.iter().zip(&back.points) {
            assert_eq!(a.at, b.at);
            for ch in Channel::ALL {
                match (a.get(ch), b.get(ch)) {
                    (Some(x), Some(y)) => assert!((x - y).abs() <= ch.step() / 2.0 + 1e-9),
                    (None, None) => {}
                    other => panic!("{ch:?}: {other:?}"),
                }
            }
        }
        // ~ 8 bytes per 4-channel sample, against ~ 40 bytes of raw f64s + time.
        assert!(b.len() < 600 * 9, "{} bytes", b.len());
    }

    #[test]
    fn malformed_batches_are_named_errors() {
        let b = encode_batch("pi-01", &points(5));
        assert!(decode_batch(&b[..b.len() - 1]).is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(
            decode_batch(&extra)
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        assert!(
            decode_batch(b"XX")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&bytes);
            let mut framed = b"WT\x01\x05pi-01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode_batch(&framed);
        }
    }
}
