//! The twin's flat field schema, field values, and per-field conflict resolution.
//!
//! Every section of a twin (`meta`, `desired`, `reported`) is one automerge map of
//! flat keys to scalars (`warn_c`, `gpio.17`, `reading.cpu_temp_c`). Flat keys make
//! every field an independent register: concurrent edits of different fields never
//! interfere, and concurrent edits of one field are exactly the conflicts that
//! automerge reports through `get_all`, which [`resolve`] turns into one visible
//! value by the field's [`FieldPolicy`].

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

use crate::author::{Author, AuthorKind};

/// The current twin schema version (root key `schema`).
pub const SCHEMA_VERSION: u64 = 1;

/// A section of the twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// Identity, model, labels, location, group. Written by the fleet.
    Meta,
    /// Configuration the fleet, users and local operators want.
    Desired,
    /// State written by the device.
    Reported,
}

impl Section {
    /// All sections.
    pub const ALL: [Section; 3] = [Section::Meta, Section::Desired, Section::Reported];

    /// The section's key in the document root.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Meta => "meta",
            Section::Desired => "desired",
            Section::Reported => "reported",
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field address: section plus flat key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FieldPath {
    /// The section.
    pub section: Section,
    /// The flat key (`warn_c`, `gpio.17`).
    pub key: String,
}

impl FieldPath {
    /// A path.
    pub fn new(section: Section, key: impl Into<String>) -> Self {
        Self {
            section,
            key: key.into(),
        }
    }

    /// A `desired` field.
    pub fn desired(key: impl Into<String>) -> Self {
        Self::new(Section::Desired, key)
    }

    /// A `reported` field.
    pub fn reported(key: impl Into<String>) -> Self {
        Self::new(Section::Reported, key)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.section, self.key)
    }
}

/// A scalar field value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

impl FieldValue {
    fn rank(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => 0,
            FieldValue::Int(_) => 1,
            FieldValue::Float(_) => 2,
            FieldValue::Str(_) => 3,
        }
    }

    /// The value as a number, for numeric policies.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Int(i) => Some(*i as f64),
            FieldValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// A total order over all values (numbers numerically, NaN last; then by type,
    /// strings by bytes). Every tie-break in this crate uses it, so resolution never
    /// depends on actor ids, delivery order or the epoch a value was copied into.
    pub fn total_cmp(&self, other: &FieldValue) -> Ordering {
        match (self.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => a.total_cmp(&b).then(self.rank().cmp(&other.rank())),
            _ => match (self, other) {
                (FieldValue::Bool(a), FieldValue::Bool(b)) => a.cmp(b),
                (FieldValue::Str(a), FieldValue::Str(b)) => a.cmp(b),
                _ => self.rank().cmp(&other.rank()),
            },
        }
    }

    pub(crate) fn from_scalar(s: &automerge::ScalarValue) -> Option<FieldValue> {
        use automerge::ScalarValue as S;
        Some(match s {
            S::Boolean(b) => FieldValue::Bool(*b),
            S::Int(i) => FieldValue::Int(*i),
            S::Uint(u) => FieldValue::Int(i64::try_from(*u).ok()?),
            S::F64(f) => FieldValue::Float(*f),
            S::Str(s) => FieldValue::Str(s.to_string()),
            S::Timestamp(t) => FieldValue::Int(*t),
            _ => return None,
        })
    }

    pub(crate) fn to_scalar(&self) -> automerge::ScalarValue {
        use automerge::ScalarValue as S;
        match self {
            FieldValue::Bool(b) => S::Boolean(*b),
            FieldValue::Int(i) => S::Int(*i),
            FieldValue::Float(f) => S::F64(*f),
            FieldValue::Str(s) => S::Str(s.as_str().into()),
        }
    }

    /// Equality that treats equal floats (including NaN bit patterns) as equal.
    pub fn same(&self, other: &FieldValue) -> bool {
        self.total_cmp(other) == Ordering::Equal
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Int(v)
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}
impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(v.to_owned())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(v)
    }
}

