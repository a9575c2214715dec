//! The fleet registry as data: device records, groups as a tree (no cycles),
//! device queries with keyset pagination, the physical topology (sites, racks,
//! shelves) and physical neighbours.
//!
//! Pure functions over records; fleetd stores the records and calls these.
//!
//! ```
//! use wrale_core::fleet::registry::GroupTree;
//! use wrale_core::GroupId;
//! let g = |s: &str| GroupId::new(s).unwrap();
//! let tree = GroupTree::new([(g("lab"), None), (g("rack1"), Some(g("lab")))]).unwrap();
//! assert!(tree.subtree(&g("lab")).contains(&g("rack1")));
//! assert!(tree.check_parent(&g("lab"), Some(&g("rack1"))).is_err()); // a cycle
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::board::BoardModel;
use crate::model::{DeviceId, GroupId, Location};
use crate::time::Timestamp;

/// Whether a device is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Enrolled, never connected.
    Never,
    /// Connected now.
    Online,
    /// Was connected, is not now.
    Offline,
    /// Its credential is revoked.
    Revoked,
}

impl DeviceStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Never => "never",
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Revoked => "revoked",
        }
    }
}

impl FromStr for DeviceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(Self::Never),
            "online" => Ok(Self::Online),
            "offline" => Ok(Self::Offline),
            "revoked" => Ok(Self::Revoked),
            o => Err(format!(
                "unknown status {o:?}: expected never, online, offline or revoked"
            )),
        }
    }
}

/// A device's health as last reported (from its active alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing reported yet.
    Unknown,
    /// No active alert.
    Ok,
    /// A warning alert is active.
    Warning,
    /// A critical alert is active.
    Critical,
}

impl Health {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

impl FromStr for Health {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unknown" => Ok(Self::Unknown),
            "ok" => Ok(Self::Ok),
            "warning" => Ok(Self::Warning),
            "critical" => Ok(Self::Critical),
            o => Err(format!(
                "unknown health {o:?}: expected unknown, ok, warning or critical"
            )),
        }
    }
}

/// A device as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Stable id.
    pub id: DeviceId,
    /// Board model.
    pub model: BoardModel,
    /// Hardware serial.
    pub serial: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Physical location.
    pub location: Location,
    /// Group.
    pub group: Option<GroupId>,
    /// Connection status.
    pub status: DeviceStatus,
    /// Health.
    pub health: Health,
    /// Whether its credential is revoked.
    pub revoked: bool,
    /// When it enrolled.
    pub enrolled_at: Timestamp,
    /// When it was last connected.
    pub last_seen: Option<Timestamp>,
    /// metald version it last reported.
    pub agent_version: Option<String>,
}

/// A group of devices; groups form a tree through `parent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Stable id.
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// Parent group.
    pub parent: Option<GroupId>,
}

/// Why a group tree change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The parent does not exist.
    #[error("group {group}: parent {parent} does not exist")]
    UnknownParent {
        /// The group.
        group: GroupId,
        /// Its parent.
        parent: GroupId,
    },
    /// The change would make a group its own ancestor.
    #[error("group {group} cannot have parent {parent}: that would make a cycle")]
    Cycle {
        /// The group.
        group: GroupId,
        /// The proposed parent.
        parent: GroupId,
    },
}

/// The groups as a tree: parent links, checked for cycles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupTree {
    parents: BTreeMap<GroupId, Option<GroupId>>,
}

impl GroupTree {
    /// Builds a tree from `(group, parent)` links; refuses unknown parents and cycles.
    pub fn new(
        links: impl IntoIterator<Item = (GroupId, Option<GroupId>)>,
    ) -> Result<Self, TreeError> {
        let tree = GroupTree {
            parents: links.into_iter().collect(),
        };
        for (group, parent) in &tree.parents {
            if let Some(p) = parent {
                if !tree.parents.contains_key(p) {
                    return Err(TreeError::UnknownParent {
                        group: group.clone(),
                        parent: p.clone(),
                    });
                }
                if tree.is_within(p, group) {
                    return Err(TreeError::Cycle {
                        group: group.clone(),
                        parent: p.clone(),
                    });
                }
            }
        }
        Ok(tree)
    }

    /// Whether the group exists.
    pub fn contains(&self, id: &GroupId) -> bool {
        self.parents.contains_key(id)
    }

