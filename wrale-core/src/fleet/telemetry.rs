//! Telemetry time series on the brain: retention tiers, rollups, query resolution
//! and group aggregation. Pure: no I/O, no clock (`now` is an argument).
//!
//! A series is one metric of one device: points `(t, value)` with `t` in
//! milliseconds since the Unix epoch, unique per `(device, metric, t)` (the first
//! value stored for a key wins, so re-ingesting a batch changes nothing).
//!
//! Three tiers hold a series ([`Resolution`]): `raw` points, `1m` buckets and `1h`
//! buckets. A [`Bucket`] keeps `count`, `sum`, `min` and `max` of the points whose
//! time falls in `[start, start + width)`, where `start` is aligned to a multiple of
//! the width since the epoch (UTC boundaries). Because a bucket keeps the sum and
//! the count rather than the average, buckets [merge](Bucket::merge) exactly: a
//! bucket rolled up from part of its points, merged with one rolled up from the rest,
//! equals the bucket rolled up from all of them. That makes late data and
//! incremental rollups correct: a store rolls up only the points that are new since
//! its last pass and merges the result into what it has.
//!
//! ```
//! use wrale_core::Timestamp;
//! use wrale_core::fleet::telemetry::{rollup, rollup_buckets, BucketWidth};
//!
//! let pts: Vec<(Timestamp, f64)> = (0..180)
//!     .map(|s| (Timestamp::from_secs(s * 20), s as f64))
//!     .collect();
//! let minutes = rollup(pts.iter().copied(), BucketWidth::MINUTE);
//! assert_eq!(minutes.len(), 60);
//! assert_eq!(minutes[0].count, 3);
//! // Rolling the minutes up into hours gives what rolling up the raw points gives.
//! assert_eq!(rollup_buckets(&minutes, BucketWidth::HOUR), rollup(pts, BucketWidth::HOUR));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Timestamp;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A query parameter is missing or malformed (HTTP 400 `invalid_query`).
    #[error("invalid query parameter `{param}`: {message}")]
    InvalidQuery {
        /// The parameter at fault.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The retention configuration is inconsistent.
    #[error("invalid telemetry retention: {0}")]
    InvalidRetention(String),
}

impl TelemetryError {
    fn query(param: &'static str, message: impl Into<String>) -> Self {
        TelemetryError::InvalidQuery {
            param,
            message: message.into(),
        }
    }
}

/// The width of a rollup bucket, in milliseconds (always positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketWidth(i64);

impl BucketWidth {
    /// One minute.
    pub const MINUTE: BucketWidth = BucketWidth(60_000);
    /// One hour.
    pub const HOUR: BucketWidth = BucketWidth(3_600_000);

    /// A width of `ms` milliseconds; `None` unless positive.
    pub const fn from_millis(ms: i64) -> Option<Self> {
        if ms > 0 { Some(Self(ms)) } else { None }
    }

    /// The width in milliseconds.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The start of the bucket holding `t`: the largest multiple of the width since
    /// the epoch that is not after `t` (also for times before 1970).
    pub const fn align(self, t: Timestamp) -> Timestamp {
        let ms = t.as_millis();
        Timestamp::from_millis(ms - ms.rem_euclid(self.0))
    }
}

/// A storage tier and the resolution of a query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    /// Points as the devices sent them.
    Raw,
    /// One-minute buckets.
    Minute,
    /// One-hour buckets.
    Hour,
}

impl Resolution {
    /// Finest first.
    pub const ALL: [Resolution; 3] = [Resolution::Raw, Resolution::Minute, Resolution::Hour];

    /// The name used in queries and answers (`raw`, `1m`, `1h`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }

    /// The bucket width of a rollup tier; `None` for `raw`.
    pub const fn width(self) -> Option<BucketWidth> {
        match self {
            Resolution::Raw => None,
            Resolution::Minute => Some(BucketWidth::MINUTE),
            Resolution::Hour => Some(BucketWidth::HOUR),
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Resolution {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a query asks for: one tier, or `auto` (see [`auto_resolution`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolutionRequest {
    /// Exactly this tier.
    Fixed(Resolution),
    /// The finest tier that covers the range with few enough points.
    #[default]
    Auto,
}

impl FromStr for ResolutionRequest {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "raw" => ResolutionRequest::Fixed(Resolution::Raw),
            "1m" => ResolutionRequest::Fixed(Resolution::Minute),
            "1h" => ResolutionRequest::Fixed(Resolution::Hour),
            "auto" => ResolutionRequest::Auto,
            other => {
                return Err(TelemetryError::query(
                    "resolution",
                    format!("{other:?} is not one of raw, 1m, 1h, auto"),
                ));
            }
        })
    }
}

/// How long each tier keeps data. Defaults: raw 24 h, 1-minute 30 days, 1-hour
/// forever (`None`).
///
/// In TOML: `retention_raw = "24h"`, `retention_1m = "30days"`,
/// `retention_1h = "forever"` (or a duration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// How long raw points are kept.
    #[serde(rename = "retention_raw", with = "crate::time::duration_str")]
    pub raw: Duration,
    /// How long 1-minute buckets are kept.
    #[serde(rename = "retention_1m", with = "crate::time::duration_str")]
    pub minute: Duration,
    /// How long 1-hour buckets are kept; `None` keeps them forever.
    #[serde(rename = "retention_1h", with = "forever_or_duration")]
    pub hour: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: Duration::from_secs(24 * 3600),
            minute: Duration::from_secs(30 * 24 * 3600),
            hour: None,
        }
    }
}

impl Retention {
    /// Checks that every tier keeps data and that coarser tiers keep at least as long
    /// as finer ones (otherwise a range could be covered by raw data but not by its
    /// rollups).
    pub fn validate(&self) -> Result<(), TelemetryError> {
        let bad = |m: String| Err(TelemetryError::InvalidRetention(m));
        let h = humantime::format_duration;
        if self.raw < Duration::from_secs(60) {
            return bad(format!(
                "retention_raw {} is shorter than one minute",
                h(self.raw)
            ));
        }
        if self.minute < self.raw {
            return bad(format!(
                "retention_1m {} is shorter than retention_raw {}",
                h(self.minute),
                h(self.raw)
            ));
        }
        if let Some(hour) = self.hour
            && hour < self.minute
        {
            return bad(format!(
                "retention_1h {} is shorter than retention_1m {}",
                h(hour),
                h(self.minute)
            ));
        }
        Ok(())
    }

    /// How long a tier keeps data; `None` is forever.
    pub fn keeps(&self, res: Resolution) -> Option<Duration> {
        match res {
            Resolution::Raw => Some(self.raw),
            Resolution::Minute => Some(self.minute),
            Resolution::Hour => self.hour,
        }
    }

    /// The oldest time a tier still holds at `now`: data before it is deleted by the
    /// next maintenance pass. For rollup tiers this is aligned down to the bucket
    /// width, so a bucket is deleted only when all of it is past retention. `None`
    /// when the tier keeps data forever.
    pub fn horizon(&self, res: Resolution, now: Timestamp) -> Option<Timestamp> {
        let cut = now - self.keeps(res)?;
        Some(match res.width() {
            Some(w) => w.align(cut),
            None => cut,
        })
    }

    /// Whether a tier still holds data from `from` at `now`.
    pub fn covers(&self, res: Resolution, from: Timestamp, now: Timestamp) -> bool {
        self.horizon(res, now).is_none_or(|h| from >= h)
    }
}

/// Serde helper for an optional retention written as a duration or `"forever"`
/// (`None`). Use with `#[serde(with = "wrale_core::fleet::telemetry::forever_or_duration")]`.
pub mod forever_or_duration {
    use super::*;