/// Which value wins when writers set one field concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldPolicy {
    /// The more conservative value wins: the lowest (temperature limits).
    SafetyFirstMin,
    /// The more conservative value wins: the highest (minimum fan duty).
    SafetyFirstMax,
    /// A fleet-side value (user, fleet service) beats a device-side one.
    FleetWins,
    /// A device-side value (agent, local operator) beats a fleet-side one.
    DeviceWins,
    /// The conflict stays open, listed with every value and author, until a user
    /// resolves it. Meanwhile the visible value is the largest by
    /// [`FieldValue::total_cmp`], and the device refuses to apply the config.
    Manual,
}

impl FieldPolicy {
    /// The documented policy name (`safety-first`, `fleet-wins`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FieldPolicy::SafetyFirstMin | FieldPolicy::SafetyFirstMax => "safety-first",
            FieldPolicy::FleetWins => "fleet-wins",
            FieldPolicy::DeviceWins => "device-wins",
            FieldPolicy::Manual => "manual",
        }
    }
}

/// The default policy of a field (see `docs/sync.md` for the table).
pub fn policy_for(path: &FieldPath) -> FieldPolicy {
    let key = path.key.as_str();
    match path.section {
        Section::Meta => FieldPolicy::FleetWins,
        Section::Reported => FieldPolicy::DeviceWins,
        Section::Desired => match key {
            "warn_c" | "throttle_c" | "critical_c" => FieldPolicy::SafetyFirstMin,
            "min_fan_duty_pct" => FieldPolicy::SafetyFirstMax,
            "policy_overrides" => FieldPolicy::Manual,
            k if k.starts_with("gpio.") => FieldPolicy::DeviceWins,
            _ => FieldPolicy::FleetWins,
        },
    }
}

/// One concurrent value of a field, with the kind of the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The value.
    pub value: FieldValue,
    /// Kind of the writer (from the actor id of the operation).
    pub kind: AuthorKind,
}

fn max_by_total<'a>(it: impl Iterator<Item = &'a Candidate>) -> Option<&'a Candidate> {
    it.max_by(|a, b| a.value.total_cmp(&b.value))
}

/// The visible value of a field from its concurrent candidates.
///
/// Deterministic and independent of the order of `candidates`: every peer that has
/// the same set of candidates shows the same value. `safety-first` is a min (or max)
/// over numbers, so it is commutative, associative and idempotent.
pub fn resolve(policy: FieldPolicy, candidates: &[Candidate]) -> Option<FieldValue> {
    let pick = match policy {
        FieldPolicy::SafetyFirstMin => {
            finite_or_all(candidates).min_by(|a, b| a.value.total_cmp(&b.value))
        }
        FieldPolicy::SafetyFirstMax => max_by_total(finite_or_all(candidates)),
        FieldPolicy::FleetWins => {
            max_by_total(candidates.iter().filter(|c| c.kind.is_fleet_side()))
                .or_else(|| max_by_total(candidates.iter()))
        }
        FieldPolicy::DeviceWins => {
            max_by_total(candidates.iter().filter(|c| c.kind.is_device_side()))
                .or_else(|| max_by_total(candidates.iter()))
        }
        FieldPolicy::Manual => max_by_total(candidates.iter()),
    };
    pick.map(|c| c.value.clone())
}

/// For `safety-first`: the finite numbers among the candidates (a NaN or an
/// infinity never wins a min or a max), or all candidates when there are none.
fn finite_or_all(candidates: &[Candidate]) -> impl Iterator<Item = &Candidate> {
    let any_finite = candidates
        .iter()
        .any(|c| c.value.as_f64().is_some_and(f64::is_finite));
    candidates
        .iter()
        .filter(move |c| !any_finite || c.value.as_f64().is_some_and(f64::is_finite))
}