    /// Every group id, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &GroupId> {
        self.parents.keys()
    }

    /// The group's parent.
    pub fn parent(&self, id: &GroupId) -> Option<&GroupId> {
        self.parents.get(id).and_then(Option::as_ref)
    }

    /// The group's ancestors, nearest first (bounded by the number of groups, so a
    /// corrupt input cannot loop forever).
    pub fn ancestors(&self, id: &GroupId) -> Vec<GroupId> {
        let mut out = Vec::new();
        let mut cur = self.parent(id);
        while let Some(p) = cur {
            if out.contains(p) || out.len() > self.parents.len() {
                break;
            }
            out.push(p.clone());
            cur = self.parent(p);
        }
        out
    }

    /// Whether `group` is `root` or lies below it (walks the parent links without
    /// allocating; bounded by the number of groups like [`GroupTree::ancestors`]).
    pub fn is_within(&self, group: &GroupId, root: &GroupId) -> bool {
        let mut cur = Some(group);
        for _ in 0..=self.parents.len() {
            match cur {
                Some(g) if g == root => return true,
                Some(g) => cur = self.parent(g),
                None => return false,
            }
        }
        false
    }

    /// Direct children, sorted.
    pub fn children(&self, id: &GroupId) -> Vec<GroupId> {
        self.parents
            .iter()
            .filter(|(_, p)| p.as_ref() == Some(id))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// The group and every group below it.
    pub fn subtree(&self, root: &GroupId) -> BTreeSet<GroupId> {
        let mut out = BTreeSet::new();
        if !self.contains(root) {
            return out;
        }
        let mut stack = vec![root.clone()];
        while let Some(g) = stack.pop() {
            if out.insert(g.clone()) {
                stack.extend(self.children(&g));
            }
        }
        out
    }

    /// Whether `group` may get `parent` (new or changed): the parent must exist and
    /// must not be `group` or below it.
    pub fn check_parent(&self, group: &GroupId, parent: Option<&GroupId>) -> Result<(), TreeError> {
        let Some(p) = parent else {
            return Ok(());
        };
        if !self.contains(p) {
            return Err(TreeError::UnknownParent {
                group: group.clone(),
                parent: p.clone(),
            });
        }
        if self.is_within(p, group) {
            return Err(TreeError::Cycle {
                group: group.clone(),
                parent: p.clone(),
            });
        }
        Ok(())
    }

    /// Adds or re-parents a group after [`GroupTree::check_parent`].
    pub fn set(&mut self, group: GroupId, parent: Option<GroupId>) -> Result<(), TreeError> {
        self.check_parent(&group, parent.as_ref())?;
        self.parents.insert(group, parent);
        Ok(())
    }
}