    /// Writes `None` as `"forever"`, a duration as a humane string.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            None => s.serialize_str("forever"),
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
        }
    }

    /// Reads `"forever"` or a humane duration (`"365days"`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "forever" {
            return Ok(None);
        }
        humantime::parse_duration(&s).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} (a duration or \"forever\"): {e}"
            ))
        })
    }
}

/// A half-open time range `[from, to)` of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First millisecond included.
    pub from: Timestamp,
    /// First millisecond excluded.
    pub to: Timestamp,
}

impl TimeRange {
    /// A range; `from` must be before `to`.
    pub fn new(from: Timestamp, to: Timestamp) -> Result<Self, TelemetryError> {
        if from >= to {
            return Err(TelemetryError::query(
                "from",
                format!("from {from} is not before to {to}"),
            ));
        }
        Ok(Self { from, to })
    }

    /// Whether `t` is in the range.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from <= t && t < self.to
    }

    /// The starts of the buckets of `width` that overlap the range: a query at a
    /// rollup resolution answers with every bucket whose start is in
    /// `[align(from), to)`.
    pub fn bucket_span(&self, width: BucketWidth) -> TimeRange {
        TimeRange {
            from: width.align(self.from),
            to: self.to,
        }
    }

    /// How many buckets of `width` overlap the range.
    pub fn bucket_count(&self, width: BucketWidth) -> u64 {
        let first = width.align(self.from).as_millis();
        let last = width.align(Timestamp::from_millis(self.to.as_millis() - 1));
        ((last.as_millis() - first) / width.as_millis() + 1) as u64
    }
}

/// The summary of the points of one series in one bucket. Serialised as the API
/// answers it: `{"t", "min", "max", "avg", "count"}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start of the bucket (aligned to its width).
    pub start: Timestamp,
    /// Number of points.
    pub count: u64,
    /// Sum of the values (kept so that buckets merge exactly).
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Bucket {
    /// The bucket of a single point.
    pub fn of(start: Timestamp, value: f64) -> Self {
        Self {
            start,
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    /// Mean of the values.
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }

    /// Adds one point's value.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Merges another summary of the same bucket (a disjoint set of points) into
    /// this one. The start is kept.
    pub fn merge(&mut self, other: &Bucket) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

impl Serialize for Bucket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Bucket", 5)?;
        st.serialize_field("t", &self.start)?;
        st.serialize_field("min", &self.min)?;
        st.serialize_field("max", &self.max)?;
        st.serialize_field("avg", &self.avg())?;
        st.serialize_field("count", &self.count)?;
        st.end()
    }
}

/// Rolls points up into buckets of `width`, sorted by start. Points may come in any
/// order; non-finite values are skipped.
pub fn rollup(
    points: impl IntoIterator<Item = (Timestamp, f64)>,
    width: BucketWidth,
) -> Vec<Bucket> {
    let mut acc = Rollup::new(width);
    for (t, v) in points {
        acc.add(t, v);
    }
    acc.into_buckets()
}

/// Rolls buckets up into coarser buckets of `width`, which must be a multiple of the
/// source buckets' width (1 m into 1 h); the buckets may come in any order.
pub fn rollup_buckets<'a>(
    buckets: impl IntoIterator<Item = &'a Bucket>,
    width: BucketWidth,
) -> Vec<Bucket> {
    let mut acc = Rollup::new(width);
    for b in buckets {
        acc.merge(b);
    }
    acc.into_buckets()
}