/// An open conflict: a field with several concurrent values.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The field.
    pub field: FieldPath,
    /// The field's policy.
    pub policy: FieldPolicy,
    /// The concurrent values and who wrote them, in the total order of the values.
    pub values: Vec<(FieldValue, Author)>,
    /// The value shown while the conflict is open.
    pub visible: Option<FieldValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(v: f64, kind: AuthorKind) -> Candidate {
        Candidate {
            value: FieldValue::Float(v),
            kind,
        }
    }

    #[test]
    fn default_policies() {
        assert_eq!(
            policy_for(&FieldPath::desired("warn_c")),
            FieldPolicy::SafetyFirstMin
        );
        assert_eq!(
            policy_for(&FieldPath::desired("min_fan_duty_pct")),
            FieldPolicy::SafetyFirstMax
        );
        assert_eq!(
            policy_for(&FieldPath::desired("gpio.17")),
            FieldPolicy::DeviceWins
        );
        assert_eq!(
            policy_for(&FieldPath::desired("policy_overrides")),
            FieldPolicy::Manual
        );
        assert_eq!(
            policy_for(&FieldPath::reported("health")),
            FieldPolicy::DeviceWins
        );
        assert_eq!(
            policy_for(&FieldPath::new(Section::Meta, "group")),
            FieldPolicy::FleetWins
        );
    }

    #[test]
    fn policies_pick_the_documented_value() {
        let cands = [c(70.0, AuthorKind::Fleet), c(65.0, AuthorKind::Device)];
        let f = |p| resolve(p, &cands).and_then(|v| v.as_f64());
        assert_eq!(f(FieldPolicy::SafetyFirstMin), Some(65.0));
        assert_eq!(f(FieldPolicy::SafetyFirstMax), Some(70.0));
        assert_eq!(f(FieldPolicy::FleetWins), Some(70.0));
        assert_eq!(f(FieldPolicy::DeviceWins), Some(65.0));
        assert_eq!(f(FieldPolicy::Manual), Some(70.0));
        assert_eq!(resolve(FieldPolicy::Manual, &[]), None);
        // Only device-side values: fleet-wins falls back to the total order.
        let dev = [
            c(1.0, AuthorKind::Device),
            c(2.0, AuthorKind::LocalOperator),
        ];
        assert_eq!(
            resolve(FieldPolicy::FleetWins, &dev).and_then(|v| v.as_f64()),
            Some(2.0)
        );
    }

    fn kind() -> impl Strategy<Value = AuthorKind> {
        prop_oneof![
            Just(AuthorKind::Device),
            Just(AuthorKind::LocalOperator),
            Just(AuthorKind::User),
            Just(AuthorKind::Fleet)
        ]
    }

    fn cands() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec((-50.0f64..120.0, kind()).prop_map(|(v, k)| c(v, k)), 1..6)
    }

    proptest! {
        /// safety-first is commutative, associative and idempotent (a semilattice),
        /// and so is every other policy's choice: order and duplicates never matter.
        #[test]
        fn resolution_is_a_semilattice(a in cands(), b in cands(), seed in any::<u64>()) {
            for p in [FieldPolicy::SafetyFirstMin, FieldPolicy::SafetyFirstMax,
                      FieldPolicy::FleetWins, FieldPolicy::DeviceWins, FieldPolicy::Manual] {
                let ab: Vec<_> = a.iter().chain(&b).cloned().collect();
                let mut ba: Vec<_> = b.iter().chain(&a).cloned().collect();
                // a deterministic shuffle
                let n = ba.len();
                for i in 0..n { ba.swap(i, (seed as usize).wrapping_add(i * 7) % n); }
                let r_ab = resolve(p, &ab).unwrap();
                prop_assert!(r_ab.same(&resolve(p, &ba).unwrap()), "commutative");
                let mut dup = ab.clone();
                dup.extend(ab.iter().cloned());
                prop_assert!(r_ab.same(&resolve(p, &dup).unwrap()), "idempotent");
                if matches!(p, FieldPolicy::SafetyFirstMin | FieldPolicy::SafetyFirstMax) {
                    // associative: resolve(resolve(a) ∪ b) == resolve(a ∪ b)
                    let ra = Candidate { value: resolve(p, &a).unwrap(), kind: AuthorKind::Fleet };
                    let mut nested = vec![ra];
                    nested.extend(b.iter().cloned());
                    prop_assert!(r_ab.same(&resolve(p, &nested).unwrap()), "associative");
                }
            }
        }
    }
}