/// A bad query parameter: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{param}`: {message}")]
pub struct QueryError {
    /// The parameter.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

fn qerr(param: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// Default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
pub const MAX_LIMIT: usize = 500;

/// A filter over devices. Every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceQuery {
    /// `label=k=v`, repeatable: every label must match.
    pub labels: Vec<(String, String)>,
    /// In this group or any group below it.
    pub group: Option<GroupId>,
    /// `location.site`.
    pub site: Option<String>,
    /// `location.rack`.
    pub rack: Option<String>,
    /// `location.shelf`.
    pub shelf: Option<String>,
    /// Board model.
    pub model: Option<BoardModel>,
    /// Connection status.
    pub status: Option<DeviceStatus>,
    /// Health.
    pub health: Option<Health>,
}

/// Which page of a list to return: at most `limit` items after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size (1..=[`MAX_LIMIT`]).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// Parses `limit` (1..=500); other parameters are left to the caller.
    pub fn parse_limit(raw: &str) -> Result<usize, QueryError> {
        let n: usize = raw
            .parse()
            .map_err(|_| qerr("limit", format!("{raw:?} is not a number")))?;
        if n == 0 || n > MAX_LIMIT {
            return Err(qerr("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        Ok(n)
    }
}

impl DeviceQuery {
    /// Parses query-string pairs (`label=role=cam&group=lab&limit=10&cursor=...`).
    /// Unknown parameters and bad values are refused, naming the parameter.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<(Self, PageRequest), QueryError> {
        let mut q = DeviceQuery::default();
        let mut page = PageRequest::default();
        let text = |k: &str, v: &str| -> Result<String, QueryError> {
            if v.is_empty() {
                Err(qerr(k, "must not be empty"))
            } else {
                Ok(v.to_owned())
            }
        };
        for (k, v) in pairs {
            match k.as_str() {
                "label" => {
                    let (lk, lv) = v
                        .split_once('=')
                        .filter(|(lk, _)| !lk.is_empty())
                        .ok_or_else(|| qerr("label", format!("{v:?}: expected key=value")))?;
                    q.labels.push((lk.to_owned(), lv.to_owned()));
                }
                "group" => {
                    q.group =
                        Some(GroupId::new(v.as_str()).map_err(|e| qerr("group", e.to_string()))?)
                }
                "site" => q.site = Some(text(k, v)?),
                "rack" => q.rack = Some(text(k, v)?),
                "shelf" => q.shelf = Some(text(k, v)?),
                "model" => {
                    q.model = Some(
                        serde_json::from_value(serde_json::Value::String(v.clone()))
                            .map_err(|_| qerr("model", format!("unknown board model {v:?}")))?,
                    )
                }
                "status" => q.status = Some(v.parse().map_err(|e: String| qerr("status", e))?),
                "health" => q.health = Some(v.parse().map_err(|e: String| qerr("health", e))?),
                "limit" => page.limit = PageRequest::parse_limit(v)?,
                "cursor" => {
                    DeviceId::new(v.as_str())
                        .map_err(|_| qerr("cursor", "not a cursor from this list"))?;
                    page.cursor = Some(v.clone());
                }
                other => {
                    return Err(qerr(
                        other,
                        "unknown parameter (expected label, group, site, rack, shelf, model, status, health, limit, cursor)",
                    ));
                }
            }
        }
        Ok((q, page))
    }

    /// Whether `d` matches. `tree` resolves subgroups.
    pub fn matches(&self, d: &DeviceRecord, tree: &GroupTree) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        self.labels.iter().all(|(k, v)| d.labels.get(k) == Some(v))
            && self
                .group
                .as_ref()
                .is_none_or(|g| d.group.as_ref().is_some_and(|dg| tree.is_within(dg, g)))
            && eq(&self.site, &d.location.site)
            && eq(&self.rack, &d.location.rack)
            && eq(&self.shelf, &d.location.shelf)
            && self.model.is_none_or(|m| m == d.model)
            && self.status.is_none_or(|s| s == d.status)
            && self.health.is_none_or(|h| h == d.health)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Filters and pages devices. `devices` may be in any order; pages are by id.
pub fn query_devices(
    devices: &[DeviceRecord],
    query: &DeviceQuery,
    tree: &GroupTree,
    page: &PageRequest,
) -> Page<DeviceRecord> {
    let mut matched: Vec<&DeviceRecord> = devices
        .iter()
        .filter(|d| query.matches(d, tree))
        .filter(|d| page.cursor.as_deref().is_none_or(|c| d.id.as_str() > c))
        .collect();
    matched.sort_by(|a, b| a.id.cmp(&b.id));
    let more = matched.len() > page.limit;
    matched.truncate(page.limit);
    let next_cursor = if more {
        matched.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Page {
        items: matched.into_iter().cloned().collect(),
        next_cursor,
    }
}

/// A shelf and the devices on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShelfNode {
    /// Shelf name.
    pub name: String,
    /// Device ids, sorted by slot then id.
    pub devices: Vec<DeviceId>,
}

/// A rack with its shelves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RackNode {
    /// Rack name.
    pub name: String,
    /// Shelves, sorted.
    pub shelves: Vec<ShelfNode>,
    /// Devices in the rack with no shelf.
    pub unshelved: Vec<DeviceId>,
}

/// A site with its racks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteNode {
    /// Site name (`""` for devices with a rack but no site).
    pub name: String,
    /// Racks, sorted.
    pub racks: Vec<RackNode>,
    /// Devices at the site with no rack.
    pub unracked: Vec<DeviceId>,
}

/// The physical topology: sites -> racks -> shelves -> device ids.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Topology {
    /// Sites, sorted.
    pub sites: Vec<SiteNode>,
    /// Devices with no location at all.
    pub unplaced: Vec<DeviceId>,
}

type ShelfMap = BTreeMap<String, Vec<(Option<String>, DeviceId)>>;