/// Merges two series of buckets of the same width (each sorted by start, with
/// unique starts, summarising disjoint sets of points) into one sorted series.
pub fn merge_series(a: &[Bucket], b: &[Bucket]) -> Vec<Bucket> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].start < b[j].start {
            out.push(a[i]);
            i += 1;
        } else if b[j].start < a[i].start {
            out.push(b[j]);
            j += 1;
        } else {
            let mut m = a[i];
            m.merge(&b[j]);
            out.push(m);
            i += 1;
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// An accumulator of buckets of one width, fed points or finer buckets in any order.
#[derive(Debug, Clone)]
pub struct Rollup {
    width: BucketWidth,
    buckets: BTreeMap<Timestamp, Bucket>,
}

impl Rollup {
    /// An empty accumulator.
    pub fn new(width: BucketWidth) -> Self {
        Self {
            width,
            buckets: BTreeMap::new(),
        }
    }

    /// The bucket width.
    pub fn width(&self) -> BucketWidth {
        self.width
    }

    /// Adds a point; a non-finite value is skipped.
    pub fn add(&mut self, t: Timestamp, value: f64) {
        if !value.is_finite() {
            return;
        }
        let start = self.width.align(t);
        self.buckets
            .entry(start)
            .and_modify(|b| b.add(value))
            .or_insert_with(|| Bucket::of(start, value));
    }

    /// Merges a bucket of a finer (dividing) width, or of the same width.
    pub fn merge(&mut self, b: &Bucket) {
        if b.count == 0 {
            return;
        }
        let start = self.width.align(b.start);
        self.buckets
            .entry(start)
            .and_modify(|x| x.merge(b))
            .or_insert_with(|| Bucket { start, ..*b });
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The buckets, sorted by start.
    pub fn buckets(&self) -> impl Iterator<Item = &Bucket> {
        self.buckets.values()
    }

    /// The buckets, sorted by start.
    pub fn into_buckets(self) -> Vec<Bucket> {
        self.buckets.into_values().collect()
    }
}

/// The raw points of one series with the store's key semantics: unique per time,
/// first write wins (`INSERT OR IGNORE`). The in-memory reference for stores, and
/// the model the property tests check incremental rollups against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSeries {
    points: BTreeMap<Timestamp, f64>,
}

impl RawSeries {
    /// An empty series.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a point unless one with the same time exists; true when inserted.
    /// Non-finite values are refused (false).
    pub fn insert(&mut self, t: Timestamp, value: f64) -> bool {
        if !value.is_finite() || self.points.contains_key(&t) {
            return false;
        }
        self.points.insert(t, value);
        true
    }

    /// The points, sorted by time.
    pub fn points(&self) -> impl Iterator<Item = (Timestamp, f64)> + '_ {
        self.points.iter().map(|(t, v)| (*t, *v))
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether it has no point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// Chooses the resolution of an `auto` query: the finest tier that still holds data
/// from `range.from` (see [`Retention::covers`]) and answers with at most
/// `max_points` points; the coarsest tier (`1h`) when none does.
///
/// `raw_points` is how many raw points the range holds, or `None` when raw is not a
/// candidate (group queries, whose devices' raw times do not line up).
pub fn auto_resolution(
    range: &TimeRange,
    now: Timestamp,
    retention: &Retention,
    max_points: u64,
    raw_points: Option<u64>,
) -> Resolution {
    for res in Resolution::ALL {
        if !retention.covers(res, range.from, now) {
            continue;
        }
        let points = match res.width() {
            None => match raw_points {
                Some(n) => n,
                None => continue,
            },
            Some(w) => range.bucket_count(w),
        };
        if points <= max_points {
            return res;
        }
    }
    Resolution::Hour
}

/// How a group query combines its devices' buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupAgg {
    /// Mean of the devices' bucket averages (each device weighs the same, whatever
    /// its sample rate).
    #[default]
    Avg,
    /// Smallest bucket minimum.
    Min,
    /// Largest bucket maximum.
    Max,
}

impl GroupAgg {
    /// The name used in queries (`avg`, `min`, `max`).
    pub const fn as_str(self) -> &'static str {
        match self {
            GroupAgg::Avg => "avg",
            GroupAgg::Min => "min",
            GroupAgg::Max => "max",
        }
    }
}

impl FromStr for GroupAgg {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "avg" => Ok(GroupAgg::Avg),
            "min" => Ok(GroupAgg::Min),
            "max" => Ok(GroupAgg::Max),
            other => Err(TelemetryError::query(
                "agg",
                format!("{other:?} is not one of avg, min, max"),
            )),
        }
    }
}

/// One bucket of a group aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GroupPoint {
    /// Start of the bucket.
    pub t: Timestamp,
    /// The aggregate.
    pub value: f64,
    /// How many devices had data in the bucket.
    pub devices: u32,
}

/// Combines the bucket series of several devices (same width) into one aggregate
/// per bucket start, sorted by start. A bucket where no device has data is absent.
pub fn aggregate_group<'a>(
    series: impl IntoIterator<Item = &'a [Bucket]>,
    agg: GroupAgg,
) -> Vec<GroupPoint> {
    // Per start: (accumulator, devices).
    let mut acc: BTreeMap<Timestamp, (f64, u32)> = BTreeMap::new();
    for s in series {
        for b in s.iter().filter(|b| b.count > 0) {
            let v = match agg {
                GroupAgg::Avg => b.avg(),
                GroupAgg::Min => b.min,
                GroupAgg::Max => b.max,
            };
            acc.entry(b.start)
                .and_modify(|(a, n)| {
                    *a = match agg {
                        GroupAgg::Avg => *a + v,
                        GroupAgg::Min => a.min(v),
                        GroupAgg::Max => a.max(v),
                    };
                    *n += 1;
                })
                .or_insert((v, 1));
        }
    }
    acc.into_iter()
        .map(|(t, (a, n))| GroupPoint {
            t,
            value: if agg == GroupAgg::Avg {
                a / f64::from(n)
            } else {
                a
            },
            devices: n,
        })
        .collect()
}