/// Builds the topology tree from device locations.
pub fn topology(devices: &[DeviceRecord]) -> Topology {
    #[derive(Default)]
    struct Rack {
        shelves: ShelfMap,
        unshelved: Vec<DeviceId>,
    }
    #[derive(Default)]
    struct Site {
        racks: BTreeMap<String, Rack>,
        unracked: Vec<DeviceId>,
    }
    let mut sites: BTreeMap<String, Site> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for d in devices {
        let l = &d.location;
        if l.site.is_none() && l.rack.is_none() {
            unplaced.push(d.id.clone());
            continue;
        }
        let site = sites.entry(l.site.clone().unwrap_or_default()).or_default();
        let Some(rack) = &l.rack else {
            site.unracked.push(d.id.clone());
            continue;
        };
        let rack = site.racks.entry(rack.clone()).or_default();
        match &l.shelf {
            Some(shelf) => rack
                .shelves
                .entry(shelf.clone())
                .or_default()
                .push((l.slot.clone(), d.id.clone())),
            None => rack.unshelved.push(d.id.clone()),
        }
    }
    let sorted = |mut v: Vec<DeviceId>| {
        v.sort();
        v
    };
    Topology {
        sites: sites
            .into_iter()
            .map(|(name, s)| SiteNode {
                name,
                racks: s
                    .racks
                    .into_iter()
                    .map(|(name, r)| RackNode {
                        name,
                        shelves: r
                            .shelves
                            .into_iter()
                            .map(|(name, mut ds)| {
                                ds.sort();
                                ShelfNode {
                                    name,
                                    devices: ds.into_iter().map(|(_, id)| id).collect(),
                                }
                            })
                            .collect(),
                        unshelved: sorted(r.unshelved),
                    })
                    .collect(),
                unracked: sorted(s.unracked),
            })
            .collect(),
        unplaced: sorted(unplaced),
    }
}

/// A device's physical neighbours.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Neighbours {
    /// Other devices on the same shelf of the same rack and site.
    pub same_shelf: Vec<DeviceId>,
    /// Other devices in the same rack and site (on any shelf, this one included).
    pub same_rack: Vec<DeviceId>,
}

/// The neighbours of `target` among `devices` (sorted by id).
pub fn neighbours(target: &DeviceRecord, devices: &[DeviceRecord]) -> Neighbours {
    let mut n = Neighbours::default();
    for d in devices.iter().filter(|d| d.id != target.id) {
        if target.location.same_rack(&d.location) {
            n.same_rack.push(d.id.clone());
            if target.location.same_shelf(&d.location) {
                n.same_shelf.push(d.id.clone());
            }
        }
    }
    n.same_shelf.sort();
    n.same_rack.sort();
    n
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }

    fn dev(id: &str, loc: (&str, &str, &str, &str), group: Option<&str>) -> DeviceRecord {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        DeviceRecord {
            id: DeviceId::new(id).unwrap(),
            model: BoardModel::Pi4B,
            serial: None,
            labels: BTreeMap::new(),
            location: Location {
                site: opt(loc.0),
                rack: opt(loc.1),
                shelf: opt(loc.2),
                slot: opt(loc.3),
            },
            group: group.map(g),
            status: DeviceStatus::Never,
            health: Health::Unknown,
            revoked: false,
            enrolled_at: Timestamp::EPOCH,
            last_seen: None,
            agent_version: None,
        }
    }

    fn tree() -> GroupTree {
        GroupTree::new([
            (g("lab"), None),
            (g("rack1"), Some(g("lab"))),
            (g("shelf2"), Some(g("rack1"))),
            (g("office"), None),
        ])
        .unwrap()
    }

    #[test]
    fn tree_refuses_cycles_and_unknown_parents() {
        let t = tree();
        assert_eq!(
            t.subtree(&g("lab")),
            [g("lab"), g("rack1"), g("shelf2")].into()
        );
        assert_eq!(t.ancestors(&g("shelf2")), vec![g("rack1"), g("lab")]);
        assert!(t.is_within(&g("shelf2"), &g("lab")));
        assert!(t.is_within(&g("lab"), &g("lab")));
        assert!(!t.is_within(&g("lab"), &g("shelf2")));
        assert!(matches!(
            t.check_parent(&g("lab"), Some(&g("shelf2"))),
            Err(TreeError::Cycle { .. })
        ));
        assert!(matches!(
            t.check_parent(&g("lab"), Some(&g("lab"))),
            Err(TreeError::Cycle { .. })
        ));
        assert!(matches!(
            t.check_parent(&g("x"), Some(&g("nope"))),
            Err(TreeError::UnknownParent { .. })
        ));
        assert!(t.check_parent(&g("office"), Some(&g("shelf2"))).is_ok());
        assert!(GroupTree::new([(g("a"), Some(g("b"))), (g("b"), Some(g("a")))]).is_err());
    }

    #[test]
    fn queries_filter_and_page() {
        let t = tree();
        let mut a = dev("a", ("lab", "r1", "2", "1"), Some("shelf2"));
        a.labels.insert("role".into(), "cam".into());
        let b = dev("b", ("lab", "r1", "3", ""), Some("office"));
        let c = dev("c", ("", "", "", ""), Some("lab"));
        let all = vec![c.clone(), b.clone(), a.clone()];
        let pairs = |s: &[(&str, &str)]| {
            s.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let (q, p) = DeviceQuery::from_pairs(&pairs(&[("group", "lab")])).unwrap();
        let ids: Vec<_> = query_devices(&all, &q, &t, &p)
            .items
            .into_iter()
            .map(|d| d.id.to_string())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        let (q, p) = DeviceQuery::from_pairs(&pairs(&[("label", "role=cam")])).unwrap();
        assert_eq!(query_devices(&all, &q, &t, &p).items, vec![a.clone()]);
        let (q, p) = DeviceQuery::from_pairs(&pairs(&[("rack", "r1"), ("limit", "1")])).unwrap();
        let first = query_devices(&all, &q, &t, &p);
        assert_eq!(first.items, vec![a.clone()]);
        assert_eq!(first.next_cursor.as_deref(), Some("a"));
        let p2 = PageRequest {
            cursor: first.next_cursor,
            ..p
        };
        let second = query_devices(&all, &q, &t, &p2);
        assert_eq!(second.items, vec![b.clone()]);
        assert_eq!(second.next_cursor, None);
        for (k, v, named) in [
            ("limit", "0", "limit"),
            ("limit", "x", "limit"),
            ("colour", "red", "colour"),
            ("label", "novalue", "label"),
            ("model", "pi9", "model"),
            ("status", "up", "status"),
            ("group", "Bad", "group"),
        ] {
            let e = DeviceQuery::from_pairs(&pairs(&[(k, v)])).unwrap_err();
            assert_eq!(e.param, named, "{e}");
        }
    }

    #[test]
    fn topology_and_neighbours() {
        let a = dev("a", ("lab", "r1", "2", "1"), None);
        let b = dev("b", ("lab", "r1", "2", "2"), None);
        let c = dev("c", ("lab", "r1", "3", ""), None);
        let d = dev("d", ("lab", "r2", "2", ""), None);
        let e = dev("e", ("", "", "", ""), None);
        let all = vec![a.clone(), b, c, d, e];
        let n = neighbours(&a, &all);
        assert_eq!(n.same_shelf, vec![DeviceId::new("b").unwrap()]);
        assert_eq!(
            n.same_rack,
            vec![DeviceId::new("b").unwrap(), DeviceId::new("c").unwrap()]
        );
        let t = topology(&all);
        assert_eq!(t.unplaced, vec![DeviceId::new("e").unwrap()]);
        assert_eq!(t.sites.len(), 1);
        assert_eq!(t.sites[0].racks.len(), 2);
        assert_eq!(t.sites[0].racks[0].shelves[0].devices.len(), 2);
    }

    proptest! {
        /// Whatever sequence of re-parentings is tried, the accepted ones never make
        /// a cycle: every group's ancestor chain ends at a root.
        #[test]
        fn group_tree_never_accepts_a_cycle(ops in prop::collection::vec((0usize..8, proptest::option::of(0usize..8)), 0..64)) {
            let ids: Vec<GroupId> = (0..8).map(|i| g(&format!("g{i}"))).collect();
            let mut t = GroupTree::new(ids.iter().map(|i| (i.clone(), None))).unwrap();
            for (child, parent) in ops {
                let _ = t.set(ids[child].clone(), parent.map(|p| ids[p].clone()));
                for id in &ids {
                    let anc = t.ancestors(id);
                    prop_assert!(!anc.contains(id));
                    // The chain is a real path to a root.
                    prop_assert!(anc.last().is_none_or(|r| t.parent(r).is_none()));
                }
            }
            // And it still rebuilds as a valid tree.
            let links: Vec<_> = ids.iter().map(|i| (i.clone(), t.parent(i).cloned())).collect();
            prop_assert!(GroupTree::new(links).is_ok());
        }

        /// Paging through any page size visits every match exactly once, in id order.
        #[test]
        fn paging_visits_everything_once(n in 0usize..30, limit in 1usize..7) {
            let devices: Vec<_> = (0..n).map(|i| dev(&format!("d{i:02}"), ("", "", "", ""), None)).collect();
            let t = GroupTree::default();
            let mut seen = Vec::new();
            let mut page = PageRequest { limit, cursor: None };
            loop {
                let p = query_devices(&devices, &DeviceQuery::default(), &t, &page);
                seen.extend(p.items.iter().map(|d| d.id.clone()));
                match p.next_cursor {
                    Some(c) => page.cursor = Some(c),
                    None => break,
                }
            }
            let mut want: Vec<_> = devices.iter().map(|d| d.id.clone()).collect();
            want.sort();
            prop_assert_eq!(seen, want);
        }
    }
}