/// Parses a query time: RFC 3339 UTC (`2026-11-22T10:00:00Z`) or milliseconds since
/// the epoch. `param` names the parameter in the error.
pub fn parse_query_time(param: &'static str, s: &str) -> Result<Timestamp, TelemetryError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Timestamp::from_millis(ms));
    }
    Timestamp::parse_rfc3339(s).map_err(|e| TelemetryError::query(param, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_795_000_000_000; // 2026-11-18T11:06:40Z

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    fn same_buckets(a: &[Bucket], b: &[Bucket]) -> Result<(), String> {
        if a.len() != b.len() {
            return Err(format!("{} buckets vs {}", a.len(), b.len()));
        }
        for (x, y) in a.iter().zip(b) {
            if x.start != y.start
                || x.count != y.count
                || x.min != y.min
                || x.max != y.max
                || !close(x.sum, y.sum)
            {
                return Err(format!("{x:?} != {y:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn alignment_is_utc_and_floors_before_the_epoch() {
        let m = BucketWidth::MINUTE;
        assert_eq!(m.align(ts(0)), ts(0));
        assert_eq!(m.align(ts(59_999)), ts(0));
        assert_eq!(m.align(ts(60_000)), ts(60_000));
        assert_eq!(m.align(ts(-1)), ts(-60_000));
        let h = BucketWidth::HOUR;
        let t = Timestamp::parse_rfc3339("2026-11-22T10:59:59.999Z").unwrap();
        assert_eq!(h.align(t).to_string(), "2026-11-22T10:00:00.000Z");
        assert_eq!(BucketWidth::from_millis(0), None);
    }

    #[test]
    fn rollup_summarises_each_bucket() {
        let pts = [
            (ts(T0), 3.0),
            (ts(T0 + 1_000), 1.0),
            (ts(T0 + 61_000), 5.0),
            (ts(T0 + 2_000), f64::NAN),
        ];
        let b = rollup(pts, BucketWidth::MINUTE);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].start, BucketWidth::MINUTE.align(ts(T0)));
        assert_eq!((b[0].count, b[0].min, b[0].max), (2, 1.0, 3.0));
        assert_eq!(b[0].avg(), 2.0);
        assert_eq!((b[1].count, b[1].avg()), (1, 5.0));
    }

    #[test]
    fn merge_series_interleaves_and_merges_equal_starts() {
        let a = rollup([(ts(0), 1.0), (ts(120_000), 2.0)], BucketWidth::MINUTE);
        let b = rollup([(ts(60_000), 3.0), (ts(120_001), 4.0)], BucketWidth::MINUTE);
        let m = merge_series(&a, &b);
        assert_eq!(
            m.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
            vec![(ts(0), 1), (ts(60_000), 1), (ts(120_000), 2)]
        );
        assert_eq!(m[2].avg(), 3.0);
    }

    #[test]
    fn retention_defaults_parse_and_validate() {
        let r = Retention::default();
        r.validate().unwrap();
        let r: Retention = toml::from_str(
            "retention_raw = \"2h\"\nretention_1m = \"7days\"\nretention_1h = \"365days\"",
        )
        .unwrap();
        assert_eq!(r.raw, Duration::from_secs(7200));
        assert_eq!(r.hour, Some(Duration::from_secs(365 * 86400)));
        let r: Retention = toml::from_str("retention_1h = \"forever\"").unwrap();
        assert_eq!(r, Retention::default());
        let e = toml::from_str::<Retention>("retention_1h = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
        let bad = Retention {
            minute: Duration::from_secs(3600),
            ..Retention::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("retention_1m"), "{e}");
        let bad = Retention {
            hour: Some(Duration::from_secs(86400)),
            ..Retention::default()
        };
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<Retention>("retention = \"1h\"").is_err());
    }

    #[test]
    fn horizons_and_coverage() {
        let r = Retention::default();
        let now = ts(T0);
        assert_eq!(r.horizon(Resolution::Raw, now), Some(ts(T0 - 86_400_000)));
        let m = r.horizon(Resolution::Minute, now).unwrap();
        assert_eq!(m, BucketWidth::MINUTE.align(ts(T0 - 30 * 86_400_000)));
        assert_eq!(r.horizon(Resolution::Hour, now), None);
        assert!(r.covers(Resolution::Raw, ts(T0 - 3_600_000), now));
        assert!(!r.covers(Resolution::Raw, ts(T0 - 2 * 86_400_000), now));
        assert!(r.covers(Resolution::Hour, ts(0), now));
    }

    #[test]
    fn auto_picks_the_finest_tier_that_fits() {
        let r = Retention::default();
        let now = ts(T0);
        let hour = TimeRange::new(ts(T0 - 3_600_000), now).unwrap();
        // 3600 raw points do not fit in 1000; 60 (or 61) minute buckets do.
        assert_eq!(
            auto_resolution(&hour, now, &r, 1000, Some(3600)),
            Resolution::Minute
        );
        assert_eq!(
            auto_resolution(&hour, now, &r, 1000, Some(360)),
            Resolution::Raw
        );
        // Group queries never get raw.
        assert_eq!(
            auto_resolution(&hour, now, &r, 1000, None),
            Resolution::Minute
        );
        // Two days: raw no longer covers; 2880 minutes too many; hours.
        let two_days = TimeRange::new(ts(T0 - 2 * 86_400_000), now).unwrap();
        assert_eq!(
            auto_resolution(&two_days, now, &r, 1000, Some(0)),
            Resolution::Hour
        );
        assert_eq!(
            auto_resolution(&two_days, now, &r, 5000, Some(0)),
            Resolution::Minute
        );
        // A range older than every finite tier still gets an answer (1h).
        let old = TimeRange::new(ts(0), ts(3_600_000)).unwrap();
        assert_eq!(auto_resolution(&old, now, &r, 1, Some(0)), Resolution::Hour);
    }

    #[test]
    fn ranges_and_bucket_counts() {
        assert!(TimeRange::new(ts(5), ts(5)).is_err());
        let r = TimeRange::new(ts(30_000), ts(120_001)).unwrap();
        assert_eq!(r.bucket_count(BucketWidth::MINUTE), 3);
        assert_eq!(r.bucket_span(BucketWidth::MINUTE).from, ts(0));
        let exact = TimeRange::new(ts(0), ts(3_600_000)).unwrap();
        assert_eq!(exact.bucket_count(BucketWidth::MINUTE), 60);
        assert_eq!(exact.bucket_count(BucketWidth::HOUR), 1);
    }

    #[test]
    fn query_parameters_name_themselves() {
        let e = "5m".parse::<ResolutionRequest>().unwrap_err();
        assert!(
            matches!(
                e,
                TelemetryError::InvalidQuery {
                    param: "resolution",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            "1h".parse::<ResolutionRequest>().unwrap(),
            ResolutionRequest::Fixed(Resolution::Hour)
        );
        let e = "median".parse::<GroupAgg>().unwrap_err().to_string();
        assert!(e.contains("`agg`") && e.contains("median"), "{e}");
        assert_eq!(parse_query_time("from", "1000").unwrap(), ts(1000));
        assert_eq!(
            parse_query_time("to", "1970-01-01T00:00:01Z").unwrap(),
            ts(1000)
        );
        let e = parse_query_time("to", "tomorrow").unwrap_err().to_string();
        assert!(e.contains("`to`"), "{e}");
    }

    #[test]
    fn group_aggregates_per_bucket() {
        let w = BucketWidth::MINUTE;
        let a = rollup([(ts(0), 10.0), (ts(1), 20.0), (ts(60_000), 1.0)], w);
        let b = rollup([(ts(5), 30.0)], w);
        let c: Vec<Bucket> = Vec::new();
        let series = [a.as_slice(), b.as_slice(), c.as_slice()];
        let avg = aggregate_group(series, GroupAgg::Avg);
        assert_eq!(avg.len(), 2);
        // Device a averages 15 in the first minute, device b 30: the group, 22.5.
        assert_eq!((avg[0].value, avg[0].devices), (22.5, 2));
        assert_eq!((avg[1].value, avg[1].devices), (1.0, 1));
        let min = aggregate_group(series, GroupAgg::Min);
        assert_eq!(min[0].value, 10.0);
        let max = aggregate_group(series, GroupAgg::Max);
        assert_eq!(max[0].value, 30.0);
    }

    #[test]
    fn bucket_serialises_with_avg_fields() {
        let mut b = Bucket::of(ts(0), 2.5);
        b.add(3.5);
        let j = serde_json::to_value(b).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"t": "1970-01-01T00:00:00.000Z", "min": 2.5, "max": 3.5, "avg": 3.0, "count": 2})
        );
    }

    /// Points over about three hours around T0, with values that are multiples of
    /// 1/64 (so sums are exact in any order), and arbitrary floats.
    fn points(exact: bool) -> impl Strategy<Value = Vec<(Timestamp, f64)>> {
        let v = if exact {
            (-64_000i64..64_000).prop_map(|q| q as f64 / 64.0).boxed()
        } else {
            (-1.0e6f64..1.0e6).boxed()
        };
        proptest::collection::vec((-5_400_000i64..5_400_000, v), 0..300)
            .prop_map(|v| v.into_iter().map(|(t, x)| (ts(T0 + t), x)).collect())
    }

    proptest! {
        #[test]
        fn rollup_of_rollups_equals_rollup_of_raw(pts in points(true), loose in points(false)) {
            let minutes = rollup(pts.iter().copied(), BucketWidth::MINUTE);
            let hours = rollup(pts.iter().copied(), BucketWidth::HOUR);
            prop_assert_eq!(rollup_buckets(&minutes, BucketWidth::HOUR), hours);
            let minutes = rollup(loose.iter().copied(), BucketWidth::MINUTE);
            let hours = rollup(loose.iter().copied(), BucketWidth::HOUR);
            same_buckets(&rollup_buckets(&minutes, BucketWidth::HOUR), &hours)
                .map_err(TestCaseError::fail)?;
        }

        #[test]
        fn buckets_are_aligned_and_hold_their_points(
            pts in points(false),
            width in prop_oneof![Just(60_000i64), Just(3_600_000), 1i64..10_000_000],
        ) {
            let w = BucketWidth::from_millis(width).unwrap();
            let b = rollup(pts.iter().copied(), w);
            prop_assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), pts.len() as u64);
            for x in &b {
                prop_assert_eq!(x.start.as_millis().rem_euclid(width), 0);
                let inside: Vec<f64> = pts
                    .iter()
                    .filter(|(t, _)| x.start <= *t && t.as_millis() < x.start.as_millis() + width)
                    .map(|(_, v)| *v)
                    .collect();
                prop_assert_eq!(inside.len() as u64, x.count);
                prop_assert_eq!(inside.iter().copied().fold(f64::INFINITY, f64::min), x.min);
                prop_assert_eq!(inside.iter().copied().fold(f64::NEG_INFINITY, f64::max), x.max);
            }
            prop_assert!(b.windows(2).all(|p| p[0].start < p[1].start));
        }

        /// Points split in any way (late data, several ingest batches), rolled up
        /// per part and merged, give the rollup of all of them.
        #[test]
        fn merging_partial_buckets_is_exact(pts in points(true), cut in any::<proptest::sample::Index>(), order in any::<bool>()) {
            let k = cut.index(pts.len() + 1);
            let (a, b) = pts.split_at(k);
            let ra = rollup(a.iter().copied(), BucketWidth::MINUTE);
            let rb = rollup(b.iter().copied(), BucketWidth::MINUTE);
            let merged = if order { merge_series(&ra, &rb) } else { merge_series(&rb, &ra) };
            prop_assert_eq!(merged, rollup(pts.iter().copied(), BucketWidth::MINUTE));
        }

        /// The store's algorithm: each batch is inserted keyed by time (first write
        /// wins); only the points actually inserted are rolled up and merged into the
        /// stored 1 m and 1 h buckets. Re-ingesting batches, in any order, leaves the
        /// rollups equal to the rollup of the stored raw points.
        #[test]
        fn reingest_keyed_by_time_is_idempotent(
            batches in proptest::collection::vec(points(true), 1..6),
            replays in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            fn ingest(
                batch: &[(Timestamp, f64)],
                raw: &mut RawSeries,
                minutes: &mut Vec<Bucket>,
                hours: &mut Vec<Bucket>,
            ) {
                let fresh: Vec<(Timestamp, f64)> =
                    batch.iter().copied().filter(|(t, v)| raw.insert(*t, *v)).collect();
                let dm = rollup(fresh, BucketWidth::MINUTE);
                let dh = rollup_buckets(&dm, BucketWidth::HOUR);
                *minutes = merge_series(minutes, &dm);
                *hours = merge_series(hours, &dh);
            }
            let mut raw = RawSeries::new();
            let mut minutes: Vec<Bucket> = Vec::new();
            let mut hours: Vec<Bucket> = Vec::new();
            for b in &batches {
                ingest(b, &mut raw, &mut minutes, &mut hours);
            }
            let before = (raw.clone(), minutes.clone(), hours.clone());
            for r in &replays {
                ingest(&batches[r.index(batches.len())], &mut raw, &mut minutes, &mut hours);
            }
            prop_assert_eq!(&before.0, &raw);
            prop_assert_eq!(&before.1, &minutes);
            prop_assert_eq!(&before.2, &hours);
            prop_assert_eq!(&minutes, &rollup(raw.points(), BucketWidth::MINUTE));
            prop_assert_eq!(&hours, &rollup(raw.points(), BucketWidth::HOUR));
        }
    }
}
